"""Input adapters: what users pass becomes a checked Dask or NumPy array.

NumPy input is validated with scikit-learn's rules (so ints and bools become
float64, strings and complex numbers are refused). Dask input is checked from
its metadata only (shape, dtype) and rechunked to a single column block.
Zarr input (an array, or a path/URL to one) is read as a Dask array whose row
chunks are the store's; ``.npy`` files are read by the tasks, row block by
row block. Placing the rows on the workers is :mod:`kmeans_dask._engine.placement`'s job.
"""

from __future__ import annotations

import math
import os
from typing import Any

import dask.array as da
import numpy as np
from dask.base import tokenize

from kmeans_dask._io.chunk_files import zarr_rows


def is_dask_array(X: Any) -> bool:
    return isinstance(X, da.Array)


def is_zarr_source(X: Any) -> bool:
    """A ``zarr.Array``, or a path or URL that names one."""
    if isinstance(X, str | os.PathLike):
        return True
    return type(X).__module__.startswith("zarr")  # an array, or a group to refuse


def is_in_memory(X: Any) -> bool:
    """Whether ``X`` holds its rows in this process (not a Dask array or a Zarr store).

    Fits of such rows without a client get an in-process cluster
    (:func:`~kmeans_dask._engine.client.local_client`).
    """
    return not (is_dask_array(X) or is_zarr_source(X))


def is_device_array(X: Any) -> bool:
    """Whether ``X`` is an array of an array-API library other than NumPy (CuPy...)."""
    return not isinstance(X, np.ndarray | da.Array) and hasattr(X, "__array_namespace__")


def host_dtype(dtype: Any) -> np.dtype:
    """The NumPy dtype of an array library's ``dtype`` (array-api-strict's are not NumPy's)."""
    if isinstance(dtype, np.dtype):
        return dtype
    return np.dtype(str(dtype).rsplit(".", 1)[-1])


def as_local_array(X: Any) -> Any:
    """Bring a batch into the client: Dask arrays are computed (CuPy blocks stay CuPy).

    Anything else (NumPy, CuPy, lists, DataFrames, None) is returned unchanged.
    """
    return X.compute() if is_dask_array(X) else X


def as_host_array(X: Any) -> Any:
    """:func:`as_local_array`, with arrays of other libraries (CuPy) copied into NumPy."""
    X = as_local_array(X)
    if is_device_array(X):
        return X.get() if hasattr(X, "get") else np.from_dlpack(X)
    return X


def check_device_batch(estimator: Any, X: Any, *, reset: bool) -> Any:
    """A batch of an array-API library other than NumPy (CuPy), checked in its memory.

    As scikit-learn checks NumPy input: 2-D, numeric (float32 stays float32,
    anything else becomes float64), and the fitted number of features;
    ``reset`` sets ``n_features_in_`` instead (and forgets column names).
    Finiteness is checked where the batch is used.
    """
    from array_api_compat import array_namespace

    xp = array_namespace(X)
    if X.ndim != 2:
        raise ValueError(
            f"Expected a 2D array, got a {X.ndim}D array of shape {tuple(X.shape)} instead; "
            "give a batch of shape (n_rows, n_features)"
        )
    if not xp.isdtype(X.dtype, ("bool", "integral", "real floating")):
        raise TypeError(f"batch must be numeric, got dtype {X.dtype}")
    if X.dtype != xp.float32:
        X = xp.astype(X, xp.float64)
    record_features(estimator, X.shape[1], None, reset=reset)
    return X


