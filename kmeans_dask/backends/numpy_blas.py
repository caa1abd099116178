"""Exact assignment: nearest centres from ``||c_j||^2 - 2 c_j . x_i``.

For a block ``B`` (b, d) and centres ``C`` (k, d) the nearest centre of row
``i`` minimises ``||c_j||^2 - 2 c_j . x_i`` (``||x_i||^2`` is the same for
every ``j``). Two searchers compute these scores, whichever is faster for
the shape (measured with ``scripts/bench_search.py``):

* up to :data:`ROW_LAYOUT_MAX_CENTERS` centres and ``k * d`` up to
  :data:`ROW_LAYOUT_MAX_CENTERS_X_FEATURES`, the fused kernels of
  :mod:`kmeans_dask._kernels.fused_search` keep a few rows' scores in vector
  registers and reduce them there, with no score matrix in memory
  (:class:`RowSearcher`), faster at small and medium k than a BLAS GEMM
  and argmin, the column layout and Faiss's ``IndexFlatL2``
  (``scripts/bench_search.py``, RESULTS.md). A plain or Hamerly Lloyd pass
  over a whole chunk is one compiled call;
* above that, BLAS computes ``-2 C B^T`` as a (k, b) matrix, reduced over
  contiguous points (:class:`ColumnSearcher`): once the centres outgrow the
  caches, GEMM's cache blocking keeps up with the fused kernels.

``nearest_two`` also returns a guaranteed lower bound on the distance to the
runner-up centre, which seeds the Hamerly bounds of :mod:`kmeans_dask._worker.bounds`.
The expansion is inexact, so the bound subtracts the worst-case rounding
error of a ``d``-term dot product (in any order of summation):
``|fl(score) - score| <= (d + 4) * eps * (||c||^2 + ||x||^2)``.
"""

from __future__ import annotations

import threading

import numpy as np

from kmeans_dask._kernels.block_kernels import (
    argmin2_columns,
    argmin_columns,
    assign_and_accumulate_rows,
    bounded_pass_rows,
    runner_up_distances,
)
from kmeans_dask._kernels.fused_search import nearest_rows, pack_centers
from kmeans_dask._kernels.vector_target import VectorTarget, compile_target

#: Most centres and largest ``k * d`` searched by the fused kernels; above
#: them the column layout is used (``scripts/bench_search.py``, RESULTS.md).
#: The fused kernels were faster at every shape measured, up to k = 16384 and
#: ``k * d = 16384 * 256``: with AVX2 (AMD EPYC Zen 3, 2026-12), with AVX-512
#: on AMD Zen 4 (1.17-1.59x, 2026-12-06) and, since they score 6 rows per
#: centre vector loaded and go in tiles of rows, on an Intel Xeon (Ice Lake;
#: 1.4-2.5x, 2026-12-07), where with 4 rows the column layout had kept up
#: above 2048 centres or ``k * d = 65536``. Those limits stay for the 128-bit targets
#: (NEON, SSE), which were not measured and leave the large shapes to BLAS.
_WIDE_ROW_LAYOUT_LIMITS = (16384, 16384 * 256)
_NARROW_ROW_LAYOUT_LIMITS = (2048, 65536)


def row_layout_limits(target: VectorTarget) -> tuple[int, int]:
    """Most centres and largest ``k * d`` the fused kernels search on ``target``."""
    if target.vector_bits >= 256:
        return _WIDE_ROW_LAYOUT_LIMITS
    return _NARROW_ROW_LAYOUT_LIMITS


ROW_LAYOUT_MAX_CENTERS, ROW_LAYOUT_MAX_CENTERS_X_FEATURES = row_layout_limits(compile_target())

