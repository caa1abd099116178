"""Keep BLAS, OpenMP and Faiss from oversubscribing a Dask worker's cores.

Dask runs one task per worker thread, and our parallelism is across chunks,
so each task's native libraries should use one thread. Nanny-started
workers already get ``OMP_NUM_THREADS=1`` and friends from distributed's
``pre-spawn-environ``; in-process workers and clusters started by other
tools may not, so every chunk task calls :func:`limit_worker_threads`,
which caps the native thread pools of the worker process once. The
in-process clusters a fit starts for rows already in memory run in the
user's process: there the caps last only while they run
(:func:`in_process_native_limits`).

In the client process (``predict`` on NumPy data, ``partial_fit``, the
refinement of k-means|| candidates) the same small block GEMMs run under
:func:`single_threaded_native`, and :func:`map_row_blocks` spreads row
blocks over a thread pool instead: multi-threaded OpenBLAS on these thin
GEMMs ran many times slower than one thread when another process shared the
cores (RESULTS.md, "Design measurements").
"""

from __future__ import annotations

import atexit
import gc
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from kmeans_dask._kernels.native_threads import native_cap, over_cores

_lock = threading.Lock()
_limited: set[str] = set()
#: In-process clusters running now (:func:`in_process_native_limits`).
_in_process = {"clusters": 0}
#: Per thread: whether OpenMP (Faiss) was capped on it (OpenMP's count is per thread).
_this_thread = threading.local()


def _in_dask_worker() -> bool:
    try:
        from distributed import get_worker

        get_worker()
    except (ImportError, ValueError):
        return False
    return True


def limit_worker_threads() -> None:
    """Cap native thread pools at one thread, once per worker process.

    Outside a Dask worker (a local ``predict`` on NumPy data, say) nothing is
    changed, so local calls keep every core. Faiss is capped once it has
    been imported; while another thread is still importing it (its module
    in ``sys.modules`` without the function yet), at a later call.
    """
    set_faiss_threads = getattr(sys.modules.get("faiss"), "omp_set_num_threads", None)
    pending = {"native"} | ({"faiss"} if set_faiss_threads is not None else set())
    if _in_process["clusters"] and _in_dask_worker():
        # A worker thread of the user's process: BLAS is capped for the cluster's
        # lifetime by in_process_native_limits; OpenMP's count belongs to the thread.
        if set_faiss_threads is not None and not getattr(_this_thread, "faiss_capped", False):
            set_faiss_threads(1)
            _this_thread.faiss_capped = True
        return
    if pending <= _limited or not _in_dask_worker():
        return
    with _lock:
        if "native" not in _limited:
            from threadpoolctl import threadpool_limits

            threadpool_limits(limits=1)
            # Once per worker process, like the cap: see skip_final_collection.
            atexit.register(skip_final_collection)
            _limited.add("native")
        if "faiss" in pending and "faiss" not in _limited:
            set_faiss_threads(1)
            _limited.add("faiss")


@contextmanager
def in_process_native_limits() -> Iterator[None]:
    """Cap BLAS at one thread while in-process clusters run, then give it back.

    The workers of a ``LocalCluster(processes=False)`` are threads of the
    user's process, so :func:`limit_worker_threads` must not cap that
    process for good. BLAS's thread count is the process's: here it is
    capped from the first such cluster's start to the last one's end (with
    the other holders of
    :func:`~kmeans_dask._kernels.native_threads.native_cap`), and then
    restored. OpenMP's (Faiss's) belongs to each thread:
    :func:`limit_worker_threads` caps it on each worker thread, which ends
    with its cluster.
    """
    with _lock:
        _in_process["clusters"] += 1
    try:
        with native_cap():
            yield
    finally:
        with _lock:
            _in_process["clusters"] -= 1


def skip_final_collection() -> None:
    """At interpreter exit: leave the objects alive for the OS, not for the garbage collector.

    Python's finalisation ends with a full garbage collection over every
    object (after a fit, a worker holds some 180,000, from Numba, LLVM and
    the kernels), long enough that with many workers on few cores their
    nannies gave up waiting and killed them ("Worker process still alive
    after 4.0 seconds"). Registered with :mod:`atexit`, which runs before
    that collection, freezing the objects makes the exit several times
    quicker (RESULTS.md, "Design measurements"); the process's memory goes
    back to the OS as it ends anyway.
    """
    gc.freeze()


@contextmanager
def single_threaded_native() -> Iterator[None]:
    """Run native libraries (BLAS, OpenMP) on one thread for the duration.

    A no-op inside Dask workers, which are capped for good.
    """
    if "native" in _limited:
        yield
        return
    with native_cap():
        yield


#: Rows below which splitting work across threads is not worth it.
MIN_ROWS_PER_THREAD = 16_384


def map_row_blocks(func: Callable[[np.ndarray], Any], data: np.ndarray) -> list[Any]:
    """``func`` over contiguous row blocks of ``data``, one per core, in threads
    (:func:`~kmeans_dask._kernels.native_threads.over_cores`).

    The functions used here release the GIL (BLAS and Numba ``nogil``
    kernels); results come back in row order. Inside a Dask worker, whose
    threads already run one task per core, ``func`` runs once on all of
    ``data`` in the calling thread.
    """
    if _in_dask_worker():
        with single_threaded_native():
            return [func(data)]
    return over_cores(lambda rows: func(data[rows]), len(data), MIN_ROWS_PER_THREAD)