def open_zarr(source: Any):
    """Open a Zarr array read-only from an array, a path or an fsspec URL.

    Raises
    ------
    FileNotFoundError
        If nothing exists at the path.
    ValueError
        If the path holds a Zarr group (the message lists its arrays) or is
        not a Zarr store.
    """
    try:
        import zarr
    except ImportError as exc:
        raise ImportError(
            "reading Zarr input needs the zarr package: pip install 'zarr>=3'"
        ) from exc
    if not isinstance(source, str | os.PathLike):
        if isinstance(source, zarr.Group):
            raise _group_error(source, "X")
        return source
    location = os.fspath(source)
    if "://" not in location and not os.path.exists(location):
        raise FileNotFoundError(f"Zarr input {location!r} does not exist")
    try:
        node = zarr.open(location, mode="r")
    except (FileNotFoundError, zarr.errors.NodeNotFoundError) as exc:
        raise FileNotFoundError(f"no Zarr array or group found at {location!r}") from exc
    except Exception as exc:
        raise ValueError(f"{location!r} could not be read as a Zarr store: {exc}") from exc
    if isinstance(node, zarr.Group):
        raise _group_error(node, repr(location), location)
    return node


def _group_error(group, what: str, location: str | None = None) -> ValueError:
    """The error for a Zarr group given where an array is expected; it lists the arrays."""
    names = sorted(name for name, _ in group.arrays())
    if location is None:
        example = f"group[{names[0]!r}]" if names else "group['<array>']"
    else:
        example = repr(os.path.join(location, names[0]) if names else location + "/<array>")
    return ValueError(
        f"{what} is a Zarr group, not an array; name one of its arrays, e.g. {example} "
        f"(arrays in the group: {names})"
    )


