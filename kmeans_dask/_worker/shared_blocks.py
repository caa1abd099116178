"""Idle worker threads search blocks of the chunks other threads are still passing over.

A pass through the chunk hosts (:meth:`~kmeans_dask._engine.hosts.ChunkHost.map`)
runs one job per worker thread, each taking the next chunk until none is
left. Chunks of the same size take unequal times (198-307 ms for the same
search at k = 4096, d = 128 on a 2-core Xeon), so the thread that finishes
first waits for the last: with four chunks on two threads, 95 ms of a
580 ms pass (benchmarks/RESULTS.md, "Idle threads search the last chunks'
blocks").

So a pass whose search blocks are worth sharing opens them here
(:func:`shared_blocks`) and goes through them from the front, while a job
left without chunks calls :func:`help_open_searches`, which searches blocks
of the open passes from their back. The owner adds every block into its
statistics itself, in row order, so a pass's results are bit for bit those
of a pass nobody helped: only the thread that searched a block differs, and
a block's labels do not depend on the thread.

Only the jobs of one host call help one another (:func:`host_call`): a
helper holds its worker thread no longer than its own call's passes last,
never for another fit's, and passes outside a host call (the task path, a
fit without Dask) open nothing.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar


class SharedBlocks:
    """One pass's search blocks: its owner claims them from the front, helpers from the back.

    Parameters
    ----------
    n_blocks : int
    search : callable
        ``search(index)`` writes block ``index``'s labels where the owner
        reads them; called by a helper thread, at most once per block.
    """

    def __init__(self, n_blocks: int, search: Callable[[int], None]) -> None:
        self._search = search
        self._condition = threading.Condition()
        #: Blocks before it are the owner's.
        self._front = 0
        #: Blocks from it on are the helpers'.
        self._back = n_blocks
        #: The helpers' blocks not searched yet.
        self._pending: set[int] = set()
        self._failure: BaseException | None = None

    def claim(self, index: int, most: int) -> int:
        """Claim blocks from ``index`` on for the owner, which goes through them in order.

        Returns how many it may search, at most ``most`` and a quarter of
        those nobody has claimed yet (at least one), so that the helpers
        find blocks left and the owner calls the search a few times per
        pass, not once per block. Returns 0 when a helper took block
        ``index``, once its labels are written; raises what a helper raised
        while searching one of this pass's blocks.
        """
        with self._condition:
            if index < self._back:
                run = min(most, max(1, (self._back - index) // 4))
                self._front = index + run
                return run
            while index in self._pending and self._failure is None:
                self._condition.wait()
            if self._failure is not None:
                raise self._failure
            return 0

    def unclaimed(self) -> int:
        """How many blocks nobody has claimed yet (none once the pass has failed)."""
        return 0 if self._failure is not None else max(self._back - self._front, 0)

    def help_once(self) -> bool:
        """Search the last unclaimed block; False when there is none, or the
        pass has already failed."""
        with self._condition:
            if self._back <= self._front or self._failure is not None:
                return False
            self._back -= 1
            index = self._back
            self._pending.add(index)
        failure = None
        try:
            self._search(index)
        except BaseException as exc:  # the owner raises it
            failure = exc
        with self._condition:
            self._pending.discard(index)
            if failure is not None and self._failure is None:
                self._failure = failure
            self._condition.notify_all()
        return True

    def close(self) -> None:
        """Let no helper claim another block; wait for those under way.

        The owner calls it before its arrays go back to other work, even when
        it stops early: a helper must not write into them after that.
        """
        with self._condition:
            self._front = max(self._front, self._back)
            while self._pending:
                self._condition.wait()


#: The host call whose jobs run in this context (:func:`host_call`).
_call: ContextVar[object | None] = ContextVar("kmeans_dask_host_call", default=None)
_open_lock = threading.Lock()
#: The open passes, each with its host call.
_open: list[tuple[SharedBlocks, object]] = []


@contextmanager
def host_call() -> Iterator[None]:
    """Mark the current context as one host call's, for the jobs started in it.

    The passes those jobs open are helped by the same call's idle jobs.
    """
    token = _call.set(object())
    try:
        yield
    finally:
        _call.reset(token)


@contextmanager
def shared_blocks(n_blocks: int, search: Callable[[int], None]) -> Iterator[SharedBlocks | None]:
    """:class:`SharedBlocks` open to the idle jobs of this host call for the duration.

    None outside a host call, where nobody would help, and for fewer than two
    blocks, which leave nothing to share.
    """
    call = _call.get()
    if call is None or n_blocks < 2:
        yield None
        return
    blocks = SharedBlocks(n_blocks, search)
    entry = (blocks, call)
    with _open_lock:
        _open.append(entry)
    try:
        yield blocks
    finally:
        with _open_lock:
            _open.remove(entry)
        blocks.close()


def help_open_searches() -> None:
    """Search blocks of this host call's open passes, the one with most left
    first, until none is left."""
    call = _call.get()
    while call is not None:
        with _open_lock:
            ours = [blocks for blocks, owner in _open if owner is call]
        busiest = max(ours, key=SharedBlocks.unclaimed, default=None)
        if busiest is None or not busiest.help_once():
            return
