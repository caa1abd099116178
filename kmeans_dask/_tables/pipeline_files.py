"""Fitted segmentation pipelines as files: safetensors arrays, a declared JSON header.

The file is one safetensors file. Its header's metadata holds, under
``"pipeline"``, a JSON document in the schema below (checked by msgspec:
unknown fields, wrong types and unknown step kinds are refused); its
tensors hold each step's fitted arrays as float64 (``"<step>/<attribute>"``)
and the ``KMeans`` step as the bytes of its own model file
(``"<step>/model_file"``, written by :meth:`KMeans.save` and read by
:func:`kmeans_dask.load`, so this format does not depend on the model
file's). Nothing is unpickled or imported by name: a step's kind selects one
of a fixed set of classes, whose parameters and arrays are checked
(values, lengths against the column lists, widths along the chain) before
they are set.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any, Literal

import msgspec
import numpy as np

from kmeans_dask._io.output_paths import check_readable_file, written_whole

FORMAT = "kmeans_dask.pipeline"
VERSION = 1
#: The name under which the KMeans model file is written and read back.
MODEL_FILE_NAME = "model.safetensors"


class _Step(msgspec.Struct, forbid_unknown_fields=True, tag_field="kind"):
    name: str


class EncodeStep(_Step, tag="TableEncoder"):
    columns: list[str] | None
    max_categories: int
    feature_names_in_: list[str]
    numeric_columns_: list[str]
    categories_: dict[str, list[str]]


class ImputeStep(_Step, tag="MissingValues"):
    strategy: str
    fill_value: float
    columns_: list[str]
    n_dropped_: int


class OutlierStep(_Step, tag="OutlierFilter"):
    threshold: float
    columns_: list[str]
    n_dropped_: int


class ScaleStep(_Step, tag="Scaler"):
    method: str
    columns_: list[str]


class ProjectionStep(_Step, tag="Projection"):
    n_components: int


class KMeansStep(_Step, tag="KMeans"):
    pass


Step = EncodeStep | ImputeStep | OutlierStep | ScaleStep | ProjectionStep | KMeansStep


class Header(msgspec.Struct, forbid_unknown_fields=True):
    format: Literal["kmeans_dask.pipeline"]
    version: Literal[1]
    steps: list[Step]


#: Per step kind, its fitted arrays.
ARRAYS: dict[type, tuple[str, ...]] = {
    ImputeStep: ("statistics_",),
    OutlierStep: ("mean_", "scale_"),
    ScaleStep: ("center_", "scale_"),
    ProjectionStep: ("mean_", "components_", "explained_variance_ratio_"),
}


def _describe(name: str, step: Any, tensors: dict[str, np.ndarray]) -> _Step:
    """The header entry of one fitted step; its arrays go into ``tensors``."""
    from kmeans_dask._tables.transformers import (
        MissingValues,
        OutlierFilter,
        Projection,
        Scaler,
        TableEncoder,
    )
    from kmeans_dask.estimator import KMeans

    if isinstance(step, TableEncoder):
        entry: _Step = EncodeStep(
            name=name,
            columns=None if step.columns is None else [str(c) for c in step.columns],
            max_categories=int(step.max_categories),
            feature_names_in_=[str(c) for c in step.feature_names_in_],
            numeric_columns_=list(step.numeric_columns_),
            categories_={c: list(v) for c, v in step.categories_.items()},
        )
    elif isinstance(step, MissingValues):
        entry = ImputeStep(
            name=name,
            strategy=step.strategy,
            fill_value=float(step.fill_value),
            columns_=list(step.columns_),
            n_dropped_=int(step.n_dropped_),
        )
    elif isinstance(step, OutlierFilter):
        entry = OutlierStep(
            name=name,
            threshold=float(step.threshold),
            columns_=list(step.columns_),
            n_dropped_=int(step.n_dropped_),
        )
    elif isinstance(step, Scaler):
        entry = ScaleStep(name=name, method=step.method, columns_=list(step.columns_))
    elif isinstance(step, Projection):
        entry = ProjectionStep(name=name, n_components=int(step.n_components))
    elif isinstance(step, KMeans):
        with tempfile.TemporaryDirectory() as directory:
            model_path = os.path.join(directory, MODEL_FILE_NAME)
            step.save(model_path)
            with open(model_path, "rb") as handle:
                tensors[f"{name}/model_file"] = np.frombuffer(handle.read(), dtype=np.uint8)
        return KMeansStep(name=name)
    else:
        raise TypeError(
            f"step {name!r} is a {type(step).__name__}; a pipeline file holds only "
            "kmeans_dask.preprocessing steps and KMeans"
        )
    for attribute in ARRAYS.get(type(entry), ()):
        tensors[f"{name}/{attribute}"] = np.ascontiguousarray(
            getattr(step, attribute), dtype=np.float64
        )
    return entry


def write_pipeline(pipeline: Any, path: str | os.PathLike, *, overwrite: bool = False) -> None:
    """Write a fitted ``Pipeline`` (see :func:`kmeans_dask.preprocessing.save_pipeline`)."""
    from safetensors.numpy import save_file
    from sklearn.pipeline import Pipeline
    from sklearn.utils.validation import check_is_fitted

    if not isinstance(pipeline, Pipeline):
        raise TypeError(f"expected a fitted sklearn Pipeline, got {type(pipeline).__name__}")
    check_is_fitted(pipeline)
    tensors: dict[str, np.ndarray] = {}
    steps = [_describe(name, step, tensors) for name, step in pipeline.steps]
    if not isinstance(steps[-1], KMeansStep) or any(isinstance(s, KMeansStep) for s in steps[:-1]):
        raise TypeError("a pipeline file holds pipelines that end in KMeans (and only there)")
    header = msgspec.json.encode(Header(format=FORMAT, version=VERSION, steps=steps)).decode()
    with written_whole(path, "pipeline file", overwrite=overwrite, store=False) as partial:
        save_file(tensors, partial, metadata={"pipeline": header})


def is_pipeline_file(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a readable safetensors file whose metadata holds a pipeline.

    Only the header is read; a model file (``KMeans.save``), another file or
    an unreadable one is not a pipeline file.
    """
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(os.fspath(path), framework="numpy") as handle:
            return "pipeline" in (handle.metadata() or {})
    except (SafetensorError, OSError, ValueError):
        return False


