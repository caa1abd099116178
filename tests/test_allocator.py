"""Buffers reused from the heap while passes run, where the nanny tuned the allocator."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import textwrap
from contextlib import contextmanager, nullcontext

import numpy as np
import pytest
import zarr

from kmeans_dask._worker import allocator, reading, tasks
from kmeans_dask._worker.allocator import (
    GLIBC_DEFAULT_THRESHOLD,
    MAX_MMAP_THRESHOLD,
    PASS_THRESHOLDS,
    Thresholds,
    environment_thresholds,
    pass_allocations,
    streaming_allocations,
    streaming_thresholds,
)
from kmeans_dask._worker.chunks import ZarrBlock
from kmeans_dask._worker.host_ops import host_ops
from kmeans_dask._worker.reading import ReadAhead

NANNY = {"MALLOC_TRIM_THRESHOLD_": "65536"}
NANNY_THRESHOLDS = Thresholds(trim=65536, mmap=GLIBC_DEFAULT_THRESHOLD)


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, None),
        (NANNY, Thresholds(trim=65536, mmap=GLIBC_DEFAULT_THRESHOLD)),
        ({"MALLOC_MMAP_THRESHOLD_": "1048576"}, Thresholds(GLIBC_DEFAULT_THRESHOLD, 1048576)),
        ({**NANNY, "MALLOC_MMAP_THRESHOLD_": "4096"}, Thresholds(trim=65536, mmap=4096)),
        ({"MALLOC_TRIM_THRESHOLD_": "64k"}, None),
    ],
)
def test_the_environment_fixes_the_thresholds_or_leaves_them_to_glibc(environ, expected):
    assert environment_thresholds(environ) == expected


@pytest.mark.parametrize(
    ("block_bytes", "expected"),
    [
        (6 * 2**20, Thresholds(trim=12 * 2**20, mmap=12 * 2**20)),
        (64 * 2**20, Thresholds(trim=128 * 2**20, mmap=MAX_MMAP_THRESHOLD)),
    ],
)
def test_a_pass_keeps_a_freed_block_for_the_next_read(block_bytes, expected):
    assert streaming_thresholds(block_bytes) == expected


class FakeLibc:
    """Records ``mallopt`` and ``malloc_trim`` calls."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def mallopt(self, parameter: int, value: int) -> int:
        self.calls.append(("mallopt", parameter, value))
        return 1

    def malloc_trim(self, pad: int) -> int:
        self.calls.append(("malloc_trim", pad))
        return 1

    def thresholds(self) -> Thresholds:
        """The last thresholds set."""
        last = {call[1]: call[2] for call in self.calls if call[0] == "mallopt"}
        return Thresholds(
            trim=last[allocator._M_TRIM_THRESHOLD], mmap=last[allocator._M_MMAP_THRESHOLD]
        )


@pytest.fixture
def fake_libc(monkeypatch):
    libc = FakeLibc()
    monkeypatch.setattr(allocator, "_glibc", lambda: libc)
    monkeypatch.setattr(allocator, "LINGER_SECONDS", 0.0)
    return libc


def _lingered() -> None:
    """Wait for the settings the last pass left to come back."""
    restore = allocator._ALLOCATOR.restore
    if restore is not None:
        restore.join()


def test_overlapping_passes_get_the_largest_thresholds_until_the_last_ends(fake_libc, monkeypatch):
    monkeypatch.setattr(os, "environ", {**os.environ, **NANNY})
    small, large = streaming_thresholds(2**20), streaming_thresholds(8 * 2**20)
    with streaming_allocations(2**20):
        assert fake_libc.thresholds() == small
        with streaming_allocations(8 * 2**20):
            assert fake_libc.thresholds() == large
        assert fake_libc.thresholds() == small
        with pass_allocations():
            assert fake_libc.thresholds() == PASS_THRESHOLDS
        assert fake_libc.thresholds() == small
        assert ("malloc_trim", 0) not in fake_libc.calls
    _lingered()
    assert fake_libc.thresholds() == NANNY_THRESHOLDS
    assert fake_libc.calls[-1] == ("malloc_trim", 0)
    assert not allocator._ALLOCATOR.passes


def test_the_settings_outlast_the_last_pass_unless_the_next_one_starts(fake_libc, monkeypatch):
    """A fit's passes are a centre update apart: the next finds the memory the last freed."""
    monkeypatch.setattr(os, "environ", {**os.environ, **NANNY})
    monkeypatch.setattr(allocator, "LINGER_SECONDS", 60.0)
    with pass_allocations():
        assert fake_libc.thresholds() == PASS_THRESHOLDS
    waiting = allocator._ALLOCATOR.restore
    assert waiting.is_alive() and fake_libc.thresholds() == PASS_THRESHOLDS
    with pass_allocations():
        assert waiting.finished.is_set()  # called off
    monkeypatch.setattr(allocator, "LINGER_SECONDS", 0.05)
    with pass_allocations():
        pass
    assert fake_libc.thresholds() == PASS_THRESHOLDS
    assert ("malloc_trim", 0) not in fake_libc.calls
    _lingered()
    assert fake_libc.thresholds() == NANNY_THRESHOLDS
    assert fake_libc.calls[-1] == ("malloc_trim", 0)


