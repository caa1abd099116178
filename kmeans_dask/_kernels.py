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


@numba.njit(nogil=True, cache=True)
def argmin2_columns(scores_t, center_bias, labels, second):
    """Like :func:`argmin_columns`, also writing the runner-up score to ``second``.

    ``second[i]`` is ``min_{j != labels[i]}(scores_t[j, i] + center_bias[j])``,
    or ``inf`` when there is a single centre.
    """
    n_centers, n_points = scores_t.shape
    best = np.empty(n_points, dtype=scores_t.dtype)
    bias0 = center_bias[0]
    for i in range(n_points):
        best[i] = scores_t[0, i] + bias0
        second[i] = np.inf
        labels[i] = 0
    for j in range(1, n_centers):
        bias = center_bias[j]
        for i in range(n_points):
            # Branch-free (selects, min, max) so the loop vectorises.
            value = scores_t[j, i] + bias
            current = best[i]
            second[i] = min(second[i], max(current, value))
            labels[i] = j if value < current else labels[i]
            best[i] = min(current, value)


@numba.njit(nogil=True, cache=True, fastmath=_REASSOC)
def runner_up_distances(block, second, error_scale, max_center_sq_norm, out):
    """Lower bounds on each row's distance to its runner-up centre.

    ``second[i]`` is the row's runner-up GEMM score ``||c||^2 - 2 c.x``;
    ``error_scale * (||x||^2 + max ||c||^2)`` bounds its rounding error,
    which is subtracted before the square root.
    """
    n_points, n_features = block.shape
    for i in range(n_points):
        sq_norm = 0.0
        for f in range(n_features):
            x = np.float64(block[i, f])
            sq_norm += x * x
        value = sq_norm + second[i] - error_scale * (sq_norm + max_center_sq_norm)
        out[i] = np.sqrt(max(value, 0.0))


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


@numba.njit(nogil=True, cache=True)
def loosen_bounds(
    labels,
    upper,
    lower,
    shift,
    largest_shift,
    largest_center,
    runner_up_shift,
    half_gap,
    candidates,
):
    """Move Hamerly bounds to new centres and list the rows that fail the test.

    ``upper[i]`` bounds the distance from row ``i`` to its centre
    ``labels[i]`` from above, ``lower[i]`` the distance to every other
    centre from below, both for the previous centres. Each centre ``j``
    moved by at most ``shift[j]``; the largest move is ``largest_shift``
    (by centre ``largest_center``), the next largest ``runner_up_shift``.
    ``half_gap[j]`` is at most half the distance from centre ``j`` to its
    nearest other centre. A row passes when its upper bound is at most
    ``max(lower, half_gap)``: its centre is still the nearest. The bounds
    are updated in place; the rows that fail are written to ``candidates``.

    Returns
    -------
    int
        How many rows were written to ``candidates``.
    """
    n_candidates = 0
    for i in range(labels.shape[0]):
        label = labels[i]
        bound_upper = upper[i] + shift[label]
        bound_lower = lower[i] - (runner_up_shift if label == largest_center else largest_shift)
        upper[i] = bound_upper
        lower[i] = bound_lower
        if bound_upper > max(bound_lower, half_gap[label]):
            candidates[n_candidates] = i
            n_candidates += 1
    return n_candidates


@numba.njit(nogil=True, cache=True, fastmath=_REASSOC)
def tighten_bounds(block, labels, upper, lower, centers, half_gap, candidates, n_candidates):
    """Replace the candidates' upper bounds by their exact distances and test again.

    The rows that still fail stay at the front of ``candidates``.

    Returns
    -------
    int
        How many rows still fail.
    """
    n_features = block.shape[1]
    n_pending = 0
    for position in range(n_candidates):
        i = candidates[position]
        label = labels[i]
        dist = 0.0
        for f in range(n_features):
            diff = np.float64(block[i, f]) - centers[label, f]
            dist += diff * diff
        upper[i] = np.sqrt(dist)
        if upper[i] > max(lower[i], half_gap[label]):
            candidates[n_pending] = i
            n_pending += 1
    return n_pending


@numba.njit(nogil=True, cache=True)
def largest(values, count, out):
    """Indices of the ``count`` largest ``values``, largest first, ties by lower index.

    One pass with a small sorted buffer: after the first rows, almost every
    value is rejected by a single comparison. Writes into ``out`` and returns
    how many indices it wrote (``min(count, len(values))``).
    """
    size = 0
    best = np.empty(count, dtype=np.float64)
    for i in range(values.shape[0]):
        value = values[i]
        if size == count and not value > best[size - 1]:
            continue
        # Insert after every kept value >= value (earlier rows win ties).
        position = size if size < count else count - 1
        while position > 0 and best[position - 1] < value:
            if position < count:
                best[position] = best[position - 1]
                out[position] = out[position - 1]
            position -= 1
        best[position] = value
        out[position] = i
        if size < count:
            size += 1
    return size
