"""The tasks mapped over chunks: each brings its rows into memory and calls their ops.

Every function here takes a chunk (a :class:`~kmeans_dask._worker.chunks.Chunk`
or a :class:`~kmeans_dask._worker.chunks.ZarrBlock`) plus small arguments,
and returns small host results (:mod:`kmeans_dask._worker.results`), so only
centres and partial statistics cross the network. The rows are touched only
by the chunk's :class:`~kmeans_dask._worker.ops.ChunkOps`; what these tasks
add is the same for every device: capping native threads inside a worker,
and the values kept next to a chunk between passes (Hamerly bounds, the
final labels, each row's nearest k-means|| candidate).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any

import numpy as np
from array_api_compat import array_namespace

from kmeans_dask._worker.bounds import MEMO, BoundsTicket
from kmeans_dask._worker.chunks import Chunk, RowSource
from kmeans_dask._worker.memo import ChunkMemo
from kmeans_dask._worker.ops import LloydPass
from kmeans_dask._worker.results import (
    Checked,
    ChunkSummary,
    ClusterStats,
    NearestCandidate,
    RankedRows,
    StatsChange,
)
from kmeans_dask._worker.threads import limit_worker_threads


def _start_task(source: RowSource) -> Chunk:
    """Cap native threads (inside a worker) and bring the rows into memory."""
    limit_worker_threads()
    return source.load()


def summarize(source: RowSource, with_digest: bool = True) -> ChunkSummary:
    """Finiteness, column mean/M2 (for ``tol``), weight checks and digest of a chunk.

    ``with_digest=False`` leaves ``digest`` at 0, for checks that only validate.
    """
    chunk = _start_task(source)
    return chunk.ops.summarize(chunk, with_digest)


def checked_pass(
    func: Callable[..., Any], with_digest: bool, source: RowSource, *args: Any
) -> Checked:
    """``func(chunk, *args)`` and the chunk's data check (:func:`summarize`), in one pass.

    The rows are brought into memory once (a streamed block is read once)
    for both. A chunk whose rows the fit refuses (non-finite values, invalid
    weights) is only summarised: ``func`` never runs over such rows, and the
    client raises from the summaries before it uses any value.
    """
    chunk = _start_task(source)
    summary = chunk.ops.summarize(chunk, with_digest)
    return Checked((summary,), None if summary.refused else func(chunk, *args))


def _assign(
    source: RowSource,
    centers: np.ndarray,
    search: str,
    ticket: BoundsTicket | None,
    keep: bool,
    reuse: Any | None = None,
) -> LloydPass:
    """A Lloyd pass over a chunk; with a ``ticket``, through the bounds kept next to it.

    The bounds left by the previous iteration of the same run are taken from
    this process's memo (when the chunk has them) and, if ``ticket.keep``,
    this iteration's are left there for the next one. Ops that keep no
    bounds make plain passes: the bounds only ever skip work. A plain pass may
    write the labels it keeps into ``reuse`` (see ``ChunkOps.lloyd_pass``).
    """
    chunk = _start_task(source)
    if ticket is None or not chunk.ops.keeps_bounds:
        return chunk.ops.lloyd_pass(chunk, centers, search, keep_labels=keep, reuse=reuse)
    previous = MEMO.take(source, (ticket.run, ticket.iteration - 1))
    result = chunk.ops.bounded_pass(chunk, centers, search, previous, ticket.movement)
    if ticket.keep:
        MEMO.put(source, (ticket.run, ticket.iteration), result.bounds)
    return result


def chunk_stats(
    chunk: RowSource, centers: np.ndarray, search: str, ticket: BoundsTicket | None = None
) -> ClusterStats:
    """Map task of a Lloyd iteration: the chunk's partial statistics.

    With a ``ticket`` the rows' Hamerly bounds are used and kept on the worker.
    """
    return _assign(chunk, centers, search, ticket, keep=False).stats


def chunk_labels(
    chunk: RowSource, centers: np.ndarray, search: str, ticket: BoundsTicket | None = None
) -> tuple[Any, ClusterStats]:
    """Labels of the chunk's rows (its block of ``labels_``) and its statistics."""
    result = _assign(chunk, centers, search, ticket, keep=True)
    return chunk.ops.handed_over(result.labels), result.stats


