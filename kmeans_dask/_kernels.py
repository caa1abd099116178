"""Compiled per-block kernels: nearest-centre search, fused statistics, exact distances,
column moments.

These are pure functions over NumPy arrays, compiled with Numba and run
without the GIL, so several Dask worker threads can run them at once.
Sums, counts and inertia are accumulated in float64 whatever the input
precision; distances to the assigned centre are computed exactly as
``sum((x - c) ** 2)`` (not through the GEMM expansion, which cancels).
"""

from __future__ import annotations

import numba
import numpy as np

# The GEMMs inside the row-layout kernels (``np.dot`` in nopython mode) call
# SciPy's BLAS. Load it now, before any thread pool is capped, so that
# threadpoolctl sees and caps it along with NumPy's.
import scipy.linalg.cython_blas  # noqa: F401
from llvmlite import ir
from numba.core import types
from numba.extending import intrinsic, overload

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


# --- Row layout: scores (b, k) from one GEMM per tile of rows -----------------------
#
# For a small number of centres the GEMM is thin (k and d small), and BLAS runs
# it fastest with the rows as the long dimension and no transposition: tiles of
# a few hundred rows hit OpenBLAS's small-matrix kernels. The argmin then runs
# along each row of the (rows, k) tile. A float comparison loop does not
# vectorise there (LLVM keeps the scalar select), an integer one does: each
# score is mapped to an integer of the same order (its IEEE bits, with the
# magnitude bits flipped for negatives), and for float32 the centre index is
# packed below it, so one int64 min gives the smallest score and, among equal
# scores, the lowest index. The runner-up score needs no index, so its
# reduction stays in int32 (twice the lanes per vector: measured 2x faster).

_INT32_MAGNITUDE = 0x7FFFFFFF
_INT64_MAGNITUDE = 0x7FFFFFFFFFFFFFFF
_LOW_32_BITS = 0xFFFFFFFF


_INT_OF_FLOAT = {types.float32: types.int32, types.float64: types.int64}
_FLOAT_OF_INT = {int_type: float_type for float_type, int_type in _INT_OF_FLOAT.items()}


def _bitcast(context, builder, signature, args):
    """Code for reading the argument's bits as the (same-width) return type."""
    return builder.bitcast(args[0], context.get_value_type(signature.return_type))


@intrinsic
def _float_bits(typingctx, value):
    """The IEEE bits of a float32 (float64) as an int32 (int64)."""
    int_type = _INT_OF_FLOAT.get(value)
    return None if int_type is None else (int_type(value), _bitcast)


@intrinsic
def _bits_float(typingctx, value):
    """The float32 (float64) whose IEEE bits are the int32 (int64) ``value``."""
    float_type = _FLOAT_OF_INT.get(value)
    return None if float_type is None else (float_type(value), _bitcast)


def _ordered_bits(context, builder, signature, args):
    """Code for the float32 argument's bits as an int32 of the same order."""
    bits = builder.bitcast(args[0], ir.IntType(32))
    sign = builder.ashr(bits, ir.Constant(ir.IntType(32), 31))
    return builder.xor(bits, builder.and_(sign, ir.Constant(ir.IntType(32), _INT32_MAGNITUDE)))


@intrinsic
def _ordered_int32(typingctx, score):
    """An int32 that orders like the float32 ``score`` (the low half of :func:`_ordered32`).

    Written as LLVM code because Numba widens integer arithmetic to int64,
    which halves the lanes of the vectorised reduction over these values.
    """
    return (types.int32(score), _ordered_bits) if score == types.float32 else None


@numba.njit(inline="always")
def _ordered32(score):
    """An int64 holding an int32 that orders like the float32 ``score``."""
    bits = np.int64(_float_bits(score))
    return bits ^ ((bits >> 31) & _INT32_MAGNITUDE)


@numba.njit(inline="always")
def _ordered64(score):
    """An int64 that orders like the float64 ``score``."""
    bits = _float_bits(score)
    return bits ^ ((bits >> 63) & _INT64_MAGNITUDE)


@numba.njit(inline="always")
def _score32(ordered):
    """The float32 score that :func:`_ordered32` mapped to ``ordered``."""
    return _bits_float(np.int32(ordered ^ ((ordered >> 31) & _INT32_MAGNITUDE)))


