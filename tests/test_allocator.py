"""Block buffers reused from the heap while a pass streams, where the nanny tuned the allocator."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import textwrap
from contextlib import nullcontext

import numpy as np
import pytest
import zarr

from kmeans_dask._worker import allocator, reading
from kmeans_dask._worker.allocator import (
    GLIBC_DEFAULT_THRESHOLD,
    MAX_MMAP_THRESHOLD,
    Thresholds,
    environment_thresholds,
    streaming_allocations,
    streaming_thresholds,
)
from kmeans_dask._worker.chunks import ZarrBlock
from kmeans_dask._worker.host_ops import host_ops
from kmeans_dask._worker.reading import ReadAhead

NANNY = {"MALLOC_TRIM_THRESHOLD_": "65536"}


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
    return libc


def test_overlapping_passes_get_the_largest_thresholds_until_the_last_ends(fake_libc, monkeypatch):
    monkeypatch.setattr(os, "environ", {**os.environ, **NANNY})
    small, large = streaming_thresholds(2**20), streaming_thresholds(8 * 2**20)
    with streaming_allocations(2**20):
        assert fake_libc.thresholds() == small
        with streaming_allocations(8 * 2**20):
            assert fake_libc.thresholds() == large
        assert fake_libc.thresholds() == small
        assert ("malloc_trim", 0) not in fake_libc.calls
    assert fake_libc.thresholds() == Thresholds(trim=65536, mmap=GLIBC_DEFAULT_THRESHOLD)
    assert fake_libc.calls[-1] == ("malloc_trim", 0)
    assert not allocator._ALLOCATOR.passes


def test_the_settings_come_back_when_a_pass_fails(fake_libc, monkeypatch):
    monkeypatch.setattr(os, "environ", {**os.environ, **NANNY})
    with pytest.raises(RuntimeError, match="block 3"), streaming_allocations(2**20):
        raise RuntimeError("block 3 could not be read")
    assert fake_libc.thresholds() == Thresholds(trim=65536, mmap=GLIBC_DEFAULT_THRESHOLD)
    assert not allocator._ALLOCATOR.passes


@pytest.mark.parametrize("environ", [{}, {"MALLOC_TRIM_THRESHOLD_": "lots"}])
def test_an_allocator_the_environment_left_alone_is_not_touched(fake_libc, monkeypatch, environ):
    monkeypatch.setattr(
        os, "environ", {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    )
    os.environ.update(environ)
    with streaming_allocations(2**20):
        pass
    assert fake_libc.calls == []


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
def test_block_buffers_are_reused_instead_of_mapped_afresh_under_the_nannys_setting():
    # Page faults, not time: 30 buffers of 6 MiB, each written once, fault
    # their pages in afresh when each is a new mapping (at least once each,
    # even where the kernel backs them with huge pages); reused from the
    # heap, hardly at all. (malloc and memset, not NumPy, which asks for
    # huge pages.)
    script = textwrap.dedent(
        """
        import ctypes, resource
        from kmeans_dask._worker.allocator import streaming_allocations

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
        with streaming_allocations(SIZE):
            reused = faults()
        again = faults()
        print(mapped, reused, again)
        """
    )
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