#: Labels of a Lloyd pass (each iteration's, then the final pass's), kept on
#: the worker that holds their chunk until :func:`kept_labels` hands them over
#: as a task result; a chunk keeps only its latest.
LABELS: ChunkMemo[Any] = ChunkMemo()


def stats_keeping_labels(
    chunk: Chunk, centers: np.ndarray, search: str, ticket: BoundsTicket | None, tag: str
) -> ClusterStats:
    """:func:`chunk_stats`, keeping the rows' labels on the worker under ``tag``.

    They stay in the chunk's memory (on the GPU for device rows) until
    :func:`kept_labels` hands them over. The labels an earlier pass kept and
    nobody took are overwritten: a plain pass writes into them. (Bounds that
    share them belong to an iteration no later pass reads: a bounded pass
    reads only the previous iteration's, and a plain pass leaves none.)
    """
    unclaimed = LABELS.take_any(chunk)
    result = _assign(chunk, centers, search, ticket, keep=True, reuse=unclaimed)
    LABELS.put(chunk, tag, result.labels)
    return result.stats


def stats_from_candidates(
    chunk: Chunk,
    centers: np.ndarray,
    search: str,
    tag: Hashable,
    previous_tag: Hashable,
    table: np.ndarray,
) -> StatsChange:
    """Each row searched among its previous centre's neighbours; what that changed in
    the chunk's statistics (:class:`~kmeans_dask._worker.results.StatsChange`).

    The labels the run's previous iteration kept under ``previous_tag``
    give each row's previous centre; ``table`` its candidates
    (:meth:`~kmeans_dask._worker.ops.ChunkOps.candidate_pass`), and the new
    labels are written over the previous ones and kept under ``tag``. A
    chunk without them (its labels were lost with a worker, or taken by
    another pass) or whose ops scan no candidates makes the plain pass of
    ``search`` instead, keeping its labels, and returns an incomplete change
    (the client then counts the statistics of the labels kept,
    :func:`stats_of_kept_labels`): the result then depends on whether they
    were there, which a lost worker changes. (An approximate search keeps no
    Hamerly bounds: no ticket.)
    """
    return _change_from_previous_labels(
        "candidate_pass", chunk, centers, search, tag, previous_tag, table
    )


def stats_from_moved_centers(
    chunk: Chunk,
    centers: np.ndarray,
    search: str,
    tag: Hashable,
    previous_tag: Hashable,
    moved: np.ndarray,
    moved_from: np.ndarray,
) -> ClusterStats:
    """:func:`stats_keeping_labels` of the exact ``search``, each row searched from its
    previous centre: among the centres ``moved`` since (from ``moved_from``), if its
    own did not move or moved nearer to it.

    The labels kept under ``previous_tag`` must be those of an exact pass
    over the centres before the move
    (:meth:`~kmeans_dask._worker.ops.ChunkOps.moved_centers_pass`); without
    them, the plain pass of ``search`` is made, with the same result.
    """
    previous = LABELS.take(chunk, previous_tag)
    loaded = _start_task(chunk)
    if previous is None or not loaded.ops.scans_candidates:
        return stats_keeping_labels(chunk, centers, search, None, tag)
    result = loaded.ops.moved_centers_pass(loaded, centers, search, moved, moved_from, previous)
    LABELS.put(chunk, tag, result.labels)
    return result.stats


def changes_from_moved_centers(
    chunk: Chunk,
    centers: np.ndarray,
    search: str,
    tag: Hashable,
    previous_tag: Hashable,
    moved: np.ndarray,
    moved_from: np.ndarray,
) -> StatsChange:
    """:func:`stats_from_moved_centers` from approximate labels (those of a candidate
    or IVF pass): what the pass changed in the chunk's statistics, as
    :func:`stats_from_candidates` returns it (incomplete where the labels are lost)."""
    return _change_from_previous_labels(
        "moved_centers_pass",
        chunk,
        centers,
        search,
        tag,
        previous_tag,
        moved,
        moved_from,
        as_change=True,
    )


