"""The chunk operations written against the Python array API standard.

The same code runs on any library that implements the standard (through
``array-api-compat`` for NumPy and CuPy; ``array-api-strict`` checks in CI
that nothing outside the standard is used). Rows stay in the library's
memory for the whole fit; every pass returns small host NumPy results.

The standard has no scatter-add or bincount, and the atomics such kernels
use on GPUs make sums vary from run to run. Per-cluster sums are therefore
one-hot matrix products over blocks of rows (:func:`segment_sums`): a fixed
order of additions, so the same inputs give the same sums every time. The
nearest-centre search is the GEMM expansion ``||c||^2 - 2 c . x`` with an
argmin (ties to the lowest index); distances to the chosen centre are then
computed exactly as ``sum((x - c) ** 2)`` in float64.

Random draws use the host's counter-based generator
(:mod:`kmeans_dask._kernels.rng`), so a sample depends on the seed and the
global row indices only, as on the host.
"""

from __future__ import annotations

import importlib
from typing import Any

import numpy as np
from array_api_compat import array_namespace

from kmeans_dask._kernels.rng import row_uniforms
from kmeans_dask._worker.chunks import Chunk
from kmeans_dask._worker.ops import HostOnlyPassesRefused, LloydPass
from kmeans_dask._worker.results import (
    FAR_ROWS,
    ChunkSummary,
    ClusterStats,
    NearestCandidate,
    RankedRows,
    nonfinite_positions,
)

#: Elements of the (rows x centres) score and one-hot blocks: bounded memory
#: for any k, large enough for matrix products to run at speed.
BLOCK_ELEMENTS = 1 << 22


