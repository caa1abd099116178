"""Per-thread scratch arrays: reused, grown, private to a thread, never leaked into results."""

from __future__ import annotations

import threading

import numpy as np
from numpy.testing import assert_array_equal

from kmeans_dask._worker.chunks import make_chunk
from kmeans_dask._worker.host_ops import host_ops
from kmeans_dask._worker.scratch import scratch
from kmeans_dask._worker.tasks import chunk_labels, chunk_stats


def test_scratch_reuses_grows_and_keeps_threads_apart():
    first = scratch("t", 100, np.float64)
    again = scratch("t", 60, np.float64)
    assert again.shape == (60,) and np.shares_memory(first, again)  # the same memory
    assert not np.shares_memory(scratch("t", 100, np.int32), first)  # per dtype
    assert not np.shares_memory(scratch("u", 100, np.float64), first)  # per name
    grown = scratch("t", 1000, np.float64)
    assert grown.shape == (1000,)
    other_thread = []
    thread = threading.Thread(target=lambda: other_thread.append(scratch("t", 1000, np.float64)))
    thread.start()
    thread.join()
    assert not np.shares_memory(other_thread[0], grown)


def test_statistics_do_not_alias_the_scratch_of_later_tasks():
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(5, 3))
    chunks = [
        make_chunk(rng.normal(size=(3000, 3)) * s, None, 3000 * i, np.float64, host_ops())
        for i, s in enumerate((1.0, 50.0))
    ]
    first = chunk_stats(chunks[0], centers, "numpy")
    chunk_stats(chunks[1], centers, "numpy")  # reuses this thread's scratch
    _, expected = chunk_labels(chunks[0], centers, "numpy")
    assert_array_equal(first.sums, expected.sums)
    assert_array_equal(first.farthest.score, expected.farthest.score)
    assert_array_equal(first.farthest.labels, expected.farthest.labels)
    assert_array_equal(first.farthest.rows, expected.farthest.rows)
