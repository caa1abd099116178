"""Compiled per-block kernels: the column-layout argmin, fused search-and-statistics
passes, exact distances, Hamerly bounds, column moments.

These are pure functions over NumPy arrays, compiled with Numba and run
without the GIL, so several Dask worker threads can run them at once.
Sums, counts and inertia are accumulated in float64 whatever the input
precision; distances to the assigned centre are computed exactly as
``sum((x - c) ** 2)`` (not through the GEMM expansion, which cancels).
"""

from __future__ import annotations

import numpy as np

from kmeans_dask._kernels.fused_search import search_rows
from kmeans_dask._kernels.row_statistics import (
    add_row,
    row_distance,
    statistics_buffers_ok,
)
from kmeans_dask._kernels.shared_cache import cached_njit

# Reassociation lets LLVM vectorise the per-row sum of squares of the runner-up bounds.
# It changes the order of additions, not which values are added, and the
# compiled order is fixed, so results stay deterministic.
_REASSOC = {"reassoc", "contract", "nsz"}


@cached_njit(nogil=True)
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


@cached_njit(nogil=True)
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


@cached_njit(nogil=True, fastmath=_REASSOC)
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


@cached_njit(nogil=True)
def accumulate(block, labels, weights, centers, sums, counts, sq_dist):
    """Add one block's points into per-cluster ``sums`` and ``counts``.

    Parameters
    ----------
    block : (b, d) float32 or float64, C-contiguous
    labels : (b,) integer cluster index of each row
    weights : (b,) float64 or None for unit weights
    centers : (k, d) float64, C-contiguous, the centres the labels refer to
    sums : (k, d) float64, C-contiguous, updated in place
    counts : (k,) float64 total weight per cluster, updated in place
    sq_dist : (b,) float64, receives the squared distance of each row to
        its assigned centre (unweighted; see :mod:`kmeans_dask._kernels.row_statistics`)

    Returns
    -------
    float
        The weighted inertia of the block.
    """
    if not statistics_buffers_ok(block, centers, sums):
        raise ValueError("accumulate needs C-contiguous rows and float64 centres and sums")
    inertia = 0.0
    for i in range(block.shape[0]):
        label = labels[i]
        if weights is None:
            counts[label] += 1.0
            dist = add_row(block, i, sums, centers, label, None)
            inertia += dist
        else:
            weight = weights[i]
            counts[label] += weight
            dist = add_row(block, i, sums, centers, label, weight)
            inertia += weight * dist
        sq_dist[i] = dist
    return inertia


@cached_njit(nogil=True)
def accumulate_rows(data, start, stop, labels, weights, centers, sums, counts, sq_dist):
    """:func:`accumulate` over rows ``start:stop`` of ``data``.

    ``labels``, ``weights`` (or None) and ``sq_dist`` are indexed like the rows
    of ``data``; the passes over a chunk call this block by block.
    """
    return accumulate(
        data[start:stop],
        labels[start:stop],
        None if weights is None else weights[start:stop],
        centers,
        sums,
        counts,
        sq_dist[start:stop],
    )


@cached_njit(nogil=True)
def assign_and_accumulate_rows(
    data,
    weights,
    center_weights,
    center_bias,
    center_vectors,
    centers,
    block_rows,
    labels,
    sums,
    counts,
    sq_dist,
    inertia=0.0,
):
    """Row-layout search and :func:`accumulate`, block by block, in one call.

    The same blocks and the same order of additions as calling the two from
    Python block by block, so the same results, without a Python round trip
    (and a GIL hand-over between worker threads) per block. Arguments as for
    :func:`~kmeans_dask._kernels.fused_search.search_rows` (``center_weights``,
    ``center_bias`` and ``center_vectors`` from
    :func:`~kmeans_dask._kernels.fused_search.pack_centers`) and
    :func:`accumulate`; ``block_rows`` rows are
    searched and then accumulated while they are still in cache. With
    ``sums`` None only the labels and :func:`squared_distances` are written.

    Returns
    -------
    float
        ``inertia`` plus each block's weighted inertia, in order (``inertia``
        with ``sums`` None): called on successive runs of blocks, the
        inertia of one call on all of them.
    """
    n_rows = data.shape[0]
    for start in range(0, n_rows, block_rows):
        stop = min(start + block_rows, n_rows)
        block = data[start:stop]
        search_rows(block, center_weights, center_bias, center_vectors, labels[start:stop], None)
        if sums is None:
            squared_distances(block, labels[start:stop], centers, sq_dist[start:stop])
            continue
        inertia += accumulate_rows(
            data, start, stop, labels, weights, centers, sums, counts, sq_dist
        )
    return inertia


