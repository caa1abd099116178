"""Reading the blocks of a pass ahead of the threads that work on them.

A streamed pass (:class:`~kmeans_dask._worker.chunks.ZarrBlock` sources)
spends most of its time reading and decompressing blocks, work that
releases the GIL (file reads, Zstandard/Blosc), as do our compiled
kernels. :class:`ReadAhead` hands a worker's threads the blocks of a pass in
order while reader threads load the next ones, so reading overlaps
computing. The blocks in memory at once are bounded: those being worked on
(one per worker thread) plus at most ``ahead`` read and waiting, a number
that :func:`read_ahead_depth` derives from the worker's memory limit.

Whatever the depth, each block is loaded once and the results per block are
those of a pass without read-ahead: only when a block is read changes. While
blocks stream, their buffers are reused from the heap even in a worker whose
allocator the nanny tuned (:mod:`kmeans_dask._worker.allocator`).
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from typing import Any, NamedTuple

from kmeans_dask._worker.allocator import streaming_allocations
from kmeans_dask._worker.chunks import ZarrBlock

#: Share of a worker's memory limit that blocks read ahead may take.
READ_AHEAD_MEMORY_SHARE = 1 / 16
#: Most blocks read ahead per worker thread: two keep a thread fed while a
#: read takes up to twice as long as the work on a block.
MAX_AHEAD_PER_THREAD = 2
#: Copies of its rows a block takes while it is read (the decompressed bytes
#: and the array; the compressed bytes besides).
COPIES_WHILE_READ = 2


def read_ahead_depth(block_bytes: int, threads: int, memory_limit: int | None) -> int:
    """How many blocks a worker reads ahead of its ``threads``.

    ``MAX_AHEAD_PER_THREAD * threads``, fewer where those blocks, counted at
    ``COPIES_WHILE_READ`` times their ``block_bytes``, would take more than
    ``READ_AHEAD_MEMORY_SHARE`` of ``memory_limit`` (None or 0: no limit);
    0 when one block would. A worker with 2 threads and a 480 MiB limit
    thus reads 2 blocks of 6.1 MiB ahead; with 1.2 GB, 2 of 15.3 MiB.
    """
    most = MAX_AHEAD_PER_THREAD * threads
    if not memory_limit:
        return most
    budget = int(READ_AHEAD_MEMORY_SHARE * memory_limit)
    return max(0, min(most, budget // max(COPIES_WHILE_READ * block_bytes, 1)))


def largest_streamed_block(sources: Sequence[Any]) -> int:
    """Size of the largest block among ``sources`` read from a store; 0 if none is."""
    return max((source.nbytes for source in sources if isinstance(source, ZarrBlock)), default=0)


def read_ahead_for(sources: Sequence[Any], threads: int, memory_limit: int | None) -> int:
    """:func:`read_ahead_depth` for a pass over ``sources``: 0 for chunks already in memory."""
    block_bytes = largest_streamed_block(sources)
    return read_ahead_depth(block_bytes, threads, memory_limit) if block_bytes else 0


class Taken(NamedTuple):
    """What a thread is handed: a position among the sources, and its block."""

    position: int
    block: Any
    """The source loaded, or (without read-ahead) the source itself."""


class ReadAhead:
    """The sources of a pass, loaded in order, at most ``ahead`` beyond those in use.

    Threads call :meth:`take` for the next block, and drop the block they
    hold before they take the next. With ``ahead`` = 0 the sources are handed
    over as they are, in order, for the thread's work to load (no reader
    threads: a chunk already in memory needs none); otherwise ``readers``
    threads keep the next ``ahead`` blocks loading or loaded, so a worker
    holds at most one block per thread plus ``ahead``. A failed load raises
    from the :meth:`take` that hands its block over and stops the pass: later
    calls return None. :meth:`close` (or leaving a ``with`` block) cancels
    the loads not started and waits for the reader threads to end.
    """

    def __init__(self, sources: Sequence[Any], *, ahead: int, readers: int) -> None:
        self._sources = sources
        self._ahead = ahead
        self._next = 0
        self._loading: deque[tuple[int, Future]] = deque()
        self._stopped = False
        self._lock = threading.Lock()
        self._allocations = ExitStack()
        self._allocations.enter_context(streaming_allocations(largest_streamed_block(sources)))
        self._pool = (
            ThreadPoolExecutor(readers, thread_name_prefix="kmeans-read-ahead")
            if ahead > 0 and len(sources) > 0
            else None
        )

    def __enter__(self) -> ReadAhead:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def take(self) -> Taken | None:
        """The next block; None when none is left or the pass has stopped.

        Raises
        ------
        Exception
            Whatever loading the block raised (the pass then stops).
        """
        with self._lock:
            if self._stopped:
                return None
            if self._pool is None:
                if self._next == len(self._sources):
                    return None
                self._next += 1
                return Taken(self._next - 1, self._sources[self._next - 1])
            self._fill()
            if not self._loading:
                return None
            position, pending = self._loading.popleft()
            self._fill()
        try:
            return Taken(position, pending.result())
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Hand out no more blocks and cancel the loads not started."""
        with self._lock:
            self._stopped = True
            for _, pending in self._loading:
                pending.cancel()
            self._loading.clear()

    def close(self) -> None:
        """:meth:`stop`, and wait for the reader threads to end."""
        self.stop()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
        self._allocations.close()

    def _fill(self) -> None:
        """Start the next loads, in order, until ``ahead`` are loading or loaded."""
        while len(self._loading) < self._ahead and self._next < len(self._sources):
            source = self._sources[self._next]
            self._loading.append((self._next, self._pool.submit(source.load)))
            self._next += 1
