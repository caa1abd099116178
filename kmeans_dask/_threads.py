"""Keep BLAS, OpenMP and Faiss from oversubscribing a Dask worker's cores.

Dask runs one task per worker thread, and our parallelism is across chunks,
so each task's native libraries should use one thread. Nanny-started
workers already get ``OMP_NUM_THREADS=1`` and friends from distributed's
``pre-spawn-environ``; in-process workers and clusters started by other
tools may not, so every chunk task calls :func:`limit_worker_threads`,
which caps the native thread pools of the worker process once.
"""

from __future__ import annotations

import sys
import threading

_lock = threading.Lock()
_limited: set[str] = set()


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
    changed, so local calls keep every core.
    """
    pending = {"native"} | ({"faiss"} if "faiss" in sys.modules else set())
    if pending <= _limited or not _in_dask_worker():
        return
    with _lock:
        if "native" not in _limited:
            from threadpoolctl import threadpool_limits

            threadpool_limits(limits=1)
            _limited.add("native")
        if "faiss" in pending and "faiss" not in _limited:
            sys.modules["faiss"].omp_set_num_threads(1)
            _limited.add("faiss")
