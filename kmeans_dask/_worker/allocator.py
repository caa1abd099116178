"""Buffers reused from the heap while passes run, in a worker whose allocator the nanny tuned.

distributed's nanny starts its workers with ``MALLOC_TRIM_THRESHOLD_=65536``,
so that glibc gives freed memory back to the system at once. Setting it turns
off glibc's adaptive mmap threshold, which then stays at 128 KiB: every
buffer of a block read from a store (the compressed bytes, the decompressed
rows, the array) becomes a fresh mapping that the kernel fills with zeros
page by page and that is unmapped again when freed. Reading a Zstandard store
with two threads under that setting ran at 534 MiB/s, with 1.59 s of kernel
time per GiB, against 834 MiB/s and 0.54 s without it
(``scripts/bench_allocator.py``; RESULTS.md, "Read-ahead through the
actors"). Passes over chunks held in memory pay the same for their
temporaries (float64 centres, statistics, score buffers, index arrays): in
a nanny's worker, a 5-iteration fit at k = 16384 (100,000 x 128, two
threads) spent 0.43-1.01 s of kernel time zeroing pages, with 50,000-86,000
page faults, against 0.06-0.07 s and about 1,000 faults with the
thresholds lifted, and took 2.30-2.58 s instead of 1.29-1.45 (RESULTS.md,
"Session 26").

:func:`streaming_allocations` lifts the mmap threshold above the blocks'
size and the trim threshold to two blocks, for as long as a streamed pass
runs, so the blocks' buffers are reused from the heap;
:func:`pass_allocations` lifts both to :data:`PASS_THRESHOLDS` while a chunk
task runs. The settings the environment gave come back (and what is free
goes back to the system, ``malloc_trim``) :data:`LINGER_SECONDS` after the
last pass ends, so that the passes of one fit, a centre update apart,
reuse one another's memory. Where the environment did not tune the
allocator, glibc's thresholds adapt by themselves and nothing is changed;
off glibc, neither.
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


#: Thresholds while a pass over chunks in memory runs: every buffer glibc
#: would map (up to :data:`MAX_MMAP_THRESHOLD`) comes from the heap, and the
#: heap keeps up to this much free at its top for the next task's buffers.
PASS_THRESHOLDS = Thresholds(trim=1024 * 2**20, mmap=MAX_MMAP_THRESHOLD)

#: Seconds the lifted thresholds outlast the last pass, before the
#: environment's come back: longer than the client's work between two
#: passes of a fit (a centre update, a neighbour table: up to a few tenths of
#: a second), so the fit's passes reuse one another's memory.
LINGER_SECONDS = 2.0


class _Allocator:
    """The passes under way in this process, and the thresholds they need."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.passes: Counter[Thresholds] = Counter()
        self.restore: threading.Timer | None = None

    def enter(self, libc: ctypes.CDLL, base: Thresholds, needed: Thresholds) -> None:
        """A pass that needs ``needed`` starts."""
        with self.lock:
            if self.restore is not None:
                self.restore.cancel()
                self.restore = None
            self.passes[needed] += 1
            self.apply(libc, base)

    def leave(self, libc: ctypes.CDLL, base: Thresholds, needed: Thresholds) -> None:
        """A pass that needed ``needed`` ends; ``base`` comes back
        :data:`LINGER_SECONDS` after the last one, unless another starts."""
        with self.lock:
            self.passes[needed] -= 1
            if not self.passes[needed]:
                del self.passes[needed]
            if self.passes:
                self.apply(libc, base)
                return
            self.restore = threading.Timer(LINGER_SECONDS, self.restore_when_idle, (libc, base))
            self.restore.daemon = True
            self.restore.start()

    def restore_when_idle(self, libc: ctypes.CDLL, base: Thresholds) -> None:
        """Set ``base`` and hand the free memory back, unless a pass has started since."""
        with self.lock:
            if not self.passes:
                self.restore = None
                self.apply(libc, base)

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
    # Passes over chunks in memory (no block read) ask nothing of it here.
    with _lifted(streaming_thresholds(block_bytes) if block_bytes > 0 else None):
        yield


@contextmanager
def pass_allocations() -> Iterator[None]:
    """Let a chunk task reuse the heap's memory for its buffers while it runs
    (:data:`PASS_THRESHOLDS`), and the fit's next task after it.

    Only where the environment fixed glibc's thresholds (as distributed's
    nanny does); elsewhere a no-op.
    """
    with _lifted(PASS_THRESHOLDS):
        yield


@contextmanager
def _lifted(needed: Thresholds | None) -> Iterator[None]:
    """Thresholds at least ``needed`` while the block runs, where the environment
    fixed them on glibc."""
    libc = _glibc() if needed is not None else None
    base = environment_thresholds(os.environ) if libc is not None else None
    if base is None:
        yield
        return
    _ALLOCATOR.enter(libc, base, needed)
    try:
        yield
    finally:
        _ALLOCATOR.leave(libc, base, needed)
