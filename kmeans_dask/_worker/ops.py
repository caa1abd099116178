"""The seam between the fit and the devices: every operation on a chunk's rows.

A :class:`ChunkOps` implementation owns how a chunk's rows are held (host
NumPy memory, a GPU, any array-API library) and does every pass over them:
placing a block, the data check's moments, a Lloyd pass with or without
bounds, nearest centres with exact squared distances, the farthest rows,
the k-means|| passes. What it returns is small and on the host: float64
k x d statistics (or, for a pass from the rows' previous labels, what the
moved rows changed in them), a few ranked rows, candidate rows, a cost. Everything
above it (the task functions of :mod:`kmeans_dask._worker.tasks`, the
reduction tree, the centre update, k-means|| on the client, checkpoints,
memos, recovery, actors and tasks) works the same for every implementation
and never touches the rows themselves.

A chunk carries its ops (:attr:`~kmeans_dask._worker.chunks.Chunk.ops`), so
a task finds them where it finds the rows. Implementations are small
picklable objects: they travel with the placing tasks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

import numpy as np

if TYPE_CHECKING:
    from kmeans_dask._worker.bounds import CenterMovement, RowBounds
    from kmeans_dask._worker.chunks import Chunk
    from kmeans_dask._worker.results import (
        ChunkSummary,
        ClusterStats,
        NearestCandidate,
        RankedRows,
        StatsChange,
    )


@dataclass
class LloydPass:
    """What a Lloyd pass over a chunk leaves: statistics, labels, maybe bounds."""

    stats: ClusterStats
    """Host float64 statistics, with the chunk's farthest rows."""
    labels: Any
    """(n,) int32 label of each row, in the chunk's memory; scratch unless kept."""
    bounds: RowBounds | None = None
    """The rows' Hamerly bounds for these centres, when the pass kept bounds."""


class RowCandidates(NamedTuple):
    """Each row's own candidates (:meth:`ChunkOps.pass_keeping_candidates`), kept
    next to its chunk for the later passes of a run."""

    ids: Any
    """(n, m) int32 the ``m`` nearest centres in the row's nearest IVF list, nearest first."""
    order: Any
    """(n,) int32 the rows, list by list: the order the later passes visit them in."""


