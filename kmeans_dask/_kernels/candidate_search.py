"""Compiled search among each row's candidate centres: the centres nearest its previous one.

Between two Lloyd iterations the centres move little, and a row's new
nearest centre is almost always one of the few centres nearest to the
centre it had (RESULTS.md, "Candidates from the previous centre"). A
*neighbour table* lists, for every centre, its ``m`` nearest centres (itself
included, nearest first); :func:`candidate_pass_rows` scores each row
against the ``m`` entries of its previous label's row only
(:func:`candidate_labels`), with exact float64 distances
(:func:`~kmeans_dask._kernels.row_statistics.row_distance`, the distance the
statistics use); float32 rows are screened in float32 first
(:mod:`~kmeans_dask._kernels.float32_screen`), with the same labels. Ties go
to the lowest centre index, whatever the table's order.

Pure functions over NumPy arrays, compiled with Numba, without the GIL.
"""

from __future__ import annotations

import numpy as np

from kmeans_dask._kernels.block_kernels import rows_by_list, smallest_per_row
from kmeans_dask._kernels.float32_screen import distance32, screen_limit
from kmeans_dask._kernels.prefetch import prefetch_row
from kmeans_dask._kernels.row_statistics import (
    DISTANCES_AT_ONCE,
    row_distance,
    row_distances,
    statistics_buffers_ok,
)
from kmeans_dask._kernels.shared_cache import cached_njit

#: The candidate scans visit rows out of memory order (one previous centre's,
#: one IVF list's) and prefetch the row this many visits ahead: 9.3-9.8 ms
#: instead of 11.0-12.3 for 25,000 rows at k = 4096, d = 128, 16 candidates
#: (one Ice Lake thread; two rows ahead as fast, eight slower).
ROWS_AHEAD = 4

#: Centres scored against the table's rows at once (a (block, k) float64 buffer).
_TABLE_BLOCK_ROWS = 256


def neighbour_table(centers: np.ndarray, m: int, rows: slice, out: np.ndarray) -> None:
    """Write into ``out`` the ``m`` nearest centres of each centre in ``rows``, nearest first.

    Scored as ``||c_j||^2 - 2 c_i . c_j`` in the centres' dtype, block by
    block through BLAS, and the ``m`` smallest kept (ties to the lower
    index); each centre's own score is set to ``-inf``, so it comes first.
    The table only chooses which centres a row scores, so rounding here can
    change which centres are looked at, never the distances a row is
    assigned by.

    Parameters
    ----------
    centers : ndarray of shape (k, d), float32 or float64
    m : int
        Neighbours per centre, between 1 and ``k``.
    rows : slice
        The centres (rows of the table) to do, with step 1.
    out : ndarray of shape (rows' length, m), int32
    """
    n_centers = centers.shape[0]
    if not 1 <= m <= n_centers:
        raise ValueError(f"m must be in [1, {n_centers}] (the number of centres), got {m}")
    sq_norms = np.einsum("ij,ij->i", centers, centers)
    found = np.empty((_TABLE_BLOCK_ROWS, m), dtype=np.int64)
    first, last, _ = rows.indices(n_centers)
    for start in range(first, last, _TABLE_BLOCK_ROWS):
        stop = min(start + _TABLE_BLOCK_ROWS, last)
        # -2 c_i . c_j from -2 c_i: scaling by a power of two is exact, one pass fewer.
        scores = (-2.0 * centers[start:stop]) @ centers.T
        scores += sq_norms
        scores[np.arange(stop - start), np.arange(start, stop)] = -np.inf
        smallest_per_row(scores, m, found[: stop - start])
        out[start - first : stop - first] = found[: stop - start]


@cached_njit(nogil=True, inline="always")
def _nearest_of(block, i, centers, first, labels, more, screen, scores):
    """Label of the centre nearest row ``i`` among ``first``, ``labels`` and ``more``, by
    float64 squared distance (ties to the lowest centre index), and that distance.

    ``centers`` float64 and ``block`` C-contiguous, as for
    :func:`~kmeans_dask._kernels.row_statistics.row_distance`. With
    ``screen`` (:func:`~kmeans_dask._kernels.float32_screen.float32_screen`
    of ``centers``, for float32 rows), all are scored in float32 first, into
    ``scores`` (at least ``1 + len(labels) + len(more)`` float32), and only
    those :func:`~kmeans_dask._kernels.float32_screen.screen_limit` leaves a
    chance in float64: the same label.
    """
    if screen is None:
        best = row_distance(block, i, centers, first)
        return _nearest_after(block, i, centers, labels, more, best, first)
    centers32, shift = screen
    row = block[i]
    # ``labels`` and ``more`` in loops of their own: through ``_scored`` this
    # scan took as long as the float64 one (k = 16384, 25,000 rows, one thread).
    lowest = distance32(row, centers32[first])
    scores[0] = lowest
    for q in range(labels.shape[0]):
        score = distance32(row, centers32[labels[q]])
        scores[1 + q] = score
        lowest = min(lowest, score)
    for q in range(more.shape[0]):
        score = distance32(row, centers32[more[q]])
        scores[1 + labels.shape[0] + q] = score
        lowest = min(lowest, score)
    limit = screen_limit(lowest, shift, block.shape[1])
    best = np.inf
    best_label = first
    for q in range(1 + labels.shape[0] + more.shape[0]):
        if scores[q] <= limit:
            label = first if q == 0 else _scored(labels, more, q - 1)
            distance = row_distance(block, i, centers, label)
            if _precedes(distance, label, best, best_label):
                best = distance
                best_label = label
    return best_label, best


