"""Model files: a fitted KMeans as one safetensors file (see :mod:`.safe_files`).

The tensors are ``cluster_centers_`` (float32 or float64, ``(n_clusters,
n_features_in_)``), optionally ``cluster_weights_`` (float64, ``(n_clusters,)``,
>= 0) and, when ``init`` is an array, ``params.init`` (the centres' shape).
The content holds the parameters (JSON scalars, or dicts of them), the names
of those stored as tensors, and the fitted attributes; loading sets nothing
else on the estimator.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal, TypeVar

import msgspec
import numpy as np

from kmeans_dask._io.output_paths import check_readable_file
from kmeans_dask._io.safe_files import (
    DTYPES,
    FLOATS,
    Content,
    Count,
    FileKind,
    FileProblem,
    Finite,
    NonNegative,
    Tensor,
    as_array,
    convert,
    plain,
    read,
    write,
)

MODEL_FORMAT_VERSION = 2
"""Version 1 was the ``.npz`` layout of kmeans_dask 0.1.0 (``kmeans-dask convert`` reads it)."""
CENTERS, WEIGHTS = "cluster_centers_", "cluster_weights_"
Scalar = None | bool | int | Finite | str
Estimator = TypeVar("Estimator")


class Attributes(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    inertia_: NonNegative
    n_iter_: Count
    n_features_in_: Annotated[int, msgspec.Meta(ge=1)]
    feature_names_in_: list[str] | None = None

    def __post_init__(self) -> None:
        names = self.feature_names_in_
        if names is not None and len(names) != self.n_features_in_:
            raise ValueError(
                f"feature_names_in_ has {len(names)} names but n_features_in_ is "
                f"{self.n_features_in_}"
            )


class ModelContent(Content):
    params: dict[Annotated[str, msgspec.Meta(pattern=r"^[^\W\d]\w*$")], Any]
    array_params: list[Literal["init"]]
    attributes: Attributes

    def __post_init__(self) -> None:
        for name, value in self.params.items():  # checked here to name the parameter
            try:
                convert(value, Scalar | dict[str, Scalar])
            except FileProblem:
                raise ValueError(
                    f"parameter {name!r} is {value!r}; only None, bool, int, finite float, "
                    "str, a dict of those with str keys, or an init array can be stored"
                ) from None
        n_clusters = self.params.get("n_clusters")
        if type(n_clusters) is not int or n_clusters < 1:
            raise ValueError(f"parameter 'n_clusters' must be an integer >= 1, got {n_clusters!r}")
        twice = sorted(set(self.array_params) & set(self.params))
        if twice or len(set(self.array_params)) < len(self.array_params):
            raise ValueError(f"parameters {self.array_params} are stored twice")

    def tensors(self) -> dict[str, Tensor]:
        shape = (self.params["n_clusters"], self.attributes.n_features_in_)
        tensors = {CENTERS: Tensor(shape, FLOATS), WEIGHTS: Tensor(shape[:1], ("F64",), False)}
        tensors.update(
            {f"params.{name}": Tensor(shape, tuple(DTYPES)) for name in self.array_params}
        )
        return tensors

    def check(self, tensors: dict[str, np.ndarray]) -> None:
        negative = int(np.count_nonzero(tensors[WEIGHTS] < 0)) if WEIGHTS in tensors else 0
        if negative:
            raise FileProblem(f"{WEIGHTS} contains {negative} negative value(s)")


MODEL = FileKind(
    "kmeans_dask.model",
    MODEL_FORMAT_VERSION,
    ModelContent,
    older="save the model again with this version",
    legacy="the layout of kmeans_dask 0.1.0 model files, which this version reads only to "
    "convert them: run `kmeans-dask convert OLD.npz NEW.safetensors`",
)


@dataclass
class ModelFile:
    """The content of a model file: ``params`` (an ``init`` array as an array),
    ``arrays`` (``cluster_centers_``, maybe ``cluster_weights_``), ``attributes``
    (``inertia_``, ``n_iter_``, ``n_features_in_``, maybe ``feature_names_in_``)
    and the versions of the layout and of the kmeans_dask that wrote it."""

    params: dict[str, Any]
    arrays: dict[str, np.ndarray]
    attributes: dict[str, Any]
    format_version: int
    library_version: str


def save_model(
    path: str | os.PathLike,
    *,
    params: Mapping[str, Any],
    arrays: Mapping[str, Any],
    attributes: Mapping[str, Any],
) -> None:
    """Write a model file atomically, checked as :func:`load_model` checks it.

    Raises
    ------
    ValueError
        If anything cannot be stored faithfully (a ``RandomState``, a
        non-finite value, shapes that disagree, an unknown attribute...);
        the message names the file and the problem, and nothing is written.
    """
    target = os.fspath(path)
    try:
        for what, value in (("params", params), ("arrays", arrays), ("attributes", attributes)):
            if not isinstance(value, Mapping):
                raise FileProblem(f"{what} must be a mapping, got {type(value).__name__}")
        tensors = {str(name): as_array(value, f"array {name!r}") for name, value in arrays.items()}
        fields: dict[str, Any] = {
            "params": {},
            "array_params": [],
            "attributes": plain(attributes),
        }
        for name, value in params.items():
            if (
                name == "init"
                and not isinstance(value, str | np.generic)
                and (isinstance(value, list | tuple) or hasattr(value, "__array__"))
            ):
                tensors["params.init"] = as_array(value, "parameter 'init'")
                fields["array_params"].append(name)
            else:
                fields["params"][name] = plain(value)
        write(target, MODEL, fields, tensors)
    except FileProblem as exc:
        raise ValueError(f"cannot save model to '{target}': {exc}") from None


def load_model(path: str | os.PathLike) -> ModelFile:
    """Read and check a model file written by :func:`save_model`.

    Raises
    ------
    FileNotFoundError
        If there is no file at ``path``.
    ValueError
        If it is not a valid model file of this version (a 0.1.0 ``.npz``
        file, a checkpoint, truncated or corrupted, tensors or content other
        than the schema declares); the message names the file and the problem.
    """
    target = os.fspath(path)
    if not os.path.exists(target):
        raise FileNotFoundError(f"no model file at '{target}'")
    try:
        content, tensors, version, writer = read(target, MODEL)
    except FileProblem as exc:
        raise ValueError(f"cannot load model file '{target}': {exc}") from None
    params = dict(content.params)
    params.update({name: tensors.pop(f"params.{name}") for name in content.array_params})
    attributes = msgspec.to_builtins(content.attributes)
    return ModelFile(params, tensors, attributes, version, writer)


def save_estimator(model: Any, path: str | os.PathLike) -> None:
    """Write a fitted KMeans; a ``RandomState`` is stored as None (only seeds can be)."""
    params = model.get_params()
    if not isinstance(params["random_state"], int | np.integer | None):
        params["random_state"] = None
    arrays = {name: getattr(model, name) for name in (CENTERS, WEIGHTS) if hasattr(model, name)}
    names = ("inertia_", "n_iter_", "n_features_in_", "feature_names_in_")
    attributes = {name: getattr(model, name) for name in names if hasattr(model, name)}
    save_model(path, params=params, arrays=arrays, attributes=attributes)


def load_estimator(
    path: str | os.PathLike,
    estimator: Callable[..., Estimator],
    validate: Callable[[dict[str, Any]], Any],
) -> Estimator:
    """``estimator(**params)`` with the file's fitted attributes, after ``validate``."""
    check_readable_file(path, "cannot load model")
    stored = load_model(path)
    target = os.fspath(path)
    unknown = sorted(set(stored.params) - set(estimator().get_params()))
    if unknown:
        raise ValueError(
            f"cannot load model '{target}': unknown parameters {unknown} (written by "
            f"kmeans_dask {stored.library_version}?)"
        )
    model = estimator(**stored.params)
    try:
        validate(model.get_params())
    except (TypeError, ValueError) as exc:
        raise ValueError(f"cannot load model '{target}': {exc}") from None
    for name, value in {**stored.arrays, **stored.attributes}.items():
        setattr(model, name, value)
    if "feature_names_in_" in stored.attributes:
        model.feature_names_in_ = np.asarray(stored.attributes["feature_names_in_"], dtype=object)
    model.n_steps_ = 0
    return model