class ChunkOps(Protocol):
    """Every operation on the rows of a chunk, for one kind of memory."""

    name: str
    """Short name, shown in errors and in the dashboard's worker logs."""
    keeps_bounds: bool
    """Whether :meth:`bounded_pass` is offered (Hamerly bounds next to the rows)."""
    scans_candidates: bool
    """Whether :meth:`candidate_pass`, :meth:`moved_centers_pass`,
    :meth:`pass_keeping_candidates`, :meth:`row_candidates_pass`,
    :meth:`change_of_labels` and :meth:`statistics_of_labels` are offered (each
    row searched from its previous centre: among its neighbours, among the
    moved centres, or among its own candidates)."""

    def place(self, block: Any, weights: Any, offset: int, dtype: np.dtype) -> Chunk:
        """A chunk holding ``block`` (rows) and ``weights`` in this memory, as ``dtype``."""

    def summarize(self, chunk: Chunk, with_digest: bool) -> ChunkSummary:
        """Finiteness, column moments, weight checks and (optionally) the content digest."""

    def lloyd_pass(
        self,
        chunk: Chunk,
        centers: np.ndarray,
        search: str,
        keep_labels: bool,
        reuse: Any | None = None,
    ) -> LloydPass:
        """Assign every row to its nearest centre and accumulate the statistics.

        ``keep_labels``: the labels must outlive the call (else they may sit
        in memory the next call overwrites). ``reuse``: labels of an earlier
        pass over this chunk that nothing holds any more; the kept labels
        may be written into them rather than into new memory.
        """

    def bounded_pass(
        self,
        chunk: Chunk,
        centers: np.ndarray,
        search: str,
        previous: RowBounds | None,
        movement: CenterMovement | None,
    ) -> LloydPass:
        """:meth:`lloyd_pass` skipping rows whose bounds prove their centre unchanged."""

    def candidate_pass(
        self, chunk: Chunk, centers: np.ndarray, search: str, table: np.ndarray, labels: Any
    ) -> StatsChange:
        """Move each row to the nearest of ``table[labels[row]]`` and return what that
        changed in the chunk's statistics (:meth:`change_of_labels`).

        ``labels`` (kept from the previous pass over this chunk, held by
        nothing else) are overwritten with the new labels. ``table`` (k, m)
        int32 lists each centre's candidates
        (:func:`~kmeans_dask.backends.approximate.candidate_table`); the rows
        of a centre whose table row is -1 are searched with ``search``.
        """

    def pass_keeping_candidates(
        self, chunk: Chunk, centers: np.ndarray, search: str, m: int
    ) -> tuple[LloydPass, RowCandidates]:
        """:meth:`lloyd_pass` of the IVF ``search``, also returning each row's ``m``
        nearest centres in the list nearest to it
        (:meth:`~kmeans_dask.backends.approximate.IVFSearcher.nearest_with_candidates`)."""

    def row_candidates_pass(
        self,
        chunk: Chunk,
        centers: np.ndarray,
        candidates: RowCandidates,
        everyone: Any,
        labels: Any,
    ) -> StatsChange | None:
        """Move each row to the nearest of its previous centre, its own ``candidates``
        (those :meth:`pass_keeping_candidates` kept) and the centres in
        ``everyone``, exact float64 distances, and return what that changed in
        the chunk's statistics (:meth:`change_of_labels`). ``labels`` (the
        previous pass's, held by nothing else) are overwritten. None, and the
        labels left as they were, where a sample of rows searched exactly says
        the candidates miss too much (as the check of :meth:`candidate_pass`)."""

    def change_of_labels(
        self, chunk: Chunk, centers: np.ndarray, previous: Any, labels: Any
    ) -> StatsChange:
        """What relabelling the rows from ``previous`` to ``labels`` changed in the
        chunk's statistics: the sums of the clusters rows left or joined, and the
        whole counts, inertia and farthest rows of ``labels`` for ``centers``."""

    def statistics_of_labels(self, chunk: Chunk, centers: np.ndarray, labels: Any) -> ClusterStats:
        """The chunk's statistics with its rows assigned ``labels``, for ``centers``."""

    def moved_centers_pass(
        self,
        chunk: Chunk,
        centers: np.ndarray,
        search: str,
        moved: np.ndarray,
        moved_from: np.ndarray,
        labels: Any,
        as_change: bool = False,
    ) -> LloydPass | StatsChange:
        """:meth:`lloyd_pass` of the exact ``search``, given each row's nearest centre
        before the centres ``moved`` moved from ``moved_from`` (their positions then).

        ``labels`` (kept from the previous pass over this chunk, an exact
        one, held by nothing else) are overwritten with the new labels, which
        the pass returns. A row whose centre did not move, or moved nearer to
        it, is searched among ``moved`` alone
        (:mod:`kmeans_dask._worker.moved_centers`). With ``as_change``, it
        returns what it changed in the chunk's statistics instead
        (:meth:`change_of_labels`): for a pass from approximate labels, whose
        statistics need not be a plain pass's bit for bit.
        """

    def nearest(self, chunk: Chunk, centers: np.ndarray, search: str) -> tuple[Any, Any]:
        """Nearest centre (int32) and exact squared distance (float64) of each row."""

    def top_rows(self, chunk: Chunk, score: Any, labels: Any, count: int) -> RankedRows:
        """The ``count`` rows with the highest ``score``, as host arrays."""

    def random_keys(self, chunk: Chunk, seed: int, stream: int, weighted: bool) -> Any:
        """Efraimidis-Spirakis keys ``log(u) / w`` of the rows (see ``random_rows``)."""

    def fold_candidates(
        self,
        chunk: Chunk,
        state: NearestCandidate | None,
        candidates: np.ndarray,
        first_index: int,
        search: str,
    ) -> NearestCandidate:
        """Each row's nearest candidate after adding ``candidates`` (updates ``state``)."""

    def weighted_cost(self, chunk: Chunk, state: NearestCandidate) -> float:
        """``sum(w * d^2)`` of the rows to their nearest candidate."""

    def sample_by_cost(
        self,
        chunk: Chunk,
        state: NearestCandidate | None,
        scale: float,
        seed: int,
        stream: int,
    ) -> np.ndarray:
        """Host copies of the rows kept with probability ``min(1, scale * w * d^2)``.

        ``scale`` 0 keeps no row (and ``state`` may then be None).
        """

    def candidate_weights(
        self, chunk: Chunk, state: NearestCandidate, n_candidates: int
    ) -> np.ndarray:
        """(n_candidates,) float64 total weight of the rows nearest to each candidate."""

    def handed_over(self, labels: Any) -> Any:
        """The labels as the chunk's block of ``labels_`` (own memory, int32)."""


class HostOnlyPassesRefused:
    """The passes only host ops offer, refused by name: Hamerly bounds and the
    passes that scan candidates. For ops that set ``keeps_bounds`` and
    ``scans_candidates`` False (the tasks then never call these)."""

    keeps_bounds = False
    scans_candidates = False
    name: str

    def bounded_pass(self, chunk, centers, search, previous, movement) -> LloydPass:
        raise NotImplementedError(f"{self.name} keeps no Hamerly bounds (keeps_bounds is False)")

    def candidate_pass(self, chunk, centers, search, table, labels):
        self._refuse_candidates()

    def moved_centers_pass(
        self, chunk, centers, search, moved, moved_from, labels, as_change=False
    ):
        self._refuse_candidates()

    def pass_keeping_candidates(self, chunk, centers, search, m):
        self._refuse_candidates()

    def row_candidates_pass(self, chunk, centers, candidates, everyone, labels):
        self._refuse_candidates()

    def change_of_labels(self, chunk, centers, previous, labels):
        self._refuse_candidates()

    def statistics_of_labels(self, chunk, centers, labels):
        self._refuse_candidates()

    def _refuse_candidates(self):
        raise NotImplementedError(f"{self.name} scans no candidates (scans_candidates is False)")
