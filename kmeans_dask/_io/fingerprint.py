"""The fingerprint of a fit: a checkpoint of another fit is refused by comparing it."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

import numpy as np

_FINGERPRINT_SCHEMA = "kmeans_dask.fit_fingerprint/1"


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


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_real_numeric(dtype: np.dtype) -> bool:
    return dtype.kind in "iuf" and dtype.fields is None and dtype.subdtype is None


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