@cached_njit(nogil=True, inline="always")
def _nearest_after(block, i, centers, labels, more, best, best_label):
    """Label of the centre nearest row ``i`` among (``best``, ``best_label``), the centres
    ``labels`` and then ``more``, compared in that order (ties to the lowest label) and
    scored :data:`~kmeans_dask._kernels.row_statistics.DISTANCES_AT_ONCE` at a time;
    and its distance."""
    n_scored = labels.shape[0] + more.shape[0]
    in_fours = n_scored // DISTANCES_AT_ONCE * DISTANCES_AT_ONCE
    for q in range(0, in_fours, DISTANCES_AT_ONCE):
        four = (
            _scored(labels, more, q),
            _scored(labels, more, q + 1),
            _scored(labels, more, q + 2),
            _scored(labels, more, q + 3),
        )
        distances = row_distances(block, i, centers, four)
        for t in range(DISTANCES_AT_ONCE):
            if _precedes(distances[t], four[t], best, best_label):
                best = distances[t]
                best_label = four[t]
    for q in range(in_fours, n_scored):
        label = _scored(labels, more, q)
        dist = row_distance(block, i, centers, label)
        if _precedes(dist, label, best, best_label):
            best = dist
            best_label = label
    return best_label, best


@cached_njit(nogil=True, inline="always")
def _scored(labels, more, q):
    """The ``q``-th of ``labels`` followed by ``more``."""
    return labels[q] if q < labels.shape[0] else more[q - labels.shape[0]]


@cached_njit(nogil=True)
def candidate_labels(data, centers, table, labels, order, screen=None, sq_dist=None):
    """Move each row to the nearest centre of its previous centre's ``table`` row.

    ``labels[i]`` holds row ``i``'s previous label on entry and its new one
    on return, written in place; a row whose previous centre's table row
    starts with -1 (no candidates: that centre moved too far, see
    :func:`~kmeans_dask.backends.approximate.candidate_table`) gets -1, for
    another search. Returns the number of such rows.

    The rows are visited in ``order``; in the order of their previous
    labels (:func:`in_label_order`) the rows of one centre come one after
    the other and its candidates stay in cache: 7.5 ms for 25,000 rows at
    k = 4096, d = 128 (16 candidates, one Ice Lake thread) against 14.7 ms
    in row order. The labels do not depend on the order.

    Parameters
    ----------
    data : (n, d) float32 or float64, C-contiguous
    centers : (k, d) float64, C-contiguous
    table : (k, m) int32
    labels : (n,) int32, in-out
    order : (n,) integer, a permutation of the rows
    screen : (float32 centres, shift), optional
        For float32 rows, :func:`~kmeans_dask._kernels.float32_screen.float32_screen`
        of ``centers``: each row's candidates are scored in float32 first
        (:func:`_nearest_of`), with the same labels.
    sq_dist : (n,) float64, optional
        Out: each labelled row's squared distance to its new centre, the
        value :func:`~kmeans_dask._kernels.block_kernels.squared_distances`
        gives (rows left at -1 are not written).
    """
    if not statistics_buffers_ok(data, centers, None):
        raise ValueError("candidate_labels needs C-contiguous rows and float64 centres")
    scores = np.empty(table.shape[1], dtype=np.float32)
    unassigned = 0
    n_rows = order.shape[0]
    for j in range(n_rows):
        if j + ROWS_AHEAD < n_rows:
            prefetch_row(data, order[j + ROWS_AHEAD])
        i = order[j]
        previous = labels[i]
        row = table[previous]
        if row[0] < 0:
            labels[i] = -1
            unassigned += 1
        else:
            label, distance = _nearest_of(
                data, i, centers, row[0], row[1:], row[:0], screen, scores
            )
            labels[i] = label
            if sq_dist is not None:
                sq_dist[i] = distance
    return unassigned


def in_label_order(labels: np.ndarray, n_labels: int) -> np.ndarray:
    """The rows ordered by their ``labels`` (in ``[0, n_labels)``), each label's in
    ascending order: an ``order`` for :func:`candidate_labels`.

    A counting sort (:func:`~kmeans_dask._kernels.block_kernels.rows_by_list`):
    0.1 ms for 25,000 rows at k = 4096 where NumPy's stable argsort took 1.8.
    """
    rows, _ = rows_by_list(np.ascontiguousarray(labels).reshape(-1, 1), n_labels)
    return rows