def read_pipeline(path: str | os.PathLike) -> Any:
    """Read and check a pipeline file (see :func:`kmeans_dask.preprocessing.load_pipeline`)."""
    from safetensors import SafetensorError, safe_open

    location = os.fspath(path)
    if not os.path.exists(location):
        raise FileNotFoundError(f"pipeline file {location!r} does not exist")
    check_readable_file(location, "pipeline file")
    try:
        with safe_open(location, framework="numpy") as handle:
            metadata = handle.metadata() or {}
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118
    except (SafetensorError, OSError, ValueError) as exc:
        raise ValueError(
            f"cannot load pipeline {location!r}: not a readable safetensors file ({exc})"
        ) from None
    try:
        header = msgspec.json.decode(metadata.get("pipeline", ""), type=Header)
        return _build(header, tensors)
    except (msgspec.ValidationError, msgspec.DecodeError, TypeError, ValueError) as exc:
        raise ValueError(f"cannot load pipeline {location!r}: {exc}") from None


def _build(header: Header, tensors: dict[str, np.ndarray]) -> Any:
    from sklearn.pipeline import Pipeline

    if not header.steps or not isinstance(header.steps[-1], KMeansStep):
        raise ValueError("the pipeline does not end in a KMeans step")
    names = [s.name for s in header.steps]
    if len(set(names)) != len(names) or not all(names):
        raise ValueError(f"step names must be distinct and non-empty, got {names}")
    expected = {f"{s.name}/{a}" for s in header.steps for a in ARRAYS.get(type(s), ())} | {
        f"{header.steps[-1].name}/model_file"
    }
    if set(tensors) != expected:
        raise ValueError(
            f"arrays {sorted(set(tensors) - expected)} are unexpected and "
            f"{sorted(expected - set(tensors))} missing"
        )
    built = []
    features: list[str] | None = None  # the columns each step hands to the next
    for entry in header.steps:
        arrays = {a: tensors[f"{entry.name}/{a}"] for a in ARRAYS.get(type(entry), ())}
        for attribute, value in arrays.items():
            if value.dtype != np.float64:
                raise ValueError(f"array {entry.name}/{attribute} is {value.dtype}, not float64")
        step, features = _restore(entry, arrays, features, tensors)
        built.append((entry.name, step))
    return Pipeline(built)


