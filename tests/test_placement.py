"""NumPy rows placed on the workers by the scatter itself, without load tasks."""

from __future__ import annotations

import pickle

import numpy as np
from numpy.testing import assert_array_equal

from kmeans_dask._engine.placement import distribute
from kmeans_dask._worker.chunks import Chunk
from kmeans_dask._worker.host_ops import host_ops


def _misaligned(buffer: pickle.PickleBuffer) -> memoryview:
    """The bytes of ``buffer`` at an odd address, as a network frame can hold them."""
    raw = bytearray(buffer.raw().nbytes + 1)
    raw[1:] = buffer.raw()
    return memoryview(raw)[1:]


def test_a_chunk_is_placed_again_where_it_is_unpickled():
    rows = np.arange(60, dtype=np.float32).reshape(20, 3)
    chunk = Chunk(rows, np.linspace(1, 2, 20), 40, host_ops())
    buffers: list[pickle.PickleBuffer] = []
    payload = pickle.dumps(chunk, protocol=5, buffer_callback=buffers.append)
    moved = pickle.loads(payload, buffers=[_misaligned(b) for b in buffers])
    assert moved.data.ctypes.data % moved.data.itemsize == 0
    assert moved.data.flags.c_contiguous and moved.offset == 40 and moved.ops is host_ops()
    assert_array_equal(moved.data, rows)
    assert_array_equal(moved.weights, chunk.weights)


def test_numpy_rows_reach_the_workers_without_load_tasks(client):
    X = np.random.default_rng(0).normal(size=(5000, 4)).astype(np.float32)
    data = distribute(client, X, None)
    try:
        assert not any("kmeans-load" in str(c.key) for c in data.chunks)

        def placed(chunk: Chunk) -> bool:
            rows = chunk.data
            return rows.flags.c_contiguous and rows.ctypes.data % rows.itemsize == 0

        assert all(client.gather([client.submit(placed, c, pure=False) for c in data.chunks]))
        rows = np.concatenate([c.data for c in client.gather(data.chunks)])
        assert_array_equal(rows, X)
    finally:
        data.release()