@cached_njit(nogil=True)
def own_candidate_labels(
    data, centers, candidates, everyone, labels, order, screen=None, sq_dist=None
):
    """Move each row to the nearest of its previous centre, its own ``candidates[i]``
    and the centres in ``everyone`` (those every row scores, e.g. centres moved
    onto far rows after their clusters emptied, which no row has as a candidate).

    ``labels[i]`` holds row ``i``'s previous label on entry and its new one
    on return: never a farther centre than the previous one (ties to the
    lowest centre index). The rows are visited in ``order``: rows whose
    candidates came from one IVF list one after the other, so that list's
    centres stay in cache: 16 ms for 25,000 rows at k = 16384, d = 128 (one
    Zen 4 thread), against 25 ms in row order, where each row fetches its
    candidates from all over the centres.

    Parameters
    ----------
    data : (n, d) float32 or float64, C-contiguous
    centers : (k, d) float64, C-contiguous
    candidates : (n, m) int32
    everyone : (f,) int32
    labels : (n,) int32, in-out
    order : (n,) integer, a permutation of the rows
    screen : (float32 centres, shift), optional
        As for :func:`candidate_labels`.
    sq_dist : (n,) float64, optional
        As for :func:`candidate_labels` (every row is labelled here).
    """
    if not statistics_buffers_ok(data, centers, None):
        raise ValueError("own_candidate_labels needs C-contiguous rows and float64 centres")
    scores = np.empty(1 + candidates.shape[1] + everyone.shape[0], dtype=np.float32)
    n_rows = order.shape[0]
    for j in range(n_rows):
        if j + ROWS_AHEAD < n_rows:
            prefetch_row(data, order[j + ROWS_AHEAD])
        i = order[j]
        label, distance = _nearest_of(
            data, i, centers, labels[i], candidates[i], everyone, screen, scores
        )
        labels[i] = label
        if sq_dist is not None:
            sq_dist[i] = distance


@cached_njit(nogil=True, inline="always")
def _precedes(value, label, other_value, other_label):
    """Whether (``value``, ``label``) ranks first: smaller, or equal with a lower label."""
    return value < other_value or (value == other_value and label < other_label)


@cached_njit(nogil=True)
def refined_neighbours(centers, previous_table, start, stop, out):
    """Write into ``out`` the ``m`` nearest centres of each centre ``start:stop``
    among its previous neighbours' previous neighbours, nearest first.

    ``previous_table`` (k, m) is the table of the centres before their last
    move (:func:`neighbour_table`, or this function's): after a small move a
    centre's nearest centres are almost always its old neighbours or theirs,
    so this scores about ``m * m`` centres per centre instead of ``k``.
    Exact float64 distances
    (:func:`~kmeans_dask._kernels.row_statistics.row_distance` between
    centres); the centre itself first, other ties to the lower index.

    Parameters
    ----------
    centers : (k, d) float64, C-contiguous
    previous_table : (k, m) int32
        Each row ``m`` distinct centres, the centre itself first (so the
        centre's previous neighbours are among the candidates).
    start, stop : int
        The centres (rows of the table) to do.
    out : (stop - start, m) int32
    """
    n_centers = centers.shape[0]
    m = previous_table.shape[1]
    seen = np.full(n_centers, -1, dtype=np.int64)
    pool = np.empty(m * m, dtype=np.int64)
    values = np.empty(m * m, dtype=np.float64)
    kept = np.empty(m, dtype=np.float64)
    for c in range(start, stop):
        seen[c] = c
        n_pool = 0
        for a in range(m):
            for b in range(m):
                j = previous_table[previous_table[c, a], b]
                if seen[j] != c:
                    seen[j] = c
                    pool[n_pool] = j
                    n_pool += 1
        _distances_to_pool(centers, c, pool, n_pool, values)
        row = out[c - start]
        kept[0] = -1.0
        row[0] = c
        size = 1
        for q in range(n_pool):
            value = values[q]
            j = pool[q]
            if size == m and not _precedes(value, j, kept[m - 1], row[m - 1]):
                continue
            position = size if size < m else m - 1
            while position > 1 and _precedes(value, j, kept[position - 1], row[position - 1]):
                kept[position] = kept[position - 1]
                row[position] = row[position - 1]
                position -= 1
            kept[position] = value
            row[position] = j
            if size < m:
                size += 1


@cached_njit(nogil=True, inline="always")
def _distances_to_pool(centers, c, pool, n_pool, values):
    """``values[q]``: centre ``c``'s distance to centre ``pool[q]``, for ``q < n_pool``,
    :data:`~kmeans_dask._kernels.row_statistics.DISTANCES_AT_ONCE` at a time."""
    in_fours = n_pool // DISTANCES_AT_ONCE * DISTANCES_AT_ONCE
    for q in range(0, in_fours, DISTANCES_AT_ONCE):
        four = (pool[q], pool[q + 1], pool[q + 2], pool[q + 3])
        distances = row_distances(centers, c, centers, four)
        for t in range(DISTANCES_AT_ONCE):
            values[q + t] = distances[t]
    for q in range(in_fours, n_pool):
        values[q] = row_distance(centers, c, centers, pool[q])
