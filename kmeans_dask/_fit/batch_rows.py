"""A mini-batch's rows where they are: host NumPy memory, or an array-API library's.

:mod:`.streaming` works on a batch only through these few operations, so a
CuPy batch is checked, searched and summed on its GPU (through the chunk
operations of :mod:`kmeans_dask._worker`), and only k x d float64
statistics, per-column maxima and the few rows that reassignment draws come
back to the host; its labels stay on the GPU. Only the k-means++ (or random)
initialisation of a stream's first batch copies that batch to the host.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from kmeans_dask._engine.placement import chunk_ops_for
from kmeans_dask._io.inputs import host_dtype
from kmeans_dask._worker.host_ops import nearest, statistics_and_labels
from kmeans_dask._worker.results import ClusterStats, nonfinite_positions


class HostRows:
    """A batch in host memory, searched by the host's compiled kernels."""

    def __init__(self, data: np.ndarray) -> None:
        self.data = data

    @property
    def shape(self) -> tuple[int, int]:
        return self.data.shape

    @property
    def dtype(self) -> np.dtype:
        return self.data.dtype

    def nonfinite(self, first_row: int) -> tuple[int, list[int]]:
        """How many values are NaN or infinite, and the first rows holding one."""
        return nonfinite_positions(self.data, first_row)

    def column_max_abs(self) -> np.ndarray:
        return np.abs(self.data).max(axis=0)

    def statistics(
        self, weights: np.ndarray | None, centers: np.ndarray, backend: str
    ) -> ClusterStats:
        """Per-cluster weighted sums, weights and inertia under ``centers``."""
        return statistics_and_labels(self.data, weights, centers, backend)[0]

    def rows(self, indices: np.ndarray) -> np.ndarray:
        """Host copies of the rows at ``indices``."""
        return self.data[indices]

    def on_host(self) -> np.ndarray:
        return self.data

    def nearest(self, centers: np.ndarray, backend: str) -> tuple[Any, np.ndarray]:
        """Labels (in the batch's memory) and host float64 squared distances."""
        return nearest(self.data, centers.astype(self.dtype), backend)


class DeviceRows(HostRows):
    """A batch held by an array-API library, worked on by that library's chunk operations."""

    def __init__(self, data: Any) -> None:
        super().__init__(data)
        self.ops = chunk_ops_for(data)

    @property
    def dtype(self) -> np.dtype:
        return host_dtype(self.data.dtype)

    def nonfinite(self, first_row: int) -> tuple[int, list[int]]:
        xp = self.ops.xp
        if bool(xp.all(xp.isfinite(self.data))):
            return 0, []
        return nonfinite_positions(self.on_host(), first_row)

    def column_max_abs(self) -> np.ndarray:
        xp = self.ops.xp
        return self.ops.to_host(xp.max(xp.abs(self.data), axis=0))

    def statistics(
        self, weights: np.ndarray | None, centers: np.ndarray, backend: str
    ) -> ClusterStats:
        chunk = self.ops.place(self.data, weights, 0, self.dtype)
        return self.ops.lloyd_pass(chunk, centers, backend, keep_labels=False).stats

    def rows(self, indices: np.ndarray) -> np.ndarray:
        xp = self.ops.xp
        taken = xp.take(self.data, xp.asarray(np.asarray(indices, dtype=np.int64)), axis=0)
        return self.ops.to_host(taken)

    def on_host(self) -> np.ndarray:
        return self.ops.to_host(self.data)

    def nearest(self, centers: np.ndarray, backend: str) -> tuple[Any, np.ndarray]:
        chunk = self.ops.place(self.data, None, 0, self.dtype)
        labels, sq_dist = self.ops.nearest(chunk, centers, backend)
        return labels, self.ops.to_host(sq_dist)
