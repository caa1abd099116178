"""Compiled per-block kernels: column argmin, fused statistics, exact distances.

These are pure functions over NumPy arrays, compiled with Numba and run
without the GIL, so several Dask worker threads can run them at once.
Sums, counts and inertia are accumulated in float64 whatever the input
precision; distances to the assigned centre are computed exactly as
``sum((x - c) ** 2)`` (not through the GEMM expansion, which cancels).
"""

from __future__ import annotations

import numba
import numpy as np

# Reassociation lets LLVM vectorise the per-row sum of squared differences.
# It changes the order of additions, not which values are added, and the
# compiled order is fixed, so results stay deterministic.
_REASSOC = {"reassoc", "contract", "nsz"}


@numba.njit(nogil=True, cache=True)
def argmin_columns(scores_t, center_bias, labels):
    """Write ``argmin_j(scores_t[j, i] + center_bias[j])`` into ``labels[i]``.

    ``scores_t`` is laid out centres by points (k, b) so the inner loop runs
    over contiguous points and vectorises. Ties go to the lowest centre index.
    """
    n_centers, n_points = scores_t.shape
    best = np.empty(n_points, dtype=scores_t.dtype)
    bias0 = center_bias[0]
    for i in range(n_points):
        best[i] = scores_t[0, i] + bias0
        labels[i] = 0
    for j in range(1, n_centers):
        bias = center_bias[j]
        for i in range(n_points):
            value = scores_t[j, i] + bias
            if value < best[i]:
                best[i] = value
                labels[i] = j


@numba.njit(nogil=True, cache=True, fastmath=_REASSOC)
def accumulate(block, labels, weights, centers, sums, counts, sq_dist):
    """Add one block's points into per-cluster ``sums`` and ``counts``.

    Parameters
    ----------
    block : (b, d) float32 or float64
    labels : (b,) integer cluster index of each row
    weights : (b,) float64 or None for unit weights
    centers : (k, d) float64, the centres the labels refer to
    sums : (k, d) float64, updated in place
    counts : (k,) float64 total weight per cluster, updated in place
    sq_dist : (b,) float64, receives the squared distance of each row to
        its assigned centre (unweighted)

    Returns
    -------
    float
        The weighted inertia of the block.
    """
    n_points, n_features = block.shape
    inertia = 0.0
    for i in range(n_points):
        label = labels[i]
        weight = 1.0 if weights is None else weights[i]
        counts[label] += weight
        dist = 0.0
        for f in range(n_features):
            x = np.float64(block[i, f])
            sums[label, f] += weight * x
            diff = x - centers[label, f]
            dist += diff * diff
        sq_dist[i] = dist
        inertia += weight * dist
    return inertia


@numba.njit(nogil=True, cache=True, fastmath=_REASSOC)
def squared_distances(block, labels, centers, out):
    """Exact squared distance of each row of ``block`` to ``centers[labels]``."""
    n_points, n_features = block.shape
    for i in range(n_points):
        label = labels[i]
        dist = 0.0
        for f in range(n_features):
            diff = np.float64(block[i, f]) - centers[label, f]
            dist += diff * diff
        out[i] = dist
