"""Synthetic data for demos, tests and benchmarks, generated chunk by chunk."""

from __future__ import annotations

from numbers import Integral, Real

import dask
import dask.array as da
import numpy as np

from kmeans_dask._fit.progress import StepProgress, persist_with_progress
from kmeans_dask._io.output_paths import written_whole


def _blob_block(
    centers: np.ndarray, n_rows: int, cluster_std: float, seed: int, block_index: int, dtype
) -> np.ndarray:
    rng = np.random.default_rng([seed, block_index])
    labels = rng.integers(0, centers.shape[0], size=n_rows)
    noise = rng.standard_normal((n_rows, centers.shape[1]), dtype=np.float32)
    return (centers[labels] + cluster_std * noise).astype(dtype, copy=False)


def make_blobs(
    n_samples: int,
    n_features: int,
    n_clusters: int,
    *,
    cluster_std: float = 1.0,
    center_box: tuple[float, float] = (-10.0, 10.0),
    chunk_rows: int = 250_000,
    dtype=np.float32,
    random_state: int = 0,
) -> tuple[da.Array, np.ndarray]:
    """Isotropic Gaussian blobs as a lazy Dask array, any size.

    Each block is generated on the worker that computes it, from the seed and
    the block's index, so nothing of size ``n_samples`` is ever built on the
    client. The same arguments give the same data.

    Parameters
    ----------
    n_samples, n_features, n_clusters : int
        Shape of the data and number of blobs.
    cluster_std : float, default=1.0
        Standard deviation of each blob.
    center_box : (float, float), default=(-10, 10)
        Blob centres are drawn uniformly in this box.
    chunk_rows : int, default=250_000
        Rows per Dask block.
    dtype : numpy dtype, default=float32
    random_state : int, default=0

    Returns
    -------
    X : dask.array of shape (n_samples, n_features)
    centers : ndarray of shape (n_clusters, n_features)
        The true blob centres.

    Raises
    ------
    ValueError
        For a size or count below 1, or a negative or non-finite ``cluster_std``.

    Examples
    --------
    >>> X, centers = make_blobs(1000, 2, 3, chunk_rows=400)
    >>> X.shape, X.chunks[0], centers.shape
    ((1000, 2), (400, 400, 200), (3, 2))
    """
    _check_blob_params(n_samples, n_features, n_clusters, chunk_rows, cluster_std)
    rng = np.random.default_rng(random_state)
    centers = rng.uniform(*center_box, size=(n_clusters, n_features)).astype(np.float32)
    row_chunks = tuple(
        min(chunk_rows, n_samples - start) for start in range(0, n_samples, chunk_rows)
    )
    blocks = [
        da.from_delayed(
            dask.delayed(_blob_block, pure=True)(
                centers, rows, cluster_std, random_state, index, dtype
            ),
            shape=(rows, n_features),
            dtype=dtype,
        )
        for index, rows in enumerate(row_chunks)
    ]
    return da.concatenate(blocks, axis=0), centers


def write_blobs_zarr(
    path: str,
    n_samples: int,
    n_features: int,
    n_clusters: int,
    *,
    chunk_rows: int = 250_000,
    cluster_std: float = 1.0,
    dtype=np.float32,
    random_state: int = 0,
    overwrite: bool = False,
    compress: bool = True,
    progress: bool = False,
) -> np.ndarray:
    """Write :func:`make_blobs` data to a Zarr array, one row block at a time.

    Blocks are generated and written by Dask tasks, so any size can be
    written with bounded memory. Zarr's default compressor (Zstandard) is
    used unless ``compress=False``. The array is written next to ``path``
    and takes its place only when complete: an error or an interrupt leaves
    no half-made store (and an existing one, with ``overwrite``, intact).

    Parameters
    ----------
    progress : bool, default=False
        Show a progress bar over the blocks written (a line per block
        outside a terminal).

    Returns
    -------
    centers : ndarray of shape (n_clusters, n_features)
        The true blob centres.

    Raises
    ------
    ValueError
        For a size, count or ``cluster_std`` out of range.
    FileExistsError
        If ``path`` exists and ``overwrite`` is false.
    """
    import zarr

    X, centers = make_blobs(
        n_samples,
        n_features,
        n_clusters,
        cluster_std=cluster_std,
        chunk_rows=chunk_rows,
        dtype=dtype,
        random_state=random_state,
    )
    with written_whole(path, "output", overwrite=overwrite, store=True) as temporary:
        target = zarr.create_array(
            temporary,
            shape=X.shape,
            chunks=(chunk_rows, n_features),
            dtype=dtype,
            compressors="auto" if compress else None,
        )
        stored = da.store(X, target, lock=False, compute=False)
        with StepProgress(f"writing {path}", None, "tasks", enabled=progress) as steps:
            persist_with_progress(stored, steps)
    return centers


def _check_blob_params(
    n_samples: int, n_features: int, n_clusters: int, chunk_rows: int, cluster_std: float
) -> None:
    for name, value in (
        ("n_samples", n_samples),
        ("n_features", n_features),
        ("n_clusters", n_clusters),
        ("chunk_rows", chunk_rows),
    ):
        if isinstance(value, bool) or not isinstance(value, Integral) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {name}={value!r}")
    if not isinstance(cluster_std, Real) or not np.isfinite(cluster_std) or cluster_std < 0:
        raise ValueError(
            f"cluster_std must be a finite number >= 0, got cluster_std={cluster_std!r}"
        )


def penguins_csv() -> str:
    """The path of the Palmer penguins table (a CSV shipped by the palmerpenguins package).

    344 penguins of three species on three islands: bill, flipper and body
    measurements (a few missing), sex (11 missing) and year; text columns
    and missing values included. Read from the installed package, never
    downloaded.

    Raises
    ------
    ImportError
        If palmerpenguins is not installed (it comes with the examples extra).

    Examples
    --------
    >>> from kmeans_dask import read_table
    >>> from kmeans_dask.datasets import penguins_csv
    >>> read_table(penguins_csv()).shape[1]  # doctest: +SKIP
    8
    """
    import importlib.util
    import os

    spec = importlib.util.find_spec("palmerpenguins")
    if spec is None or spec.origin is None:
        raise ImportError(
            "the penguins table comes with palmerpenguins: pip install 'kmeans_dask[examples]'"
        )
    return os.path.join(os.path.dirname(spec.origin), "data", "penguins.csv")