def _change_from_previous_labels(
    method: str,
    chunk: Chunk,
    centers: np.ndarray,
    search: str,
    tag: Hashable,
    previous_tag: Hashable,
    *args: Any,
    **options: Any,
) -> StatsChange:
    """What the ops' pass ``method`` changed in the chunk's statistics, from the labels
    kept under ``previous_tag``: it overwrites them with the new labels, kept under
    ``tag``. Where they are missing or the ops scan no candidates, the plain pass
    of ``search`` (keeping its labels) as an incomplete change."""
    previous = LABELS.take(chunk, previous_tag)
    loaded = _start_task(chunk)
    if previous is None or not loaded.ops.scans_candidates:
        return StatsChange.of_unknown_sums(stats_keeping_labels(chunk, centers, search, None, tag))
    change = getattr(loaded.ops, method)(loaded, centers, search, *args, previous, **options)
    LABELS.put(chunk, tag, previous)  # overwritten with the new labels
    return change


#: Each row's own candidates (:func:`stats_keeping_row_candidates`), kept next
#: to its chunk for the later passes of the same run, under the run's tag.
ROW_CANDIDATES: ChunkMemo[Any] = ChunkMemo()


def stats_keeping_row_candidates(
    chunk: Chunk, centers: np.ndarray, search: str, tag: Hashable, run: Hashable, m: int
) -> ClusterStats:
    """:func:`stats_keeping_labels` of the IVF ``search``, also keeping each row's
    ``m`` nearest centres in its nearest IVF list under ``run``, for
    :func:`stats_from_row_candidates`. Ops that scan no candidates make the
    plain pass and keep none."""
    loaded = _start_task(chunk)
    if not loaded.ops.scans_candidates:
        return stats_keeping_labels(chunk, centers, search, None, tag)
    LABELS.take_any(chunk)
    result, candidates = loaded.ops.pass_keeping_candidates(loaded, centers, search, m)
    LABELS.put(chunk, tag, result.labels)
    ROW_CANDIDATES.put(chunk, run, candidates)
    return result.stats


def stats_from_row_candidates(
    chunk: Chunk,
    centers: np.ndarray,
    search: str,
    tag: Hashable,
    previous_tag: Hashable,
    run: Hashable,
    m: int,
    everyone: np.ndarray,
    last: bool,
) -> StatsChange:
    """Each row searched among its previous centre (the label kept under
    ``previous_tag``), its own candidates, those
    :func:`stats_keeping_row_candidates` kept under ``run`` (dropped after the
    ``last`` pass of the run), and the centres ``everyone`` (int32); the new
    labels kept under ``tag``. Returns what that changed in the chunk's
    statistics (:class:`~kmeans_dask._worker.results.StatsChange`), which is
    small where few rows move.

    A chunk without its candidates (lost with a worker, a task run
    elsewhere), or whose candidates a sample of its rows finds missing too
    many nearest centres (centres still crossing between groups of rows),
    makes that pass again, keeping new ones: the result then depends on
    whether they were there, which a lost worker changes. A chunk that lost
    its previous labels too returns an incomplete change: the client then
    counts the statistics of the labels kept under ``tag``
    (:func:`stats_of_kept_labels`).
    """
    candidates = (ROW_CANDIDATES.take if last else ROW_CANDIDATES.get)(chunk, run)
    previous = LABELS.take(chunk, previous_tag)
    loaded = _start_task(chunk)
    if candidates is not None and previous is not None:
        change = loaded.ops.row_candidates_pass(loaded, centers, candidates, everyone, previous)
        if change is not None:
            LABELS.put(chunk, tag, previous)  # overwritten with the new labels
            return change
    stats = stats_keeping_row_candidates(chunk, centers, search, tag, run, m)
    if last:
        ROW_CANDIDATES.take(chunk, run)
    if previous is None or not loaded.ops.scans_candidates:
        return StatsChange.of_unknown_sums(stats)
    return loaded.ops.change_of_labels(loaded, centers, previous, LABELS.get(chunk, tag))


