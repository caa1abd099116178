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

Bounds only pay once the centres settle: while they still move by a good
share of the gaps between them, almost every row fails the test and the
bounds add the runner-up search to a full search. So ``algorithm="auto"``
runs plain iterations until an iteration's centre movement is small
(:func:`centers_settled`), then seeds bounds and keeps them while the
movement stays small; ``algorithm="hamerly"`` keeps them throughout.

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
from kmeans_dask._worker.threads import single_threaded_native

#: Above this many centres the half-gaps (a k x k distance matrix per
#: iteration, computed by the client) cost more than they save, and only the
#: per-row bounds are used.
MAX_CLUSTERS_FOR_HALF_GAPS = 1024

#: Centres whose half-gaps estimate the median half-gap in :func:`centers_settled`.
SETTLED_SAMPLE = 256

#: Share of a block's rows above which the whole block is searched: gathering
#: the rows that need a search stops paying off.
DENSE_SEARCH_FRACTION = 0.5

#: ``algorithm="auto"`` keeps bounds once the largest centre shift of an
#: iteration is at most this fraction of the median half-gap between centres.
#: Measured (1M x 32, k=64, overlapping and separated blobs): above 0.4 the
#: next iteration searched all the rows, where bounds only add the cost of
#: the runner-up search, and seeding them costs 1.7 plain iterations. The
#: separated blobs' ratio falls from 0.49 to 0.011 in one iteration and
#: stays there; the overlapping blobs' dips to 0.10-0.16 for two iterations
#: and climbs back to 1.2, which seeding bounds at 0.2 paid for.
SETTLED_RATIO = 0.05

#: Relative slack added to the centre shifts, so that rounding in the float64
#: distance computations can never make a bound too tight.
_SHIFT_SLACK = 1e-12


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


def half_gaps(centers: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
    """Half the distance from each centre to its nearest other centre, rounded down.

    Computed by the GEMM expansion in float64 with its rounding error
    subtracted, so the result never exceeds the true half-gap. ``rows``
    restricts the result to those centres (still against all of them). The
    GEMM runs on one thread: this runs in the client between iterations, and
    multi-threaded OpenBLAS keeps its threads spinning afterwards, which took
    15-20% off the workers' next iteration on a 2-core machine.
    """
    n_clusters, n_features = centers.shape
    rows = np.arange(n_clusters) if rows is None else rows
    if n_clusters == 1:
        return np.full(rows.size, np.inf)
    centers64 = np.asarray(centers, dtype=np.float64)
    sq_norms = np.einsum("ij,ij->i", centers64, centers64)
    norm_sums = sq_norms[rows, None] + sq_norms[None, :]
    with single_threaded_native():
        sq_dist = norm_sums - 2.0 * (centers64[rows] @ centers64.T)
    sq_dist -= 4.0 * (n_features + 4) * np.finfo(np.float64).eps * norm_sums
    sq_dist[np.arange(rows.size), rows] = np.inf
    return 0.5 * np.sqrt(np.maximum(sq_dist.min(axis=1), 0.0))


def _shifts(old: np.ndarray, new: np.ndarray) -> np.ndarray:
    """Distance each centre moved from ``old`` to ``new``, in float64."""
    diff = np.asarray(new, dtype=np.float64) - np.asarray(old, dtype=np.float64)
    return np.sqrt(np.einsum("ij,ij->i", diff, diff))


def centers_settled(old: np.ndarray, new: np.ndarray) -> bool:
    """Whether the centres moved little enough for bounds to skip most rows.

    True when the largest shift from ``old`` to ``new`` is at most
    :data:`SETTLED_RATIO` times the median half-gap of ``new``, estimated
    from :data:`SETTLED_SAMPLE` evenly spaced centres (cheap for any k).
    """
    largest = _shifts(old, new).max()
    sample = np.unique(np.linspace(0, len(new) - 1, SETTLED_SAMPLE).astype(np.intp))
    return bool(largest <= SETTLED_RATIO * np.median(half_gaps(new, sample)))


def center_movement(old: np.ndarray, new: np.ndarray) -> CenterMovement:
    """The :class:`CenterMovement` from centres ``old`` to ``new`` (both k x d)."""
    shift = _shifts(old, new) * (1.0 + _SHIFT_SLACK)
    if len(new) > MAX_CLUSTERS_FOR_HALF_GAPS:
        return CenterMovement(shift=shift, half_gap=np.zeros(len(new)))
    return CenterMovement(shift=shift, half_gap=half_gaps(new))


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
