"""Model files and fit checkpoints, stored without pickle.

Both are one ``.npz`` archive written by :func:`numpy.savez`. Its entries are
plain real numeric arrays (never object arrays), plus one ``__metadata__``
entry: a 1-D ``uint8`` array holding UTF-8 JSON with the format marker and
version, the library version, the scalar fields and the expected shape and
dtype of every other entry.

Reading first bounds what the file can cost: the ZIP end record must
declare at most :data:`MAX_ENTRIES` entries (read without parsing the
directory), and every entry must be stored uncompressed within the file, so
no entry can expand beyond the file's own size. It then opens the archive
with ``np.load(path, allow_pickle=False)``, checks the format marker and
version, derives every entry the format declares and its shape from the
metadata (a model holds only its centres, their weights and an ``init``
array, each sized by ``n_clusters`` and ``n_features_in_``), checks that
the archive holds exactly those, and compares each entry's ``.npy`` header
(shape and dtype) with them *before* reading its data. A crafted file can
therefore never make NumPy unpickle anything nor allocate more than its
own size, and every problem is reported as a :class:`ValueError` whose
message names the file and the problem (a missing file gives
:class:`FileNotFoundError` for a model, ``None`` for a checkpoint).

Writing is atomic: the archive is written to a temporary file in the
target's directory, flushed and fsync'ed, then renamed over the target with
:func:`os.replace` (and the directory fsync'ed where the platform allows), so
a crash or kill at any moment leaves either the previous file or the new
one, never a partial file, and no temporary file is left behind by an
error.

Nothing here needs Dask.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import secrets
import struct
import zipfile
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, is_dataclass
from typing import Any

import numpy as np

from kmeans_dask._version import __version__

__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_FORMAT_VERSION",
    "MODEL_FORMAT",
    "MODEL_FORMAT_VERSION",
    "CheckpointState",
    "ModelFile",
    "RunProgress",
    "fit_fingerprint",
    "load_model",
    "read_checkpoint",
    "save_model",
    "write_checkpoint",
]

MODEL_FORMAT = "kmeans_dask.model"
"""Value of the ``"format"`` field of a model file."""
MODEL_FORMAT_VERSION = 1
"""Newest model file layout this version writes and reads."""
CHECKPOINT_FORMAT = "kmeans_dask.checkpoint"
"""Value of the ``"format"`` field of a checkpoint file."""
CHECKPOINT_FORMAT_VERSION = 2
"""The checkpoint layout this version writes and reads (2: every run kept, so a fit can
go further; 1, which kept only the best finished run, is refused)."""

METADATA_KEY = "__metadata__"
"""Archive entry holding the UTF-8 JSON metadata as a 1-D uint8 array."""
CENTERS_KEY = "cluster_centers_"
"""Archive entry of a model file holding the fitted centres."""
WEIGHTS_KEY = "cluster_weights_"
"""Optional archive entry of a model file: the weight of each centre (float64)."""
PARAM_ARRAY_PREFIX = "params."
"""Prefix of the archive entries holding array-valued estimator parameters."""
ARRAY_PARAMS = ("init",)
"""Parameters that may be stored as arrays (of shape ``(n_clusters, n_features_in_)``)."""
MAX_ENTRIES = 16
"""Most entries an archive may declare before anything else is read (a valid file
holds the metadata and at most three arrays; a few more are named in the refusal)."""

_KNOWN_FORMATS = {MODEL_FORMAT: "model", CHECKPOINT_FORMAT: "checkpoint"}
_MAX_METADATA_BYTES = 64 * 2**20
_ZIP_SIGNATURES = (b"PK\x03\x04", b"PK\x05\x06")
# Keyword names np.savez itself takes: an entry so named would clash with them.
_CENTER_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
_MODEL_ATTRIBUTES = ("inertia_", "n_iter_", "n_features_in_")
_OPTIONAL_MODEL_ATTRIBUTES = ("feature_names_in_",)
_MODEL_METADATA_FIELDS = (
    "format",
    "format_version",
    "library_version",
    "params",
    "array_params",
    "attributes",
    "arrays",
)
_CHECKPOINT_METADATA_FIELDS = (
    "format",
    "format_version",
    "library_version",
    "fingerprint",
    "seeds",
    "runs",
    "completed",
    "arrays",
)
_RUN_FIELDS = ("history", "inertia")
_HISTORY_FIELDS: dict[str, type] = {
    "iteration": int,
    "inertia": float,
    "center_shift": float,
    "n_empty": int,
    "seconds": float,
}
_FINGERPRINT_SCHEMA = "kmeans_dask.fit_fingerprint/1"

PathLike = str | os.PathLike


class _SchemaError(ValueError):
    """A problem with the content; the public functions prefix the file name."""


@dataclass
class ModelFile:
    """The content of a model file, as returned by :func:`load_model`.

    Attributes
    ----------
    params : dict
        Estimator parameters. JSON scalars as stored; array-valued
        parameters (such as an ``init`` array) as NumPy arrays.
    arrays : dict of str to ndarray
        Fitted arrays, always including ``"cluster_centers_"`` of shape
        ``(params["n_clusters"], attributes["n_features_in_"])``.
    attributes : dict
        ``inertia_`` (float), ``n_iter_`` (int), ``n_features_in_`` (int) and,
        when it was saved, ``feature_names_in_`` (list of str).
    format_version : int
        Layout version of the file.
    library_version : str
        ``kmeans_dask`` version that wrote the file.
    """

    params: dict[str, Any]
    arrays: dict[str, np.ndarray]
    attributes: dict[str, Any]
    format_version: int
    library_version: str = ""


@dataclass
class RunProgress:
    """One of the ``n_init`` runs of a fit, as a checkpoint keeps it.

    Attributes
    ----------
    centers : ndarray of shape (n_clusters, n_features)
        The run's centres after its last iteration (float32 or float64, finite).
    history : list of dict
        One dict per iteration done, at least one, with the keys
        ``iteration`` (int), ``inertia`` (float), ``center_shift`` (float),
        ``n_empty`` (int) and ``seconds`` (float); ``dataclasses.asdict`` of an
        :class:`~kmeans_dask._fit.lloyd.IterationRecord` gives one (writing
        accepts the records themselves too).
    inertia : float or None
        The inertia of ``centers`` once the run finished (its final pass
        done); None while it is in progress.
    """

    centers: np.ndarray
    history: list[dict[str, Any]]
    inertia: float | None = None


@dataclass
class CheckpointState:
    """Where a long fit stands, enough to resume it or to take it further.

    Attributes
    ----------
    fingerprint : str
        Identifies the fit (see :func:`fit_fingerprint`); compare it with the
        fingerprint of the fit being resumed and refuse a mismatch.
    seeds : list of int
        The seed of every run.
    runs : list of RunProgress
        The runs started so far, in order, at most one per seed, each
        finished or in progress. A finished run is kept with its history,
        so a fit with a larger ``max_iter`` or a smaller ``tol`` can take it
        further.
    completed : bool
        True once every run finished.
    """

    fingerprint: str
    seeds: list[int]
    runs: list[RunProgress] = field(default_factory=list)
    completed: bool = False


@dataclass(frozen=True)
class _Spec:
    """Expected shape and dtype of one archive entry."""

    shape: tuple[int, ...]
    dtype: np.dtype


Schema = Callable[[dict[str, Any]], dict[str, _Spec]]
"""Validates metadata and returns the expected shape and dtype of every entry."""


# --- public functions ----------------------------------------------------------------


def save_model(
    path: PathLike,
    *,
    params: Mapping[str, Any],
    arrays: Mapping[str, np.ndarray],
    attributes: Mapping[str, Any],
) -> None:
    """Write a fitted model to one ``.npz`` file, atomically and without pickle.

    Everything is validated as :func:`load_model` would validate it, so a
    file that is written can be loaded.

    Parameters
    ----------
    path : str or os.PathLike
        Destination, used as given (no suffix is added). An existing file is
        replaced atomically.
    params : mapping of str to object
        Estimator parameters (``get_params()``). Values must be None, bool,
        int, float (finite), str, a dict of those with str keys (such as
        ``assign_options``), or, for the parameters in :data:`ARRAY_PARAMS`
        (``init``), a real numeric array-like of shape ``(n_clusters,
        n_features_in_)``, stored as the archive entry ``"params.init"``, not
        in the JSON. Must contain ``n_clusters``. A ``RandomState`` cannot be
        stored: replace it by an int seed or None first.
    arrays : mapping of str to ndarray
        Fitted arrays: ``"cluster_centers_"`` (2-D float32 or float64,
        finite, shape ``(n_clusters, n_features_in_)``) and optionally
        ``"cluster_weights_"`` (float64, finite, >= 0, shape
        ``(n_clusters,)``); nothing else.
    attributes : mapping of str to object
        ``inertia_`` (finite float >= 0), ``n_iter_`` (int >= 0),
        ``n_features_in_`` (int >= 1) and optionally ``feature_names_in_``
        (sequence of ``n_features_in_`` str, or None). No other keys.

    Raises
    ------
    ValueError
        If anything cannot be stored faithfully; the message names the file
        and the problem. Nothing is written then.
    OSError
        If writing fails; a previous file at ``path`` is left intact.
    """
    target = os.fspath(path)
    try:
        metadata, payload = _model_payload(params, arrays, attributes)
        _validate_payload(metadata, payload, _model_schema)
        _check_model_content(metadata, payload)
    except _SchemaError as exc:
        raise ValueError(f"cannot save model to '{target}': {exc}") from None
    _atomic_savez(target, metadata, payload)


def load_model(path: PathLike) -> ModelFile:
    """Read and strictly validate a model file written by :func:`save_model`.

    Parameters
    ----------
    path : str or os.PathLike
        The ``.npz`` file.

    Returns
    -------
    ModelFile
        Parameters (array-valued ones restored as arrays), fitted arrays,
        attributes and the file's format and library versions.

    Raises
    ------
    FileNotFoundError
        If there is no file at ``path``.
    ValueError
        If the file is not a valid model file of a supported version: not a
        ZIP archive, truncated or corrupted, a checkpoint or other file, a
        newer ``format_version``, more than :data:`MAX_ENTRIES` entries or a
        compressed one, entries missing or other than the format declares,
        an entry whose shape or dtype differs from the metadata or is not
        real numeric (an object array is refused without being unpickled),
        centres that are not finite 2-D float32/float64 of shape
        ``(n_clusters, n_features_in_)``, centre weights that are not finite,
        non-negative float64 of shape ``(n_clusters,)``, or metadata fields
        of the wrong type. The message names the file and the problem.
    """
    target = os.fspath(path)
    if not os.path.exists(target):
        raise FileNotFoundError(f"no model file at '{target}'")
    try:
        metadata, arrays = _read_archive(target, MODEL_FORMAT, MODEL_FORMAT_VERSION, _model_schema)
        _check_model_content(metadata, arrays)
    except _SchemaError as exc:
        raise ValueError(f"cannot load model file '{target}': {exc}") from None
    params = dict(metadata["params"])
    for name in metadata["array_params"]:
        params[name] = arrays.pop(PARAM_ARRAY_PREFIX + name)
    stored = metadata["attributes"]
    attributes: dict[str, Any] = {
        "inertia_": float(stored["inertia_"]),
        "n_iter_": stored["n_iter_"],
        "n_features_in_": stored["n_features_in_"],
    }
    if "feature_names_in_" in stored:
        attributes["feature_names_in_"] = list(stored["feature_names_in_"])
    return ModelFile(
        params=params,
        arrays=arrays,
        attributes=attributes,
        format_version=metadata["format_version"],
        library_version=metadata["library_version"],
    )


def write_checkpoint(path: PathLike, state: CheckpointState) -> None:
    """Write a fit checkpoint atomically (temporary file, fsync, ``os.replace``).

    A crash or kill at any moment leaves either the previous checkpoint or
    the new one at ``path``, never a partial file.

    Parameters
    ----------
    path : str or os.PathLike
        Destination, used as given; an existing checkpoint is replaced.
    state : CheckpointState
        What to store; validated as :func:`read_checkpoint` validates it.

    Raises
    ------
    TypeError
        If ``state`` is not a :class:`CheckpointState`.
    ValueError
        If the state cannot be stored faithfully (wrong types, non-finite
        centres, runs with centres of other shapes, more runs than seeds,
        ``completed`` with a run unfinished, ...); nothing is written then.
    OSError
        If writing fails; the previous checkpoint is left intact.
    """
    target = os.fspath(path)
    if not isinstance(state, CheckpointState):
        raise TypeError(f"state must be a CheckpointState, got {type(state).__name__}")
    try:
        metadata, payload = _checkpoint_payload(state)
        _validate_payload(metadata, payload, _checkpoint_schema)
        _check_checkpoint_content(payload)
    except _SchemaError as exc:
        raise ValueError(f"cannot write checkpoint '{target}': {exc}") from None
    _atomic_savez(target, metadata, payload)


def read_checkpoint(path: PathLike) -> CheckpointState | None:
    """Read and strictly validate a checkpoint written by :func:`write_checkpoint`.

    Parameters
    ----------
    path : str or os.PathLike
        The checkpoint file.

    Returns
    -------
    CheckpointState or None
        The stored state, or None if there is no file at ``path``. Compare
        its ``fingerprint`` with the fit being resumed before using it.

    Raises
    ------
    ValueError
        If the file exists but is not a valid checkpoint of this version's
        layout (corrupted or truncated, a model file, another
        ``format_version``, entries missing or extra or of the wrong shape or
        dtype, fields of the wrong type). The message names the file and the
        problem.
    """
    target = os.fspath(path)
    if not os.path.exists(target):
        return None
    try:
        metadata, arrays = _read_archive(
            target, CHECKPOINT_FORMAT, CHECKPOINT_FORMAT_VERSION, _checkpoint_schema
        )
        _check_checkpoint_content(arrays)
    except _SchemaError as exc:
        raise ValueError(f"cannot read checkpoint '{target}': {exc}") from None
    runs = [
        RunProgress(
            centers=centers,
            history=[
                {name: kind(entry[name]) for name, kind in _HISTORY_FIELDS.items()}
                for entry in run["history"]
            ],
            inertia=None if run["inertia"] is None else float(run["inertia"]),
        )
        for centers, run in zip(arrays["centers"], metadata["runs"], strict=True)
    ]
    return CheckpointState(
        fingerprint=metadata["fingerprint"],
        seeds=list(metadata["seeds"]),
        runs=runs,
        completed=metadata["completed"],
    )


def fit_fingerprint(params: Mapping[str, Any], n_samples: int, n_features: int, dtype: Any) -> str:
    """A sha256 hex digest identifying a fit, to refuse resuming a different one.

    The digest covers a canonical JSON (sorted keys, no whitespace) of the
    parameters, the data's shape and the data's dtype. Array-valued
    parameters (an ``init`` array) enter through their dtype, shape and the
    sha256 of their little-endian C-order bytes; NumPy scalars count as the
    equal Python scalars; a ``RandomState`` enters through its current
    state. Pass only the parameters that determine the result (for instance
    leave out ``verbose``).

    Parameters
    ----------
    params : mapping of str to object
        Estimator parameters: None, bool, int, float, str, lists, tuples,
        dicts with str keys, real numeric arrays or ``RandomState``.
    n_samples : int
        Number of rows of the training data.
    n_features : int
        Number of columns of the training data.
    dtype : dtype-like
        dtype of the training data.

    Returns
    -------
    str
        64 lowercase hex digits; equal inputs give equal digests in any
        process and on any platform.

    Raises
    ------
    TypeError
        If a parameter has a type with no canonical form.
    ValueError
        If ``n_samples`` or ``n_features`` is not a non-negative integer.
    """
    sizes = {}
    for name, value in (("n_samples", n_samples), ("n_features", n_features)):
        if isinstance(value, np.integer):
            value = int(value)
        if not _is_int(value) or value < 0:
            raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
        sizes[name] = value
    if not isinstance(params, Mapping):
        raise TypeError(f"params must be a mapping, got {type(params).__name__}")
    canonical = {
        "schema": _FINGERPRINT_SCHEMA,
        "params": {
            str(name): _canonical(value, f"params[{name!r}]") for name, value in params.items()
        },
        "n_samples": sizes["n_samples"],
        "n_features": sizes["n_features"],
        "dtype": _little_endian(np.dtype(dtype)).str,
    }
    text = json.dumps(canonical, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode("ascii")).hexdigest()


# --- building what is written --------------------------------------------------------


def _model_payload(
    params: Mapping[str, Any], arrays: Mapping[str, Any], attributes: Mapping[str, Any]
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    if not isinstance(params, Mapping):
        raise _SchemaError(f"params must be a mapping, got {type(params).__name__}")
    if not isinstance(arrays, Mapping):
        raise _SchemaError(f"arrays must be a mapping, got {type(arrays).__name__}")
    if not isinstance(attributes, Mapping):
        raise _SchemaError(f"attributes must be a mapping, got {type(attributes).__name__}")
    payload = {
        str(name): _numeric_array(value, f"array {name!r}") for name, value in arrays.items()
    }
    json_params: dict[str, Any] = {}
    array_params: list[str] = []
    for name, value in params.items():
        if not isinstance(name, str) or not name.isidentifier():
            raise _SchemaError(f"parameter name {name!r} is not a Python identifier")
        what = f"parameter {name!r}"
        if name in ARRAY_PARAMS and _is_array_like(value):
            payload[PARAM_ARRAY_PREFIX + name] = _numeric_array(value, what)
            array_params.append(name)
        elif isinstance(value, Mapping):
            json_params[name] = {
                _option_name(key, what): _json_scalar(item, f"{what}[{key!r}]")
                for key, item in value.items()
            }
        else:
            json_params[name] = _json_scalar(value, what)
    _exact_keys(attributes, _MODEL_ATTRIBUTES, _OPTIONAL_MODEL_ATTRIBUTES, "attributes")
    stored: dict[str, Any] = {
        name: _json_scalar(attributes[name], f"attribute {name!r}") for name in _MODEL_ATTRIBUTES
    }
    if isinstance(stored["inertia_"], int) and not isinstance(stored["inertia_"], bool):
        stored["inertia_"] = float(stored["inertia_"])
    names = attributes.get("feature_names_in_")
    if names is not None:
        if isinstance(names, str) or not isinstance(names, np.ndarray | list | tuple):
            raise _SchemaError(
                "attribute 'feature_names_in_' must be a sequence of str, got "
                f"{type(names).__name__}"
            )
        values = names.tolist() if isinstance(names, np.ndarray) else list(names)
        bad = [value for value in values if not isinstance(value, str)]
        if bad:
            raise _SchemaError(
                f"attribute 'feature_names_in_' must hold only str, found {bad[0]!r} of type "
                f"{type(bad[0]).__name__}"
            )
        stored["feature_names_in_"] = [str(value) for value in values]
    metadata = {
        "format": MODEL_FORMAT,
        "format_version": MODEL_FORMAT_VERSION,
        "library_version": __version__,
        "params": json_params,
        "array_params": array_params,
        "attributes": stored,
        "arrays": _specs_of(payload),
    }
    return metadata, payload


def _checkpoint_payload(state: CheckpointState) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    runs = _as_list(state.runs, "runs")
    for position, run in enumerate(runs):
        if not isinstance(run, RunProgress):
            raise _SchemaError(f"runs[{position}] must be a RunProgress, got {type(run).__name__}")
    centers = [_numeric_array(run.centers, f"runs[{i}].centers") for i, run in enumerate(runs)]
    shapes = {(array.shape, array.dtype) for array in centers}
    if len(shapes) > 1:
        raise _SchemaError(
            "the runs' centres must share one shape and dtype, got "
            + ", ".join(f"{shape} {dtype}" for shape, dtype in sorted(shapes, key=str))
        )
    payload = {"centers": np.stack(centers) if centers else np.zeros((0, 0, 0))}
    metadata = {
        "format": CHECKPOINT_FORMAT,
        "format_version": CHECKPOINT_FORMAT_VERSION,
        "library_version": __version__,
        "fingerprint": state.fingerprint,
        "seeds": [
            _json_scalar(seed, f"seeds[{i}]")
            for i, seed in enumerate(_as_list(state.seeds, "seeds"))
        ],
        "runs": [
            {
                "history": _history_payload(run.history, f"runs[{i}].history"),
                "inertia": _json_scalar(run.inertia, f"runs[{i}].inertia"),
            }
            for i, run in enumerate(runs)
        ],
        "completed": _json_scalar(state.completed, "completed"),
        "arrays": _specs_of(payload),
    }
    return metadata, payload


def _history_payload(history: Any, what: str) -> list[dict[str, Any]]:
    records = []
    for position, entry in enumerate(_as_list(history, what)):
        if is_dataclass(entry) and not isinstance(entry, type):
            entry = asdict(entry)
        if not isinstance(entry, Mapping):
            raise _SchemaError(f"{what}[{position}] must be a dict, got {type(entry).__name__}")
        record = {
            name: _json_scalar(value, f"{what}[{position}][{name!r}]")
            for name, value in entry.items()
        }
        for name, kind in _HISTORY_FIELDS.items():
            value = record.get(name)
            if kind is float and _is_int(value):
                record[name] = float(value)
        records.append(record)
    return records


def _specs_of(payload: Mapping[str, np.ndarray]) -> dict[str, dict[str, Any]]:
    return {
        key: {"shape": list(array.shape), "dtype": array.dtype.str}
        for key, array in payload.items()
    }


def _as_list(value: Any, what: str) -> list[Any]:
    if isinstance(value, str) or not isinstance(value, list | tuple):
        raise _SchemaError(f"{what} must be a list, got {type(value).__name__}")
    return list(value)


def _is_array_like(value: Any) -> bool:
    """Lists, tuples and objects NumPy converts to arrays, but not NumPy scalars."""
    if isinstance(value, np.generic | str):
        return False
    return isinstance(value, list | tuple) or hasattr(value, "__array__")


def _option_name(key: Any, what: str) -> str:
    if not isinstance(key, str):
        raise _SchemaError(f"{what} has the key {key!r} of type {type(key).__name__}; only str")
    return key


def _numeric_array(value: Any, what: str) -> np.ndarray:
    try:
        array = np.asarray(value)
    except (TypeError, ValueError) as exc:
        raise _SchemaError(f"{what} cannot be converted to an array: {exc}") from None
    if not _is_real_numeric(array.dtype):
        raise _SchemaError(
            f"{what} has dtype {array.dtype}; only real numeric arrays (integer or floating "
            "point) can be stored, never object, string, bool or complex arrays"
        )
    return array


def _check_json_scalar(value: Any, what: str) -> None:
    if not (value is None or isinstance(value, bool | int | float | str)):
        raise _SchemaError(f"{what} must be a JSON scalar, got {_json_type(value)}")
    if isinstance(value, float) and not math.isfinite(value):
        raise _SchemaError(f"{what} is {value!r}, not a finite number")


def _json_scalar(value: Any, what: str) -> Any:
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _SchemaError(f"{what} is {value!r}; only finite numbers can be stored")
        return value
    raise _SchemaError(
        f"{what} is of type {type(value).__name__}; only None, bool, int, finite float, str "
        "(or, for parameters, dicts of those and an init array) can be stored without pickle"
    )


# --- atomic writing ------------------------------------------------------------------


def _atomic_savez(
    target: str, metadata: Mapping[str, Any], payload: Mapping[str, np.ndarray]
) -> None:
    """``np.savez`` to a temporary sibling, fsync, then ``os.replace`` onto ``target``."""
    text = json.dumps(metadata, allow_nan=False, ensure_ascii=False)
    entries = {METADATA_KEY: np.frombuffer(text.encode("utf-8"), dtype=np.uint8)}
    entries.update(payload)
    directory = os.path.dirname(os.path.abspath(target))
    base = os.path.basename(target)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        temporary = os.path.join(directory, f".{base}.{secrets.token_hex(8)}.tmp")
        try:
            # Mode 0o666 lets the umask decide the permissions, as for open().
            descriptor = os.open(temporary, flags, 0o666)
            break
        except FileExistsError:
            continue
    else:  # pragma: no cover - 100 collisions of 64 random bits
        raise FileExistsError(f"could not create a temporary file next to '{target}'")
    try:
        with os.fdopen(descriptor, "wb") as handle:
            np.savez(handle, **entries)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    _fsync_directory(directory)


def _fsync_directory(directory: str) -> None:
    """Make the rename durable (POSIX); a no-op where directories cannot be opened."""
    if os.name != "posix":
        return
    with contextlib.suppress(OSError):
        descriptor = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


# --- reading -------------------------------------------------------------------------


def _read_archive(
    target: str, expected_format: str, newest_version: int, schema: Schema
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Open, check format and version, check every entry's header, read the data."""
    if os.path.isdir(target):
        raise _SchemaError("it is a directory, not a file")
    with open(target, "rb") as handle:
        head = handle.read(4)
        if not head:
            raise _SchemaError("the file is empty")
        if not head.startswith(_ZIP_SIGNATURES):
            raise _SchemaError(
                "not an .npz archive (it does not start with a ZIP signature); the file is "
                "corrupted or of another kind"
            )
        _check_entry_count(_declared_entry_count(handle))
        file_size = os.fstat(handle.fileno()).st_size
    try:
        archive = np.load(target, allow_pickle=False)
    except Exception as exc:
        raise _SchemaError(_unreadable(exc)) from None
    if not isinstance(archive, np.lib.npyio.NpzFile):  # pragma: no cover - ZIP checked above
        raise _SchemaError("not an .npz archive")
    with archive:
        try:
            return _read_entries(archive, file_size, expected_format, newest_version, schema)
        except _SchemaError:
            raise
        except Exception as exc:
            raise _SchemaError(_unreadable(exc)) from None