@cached_njit(nogil=True)
def squared_distances(block, labels, centers, out):
    """Exact squared distance of each row of ``block`` to ``centers[labels]``.

    ``block`` and the float64 ``centers`` C-contiguous, as for :func:`accumulate`.
    """
    if not statistics_buffers_ok(block, centers, None):
        raise ValueError("squared_distances needs C-contiguous rows and float64 centres")
    for i in range(block.shape[0]):
        out[i] = row_distance(block, i, centers, labels[i])


@cached_njit(nogil=True)
def add_moved_rows(data, moved, weights, left, joined, out):
    """What the rows ``moved`` took from the clusters they ``left`` to those they ``joined``.

    Row ``moved[i]`` of ``data`` (times its weight, 1 where ``weights`` is
    None) is subtracted from ``out[left[i]]`` and added to ``out[joined[i]]``,
    in float64: ``out`` (c, d), zeros on entry, becomes the change of those
    clusters' weighted sums.
    """
    for i in range(moved.shape[0]):
        row = moved[i]
        weight = 1.0
        if weights is not None:
            weight = weights[row]
        for j in range(data.shape[1]):
            value = weight * np.float64(data[row, j])
            out[left[i], j] -= value
            out[joined[i], j] += value


@cached_njit(nogil=True)
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


@cached_njit(nogil=True)
def tighten_bounds(block, labels, upper, lower, centers, half_gap, candidates, n_candidates):
    """Replace the candidates' upper bounds by their exact distances and test again.

    The rows that still fail stay at the front of ``candidates``. ``block``
    and the float64 ``centers`` C-contiguous, as for :func:`accumulate`.

    Returns
    -------
    int
        How many rows still fail.
    """
    if not statistics_buffers_ok(block, centers, None):
        raise ValueError("tighten_bounds needs C-contiguous rows and float64 centres")
    n_pending = 0
    for position in range(n_candidates):
        i = candidates[position]
        label = labels[i]
        upper[i] = np.sqrt(row_distance(block, i, centers, label))
        if upper[i] > max(lower[i], half_gap[label]):
            candidates[n_pending] = i
            n_pending += 1
    return n_pending


