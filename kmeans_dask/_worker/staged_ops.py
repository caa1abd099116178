"""Rows kept in host memory and worked on in a device's memory, one chunk per pass.

For data larger than the GPUs' memory: a chunk that does not fit beside
the resident ones stays in the worker's host memory, and every pass copies
it into the device, runs the device's operations there and drops the copy.
Only that chunk's rows cross the bus, once per pass; everything else about
the fit is unchanged. The passes run the device's own code on the same
values, so the results are those of resident chunks bit for bit, and a fit
may mix resident and staged chunks.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from kmeans_dask._worker.chunks import Chunk
from kmeans_dask._worker.host_ops import host_ops
from kmeans_dask._worker.ops import ChunkOps, HostOnlyPassesRefused, LloydPass
from kmeans_dask._worker.results import ChunkSummary, NearestCandidate, RankedRows


class StagedOps(HostOnlyPassesRefused):
    """:class:`~kmeans_dask._worker.ops.ChunkOps` for host rows worked on by ``device``.

    ``device`` must offer ``resident(block, weights, offset, dtype)``: its
    placement without any choice of memory (a :class:`Chunk` in the device).
    """

    def __init__(self, device: ChunkOps) -> None:
        self.device = device
        self.name = f"staged:{device.name}"

    def __reduce__(self):
        return StagedOps, (self.device,)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, StagedOps) and other.device == self.device

    def __hash__(self) -> int:
        return hash(self.name)

    def place(self, block: Any, weights: Any, offset: int, dtype: np.dtype) -> Chunk:
        """The rows in host memory, aligned as the host operations keep them."""
        return replace(host_ops().place(block, weights, offset, dtype), ops=self)

    def on_device(self, chunk: Chunk) -> Chunk:
        """A copy of the chunk in the device's memory, for one pass."""
        return self.device.resident(chunk.data, chunk.weights, chunk.offset, chunk.data.dtype)

    def summarize(self, chunk: Chunk, with_digest: bool) -> ChunkSummary:
        return self.device.summarize(self.on_device(chunk), with_digest)

    def lloyd_pass(
        self,
        chunk: Chunk,
        centers: np.ndarray,
        search: str,
        keep_labels: bool,
        reuse: Any | None = None,
    ) -> LloydPass:
        return self.device.lloyd_pass(self.on_device(chunk), centers, search, keep_labels, reuse)

    def nearest(self, chunk: Chunk, centers: np.ndarray, search: str) -> tuple[Any, Any]:
        return self.device.nearest(self.on_device(chunk), centers, search)

    def top_rows(self, chunk: Chunk, score: Any, labels: Any, count: int) -> RankedRows:
        return self.device.top_rows(self.on_device(chunk), score, labels, count)

    def random_keys(self, chunk: Chunk, seed: int, stream: int, weighted: bool) -> Any:
        return self.device.random_keys(self.on_device(chunk), seed, stream, weighted)

    def fold_candidates(
        self,
        chunk: Chunk,
        state: NearestCandidate | None,
        candidates: np.ndarray,
        first_index: int,
        search: str,
    ) -> NearestCandidate:
        staged = self.on_device(chunk)
        return self.device.fold_candidates(staged, state, candidates, first_index, search)

    def weighted_cost(self, chunk: Chunk, state: NearestCandidate) -> float:
        return self.device.weighted_cost(self.on_device(chunk), state)

    def sample_by_cost(
        self, chunk: Chunk, state: NearestCandidate | None, scale: float, seed: int, stream: int
    ) -> np.ndarray:
        return self.device.sample_by_cost(self.on_device(chunk), state, scale, seed, stream)

    def candidate_weights(
        self, chunk: Chunk, state: NearestCandidate, n_candidates: int
    ) -> np.ndarray:
        return self.device.candidate_weights(self.on_device(chunk), state, n_candidates)

    def handed_over(self, labels: Any) -> Any:
        return self.device.handed_over(labels)
