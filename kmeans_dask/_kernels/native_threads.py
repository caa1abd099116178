"""One thread for BLAS and OpenMP while any thread of the process asks for it,
and work spread over the cores in threads of our own under that cap.

Shared by every layer that runs small native calls from its own threads:
the worker's passes (:mod:`kmeans_dask._worker.threads`), the client's
neighbour tables (:mod:`kmeans_dask.backends.approximate`).
"""

from __future__ import annotations

import itertools
import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, TypeVar

import numpy as np

_Result = TypeVar("_Result")

_lock = threading.Lock()
#: The one-thread cap this process's threads share: how many hold it, and
#: the threadpoolctl limiter that undoes it when the last lets go.
_cap: dict[str, Any] = {"holders": 0, "limiter": None}
#: threadpoolctl's controller, made once: finding the loaded libraries took
#: 6 ms per call on the client.
_controller = None


@contextmanager
def native_cap() -> Iterator[None]:
    """Hold native thread pools at one thread; the last holder to let go restores them.

    threadpoolctl's limiters each restore what they found, so two that
    overlap in different threads can leave the process capped (the second
    finds the first's cap and "restores" it). Counting the holders, only the
    first finds the real limits and only the last restores them.
    """
    global _controller
    with _lock:
        _cap["holders"] += 1
        if _cap["holders"] == 1:
            from threadpoolctl import ThreadpoolController

            if _controller is None:
                _controller = ThreadpoolController()
            _cap["limiter"] = _controller.limit(limits=1)
            _release_openblas_control()
    try:
        yield
    finally:
        with _lock:
            _cap["holders"] -= 1
            if _cap["holders"] == 0:
                _cap["limiter"].restore_original_limits()
                _cap["limiter"] = None
                _release_openblas_control()


def _release_openblas_control() -> None:
    """Let any thread set OpenBLAS's limits again.

    Recent threadpoolctl (3.8 here; older ones have no such claim) lets only
    the thread that last set OpenBLAS's thread count change it, until that
    thread clears its claim; the cap of :func:`native_cap` is set by one
    thread and may be restored by another, so no thread keeps the claim.
    """
    import threadpoolctl

    openblas = getattr(threadpoolctl, "OpenBLASController", None)
    clear = getattr(openblas, "clear_controlling_thread", None)
    if clear is not None:
        clear(force=True)


def over_cores(
    work: Callable[[slice], _Result], n_items: int, min_per_thread: int
) -> list[_Result]:
    """``work`` over contiguous slices of ``range(n_items)``, one per core, in threads.

    As many slices as cores, each of at least ``min_per_thread`` items (one
    slice at least); the results come back in order. Native libraries run
    on one thread meanwhile (:func:`native_cap`), so a slice is computed
    alike whatever the number of cores. One slice runs in the calling
    thread. ``work`` should release the GIL (BLAS, Numba ``nogil`` kernels).
    """
    n_threads = max(1, min(os.cpu_count() or 1, n_items // min_per_thread))
    bounds = np.linspace(0, n_items, n_threads + 1).astype(int)
    slices = [slice(start, stop) for start, stop in itertools.pairwise(bounds)]
    with native_cap():
        if n_threads == 1:
            return [work(slices[0])]
        with ThreadPoolExecutor(n_threads) as pool:
            return list(pool.map(work, slices))  # raises what a slice raised