class NpyFile:
    """A ``.npy`` file as an array-like that reads only the rows asked for.

    Pickles as its absolute path, shape and dtype, so a Dask array made from
    it (``da.from_array(NpyFile(path), chunks=...)``) sends tasks that read
    their own rows from the file (workers in another directory included)
    instead of a graph that carries the data.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = os.path.abspath(path)
        array = self._open()
        self.shape, self.dtype, self.ndim = array.shape, array.dtype, array.ndim

    def _open(self) -> np.ndarray:
        return np.load(self.path, mmap_mode="r", allow_pickle=False)

    def __getitem__(self, index: Any) -> np.ndarray:
        return np.array(self._open()[index])


def zarr_as_dask(array) -> da.Array:
    """A Dask array over a Zarr array, with the store's row chunks and one column block.

    Its blocks are read straight from the chunk files where the layout
    allows (:func:`~kmeans_dask._io.chunk_files.zarr_rows`).
    """
    if array.ndim != 2:
        return da.from_zarr(array)
    chunks = (array.chunks[0], array.shape[1])
    return da.from_array(
        zarr_rows(array), chunks=chunks, name="from-zarr-" + tokenize(array, chunks)
    )


def compute_dtype(dtype: np.dtype) -> np.dtype:
    """float32 stays float32; every other real dtype is computed in float64."""
    return np.dtype(np.float32) if np.dtype(dtype) == np.float32 else np.dtype(np.float64)


def check_dask_array(X: da.Array, name: str = "X") -> da.Array:
    """Validate a Dask array from its metadata and give it one column block."""
    _refuse_sparse_blocks(X, name)
    if X.ndim != 2:
        raise ValueError(
            f"Expected a 2-D array for {name}, got a {X.ndim}-D Dask array of shape {X.shape}. "
            "Reshape your data, e.g. X.reshape(-1, 1) for a single feature."
        )
    if X.dtype.kind not in "biuf":
        raise TypeError(
            f"{name} has dtype {X.dtype}; expected a real numeric dtype "
            "(float32, float64, integer or boolean)"
        )
    if any(math.isnan(c) for c in X.chunks[0]):
        X = X.compute_chunk_sizes()
    n_samples, n_features = X.shape
    if n_samples == 0 or n_features == 0:
        raise ValueError(
            f"Found array with {n_samples} sample(s) and {n_features} feature(s) (shape="
            f"{X.shape}) while a minimum of 1 is required for each."
        )
    X = X.astype(compute_dtype(X.dtype))
    if len(X.chunks[1]) > 1:
        X = X.rechunk({1: -1})
    return X


def _refuse_sparse_blocks(X: da.Array, name: str) -> None:
    """A Dask array of sparse blocks (SciPy or pydata ``sparse``), refused from its
    metadata before any work, as scikit-learn refuses sparse input it cannot take."""
    import scipy.sparse

    block_type = type(X._meta)
    if scipy.sparse.issparse(X._meta) or block_type.__module__.split(".")[0] == "sparse":
        raise TypeError(
            f"Sparse data was passed for {name} (a Dask array of "
            f"{block_type.__module__}.{block_type.__name__} blocks), but dense data is "
            f"required. Convert its blocks first, e.g. "
            f"{name}.map_blocks(lambda block: block.toarray())."
        )


def check_sample_weight(
    sample_weight: Any, n_samples: int, rows_of: str = "X", name: str = "sample_weight"
) -> np.ndarray | da.Array | None:
    """Shape and type of ``sample_weight``; values are checked with the data."""
    if sample_weight is None:
        return None
    if is_dask_array(sample_weight):
        weights = sample_weight
    else:
        weights = np.asarray(sample_weight)
        if weights.ndim == 0:
            weights = np.full(n_samples, weights)
    if weights.dtype.kind not in "biuf":
        raise TypeError(f"{name} must be numeric, got dtype {weights.dtype}")
    if weights.shape != (n_samples,):
        raise ValueError(
            f"{name} has shape {weights.shape}; expected ({n_samples},) to match the "
            f"{n_samples} rows of {rows_of}"
        )
    return weights.astype(np.float64)


def check_input(estimator: Any, X: Any, *, reset: bool) -> tuple[Any, Any]:
    """Validated X for ``estimator`` and the Zarr array behind it (or None).

    X comes back as a NumPy float32/float64 array or a Dask array with one
    column block (of CuPy blocks for CuPy input): tables are read
    (:func:`~kmeans_dask._io.tables.read_table`), DataFrames become arrays
    (their column names kept as ``feature_names_in_``), Zarr input becomes a
    Dask array over the store.
    ``reset`` sets ``n_features_in_`` (fitting); otherwise X must match it.
    """
    from sklearn.utils.validation import validate_data

    from kmeans_dask._io.tables import (
        is_dataframe,
        is_table_source,
        read_table,
        table_as_array,
    )

    zarr_array = None
    if is_table_source(X):
        X = read_table(X)
    column_names = None
    if is_dataframe(X):
        column_names = [str(c) for c in X.columns]
        X = table_as_array(X)
    elif is_zarr_source(X):
        zarr_array = open_zarr(X)
        X = zarr_as_dask(zarr_array)
    elif is_device_array(X):  # CuPy rows: Dask blocks that stay in the GPU's memory
        X = da.from_array(X, chunks="auto", asarray=False)
    if not is_dask_array(X):
        X = validate_data(
            estimator,
            X,
            reset=reset,
            dtype=[np.float64, np.float32],
            ensure_all_finite=False,
            order="C",
        )
        return X, None
    X = check_dask_array(X)
    record_features(estimator, X.shape[1], column_names, reset=reset)
    return X, zarr_array


def record_features(
    estimator: Any, n_features: int, column_names: list[str] | None, *, reset: bool
) -> None:
    """As scikit-learn's ``validate_data`` does for NumPy input: ``reset`` sets
    ``n_features_in_`` (and ``feature_names_in_`` from ``column_names``, or
    forgets it); otherwise the columns must match the fitted ones.
    """
    from kmeans_dask._io.tables import check_column_names

    if reset:
        estimator.n_features_in_ = n_features
        estimator.__dict__.pop("feature_names_in_", None)
        if column_names is not None:
            estimator.feature_names_in_ = np.asarray(column_names, dtype=object)
    elif column_names is not None and hasattr(estimator, "feature_names_in_"):
        check_column_names(column_names, list(estimator.feature_names_in_))
    elif n_features != estimator.n_features_in_:
        raise ValueError(
            f"X has {n_features} features, but {type(estimator).__name__} is expecting "
            f"{estimator.n_features_in_} features as input."
        )