class ArrayAPIOps(HostOnlyPassesRefused):
    """:class:`~kmeans_dask._worker.ops.ChunkOps` for rows held by an array-API library.

    Parameters
    ----------
    namespace : str
        Module of the array library (``"array_api_strict"``, ``"cupy"``,
        ``"numpy"``...); resolved through ``array-api-compat`` where it wraps
        the library, so NumPy and CuPy get their standard-conforming face.
    """

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace
        self.name = f"array-api:{namespace}"
        self._xp: Any = None

    def __reduce__(self):
        return ArrayAPIOps, (self.namespace,)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ArrayAPIOps) and other.namespace == self.namespace

    def __hash__(self) -> int:
        return hash(self.name)

    @property
    def xp(self) -> Any:
        """The array namespace."""
        if self._xp is None:
            try:
                self._xp = importlib.import_module(f"array_api_compat.{self.namespace}")
            except ImportError:
                self._xp = importlib.import_module(self.namespace)
        return self._xp

    # --- moving rows ---------------------------------------------------------------

    def place(self, block, weights, offset: int, dtype) -> Chunk:
        return self.resident(block, weights, offset, dtype)

    def resident(self, block, weights, offset: int, dtype) -> Chunk:
        """A chunk of ``block`` in this library's memory (what ``place`` does here)."""
        xp = self.xp
        dtype = _xp_dtype(xp, dtype)
        data = xp.asarray(_host_or_same(block, xp), dtype=dtype)
        if weights is not None:
            weights = xp.reshape(xp.asarray(_host_or_same(weights, xp), dtype=xp.float64), (-1,))
        return Chunk(data, weights, int(offset), self)

    @staticmethod
    def to_host(array: Any) -> np.ndarray:
        """A host NumPy copy of ``array``."""
        if isinstance(array, np.ndarray):
            return array
        if hasattr(array, "get"):  # CuPy: copy from the device
            return array.get()
        return np.from_dlpack(array)

    def handed_over(self, labels: Any) -> np.ndarray:
        return self.to_host(labels)

    # --- data check ----------------------------------------------------------------

    def summarize(self, chunk: Chunk, with_digest: bool) -> ChunkSummary:
        from kmeans_dask._worker.host_ops import digest, weight_checks

        xp = self.xp
        data64 = xp.astype(chunk.data, xp.float64)
        n_rows, n_features = data64.shape
        if n_rows:
            mean = xp.mean(data64, axis=0)
            m2 = xp.sum((data64 - mean) ** 2, axis=0)
        else:
            mean = m2 = xp.zeros(n_features, dtype=xp.float64)
        mean, m2 = self.to_host(mean).copy(), self.to_host(m2).copy()
        count, positions = 0, []
        if not bool(xp.all(xp.isfinite(chunk.data))) or not np.isfinite(m2).all():
            count, positions = nonfinite_positions(self.to_host(chunk.data), chunk.offset)
            if count:
                mean[:] = 0.0
                m2[:] = 0.0
        weights = None if chunk.weights is None else self.to_host(chunk.weights)
        weight_sum, bad_count, bad_rows = weight_checks(weights, n_rows, chunk.offset)
        return ChunkSummary(
            n_rows=n_rows,
            nonfinite_count=count,
            nonfinite_positions=positions,
            column_mean=mean,
            column_m2=m2,
            weight_sum=weight_sum,
            bad_weight_count=bad_count,
            bad_weight_rows=bad_rows,
            digest=(
                digest(np.ascontiguousarray(self.to_host(chunk.data)), weights, chunk.offset)
                if with_digest
                else 0
            ),
        )

    # --- Lloyd -----------------------------------------------------------------------

    def lloyd_pass(
        self,
        chunk: Chunk,
        centers: np.ndarray,
        search: str,
        keep_labels: bool,
        reuse: Any | None = None,
    ) -> LloydPass:
        xp = self.xp
        labels, sq_dist = self.nearest(chunk, centers, search)
        n_clusters = centers.shape[0]
        weights = self._weights(chunk)
        sums, counts = segment_sums(xp, chunk.data, weights, labels, n_clusters)
        inertia = float(xp.sum(weights * sq_dist)) if chunk.n_rows else 0.0
        stats = ClusterStats(self.to_host(sums), self.to_host(counts), inertia)
        stats.farthest = self.top_rows(chunk, sq_dist, labels, FAR_ROWS)
        return LloydPass(stats, labels)

    def nearest(self, chunk: Chunk, centers: np.ndarray, search: str) -> tuple[Any, Any]:
        """Nearest centre by the GEMM expansion, exact squared distance in float64.

        ``search`` names a host searcher; these ops search exactly with matrix
        products whatever it says (approximate searches are host-only).
        """
        return nearest_rows(self.xp, chunk.data, centers)

    # --- ranked and random rows ------------------------------------------------------

    def top_rows(self, chunk: Chunk, score: Any, labels: Any, count: int) -> RankedRows:
        xp = self.xp
        count = min(count, chunk.n_rows)
        order = xp.argsort(-xp.asarray(score), stable=True)[:count]
        host_order = self.to_host(order).astype(np.int64)
        weights = (
            np.ones(count)
            if chunk.weights is None
            else self.to_host(xp.take(chunk.weights, order, axis=0))
        )
        return RankedRows(
            self.to_host(xp.take(xp.asarray(score), order, axis=0)),
            host_order + chunk.offset,
            self.to_host(xp.take(chunk.data, order, axis=0)),
            weights,
            self.to_host(xp.take(xp.asarray(labels), order, axis=0)).astype(np.int32),
        )

    def random_keys(self, chunk: Chunk, seed: int, stream: int, weighted: bool) -> Any:
        from kmeans_dask._worker.host_ops import sampling_keys

        uniforms = row_uniforms(seed, stream, chunk.offset, chunk.offset + chunk.n_rows)
        host_weights = self.to_host(self._weights(chunk)) if weighted else None
        return self.xp.asarray(sampling_keys(uniforms, host_weights))

    # --- k-means|| -------------------------------------------------------------------

    def fold_candidates(
        self,
        chunk: Chunk,
        state: NearestCandidate | None,
        candidates: np.ndarray,
        first_index: int,
        search: str,
    ) -> NearestCandidate:
        xp = self.xp
        labels, sq_dist = nearest_rows(xp, chunk.data, candidates)
        index = xp.astype(labels, xp.int64) + first_index
        if state is None:
            return NearestCandidate(sq_dist, index)
        closer = sq_dist < state.sq_dist
        return NearestCandidate(
            xp.where(closer, sq_dist, state.sq_dist), xp.where(closer, index, state.index)
        )

    def weighted_cost(self, chunk: Chunk, state: NearestCandidate) -> float:
        if not chunk.n_rows:
            return 0.0
        return float(self.xp.sum(self._weights(chunk) * state.sq_dist))

    def sample_by_cost(
        self, chunk: Chunk, state: NearestCandidate | None, scale: float, seed: int, stream: int
    ) -> np.ndarray:
        xp = self.xp
        if state is None or scale <= 0:
            return self.to_host(chunk.data[:0, ...])
        uniforms = xp.asarray(
            row_uniforms(seed, stream, chunk.offset, chunk.offset + chunk.n_rows)
        )
        kept = uniforms < scale * self._weights(chunk) * state.sq_dist
        return self.to_host(xp.take(chunk.data, xp.nonzero(kept)[0], axis=0))

    def candidate_weights(
        self, chunk: Chunk, state: NearestCandidate, n_candidates: int
    ) -> np.ndarray:
        xp = self.xp
        _, counts = segment_sums(
            xp, None, self._weights(chunk), xp.astype(state.index, xp.int32), n_candidates
        )
        return self.to_host(counts)

    def _weights(self, chunk: Chunk) -> Any:
        xp = self.xp
        if chunk.weights is None:
            return xp.ones(chunk.n_rows, dtype=xp.float64)
        return chunk.weights


