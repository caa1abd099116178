"""The IVF lists over the centres: coarse centroids, each centre's list, the lists' means.

:class:`~kmeans_dask.backends.approximate.IVFSearcher` groups the ``k``
centres into ``nlist`` lists around coarse centroids: a k-means of the
centres themselves (:func:`coarse_centroids`), each centre in its nearest
list with room (:func:`balanced_lists`), each coarse centroid then moved to
its list's mean (:func:`list_means`). Pure functions over NumPy arrays.
"""

from __future__ import annotations

import math

import numpy as np

from kmeans_dask._kernels.block_kernels import (
    accumulate,
    fill_nearest_with_room,
)
from kmeans_dask._kernels.block_kernels import squared_distances as row_distances_to
from kmeans_dask.backends.numpy_blas import exact_searcher

#: Lloyd iterations of the k-means that makes the coarse centroids from the
#: centres (:func:`coarse_centroids`). More barely change recall but cost
#: build time.
DEFAULT_TRAIN_ITERATIONS = 5

#: Most centres an IVF list takes, as a multiple of the mean ``k / nlist``,
#: from centres that have a nearer list with room (:func:`balanced_lists`).
#: K-means over centres that fill a ball evenly (as after the first Lloyd
#: steps on overlapping data) can leave one coarse centroid near the middle,
#: nearer to most centres than any other: one list then held 3659 of 4096
#: centres and its rows were searched almost exactly
#: (``scripts/bench_assign_fit.py``, RESULTS.md).
MAX_LIST_SIZE_RATIO = 4.0

#: Lists a centre may go to, nearest first. A centre whose nearest lists
#: are all full goes to its nearest, over the cap: placed in a farther list,
#: it would be found by few of its rows, which probe the lists nearest to them.
LIST_CHOICES = 8


def coarse_centroids(
    centers: np.ndarray, nlist: int, iterations: int = DEFAULT_TRAIN_ITERATIONS, seed: int = 1234
) -> np.ndarray:
    """(nlist, d) float32: the centroids of a k-means of the ``centers`` into ``nlist`` groups.

    ``iterations`` Lloyd steps from ``nlist`` distinct centres drawn with
    ``seed``, each centre assigned by the exact search of
    :mod:`kmeans_dask.backends.numpy_blas` (float32). A group left empty
    restarts at the centre farthest from its group's new centroid (the
    next farthest for the next empty group). Deterministic for given
    centres, ``nlist``, ``iterations`` and ``seed``. It replaced Faiss's
    ``IndexIVFFlat.train``, which spent 266 ms of one thread's 405 ms
    build of an IVF index over k = 16384 centres (d = 128, 256 lists) on
    an Intel Xeon (Ice Lake), while the other worker thread waited for the
    index; the build then took 142 ms (RESULTS.md, "Approximate fits on Ice
    Lake"), and 88 ms once :func:`balanced_lists` no longer scored every
    centre against every list.

    Parameters
    ----------
    centers : ndarray of shape (k, d)
    nlist : int
        Between 1 and ``k``.
    iterations : int, default=DEFAULT_TRAIN_ITERATIONS
        At least 1.
    seed : int, default=1234

    Returns
    -------
    ndarray of shape (nlist, d), float32
    """
    centers32 = np.ascontiguousarray(centers, dtype=np.float32)
    n_centers = len(centers32)
    if not 1 <= nlist <= n_centers:
        raise ValueError(f"nlist must be in [1, {n_centers}] (the number of centres), got {nlist}")
    if iterations < 1:
        raise ValueError(f"iterations must be positive, got {iterations}")
    chosen = np.random.default_rng(seed).choice(n_centers, size=nlist, replace=False)
    coarse = centers32[np.sort(chosen)]
    for _ in range(iterations):
        lists = exact_searcher(coarse).nearest(centers32)
        coarse = list_means(centers32, lists, coarse)
        empty = np.flatnonzero(np.bincount(lists, minlength=nlist) == 0)
        if empty.size:
            gaps = centers32 - coarse[lists]
            distances = np.einsum("ij,ij->i", gaps, gaps)
            coarse[empty] = centers32[np.argsort(-distances, kind="stable")[: empty.size]]
    return coarse