@numba.njit(inline="always")
def _score64(ordered):
    """The float64 score that :func:`_ordered64` mapped to ``ordered``."""
    return _bits_float(ordered ^ ((ordered >> 63) & _INT64_MAGNITUDE))


@numba.njit(inline="always")
def _smallest_key32(scores, i, center_bias):
    """The smallest packed (score, index) key of row ``i``, scores biased."""
    best = np.int64(_INT64_MAGNITUDE)
    for j in range(scores.shape[1]):
        best = min(best, (_ordered32(scores[i, j] + center_bias[j]) << 32) | j)
    return best


def _smallest_ordered(ordered, largest):
    """A compiled ``(scores, i, center_bias) -> min_j ordered(scores[i, j] + center_bias[j])``.

    ``ordered`` maps a score to an integer of the same order; ``largest`` is
    the largest such integer (the start of the reduction).
    """

    @numba.njit(inline="always")
    def smallest(scores, i, center_bias):
        best = largest
        for j in range(scores.shape[1]):
            best = min(best, ordered(scores[i, j] + center_bias[j]))
        return best

    return smallest


#: The smallest ordered float32 score of a row, scores biased, as an int32.
_smallest_ordered32 = _smallest_ordered(_ordered_int32, np.int32(_INT32_MAGNITUDE))
#: The smallest ordered float64 score of a row, scores biased.
_smallest_ordered64 = _smallest_ordered(_ordered64, np.int64(_INT64_MAGNITUDE))


@numba.njit(nogil=True, cache=True)
def argmin_rows32(block, minus_two_centers_t, center_bias, tile, labels, second=None):
    """Nearest centre of each float32 row: ``argmin_j(center_bias[j] - 2 c_j . x)``.

    Parameters
    ----------
    block : (n, d) float32, C-contiguous rows
    minus_two_centers_t : (d, k) float32, ``-2 * centers.T``, C-contiguous
    center_bias : (k,) float32, ``||c_j||^2``
    tile : (t, k) float32 scratch; ``t`` rows are scored per GEMM
    labels : (n,) int32, receives the nearest centre (ties: lowest index)
    second : (n,) float32 or None
        If given, receives each row's runner-up score
        ``min_{j != labels[i]}(center_bias[j] - 2 c_j . x_i)`` (``inf`` for a
        single centre). The best score is overwritten with ``inf`` and the
        reduction run again: one loop carrying both minima would not vectorise.
    """
    n_rows = block.shape[0]
    tile_rows = tile.shape[0]
    for start in range(0, n_rows, tile_rows):
        stop = min(start + tile_rows, n_rows)
        scores = tile[: stop - start]
        np.dot(block[start:stop], minus_two_centers_t, scores)
        for i in range(stop - start):
            label = _smallest_key32(scores, i, center_bias) & _LOW_32_BITS
            labels[start + i] = label
            if second is not None:
                scores[i, label] = np.inf
                second[start + i] = _score32(np.int64(_smallest_ordered32(scores, i, center_bias)))


@numba.njit(nogil=True, cache=True)
def argmin_rows64(block, minus_two_centers_t, center_bias, tile, labels, second=None):
    """:func:`argmin_rows32` for float64 rows: the smallest score, then its first index."""
    n_rows = block.shape[0]
    tile_rows, n_centers = tile.shape
    for start in range(0, n_rows, tile_rows):
        stop = min(start + tile_rows, n_rows)
        scores = tile[: stop - start]
        np.dot(block[start:stop], minus_two_centers_t, scores)
        for i in range(stop - start):
            best = _smallest_ordered64(scores, i, center_bias)
            label = n_centers
            for j in range(n_centers):
                ordered = _ordered64(scores[i, j] + center_bias[j])
                label = min(label, j if ordered == best else n_centers)
            labels[start + i] = label
            if second is not None:
                scores[i, label] = np.inf
                second[start + i] = _score64(_smallest_ordered64(scores, i, center_bias))


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


@numba.njit(nogil=True, cache=True)
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


def _argmin_rows(block, minus_two_centers_t, center_bias, tile, labels, second):
    """:func:`argmin_rows32` or :func:`argmin_rows64` by dtype, for compiled callers."""
    raise NotImplementedError("only callable from compiled code")