@cached_njit(nogil=True)
def bounded_pass_rows(
    data,
    weights,
    center_weights,
    center_bias,
    center_vectors,
    error_scale,
    max_center_sq_norm,
    centers,
    block_rows,
    dense_fraction,
    labels,
    upper,
    lower,
    movement,
    sums,
    counts,
    sq_dist,
):
    """One Hamerly pass over ``data`` with the row-layout search, in one call.

    Block for block what :func:`kmeans_dask._worker.bounds.bounded_assign` does from
    Python (same blocks, same tests, same accumulation order, so the same
    result), without a Python round trip and a GIL hand-over per block, so
    two worker threads scale as in the plain pass (figures: RESULTS.md,
    "Design measurements").

    Parameters
    ----------
    data, weights, centers, sums, counts, sq_dist
        As for :func:`accumulate` (``centers`` in float64).
    center_weights, center_bias, center_vectors
        The centres as :func:`~kmeans_dask._kernels.fused_search.pack_centers` packs them.
    error_scale, max_center_sq_norm
        As for :func:`runner_up_distances`.
    block_rows : int
        Rows tested, searched and accumulated together.
    dense_fraction : float
        Share of a block's rows above which the whole block is searched.
    labels, upper, lower : (n,) arrays
        The rows' bounds, updated in place (searched afresh where
        ``movement`` has no shifts).
    movement : tuple
        ``(shift, largest_shift, largest_center, runner_up_shift, half_gap)``
        as for :func:`loosen_bounds`; an empty ``shift`` (no bounds to move)
        searches every row. Always a tuple of these types, so that both uses
        are one compiled signature.

    Returns
    -------
    float
        The weighted inertia of ``data``.
    """
    n_rows, n_features = data.shape
    pending = np.empty(block_rows, dtype=np.int64)
    gathered = np.empty((block_rows, n_features), dtype=data.dtype)
    found = np.empty(block_rows, dtype=np.int32)
    second = np.empty(block_rows, dtype=data.dtype)
    runner_up = np.empty(block_rows)
    inertia = 0.0
    for start in range(0, n_rows, block_rows):
        stop = min(start + block_rows, n_rows)
        block = data[start:stop]
        n_block = stop - start
        n_pending = n_block
        shift, largest_shift, largest_center, runner_up_shift, half_gap = movement
        if shift.size:
            n_pending = loosen_bounds(
                labels[start:stop],
                upper[start:stop],
                lower[start:stop],
                shift,
                largest_shift,
                largest_center,
                runner_up_shift,
                half_gap,
                pending,
            )
            if 0 < n_pending <= dense_fraction * n_block:
                n_pending = tighten_bounds(
                    block,
                    labels[start:stop],
                    upper[start:stop],
                    lower[start:stop],
                    centers,
                    half_gap,
                    pending,
                    n_pending,
                )
                if n_pending:
                    # Element by element: a row assignment would compile
                    # Numba's shape-mismatch error formatting (seconds).
                    for position in range(n_pending):
                        for feature in range(n_features):
                            gathered[position, feature] = block[pending[position], feature]
                    rows = gathered[:n_pending]
                    search_rows(
                        rows,
                        center_weights,
                        center_bias,
                        center_vectors,
                        found[:n_pending],
                        second[:n_pending],
                    )
                    runner_up_distances(
                        rows, second, error_scale, max_center_sq_norm, runner_up[:n_pending]
                    )
                    for position in range(n_pending):
                        labels[start + pending[position]] = found[position]
                        lower[start + pending[position]] = runner_up[position]
                n_pending = 0
        if n_pending:
            search_rows(
                block,
                center_weights,
                center_bias,
                center_vectors,
                labels[start:stop],
                second[:n_block],
            )
            runner_up_distances(block, second, error_scale, max_center_sq_norm, lower[start:stop])
        inertia += accumulate_rows(
            data, start, stop, labels, weights, centers, sums, counts, sq_dist
        )
        for i in range(start, stop):
            upper[i] = np.sqrt(sq_dist[i])
    return inertia


#: Above this ``count``, :func:`largest` sorts instead of keeping a buffer.
LARGEST_BUFFER_MAX = 256


def largest(values, count, out):
    """Indices of the ``count`` largest ``values``, largest first, ties by lower index.

    One compiled pass with a small sorted buffer: after the first rows,
    almost every value is rejected by a single comparison. Each value kept
    shifts the buffer, so for ``count`` above ``LARGEST_BUFFER_MAX`` (large
    samples: ``init="hybrid"``, ``"k-means++"``) NumPy's stable sort of all
    values, in O(n log n), gives the same indices (Numba's sort would add
    seconds to every first compile). Writes into ``out`` and returns how many
    indices it wrote (``min(count, len(values))``).
    """
    if count > LARGEST_BUFFER_MAX:
        order = np.argsort(-values, kind="stable")  # ties by lower index
        size = min(count, values.shape[0])
        out[:size] = order[:size]
        return size
    return _largest_buffered(values, count, out)


@cached_njit(nogil=True)
def _largest_buffered(values, count, out):
    """:func:`largest` with a sorted buffer of ``count`` values."""
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


# --- IVF probes ----------------------------------------------------------------------


