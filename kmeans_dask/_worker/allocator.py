"""Block-sized buffers from the heap while a pass streams blocks, in a tuned worker.

distributed's nanny starts its workers with ``MALLOC_TRIM_THRESHOLD_=65536``,
so that glibc gives freed memory back to the system at once. Setting it turns
off glibc's adaptive mmap threshold, which then stays at 128 KiB: every
buffer of a block read from a store (the compressed bytes, the decompressed
rows, the array) becomes a fresh mapping that the kernel fills with zeros
page by page and that is unmapped again when freed. Reading a Zstandard store
with two threads under that setting ran at 534 MiB/s, with 1.59 s of kernel
time per GiB, against 834 MiB/s and 0.54 s without it
(``scripts/bench_allocator.py``; RESULTS.md, "Read-ahead through the
actors").

:func:`streaming_allocations` lifts the mmap threshold above the blocks'
size and the trim threshold to two blocks, for as long as a streamed pass
runs, so the blocks' buffers are reused from the heap; the
last pass to end restores the settings the environment gave and hands what
is free back to the system (``malloc_trim``). Where the environment did not
tune the allocator, glibc's thresholds adapt to the blocks by themselves and
nothing is changed; off glibc, neither.
"""

from __future__ import annotations

import ctypes
import functools
import os
import platform
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import NamedTuple

#: ``mallopt`` parameters (``malloc.h``).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
#: glibc's default for both thresholds.
GLIBC_DEFAULT_THRESHOLD = 128 * 2**10
#: Largest mmap threshold glibc honours on 64-bit systems
#: (``DEFAULT_MMAP_THRESHOLD_MAX``): larger blocks stay mapped.
MAX_MMAP_THRESHOLD = 32 * 2**20


class Thresholds(NamedTuple):
    """glibc's trim and mmap thresholds, in bytes."""

    trim: int
    mmap: int


def environment_thresholds(environ: dict[str, str] | os._Environ) -> Thresholds | None:
    """The thresholds ``environ`` sets, or None where glibc adapts them itself.

    Either variable (``MALLOC_TRIM_THRESHOLD_``, ``MALLOC_MMAP_THRESHOLD_``)
    fixes both thresholds, the other at glibc's default. A value glibc
    would not read as a byte count leaves the allocator's settings unknown,
    hence None.
    """
    trim = environ.get("MALLOC_TRIM_THRESHOLD_")
    mmap = environ.get("MALLOC_MMAP_THRESHOLD_")
    if trim is None and mmap is None:
        return None
    try:
        return Thresholds(
            trim=GLIBC_DEFAULT_THRESHOLD if trim is None else int(trim),
            mmap=GLIBC_DEFAULT_THRESHOLD if mmap is None else int(mmap),
        )
    except ValueError:
        return None


def streaming_thresholds(block_bytes: int) -> Thresholds:
    """Thresholds under which buffers of up to ``block_bytes`` come from the heap and stay there.

    The mmap threshold clears a buffer twice a block's size (a compressed
    block can be a little larger than its rows), up to
    :data:`MAX_MMAP_THRESHOLD`. The heap keeps up to two blocks' worth free
    at its top: the block just freed, for the next read to reuse. (Each of
    the threads that allocate has a heap of its own; keeping the free memory
    of all the pass's blocks instead raised the worker's peak from 478 to 515
    MiB and bought no speed, RESULTS.md.)
    """
    return Thresholds(trim=2 * block_bytes, mmap=min(2 * block_bytes, MAX_MMAP_THRESHOLD))


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    """This process's C library where it is glibc (which has ``mallopt``), else None."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    return ctypes.CDLL(None)


class _Allocator:
    """The passes under way in this process, and the thresholds they need."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.passes: Counter[Thresholds] = Counter()

    def apply(self, libc: ctypes.CDLL, base: Thresholds) -> None:
        """Set the largest thresholds any pass under way needs, or ``base`` when none is."""
        if self.passes:
            trim = max(base.trim, *(needed.trim for needed in self.passes))
            mmap = max(base.mmap, *(needed.mmap for needed in self.passes))
        else:
            trim, mmap = base
        libc.mallopt(_M_MMAP_THRESHOLD, mmap)
        libc.mallopt(_M_TRIM_THRESHOLD, trim)
        if not self.passes:
            libc.malloc_trim(0)


_ALLOCATOR = _Allocator()


@contextmanager
def streaming_allocations(block_bytes: int) -> Iterator[None]:
    """Let a streamed pass reuse its blocks' buffers from the heap while it runs.

    Parameters
    ----------
    block_bytes : int
        Size of the largest block the pass reads.

    Only where the environment fixed glibc's thresholds (as distributed's
    nanny does); elsewhere a no-op.
    """
    # Passes over chunks in memory (no block read) ask nothing of the allocator.
    libc = _glibc() if block_bytes > 0 else None
    base = environment_thresholds(os.environ) if libc is not None else None
    if base is None:
        yield
        return
    needed = streaming_thresholds(block_bytes)
    with _ALLOCATOR.lock:
        _ALLOCATOR.passes[needed] += 1
        _ALLOCATOR.apply(libc, base)
    try:
        yield
    finally:
        with _ALLOCATOR.lock:
            _ALLOCATOR.passes[needed] -= 1
            if not _ALLOCATOR.passes[needed]:
                del _ALLOCATOR.passes[needed]
            _ALLOCATOR.apply(libc, base)