def _restore(
    entry: _Step,
    arrays: dict[str, np.ndarray],
    features: list[str] | None,
    tensors: dict[str, np.ndarray],
) -> tuple[Any, list[str] | None]:
    """One step, checked against the columns the step before hands on."""
    from kmeans_dask._tables.transformers import (
        MissingValues,
        OutlierFilter,
        Projection,
        Scaler,
        TableEncoder,
        _encoded_names,
    )

    if isinstance(entry, EncodeStep):
        if features is not None:
            raise ValueError("a TableEncoder step must come first")
        step = TableEncoder(columns=entry.columns, max_categories=entry.max_categories)
        step._check_params()
        used = set(entry.numeric_columns_) | set(entry.categories_)
        if used != set(entry.feature_names_in_) or len(used) != len(entry.feature_names_in_):
            raise ValueError(
                "the encoder's numeric and text columns are not its columns feature_names_in_"
            )
        step.feature_names_in_ = np.asarray(entry.feature_names_in_, dtype=object)
        step.n_features_in_ = len(entry.feature_names_in_)
        step.numeric_columns_ = list(entry.numeric_columns_)
        step.categories_ = {c: list(v) for c, v in entry.categories_.items()}
        return step, _encoded_names(step.numeric_columns_, step.categories_)
    if isinstance(entry, KMeansStep):
        return _restore_kmeans(tensors[f"{entry.name}/model_file"], features), None
    if features is None:
        raise ValueError(f"step {entry.name!r} comes before the TableEncoder step")
    if isinstance(entry, ProjectionStep):
        step = Projection(n_components=entry.n_components)
        step._check_params()
        shapes = {"mean_": (len(features),), "components_": (entry.n_components, len(features))}
        shapes["explained_variance_ratio_"] = (entry.n_components,)
        _check_shapes(entry.name, arrays, shapes)
        for attribute, value in arrays.items():
            setattr(step, attribute, value)
        return step, [f"pc{i}" for i in range(entry.n_components)]
    unknown = [c for c in entry.columns_ if c not in features]
    if unknown:
        raise ValueError(f"step {entry.name!r} names columns {unknown} that no step before makes")
    if isinstance(entry, ImputeStep):
        step = MissingValues(strategy=entry.strategy, fill_value=entry.fill_value)
        step.n_dropped_ = entry.n_dropped_
    elif isinstance(entry, OutlierStep):
        step = OutlierFilter(threshold=entry.threshold)
        step.n_dropped_ = entry.n_dropped_
    else:
        step = Scaler(method=entry.method)
    step._check_params()
    step.columns_ = list(entry.columns_)
    drop = isinstance(entry, ImputeStep) and entry.strategy == "drop"
    _check_shapes(entry.name, arrays, dict.fromkeys(arrays, (len(entry.columns_),)), drop)
    for attribute, value in arrays.items():
        setattr(step, attribute, value)
    return step, features


def _check_shapes(
    step: str,
    arrays: dict[str, np.ndarray],
    shapes: dict[str, tuple[int, ...]],
    allow_nan: bool = False,
) -> None:
    """Shapes as expected, values finite (NaN statistics only for the "drop" strategy)."""
    for attribute, shape in shapes.items():
        if arrays[attribute].shape != shape:
            raise ValueError(
                f"array {step}/{attribute} has shape {arrays[attribute].shape}; expected {shape}"
            )
        if (
            not (allow_nan and attribute == "statistics_")
            and not np.isfinite(arrays[attribute]).all()
        ):
            raise ValueError(f"array {step}/{attribute} holds non-finite values")


def _restore_kmeans(model_file: np.ndarray, features: list[str] | None) -> Any:
    import kmeans_dask

    if model_file.dtype != np.uint8 or model_file.ndim != 1:
        raise ValueError("the KMeans model file must be stored as bytes (uint8, 1-D)")
    with tempfile.TemporaryDirectory() as directory:
        model_path = os.path.join(directory, MODEL_FILE_NAME)
        with open(model_path, "wb") as handle:
            handle.write(model_file.tobytes())
        try:
            model = kmeans_dask.load(model_path)
        except ValueError as exc:
            raise ValueError(f"its KMeans step: {exc}") from None
    if features is not None and model.n_features_in_ != len(features):
        raise ValueError(
            f"its KMeans step takes {model.n_features_in_} features but the steps before "
            f"make {len(features)}"
        )
    return model
