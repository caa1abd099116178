"""The distributed Lloyd loop: which pass each iteration makes, then the update.

Each iteration chooses its pass (:mod:`kmeans_dask._fit.passes`): every row
searched, or each row from the label the last pass kept next to its chunk,
among the centres that moved or among its centre's neighbours. It maps the
pass over the worker-resident chunks (through the fit's actors, or as
tasks), reduces the (sums, counts, inertia) triples in a fixed tree, and
updates the centres (:mod:`kmeans_dask._fit.update`). Only those small
arrays cross the network. The same update rule also drives a local loop over
an in-memory array (used to refine k-means|| candidates).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
from distributed import Client

from kmeans_dask._engine.placement import DistributedData
from kmeans_dask._fit import passes
from kmeans_dask._fit.bounds_schedule import BoundsSchedule
from kmeans_dask._fit.history import IterationRecord, LloydResult
from kmeans_dask._fit.interrupts import interrupt_point
from kmeans_dask._fit.update import (
    center_moves,
    center_shift,
    relocation_pays,
    update_centers,
)
from kmeans_dask._worker.bounds import BoundsTicket
from kmeans_dask._worker.chunks import Chunk
from kmeans_dask._worker.host_ops import host_ops, statistics_and_labels
from kmeans_dask._worker.results import ClusterStats, RankedRows
from kmeans_dask._worker.tasks import farthest_rows
from kmeans_dask.backends import candidate_search, closing_search

if TYPE_CHECKING:
    from collections.abc import Sequence

    from kmeans_dask.backends.approximate import CandidateBackend


#: A pass after an exact one (an iteration or the final pass) searches each
#: row whose centre did not move among the centres that moved in the last
#: update alone, while at most this share of them moved, with at least
#: :data:`MOVED_CENTERS_MIN_CLUSTERS` centres (at least
#: :data:`MOVED_CENTERS_MANY_CLUSTERS`: :data:`MOVED_CENTERS_MAX_SHARE_MANY`).
#: Measured per chunk on the AMD EPYC (one thread, ``numpy`` search,
#: ``scripts/bench_moved_centers.py``): with a quarter of the centres moved
#: the pass costs 0.44-0.68 of a full one at k = 256 to 16384, and 0.98-1.21
#: at k = 64, where gathering the rows costs as much as searching them all;
#: with half of them moved, 0.95 at k = 256, 0.74-0.75 at k = 2048 and 16384.
MOVED_CENTERS_MAX_SHARE = 0.25
MOVED_CENTERS_MIN_CLUSTERS = 128
MOVED_CENTERS_MANY_CLUSTERS = 1024
MOVED_CENTERS_MAX_SHARE_MANY = 0.5
#: Without an exact final pass ("moved" bounds), a pass searches each row
#: from the last pass's approximate label among the moved centres alone
#: while at most this share of the centres moved: the pass it replaces is a
#: candidate or IVF pass, not a full exact one. A moved-centre pass costs
#: about twice the moved share of a full pass (the table above), a candidate
#: pass 0.15-0.26 of one, and the first candidate pass also builds the
#: neighbour table: through ``KMeans.fit`` (100k x 128, k = 4096 and 16384,
#: RESULTS.md, "Moved centres without an exact final pass"), 1/8 and 1/4
#: chose the same passes. Once a candidate pass has made the table, the
#: next candidate pass costs less than a moved-centre pass over more than a
#: sixteenth of the centres: at k = 4096 the last iteration took 0.08-0.09 s
#: instead of 0.16-0.17 s (RESULTS.md, "An exact first iteration"); at
#: k = 16384, without a table, 1/16 made the third iteration build one
#: (1.3 s instead of 0.6 s). Since candidate passes hand back their rows'
#: distances and prefetch their rows (2026-12-07), a moved-centre pass from
#: a candidate pass's labels pays below a sixty-fourth: at k = 4096 the
#: final pass over the 4% of the centres the last update moved took 0.14-0.18
#: s where a candidate pass took 0.12-0.14 s, and 10-iteration fits 1.46 s
#: instead of 1.59 s (medians of 4; RESULTS.md, "Session 25").
APPROXIMATE_MOVED_MAX_SHARE = 0.125
APPROXIMATE_MOVED_MAX_SHARE_WITH_TABLE = 1 / 64
#: The same where the rows keep their own candidates
#: (:meth:`~kmeans_dask.backends.approximate.CandidateBackend.row_candidates`):
#: at k = 16384 a pass over them cost about as much as a moved-centre pass
#: over a sixtieth of the centres (RESULTS.md, "Per-row candidates").
APPROXIMATE_MOVED_MAX_SHARE_WITH_OWN = 1 / 64
#: Where the rows keep their own candidates, every row also scores the centres
#: whose clusters emptied since they were kept (moved onto far rows, they are
#: nobody's candidates): while these number at most this many times the
#: candidates per row; beyond, a pass keeps each row's candidates afresh.
EVERYONE_MAX_CANDIDATES_FACTOR = 2


def lloyd(
    client: Client,
    data: DistributedData,
    centers: np.ndarray,
    *,
    max_iter: int,
    tol: float | Callable[[], float],
    backend: str,
    final_backend: str | None = None,
    bounds: str = "off",
    exact_backend: str | None = None,
    history: Sequence[IterationRecord] = (),
    on_iteration: Callable[[np.ndarray, list[IterationRecord]], None] | None = None,
) -> LloydResult:
    """Run Lloyd iterations on distributed chunks until ``tol`` or ``max_iter``.

    Parameters
    ----------
    tol : float or callable
        Absolute threshold on :func:`center_shift` (already scaled by the
        data's mean variance, as scikit-learn does), or a function giving it,
        called only once a pass has run (the first pass checks the data and
        learns its variance).
    backend : str
        Search spec of the iterations (see :func:`kmeans_dask.backends.get_backend`);
        the one ``max_iter`` ends uses
        :func:`~kmeans_dask.backends.closing_search` of it (more IVF probes).
        With a "candidates" search over persisted chunks, this call's first
        iteration searches with ``exact_backend`` where
        :meth:`~kmeans_dask.backends.approximate.CandidateBackend.first_exact`
        says so, and every later iteration that follows it or whose centres
        have settled moves each row among the centres nearest to its
        previous one
        (:func:`~kmeans_dask._fit.passes.statistics_from_kept_labels`); the
        others, and chunks whose kept labels were lost, search with IVF ("closing"
        ``bounds``: unless the centres moved little, see ``bounds``).
    final_backend : str, optional
        Search spec of the final pass; an exact one when the iterations are
        approximate, so labels and inertia are those of the nearest centres.
        Defaults to ``backend``.
    bounds : {"off", "always", "settled", "closing", "moved"}
        When to keep Hamerly bounds next to the chunks
        (:mod:`kmeans_dask._worker.bounds`) so rows whose centre cannot change skip
        the search: never, in every iteration, or once the centres settle;
        "closing" (with an approximate ``backend``) keeps none, but searches
        with the exact ``final_backend`` in the iteration ``max_iter`` ends
        and in those after an update that moved few centres. Bounds need a
        search that provides them ("numpy") and worker-resident chunks.
        Unless "off", a pass after an exact one whose labels stay with the
        chunks, without bounds, searches each row among the centres that
        moved since alone, while few did
        (:func:`~kmeans_dask._fit.passes.statistics_from_kept_labels`).
        "moved" (with an approximate ``backend`` and ``final_backend``)
        searches that way, with ``exact_backend``, from the labels of the
        last approximate pass, while very few centres moved
        (:func:`approximate_moved_few`): the iterations' and the final
        pass's labels stay approximate, at least as near as the last pass's.
    exact_backend : str, optional
        The exact search of every pass among the moved centres. Defaults to
        ``final_backend``, which is exact unless ``bounds`` is "moved" (which
        needs it given).
    history : sequence of IterationRecord
        Iterations already done (when resuming from a checkpoint): ``centers``
        are the centres after the last of them, and the loop continues as if
        it had never stopped.
    on_iteration : callable, optional
        Called after every iteration with the new centres and the history.

    Returns
    -------
    LloydResult
        Final centres, the inertia and labels *of those centres*, and the
        history. They come from one more assignment pass after the last
        update, unless that update left every centre as it was, bit for bit
        (strict convergence, when scikit-learn skips its last E-step too):
        the last iteration's pass then assigned the rows to the final
        centres already, with the same search. The labels stay in worker
        memory, as futures; streamed (out-of-core) data keeps none, and its
        labels are computed lazily.
    """
    history = list(history)
    final_backend = final_backend or backend
    if bounds == "moved" and exact_backend is None:
        raise ValueError('bounds="moved" needs the exact search of its passes (exact_backend)')
    exact_backend = exact_backend or final_backend
    schedule = BoundsSchedule(bounds)
    converged = bool(history) and history[-1].center_shift <= _value(tol)
    iteration = len(history)
    # The labels of each iteration's pass stay with the chunks under this tag.
    labels_tag = uuid.uuid4().hex
    last_pass = None
    first_iteration = len(history) + 1
    previous_centers, neighbours = centers, None
    last_search = None
    # Once a pass has scanned candidates the centres count as settled for the
    # rest of the call: their moves shrink, and the rows of one that still
    # moves far go to IVF (CandidateBackend.table).
    settled = False
    # Whether a pass of this call has kept each row's own candidates, and the
    # centres every row scores besides them: those whose clusters emptied (and
    # moved onto far rows) since, which are nobody's candidates.
    own_kept = False
    emptied = far_movers = np.empty(0, dtype=np.int32)
    # The statistics of the last pass, to which a candidate pass adds its changes.
    counted = None
    k = len(centers)
    for iteration in range(first_iteration, 0 if converged else max_iter + 1):
        start = time.perf_counter()
        closing = iteration == max_iter
        ticket = schedule.ticket(iteration, centers)
        moved = moved_centers(previous_centers, centers) if iteration > first_iteration else None
        moved_few = few_moved(moved, k)
        search = _iteration_search(backend, final_backend, schedule.mode, closing, moved_few, k)
        candidates = candidate_search(search) if data.persisted else None
        if (
            iteration == first_iteration
            and candidates is not None
            and candidates.first_exact(*centers.shape)
        ):
            search, candidates = exact_backend, None
        own = (
            candidates is not None
            and data.scans_candidates
            and candidates.row_candidates(*centers.shape)
        )
        after_exact = last_search == exact_backend
        exact_labels_kept = _exact_labels_kept(
            data, schedule.mode, ticket, last_search, search, final_backend
        )
        among_moved = _among_moved(
            data, schedule.mode, moved, k, exact_labels_kept, _approximate_share(neighbours, own)
        )
        if among_moved:
            stats = passes.moved_centers_statistics(
                client,
                data,
                (previous_centers, centers),
                moved,
                exact_backend,
                (labels_tag, iteration),
                "kmeans-assign",
                # From approximate labels: the chunks send what they changed.
                counted=None if exact_labels_kept else counted,
            )
        elif own:
            m = candidates.candidates_per_row(*centers.shape)
            # Too many centres for every row to score: each row's candidates afresh.
            first = not own_kept or emptied.size > EVERYONE_MAX_CANDIDATES_FACTOR * m
            if first:
                emptied = far_movers = emptied[:0]
            everyone = np.union1d(emptied, far_movers).astype(np.int32)
            stats = passes.row_candidate_statistics(
                client,
                data,
                centers,
                search,
                (labels_tag, iteration),
                m,
                "kmeans-assign",
                first=first,
                everyone=everyone,
                counted=counted,
            )
            own_kept = True
        elif iteration > first_iteration and _scans_candidates(
            candidates, settled, after_exact, (previous_centers, centers)
        ):
            settled = True
            stats, neighbours = passes.candidate_statistics(
                client,
                data,
                candidates,
                (previous_centers, centers),
                neighbours,
                search,
                (labels_tag, iteration),
                "kmeans-assign",
                after_exact,
                counted,
            )
        else:
            stats = passes.search_statistics(
                client, data, centers, search, ticket, "kmeans-assign", (labels_tag, iteration)
            )
        schedule.ran(centers, ticket)
        counted = stats
        last_search = search
        # An empty cluster moves onto a row farthest from the centre the
        # iteration assigned it (its nearest, when the search is exact): the
        # chunks report such rows, with the labels the statistics counted
        # them under. An approximate search is not redone exactly for it.
        find_far = partial(
            passes.farthest_or_reported, client, data, centers, search, stats.farthest
        )
        if own_kept:
            emptied = np.union1d(emptied, np.flatnonzero(stats.counts <= 0)).astype(np.int32)
        updated, n_empty = update_centers(
            stats, centers, find_far, relocation_pays(history, stats.inertia)
        )
        moves = center_moves(centers, updated)
        if own_kept:
            far_movers = _far_movers(moves, FAR_MOVERS_PER_CANDIDATE * m)
        shift = float(moves.sum())
        unchanged = n_empty == 0 and np.array_equal(updated, centers)
        last_pass = LastPass(stats, search, (labels_tag, iteration)) if unchanged else None
        previous_centers, centers = centers, updated
        record = IterationRecord(
            iteration, stats.inertia, shift, n_empty, time.perf_counter() - start
        )
        history.append(record)
        if on_iteration is not None:
            on_iteration(centers, history)
        if shift <= _value(tol):
            break
        interrupt_point()
    if last_pass is not None and last_pass.search == final_backend:
        final = last_pass.stats
        # No final pass reads the bounds the last iteration left: drop them.
        spent_bounds = (schedule.run, iteration) if schedule.left_bounds else None
        labels = passes.labels_kept(
            client, data, centers, final_backend, last_pass.labels_tag, spent_bounds
        )
    else:
        # The final pass uses bounds the last iteration left; it never seeds them.
        final_ticket = (
            schedule.final_ticket(iteration + 1, centers) if last_search == final_backend else None
        )
        labels_kept = _exact_labels_kept(
            data, schedule.mode, final_ticket, last_search, final_backend, final_backend
        )
        moved = moved_centers(previous_centers, centers) if iteration >= first_iteration else None
        # An approximate final pass ("exact_final": False) from this call's kept labels.
        candidates = candidate_search(final_backend) if data.persisted else None
        own = own_kept and candidates is not None
        among_moved = _among_moved(
            data, schedule.mode, moved, k, labels_kept, _approximate_share(neighbours, own)
        )
        after_exact = last_search == exact_backend
        if among_moved:
            tag = (labels_tag, iteration + 1)
            final = passes.moved_centers_statistics(
                client,
                data,
                (previous_centers, centers),
                moved,
                exact_backend,
                tag,
                "kmeans-final-stats",
                counted=None if labels_kept else counted,
            )
            labels = passes.labels_kept(client, data, centers, final_backend, tag)
        elif own:
            tag = (labels_tag, iteration + 1)
            final = passes.row_candidate_statistics(
                client,
                data,
                centers,
                final_backend,
                tag,
                candidates.candidates_per_row(*centers.shape),
                "kmeans-final-stats",
                first=False,
                everyone=np.union1d(emptied, far_movers).astype(np.int32),
                last=True,
                counted=counted,
            )
            labels = passes.labels_kept(client, data, centers, final_backend, tag)
        elif iteration >= first_iteration and _scans_candidates(
            candidates, settled, after_exact, (previous_centers, centers)
        ):
            tag = (labels_tag, iteration + 1)
            final, _ = passes.candidate_statistics(
                client,
                data,
                candidates,
                (previous_centers, centers),
                neighbours,
                final_backend,
                tag,
                "kmeans-final-stats",
                after_exact,
                counted,
            )
            labels = passes.labels_kept(client, data, centers, final_backend, tag)
        else:
            final, labels = passes.final_pass(client, data, centers, final_backend, final_ticket)
    return LloydResult(
        centers=centers,
        inertia=final.inertia,
        n_iter=len(history),
        history=history,
        cluster_weights=final.counts,
        labels=labels,
        converged=bool(history) and history[-1].center_shift <= _value(tol),
    )


def _iteration_search(
    backend: str,
    final_backend: str,
    bounds: str,
    closing: bool,
    moved_few: bool,
    n_clusters: int,
) -> str:
    """The search of an iteration: ``backend``'s, or its closing search in the one
    ``max_iter`` ends (``closing``).

    With an approximate ``backend`` ("closing" bounds), the exact
    ``final_backend`` instead in the one ``max_iter`` ends and wherever the
    last update moved few centres (``moved_few``, :func:`few_moved`): from an
    exact pass, the next ones search each row among the moved centres alone
    (:func:`~kmeans_dask._fit.passes.statistics_from_kept_labels`), the final
    pass included.
    """
    if bounds == "closing" and (closing or moved_few):
        return final_backend
    return closing_search(backend, n_clusters) if closing else backend


def moved_centers(previous: np.ndarray, centers: np.ndarray) -> np.ndarray:
    """(m,) int32, ascending: the centres that differ from ``previous`` in any value."""
    return np.flatnonzero((previous != centers).any(axis=1)).astype(np.int32)


def few_moved(moved: np.ndarray | None, n_clusters: int, max_share: float | None = None) -> bool:
    """Whether searching among the ``moved`` centres alone pays: at most ``max_share``
    of them moved (default :data:`MOVED_CENTERS_MAX_SHARE` and the constants
    after it), from :data:`MOVED_CENTERS_MIN_CLUSTERS` centres."""
    if moved is None or n_clusters < MOVED_CENTERS_MIN_CLUSTERS:
        return False
    if max_share is None:
        many = n_clusters >= MOVED_CENTERS_MANY_CLUSTERS
        max_share = MOVED_CENTERS_MAX_SHARE_MANY if many else MOVED_CENTERS_MAX_SHARE
    return moved.size <= max_share * n_clusters


def approximate_moved_few(
    bounds: str,
    moved: np.ndarray | None,
    n_clusters: int,
    max_share: float = APPROXIMATE_MOVED_MAX_SHARE,
) -> bool:
    """Whether a pass without an exact final pass ("moved" ``bounds``) searches each
    row from its last label among the ``moved`` centres alone: at most
    ``max_share`` of them moved (:func:`_approximate_share`)."""
    return bounds == "moved" and few_moved(moved, n_clusters, max_share)


#: Centres that moved more than this many times the median move in the last update
#: (at most FAR_MOVERS_PER_CANDIDATE * m of them, the farthest) are scored by every
#: row in the next pass from the rows' own candidates: they crossed to rows whose
#: candidates, kept earlier, do not hold them. On 600 separated blobs at k = 512
#: (16 features) the fit's inertia was then 0.4% below exact Lloyd's instead of
#: 3.2% above it (1.7% above with 4 times the median); on the overlapping blobs
#: at k = 16384 nothing changed (RESULTS.md, "Per-row candidates").
FAR_MOVE_FACTOR = 2.0
FAR_MOVERS_PER_CANDIDATE = 1


def _far_movers(moves: np.ndarray, most: int) -> np.ndarray:
    """The centres that moved far in the last update (see :data:`FAR_MOVE_FACTOR`),
    from each centre's squared move (:func:`~kmeans_dask._fit.update.center_moves`)."""
    moving = moves[moves > 0]
    if not moving.size or most < 1:
        return np.empty(0, dtype=np.int32)
    far = np.flatnonzero(moves > FAR_MOVE_FACTOR**2 * np.median(moving))
    if far.size > most:
        far = far[np.argsort(moves[far], kind="stable")[-most:]]
    return np.sort(far).astype(np.int32)


def _approximate_share(neighbours: np.ndarray | None, own: bool) -> float:
    """The largest share of moved centres for which a pass from approximate labels
    searches among the moved centres: smaller when the next candidate pass is
    cheap, once a neighbour table is made (``neighbours``) or where the rows
    keep their own candidates (``own``)."""
    if own:
        return APPROXIMATE_MOVED_MAX_SHARE_WITH_OWN
    if neighbours is not None:
        return APPROXIMATE_MOVED_MAX_SHARE_WITH_TABLE
    return APPROXIMATE_MOVED_MAX_SHARE


def _among_moved(
    data: DistributedData,
    bounds: str,
    moved: np.ndarray | None,
    n_clusters: int,
    exact_labels_kept: bool,
    approximate_share: float,
) -> bool:
    """Whether a pass searches each row from the label the last pass kept among the
    ``moved`` centres alone: from approximate labels ("moved" ``bounds``,
    :func:`approximate_moved_few` with ``approximate_share``), or from an
    exact pass's (``exact_labels_kept``, :func:`_exact_labels_kept`) while
    :func:`few_moved`."""
    return (
        data.persisted and approximate_moved_few(bounds, moved, n_clusters, approximate_share)
    ) or (exact_labels_kept and few_moved(moved, n_clusters))


def _scans_candidates(
    candidates: CandidateBackend | None,
    settled: bool,
    after_exact: bool,
    previous_and_centers: tuple[np.ndarray, np.ndarray],
) -> bool:
    """Whether a pass (not among the moved centres) scans ``candidates``: once an
    earlier pass of the call has (``settled``), right after an exact pass
    (``after_exact``), or when the centres have settled since
    ``previous_and_centers[0]`` (:meth:`CandidateBackend.settled`)."""
    if candidates is None:
        return False
    previous, centers = previous_and_centers
    return settled or after_exact or candidates.settled(centers, previous)


def _exact_labels_kept(
    data: DistributedData,
    bounds: str,
    ticket: BoundsTicket | None,
    last_search: str | None,
    search: str,
    exact: str,
) -> bool:
    """Whether a pass of ``search`` can start from the labels the last pass kept,
    searching each row among the moved centres alone
    (:func:`~kmeans_dask._fit.passes.statistics_from_kept_labels`).

    It can when the last pass of this call searched exactly with the same
    ``search`` (``exact``) and kept its labels next to the chunks (persisted
    data), no Hamerly ``ticket`` skips rows instead, and ``bounds`` is neither
    "off" (``algorithm="lloyd"`` searches every row) nor "moved" (whose final
    search, ``exact`` here, is approximate: :func:`approximate_moved_few`).
    """
    return (
        bounds not in ("off", "moved")
        and ticket is None
        and data.persisted
        and last_search == search == exact
    )


class LastPass(NamedTuple):
    """The pass of an iteration that left the centres as they were."""

    stats: ClusterStats
    search: str
    """The search it made."""
    labels_tag: tuple[str, int]
    """Under which its labels stay with the chunks (persisted data)."""


def _value(tol: float | Callable[[], float]) -> float:
    return tol() if callable(tol) else tol


def local_lloyd(
    points: np.ndarray,
    weights: np.ndarray,
    centers: np.ndarray,
    *,
    max_iter: int,
    tol: float,
    backend: str,
) -> np.ndarray:
    """Weighted Lloyd iterations on an in-memory array (no Dask involved)."""

    def find_far(count: int) -> RankedRows:
        return farthest_rows(Chunk(points, weights, 0, host_ops()), centers, backend, count)

    history: list[IterationRecord] = []
    for iteration in range(1, max_iter + 1):
        stats, _, _ = statistics_and_labels(points, weights, centers, backend)
        updated, n_empty = update_centers(
            stats, centers, find_far, relocation_pays(history, stats.inertia)
        )
        shift = center_shift(centers, updated)
        centers = updated
        if shift <= tol:
            break
        history.append(IterationRecord(iteration, stats.inertia, shift, n_empty, 0.0))
    return centers