#: Smallest ``k * d`` searched by the fused kernels: below it most of their
#: vector lanes would score padding and the column layout is faster.
ROW_LAYOUT_MIN_CENTERS_X_FEATURES = 16
# The column layout's blocks hold about 2 MiB of scores: big enough for GEMM,
# small enough that the rows stay in L2 for the statistics computed after the
# search (the fused passes, which store no scores, use the same heights).
_BUFFER_ELEMENTS = 1 << 19
#: ``bounded_pass_rows``'s movement that searches every row: no shifts, and
#: of the types of a real movement, so that one signature serves both.
_SEARCH_EVERY_ROW = (np.empty(0), 0.0, 0, 0.0, np.empty(0))
_MIN_BLOCK_ROWS = 256
_MAX_BLOCK_ROWS = 4096


class _ScoreSearcher:
    """What both layouts share: the centres' norms, the runner-up error bound, the block height."""

    def __init__(self, centers: np.ndarray) -> None:
        self._dtype = centers.dtype
        # In float64 without a float64 copy of the centres (8 MiB at k = 16384, d = 128).
        self._center_sq_norms = np.einsum("ij,ij->i", centers, centers, dtype=np.float64)
        # Worst-case rounding error of a score, per unit of ||c||^2 + ||x||^2.
        self._error_scale = 2.0 * (centers.shape[1] + 4) * float(np.finfo(self._dtype).eps)
        self._max_center_sq_norm = float(self._center_sq_norms.max(initial=0.0))
        self.block_rows = int(
            np.clip(_BUFFER_ELEMENTS // max(centers.shape[0], 1), _MIN_BLOCK_ROWS, _MAX_BLOCK_ROWS)
        )

    def _runner_up_distances(self, block: np.ndarray, second: np.ndarray) -> np.ndarray:
        runner_up = np.empty(block.shape[0])
        runner_up_distances(block, second, self._error_scale, self._max_center_sq_norm, runner_up)
        return runner_up


class RowSearcher(_ScoreSearcher):
    """Nearest-centre search by the fused register kernels, for up to a few thousand centres."""

    fused_passes = True

    def __init__(self, centers: np.ndarray) -> None:
        super().__init__(centers)
        self._packed = pack_centers(np.asarray(centers, dtype=self._dtype), self._center_sq_norms)

    def nearest(self, block: np.ndarray) -> np.ndarray:
        """Index of the nearest centre for each row of ``block``."""
        labels = np.empty(block.shape[0], dtype=np.int32)
        nearest_rows(np.ascontiguousarray(block, dtype=self._dtype), *self._packed, labels)
        return labels

    def assign_and_accumulate(
        self,
        data: np.ndarray,
        weights: np.ndarray | None,
        centers: np.ndarray,
        labels: np.ndarray,
        sums: np.ndarray | None,
        counts: np.ndarray | None,
        sq_dist: np.ndarray,
        inertia: float = 0.0,
    ) -> float:
        """Label every row and add it into ``sums`` and ``counts``, in one compiled pass.

        The same result as :meth:`nearest` and
        :func:`~kmeans_dask._kernels.block_kernels.accumulate`
        over blocks of :attr:`block_rows` rows. ``centers`` is the float64 copy
        of the centres, ``labels`` and ``sq_dist`` receive each row's centre and
        exact squared distance; returns ``inertia`` plus the blocks' weighted
        inertias, added in order (so calls on successive runs of whole blocks
        give the result of one call). With ``sums`` (and ``counts``) None
        nothing is accumulated.
        """
        return assign_and_accumulate_rows(
            np.ascontiguousarray(data),
            weights,
            *self._packed,
            centers,
            self.block_rows,
            labels,
            sums,
            counts,
            sq_dist,
            inertia,
        )

    def bounded_pass(
        self,
        data: np.ndarray,
        weights: np.ndarray | None,
        centers: np.ndarray,
        dense_fraction: float,
        bounds: tuple[np.ndarray, np.ndarray, np.ndarray],
        movement: tuple | None,
        statistics: tuple[np.ndarray, np.ndarray, np.ndarray],
    ) -> float:
        """One Hamerly pass in a single compiled call (see ``bounded_pass_rows``).

        ``bounds`` is ``(labels, upper, lower)``, updated in place;
        ``movement`` is None to search every row; ``statistics`` is
        ``(sums, counts, sq_dist)``; returns the inertia.
        """
        if movement is None:
            movement = _SEARCH_EVERY_ROW
        return bounded_pass_rows(
            np.ascontiguousarray(data),
            weights,
            *self._packed,
            self._error_scale,
            self._max_center_sq_norm,
            centers,
            self.block_rows,
            dense_fraction,
            *bounds,
            movement,
            *statistics,
        )

    def nearest_two(self, block: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Nearest centre of each row and a lower bound on the distance to any other.

        Returns
        -------
        labels : (b,) int32
        runner_up : (b,) float64
            For each row, a number no larger than its (unsquared) distance to
            every centre but ``labels[i]``: ``inf`` when there is one centre.
        """
        block = np.ascontiguousarray(block, dtype=self._dtype)
        labels = np.empty(block.shape[0], dtype=np.int32)
        second = np.empty(block.shape[0], dtype=self._dtype)
        nearest_rows(block, *self._packed, labels, second)
        return labels, self._runner_up_distances(block, second)


class ColumnSearcher(_ScoreSearcher):
    """Nearest-centre search with a (k, b) score matrix, for many centres."""

    fused_passes = False

    def __init__(self, centers: np.ndarray) -> None:
        super().__init__(centers)
        self._minus_two_centers = np.ascontiguousarray(-2.0 * centers, dtype=self._dtype)
        self._bias = self._center_sq_norms.astype(self._dtype)
        # One score buffer per thread: a prepared searcher serves all the
        # threads of its worker process at once.
        self._buffers = threading.local()

    def _score_buffer(self) -> np.ndarray:
        """This thread's (k, block_rows) score matrix."""
        scores = getattr(self._buffers, "scores", None)
        if scores is None:
            shape = (self._bias.shape[0], self.block_rows)
            scores = self._buffers.scores = np.empty(shape, dtype=self._dtype)
        return scores

    def nearest(self, block: np.ndarray) -> np.ndarray:
        """Index of the nearest centre for each row of ``block``."""
        labels = np.empty(block.shape[0], dtype=np.int32)
        for start in range(0, block.shape[0], self.block_rows):
            rows = block[start : start + self.block_rows]
            scores = self._score_buffer()[:, : rows.shape[0]]
            np.matmul(self._minus_two_centers, rows.T, out=scores)
            argmin_columns(scores, self._bias, labels[start : start + rows.shape[0]])
        return labels

    def nearest_two(self, block: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Nearest centre of each row and a lower bound on the distance to any other.

        See :meth:`RowSearcher.nearest_two`.
        """
        labels = np.empty(block.shape[0], dtype=np.int32)
        second = np.empty(block.shape[0], dtype=self._dtype)
        for start in range(0, block.shape[0], self.block_rows):
            rows = block[start : start + self.block_rows]
            stop = start + rows.shape[0]
            scores = self._score_buffer()[:, : rows.shape[0]]
            np.matmul(self._minus_two_centers, rows.T, out=scores)
            argmin2_columns(scores, self._bias, labels[start:stop], second[start:stop])
        return labels, self._runner_up_distances(block, second)


#: Either searcher; both give ``nearest`` and ``nearest_two``.
ExactSearcher = RowSearcher | ColumnSearcher


def exact_searcher(centers: np.ndarray) -> ExactSearcher:
    """The faster layout's searcher for ``centers`` (k, d), in the data's dtype."""
    n_centers, n_features = centers.shape
    if (
        n_centers <= ROW_LAYOUT_MAX_CENTERS
        and ROW_LAYOUT_MIN_CENTERS_X_FEATURES
        <= n_centers * n_features
        <= ROW_LAYOUT_MAX_CENTERS_X_FEATURES
    ):
        return RowSearcher(centers)
    return ColumnSearcher(centers)


class NumpyBackend:
    """Exact search by compiled register kernels, or BLAS GEMM for large k * d (always there)."""

    name = "numpy"

    def searcher(self, centers: np.ndarray) -> ExactSearcher:
        return exact_searcher(centers)