def _declared_entry_count(handle: Any) -> int:
    """The entry count in a ZIP archive's end record, read without parsing its directory.

    ZIP64 archives record 0xFFFF there, which is over any limit we set.
    """
    handle.seek(0, os.SEEK_END)
    size = handle.tell()
    # The end record closes the file, followed by a comment of at most 0xFFFF bytes.
    tail_size = min(size, zipfile.sizeEndCentDir + 0xFFFF)
    handle.seek(size - tail_size)
    tail = handle.read(tail_size)
    start = tail.rfind(zipfile.stringEndArchive)
    if start < 0 or len(tail) - start < zipfile.sizeEndCentDir:
        raise _SchemaError(
            "not a readable .npz archive (truncated or corrupted?): no ZIP end record"
        )
    _signature, _disk, _first_disk, _on_disk, total, _size, _offset, _comment = struct.unpack(
        zipfile.structEndArchive, tail[start : start + zipfile.sizeEndCentDir]
    )
    return int(total)


def _check_entry_count(count: int) -> None:
    if count > MAX_ENTRIES:
        raise _SchemaError(
            f"the archive declares {count} entries, more than the {MAX_ENTRIES} a kmeans_dask "
            "file may hold"
        )


def _unreadable(exc: BaseException) -> str:
    return f"not a readable .npz archive (truncated or corrupted?): {type(exc).__name__}: {exc}"


