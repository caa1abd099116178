"""Per-thread scratch arrays for the temporaries of chunk tasks.

A Lloyd pass over a chunk needs a label and a squared distance per row only
until it has picked the chunk's farthest rows. Allocated afresh in every
task, those arrays are expensive inside a Dask worker: its nanny sets
``MALLOC_TRIM_THRESHOLD_``, which keeps glibc from raising its mmap
threshold, so every array over 128 KiB is a new mapping whose pages fault
in on first write: a good share of a chunk task's time (RESULTS.md,
"Design measurements"). Reused per thread, the pages stay mapped.
"""

from __future__ import annotations

import threading

import numpy as np

_local = threading.local()


def scratch(name: str, n_items: int, dtype: np.dtype | type) -> np.ndarray:
    """This thread's array ``name`` of ``n_items`` items of ``dtype``, contents undefined.

    The same memory is handed out to the next call with the same ``name``
    and ``dtype`` on this thread, so the array must not outlive the task
    that asked for it. It grows to the largest size asked for and is kept
    for the life of the thread.
    """
    buffers: dict[tuple[str, np.dtype], np.ndarray] = _local.__dict__.setdefault("buffers", {})
    key = (name, np.dtype(dtype))
    buffer = buffers.get(key)
    if buffer is None or buffer.size < n_items:
        buffer = buffers[key] = np.empty(n_items, dtype=dtype)
    return buffer[:n_items]
