"""Nearest centre and exact squared distance on an NVIDIA GPU, in one fused kernel.

A GEMM plus argmin writes an n x k score matrix to GPU memory and reads it
back; for small and medium ``k * d`` the centres fit in shared memory and
one kernel can do both: each thread takes one row, scores it against the
centres (``||c||^2 - 2 c . x``, the row's own norm being the same for every
centre), keeps the smallest score and its centre (ties to the lowest index,
as ``argmin``), then computes the exact squared distance to that centre as
``sum((x - c) ** 2)`` in float64. Nothing of size n x k is ever stored.

Written with numba-cuda: the same kernel runs under its CUDA simulator
(``NUMBA_ENABLE_CUDASIM=1``, on small data in CI) and compiles to PTX for
any compute capability without a GPU (:func:`compile_ptx`). Arrays may be
CuPy arrays (through ``__cuda_array_interface__``) or, in the simulator,
NumPy arrays. numba-cuda is imported when this module is, so only the GPU
operations import it.
"""

from __future__ import annotations

import math
import threading
from typing import Any

import numba
from numba import cuda

#: Rows per thread block.
THREADS_PER_BLOCK = 128
#: Largest ``k * d`` the fused kernel takes: the centres (float32 or
#: float64) and their norms must fit in 48 KiB of shared memory.
MAX_CENTER_VALUES = 48 * 1024 // 8 - 1024


def _nearest_kernel_for(element: Any):
    """The kernel's Python source for rows of numba type ``element``."""

    def nearest_kernel(data, centers, center_sq_norms, labels, sq_dist):
        """One thread per row: nearest centre, then its exact squared distance."""
        _nearest_body(data, centers, center_sq_norms, labels, sq_dist, element)

    return nearest_kernel


@cuda.jit(device=True, inline=True)
def _nearest_body(data, centers, center_sq_norms, labels, sq_dist, element):
    n_rows, n_features = data.shape
    n_centers = centers.shape[0]
    shared = cuda.shared.array(0, dtype=element)
    # The block copies the centres and their norms into shared memory once.
    n_values = n_centers * n_features
    for position in range(cuda.threadIdx.x, n_values, cuda.blockDim.x):
        shared[position] = centers[position // n_features, position % n_features]
    for position in range(cuda.threadIdx.x, n_centers, cuda.blockDim.x):
        shared[n_values + position] = center_sq_norms[position]
    cuda.syncthreads()
    row = cuda.grid(1)
    if row >= n_rows:
        return
    best = 0
    best_score = math.inf
    for center in range(n_centers):
        dot = 0.0
        base = center * n_features
        for feature in range(n_features):
            dot += data[row, feature] * shared[base + feature]
        score = shared[n_values + center] - 2.0 * dot
        if score < best_score:
            best_score = score
            best = center
    labels[row] = best
    total = 0.0
    for feature in range(n_features):
        difference = numba.float64(data[row, feature]) - numba.float64(centers[best, feature])
        total += difference * difference
    sq_dist[row] = total


_compiled: dict[str, Any] = {}
_SIMULATOR_LOCK = threading.Lock()


def _kernel(dtype: str) -> Any:
    """The jitted kernel for ``dtype`` rows (compiled for the device, or simulated)."""
    kernel = _compiled.get(dtype)
    if kernel is None:
        kernel = _compiled[dtype] = cuda.jit(_nearest_kernel_for(getattr(numba, dtype)))
    return kernel


def fits_fused(n_centers: int, n_features: int) -> bool:
    """Whether the centres fit the fused kernel's shared memory."""
    return n_centers * (n_features + 1) <= MAX_CENTER_VALUES


def nearest_fused(data: Any, centers: Any, center_sq_norms: Any, labels: Any, sq_dist: Any):
    """Fill ``labels`` (int32) and ``sq_dist`` (float64) for every row of ``data``.

    ``centers`` are in the data's dtype, ``center_sq_norms`` their squared
    norms in that dtype; all arrays in GPU memory (or NumPy in the simulator).
    """
    n_rows = data.shape[0]
    if n_rows == 0:
        return
    n_centers, n_features = centers.shape
    if not fits_fused(n_centers, n_features):
        raise ValueError(
            f"{n_centers} centres of {n_features} features do not fit the fused kernel's "
            "shared memory; use the GEMM search"
        )
    blocks = (n_rows + THREADS_PER_BLOCK - 1) // THREADS_PER_BLOCK
    shared_bytes = n_centers * (n_features + 1) * centers.dtype.itemsize
    launch = _kernel(str(centers.dtype))[blocks, THREADS_PER_BLOCK, 0, shared_bytes]
    if numba.config.ENABLE_CUDASIM:
        # The simulator swaps module-level state while a kernel runs: two
        # threads launching at once deadlock it. A GPU takes launches from any thread.
        with _SIMULATOR_LOCK:
            launch(data, centers, center_sq_norms, labels, sq_dist)
    else:
        launch(data, centers, center_sq_norms, labels, sq_dist)


def compile_ptx(dtype: str, compute_capability: tuple[int, int] = (9, 0)) -> str:
    """PTX of the kernel for ``dtype`` rows ("float32"/"float64"), without a GPU."""
    element = getattr(numba, dtype)
    signature = (
        element[:, ::1],
        element[:, ::1],
        element[::1],
        numba.int32[::1],
        numba.float64[::1],
    )
    kernel = _nearest_kernel_for(element)
    ptx, _ = cuda.compile_ptx(kernel, signature, cc=compute_capability)
    return ptx
