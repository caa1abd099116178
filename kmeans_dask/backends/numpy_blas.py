"""Exact assignment with a BLAS GEMM and a compiled argmin.

For a block ``B`` (b, d) and centres ``C`` (k, d) the nearest centre of row
``i`` minimises ``||c_j||^2 - 2 c_j . x_i`` (``||x_i||^2`` is the same for
every ``j``). The scores come from SGEMM/DGEMM into a reused, cache-sized
buffer, in one of two layouts, whichever BLAS runs faster for the shape
(measured on every shape we benchmark; see ``scripts/bench.py``):

* up to :data:`ROW_LAYOUT_MAX_CENTERS` centres (and for all but the tiniest
  ``k * d``), ``B @ (-2 C^T)`` as (rows, k) tiles of up to 256 rows
  (:func:`tile_rows`), scored and reduced inside one compiled call
  (:class:`RowSearcher`). OpenBLAS runs these thin GEMMs without
  transposing the rows and with its small-matrix kernels: search measured
  1.1-1.9x faster than the column layout for k <= 128 (d = 8-128), on par
  at k = 256. A plain or Hamerly Lloyd pass over a whole chunk is one
  compiled call as well;
* above that, ``-2 C B^T`` as a (k, b) matrix reduced over contiguous points
  (:class:`ColumnSearcher`), 1.1-1.25x faster from k = 1024.

``nearest_two`` also returns a guaranteed lower bound on the distance to the
runner-up centre, which seeds the Hamerly bounds of :mod:`kmeans_dask._bounds`.
The GEMM expansion is inexact, so the bound subtracts the worst-case rounding
error of a ``d``-term dot product:
``|fl(score) - score| <= (d + 4) * eps * (||c||^2 + ||x||^2)``.
"""

from __future__ import annotations

import numpy as np

from kmeans_dask._kernels import (
    argmin2_columns,
    argmin_columns,
    argmin_rows32,
    argmin_rows64,
    assign_and_accumulate_rows,
    bounded_pass_rows,
    runner_up_distances,
)

#: Largest number of centres scored in the row layout.
ROW_LAYOUT_MAX_CENTERS = 256
#: Smallest ``k * d`` scored in the row layout: below it each row's reduction
#: is too short to vectorise and the column argmin wins (measured 0.6-0.86x
#: at d = 2, k <= 4; 1.4-2.8x for the row layout from k * d = 16 up).
ROW_LAYOUT_MIN_CENTERS_X_FEATURES = 16
#: Most rows per GEMM in the row layout.
_MAX_TILE_ROWS = 256
#: OpenBLAS hands a product of at most this many multiply-adds (rows x k x d)
#: to its small-matrix kernels, which skip packing the operands. For thin
#: products that is much faster than its blocked GEMM (k = 128, d = 32: 1.7x;
#: k = 256: 1.6x), so their tiles are cut to fit; from d = 128 or
#: k * d = 16384 the blocked GEMM over 256 rows wins (1.2-1.6x, measured).
_SMALL_GEMM_MULTIPLY_ADDS = 1_000_000
_SMALL_GEMM_MAX_FEATURES = 128
_SMALL_GEMM_MAX_CENTERS_X_FEATURES = 16384
_MIN_TILE_ROWS = 8
# The caller's blocks hold about 2 MiB of scores: big enough for GEMM, small
# enough that the rows stay in L2 for the statistics computed after the search.
_BUFFER_ELEMENTS = 1 << 19
_MIN_BLOCK_ROWS = 256
_MAX_BLOCK_ROWS = 4096


def tile_rows(n_centers: int, n_features: int) -> int:
    """Rows scored per GEMM by :class:`RowSearcher` for ``n_centers`` x ``n_features`` centres."""
    rows = _MAX_TILE_ROWS
    if (
        n_features >= _SMALL_GEMM_MAX_FEATURES
        or n_centers * n_features >= _SMALL_GEMM_MAX_CENTERS_X_FEATURES
    ):
        return rows
    while rows > _MIN_TILE_ROWS and rows * n_centers * n_features > _SMALL_GEMM_MULTIPLY_ADDS:
        rows //= 2
    return rows


