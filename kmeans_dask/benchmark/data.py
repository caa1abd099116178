"""The benchmark's data: generated blobs, shared initial centres, exact inertia, Dask blocks."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np

#: Rows per block when computing inertia (bounds the float64 scratch memory).
INERTIA_BLOCK_ROWS = 65536


def make_blobs(
    n_samples: int,
    n_features: int,
    n_blobs: int,
    seed: int,
    dtype: str | np.dtype = "float32",
    spread: float = 2.0,
) -> np.ndarray:
    """Deterministic Gaussian blobs.

    Blob centres are uniform in ``[-spread, spread]^d`` and every row is a
    centre plus standard normal noise. With the default spread of 2 the blobs
    overlap enough that Lloyd's algorithm does not reach an exact fixed
    point within a few dozen iterations (which would stop scikit-learn and
    Spark early); a spread of 10 or more gives well separated clusters.

    Parameters
    ----------
    n_samples, n_features, n_blobs : int
        Shape of the data and number of blobs.
    seed : int
        Seed of ``numpy.random.default_rng``.
    dtype : str or numpy.dtype, default="float32"
    spread : float, default=2.0
        Half-width of the box the blob centres are drawn from.

    Returns
    -------
    ndarray of shape (n_samples, n_features)
        C-contiguous, of ``dtype``.
    """
    dtype = np.dtype(dtype)
    rng = np.random.default_rng(seed)
    centres = rng.uniform(-spread, spread, size=(n_blobs, n_features)).astype(dtype)
    X = np.empty((n_samples, n_features), dtype=dtype)
    step = 1 << 18
    for start in range(0, n_samples, step):
        stop = min(start + step, n_samples)
        labels = rng.integers(n_blobs, size=stop - start)
        X[start:stop] = rng.standard_normal((stop - start, n_features), dtype=dtype)
        X[start:stop] += centres[labels]
    return X


def initial_centers(X: np.ndarray, n_clusters: int, seed: int) -> np.ndarray:
    """``n_clusters`` distinct rows of ``X`` drawn with a fixed seed.

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features)
    n_clusters : int
    seed : int
        The rows are drawn by ``default_rng(seed + 1)``, independently of the data.

    Returns
    -------
    ndarray of shape (n_clusters, n_features)
        A copy, in X's dtype.
    """
    rng = np.random.default_rng(seed + 1)
    rows = np.sort(rng.choice(X.shape[0], size=n_clusters, replace=False))
    return np.ascontiguousarray(X[rows])


def exact_inertia(
    X: np.ndarray, centers: np.ndarray, block_rows: int = INERTIA_BLOCK_ROWS
) -> float:
    """Sum of squared distances of each row to its nearest centre, in float64.

    The nearest centre is found from float64 GEMM-expanded distances; the
    squared distance to it is then computed exactly as ``sum((x - c)**2)``.
    Rows are processed in blocks so scratch memory stays bounded.

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features)
    centers : array-like of shape (n_clusters, n_features)
    block_rows : int, default=65536

    Returns
    -------
    float
    """
    centers64 = np.asarray(centers, dtype=np.float64)
    center_norms = np.einsum("ij,ij->i", centers64, centers64)
    total = 0.0
    for start in range(0, X.shape[0], block_rows):
        block = np.asarray(X[start : start + block_rows], dtype=np.float64)
        scores = center_norms[None, :] - 2.0 * (block @ centers64.T)
        nearest = np.argmin(scores, axis=1)
        diff = block - centers64[nearest]
        total += float(np.einsum("ij,ij->", diff, diff))
    return total


def persisted_blocks(client: Any, X: np.ndarray, chunk_rows: int, n_clusters: int) -> Any:
    """Scatter row blocks of X to the workers and wrap them as one Dask array.

    Without ``chunk_rows`` the blocks are those a fit on the NumPy array makes.
    """
    import dask.array as da

    from kmeans_dask._engine.placement import numpy_row_chunks
    from kmeans_dask._worker.results import statistics_nbytes

    n, d = X.shape
    if chunk_rows > 0:
        sizes = [min(chunk_rows, n - s) for s in range(0, n, chunk_rows)]
    else:
        stats_bytes = statistics_nbytes(n_clusters, d)
        sizes = list(numpy_row_chunks(n, d, X.dtype.itemsize, stats_bytes))
    bounds = np.cumsum([0, *sizes])
    futures = client.scatter([X[a:b] for a, b in itertools.pairwise(bounds)], hash=False)
    blocks = [
        da.from_delayed(f, shape=(int(b - a), d), dtype=X.dtype)
        for f, a, b in zip(futures, bounds[:-1], bounds[1:], strict=True)
    ]
    return da.concatenate(blocks).persist(), futures
