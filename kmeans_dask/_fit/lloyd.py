"""The distributed Lloyd loop: map partial statistics, tree-reduce, update.

Each iteration sends the centres (k x d) once, maps
:func:`~kmeans_dask._worker.tasks.chunk_stats` over the worker-resident chunks
(through the fit's actors, or as tasks) and reduces the (sums, counts,
inertia) triples in a fixed tree. Only
those small arrays cross the network. The same update rule also drives a
local loop over an in-memory array (used to refine k-means|| candidates).
"""

from __future__ import annotations

import operator
import time
import uuid
from collections.abc import Callable, Hashable, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
from distributed import Client, Future

from kmeans_dask._engine.mapreduce import map_chunks, send, task_keys, tree_reduce
from kmeans_dask._engine.placement import DistributedData
from kmeans_dask._fit.bounds_schedule import BoundsSchedule
from kmeans_dask._fit.interrupts import interrupt_point
from kmeans_dask._worker.bounds import BoundsTicket
from kmeans_dask._worker.chunks import Chunk
from kmeans_dask._worker.host_ops import host_ops, statistics_and_labels
from kmeans_dask._worker.results import (
    ClusterStats,
    RankedRows,
    combine_stats,
    merge_top,
    statistics_nbytes,
)
from kmeans_dask._worker.tasks import (
    chunk_labels,
    chunk_stats,
    farthest_rows,
    kept_labels,
    stats_from_candidates,
    stats_from_moved_centers,
    stats_keeping_labels,
)
from kmeans_dask.backends import candidate_search, closing_search

if TYPE_CHECKING:
    from kmeans_dask.backends.approximate import CandidateBackend


@dataclass(frozen=True)
class IterationRecord:
    """What happened in one Lloyd iteration."""

    iteration: int
    """1-based iteration number."""
    inertia: float
    """Weighted inertia of the assignment to the centres entering the iteration."""
    center_shift: float
    """Sum over clusters of the squared distance each centre moved."""
    n_empty: int
    """Clusters that received no weight and were relocated."""
    seconds: float
    """Wall time of the iteration."""


class History(list):
    """The :class:`IterationRecord` of every iteration, shown as a table.

    A plain list otherwise; ``to_pandas()`` gives a DataFrame, and notebooks
    render it as an HTML table.
    """

    _COLUMNS = ("iteration", "inertia", "center_shift", "n_empty", "seconds")

    def to_pandas(self):
        """The history as a ``pandas.DataFrame`` indexed by iteration."""
        import pandas

        frame = pandas.DataFrame([asdict(record) for record in self], columns=self._COLUMNS)
        return frame.set_index("iteration")

    def _rows(self) -> list[tuple[str, ...]]:
        return [
            (
                str(r.iteration),
                f"{r.inertia:.6g}",
                f"{r.center_shift:.3g}",
                str(r.n_empty),
                f"{r.seconds:.4f}",
            )
            for r in self
        ]

    def __str__(self) -> str:
        rows = [self._COLUMNS, *self._rows()]
        widths = [max(len(row[i]) for row in rows) for i in range(len(self._COLUMNS))]
        return "\n".join(
            "  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) for row in rows
        )

    def _repr_html_(self) -> str:
        head = "".join(f"<th>{c}</th>" for c in self._COLUMNS)
        body = "".join(
            "<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in self._rows()
        )
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


@dataclass
class LloydResult:
    centers: np.ndarray
    inertia: float
    n_iter: int
    history: list[IterationRecord]
    cluster_weights: np.ndarray
    """(k,) total weight assigned to each final centre."""
    labels: list[Future] | list[Any] = field(default_factory=list)
    """Per-chunk labels of the final centres (distributed runs only): futures,
    or the arrays themselves where they go to the client (:func:`_labels_kept`)."""
    converged: bool = True
    """Whether the last centre shift was within the tolerance (else ``max_iter`` ended it)."""

    @property
    def n_nonempty(self) -> int:
        return int((self.cluster_weights > 0).sum())


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
#: (1.3 s instead of 0.6 s).
APPROXIMATE_MOVED_MAX_SHARE = 0.125
APPROXIMATE_MOVED_MAX_SHARE_WITH_TABLE = 0.0625

