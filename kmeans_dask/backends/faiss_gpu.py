"""Exact assignment on a GPU with Faiss's flat L2 index (``GpuIndexFlatL2``), for host rows.

Needs a Faiss built with GPU support (the ``faiss-gpu-cu12`` wheel, or
conda-forge's ``faiss-gpu``); Faiss copies each block of rows to the GPU
for its search, as its own k-means does. For rows kept on the GPU for the
whole fit use ``backend="cupy"``. As with ``faiss-cpu``, the search runs in
float32 and the statistics are accumulated from the original values.

A ``StandardGpuResources`` must not be shared between threads, and a
prepared searcher is (:mod:`kmeans_dask._worker.searchers`): each thread
builds its own resources and index over the same centres.
"""

from __future__ import annotations

import threading

import faiss
import numpy as np

#: Where to get a Faiss with GPU support.
_INSTALL = (
    "`pip install faiss-gpu-cu12` (CUDA 12) or `conda install -c conda-forge faiss-gpu`, "
    "or choose backend='cupy' or 'faiss-cpu'"
)


def require_faiss_gpu() -> None:
    """Raise, naming what to install, unless this Faiss has GPU support and sees a GPU."""
    if not hasattr(faiss, "GpuIndexFlatL2"):
        raise ImportError(
            f"backend='faiss-gpu' needs a Faiss built with GPU support; the installed Faiss "
            f"{getattr(faiss, '__version__', '')} has none: {_INSTALL}"
        )
    if faiss.get_num_gpus() < 1:
        raise ImportError(f"backend='faiss-gpu': Faiss sees no GPU here; {_INSTALL}")


class FaissGPUSearcher:
    """Nearest-centre search with one ``faiss.GpuIndexFlatL2`` per calling thread."""

    fused_passes = False

    block_rows = 1 << 18

    def __init__(self, centers: np.ndarray) -> None:
        self._centers = np.ascontiguousarray(centers, dtype=np.float32)
        self._per_thread = threading.local()

    def _index(self):
        index = getattr(self._per_thread, "index", None)
        if index is None:
            resources = faiss.StandardGpuResources()
            index = faiss.GpuIndexFlatL2(resources, self._centers.shape[1])
            index.add(self._centers)
            self._per_thread.resources, self._per_thread.index = resources, index
        return index

    def nearest(self, block: np.ndarray) -> np.ndarray:
        """Index of the nearest centre for each row of ``block``."""
        _, indices = self._index().search(np.ascontiguousarray(block, dtype=np.float32), 1)
        return indices[:, 0].astype(np.int32)


class FaissGPUBackend:
    """Faiss GPU flat (exact) search."""

    name = "faiss-gpu"

    def __init__(self) -> None:
        require_faiss_gpu()

    def searcher(self, centers: np.ndarray) -> FaissGPUSearcher:
        return FaissGPUSearcher(centers)