@cached_njit(nogil=True)
def smallest_per_row(scores, count, out):
    """``out[i]``: the columns of the ``count`` smallest ``scores[i]``, smallest first.

    One pass per row with a small sorted buffer, as :func:`largest`; ties go
    to the lower column. ``count`` must be at most the number of columns.
    """
    kept = np.empty(count, dtype=scores.dtype)
    for i in range(scores.shape[0]):
        size = 0
        for j in range(scores.shape[1]):
            value = scores[i, j]
            if size == count and not value < kept[count - 1]:
                continue
            position = size if size < count else count - 1
            while position > 0 and kept[position - 1] > value:
                kept[position] = kept[position - 1]
                out[i, position] = out[i, position - 1]
                position -= 1
            kept[position] = value
            out[i, position] = j
            if size < count:
                size += 1


@cached_njit(nogil=True)
def fold_smallest(scores, rows, ids, kept_scores, kept_ids):
    """Fold ``scores[r, j]`` (row ``rows[r]``, centre ``ids[j]``) into each row's
    ``m`` smallest so far, kept sorted in ``kept_scores[row]`` / ``kept_ids[row]``.

    ``kept_scores`` starts at ``+inf`` and ``kept_ids`` at -1. Equal scores
    keep the lower centre index first, whatever order the lists come in.
    """
    m = kept_scores.shape[1]
    for r in range(scores.shape[0]):
        row = rows[r]
        for j in range(scores.shape[1]):
            value = scores[r, j]
            label = ids[j]
            last = kept_scores[row, m - 1]
            if value > last or (value == last and 0 <= kept_ids[row, m - 1] < label):
                continue
            position = m - 1
            while position > 0:
                before = kept_scores[row, position - 1]
                if before < value or (before == value and kept_ids[row, position - 1] < label):
                    break
                kept_scores[row, position] = kept_scores[row, position - 1]
                kept_ids[row, position] = kept_ids[row, position - 1]
                position -= 1
            kept_scores[row, position] = value
            kept_ids[row, position] = label


@cached_njit(nogil=True)
def rows_by_list(probes, n_lists):
    """The rows probing each list: a counting sort of ``probes`` (rows x probes).

    Returns ``rows`` and ``bounds``: the rows probing list ``l`` are
    ``rows[bounds[l]:bounds[l + 1]]``, in ascending order.
    """
    bounds = np.zeros(n_lists + 1, dtype=np.int64)
    for i in range(probes.shape[0]):
        for q in range(probes.shape[1]):
            bounds[probes[i, q] + 1] += 1
    for list_no in range(n_lists):
        bounds[list_no + 1] += bounds[list_no]
    filled = bounds[:-1].copy()
    rows = np.empty(probes.shape[0] * probes.shape[1], dtype=np.int64)
    for i in range(probes.shape[0]):
        for q in range(probes.shape[1]):
            list_no = probes[i, q]
            rows[filled[list_no]] = i
            filled[list_no] += 1
    return rows, bounds


@cached_njit(nogil=True)
def fill_nearest_with_room(centers, coarse, nearest, priority, capacity, n_choices):
    """Each centre's list: its ``nearest`` list while that has fewer than ``capacity``
    centres, else the first with room among its ``n_choices`` nearest lists.

    Centres are placed in the order ``priority``. A centre whose nearest list
    is full scores every list (exact float64 distances to the float64
    ``coarse`` centroids, ties to the lower list) and goes to the nearest
    with room among its ``n_choices`` nearest, or, when they are all full,
    to the nearest of all, over capacity: a centre never goes to a list
    that is not among its nearest. Only those centres score every list.
    Returns each centre's list (int64).
    """
    n_lists = coarse.shape[0]
    n_choices = min(n_choices, n_lists)
    sizes = np.zeros(n_lists, dtype=np.int64)
    lists = np.empty(centers.shape[0], dtype=np.int64)
    distances = np.empty(n_lists, dtype=np.float64)
    choices = np.empty((1, n_choices), dtype=np.int64)
    for i in priority:
        chosen = nearest[i]
        if sizes[chosen] >= capacity:
            for list_no in range(n_lists):
                distances[list_no] = row_distance(centers, i, coarse, list_no)
            smallest_per_row(distances.reshape((1, n_lists)), n_choices, choices)
            chosen = choices[0, 0]
            for q in range(n_choices):
                if sizes[choices[0, q]] < capacity:
                    chosen = choices[0, q]
                    break
        lists[i] = chosen
        sizes[chosen] += 1
    return lists


