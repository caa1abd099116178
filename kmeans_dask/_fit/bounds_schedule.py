"""When the Lloyd iterations keep Hamerly bounds, and how the centres moved (client side).

Bounds (:mod:`kmeans_dask._worker.bounds`) only pay once the centres
settle: while they still move by a good share of the gaps between them,
almost every row fails the test and the bounds add the runner-up search to
a full search. So ``algorithm="auto"`` runs plain iterations until an
iteration's centre movement is small (:func:`centers_settled`), then seeds
bounds and keeps them while the movement stays small;
``algorithm="hamerly"`` keeps them throughout. With an approximate search
("closing"), no iteration keeps bounds: the iteration ``max_iter`` ends
searches exactly, and the final pass searches each row only among the
centres that moved since (:mod:`kmeans_dask._worker.moved_centers`); without
an exact final pass ("moved"), the passes after an update that moved very
few centres search that way from the approximate labels.
:class:`BoundsSchedule`
makes that decision iteration by iteration and writes the tickets the
chunk tasks follow.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

import numpy as np

from kmeans_dask._worker.bounds import BoundsTicket, CenterMovement
from kmeans_dask._worker.threads import single_threaded_native

#: Above this many centres the half-gaps (a k x k distance matrix per
#: iteration, computed by the client) cost more than they save, and only the
#: per-row bounds are used.
MAX_CLUSTERS_FOR_HALF_GAPS = 1024

#: Centres whose half-gaps estimate the median half-gap in :func:`centers_settled`.
SETTLED_SAMPLE = 256

#: Centres (evenly spaced, and the sampled ones) among which
#: :func:`centers_settled` first bounds the sampled half-gaps from above.
SETTLED_SUBSET = 512

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
    Among a subset of the centres a sampled one's nearest other is no
    nearer, so the median of those half-gaps bounds the estimate from
    above: while the centres still move far, that decides it at a fraction
    of the cost (at k = 4096, d = 128, 25 ms on the client between two
    iterations, while the workers wait).
    """
    largest = _shifts(old, new).max()
    sample = np.unique(np.linspace(0, len(new) - 1, SETTLED_SAMPLE).astype(np.intp))
    if len(new) > 2 * SETTLED_SUBSET:
        evenly = np.linspace(0, len(new) - 1, SETTLED_SUBSET).astype(np.intp)
        subset = np.union1d(sample, evenly)
        among_subset = half_gaps(new[subset], np.searchsorted(subset, sample))
        if largest > SETTLED_RATIO * np.median(among_subset):
            return False
    return bool(largest <= SETTLED_RATIO * np.median(half_gaps(new, sample)))


def center_movement(old: np.ndarray, new: np.ndarray) -> CenterMovement:
    """The :class:`CenterMovement` from centres ``old`` to ``new`` (both k x d)."""
    shift = _shifts(old, new) * (1.0 + _SHIFT_SLACK)
    if len(new) > MAX_CLUSTERS_FOR_HALF_GAPS:
        return CenterMovement(shift=shift, half_gap=np.zeros(len(new)))
    return CenterMovement(shift=shift, half_gap=half_gaps(new))


@dataclass
class BoundsSchedule:
    """Which iterations of one run keep Hamerly bounds next to the chunks.

    Parameters
    ----------
    mode : {"off", "always", "settled", "closing", "moved"}
        Never, in every iteration, or once the centres settle (see
        :func:`kmeans_dask.backends.resolve_algorithm`); "closing" and
        "moved" keep none either.
    """

    mode: str
    run: str = field(default_factory=lambda: uuid.uuid4().hex)
    """Tags the bounds of this run in the workers' memos."""
    last_centers: np.ndarray | None = None
    """The centres of the last iteration run."""
    left_bounds: bool = False
    """Whether that iteration left bounds next to the chunks."""

    def ticket(
        self, iteration: int, centers: np.ndarray, keep: bool = True
    ) -> BoundsTicket | None:
        """Bounds for ``iteration`` over ``centers`` (seeded afresh if the last one had none)."""
        if self.mode in ("off", "closing", "moved"):
            return None
        if self.mode == "settled" and (
            self.last_centers is None or not centers_settled(self.last_centers, centers)
        ):
            return None
        movement = center_movement(self.last_centers, centers) if self.left_bounds else None
        return BoundsTicket(self.run, iteration, movement, keep)

    def ran(self, centers: np.ndarray, ticket: BoundsTicket | None) -> None:
        """Record that an iteration over ``centers`` ran with ``ticket``."""
        self.last_centers = centers
        self.left_bounds = ticket is not None

    def final_ticket(self, iteration: int, centers: np.ndarray) -> BoundsTicket | None:
        """Bounds for the final pass: those the last iteration left, never seeded afresh."""
        return self.ticket(iteration, centers, keep=False) if self.left_bounds else None
