"""Hamerly bounds: skip the nearest-centre search where the answer cannot change.

Late in a fit most rows keep their centre, yet a plain Lloyd iteration
searches all ``k`` centres for every row. Hamerly's algorithm (SDM 2010)
keeps, per row, an upper bound on the distance to its centre and a lower
bound on the distance to every other centre. When the centres move, the
bounds move by at most the centres' shifts (triangle inequality); a row
whose upper bound stays below its lower bound, or below half the gap from
its centre to the nearest other centre, keeps its centre without a search.
Only the remaining rows are searched.

The result is exact: a skipped row provably keeps its nearest centre, and
the statistics are accumulated by the same kernel, over the same blocks, as
in a plain iteration, so both give identical sums whenever they give the
same labels (they can differ only on rows equidistant from two centres to
within float rounding, where the bounds, computed in float64, are the more
exact of the two).

Bounds only pay once the centres settle: when to keep them, and how the
centres moved, is decided by the client
(:mod:`kmeans_dask._fit.bounds_schedule`).

The bounds of a chunk live in the memory of the worker that holds the chunk
(:data:`MEMO`) between the tasks of consecutive iterations: they never
cross the network. The memo is only an accelerator: a task that finds
no bounds for the previous iteration (first iteration, a retried task, a
chunk recomputed after a worker died) searches every row and starts over.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kmeans_dask._kernels.block_kernels import accumulate_rows, loosen_bounds, tighten_bounds
from kmeans_dask._kernels.row_statistics import aligned_float64
from kmeans_dask._worker.memo import ChunkMemo
from kmeans_dask._worker.searchers import PreparedSearch

#: Share of a block's rows above which the whole block is searched: gathering
#: the rows that need a search stops paying off.
DENSE_SEARCH_FRACTION = 0.5


@dataclass
class RowBounds:
    """The Hamerly state of one chunk's rows, for one set of centres."""

    labels: np.ndarray
    """(n,) int32 assigned centre of each row."""
    upper: np.ndarray
    """(n,) float64, at least the distance from each row to its centre."""
    lower: np.ndarray
    """(n,) float64, at most the distance from each row to any other centre."""


@dataclass(frozen=True)
class CenterMovement:
    """How the centres moved between two iterations, in the bounds' terms."""

    shift: np.ndarray
    """(k,) float64, at least the distance each centre moved."""
    half_gap: np.ndarray
    """(k,) float64, at most half the distance from each centre to its nearest
    other centre (zeros when ``k`` is above :data:`MAX_CLUSTERS_FOR_HALF_GAPS`)."""

    @property
    def largest(self) -> tuple[float, int, float]:
        """The largest shift, the centre that made it, and the runner-up shift."""
        if self.shift.size == 1:
            return float(self.shift[0]), 0, 0.0
        order = np.argpartition(-self.shift, 1)[:2]
        first, second = order if self.shift[order[0]] >= self.shift[order[1]] else order[::-1]
        return float(self.shift[first]), int(first), float(self.shift[second])


@dataclass(frozen=True)
class BoundsTicket:
    """What a chunk task needs to use and keep its rows' bounds.

    The task for ``iteration`` of ``run`` looks for the bounds left by
    ``iteration - 1`` and, if it finds them, moves them by ``movement``;
    it leaves its own bounds behind if ``keep``.
    """

    run: str
    iteration: int
    movement: CenterMovement | None
    keep: bool = True


#: The bounds of the chunks held by this process (one memo per Dask worker),
#: tagged with the run and the iteration that left them.
MEMO: ChunkMemo[RowBounds] = ChunkMemo()


def bounded_assign(
    data: np.ndarray,
    weights: np.ndarray | None,
    centers: np.ndarray,
    prepared: PreparedSearch,
    previous: RowBounds | None,
    movement: CenterMovement | None,
    sums: np.ndarray,
    counts: np.ndarray,
    sq_dist: np.ndarray | None = None,
) -> tuple[RowBounds, np.ndarray, float]:
    """Assign the rows of ``data`` using (and renewing) their bounds.

    Parameters
    ----------
    data : (n, d) rows
    weights : (n,) float64 or None
    centers : (k, d) centres of this iteration
    prepared : a searcher over ``centers`` that offers ``nearest_two``
    previous : RowBounds or None
        Bounds for the previous centres; None searches every row.
    movement : CenterMovement or None
        How the centres moved since ``previous`` was computed.
    sums, counts : (k, d) and (k,) float64
        Statistics, updated in place.
    sq_dist : (n,) float64, optional
        Receives the squared distances (a new array when None).

    Returns
    -------
    bounds : RowBounds
        Bounds for ``centers`` (the upper bounds are the exact distances).
    sq_dist : (n,) float64
        Exact squared distance of each row to its centre.
    inertia : float
        Weighted inertia of the rows.
    """
    n_rows = data.shape[0]
    centers64 = aligned_float64(centers)
    if previous is None or movement is None:
        labels = np.empty(n_rows, dtype=np.int32)
        lower = np.empty(n_rows)
        upper = np.empty(n_rows)
        # Without bounds to move, every row is searched.
        moved = None
    else:
        labels, lower, upper = previous.labels, previous.lower, previous.upper
        # The movement as loosen_bounds takes it: shifts, the two largest, half-gaps.
        moved = (movement.shift, *movement.largest, movement.half_gap)
    sq_dist = np.empty(n_rows) if sq_dist is None else sq_dist
    searcher = prepared.searcher
    if prepared.fused_passes:
        inertia = searcher.bounded_pass(
            data,
            weights,
            centers64,
            DENSE_SEARCH_FRACTION,
            (labels, upper, lower),
            moved,
            (sums, counts, sq_dist),
        )
        return RowBounds(labels, upper, lower), sq_dist, inertia
    pending = np.empty(searcher.block_rows, dtype=np.int64)
    inertia = 0.0
    # Block by block, so each block is read from memory once, and with the
    # blocks of a plain iteration, so the sums are added in the same order.
    for start in range(0, n_rows, searcher.block_rows):
        stop = min(start + searcher.block_rows, n_rows)
        block = data[start:stop]
        if moved is None:
            labels[start:stop], lower[start:stop] = searcher.nearest_two(block)
        else:
            n_pending = loosen_bounds(
                labels[start:stop], upper[start:stop], lower[start:stop], *moved, pending
            )
            if n_pending > DENSE_SEARCH_FRACTION * (stop - start):
                labels[start:stop], lower[start:stop] = searcher.nearest_two(block)
            elif n_pending:
                n_pending = tighten_bounds(
                    block,
                    labels[start:stop],
                    upper[start:stop],
                    lower[start:stop],
                    centers64,
                    movement.half_gap,
                    pending,
                    n_pending,
                )
                rows = pending[:n_pending] + start
                labels[rows], lower[rows] = searcher.nearest_two(data[rows])
        inertia += accumulate_rows(
            data, start, stop, labels, weights, centers64, sums, counts, sq_dist
        )
        np.sqrt(sq_dist[start:stop], out=upper[start:stop])
    return RowBounds(labels, upper, lower), sq_dist, inertia