# --- Column moments for the data summary -------------------------------------------

#: Rows per block of :func:`column_moments`: small enough to stay in L1/L2
#: between the block's two passes (mean, then squared deviations).
_MOMENT_BLOCK_ROWS = 512


@cached_njit(nogil=True)
def column_moments(data, mean, m2):
    """Column means and sums of squared deviations of ``data``, in one pass over memory.

    Each block of rows gets an exact two-pass mean and M2 while it is in
    cache; the blocks are merged with Chan et al.'s update, all in float64.
    A non-finite value in ``data`` leaves a non-finite value in ``mean`` or
    ``m2`` (as does an M2 beyond the float64 range).

    Parameters
    ----------
    data : (n, d) float32 or float64
    mean, m2 : (d,) float64
        Receive the column means and sums of squared deviations.
    """
    n_rows, n_features = data.shape
    mean[:] = 0.0
    m2[:] = 0.0
    block_mean = np.empty(n_features)
    block_m2 = np.empty(n_features)
    merged = 0
    for start in range(0, n_rows, _MOMENT_BLOCK_ROWS):
        stop = min(start + _MOMENT_BLOCK_ROWS, n_rows)
        size = stop - start
        block_mean[:] = 0.0
        for i in range(start, stop):
            for f in range(n_features):
                block_mean[f] += data[i, f]
        block_mean /= size
        block_m2[:] = 0.0
        for i in range(start, stop):
            for f in range(n_features):
                diff = data[i, f] - block_mean[f]
                block_m2[f] += diff * diff
        total = merged + size
        for f in range(n_features):
            delta = block_mean[f] - mean[f]
            mean[f] += delta * (size / total)
            m2[f] += block_m2[f] + delta * delta * (merged * size / total)
        merged = total


# --- Content digest for checkpoints -------------------------------------------------

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


@cached_njit(nogil=True, inline="always")
def _mix64(x):
    """MurmurHash3's 64-bit finaliser: a bijection that spreads every input bit."""
    x ^= x >> np.uint64(33)
    x *= np.uint64(0xFF51AFD7ED558CCD)
    x ^= x >> np.uint64(33)
    x *= np.uint64(0xC4CEB9FE1A85EC53)
    x ^= x >> np.uint64(33)
    return x


@cached_njit(nogil=True)
def content_digest(bits, weight_bits, first_row):
    """Sum, modulo 2**64, of a hash of every value keyed by its global position.

    Row ``i`` of the block is global row ``first_row + i``; its values and
    its weight are hashed as the ``n_features + 1`` entries of that row, each
    mixed with a key of its global position. The sum of the hashes is the
    same whichever blocks the rows are split into and in whichever order the
    blocks' digests are added, and changing, moving or swapping any value
    changes it (each hash is a bijection of the value for a given position).

    Parameters
    ----------
    bits : (n, d) uint32 or uint64
        The bits of the rows' values (a view of float32 or float64 data).
    weight_bits : (n,) uint64
        The bits of the rows' float64 weights.
    first_row : int
        Global index of the block's first row.

    Returns
    -------
    numpy.uint64
    """
    n_rows, n_features = bits.shape
    width = np.uint64(n_features + 1)
    total = np.uint64(0)
    for i in range(n_rows):
        key = (np.uint64(first_row) + np.uint64(i)) * width * _GOLDEN
        for f in range(n_features):
            total += _mix64(np.uint64(bits[i, f]) ^ key)
            key += _GOLDEN
        total += _mix64(np.uint64(weight_bits[i]) ^ key)
    return total