def squared_distances(rows: np.ndarray, others: np.ndarray) -> np.ndarray:
    """(len(rows), len(others)): ``||r||^2 - 2 r . o + ||o||^2``, in place in the GEMM's
    output (the same values as the expression written out, without its temporaries)."""
    scores = rows @ others.T
    scores *= -2.0
    scores += np.einsum("ij,ij->i", rows, rows)[:, None]
    scores += np.einsum("ij,ij->i", others, others)
    return scores


def balanced_lists(centers: np.ndarray, coarse: np.ndarray, ratio: float) -> np.ndarray:
    """Each centre's IVF list: its nearest coarse centroid with room.

    A list has room while it holds fewer than ``ceil(ratio * k / nlist)``
    centres. Centres nearest to a coarse centroid choose first; a centre
    whose :data:`LIST_CHOICES` nearest lists are all full goes to its
    nearest list all the same. (Sent to the emptiest list, such centres had
    lain beyond the lists their rows probe: with ``nlist = 2 sqrt(k)`` at
    k = 4096, 165 centres then found no row after one Lloyd update, and the
    final centres' inertia was 0.57-0.87% above exact Lloyd's instead of
    0.04-0.05%, RESULTS.md.)

    The nearest list of each centre comes from the exact search of
    :mod:`kmeans_dask.backends.numpy_blas` in the centres' dtype, its
    distance (the priority) in float64; only a centre whose nearest list is
    full scores every list in float64
    (:func:`~kmeans_dask._kernels.block_kernels.fill_nearest_with_room`).
    The float64 distances of every centre to every list (a ``k x nlist``
    GEMM) and their ranking had taken 70 of the 145 ms of an index's build
    at k = 16384, d = 128 (Intel Xeon, Ice Lake), while the other worker
    threads waited for it (RESULTS.md, "Less waiting between passes").

    Returns
    -------
    ndarray of shape (k,), int64
    """
    centers = np.ascontiguousarray(centers)
    if centers.dtype not in (np.float32, np.float64):
        centers = centers.astype(np.float64)
    n_centers, n_lists = len(centers), len(coarse)
    coarse64 = np.ascontiguousarray(coarse, dtype=np.float64)
    nearest = exact_searcher(coarse64.astype(centers.dtype)).nearest(centers).astype(np.int64)
    distances = np.empty(n_centers)
    row_distances_to(centers, nearest, coarse64, distances)
    priority = np.argsort(distances, kind="stable")
    capacity = math.ceil(ratio * n_centers / n_lists)
    return fill_nearest_with_room(centers, coarse64, nearest, priority, capacity, LIST_CHOICES)


def list_means(centers: np.ndarray, lists: np.ndarray, coarse: np.ndarray) -> np.ndarray:
    """(nlist, d) float32: the mean of each list's centres (``coarse`` for an empty list).

    Each list's centres are summed in float64 in index order
    (:func:`~kmeans_dask._kernels.block_kernels.accumulate`, the pass's own
    sums: 4x faster than ``np.add.reduceat`` over the centres sorted by list).
    """
    n_lists, n_features = coarse.shape
    sums = np.zeros((n_lists, n_features))
    counts = np.zeros(n_lists)
    accumulate(
        np.ascontiguousarray(centers),
        np.asarray(lists, dtype=np.int32),
        None,
        np.ascontiguousarray(coarse, dtype=np.float64),
        sums,
        counts,
        np.empty(len(centers)),
    )
    means = coarse.astype(np.float64)
    filled = counts > 0
    means[filled] = sums[filled] / counts[filled, None]
    return means.astype(np.float32)
