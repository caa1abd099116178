"""Exact assignment with a BLAS GEMM and a compiled column argmin.

For a block ``B`` (b, d) and centres ``C`` (k, d) the nearest centre of row
``i`` minimises ``||c_j||^2 - 2 c_j . x_i`` (``||x_i||^2`` is the same for
every ``j``). The (k, b) score matrix ``-2 C B^T`` comes from one SGEMM/DGEMM
into a reused, cache-sized buffer; the argmin then runs over contiguous
points, which vectorises.
"""

from __future__ import annotations

import numpy as np

from kmeans_dask._kernels import argmin_columns

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
        self._center_sq_norms = np.einsum("ij,ij->i", centers64, centers64).astype(dtype)
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


class NumpyBackend:
    """BLAS GEMM distances with a compiled argmin (always available)."""

    name = "numpy"

    def searcher(self, centers: np.ndarray) -> NumpySearcher:
        return NumpySearcher(centers)
