"""Exact search after a move of a few centres: only the moved centres are searched.

Late in a fit an update leaves most centres exactly where they were: only
the clusters whose rows changed move (RESULTS.md, "moved centres"). A row
whose nearest centre before the update was ``a``, and ``a`` did not move,
is still nearer to ``a`` than to every other centre that did not move:
their distances are unchanged. Its new nearest centre is
``a`` or one of the moved centres, so the row is searched among those
alone. Only the rows whose own centre moved are searched among all the
centres. The result is the exact search's; as with Hamerly bounds
(:mod:`kmeans_dask._worker.bounds`), it can differ from a full search only
on a row equidistant from two centres to within float rounding, where the
comparison with its own centre, in float64, is the more exact of the two.
"""

from __future__ import annotations

import numpy as np

from kmeans_dask._kernels.block_kernels import squared_distances
from kmeans_dask._worker.searchers import prepared_search
from kmeans_dask.backends import Searcher


def nearest_after_moves(
    data: np.ndarray,
    everywhere: Searcher,
    centers: np.ndarray,
    centers64: np.ndarray,
    search: str,
    moved: np.ndarray,
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
        rows whose centre moved.
    centers : (k, d)
        The centres, after the move.
    centers64 : (k, d) float64, C-contiguous
        The same in float64
        (:func:`~kmeans_dask._kernels.row_statistics.aligned_float64`): the
        distances a row's own centre and its nearest moved one are compared by.
    search : str
        An exact search spec, of the searches among all the centres (rows
        whose centre moved) and among the moved ones (the others).
    moved : (m,) int
        The centres that changed since ``labels`` were found.
    labels : (n,) int32
        In: each row's nearest centre before the move, found by an exact
        search. Out: its nearest centre now, written in place.
    """
    centers = centers.astype(data.dtype, copy=False)
    is_moved = np.zeros(len(centers), dtype=bool)
    is_moved[moved] = True
    own_moved = is_moved[labels]
    for rows in _blocks(np.flatnonzero(own_moved), everywhere.block_rows):
        labels[rows] = everywhere.nearest(data[rows])
    if not moved.size:
        return
    moved = np.sort(moved).astype(np.int32)
    among_moved = prepared_search(search, np.ascontiguousarray(centers[moved])).searcher
    for rows in _blocks(np.flatnonzero(~own_moved), among_moved.block_rows):
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


def _blocks(rows: np.ndarray, size: int) -> list[np.ndarray]:
    """``rows`` in consecutive pieces of at most ``size``."""
    return [rows[start : start + size] for start in range(0, rows.size, size)]