def nearest_rows(xp: Any, data: Any, centers: np.ndarray) -> tuple[Any, Any]:
    """Nearest of ``centers`` (int32, ties to the lowest index) and exact squared distance."""
    n_rows = data.shape[0]
    centers_x = xp.asarray(np.ascontiguousarray(centers), dtype=data.dtype)
    center_sq_norms = xp.sum(centers_x * centers_x, axis=1)
    step = max(1, BLOCK_ELEMENTS // max(centers.shape[0], 1))
    parts = []
    for start in range(0, n_rows, step):
        block = data[start : min(start + step, n_rows), ...]
        scores = center_sq_norms[None, :] - 2.0 * (block @ centers_x.T)
        parts.append(xp.astype(xp.argmin(scores, axis=1), xp.int32))
    labels = xp.concat(parts) if parts else xp.zeros(0, dtype=xp.int32)
    assigned = xp.take(xp.asarray(centers, dtype=xp.float64), xp.astype(labels, xp.int64), axis=0)
    diff = xp.astype(data, xp.float64) - assigned
    return labels, xp.sum(diff * diff, axis=1)


def center_distances(xp: Any, data: Any, centers: np.ndarray) -> Any:
    """(n, k) Euclidean distances of the rows to the centres, in the rows' memory."""
    centers_x = xp.asarray(np.ascontiguousarray(centers), dtype=data.dtype)
    squared = (
        xp.sum(data * data, axis=1)[:, None]
        + xp.sum(centers_x * centers_x, axis=1)[None, :]
        - 2.0 * (data @ centers_x.T)
    )
    return xp.sqrt(xp.clip(squared, 0.0, None))


def segment_sums(
    xp: Any, data: Any | None, weights: Any, labels: Any, n_segments: int
) -> tuple[Any | None, Any]:
    """Per-segment weighted sums of ``data`` (None: skipped) and of ``weights``, in float64.

    Blocks of rows are summed as one-hot matrix products, in a fixed order:
    deterministic where scatter-adds with atomics are not.
    """
    n_rows = weights.shape[0]
    segments = xp.arange(n_segments, dtype=xp.int32)
    counts = xp.zeros(n_segments, dtype=xp.float64)
    sums = None if data is None else xp.zeros((n_segments, data.shape[1]), dtype=xp.float64)
    step = max(1, BLOCK_ELEMENTS // max(n_segments, 1))
    for start in range(0, n_rows, step):
        stop = min(start + step, n_rows)
        one_hot = xp.astype(labels[start:stop, None] == segments[None, :], xp.float64)
        weighted = one_hot * weights[start:stop, None]
        counts = counts + xp.sum(weighted, axis=0)
        if sums is not None:
            sums = sums + weighted.T @ xp.astype(data[start:stop, ...], xp.float64)
    return sums, counts


def _xp_dtype(xp: Any, dtype: Any) -> Any:
    """The namespace's float dtype for a NumPy or namespace ``dtype``."""
    name = str(np.dtype(dtype)) if isinstance(dtype, (np.dtype, type, str)) else None
    if name is None:
        return dtype
    return {"float32": xp.float32, "float64": xp.float64}[name]


def _host_or_same(array: Any, xp: Any) -> Any:
    """``array`` as the namespace can take it: its own arrays as they are, others via NumPy."""
    try:
        array_namespace(array)
    except TypeError:
        return np.asarray(array)
    return array