@overload(_argmin_rows)
def _argmin_rows_by_dtype(block, minus_two_centers_t, center_bias, tile, labels, second):
    kernel = argmin_rows32 if block.dtype == types.float32 else argmin_rows64

    def implementation(block, minus_two_centers_t, center_bias, tile, labels, second):
        kernel(block, minus_two_centers_t, center_bias, tile, labels, second)

    return implementation


@numba.njit(nogil=True, cache=True)
def assign_and_accumulate_rows(
    data,
    weights,
    minus_two_centers_t,
    center_bias,
    tile,
    centers,
    block_rows,
    labels,
    sums,
    counts,
    sq_dist,
):
    """Row-layout search and :func:`accumulate`, block by block, in one call.

    The same blocks and the same order of additions as calling the two from
    Python block by block, so the same results, without a Python round trip
    (and a GIL hand-over between worker threads) per block. Arguments as for
    :func:`argmin_rows32` and :func:`accumulate`; ``block_rows`` rows are
    searched and then accumulated while they are still in cache. With
    ``sums`` None only the labels and :func:`squared_distances` are written.

    Returns
    -------
    float
        The weighted inertia of ``data`` (0 with ``sums`` None).
    """
    n_rows = data.shape[0]
    inertia = 0.0
    for start in range(0, n_rows, block_rows):
        stop = min(start + block_rows, n_rows)
        block = data[start:stop]
        _argmin_rows(block, minus_two_centers_t, center_bias, tile, labels[start:stop], None)
        if sums is None:
            squared_distances(block, labels[start:stop], centers, sq_dist[start:stop])
            continue
        inertia += accumulate_rows(
            data, start, stop, labels, weights, centers, sums, counts, sq_dist
        )
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
def bounded_pass_rows(
    data,
    weights,
    minus_two_centers_t,
    center_bias,
    tile,
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

    Block for block what :func:`kmeans_dask._bounds.bounded_assign` does from
    Python (same blocks, same tests, same accumulation order, so the same
    result), without a Python round trip and a GIL hand-over per block: with
    two worker threads that loop ran 1.37x faster than one thread, this one
    as fast as the plain pass (1.85x).

    Parameters
    ----------
    data, weights, centers, sums, counts, sq_dist
        As for :func:`accumulate` (``centers`` in float64).
    minus_two_centers_t, center_bias, tile
        As for :func:`argmin_rows32`.
    error_scale, max_center_sq_norm
        As for :func:`runner_up_distances`.
    block_rows : int
        Rows tested, searched and accumulated together.
    dense_fraction : float
        Share of a block's rows above which the whole block is searched.
    labels, upper, lower : (n,) arrays
        The rows' bounds, updated in place (searched afresh where
        ``movement`` is None).
    movement : tuple or None
        ``(shift, largest_shift, largest_center, runner_up_shift, half_gap)``
        as for :func:`loosen_bounds`, or None to search every row.

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
        if movement is not None:
            shift, largest_shift, largest_center, runner_up_shift, half_gap = movement
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
                    for position in range(n_pending):
                        gathered[position] = block[pending[position]]
                    rows = gathered[:n_pending]
                    _argmin_rows(rows, minus_two_centers_t, center_bias, tile, found, second)
                    runner_up_distances(
                        rows, second, error_scale, max_center_sq_norm, runner_up[:n_pending]
                    )
                    for position in range(n_pending):
                        labels[start + pending[position]] = found[position]
                        lower[start + pending[position]] = runner_up[position]
                n_pending = 0
        if n_pending:
            _argmin_rows(block, minus_two_centers_t, center_bias, tile, labels[start:stop], second)
            runner_up_distances(block, second, error_scale, max_center_sq_norm, lower[start:stop])
        inertia += accumulate_rows(
            data, start, stop, labels, weights, centers, sums, counts, sq_dist
        )
        for i in range(start, stop):
            upper[i] = np.sqrt(sq_dist[i])
    return inertia


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


# --- Column moments for the data summary -------------------------------------------

#: Rows per block of :func:`column_moments`: small enough to stay in L1/L2
#: between the block's two passes (mean, then squared deviations).
_MOMENT_BLOCK_ROWS = 512


@numba.njit(nogil=True, cache=True)
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