def stats_of_kept_labels(
    chunk: Chunk, centers: np.ndarray, search: str, tag: Hashable
) -> ClusterStats:
    """The chunk's statistics for the labels kept under ``tag``, which stay kept.

    For a pass whose changes could not be added up (a chunk had lost the
    labels its change starts from). Where these labels are lost too, or the
    ops scan no candidates, the plain pass of ``search``, keeping its labels.
    """
    labels = LABELS.get(chunk, tag)
    loaded = _start_task(chunk)
    if labels is None or not loaded.ops.scans_candidates:
        return stats_keeping_labels(chunk, centers, search, None, tag)
    return loaded.ops.statistics_of_labels(loaded, centers, labels)


def kept_labels(
    chunk: Chunk,
    centers: np.ndarray,
    search: str,
    tag: str,
    spent_bounds: Hashable | None = None,
) -> Any:
    """The labels :func:`stats_keeping_labels` kept under ``tag``, or the labels afresh.

    Computed afresh (without bounds) only when the memo has lost them: the
    task runs on another worker, or after its chunk was recomputed. The
    Hamerly bounds kept under ``spent_bounds``, which no later pass reads
    (the last iteration's, when no final pass follows), are dropped.
    """
    if spent_bounds is not None:
        MEMO.take(chunk, spent_bounds)
    labels = LABELS.take(chunk, tag)
    if labels is None:
        return chunk_labels(chunk, centers, search)[0]
    return chunk.ops.handed_over(labels)


def farthest_rows(source: RowSource, centers: np.ndarray, search: str, count: int) -> RankedRows:
    """The ``count`` rows of the chunk farthest from their nearest centre."""
    chunk = _start_task(source)
    labels, sq_dist = chunk.ops.nearest(chunk, centers, search)
    return chunk.ops.top_rows(chunk, sq_dist, labels, count)


def random_rows(
    source: RowSource, count: int, seed: int, stream: int, weighted: bool
) -> RankedRows:
    """A random sample of ``count`` rows without replacement (Efraimidis-Spirakis).

    Each row gets the key ``log(u) / w`` from its counter-based uniform ``u``
    (:func:`~kmeans_dask._kernels.rng.row_uniforms`); the ``count`` largest
    keys over all chunks are a sample drawn with probabilities proportional
    to the weights (uniform if not ``weighted``). Rows of weight 0 are never
    drawn.
    """
    chunk = _start_task(source)
    keys = chunk.ops.random_keys(chunk, seed, stream, weighted)
    labels = np.full(chunk.n_rows, -1, dtype=np.int32)
    return chunk.ops.top_rows(chunk, keys, labels, count)


# --- k-means|| tasks -----------------------------------------------------------------

#: What a k-means|| task is given about the candidates: each row's nearest
#: candidate kept in worker memory, or (when the data streams from a store)
#: the candidates themselves, searched again in every pass.
CandidateState = NearestCandidate | np.ndarray


def update_nearest_candidate(
    source: RowSource,
    previous: NearestCandidate | None,
    new_candidates: np.ndarray,
    first_index: int,
    search: str,
) -> NearestCandidate:
    """Fold this round's candidates into each row's nearest-candidate state.

    Only the new candidates are searched; ``first_index`` is the position of
    the first of them in the full candidate list. ``previous`` is left as it
    was (a task's result must not change); a round that drew no candidates
    returns it as it is.
    """
    chunk = _start_task(source)
    if previous is not None and not len(new_candidates):
        return previous
    if previous is not None:
        previous = NearestCandidate(_copied(previous.sq_dist), _copied(previous.index))
    return chunk.ops.fold_candidates(chunk, previous, new_candidates, first_index, search)