class _GemmSearcher:
    """What both layouts share: the scaled centres, their norms, the error bound."""

    def __init__(self, centers: np.ndarray) -> None:
        centers64 = np.asarray(centers, dtype=np.float64)
        self._dtype = centers.dtype
        center_sq_norms = np.einsum("ij,ij->i", centers64, centers64)
        self._center_sq_norms = center_sq_norms.astype(self._dtype)
        # Worst-case rounding error of a score, per unit of ||c||^2 + ||x||^2.
        self._error_scale = 2.0 * (centers.shape[1] + 4) * float(np.finfo(self._dtype).eps)
        self._max_center_sq_norm = float(center_sq_norms.max(initial=0.0))
        self.block_rows = int(
            np.clip(_BUFFER_ELEMENTS // max(centers.shape[0], 1), _MIN_BLOCK_ROWS, _MAX_BLOCK_ROWS)
        )

    def _runner_up_distances(self, block: np.ndarray, second: np.ndarray) -> np.ndarray:
        runner_up = np.empty(block.shape[0])
        runner_up_distances(block, second, self._error_scale, self._max_center_sq_norm, runner_up)
        return runner_up


class RowSearcher(_GemmSearcher):
    """Nearest-centre search with (rows, k) score tiles, for up to a few hundred centres."""

    def __init__(self, centers: np.ndarray) -> None:
        super().__init__(centers)
        self._minus_two_centers_t = np.ascontiguousarray(-2.0 * centers.T, dtype=self._dtype)
        self._tile = np.empty((tile_rows(*centers.shape), centers.shape[0]), dtype=self._dtype)
        self._argmin = argmin_rows32 if self._dtype == np.float32 else argmin_rows64

    def nearest(self, block: np.ndarray) -> np.ndarray:
        """Index of the nearest centre for each row of ``block``."""
        labels = np.empty(block.shape[0], dtype=np.int32)
        self._argmin(
            np.ascontiguousarray(block),
            self._minus_two_centers_t,
            self._center_sq_norms,
            self._tile,
            labels,
        )
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
    ) -> float:
        """Label every row and add it into ``sums`` and ``counts``, in one compiled pass.

        The same result as :meth:`nearest` and :func:`~kmeans_dask._kernels.accumulate`
        over blocks of :attr:`block_rows` rows. ``centers`` is the float64 copy
        of the centres, ``labels`` and ``sq_dist`` receive each row's centre and
        exact squared distance; returns the weighted inertia. With ``sums``
        (and ``counts``) None nothing is accumulated.
        """
        return assign_and_accumulate_rows(
            np.ascontiguousarray(data),
            weights,
            self._minus_two_centers_t,
            self._center_sq_norms,
            self._tile,
            centers,
            self.block_rows,
            labels,
            sums,
            counts,
            sq_dist,
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
        ``statistics`` is ``(sums, counts, sq_dist)``; returns the inertia.
        """
        return bounded_pass_rows(
            np.ascontiguousarray(data),
            weights,
            self._minus_two_centers_t,
            self._center_sq_norms,
            self._tile,
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
        block = np.ascontiguousarray(block)
        labels = np.empty(block.shape[0], dtype=np.int32)
        second = np.empty(block.shape[0], dtype=self._dtype)
        self._argmin(
            block,
            self._minus_two_centers_t,
            self._center_sq_norms,
            self._tile,
            labels,
            second,
        )
        return labels, self._runner_up_distances(block, second)


class ColumnSearcher(_GemmSearcher):
    """Nearest-centre search with a (k, b) score matrix, for many centres."""

    def __init__(self, centers: np.ndarray) -> None:
        super().__init__(centers)
        self._minus_two_centers = np.ascontiguousarray(-2.0 * centers, dtype=self._dtype)
        self._scores = np.empty((centers.shape[0], self.block_rows), dtype=self._dtype)

    def nearest(self, block: np.ndarray) -> np.ndarray:
        """Index of the nearest centre for each row of ``block``."""
        labels = np.empty(block.shape[0], dtype=np.int32)
        for start in range(0, block.shape[0], self.block_rows):
            rows = block[start : start + self.block_rows]
            scores = self._scores[:, : rows.shape[0]]
            np.matmul(self._minus_two_centers, rows.T, out=scores)
            argmin_columns(scores, self._center_sq_norms, labels[start : start + rows.shape[0]])
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
            scores = self._scores[:, : rows.shape[0]]
            np.matmul(self._minus_two_centers, rows.T, out=scores)
            argmin2_columns(scores, self._center_sq_norms, labels[start:stop], second[start:stop])
        return labels, self._runner_up_distances(block, second)


#: Either searcher; both give ``nearest`` and ``nearest_two``.
ExactSearcher = RowSearcher | ColumnSearcher


def exact_searcher(centers: np.ndarray) -> ExactSearcher:
    """The faster layout's searcher for ``centers`` (k, d), in the data's dtype."""
    n_centers, n_features = centers.shape
    if (
        n_centers <= ROW_LAYOUT_MAX_CENTERS
        and n_centers * n_features >= ROW_LAYOUT_MIN_CENTERS_X_FEATURES
    ):
        return RowSearcher(centers)
    return ColumnSearcher(centers)


class NumpyBackend:
    """BLAS GEMM distances with a compiled argmin (always available)."""

    name = "numpy"

    def searcher(self, centers: np.ndarray) -> ExactSearcher:
        return exact_searcher(centers)
