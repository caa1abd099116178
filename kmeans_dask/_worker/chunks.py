"""What lives on the workers: row chunks and the pure tasks run over them.

Every function here takes a :class:`Chunk` (plus small arguments) and
returns small results, so only centres and partial statistics cross the
network. They assume validated input and know nothing about Dask beyond
capping native threads when they run inside a worker.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from kmeans_dask._kernels.block_kernels import (
    accumulate_rows,
    column_moments,
    content_digest,
    largest,
    squared_distances,
)
from kmeans_dask._kernels.rng import row_uniforms, rows_kept_with_probability
from kmeans_dask._kernels.row_statistics import aligned_float64, aligned_zeros
from kmeans_dask._worker.bounds import MEMO, BoundsTicket, bounded_assign
from kmeans_dask._worker.memo import ChunkMemo
from kmeans_dask._worker.scratch import scratch
from kmeans_dask._worker.threads import (
    limit_worker_threads,
    map_row_blocks,
    single_threaded_native,
)
from kmeans_dask.backends import get_backend

#: How many offending positions an error message quotes.
N_REPORTED_POSITIONS = 5


@dataclass(frozen=True)
class Chunk:
    """A block of rows held by one worker, with its weights and position."""

    data: np.ndarray
    """(n, d) C-contiguous float32 or float64 rows."""
    weights: np.ndarray | None
    """(n,) float64 sample weights, or None for unit weights."""
    offset: int
    """Global index of the first row."""

    @property
    def n_rows(self) -> int:
        return self.data.shape[0]

    def load(self) -> Chunk:
        """The chunk itself: it is already in memory."""
        return self


@dataclass(frozen=True)
class ZarrBlock:
    """Rows ``offset:offset + n_rows`` of a Zarr array, read when a task needs them.

    Used when the data is larger than the cluster's memory: each iteration's
    task reads, uses and drops its block, so a worker holds at most one block
    per thread.
    """

    array: Any
    """The ``zarr.Array``, opened read-only (pickles as a small reference)."""
    offset: int
    n_rows: int
    dtype: np.dtype
    weights: np.ndarray | None

    def load(self) -> Chunk:
        """Read the rows from the store into a :class:`Chunk`."""
        block = self.array[self.offset : self.offset + self.n_rows]
        return make_chunk(block, self.weights, self.offset, self.dtype)


#: Where a task finds its rows: in worker memory, or in a Zarr store.
RowSource = Chunk | ZarrBlock


def _start_task(source: RowSource) -> Chunk:
    """Cap native threads (inside a worker) and bring the rows into memory."""
    limit_worker_threads()
    return source.load()


def make_chunk(block, weights, offset: int, dtype) -> Chunk:
    """Build a :class:`Chunk` from a raw block (NumPy-like) and its weights.

    Arrays are copied only if they are not C-contiguous and aligned: buffers
    deserialised from the network can start at odd addresses, which makes
    BLAS and the compiled kernels markedly slower (1.6x measured).
    """
    data = np.require(block, dtype=dtype, requirements=["C", "A"])
    if weights is not None:
        weights = np.require(weights, dtype=np.float64, requirements=["C", "A"]).reshape(-1)
    return Chunk(data, weights, int(offset))


def settle(chunk: Chunk) -> Chunk:
    """The chunk as a worker should keep it: aligned, contiguous memory."""
    return make_chunk(chunk.data, chunk.weights, chunk.offset, chunk.data.dtype)


@dataclass
class ChunkSummary:
    """What one pass over a chunk learns for validation and the tolerance."""

    n_rows: int
    nonfinite_count: int
    nonfinite_positions: list[tuple[int, int]]
    column_mean: np.ndarray
    column_m2: np.ndarray
    weight_sum: float
    bad_weight_count: int = 0
    bad_weight_rows: list[int] = field(default_factory=list)
    digest: int = 0
    """:func:`~kmeans_dask._kernels.block_kernels.content_digest` of the rows and weights: the
    same for any chunking, so it identifies the data for checkpoints."""

    def merge(self, other: ChunkSummary) -> ChunkSummary:
        """Combine two summaries (Chan et al.'s parallel variance update)."""
        n_a, n_b = self.n_rows, other.n_rows
        n = n_a + n_b
        if n_b == 0:
            return self
        if n_a == 0:
            return other
        # Overflowing values are refused from the merged summary (raise_for_summary).
        with np.errstate(over="ignore", invalid="ignore"):
            delta = other.column_mean - self.column_mean
            mean = self.column_mean + delta * (n_b / n)
            m2 = self.column_m2 + other.column_m2 + delta**2 * (n_a * n_b / n)
        return ChunkSummary(
            n_rows=n,
            nonfinite_count=self.nonfinite_count + other.nonfinite_count,
            nonfinite_positions=(self.nonfinite_positions + other.nonfinite_positions)[
                :N_REPORTED_POSITIONS
            ],
            column_mean=mean,
            column_m2=m2,
            weight_sum=self.weight_sum + other.weight_sum,
            bad_weight_count=self.bad_weight_count + other.bad_weight_count,
            bad_weight_rows=(self.bad_weight_rows + other.bad_weight_rows)[:N_REPORTED_POSITIONS],
            digest=(self.digest + other.digest) % 2**64,
        )


def nonfinite_positions(data: np.ndarray, offset: int = 0) -> tuple[int, list[tuple[int, int]]]:
    """Count non-finite entries and return the first few (row, column) positions."""
    finite = np.isfinite(data)
    if finite.all():
        return 0, []
    bad_rows, bad_cols = np.nonzero(~finite)
    positions = [
        (int(r) + offset, int(c))
        for r, c in zip(
            bad_rows[:N_REPORTED_POSITIONS], bad_cols[:N_REPORTED_POSITIONS], strict=False
        )
    ]
    return int(bad_rows.size), positions


def summarize(chunk: RowSource, with_digest: bool = True) -> ChunkSummary:
    """Finiteness, column mean/M2 (for ``tol``), weight checks and digest of a chunk.

    ``with_digest=False`` leaves ``digest`` at 0, for checks that only validate.
    """
    chunk = _start_task(chunk)
    data = chunk.data
    mean = np.empty(data.shape[1])
    m2 = np.empty(data.shape[1])
    column_moments(data, mean, m2)
    count, positions = 0, []
    if not (np.isfinite(mean).all() and np.isfinite(m2).all()):
        # A non-finite value, or float64 data whose M2 overflows.
        count, positions = nonfinite_positions(data, chunk.offset)
        if count:
            mean[:] = 0.0
            m2[:] = 0.0
    if chunk.weights is None:
        weight_sum, bad_count, bad_rows = float(chunk.n_rows), 0, []
    else:
        weights = chunk.weights
        bad = ~np.isfinite(weights) | (weights < 0)
        bad_count = int(bad.sum())
        bad_rows = [int(i) + chunk.offset for i in np.flatnonzero(bad)[:N_REPORTED_POSITIONS]]
        with np.errstate(over="ignore"):  # refused with the data check's summary
            weight_sum = float(weights[~bad].sum())
    return ChunkSummary(
        n_rows=chunk.n_rows,
        nonfinite_count=count,
        nonfinite_positions=positions,
        column_mean=mean,
        column_m2=m2,
        weight_sum=weight_sum,
        bad_weight_count=bad_count,
        bad_weight_rows=bad_rows,
        digest=_digest(chunk) if with_digest else 0,
    )


#: Bits of a unit weight, hashed for the rows of chunks without weights.
_UNIT_WEIGHT_BITS = np.float64(1.0).view(np.uint64)


def _digest(chunk: Chunk) -> int:
    """The chunk's :func:`content_digest`; no weights hash as 1.0."""
    data = chunk.data
    bits = data.view(np.uint32 if data.dtype == np.float32 else np.uint64)
    if chunk.weights is None:
        weight_bits = np.broadcast_to(_UNIT_WEIGHT_BITS, (chunk.n_rows,))
    else:
        weight_bits = chunk.weights.view(np.uint64)
    return int(content_digest(bits, weight_bits, chunk.offset))


#: Rows farthest from their centre that a chunk task reports with its
#: statistics: an iteration that empties up to this many clusters relocates
#: them onto these rows without another pass over the data.
FAR_ROWS = 32


@dataclass
class ClusterStats:
    """Partial Lloyd statistics: per-cluster weighted sums and counts, inertia."""

    sums: np.ndarray
    """(k, d) float64 weighted sum of the points assigned to each cluster."""
    counts: np.ndarray
    """(k,) float64 total weight assigned to each cluster."""
    inertia: float
    """Weighted sum of squared distances to the assigned centres."""
    farthest: RankedRows | None = None
    """The (at most :data:`FAR_ROWS`) rows farthest from their assigned centre."""


def statistics_nbytes(n_clusters: int, n_features: int) -> int:
    """Bytes of one chunk's partial sums and counts (what every iteration moves)."""
    return 8 * n_clusters * (n_features + 1)


def combine_stats(*parts: ClusterStats) -> ClusterStats:
    """Add partial statistics, in the order given (fixed, so reproducible)."""
    sums = parts[0].sums.copy()
    counts = parts[0].counts.copy()
    inertia = parts[0].inertia
    for part in parts[1:]:
        sums += part.sums
        counts += part.counts
        inertia += part.inertia
    farthest = None
    if all(part.farthest is not None for part in parts):
        farthest = merge_top(FAR_ROWS, *(part.farthest for part in parts))
    return ClusterStats(sums, counts, inertia, farthest)


def _with_farthest(
    stats: ClusterStats, chunk: Chunk, labels: np.ndarray, sq_dist: np.ndarray
) -> ClusterStats:
    stats.farthest = _top_rows(chunk, sq_dist, labels, FAR_ROWS)
    return stats


def _nearest_with_sq_dist(data, weights, centers, backend_name, sums=None, counts=None, out=None):
    """Labels, exact squared distances and (optionally) accumulated statistics.

    ``out``: the (labels, sq_dist) arrays to fill, else new ones.
    """
    # The compiled statistics read rows and centres as contiguous memory.
    data = np.ascontiguousarray(data)
    searcher = get_backend(backend_name).searcher(centers.astype(data.dtype, copy=False))
    centers64 = aligned_float64(centers)
    if out is None:
        out = (np.empty(data.shape[0], dtype=np.int32), np.empty(data.shape[0]))
    labels, sq_dist = out
    if hasattr(searcher, "assign_and_accumulate"):
        inertia = searcher.assign_and_accumulate(
            data, weights, centers64, labels, sums, counts, sq_dist
        )
        return labels, sq_dist, inertia
    inertia = 0.0
    step = searcher.block_rows
    for start in range(0, data.shape[0], step):
        stop = min(start + step, data.shape[0])
        block = data[start:stop]
        labels[start:stop] = searcher.nearest(block)
        if sums is None:
            squared_distances(block, labels[start:stop], centers64, sq_dist[start:stop])
        else:
            inertia += accumulate_rows(
                data, start, stop, labels, weights, centers64, sums, counts, sq_dist
            )
    return labels, sq_dist, inertia


def nearest(data: np.ndarray, centers: np.ndarray, backend_name: str):
    """Nearest centre and exact squared distance of every row of ``data``.

    Outside a Dask worker the rows are split over the cores (threads).

    Returns
    -------
    labels : (n,) int32
    sq_dist : (n,) float64
    """
    parts = map_row_blocks(
        lambda block: _nearest_with_sq_dist(block, None, centers, backend_name)[:2], data
    )
    if len(parts) == 1:
        return parts[0]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def statistics_and_labels(
    data: np.ndarray,
    weights: np.ndarray | None,
    centers: np.ndarray,
    backend_name: str,
    out: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[ClusterStats, np.ndarray, np.ndarray]:
    """Assign rows and accumulate their statistics, in one pass per block.

    Returns the statistics, each row's label (int32) and exact squared
    distance (float64), the latter two in ``out`` when given.
    """
    n_clusters, n_features = centers.shape
    sums = aligned_zeros((n_clusters, n_features))
    counts = np.zeros(n_clusters)
    with single_threaded_native():
        labels, sq_dist, inertia = _nearest_with_sq_dist(
            data, weights, centers, backend_name, sums, counts, out
        )
    return ClusterStats(sums, counts, inertia), labels, sq_dist


def bounded_statistics(
    source: RowSource, centers: np.ndarray, backend_name: str, ticket: BoundsTicket
) -> tuple[ClusterStats, np.ndarray]:
    """Statistics and labels of a chunk, skipping rows whose Hamerly bounds allow.

    The bounds left by the previous iteration of the same run are taken from
    this process's memo (when the chunk has them) and, if ``ticket.keep``,
    this iteration's are left there for the next one.
    """
    chunk = _start_task(source)
    previous = MEMO.take(source, (ticket.run, ticket.iteration - 1))
    n_clusters, n_features = centers.shape
    sums = aligned_zeros((n_clusters, n_features))
    counts = np.zeros(n_clusters)
    searcher = get_backend(backend_name).searcher(centers.astype(chunk.data.dtype, copy=False))
    with single_threaded_native():
        bounds, sq_dist, inertia = bounded_assign(
            chunk.data,
            chunk.weights,
            centers,
            searcher,
            previous,
            ticket.movement,
            sums,
            counts,
            sq_dist=scratch("sq_dist", chunk.n_rows, np.float64),
        )
    if ticket.keep:
        MEMO.put(source, (ticket.run, ticket.iteration), bounds)
    stats = _with_farthest(ClusterStats(sums, counts, inertia), chunk, bounds.labels, sq_dist)
    return stats, bounds.labels


def chunk_stats(
    chunk: RowSource, centers: np.ndarray, backend_name: str, ticket: BoundsTicket | None = None
) -> ClusterStats:
    """Map task of a Lloyd iteration: the chunk's partial statistics.

    With a ``ticket`` the rows' Hamerly bounds are used and kept on the worker.
    """
    return _assign(chunk, centers, backend_name, ticket, keep_labels=False)[1]


def chunk_labels(
    chunk: RowSource, centers: np.ndarray, backend_name: str, ticket: BoundsTicket | None = None
) -> tuple[np.ndarray, ClusterStats]:
    """Labels of the chunk's rows and its statistics (with its farthest rows)."""
    return _assign(chunk, centers, backend_name, ticket, keep_labels=True)


def _assign(
    source: RowSource,
    centers: np.ndarray,
    backend_name: str,
    ticket: BoundsTicket | None,
    keep_labels: bool,
) -> tuple[np.ndarray, ClusterStats]:
    """Labels and statistics of a chunk; labels not kept live in this thread's scratch."""
    if ticket is not None:
        stats, labels = bounded_statistics(source, centers, backend_name, ticket)
        return labels, stats
    chunk = _start_task(source)
    n_rows = chunk.n_rows
    labels = np.empty(n_rows, np.int32) if keep_labels else scratch("labels", n_rows, np.int32)
    stats, labels, sq_dist = statistics_and_labels(
        chunk.data,
        chunk.weights,
        centers,
        backend_name,
        out=(labels, scratch("sq_dist", n_rows, np.float64)),
    )
    return labels, _with_farthest(stats, chunk, labels, sq_dist)


#: Labels of a final pass made through the actors, kept on the worker that
#: holds their chunk until :func:`kept_labels` hands them over as a task result.
LABELS: ChunkMemo[np.ndarray] = ChunkMemo()


def stats_keeping_labels(
    chunk: Chunk, centers: np.ndarray, backend_name: str, ticket: BoundsTicket | None, tag: str
) -> ClusterStats:
    """:func:`chunk_stats`, keeping the rows' labels on the worker under ``tag``."""
    labels, stats = chunk_labels(chunk, centers, backend_name, ticket)
    LABELS.put(chunk, tag, labels)
    return stats


def kept_labels(chunk: Chunk, centers: np.ndarray, backend_name: str, tag: str) -> np.ndarray:
    """The labels :func:`stats_keeping_labels` kept under ``tag``, or the labels afresh.

    Computed afresh (without bounds) only when the memo has lost them: the
    task runs on another worker, or after its chunk was recomputed.
    """
    labels = LABELS.take(chunk, tag)
    if labels is None:
        labels = chunk_labels(chunk, centers, backend_name)[0]
    return labels


@dataclass
class RankedRows:
    """Rows of a chunk with the highest ``score``, best first."""

    score: np.ndarray
    index: np.ndarray
    """Global row indices."""
    rows: np.ndarray
    weights: np.ndarray
    labels: np.ndarray
    """Assigned centre of each row, or -1 where no assignment was made."""

    def head(self, count: int) -> RankedRows:
        """The ``count`` best rows."""
        return RankedRows(
            self.score[:count],
            self.index[:count],
            self.rows[:count],
            self.weights[:count],
            self.labels[:count],
        )


def _top_rows(chunk: Chunk, score: np.ndarray, labels: np.ndarray, count: int) -> RankedRows:
    local = np.empty(min(count, chunk.n_rows), dtype=np.int64)
    largest(score, count, local)
    weights = np.ones(local.size) if chunk.weights is None else chunk.weights[local]
    rows = chunk.data[local]
    return RankedRows(score[local], local + chunk.offset, rows, weights, labels[local])


def merge_top(count: int, *parts: RankedRows) -> RankedRows:
    """Keep the ``count`` best rows over several chunks; ties go to the lower index.

    The outcome depends only on the rows' scores and global indices, so it is
    the same for every chunking and worker count.
    """
    score = np.concatenate([p.score for p in parts])
    index = np.concatenate([p.index for p in parts])
    order = np.lexsort((index, -score))[:count]
    return RankedRows(
        score[order],
        index[order],
        np.concatenate([p.rows for p in parts])[order],
        np.concatenate([p.weights for p in parts])[order],
        np.concatenate([p.labels for p in parts])[order],
    )


def farthest_rows(
    chunk: RowSource, centers: np.ndarray, backend_name: str, count: int
) -> RankedRows:
    """The ``count`` rows of the chunk farthest from their nearest centre."""
    chunk = _start_task(chunk)
    labels, sq_dist = nearest(chunk.data, centers, backend_name)
    return _top_rows(chunk, sq_dist, labels, count)


def random_rows(
    chunk: RowSource, count: int, seed: int, stream: int, weighted: bool
) -> RankedRows:
    """A random sample of ``count`` rows without replacement (Efraimidis-Spirakis).

    Each row gets the key ``log(u) / w`` from its counter-based uniform ``u``;
    the ``count`` largest keys over all chunks are a sample drawn with
    probabilities proportional to the weights (uniform if not ``weighted``).
    Rows of weight 0 are never drawn.
    """
    chunk = _start_task(chunk)
    uniforms = row_uniforms(seed, stream, chunk.offset, chunk.offset + chunk.n_rows)
    log_u = np.log(uniforms + 0.5 / (1 << 53))
    if weighted:
        weights = weights_or_ones(chunk)
        with np.errstate(divide="ignore"):
            keys = np.where(weights > 0, log_u / weights, -np.inf)
    else:
        keys = log_u
    labels = np.full(chunk.n_rows, -1, dtype=np.int32)
    return _top_rows(chunk, keys, labels, count)


# --- k-means|| tasks -----------------------------------------------------------------


def weights_or_ones(chunk: RowSource) -> np.ndarray:
    """The chunk's weights; unit weights in this thread's scratch memory."""
    if chunk.weights is not None:
        return chunk.weights
    ones = scratch("ones", chunk.n_rows, np.float64)
    ones.fill(1.0)
    return ones


@dataclass
class NearestCandidate:
    """Per-row state kept on the worker during k-means||."""

    sq_dist: np.ndarray
    """Squared distance of each row to its nearest candidate so far."""
    index: np.ndarray
    """Index of that candidate in the growing candidate list."""


def update_nearest_candidate(
    chunk: RowSource,
    previous: NearestCandidate | None,
    new_candidates: np.ndarray,
    first_index: int,
    backend_name: str,
) -> NearestCandidate:
    """Fold this round's candidates into each row's nearest-candidate state.

    Only the new candidates are searched; ``first_index`` is the position of
    the first of them in the full candidate list. A round that drew no
    candidates leaves ``previous`` as it is.
    """
    chunk = _start_task(chunk)
    if previous is not None and not len(new_candidates):
        return previous
    if previous is None:
        labels, sq_dist = nearest(chunk.data, new_candidates, backend_name)
        return NearestCandidate(sq_dist, labels.astype(np.int64) + first_index)
    state = NearestCandidate(previous.sq_dist.copy(), previous.index.copy())
    _fold_in_place(chunk, state, new_candidates, first_index, backend_name)
    return state


def _fold_in_place(
    chunk: Chunk,
    state: NearestCandidate,
    new_candidates: np.ndarray,
    first_index: int,
    backend_name: str,
) -> None:
    """Fold new candidates into ``state``, overwriting it (see :func:`update_nearest_candidate`).

    The search's temporaries live in this thread's scratch.
    """
    n_rows = chunk.n_rows
    labels = scratch("labels", n_rows, np.int32)
    sq_dist = scratch("sq_dist", n_rows, np.float64)
    with single_threaded_native():
        _nearest_with_sq_dist(
            chunk.data, None, new_candidates, backend_name, out=(labels, sq_dist)
        )
    index = np.add(labels, first_index, out=scratch("index", n_rows, np.int64), dtype=np.int64)
    closer = sq_dist < state.sq_dist
    np.copyto(state.sq_dist, sq_dist, where=closer)
    np.copyto(state.index, index, where=closer)


#: What a k-means|| task is given about the candidates: each row's nearest
#: candidate kept in worker memory, or (when the data streams from a store)
#: the candidates themselves, searched again in every pass.
CandidateState = NearestCandidate | np.ndarray


def _resolve(chunk: Chunk, state: CandidateState, backend_name: str) -> NearestCandidate:
    if isinstance(state, NearestCandidate):
        return state
    labels, sq_dist = nearest(chunk.data, state, backend_name)
    return NearestCandidate(sq_dist, labels.astype(np.int64))


def weighted_cost(chunk: RowSource, state: CandidateState, backend_name: str) -> float:
    """The chunk's share of the k-means cost: ``sum(w * d^2)``."""
    chunk = _start_task(chunk)
    return float(np.dot(weights_or_ones(chunk), _resolve(chunk, state, backend_name).sq_dist))


def sample_by_cost(
    chunk: RowSource,
    state: CandidateState,
    oversampling: float,
    cost: float,
    seed: int,
    stream: int,
    backend_name: str,
) -> np.ndarray:
    """Keep each row independently with probability ``min(1, l * w * d^2 / phi)``.

    ``l`` is ``oversampling`` and ``phi`` the total ``cost``; when the cost
    is 0 (every row coincides with a candidate) no row is kept.
    """
    chunk = _start_task(chunk)
    if cost <= 0:
        return chunk.data[:0]
    sq_dist = _resolve(chunk, state, backend_name).sq_dist
    kept = rows_kept_with_probability(
        oversampling / cost, chunk.weights, sq_dist, seed, stream, chunk.offset
    )
    return chunk.data[kept]


def candidate_weights(
    chunk: RowSource, state: CandidateState, n_candidates: int, backend_name: str
) -> np.ndarray:
    """Total weight of the rows nearest to each candidate."""
    chunk = _start_task(chunk)
    index = _resolve(chunk, state, backend_name).index
    weights = np.bincount(index, weights=weights_or_ones(chunk), minlength=n_candidates)
    return weights.astype(np.float64, copy=False)  # NumPy counts no rows as int64


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
    chunk: Chunk, new_candidates: np.ndarray, first_index: int, backend_name: str, tag: str
) -> float:
    """:func:`update_nearest_candidate` on the state kept under ``tag``; the new cost.

    ``first_index`` 0 starts a new state. Returns the chunk's share of the
    cost after the update (:func:`weighted_cost`).
    """
    if first_index == 0:
        state = update_nearest_candidate(chunk, None, new_candidates, 0, backend_name)
        NEAREST_CANDIDATES.put(chunk, tag, state)
    else:
        state = _kept_candidate_state(chunk, tag)
        if len(new_candidates):
            _fold_in_place(_start_task(chunk), state, new_candidates, first_index, backend_name)
    return weighted_cost(chunk, state, backend_name)


def sample_by_cost_kept(
    chunk: Chunk,
    oversampling: float,
    cost: float,
    seed: int,
    stream: int,
    backend_name: str,
    tag: str,
) -> np.ndarray:
    """:func:`sample_by_cost` on the state kept under ``tag``."""
    state = _kept_candidate_state(chunk, tag)
    return sample_by_cost(chunk, state, oversampling, cost, seed, stream, backend_name)


def candidate_weights_kept(
    chunk: Chunk, n_candidates: int, backend_name: str, tag: str
) -> np.ndarray:
    """:func:`candidate_weights` on the state kept under ``tag``, which it releases."""
    state = _kept_candidate_state(chunk, tag, release=True)
    return candidate_weights(chunk, state, n_candidates, backend_name)


def add_arrays(*arrays: np.ndarray) -> np.ndarray:
    """Sum arrays in the order given."""
    total = arrays[0].copy()
    for array in arrays[1:]:
        total += array
    return total


def add_floats(*values: float) -> float:
    """Sum floats in the order given."""
    return float(sum(values))


def stack_rows(*blocks: np.ndarray) -> np.ndarray:
    """The rows of ``blocks``, one after the other."""
    return np.concatenate(blocks)


def count_after(count: int, rows: np.ndarray) -> int:
    """``count`` plus the number of ``rows``."""
    return count + len(rows)