def _read_entries(
    archive: Any, file_size: int, expected_format: str, newest_version: int, schema: Schema
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    infos = archive.zip.infolist()
    _check_entry_count(len(infos))  # the end record may have said otherwise
    names = [info.filename for info in infos]
    duplicated = sorted(name for name, count in Counter(names).items() if count > 1)
    if duplicated:
        raise _SchemaError(f"the archive holds duplicated entries {duplicated}")
    foreign = sorted(name for name in names if not name.endswith(".npy"))
    if foreign:
        raise _SchemaError(f"the archive holds entries that are not .npy arrays: {foreign}")
    _check_stored_within(infos, file_size)
    keys = {name[: -len(".npy")] for name in names}
    if METADATA_KEY not in keys:
        raise _SchemaError(
            f"the archive has no {METADATA_KEY!r} entry: it was not written by kmeans_dask"
        )
    metadata = _read_metadata(archive)
    _check_format(metadata, expected_format, newest_version)
    specs = schema(metadata)
    _check_key_set(keys - {METADATA_KEY}, specs)
    arrays = {}
    for key in sorted(specs):
        shape, dtype = _read_header(archive, key)
        _check_entry(key, shape, dtype, specs[key])
        available = archive.zip.getinfo(key + ".npy").file_size
        needed = math.prod(shape) * dtype.itemsize
        if needed > available:
            raise _SchemaError(
                f"entry {key!r} declares shape {shape} ({needed} bytes) but holds only "
                f"{available} bytes (truncated?)"
            )
        array = archive[key]
        _check_entry(key, array.shape, array.dtype, specs[key])
        arrays[key] = array
    return metadata, arrays


def _check_stored_within(infos: list[zipfile.ZipInfo], file_size: int) -> None:
    """Every entry stored uncompressed within the file, so none expands beyond it."""
    for info in infos:
        if info.compress_type != zipfile.ZIP_STORED or info.compress_size != info.file_size:
            raise _SchemaError(
                f"entry {info.filename!r} is compressed: kmeans_dask stores entries "
                "uncompressed and reads no others (a small compressed file could expand "
                "into a large allocation)"
            )
    declared = sum(info.file_size for info in infos)
    if declared > file_size:
        raise _SchemaError(
            f"the entries declare {declared} bytes, more than the file's {file_size} "
            "(truncated or corrupted?)"
        )


def _read_header(archive: Any, key: str) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype from an entry's ``.npy`` header, without reading its data."""
    fmt = np.lib.format
    with archive.zip.open(key + ".npy") as handle:
        try:
            version = fmt.read_magic(handle)
        except ValueError:
            raise _SchemaError(f"entry {key!r} is not a .npy array") from None
        if version == (1, 0):
            shape, _, dtype = fmt.read_array_header_1_0(handle)
        elif version == (2, 0):
            shape, _, dtype = fmt.read_array_header_2_0(handle)
        else:
            raise _SchemaError(f"entry {key!r} uses unsupported .npy format version {version}")
    return tuple(shape), dtype


def _read_metadata(archive: Any) -> dict[str, Any]:
    shape, dtype = _read_header(archive, METADATA_KEY)
    if dtype != np.dtype(np.uint8) or len(shape) != 1:
        raise _SchemaError(
            f"the {METADATA_KEY!r} entry must be a 1-D uint8 array, got dtype {dtype} and "
            f"shape {shape}"
        )
    if shape[0] > _MAX_METADATA_BYTES:
        raise _SchemaError(
            f"the {METADATA_KEY!r} entry is {shape[0]} bytes, over the limit of "
            f"{_MAX_METADATA_BYTES}"
        )
    raw = archive[METADATA_KEY].tobytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _SchemaError(f"the metadata is not UTF-8 text: {exc}") from None
    try:
        metadata = json.loads(
            text, parse_constant=_refuse_constant, object_pairs_hook=_refuse_duplicates
        )
    except (ValueError, RecursionError) as exc:
        raise _SchemaError(f"the metadata is not valid JSON: {exc}") from None
    if not isinstance(metadata, dict):
        raise _SchemaError(f"the metadata must be a JSON object, got {type(metadata).__name__}")
    return metadata


def _refuse_constant(name: str) -> Any:
    raise _SchemaError(f"the metadata contains the non-standard JSON constant {name}")


def _refuse_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _SchemaError(f"the metadata repeats the key {key!r}")
        result[key] = value
    return result


def _check_format(metadata: Mapping[str, Any], expected: str, newest_version: int) -> None:
    marker = metadata.get("format")
    if marker != expected:
        if isinstance(marker, str) and marker in _KNOWN_FORMATS:
            raise _SchemaError(
                f"it is a kmeans_dask {_KNOWN_FORMATS[marker]} file (format {marker!r}), not a "
                f"{_KNOWN_FORMATS[expected]} file (format {expected!r})"
            )
        raise _SchemaError(f"format marker is {marker!r}, expected {expected!r}")
    version = metadata.get("format_version")
    if not _is_int(version) or version < 1:
        raise _SchemaError(f"format_version {version!r} is not a positive integer")
    if version > newest_version:
        writer = metadata.get("library_version")
        by = f" by kmeans_dask {writer}" if isinstance(writer, str) else ""
        raise _SchemaError(
            f"the file has format_version {version} (written{by}), but this kmeans_dask "
            f"{__version__} reads format_version {newest_version} at most: upgrade kmeans_dask "
            "to read it"
        )


# --- validation shared by reading and writing ----------------------------------------


def _validate_payload(
    metadata: dict[str, Any], payload: Mapping[str, np.ndarray], schema: Schema
) -> None:
    """Check what is about to be written exactly as reading it back would."""
    specs = schema(metadata)
    _check_key_set(set(payload), specs)
    for key, spec in specs.items():
        _check_entry(key, payload[key].shape, payload[key].dtype, spec)


def _check_key_set(
    present: set[str],
    expected: Mapping[str, Any],
    *,
    optional: frozenset[str] = frozenset(),
    source: str = "the metadata lists exactly",
) -> None:
    missing = sorted(set(expected) - optional - present)
    extra = sorted(present - set(expected))
    problems = []
    if missing:
        problems.append(f"missing array entries {missing}")
    if extra:
        problems.append(f"unexpected array entries {extra}")
    if problems:
        raise _SchemaError("; ".join(problems) + f" ({source} {sorted(expected)})")


def _check_entry(key: str, shape: tuple[int, ...], dtype: np.dtype, spec: _Spec) -> None:
    if not _is_real_numeric(dtype):
        raise _SchemaError(
            f"entry {key!r} has dtype {dtype}, which is not a real numeric dtype (object "
            "arrays are never loaded)"
        )
    if dtype != spec.dtype:
        raise _SchemaError(f"entry {key!r} has dtype {dtype} but the metadata says {spec.dtype}")
    if tuple(shape) != spec.shape:
        raise _SchemaError(
            f"entry {key!r} has shape {tuple(shape)} but the metadata says {spec.shape}"
        )


def _parse_specs(value: Any) -> dict[str, _Spec]:
    if not isinstance(value, dict):
        raise _SchemaError(f"metadata field 'arrays' must be an object, got {_json_type(value)}")
    specs = {}
    for key, entry in value.items():
        if key == METADATA_KEY:
            raise _SchemaError(f"metadata field 'arrays' must not list {METADATA_KEY!r}")
        if not isinstance(entry, dict):
            raise _SchemaError(f"arrays[{key!r}] must be an object, got {_json_type(entry)}")
        _exact_keys(entry, ("shape", "dtype"), (), f"arrays[{key!r}]")
        shape = entry["shape"]
        if not isinstance(shape, list) or not all(_is_int(n) and n >= 0 for n in shape):
            raise _SchemaError(
                f"arrays[{key!r}]['shape'] must be a list of integers >= 0, got {shape!r}"
            )
        if not isinstance(entry["dtype"], str):
            raise _SchemaError(
                f"arrays[{key!r}]['dtype'] must be a string, got {_json_type(entry['dtype'])}"
            )
        try:
            dtype = np.dtype(entry["dtype"])
        except (TypeError, ValueError):
            raise _SchemaError(
                f"arrays[{key!r}]['dtype'] is {entry['dtype']!r}, not a NumPy dtype"
            ) from None
        if not _is_real_numeric(dtype):
            raise _SchemaError(
                f"arrays[{key!r}]['dtype'] is {entry['dtype']!r}, not a real numeric dtype"
            )
        specs[key] = _Spec(tuple(shape), dtype)
    return specs


def _model_schema(metadata: dict[str, Any]) -> dict[str, _Spec]:
    """Validate model metadata; return the expected shape and dtype of every entry.

    The entries are those the format declares, sized by ``n_clusters`` and
    ``n_features_in_``: the file may leave out only the optional ones.
    """
    _exact_keys(metadata, _MODEL_METADATA_FIELDS, (), "metadata")
    _expect(metadata["library_version"], str, "metadata field 'library_version'")
    params = metadata["params"]
    _expect(params, dict, "metadata field 'params'")
    for name, value in params.items():
        if not name.isidentifier():
            raise _SchemaError(f"parameter name {name!r} is not a Python identifier")
        if isinstance(value, dict):
            for key, item in value.items():
                _check_json_scalar(item, f"parameter {name!r}[{key!r}]")
        else:
            _check_json_scalar(value, f"parameter {name!r}")
    array_params = metadata["array_params"]
    if not isinstance(array_params, list) or not all(isinstance(n, str) for n in array_params):
        raise _SchemaError(
            f"metadata field 'array_params' must be a list of str, got {array_params!r}"
        )
    if len(set(array_params)) != len(array_params):
        raise _SchemaError(f"metadata field 'array_params' repeats names: {array_params}")
    unknown = sorted(set(array_params) - set(ARRAY_PARAMS))
    if unknown:
        raise _SchemaError(
            f"metadata field 'array_params' lists {unknown}; only {list(ARRAY_PARAMS)} may be "
            "arrays"
        )
    both = sorted(set(array_params) & set(params))
    if both:
        raise _SchemaError(f"parameters {both} are stored both as arrays and in the JSON")
    n_clusters = params.get("n_clusters")
    if not _is_int(n_clusters) or n_clusters < 1:
        raise _SchemaError(f"parameter 'n_clusters' must be an integer >= 1, got {n_clusters!r}")
    n_features = _check_model_attributes(metadata["attributes"])
    specs = _parse_specs(metadata["arrays"])
    centers_shape = (n_clusters, n_features)
    declared = {CENTERS_KEY: centers_shape, WEIGHTS_KEY: (n_clusters,)}
    declared.update({PARAM_ARRAY_PREFIX + name: centers_shape for name in array_params})
    _check_key_set(
        set(specs),
        declared,
        optional=frozenset({WEIGHTS_KEY}),
        source="a model file with these parameters holds",
    )
    centers = specs[CENTERS_KEY]
    if centers.dtype not in _CENTER_DTYPES:
        raise _SchemaError(f"{CENTERS_KEY} must be float32 or float64, got dtype {centers.dtype}")
    weights = specs.get(WEIGHTS_KEY)
    if weights is not None and weights.dtype != np.float64:
        raise _SchemaError(f"{WEIGHTS_KEY} must be float64, got dtype {weights.dtype}")
    for key, spec in specs.items():
        if spec.shape != declared[key]:
            raise _SchemaError(
                f"{key} has shape {spec.shape}, but n_clusters={n_clusters} and "
                f"n_features_in_={n_features} make it {declared[key]}"
            )
    return specs


def _check_model_attributes(attributes: Any) -> int:
    _expect(attributes, dict, "metadata field 'attributes'")
    _exact_keys(attributes, _MODEL_ATTRIBUTES, _OPTIONAL_MODEL_ATTRIBUTES, "attributes")
    inertia = attributes["inertia_"]
    if not _is_real(inertia) or not math.isfinite(inertia) or inertia < 0:
        raise _SchemaError(f"attribute 'inertia_' must be a finite number >= 0, got {inertia!r}")
    n_iter = attributes["n_iter_"]
    if not _is_int(n_iter) or n_iter < 0:
        raise _SchemaError(f"attribute 'n_iter_' must be an integer >= 0, got {n_iter!r}")
    n_features = attributes["n_features_in_"]
    if not _is_int(n_features) or n_features < 1:
        raise _SchemaError(
            f"attribute 'n_features_in_' must be an integer >= 1, got {n_features!r}"
        )
    if "feature_names_in_" in attributes:
        names = attributes["feature_names_in_"]
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise _SchemaError(
                f"attribute 'feature_names_in_' must be a list of str, got {names!r}"
            )
        if len(names) != n_features:
            raise _SchemaError(
                f"attribute 'feature_names_in_' has {len(names)} names but n_features_in_ is "
                f"{n_features}"
            )
    return n_features


def _check_model_content(metadata: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> None:
    _check_finite(CENTERS_KEY, arrays[CENTERS_KEY])
    if "init" in metadata["array_params"]:
        _check_finite("the init array", arrays[PARAM_ARRAY_PREFIX + "init"])
    if WEIGHTS_KEY in arrays:
        weights = arrays[WEIGHTS_KEY]
        _check_finite(WEIGHTS_KEY, weights)
        negative = int((weights < 0).sum())
        if negative:
            raise _SchemaError(f"{WEIGHTS_KEY} contains {negative} negative value(s)")


def _checkpoint_schema(metadata: dict[str, Any]) -> dict[str, _Spec]:
    """Validate checkpoint metadata; return the expected shape and dtype of every entry."""
    version = metadata["format_version"]
    if version < CHECKPOINT_FORMAT_VERSION:
        raise _SchemaError(
            f"it has format_version {version}, written by an older kmeans_dask "
            f"({metadata.get('library_version')!r}), which this version cannot resume: delete "
            "it to start the fit over"
        )
    _exact_keys(metadata, _CHECKPOINT_METADATA_FIELDS, (), "metadata")
    _expect(metadata["library_version"], str, "metadata field 'library_version'")
    fingerprint = metadata["fingerprint"]
    if not isinstance(fingerprint, str) or not fingerprint:
        raise _SchemaError(f"fingerprint must be a non-empty str, got {fingerprint!r}")
    if not isinstance(metadata["completed"], bool):
        raise _SchemaError(f"completed must be a bool, got {metadata['completed']!r}")
    seeds = metadata["seeds"]
    if not isinstance(seeds, list) or not all(_is_int(seed) for seed in seeds):
        raise _SchemaError(f"seeds must be a list of integers, got {seeds!r}")
    runs = metadata["runs"]
    _expect(runs, list, "runs")
    if len(runs) > len(seeds):
        raise _SchemaError(f"there are {len(runs)} runs but only {len(seeds)} seeds")
    for position, run in enumerate(runs):
        what = f"runs[{position}]"
        _expect(run, dict, what)
        _exact_keys(run, _RUN_FIELDS, (), what)
        _check_history(run["history"], f"{what}['history']")
        inertia = run["inertia"]
        if inertia is not None and (
            not _is_real(inertia) or not math.isfinite(inertia) or inertia < 0
        ):
            raise _SchemaError(
                f"{what}['inertia'] must be null or a finite number >= 0, got {inertia!r}"
            )
    finished = all(run["inertia"] is not None for run in runs)
    if metadata["completed"] and not (finished and len(runs) == len(seeds)):
        raise _SchemaError("completed is true, but not every run finished")
    specs = _parse_specs(metadata["arrays"])
    _check_key_set(set(specs), {"centers": None}, source="a checkpoint holds")
    centers = specs["centers"]
    if centers.dtype not in _CENTER_DTYPES or len(centers.shape) != 3:
        raise _SchemaError(
            "centers must be a 3-D float32 or float64 array (run, cluster, feature), got "
            f"dtype {centers.dtype} and shape {centers.shape}"
        )
    if centers.shape[0] != len(runs):
        raise _SchemaError(
            f"centers holds {centers.shape[0]} runs' centres but runs lists {len(runs)}"
        )
    return specs


def _check_history(history: Any, what: str) -> None:
    _expect(history, list, what)
    if not history:
        raise _SchemaError(f"{what} is empty; a run is kept from its first iteration on")
    for position, entry in enumerate(history):
        where = f"{what}[{position}]"
        _expect(entry, dict, where)
        _exact_keys(entry, tuple(_HISTORY_FIELDS), (), where)
        for name, kind in _HISTORY_FIELDS.items():
            value = entry[name]
            valid = _is_int(value) if kind is int else _is_real(value) and math.isfinite(value)
            if not valid:
                expected = "an integer" if kind is int else "a finite number"
                raise _SchemaError(f"{where}[{name!r}] must be {expected}, got {value!r}")


def _check_checkpoint_content(arrays: Mapping[str, np.ndarray]) -> None:
    _check_finite("centers", arrays["centers"])


# --- small helpers -------------------------------------------------------------------


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_real_numeric(dtype: np.dtype) -> bool:
    return dtype.kind in "iuf" and dtype.fields is None and dtype.subdtype is None


def _json_type(value: Any) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a bool"}
    if value is None:
        return "null"
    return names.get(type(value), f"a {type(value).__name__}")


def _expect(value: Any, kind: type, what: str) -> None:
    if not isinstance(value, kind):
        raise _SchemaError(f"{what} must be {_json_type(kind())}, got {_json_type(value)}")


def _exact_keys(
    mapping: Mapping[str, Any], required: tuple[str, ...], optional: tuple[str, ...], what: str
) -> None:
    missing = [key for key in required if key not in mapping]
    unknown = sorted(str(key) for key in mapping if key not in required and key not in optional)
    problems = []
    if missing:
        problems.append(f"missing {missing}")
    if unknown:
        problems.append(f"unknown {unknown}")
    if problems:
        raise _SchemaError(
            f"{what}: "
            + "; ".join(problems)
            + f" (expected {list(required)}"
            + (f", optionally {list(optional)})" if optional else ")")
        )


def _check_finite(what: str, array: np.ndarray) -> None:
    bad = ~np.isfinite(array)
    if bad.any():
        raise _SchemaError(f"{what} contains {int(bad.sum())} non-finite value(s)")


def _little_endian(dtype: np.dtype) -> np.dtype:
    return dtype if dtype.byteorder == "|" else dtype.newbyteorder("<")


def _canonical(value: Any, what: str) -> Any:
    """A JSON-serialisable form of ``value`` that equal inputs share."""
    if isinstance(value, np.random.RandomState):
        name, keys, position, has_gauss, cached = value.get_state(legacy=True)
        return {
            "__RandomState__": [
                str(name),
                _array_digest(np.asarray(keys)),
                int(position),
                int(has_gauss),
                float(cached),
            ]
        }
    if isinstance(value, np.ndarray):
        if not _is_real_numeric(value.dtype) and value.dtype.kind != "b":
            raise TypeError(
                f"{what} is an array of dtype {value.dtype}, which has no canonical form"
            )
        return {"__ndarray__": _array_digest(value)}
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list | tuple):
        return [_canonical(item, f"{what}[{i}]") for i, item in enumerate(value)]
    if isinstance(value, Mapping):
        if not all(isinstance(key, str) for key in value):
            raise TypeError(f"{what} is a mapping with non-str keys")
        return {key: _canonical(item, f"{what}[{key!r}]") for key, item in value.items()}
    raise TypeError(f"{what} has type {type(value).__name__}, which has no canonical form")


def _array_digest(array: np.ndarray) -> dict[str, Any]:
    dtype = _little_endian(array.dtype)
    data = np.ascontiguousarray(array, dtype=dtype)
    return {
        "dtype": dtype.str,
        "shape": list(data.shape),
        "sha256": hashlib.sha256(data.tobytes()).hexdigest(),
    }