#: A row closer to its centre than this share of their norms sits on the
#: centre up to rounding: the float64 mean of ``n`` equal rows can differ
#: from them by about ``n * 2**-53`` of their size (typically ``sqrt(n)``
#: times that), so up to 2**21 equal rows summed in one chunk stay within it.
#: (Float32 rows are summed exactly, so their mean is exact.)
ON_CENTER_RELATIVE_DISTANCE = 2.0**-32


def off_center(far: RankedRows, centers: np.ndarray) -> RankedRows:
    """The leading rows of ``far`` that are farther than rounding from their centre.

    ``far`` is ranked farthest first, so the rows kept are a prefix. When the
    farthest row sits on its centre, every row does (more clusters than
    distinct rows), and relocating an empty cluster would only swap equal
    points back and forth: scikit-learn skips it then too (its #28055).
    """
    rows = far.rows.astype(np.float64)
    assigned = centers[np.maximum(far.labels, 0)].astype(np.float64)
    squared_norms = np.einsum("ij,ij->i", rows, rows) + np.einsum("ij,ij->i", assigned, assigned)
    on_center = far.score <= ON_CENTER_RELATIVE_DISTANCE**2 * squared_norms
    return far.head(int(np.argmax(on_center)) if on_center.any() else len(on_center))


def relocation_pays(history: Sequence[IterationRecord], inertia: float) -> bool:
    """Whether empty clusters may still be relocated in this iteration.

    Moving an empty cluster onto a row at distance ``d > 0`` lowers the
    inertia by at least that row's ``w * d``, and a Lloyd step never raises
    it, so after an iteration that relocated, the next inertia is strictly
    lower. Once it is not (rounding, rows of weight 0, an approximate
    search), relocating makes no progress and could cycle until
    ``max_iter``: from then on the run leaves empty clusters where they are.
    Derived from the history alone, so a resumed run decides the same.
    """
    inertias = [record.inertia for record in history] + [inertia]
    return not any(
        record.n_empty and later >= record.inertia
        for record, later in zip(history, inertias[1:], strict=True)
    )


def relocate_empty_clusters(stats: ClusterStats, far: RankedRows, empty: np.ndarray) -> None:
    """Move each empty cluster onto one of the rows farthest from its centre.

    As in scikit-learn, the row leaves its old cluster (its weighted sum and
    weight are subtracted) and becomes the sole member of the empty one.
    Modifies ``stats`` in place.
    """
    for cluster, row, weight, old in zip(empty, far.rows, far.weights, far.labels, strict=False):
        stats.sums[old] -= weight * row
        stats.counts[old] -= weight
        stats.sums[cluster] = weight * row
        stats.counts[cluster] = weight


def new_centers(stats: ClusterStats, old_centers: np.ndarray, far: RankedRows | None, empty):
    """Weighted means of the clusters; a cluster left with no weight keeps its centre.

    A relocated cluster whose farthest row has weight 0 is placed on that row.
    """
    centers = old_centers.astype(np.float64)
    filled = (stats.counts > 0)[:, None]
    # In place, without copies of the filled rows (16 MiB each at k = 16384, d = 128).
    np.divide(stats.sums, stats.counts[:, None], out=centers, where=filled)
    if far is not None:
        for cluster, row, weight in zip(empty, far.rows, far.weights, strict=False):
            if weight == 0:
                centers[cluster] = row
    return centers.astype(old_centers.dtype)


def _update(
    stats: ClusterStats,
    centers: np.ndarray,
    find_far: Callable[[int], RankedRows],
    relocate: bool = True,
) -> tuple[np.ndarray, int]:
    """New centres from an iteration's statistics; also how many clusters were relocated."""
    empty = np.flatnonzero(stats.counts <= 0)
    far = None
    if empty.size and relocate:
        far = off_center(find_far(empty.size), centers)
        empty = empty[: len(far.rows)]
        relocate_empty_clusters(stats, far, empty)
    else:
        empty = empty[:0]
    return new_centers(stats, centers, far, empty), int(empty.size)


def farthest(
    client: Client, data: DistributedData, centers: np.ndarray, backend: str, count: int
) -> RankedRows:
    """The ``count`` rows of the distributed data farthest from the centre ``backend`` assigns."""
    return data.map_reduce(
        client,
        farthest_rows,
        merge_top,
        centers,
        backend,
        count,
        name="kmeans-far",
        leading=(count,),
    )


