"""Reading blocks ahead of the threads that work on them (no Dask here)."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from kmeans_dask._worker.chunks import ZarrBlock
from kmeans_dask._worker.host_ops import host_ops
from kmeans_dask._worker.reading import (
    MAX_AHEAD_PER_THREAD,
    ReadAhead,
    read_ahead_depth,
    read_ahead_for,
)


class Counter:
    """Blocks loaded, alive and being loaded; the most alive at once."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.alive = 0
        self.most_alive = 0
        self.loaded: list[int] = []

    def born(self, position: int) -> None:
        with self.lock:
            self.alive += 1
            self.most_alive = max(self.most_alive, self.alive)
            self.loaded.append(position)

    def died(self) -> None:
        with self.lock:
            self.alive -= 1


class Block:
    """Loaded rows: counted alive until garbage."""

    def __init__(self, counter: Counter, position: int) -> None:
        self.counter = counter
        self.position = position
        counter.born(position)

    def __del__(self) -> None:
        self.counter.died()


class Source:
    """A stand-in for a ZarrBlock: ``load`` makes a counted block (or fails)."""

    def __init__(self, counter: Counter, position: int, fails: bool = False) -> None:
        self.counter = counter
        self.position = position
        self.fails = fails

    def load(self) -> Block:
        time.sleep(0.002)
        if self.fails:
            raise RuntimeError(f"block {self.position} is corrupted")
        return Block(self.counter, self.position)


def _run(sources, *, threads: int, ahead: int, work_seconds: float = 0.0) -> dict[int, int]:
    """Every block's position, as the threads saw them, through a ReadAhead."""
    seen: dict[int, int] = {}

    def work(blocks: ReadAhead) -> None:
        while (taken := blocks.take()) is not None:
            time.sleep(work_seconds)
            seen[taken.position] = taken.block.position
            del taken

    with (
        ReadAhead(sources, ahead=ahead, readers=threads) as blocks,
        ThreadPoolExecutor(threads) as pool,
    ):
        for job in [pool.submit(work, blocks) for _ in range(threads)]:
            job.result()
    return seen


def _read_ahead_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("kmeans-read-ahead")]


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("ahead", [0, 1, 3])
@pytest.mark.parametrize("n_blocks", [0, 1, 5, 12])
def test_every_block_is_loaded_once_in_order_and_handed_over(threads, ahead, n_blocks):
    counter = Counter()
    sources = [Source(counter, i) for i in range(n_blocks)]
    seen = _run(sources, threads=threads, ahead=ahead)
    assert seen == {i: i for i in range(n_blocks)}
    if ahead == 0:  # handed over as they are, for the work to load
        assert counter.loaded == []
    else:
        assert sorted(counter.loaded) == list(range(n_blocks))
    if threads == 1 and ahead > 0:  # one reader: loaded in order
        assert counter.loaded == list(range(n_blocks))
    assert counter.alive == 0
    assert not _read_ahead_threads()


@pytest.mark.parametrize(("threads", "ahead"), [(1, 1), (1, 3), (2, 2), (2, 4)])
def test_blocks_in_memory_stay_within_threads_plus_ahead(threads, ahead):
    counter = Counter()
    sources = [Source(counter, i) for i in range(30)]
    # Slow work: the readers run ahead as far as they may.
    _run(sources, threads=threads, ahead=ahead, work_seconds=0.01)
    assert counter.most_alive <= threads + ahead
    assert counter.most_alive > threads  # blocks were read ahead of the work


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("ahead", [1, 2])
def test_a_failed_read_raises_from_take_and_stops_the_pass(threads, ahead):
    counter = Counter()
    sources = [Source(counter, i, fails=i == 4) for i in range(40)]
    started = time.perf_counter()
    with pytest.raises(RuntimeError, match="block 4 is corrupted"):
        _run(sources, threads=threads, ahead=ahead, work_seconds=0.001)
    assert time.perf_counter() - started < 10  # nothing waits forever
    assert len(counter.loaded) < 40  # the pass stopped
    assert counter.alive == 0
    assert not _read_ahead_threads()


def test_close_cancels_what_was_not_read_and_ends_the_readers():
    counter = Counter()
    blocks = ReadAhead([Source(counter, i) for i in range(20)], ahead=3, readers=2)
    taken = blocks.take()
    assert taken.position == 0
    assert _read_ahead_threads()
    blocks.close()
    assert blocks.take() is None
    assert not _read_ahead_threads()
    assert len(counter.loaded) <= 1 + 3


@pytest.mark.parametrize(
    ("block_bytes", "threads", "memory_limit", "expected"),
    [
        (10, 2, None, 2 * MAX_AHEAD_PER_THREAD),  # no limit: the most per thread
        (10, 2, 0, 2 * MAX_AHEAD_PER_THREAD),
        (2**20, 2, 2**30, 2 * MAX_AHEAD_PER_THREAD),  # plenty of memory
        (2**20, 2, 96 * 2**20, 3),  # 1/16 of 96 MiB: three blocks of 1 MiB, counted twice
        (2**20, 1, 32 * 2**20, 1),
        (2**20, 4, 16 * 2**20, 0),  # one block (twice) is more than 1/16 of the limit
    ],
)
def test_read_ahead_follows_the_memory_limit(block_bytes, threads, memory_limit, expected):
    assert read_ahead_depth(block_bytes, threads, memory_limit) == expected


def test_only_streamed_blocks_are_read_ahead():
    ops = host_ops()
    array = np.zeros((10, 4), np.float32)  # stands in for a zarr array: shape only
    blocks = [ZarrBlock(array, 0, 10, np.dtype(np.float32), None, ops)]
    assert read_ahead_for(blocks, 2, None) == 2 * MAX_AHEAD_PER_THREAD
    assert read_ahead_for(blocks, 2, 16 * 2 * 160) == 1  # one 160-byte block, counted twice
    chunks = [ops.place(array, None, 0, np.float32)]
    assert read_ahead_for(chunks, 2, None) == 0
    assert read_ahead_for([], 2, None) == 0