def test_the_settings_come_back_when_a_pass_fails(fake_libc, monkeypatch):
    monkeypatch.setattr(os, "environ", {**os.environ, **NANNY})
    with pytest.raises(RuntimeError, match="block 3"), streaming_allocations(2**20):
        raise RuntimeError("block 3 could not be read")
    _lingered()
    assert fake_libc.thresholds() == NANNY_THRESHOLDS
    assert not allocator._ALLOCATOR.passes


@pytest.mark.parametrize("environ", [{}, {"MALLOC_TRIM_THRESHOLD_": "lots"}])
def test_an_allocator_the_environment_left_alone_is_not_touched(fake_libc, monkeypatch, environ):
    monkeypatch.setattr(
        os, "environ", {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    )
    os.environ.update(environ)
    with streaming_allocations(2**20), pass_allocations():
        pass
    assert fake_libc.calls == []


def test_chunk_tasks_run_with_the_pass_settings(monkeypatch):
    entered = []

    @contextmanager
    def recorded():
        entered.append(True)
        yield

    monkeypatch.setattr(tasks, "pass_allocations", recorded)
    rows = np.random.default_rng(0).normal(size=(50, 3)).astype(np.float32)
    chunk = host_ops().place(rows, None, 0, np.dtype(np.float32))
    stats = tasks.chunk_stats(chunk, rows[:4].astype(np.float64), "numpy", None)
    assert entered == [True]
    assert stats.counts.sum() == 50
    assert tasks.chunk_stats.__name__ == "chunk_stats"  # the dashboard's name for it


def test_a_streamed_pass_reads_under_the_thresholds_of_its_largest_block(tmp_path, monkeypatch):
    entered = []
    monkeypatch.setattr(
        reading, "streaming_allocations", lambda *args: entered.append(args) or nullcontext()
    )
    array = zarr.create_array(tmp_path / "x.zarr", shape=(30, 4), chunks=(10, 4), dtype="f4")
    array[:] = np.arange(120, dtype="f4").reshape(30, 4)
    ops = host_ops()
    sources = [
        ZarrBlock(array, a, rows, np.dtype("f4"), None, ops) for a, rows in [(0, 20), (20, 10)]
    ]
    with ReadAhead(sources, ahead=2, readers=2) as blocks:
        while blocks.take() is not None:
            pass
    assert entered == [(20 * 4 * 4,)]


@pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
    reason="glibc's mallopt exists only on Linux with glibc",
)
@pytest.mark.parametrize("lifted", ["streaming_allocations(SIZE)", "pass_allocations()"])
def test_buffers_are_reused_instead_of_mapped_afresh_under_the_nannys_setting(lifted):
    # Page faults, not time: 30 buffers of 6 MiB, each written once, fault
    # their pages in afresh when each is a new mapping (at least once each,
    # even where the kernel backs them with huge pages); reused from the
    # heap, hardly at all. (malloc and memset, not NumPy, which asks for
    # huge pages.)
    script = textwrap.dedent(
        """
        import ctypes, resource
        from kmeans_dask._worker import allocator
        from kmeans_dask._worker.allocator import pass_allocations, streaming_allocations

        allocator.LINGER_SECONDS = 0.0

        libc = ctypes.CDLL(None)
        libc.malloc.restype = ctypes.c_void_p
        libc.malloc.argtypes = [ctypes.c_size_t]
        libc.free.argtypes = [ctypes.c_void_p]
        SIZE = 6 * 2**20

        def write_one():
            buffer = libc.malloc(SIZE)
            ctypes.memset(buffer, 1, SIZE)
            libc.free(buffer)

        def faults():
            write_one()  # the first may grow the heap
            before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            for _ in range(30):
                write_one()
            return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

        mapped = faults()
        with LIFTED:
            reused = faults()
        allocator._ALLOCATOR.restore.join()
        again = faults()
        print(mapped, reused, again)
        """
    ).replace("LIFTED", lifted)
    result = subprocess.run(
        [sys.executable, "-c", script],
        env={**os.environ, **NANNY},
        capture_output=True,
        text=True,
        check=True,
    )
    mapped, reused, again = map(int, result.stdout.split())
    assert mapped >= 30
    assert reused <= mapped // 10
    assert again >= mapped // 2  # the nanny's setting is back
