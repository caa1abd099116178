"""Exact assignment with a BLAS GEMM and a compiled column argmin.

For a block ``B`` (b, d) and centres ``C`` (k, d) the nearest centre of row
``i`` minimises ``||c_j||^2 - 2 c_j . x_i`` (``||x_i||^2`` is the same for
every ``j``). The (k, b) score matrix ``-2 C B^T`` comes from one SGEMM/DGEMM
into a reused, cache-sized buffer; the argmin then runs over contiguous
points, which vectorises.

:meth:`NumpySearcher.nearest_two` also returns a guaranteed lower bound on
the distance to the runner-up centre, which seeds the Hamerly bounds of
:mod:`kmeans_dask._bounds`. The GEMM expansion is inexact, so the bound
subtracts the worst-case rounding error of a ``d``-term dot product:
``|fl(score) - score| <= (d + 4) * eps * (||c||^2 + ||x||^2)``.
"""

from __future__ import annotations

import numpy as np

from kmeans_dask._kernels import argmin2_columns, argmin_columns, runner_up_distances

# Score buffer of about 2 MiB keeps the argmin in L2 while giving GEMM
# enough columns to run at full speed.
_BUFFER_ELEMENTS = 1 << 19
_MIN_BLOCK_ROWS = 256
_MAX_BLOCK_ROWS = 4096


class NumpySearcher:
    """Nearest-centre search by GEMM + argmin over fixed centres."""

    def __init__(self, centers: np.ndarray) -> None:
        centers64 = np.asarray(centers, dtype=np.float64)
        dtype = centers.dtype
        self._minus_two_centers = np.ascontiguousarray(-2.0 * centers, dtype=dtype)
        center_sq_norms = np.einsum("ij,ij->i", centers64, centers64)
        self._center_sq_norms = center_sq_norms.astype(dtype)
        # Worst-case rounding error of a score, per unit of ||c||^2 + ||x||^2.
        self._error_scale = 2.0 * (centers.shape[1] + 4) * float(np.finfo(dtype).eps)
        self._max_center_sq_norm = float(center_sq_norms.max(initial=0.0))
        n_centers = centers.shape[0]
        self.block_rows = int(
            np.clip(_BUFFER_ELEMENTS // max(n_centers, 1), _MIN_BLOCK_ROWS, _MAX_BLOCK_ROWS)
        )
        self._scores = np.empty((n_centers, self.block_rows), dtype=dtype)

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

        Returns
        -------
        labels : (b,) int32
        runner_up : (b,) float64
            For each row, a number no larger than its (unsquared) distance to
            every centre but ``labels[i]``: ``inf`` when there is one centre.
        """
        labels = np.empty(block.shape[0], dtype=np.int32)
        runner_up = np.empty(block.shape[0])
        second = np.empty(self.block_rows, dtype=block.dtype)
        for start in range(0, block.shape[0], self.block_rows):
            rows = block[start : start + self.block_rows]
            stop = start + rows.shape[0]
            scores = self._scores[:, : rows.shape[0]]
            np.matmul(self._minus_two_centers, rows.T, out=scores)
            argmin2_columns(scores, self._center_sq_norms, labels[start:stop], second)
            runner_up_distances(
                rows,
                second,
                self._error_scale,
                self._max_center_sq_norm,
                runner_up[start:stop],
            )
        return labels, runner_up


class NumpyBackend:
    """BLAS GEMM distances with a compiled argmin (always available)."""

    name = "numpy"

    def searcher(self, centers: np.ndarray) -> NumpySearcher:
        return NumpySearcher(centers)