def _copied(array: Any) -> Any:
    """A copy of ``array``, in its own memory and library."""
    return array_namespace(array).asarray(array, copy=True)


def _resolve(chunk: Chunk, state: CandidateState, search: str) -> NearestCandidate:
    if isinstance(state, NearestCandidate):
        return state
    return chunk.ops.fold_candidates(chunk, None, state, 0, search)


def weighted_cost(source: RowSource, state: CandidateState, search: str) -> float:
    """The chunk's share of the k-means cost: ``sum(w * d^2)``."""
    chunk = _start_task(source)
    return chunk.ops.weighted_cost(chunk, _resolve(chunk, state, search))


def sample_by_cost(
    source: RowSource,
    state: CandidateState,
    oversampling: float,
    cost: float,
    seed: int,
    stream: int,
    search: str,
) -> np.ndarray:
    """Keep each row independently with probability ``min(1, l * w * d^2 / phi)``.

    ``l`` is ``oversampling`` and ``phi`` the total ``cost``; when the cost
    is 0 (every row coincides with a candidate) no row is kept.
    """
    chunk = _start_task(source)
    if cost <= 0:
        return chunk.ops.sample_by_cost(chunk, None, 0.0, seed, stream)
    state = _resolve(chunk, state, search)
    return chunk.ops.sample_by_cost(chunk, state, oversampling / cost, seed, stream)


def candidate_weights(
    source: RowSource, state: CandidateState, n_candidates: int, search: str
) -> np.ndarray:
    """Total weight of the rows nearest to each candidate."""
    chunk = _start_task(source)
    return chunk.ops.candidate_weights(chunk, _resolve(chunk, state, search), n_candidates)


#: Each row's nearest k-means|| candidate, kept next to its chunk between the
#: rounds when they run through the actors (the task path keeps it as futures).
NEAREST_CANDIDATES: ChunkMemo[NearestCandidate] = ChunkMemo()


def _kept_candidate_state(chunk: Chunk, tag: str, *, release: bool = False) -> NearestCandidate:
    """The state kept under ``tag`` (forgotten with ``release``); missing, an error."""
    state = (NEAREST_CANDIDATES.take if release else NEAREST_CANDIDATES.get)(chunk, tag)
    if state is None:
        raise RuntimeError(
            f"the k-means|| state of the chunk at row {chunk.offset} is missing from its "
            "worker's memory"
        )
    return state


def fold_candidates_kept(
    chunk: Chunk, new_candidates: np.ndarray, first_index: int, search: str, tag: str
) -> float:
    """:func:`update_nearest_candidate` on the state kept under ``tag``; the new cost.

    ``first_index`` 0 starts a new state. Returns the chunk's share of the
    cost after the update (:func:`weighted_cost`).
    """
    loaded = _start_task(chunk)
    state = None if first_index == 0 else _kept_candidate_state(chunk, tag)
    if state is None or len(new_candidates):
        # Ops may update the state in place or return a new one: keep what they return.
        state = loaded.ops.fold_candidates(loaded, state, new_candidates, first_index, search)
        NEAREST_CANDIDATES.put(chunk, tag, state)
    return loaded.ops.weighted_cost(loaded, state)


def sample_by_cost_kept(
    chunk: Chunk,
    oversampling: float,
    cost: float,
    seed: int,
    stream: int,
    search: str,
    tag: str,
) -> np.ndarray:
    """:func:`sample_by_cost` on the state kept under ``tag``."""
    state = _kept_candidate_state(chunk, tag)
    return sample_by_cost(chunk, state, oversampling, cost, seed, stream, search)


def candidate_weights_kept(chunk: Chunk, n_candidates: int, search: str, tag: str) -> np.ndarray:
    """:func:`candidate_weights` on the state kept under ``tag``, which it releases."""
    state = _kept_candidate_state(chunk, tag, release=True)
    return candidate_weights(chunk, state, n_candidates, search)