def center_shift(old: np.ndarray, new: np.ndarray) -> float:
    diff = new.astype(np.float64)
    diff -= old  # cast to float64 element by element, as a copy would be
    return float(np.einsum("ij,ij->", diff, diff))


def stopping_message(history: Sequence[IterationRecord], tol: float, max_iter: int) -> str:
    """Why a run stopped, worded as scikit-learn's verbose output."""
    if not history:
        return "No iteration run."
    last = history[-1]
    if last.center_shift == 0:
        return f"Converged at iteration {last.iteration}: strict convergence."
    if last.center_shift <= tol:
        return (
            f"Converged at iteration {last.iteration}: center shift {last.center_shift:.6g} "
            f"within tolerance {tol:.6g}."
        )
    return (
        f"Stopped at max_iter={max_iter} without converging: center shift "
        f"{last.center_shift:.6g} above tolerance {tol:.6g}."
    )


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
        previous one (:func:`_statistics_from_kept_labels`); the others, and
        chunks whose kept labels were lost, search with IVF ("closing"
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
        moved since alone, while few did (:func:`_statistics_from_kept_labels`).
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
        after_exact = last_search == exact_backend
        exact_labels_kept = _exact_labels_kept(
            data, schedule.mode, ticket, last_search, search, final_backend
        )
        among_moved = _among_moved(
            data, schedule.mode, moved, k, exact_labels_kept, neighbours is not None
        )
        if among_moved:
            stats = _moved_centers_statistics(
                client,
                data,
                (previous_centers, centers),
                moved,
                exact_backend,
                (labels_tag, iteration),
                "kmeans-assign",
            )
        elif iteration > first_iteration and _scans_candidates(
            candidates, settled, after_exact, (previous_centers, centers)
        ):
            settled = True
            stats, neighbours = _candidate_statistics(
                client,
                data,
                candidates,
                (previous_centers, centers),
                neighbours,
                search,
                (labels_tag, iteration),
                "kmeans-assign",
                after_exact,
            )
        else:
            stats = _statistics(
                client, data, centers, search, ticket, "kmeans-assign", (labels_tag, iteration)
            )
        schedule.ran(centers, ticket)
        last_search = search
        # An empty cluster moves onto a row farthest from the centre the
        # iteration assigned it (its nearest, when the search is exact): the
        # chunks report such rows, with the labels the statistics counted
        # them under. An approximate search is not redone exactly for it.
        find_far = partial(_farthest_rows, client, data, centers, search, stats.farthest)
        updated, n_empty = _update(
            stats, centers, find_far, relocation_pays(history, stats.inertia)
        )
        shift = center_shift(centers, updated)
        unchanged = n_empty == 0 and updated.tobytes() == centers.tobytes()
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
        labels = _labels_kept(
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
        among_moved = _among_moved(
            data, schedule.mode, moved, k, labels_kept, neighbours is not None
        )
        # An approximate final pass ("exact_final": False) from this call's kept labels.
        candidates = candidate_search(final_backend) if data.persisted else None
        after_exact = last_search == exact_backend
        if among_moved:
            tag = (labels_tag, iteration + 1)
            final = _moved_centers_statistics(
                client,
                data,
                (previous_centers, centers),
                moved,
                exact_backend,
                tag,
                "kmeans-final-stats",
            )
            labels = _labels_kept(client, data, centers, final_backend, tag)
        elif iteration >= first_iteration and _scans_candidates(
            candidates, settled, after_exact, (previous_centers, centers)
        ):
            tag = (labels_tag, iteration + 1)
            final, _ = _candidate_statistics(
                client,
                data,
                candidates,
                (previous_centers, centers),
                neighbours,
                final_backend,
                tag,
                "kmeans-final-stats",
                after_exact,
            )
            labels = _labels_kept(client, data, centers, final_backend, tag)
        else:
            final, labels = _final_pass(client, data, centers, final_backend, final_ticket)
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
    last update moved few centres (``moved_few``, :func:`few_moved`): from an exact pass, the
    next ones search each row among the moved centres alone
    (:func:`_statistics_from_kept_labels`), the final pass included.
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
    bounds: str, moved: np.ndarray | None, n_clusters: int, table_at_hand: bool = False
) -> bool:
    """Whether a pass without an exact final pass ("moved" ``bounds``) searches each
    row from its last label among the ``moved`` centres alone
    (:data:`APPROXIMATE_MOVED_MAX_SHARE`, or the smaller share after it when a
    candidate pass has made a neighbour table, ``table_at_hand``)."""
    max_share = (
        APPROXIMATE_MOVED_MAX_SHARE_WITH_TABLE if table_at_hand else APPROXIMATE_MOVED_MAX_SHARE
    )
    return bounds == "moved" and few_moved(moved, n_clusters, max_share)


def _among_moved(
    data: DistributedData,
    bounds: str,
    moved: np.ndarray | None,
    n_clusters: int,
    exact_labels_kept: bool,
    table_at_hand: bool,
) -> bool:
    """Whether a pass searches each row from the label the last pass kept among the
    ``moved`` centres alone: from approximate labels ("moved" ``bounds``,
    :func:`approximate_moved_few`, ``table_at_hand`` when a candidate pass has
    made a neighbour table), or from an exact pass's (``exact_labels_kept``,
    :func:`_exact_labels_kept`) while :func:`few_moved`."""
    return (
        data.persisted and approximate_moved_few(bounds, moved, n_clusters, table_at_hand)
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
    searching each row among the moved centres alone (:func:`_statistics_from_kept_labels`).

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


def _statistics(
    client: Client,
    data: DistributedData,
    centers: np.ndarray,
    backend: str,
    ticket: BoundsTicket | None,
    name: str,
    labels_tag: Hashable | None = None,
) -> ClusterStats:
    """One assignment pass's statistics, combined on the cluster up to the root if large.

    With ``labels_tag``, persisted chunks keep their rows' labels under it
    (:func:`~kmeans_dask._worker.tasks.stats_keeping_labels`), for
    :func:`_labels_kept`; streamed chunks keep nothing.
    """
    keep = labels_tag is not None and data.persisted
    return data.map_reduce(
        client,
        stats_keeping_labels if keep else chunk_stats,
        combine_stats,
        centers,
        backend,
        ticket,
        *((labels_tag,) if keep else ()),
        name=name,
        result_bytes=statistics_nbytes(*centers.shape),
    )


def _statistics_from_kept_labels(
    client: Client,
    data: DistributedData,
    task: Callable[..., ClusterStats],
    centers: np.ndarray,
    search: str,
    tag: tuple[str, int],
    how: tuple[np.ndarray, ...],
    name: str,
) -> ClusterStats:
    """A pass's statistics, each row searched from the label the previous pass kept
    next to its chunk under ``(tag[0], tag[1] - 1)``; its new label is kept under ``tag``.

    ``task`` is :func:`~kmeans_dask._worker.tasks.stats_from_candidates`
    (``how``: the neighbour table; each row among its previous centre's
    neighbours) or :func:`~kmeans_dask._worker.tasks.stats_from_moved_centers`
    (``how``: the moved centres and their positions before the move, after
    an exact pass; each row whose centre did not move, or moved nearer to
    it, among those alone).
    """
    return data.map_reduce(
        client,
        task,
        combine_stats,
        centers,
        search,
        tag,
        (tag[0], tag[1] - 1),
        *how,
        name=name,
        result_bytes=statistics_nbytes(*centers.shape),
    )


def _moved_centers_statistics(
    client: Client,
    data: DistributedData,
    previous_and_centers: tuple[np.ndarray, np.ndarray],
    moved: np.ndarray,
    search: str,
    tag: tuple[str, int],
    name: str,
) -> ClusterStats:
    """A moved-centre pass (:func:`_statistics_from_kept_labels`) after the centres
    ``moved`` left ``previous_and_centers[0]`` for ``[1]``: the tasks get the moved
    centres and where they were."""
    previous, centers = previous_and_centers
    return _statistics_from_kept_labels(
        client,
        data,
        stats_from_moved_centers,
        centers,
        search,
        tag,
        (moved, previous[moved]),
        name,
    )


def _candidate_statistics(
    client: Client,
    data: DistributedData,
    candidates: CandidateBackend,
    previous_and_centers: tuple[np.ndarray, np.ndarray],
    neighbours: np.ndarray | None,
    search: str,
    tag: tuple[str, int],
    name: str,
    after_exact: bool,
) -> tuple[ClusterStats, np.ndarray]:
    """A candidate pass (:func:`_statistics_from_kept_labels`) after the centres moved
    from ``previous_and_centers[0]`` to ``[1]``, and its neighbour table (refined
    from ``neighbours``, the last pass's, if any), for the next pass. Right
    after an exact pass (``after_exact``) no row goes to IVF for its centre's
    move, and a table made afresh is wider (:meth:`CandidateBackend.neighbours`,
    :meth:`CandidateBackend.table`)."""
    previous, centers = previous_and_centers
    neighbours = candidates.neighbours(centers, neighbours, wide=after_exact)
    table = candidates.table(centers, previous, neighbours, after_exact=after_exact)
    stats = _statistics_from_kept_labels(
        client, data, stats_from_candidates, centers, search, tag, (table,), name
    )
    return stats, neighbours


def _labels_kept(
    client: Client,
    data: DistributedData,
    centers: np.ndarray,
    backend: str,
    tag: Hashable,
    spent_bounds: Hashable | None = None,
) -> list[Future] | list[Any]:
    """Per-chunk labels of the pass that kept them under ``tag`` (none if streamed).

    Futures, or, where the labels go to the client and actors serve the
    chunks, the arrays themselves, handed over in one call per worker rather
    than a task per chunk. A chunk whose worker lost them (a task run
    elsewhere, a chunk recomputed) labels its rows afresh with ``centers``,
    the centres of that pass. The Hamerly bounds kept under ``spent_bounds``
    are dropped.
    """
    if not data.persisted:
        return []
    engine = data.hosts(client) if data.labels_to_client else None
    if engine is not None:
        return engine.map(kept_labels, centers, backend, tag, spent_bounds)
    return map_chunks(
        client,
        kept_labels,
        data.chunks,
        send(client, centers, "kmeans-centers"),
        backend,
        tag,
        spent_bounds,
        name="kmeans-labels",
    )


def _farthest_rows(
    client: Client,
    data: DistributedData,
    centers: np.ndarray,
    backend: str,
    reported: RankedRows,
    count: int,
) -> RankedRows:
    """The ``count`` rows farthest from the centre ``backend`` assigns: ``reported`` if enough."""
    if len(reported.index) >= count:
        return merge_top(count, reported)
    return farthest(client, data, centers, backend, count)


def _final_pass(
    client: Client,
    data: DistributedData,
    centers: np.ndarray,
    backend: str,
    ticket: BoundsTicket | None,
) -> tuple[ClusterStats, list[Future]]:
    """Statistics of the final centres and per-chunk label futures (none if streamed).

    Through the actors, the labels stay on the workers until one task per
    chunk hands them over; the fit need not wait for those tasks.
    """
    if not data.persisted:  # streamed chunks keep no labels
        return _statistics(client, data, centers, backend, ticket, "kmeans-final-stats"), []
    chunks = data.chunks
    engine = data.hosts(client)
    if engine is not None:
        tag = uuid.uuid4().hex
        final = engine.map_reduce(
            stats_keeping_labels,
            combine_stats,
            centers,
            backend,
            ticket,
            tag,
            result_bytes=statistics_nbytes(*centers.shape),
        )
        return final, _labels_kept(client, data, centers, backend, tag)
    centers_future = send(client, centers, "kmeans-centers")
    pairs = map_chunks(
        client, chunk_labels, chunks, centers_future, backend, ticket, name="kmeans-label"
    )
    labels = [
        client.submit(operator.getitem, pair, 0, key=key)
        for pair, key in zip(pairs, task_keys("kmeans-labels", len(pairs)), strict=True)
    ]
    stats_parts = [
        client.submit(operator.getitem, pair, 1, key=key)
        for pair, key in zip(pairs, task_keys("kmeans-final-stats", len(pairs)), strict=True)
    ]
    final = tree_reduce(
        client,
        combine_stats,
        stats_parts,
        name="kmeans-reduce",
        result_bytes=statistics_nbytes(*centers.shape),
    )
    return final, labels


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
        updated, n_empty = _update(
            stats, centers, find_far, relocation_pays(history, stats.inertia)
        )
        shift = center_shift(centers, updated)
        centers = updated
        if shift <= tol:
            break
        history.append(IterationRecord(iteration, stats.inertia, shift, n_empty, 0.0))
    return centers
