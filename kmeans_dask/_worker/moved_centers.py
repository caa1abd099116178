"""Exact search after a move of a few centres: only the moved centres are searched.

Late in a fit an update leaves most centres exactly where they were: only
the clusters whose rows changed move (RESULTS.md, "moved centres"). A row
whose nearest centre before the update was ``a``, and ``a`` did not move,
is still nearer to ``a`` than to every other centre that did not move:
their distances are unchanged. Its new nearest centre is
``a`` or one of the moved centres, so the row is searched among those
alone. So is a row whose centre ``a`` moved nearer to it: every centre that
did not move is at least as far as ``a`` was, farther than ``a`` is now.
Only the rows whose own centre moved away from them are searched among all
the centres (about half of those whose centre moved, RESULTS.md, "Rows
whose centre moved nearer"). The result is the exact search's; as with Hamerly bounds
(:mod:`kmeans_dask._worker.bounds`), it can differ from a full search only
on a row equidistant from two centres to within float rounding, where the
comparison with its own centre, in float64, is the more exact of the two.
"""

from __future__ import annotations

import numpy as np

from kmeans_dask._kernels.block_kernels import squared_distances
from kmeans_dask._kernels.row_statistics import aligned_float64
from kmeans_dask._worker.searchers import prepared_search
from kmeans_dask.backends import Searcher


def nearest_after_moves(
    data: np.ndarray,
    everywhere: Searcher,
    centers: np.ndarray,
    centers64: np.ndarray,
    search: str,
    moved: np.ndarray,
    moved_from: np.ndarray,
    labels: np.ndarray,
) -> None:
    """Move each row to its nearest centre, knowing its nearest before ``moved`` moved.

    Parameters
    ----------
    data : (n, d) float32 or float64, C-contiguous
        The rows.
    everywhere : Searcher
        The prepared searcher of ``search`` over all of ``centers``
        (:func:`~kmeans_dask._worker.searchers.prepared_search`), for the
        rows whose centre moved away from them.
    centers : (k, d)
        The centres, after the move.
    centers64 : (k, d) float64, C-contiguous
        The same in float64
        (:func:`~kmeans_dask._kernels.row_statistics.aligned_float64`): the
        distances a row's own centre and its nearest moved one are compared by
        (and its own centre now and where it was, in ``moved_from``).
    search : str
        An exact search spec, of the searches among all the centres (rows
        whose centre moved away) and among the moved ones (the others).
    moved : (m,) int
        The centres that changed since ``labels`` were found.
    moved_from : (m, d) float
        Where each of them was then, in the order of ``moved``.
    labels : (n,) int32
        In: each row's nearest centre before the move, found by an exact
        search. Out: its nearest centre now, written in place.
    """
    if not moved.size:
        return
    centers = centers.astype(data.dtype, copy=False)
    order = np.argsort(moved, kind="stable")
    moved = np.asarray(moved)[order].astype(np.int32)
    moved_from64 = aligned_float64(np.asarray(moved_from)[order])
    away = _moved_away(data, centers64, moved, moved_from64, labels)
    for rows in _blocks(away, everywhere.block_rows):
        labels[rows] = everywhere.nearest(data[rows])
    searched_everywhere = np.zeros(len(labels), dtype=bool)
    searched_everywhere[away] = True
    among_moved = prepared_search(search, np.ascontiguousarray(centers[moved])).searcher
    for rows in _blocks(np.flatnonzero(~searched_everywhere), among_moved.block_rows):
        block = data[rows]
        own = labels[rows]
        nearest_moved = moved[among_moved.nearest(block)]
        own_distance = np.empty(len(rows))
        moved_distance = np.empty(len(rows))
        squared_distances(block, own, centers64, own_distance)
        squared_distances(block, nearest_moved, centers64, moved_distance)
        nearer = (moved_distance < own_distance) | (
            (moved_distance == own_distance) & (nearest_moved < own)
        )
        labels[rows[nearer]] = nearest_moved[nearer]


def _moved_away(
    data: np.ndarray,
    centers64: np.ndarray,
    moved: np.ndarray,
    moved_from64: np.ndarray,
    labels: np.ndarray,
) -> np.ndarray:
    """The rows whose centre (in ``labels``) is one of the sorted ``moved`` and is not
    now strictly nearer to them than it was at ``moved_from64``, ascending."""
    is_moved = np.zeros(len(centers64), dtype=bool)
    is_moved[moved] = True
    own_moved = np.flatnonzero(is_moved[labels])
    if not own_moved.size:
        return own_moved
    own = labels[own_moved]
    block = data[own_moved]
    now = np.empty(own_moved.size)
    before = np.empty(own_moved.size)
    squared_distances(block, own, centers64, now)
    slots = np.searchsorted(moved, own).astype(np.int32)
    squared_distances(block, slots, moved_from64, before)
    return own_moved[now >= before]


def _blocks(rows: np.ndarray, size: int) -> list[np.ndarray]:
    """``rows`` in consecutive pieces of at most ``size``."""
    return [rows[start : start + size] for start in range(0, rows.size, size)]
