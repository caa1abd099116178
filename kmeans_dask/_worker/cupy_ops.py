"""The chunk operations on an NVIDIA GPU: rows resident in GPU memory for the whole fit.

Rows are copied to the worker's GPU once, when placed (never again per
iteration, as faiss-gpu's k-means does), and every pass runs there: only
k x d float64 statistics and small results come back. Chunks that do not
fit beside the resident ones (data larger than the GPUs' memory) stay in
host memory and are staged into the GPU for each pass (:mod:`.staged_ops`). Everything but the
search is the array-API code of :class:`~kmeans_dask._worker.array_api_ops.ArrayAPIOps`
over CuPy, so it is exercised in CI on NumPy and array-api-strict; per-cluster
sums are one-hot GEMMs (deterministic, unlike ``bincount``'s atomics). The
nearest-centre search is the fused kernel of :mod:`kmeans_dask._kernels.cuda_search`
where the centres fit in shared memory, else cuBLAS GEMM plus argmin.

Needs CuPy (``pip install "kmeans_dask[gpu]"``) and a GPU on each worker;
what is missing is said where the rows are placed.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from kmeans_dask._worker.array_api_ops import ArrayAPIOps, nearest_rows
from kmeans_dask._worker.chunks import Chunk
from kmeans_dask._worker.staged_ops import StagedOps

#: Above this many centres the GEMM search is used even where the centres
#: fit in shared memory: cuBLAS keeps the tensor cores busy, one thread per
#: row does not.
FUSED_MAX_CENTERS = 256
#: Share of a GPU's memory that resident chunks leave free.
HEADROOM = 0.25


class CuPyOps(ArrayAPIOps):
    """:class:`~kmeans_dask._worker.ops.ChunkOps` for rows in the worker's GPU memory."""

    def __init__(self, fused: bool = True, labels_on_device: bool = False) -> None:
        super().__init__("cupy")
        self.name = "cupy"
        self.fused = fused
        self.labels_on_device = labels_on_device

    def __reduce__(self):
        return CuPyOps, (self.fused, self.labels_on_device)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CuPyOps) and other.__reduce__() == self.__reduce__()

    def __hash__(self) -> int:
        return hash(self.__reduce__()[1])

    def handed_over(self, labels: Any) -> Any:
        """The labels on the GPU for CuPy input, else on the host."""
        return labels if self.labels_on_device else self.to_host(labels)

    def place(self, block, weights, offset: int, dtype) -> Chunk:
        """The rows on the GPU, or host rows staged per pass if the GPU has no room left."""
        require_gpu()
        if isinstance(block, np.ndarray):
            nbytes = block.shape[0] * block.shape[1] * np.dtype(dtype).itemsize
            if not stays_resident(nbytes, *device_memory()):
                return StagedOps(self).place(block, weights, offset, dtype)
        return self.resident(block, weights, offset, dtype)

    def resident(self, block, weights, offset: int, dtype) -> Chunk:
        require_gpu()
        return super().resident(block, weights, offset, dtype)

    def nearest(self, chunk: Chunk, centers: np.ndarray, search: str) -> tuple[Any, Any]:
        from kmeans_dask._kernels.cuda_search import fits_fused, nearest_fused

        if not (
            self.fused and centers.shape[0] <= FUSED_MAX_CENTERS and fits_fused(*centers.shape)
        ):
            return nearest_rows(self.xp, chunk.data, centers)
        xp = self.xp
        dtype = chunk.data.dtype
        on_device = xp.asarray(np.ascontiguousarray(centers), dtype=dtype)
        center_sq_norms = xp.sum(on_device * on_device, axis=1)
        labels = xp.empty(chunk.n_rows, dtype=xp.int32)
        sq_dist = xp.empty(chunk.n_rows, dtype=xp.float64)
        nearest_fused(chunk.data, on_device, center_sq_norms, labels, sq_dist)
        return labels, sq_dist


def stays_resident(nbytes: int, free_bytes: int, total_bytes: int) -> bool:
    """Whether a chunk of ``nbytes`` is kept on a GPU with ``free_bytes`` of ``total_bytes`` free.

    :data:`HEADROOM` of the GPU stays free for the passes' scratch and the
    staged chunks; a chunk beyond it stays in host memory (:mod:`.staged_ops`).
    """
    return nbytes <= free_bytes - HEADROOM * total_bytes


def device_memory() -> tuple[int, int]:
    """Free and total bytes of the current GPU (what CuPy's pool holds counts as free)."""
    cupy = require_cupy()
    free, total = cupy.cuda.Device().mem_info
    return free + cupy.get_default_memory_pool().free_bytes(), total


def require_cupy(backend: str = "cupy"):
    """CuPy, or an ImportError that names the extra to install."""
    try:
        import cupy
    except ImportError as exc:
        raise ImportError(
            f"backend={backend!r} needs CuPy on the client and every worker ({exc}); install "
            'it with `pip install "kmeans_dask[gpu]"` (CUDA 13) or "kmeans_dask[gpu-cuda12]"'
        ) from exc
    return cupy


def require_gpu() -> None:
    """Raise, saying what to do, unless CuPy can be imported and sees a GPU."""
    cupy = require_cupy()
    if not cupy.cuda.is_available():
        raise RuntimeError(
            "backend='cupy' needs an NVIDIA GPU with a working driver on every worker, "
            "and CuPy sees none here; run on GPU workers (cluster_specs/local-cuda.yaml) "
            "or use backend='auto'"
        )
