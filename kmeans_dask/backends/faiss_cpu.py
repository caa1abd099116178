"""Exact assignment with Faiss's flat L2 index (``IndexFlatL2.search``).

Faiss works in float32: float64 data is searched in float32, while the
statistics (sums, inertia) are still accumulated from the original values.
"""

from __future__ import annotations

import faiss
import numpy as np


class FaissSearcher:
    """Nearest-centre search with ``faiss.IndexFlatL2`` over fixed centres."""

    fused_passes = False

    block_rows = 65536

    def __init__(self, centers: np.ndarray) -> None:
        self._index = faiss.IndexFlatL2(centers.shape[1])
        self._index.add(np.ascontiguousarray(centers, dtype=np.float32))

    def nearest(self, block: np.ndarray) -> np.ndarray:
        """Index of the nearest centre for each row of ``block``."""
        _, indices = self._index.search(np.ascontiguousarray(block, dtype=np.float32), 1)
        return indices[:, 0].astype(np.int32)


class FaissCPUBackend:
    """Faiss CPU flat (exact) search."""

    name = "faiss-cpu"

    def searcher(self, centers: np.ndarray) -> FaissSearcher:
        return FaissSearcher(centers)
