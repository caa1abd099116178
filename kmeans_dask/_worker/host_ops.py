"""The chunk operations on host memory: NumPy rows, compiled kernels, any CPU searcher.

Rows are kept C-contiguous and aligned (:func:`HostOps.place`), passes run
the compiled kernels of :mod:`kmeans_dask._kernels` on one native thread per
Dask thread, and temporaries live in per-thread scratch memory
(:mod:`kmeans_dask._worker.scratch`). The searcher of a search spec is
prepared once per set of centres in each process
(:mod:`kmeans_dask._worker.searchers`).
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from typing import TYPE_CHECKING

import numpy as np

from kmeans_dask._kernels.block_kernels import (
    accumulate_rows,
    add_moved_rows,
    column_moments,
    content_digest,
    largest,
    squared_distances,
)
from kmeans_dask._kernels.candidate_search import (
    candidate_labels,
    in_label_order,
    own_candidate_labels,
)
from kmeans_dask._kernels.float32_screen import float32_screen
from kmeans_dask._kernels.rng import row_uniforms, rows_kept_with_probability
from kmeans_dask._kernels.row_statistics import aligned_float64, aligned_zeros
from kmeans_dask._worker.bounds import CenterMovement, RowBounds, bounded_assign
from kmeans_dask._worker.chunks import Chunk
from kmeans_dask._worker.moved_centers import nearest_after_moves
from kmeans_dask._worker.ops import LloydPass, RowCandidates
from kmeans_dask._worker.results import (
    FAR_ROWS,
    N_REPORTED_POSITIONS,
    ChunkSummary,
    ClusterStats,
    NearestCandidate,
    RankedRows,
    StatsChange,
    nonfinite_positions,
)
from kmeans_dask._worker.scratch import scratch
from kmeans_dask._worker.searchers import prepared_search
from kmeans_dask._worker.shared_blocks import shared_blocks
from kmeans_dask._worker.threads import map_row_blocks, single_threaded_native

if TYPE_CHECKING:
    from collections.abc import Callable

#: Bits of a unit weight, hashed for the rows of chunks without weights.
_UNIT_WEIGHT_BITS = np.float64(1.0).view(np.uint64)


class HostOps:
    """:class:`~kmeans_dask._worker.ops.ChunkOps` for rows in host memory."""

    name = "host"
    keeps_bounds = True
    scans_candidates = True

    def __reduce__(self) -> tuple[Callable[[], HostOps], tuple]:
        return host_ops, ()

    def place(self, block, weights, offset: int, dtype) -> Chunk:
        """Rows copied only if they are not C-contiguous and aligned.

        Buffers deserialised from the network can start at odd addresses,
        which makes BLAS and the compiled kernels markedly slower (RESULTS.md,
        "Design measurements").
        """
        if not isinstance(block, np.ndarray) and hasattr(block, "__cuda_array_interface__"):
            raise TypeError(
                f"the block at row {offset} holds GPU rows ({type(block).__module__}) but this "
                "fit keeps its rows in host memory (other blocks are NumPy, or backend asks "
                "for the CPU); make every block of X the same kind: all CuPy (fitted on the "
                "GPU) or all NumPy (e.g. X.map_blocks(cupy.asnumpy))"
            )
        data = np.require(block, dtype=dtype, requirements=["C", "A"])
        if weights is not None:
            weights = np.require(weights, dtype=np.float64, requirements=["C", "A"]).reshape(-1)
        return Chunk(data, weights, int(offset), self)

    def summarize(self, chunk: Chunk, with_digest: bool) -> ChunkSummary:
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
        weight_sum, bad_count, bad_rows = weight_checks(chunk.weights, chunk.n_rows, chunk.offset)
        return ChunkSummary(
            n_rows=chunk.n_rows,
            nonfinite_count=count,
            nonfinite_positions=positions,
            column_mean=mean,
            column_m2=m2,
            weight_sum=weight_sum,
            bad_weight_count=bad_count,
            bad_weight_rows=bad_rows,
            digest=digest(chunk.data, chunk.weights, chunk.offset) if with_digest else 0,
        )

    def lloyd_pass(
        self,
        chunk: Chunk,
        centers: np.ndarray,
        search: str,
        keep_labels: bool,
        reuse: np.ndarray | None = None,
    ) -> LloydPass:
        n_rows = chunk.n_rows
        if not keep_labels:
            labels = scratch("labels", n_rows, np.int32)
        elif reuse is not None and reuse.shape == (n_rows,) and reuse.dtype == np.int32:
            # Fresh memory of this size costs page faults under the nanny's
            # MALLOC_TRIM_THRESHOLD_ (RESULTS.md, "Whole-fit fixed cost").
            labels = reuse
        else:
            labels = np.empty(n_rows, np.int32)
        stats, labels, sq_dist = statistics_and_labels(
            chunk.data,
            chunk.weights,
            centers,
            search,
            out=(labels, scratch("sq_dist", n_rows, np.float64)),
        )
        stats.farthest = self.top_rows(chunk, sq_dist, labels, FAR_ROWS)
        return LloydPass(stats, labels)

    def bounded_pass(
        self,
        chunk: Chunk,
        centers: np.ndarray,
        search: str,
        previous: RowBounds | None,
        movement: CenterMovement | None,
    ) -> LloydPass:
        n_clusters, n_features = centers.shape
        sums = aligned_zeros((n_clusters, n_features))
        counts = np.zeros(n_clusters)
        prepared = prepared_search(search, centers.astype(chunk.data.dtype, copy=False))
        with single_threaded_native():
            bounds, sq_dist, inertia = bounded_assign(
                chunk.data,
                chunk.weights,
                centers,
                prepared,
                previous,
                movement,
                sums,
                counts,
                sq_dist=scratch("sq_dist", chunk.n_rows, np.float64),
            )
        stats = ClusterStats(sums, counts, inertia)
        stats.farthest = self.top_rows(chunk, sq_dist, bounds.labels, FAR_ROWS)
        return LloydPass(stats, bounds.labels, bounds)

    def candidate_pass(
        self,
        chunk: Chunk,
        centers: np.ndarray,
        search: str,
        table: np.ndarray,
        labels: np.ndarray,
    ) -> StatsChange:
        centers64 = aligned_float64(centers)
        previous = labels.copy()
        sq_dist = scratch("sq_dist", chunk.n_rows, np.float64)
        with single_threaded_native():
            if not _candidates_hold(chunk.data, centers, centers64, table, labels, sq_dist):
                labels.fill(-1)
                sq_dist = None
            searched = _search_unassigned(chunk.data, labels, centers, search)
            if sq_dist is not None and searched.size:
                found = np.empty(searched.size)
                squared_distances(chunk.data[searched], labels[searched], centers64, found)
                sq_dist[searched] = found
            return self._change_of_labels(chunk, centers64, previous, labels, sq_dist)

    def pass_keeping_candidates(
        self, chunk: Chunk, centers: np.ndarray, search: str, m: int
    ) -> tuple[LloydPass, RowCandidates]:
        searcher = prepared_search(search, centers.astype(chunk.data.dtype, copy=False)).searcher
        n_rows, step = chunk.n_rows, searcher.block_rows
        labels = np.empty(n_rows, dtype=np.int32)
        candidates = np.empty((n_rows, min(m, len(centers))), dtype=np.int32)

        def search_block(index: int) -> None:
            rows = slice(index * step, min((index + 1) * step, n_rows))
            labels[rows], candidates[rows] = searcher.nearest_with_candidates(chunk.data[rows], m)

        # Idle jobs of the host call may search blocks from the back.
        n_blocks = math.ceil(n_rows / step)
        with single_threaded_native(), shared_blocks(n_blocks, search_block) as blocks:
            for index in range(n_blocks):
                if blocks is None or blocks.claim(index, most=1):
                    search_block(index)
        result = self._pass_of_labels(chunk, aligned_float64(centers), labels, step)
        # The nearest candidate is in the row's nearest list.
        order = in_label_order(searcher.center_lists[candidates[:, 0]], searcher.nlist)
        return result, RowCandidates(candidates, order.astype(np.int32))

    def row_candidates_pass(
        self,
        chunk: Chunk,
        centers: np.ndarray,
        candidates: RowCandidates,
        everyone: np.ndarray,
        labels: np.ndarray,
    ) -> StatsChange | None:
        centers64 = aligned_float64(centers)
        with single_threaded_native():
            sample = _checked_rows(chunk.data)
            found = labels[sample].copy()
            checked = np.ascontiguousarray(chunk.data[sample])
            checked_ids = candidates.ids[sample]
            in_row_order = np.arange(len(checked), dtype=np.int32)
            screen = _screen(chunk.data, centers64)
            own_candidate_labels(
                checked, centers64, checked_ids, everyone, found, in_row_order, screen
            )
            if _misses_too_many(checked, centers, centers64, found):
                return None
            previous = labels.copy()
            sq_dist = scratch("sq_dist", chunk.n_rows, np.float64)
            own_candidate_labels(
                chunk.data,
                centers64,
                candidates.ids,
                everyone,
                labels,
                candidates.order,
                screen,
                sq_dist,
            )
            return self._change_of_labels(chunk, centers64, previous, labels, sq_dist)

    def change_of_labels(
        self, chunk: Chunk, centers: np.ndarray, previous: np.ndarray, labels: np.ndarray
    ) -> StatsChange:
        with single_threaded_native():
            return self._change_of_labels(chunk, aligned_float64(centers), previous, labels)

    def statistics_of_labels(
        self, chunk: Chunk, centers: np.ndarray, labels: np.ndarray
    ) -> ClusterStats:
        with single_threaded_native():
            return self._pass_of_labels(chunk, aligned_float64(centers), labels).stats

    def _change_of_labels(
        self,
        chunk: Chunk,
        centers64: np.ndarray,
        previous: np.ndarray,
        labels: np.ndarray,
        sq_dist: np.ndarray | None = None,
    ) -> StatsChange:
        """The change of the chunk's statistics from the labels ``previous`` to ``labels``:
        the sums of the clusters that moved rows left or joined, whole counts and
        inertia (exact float64 distances to ``centers64``, or ``sq_dist`` when the
        search gave them already), the farthest rows."""
        moved = np.flatnonzero(previous != labels)
        left, joined = previous[moved], labels[moved]
        clusters = np.union1d(left, joined).astype(np.int64)
        sums = np.zeros((clusters.size, chunk.data.shape[1]))
        slot_left, slot_joined = np.searchsorted(clusters, left), np.searchsorted(clusters, joined)
        add_moved_rows(chunk.data, moved, chunk.weights, slot_left, slot_joined, sums)
        if sq_dist is None:
            sq_dist = scratch("sq_dist", chunk.n_rows, np.float64)
            squared_distances(chunk.data, labels, centers64, sq_dist)
        counts = np.bincount(labels, chunk.weights, minlength=len(centers64)).astype(np.float64)
        inertia = float(np.dot(_weights_or_ones(chunk), sq_dist))
        farthest = self.top_rows(chunk, sq_dist, labels, FAR_ROWS)
        return StatsChange(clusters, sums, counts, inertia, farthest)

    def moved_centers_pass(
        self,
        chunk: Chunk,
        centers: np.ndarray,
        search: str,
        moved: np.ndarray,
        moved_from: np.ndarray,
        labels: np.ndarray,
        as_change: bool = False,
    ) -> LloydPass | StatsChange:
        centers64 = aligned_float64(centers)
        plain = prepared_search(search, centers.astype(chunk.data.dtype, copy=False)).searcher
        previous = labels.copy() if as_change else None
        with single_threaded_native():
            nearest_after_moves(
                chunk.data, plain, centers, centers64, search, moved, moved_from, labels
            )
            if previous is not None:
                return self._change_of_labels(chunk, centers64, previous, labels)
        # Summed as the plain pass of ``search`` sums: the same inertia, bit for bit.
        return self._pass_of_labels(chunk, centers64, labels, plain.block_rows)

    def _pass_of_labels(
        self,
        chunk: Chunk,
        centers64: np.ndarray,
        labels: np.ndarray,
        block_rows: int | None = None,
    ) -> LloydPass:
        """The statistics of a pass whose ``labels`` are found, the inertia summed
        over blocks of ``block_rows`` (all the rows at once by default), as the
        searcher of a plain pass sums it."""
        sums = aligned_zeros(centers64.shape)
        counts = np.zeros(len(centers64))
        sq_dist = scratch("sq_dist", chunk.n_rows, np.float64)
        step = block_rows or max(chunk.n_rows, 1)
        inertia = 0.0
        for start in range(0, chunk.n_rows, step):
            stop = min(start + step, chunk.n_rows)
            inertia += accumulate_rows(
                chunk.data, start, stop, labels, chunk.weights, centers64, sums, counts, sq_dist
            )
        stats = ClusterStats(sums, counts, inertia)
        stats.farthest = self.top_rows(chunk, sq_dist, labels, FAR_ROWS)
        return LloydPass(stats, labels)

    def nearest(self, chunk: Chunk, centers: np.ndarray, search: str):
        return nearest(chunk.data, centers, search)

    def top_rows(self, chunk: Chunk, score, labels, count: int) -> RankedRows:
        local = np.empty(min(count, chunk.n_rows), dtype=np.int64)
        largest(score, count, local)
        weights = np.ones(local.size) if chunk.weights is None else chunk.weights[local]
        rows = chunk.data[local]
        return RankedRows(score[local], local + chunk.offset, rows, weights, labels[local])

    def random_keys(self, chunk: Chunk, seed: int, stream: int, weighted: bool) -> np.ndarray:
        uniforms = row_uniforms(seed, stream, chunk.offset, chunk.offset + chunk.n_rows)
        return sampling_keys(uniforms, _weights_or_ones(chunk) if weighted else None)

    def fold_candidates(
        self,
        chunk: Chunk,
        state: NearestCandidate | None,
        candidates: np.ndarray,
        first_index: int,
        search: str,
    ) -> NearestCandidate:
        if state is None:
            labels, sq_dist = nearest(chunk.data, candidates, search)
            return NearestCandidate(sq_dist, labels.astype(np.int64) + first_index)
        n_rows = chunk.n_rows
        labels = scratch("labels", n_rows, np.int32)
        sq_dist = scratch("sq_dist", n_rows, np.float64)
        with single_threaded_native():
            _nearest_with_sq_dist(chunk.data, None, candidates, search, out=(labels, sq_dist))
        index = np.add(labels, first_index, out=scratch("index", n_rows, np.int64), dtype=np.int64)
        closer = sq_dist < state.sq_dist
        np.copyto(state.sq_dist, sq_dist, where=closer)
        np.copyto(state.index, index, where=closer)
        return state

    def weighted_cost(self, chunk: Chunk, state: NearestCandidate) -> float:
        return float(np.dot(_weights_or_ones(chunk), state.sq_dist))

    def sample_by_cost(
        self, chunk: Chunk, state: NearestCandidate | None, scale: float, seed: int, stream: int
    ) -> np.ndarray:
        if state is None or scale <= 0:
            return chunk.data[:0]
        kept = rows_kept_with_probability(
            scale, chunk.weights, state.sq_dist, seed, stream, chunk.offset
        )
        return chunk.data[kept]

    def candidate_weights(
        self, chunk: Chunk, state: NearestCandidate, n_candidates: int
    ) -> np.ndarray:
        weights = np.bincount(state.index, weights=_weights_or_ones(chunk), minlength=n_candidates)
        return weights.astype(np.float64, copy=False)  # NumPy counts no rows as int64

    def handed_over(self, labels: np.ndarray) -> np.ndarray:
        return labels


_HOST_OPS = HostOps()


def host_ops() -> HostOps:
    """The (stateless) host operations."""
    return _HOST_OPS


def weight_checks(weights, n_rows: int, offset: int) -> tuple[float, int, list[int]]:
    """Sum of the valid host ``weights``, and the count and first rows of invalid ones."""
    if weights is None:
        return float(n_rows), 0, []
    bad = ~np.isfinite(weights) | (weights < 0)
    bad_rows = [int(i) + offset for i in np.flatnonzero(bad)[:N_REPORTED_POSITIONS]]
    with np.errstate(over="ignore"):  # refused with the data check's summary
        weight_sum = float(weights[~bad].sum())
    return weight_sum, int(bad.sum()), bad_rows


def digest(data: np.ndarray, weights: np.ndarray | None, offset: int) -> int:
    """:func:`~kmeans_dask._kernels.block_kernels.content_digest` of host rows and weights.

    Rows without weights hash as weight 1.0, so the digest depends on the
    values only, not on how they were given.
    """
    bits = data.view(np.uint32 if data.dtype == np.float32 else np.uint64)
    if weights is None:
        weight_bits = np.broadcast_to(_UNIT_WEIGHT_BITS, (data.shape[0],))
    else:
        weight_bits = weights.view(np.uint64)
    return int(content_digest(bits, weight_bits, offset))


def sampling_keys(uniforms: np.ndarray, weights: np.ndarray | None) -> np.ndarray:
    """Efraimidis-Spirakis keys ``log(u) / w`` (``log(u)`` unweighted); weight 0 never drawn."""
    log_u = np.log(uniforms + 0.5 / (1 << 53))
    if weights is None:
        return log_u
    with np.errstate(divide="ignore"):
        return np.where(weights > 0, log_u / weights, -np.inf)


def _weights_or_ones(chunk: Chunk) -> np.ndarray:
    """The chunk's weights; unit weights in this thread's scratch memory."""
    if chunk.weights is not None:
        return chunk.weights
    ones = scratch("ones", chunk.n_rows, np.float64)
    ones.fill(1.0)
    return ones


#: Flops of one block's search from which a pass shares its blocks with idle
#: threads. Shared, a pass searches in runs of blocks, a call per run instead
#: of one per chunk, and a helper calls once per block: some microseconds
#: each, which small blocks (k = 64, d = 32: 17 Mflop, about 0.15 ms) would
#: feel.
MIN_SHARED_BLOCK_FLOPS = 1 << 26


def _nearest_with_sq_dist(data, weights, centers, search, sums=None, counts=None, out=None):
    """Labels, exact squared distances and (optionally) accumulated statistics.

    ``out``: the (labels, sq_dist) arrays to fill, else new ones. Where a
    block's search is worth it (:data:`MIN_SHARED_BLOCK_FLOPS`), the idle
    jobs of a host call may search blocks from the back
    (:mod:`~kmeans_dask._worker.shared_blocks`); every block is added into the
    statistics here, in row order, so the results are the same either way.
    """
    # The compiled statistics read rows and centres as contiguous memory.
    data = np.ascontiguousarray(data)
    prepared = prepared_search(search, centers.astype(data.dtype, copy=False))
    searcher = prepared.searcher
    centers64 = aligned_float64(centers)
    if out is None:
        out = (np.empty(data.shape[0], dtype=np.int32), np.empty(data.shape[0]))
    labels, sq_dist = out
    n_rows = data.shape[0]
    step = searcher.block_rows
    n_blocks = math.ceil(n_rows / step)

    def search_block(index: int) -> None:
        rows = slice(index * step, min((index + 1) * step, n_rows))
        labels[rows] = searcher.nearest(data[rows])

    worth_sharing = 2 * step * centers.size >= MIN_SHARED_BLOCK_FLOPS
    # Fused passes search runs of blocks in one call; other searchers go
    # block by block, as in a pass nobody helps.
    most = n_blocks if prepared.fused_passes else 1
    inertia = 0.0
    with shared_blocks(n_blocks, search_block) if worth_sharing else nullcontext() as blocks:
        index = 0
        while index < n_blocks:
            run = most if blocks is None else blocks.claim(index, most)  # 0: a helper's block
            count = max(run, 1)
            rows = slice(index * step, min((index + count) * step, n_rows))
            if run and prepared.fused_passes:  # searched and added while in cache
                inertia = searcher.assign_and_accumulate(
                    data[rows],
                    None if weights is None else weights[rows],
                    centers64,
                    labels[rows],
                    sums,
                    counts,
                    sq_dist[rows],
                    inertia,
                )
            else:  # one block
                if run:
                    search_block(index)
                if sums is None:
                    squared_distances(data[rows], labels[rows], centers64, sq_dist[rows])
                else:
                    inertia += accumulate_rows(
                        data,
                        rows.start,
                        rows.stop,
                        labels,
                        weights,
                        centers64,
                        sums,
                        counts,
                        sq_dist,
                    )
            index += count
    return labels, sq_dist, inertia


#: Rows of a chunk a candidate pass checks against the exact search (every
#: ``len(chunk) // CANDIDATE_CHECKED_ROWS``-th row, so between this many and
#: twice as many, all of a smaller chunk), and the share of those checked rows
#: that may have a nearer centre than their candidates, give or take
#: :data:`CANDIDATE_CHECK_SIGMAS` standard deviations of its count, before the
#: whole chunk is searched with IVF instead (:func:`_candidates_hold`). Where
#: candidates hold, they miss the nearest centre of 0-0.3% of the rows; IVF
#: with 8 probes misses 1.5% once the centres settle, and 6% after the first
#: update. Without the margin (and with one row in 32 checked), a chunk of 5000
#: rows whose candidates missed 0.3% failed about one time in three (one miss
#: among its 156 checked rows was too many), the chunks of one fit disagreed,
#: and the IVF search they fell back to was slower and further from exact Lloyd
#: (RESULTS.md, "An exact first iteration"). The check's power depends on the
#: number of rows checked, not on their share: every 64th row, as until
#: 2026-12, made an exact search of 3,900 rows against every centre in a
#: chunk of 250,000 (128 MB at d = 128), where 384 rows tell as much. (At
#: k = 4096, chunks of 25,000 rows, 258 rows let one chunk's check in a fit
#: fail on 6 misses, and that chunk fall back to IVF, where 391 had passed.)
CANDIDATE_CHECKED_ROWS = 384
CANDIDATE_MAX_MISSES = 0.005
CANDIDATE_CHECK_SIGMAS = 3.0


def _candidates_hold(
    data: np.ndarray,
    centers: np.ndarray,
    centers64: np.ndarray,
    table: np.ndarray,
    labels: np.ndarray,
    sq_dist: np.ndarray,
) -> bool:
    """Move the rows to their candidates (:func:`candidate_labels`, their squared
    distances into ``sq_dist``) if a sample says they hold.

    About :data:`CANDIDATE_CHECKED_ROWS` rows spread over the chunk (from its
    first, :func:`_checked_rows`) are searched exactly first; when more of
    them have a centre strictly nearer than their best candidate than a
    miss rate of :data:`CANDIDATE_MAX_MISSES` explains (by
    :data:`CANDIDATE_CHECK_SIGMAS` Poisson standard deviations), the
    candidates miss too much here (as when centres still cross between
    groups of rows: k about the number of blobs), ``labels`` are left as
    they were and False is returned.
    """
    sample = _checked_rows(data)
    checked = np.ascontiguousarray(data[sample])
    candidate = labels[sample].copy()
    screen = _screen(data, centers64)
    candidate_labels(
        checked, centers64, table, candidate, in_label_order(candidate, len(table)), screen
    )
    if _misses_too_many(checked, centers, centers64, candidate):
        return False
    order = in_label_order(labels, len(table))
    candidate_labels(data, centers64, table, labels, order, screen, sq_dist)
    return True


def _screen(data: np.ndarray, centers64: np.ndarray) -> tuple[np.ndarray, float] | None:
    """The float32 first look of the candidate scans over float32 rows
    (:func:`~kmeans_dask._kernels.float32_screen.float32_screen`); None for float64 rows,
    which are scored in float64 alone."""
    return float32_screen(centers64) if data.dtype == np.float32 else None


def _checked_rows(data: np.ndarray) -> slice:
    """The rows a chunk's candidate check searches exactly: every
    ``len(data) // CANDIDATE_CHECKED_ROWS``-th from the first (every row of a
    chunk of fewer than twice as many)."""
    return slice(None, None, max(1, len(data) // CANDIDATE_CHECKED_ROWS))


def _misses_too_many(
    checked: np.ndarray, centers: np.ndarray, centers64: np.ndarray, found: np.ndarray
) -> bool:
    """Whether more of the ``checked`` rows have a centre strictly nearer than the
    label their candidates ``found`` (-1: none, not counted) than a miss rate of
    :data:`CANDIDATE_MAX_MISSES` explains, by :data:`CANDIDATE_CHECK_SIGMAS`
    Poisson standard deviations."""
    exact = np.empty(len(checked), np.int32)
    if len(checked):
        exact[:] = prepared_search(
            "numpy", centers.astype(checked.dtype, copy=False)
        ).searcher.nearest(checked)
    assigned = np.flatnonzero(found >= 0)
    misses = 0
    if assigned.size:
        rows = np.ascontiguousarray(checked[assigned])
        exact_distance = np.empty(len(assigned))
        found_distance = np.empty(len(assigned))
        squared_distances(rows, exact[assigned], centers64, exact_distance)
        squared_distances(rows, found[assigned], centers64, found_distance)
        misses = np.count_nonzero(found_distance > exact_distance)
    expected = CANDIDATE_MAX_MISSES * len(checked)
    return misses > expected + CANDIDATE_CHECK_SIGMAS * math.sqrt(expected)


#: Rows left without candidates are searched exactly while they number fewer
#: than this many times ``sqrt(k)`` (about the IVF lists): indexing the
#: centres for IVF (a Faiss k-means over them) costs as much as searching
#: about ``20 sqrt(k)`` rows exactly (20 ms against 14 us a row at k = 4096,
#: d = 128, one thread on the AMD EPYC), and a candidate pass typically
#: leaves a few dozen rows per chunk (those of centres that moved too far).
EXACT_UNASSIGNED_ROWS_PER_ROOT_K = 16


def _search_unassigned(
    data: np.ndarray, labels: np.ndarray, centers: np.ndarray, search: str
) -> np.ndarray:
    """Label the rows whose label is -1 with ``search``'s searcher, block by block;
    exactly when they are few (:data:`EXACT_UNASSIGNED_ROWS_PER_ROOT_K`). Returns
    those rows."""
    unassigned = np.flatnonzero(labels < 0)
    if not unassigned.size:
        return unassigned
    if unassigned.size < EXACT_UNASSIGNED_ROWS_PER_ROOT_K * math.sqrt(len(centers)):
        search = "numpy"
    searcher = prepared_search(search, centers.astype(data.dtype, copy=False)).searcher
    for start in range(0, unassigned.size, searcher.block_rows):
        rows = unassigned[start : start + searcher.block_rows]
        labels[rows] = searcher.nearest(data[rows])
    return unassigned


def nearest(data: np.ndarray, centers: np.ndarray, search: str):
    """Nearest centre and exact squared distance of every row of host ``data``.

    Outside a Dask worker the rows are split over the cores (threads).

    Returns
    -------
    labels : (n,) int32
    sq_dist : (n,) float64
    """
    parts = map_row_blocks(
        lambda block: _nearest_with_sq_dist(block, None, centers, search)[:2], data
    )
    if len(parts) == 1:
        return parts[0]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def statistics_and_labels(
    data: np.ndarray,
    weights: np.ndarray | None,
    centers: np.ndarray,
    search: str,
    out: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[ClusterStats, np.ndarray, np.ndarray]:
    """Assign host rows and accumulate their statistics, in one pass per block.

    Returns the statistics, each row's label (int32) and exact squared
    distance (float64), the latter two in ``out`` when given.
    """
    n_clusters, n_features = centers.shape
    sums = aligned_zeros((n_clusters, n_features))
    counts = np.zeros(n_clusters)
    with single_threaded_native():
        labels, sq_dist, inertia = _nearest_with_sq_dist(
            data, weights, centers, search, sums, counts, out
        )
    return ClusterStats(sums, counts, inertia), labels, sq_dist
