"""Per-worker actors: results in chunk order, the tree of tree_reduce, errors as raised."""

from __future__ import annotations

import time

import numpy as np
import pytest
from distributed import Future

from kmeans_dask._chunks import ClusterStats, combine_stats
from kmeans_dask._hosts import ChunkHosts, combine_in_tree, fits_hosts
from kmeans_dask._mapreduce import tree_reduce, tree_reduce_future


def _first_value_and_worker(chunk):
    from distributed import get_worker

    return float(chunk[0]), get_worker().address


def _fail(chunk):
    raise ValueError(f"bad chunk starting with {chunk[0]}")


def test_hosts_map_over_every_chunk_in_order_on_the_worker_holding_it(client):
    chunks = [client.scatter(np.full(10, float(i))) for i in range(7)]
    holders = {key: sorted(addresses)[0] for key, addresses in client.who_has(chunks).items()}
    hosts = ChunkHosts(client, chunks)
    try:
        results = hosts.map(_first_value_and_worker)
    finally:
        hosts.close()
    assert [value for value, _ in results] == [float(i) for i in range(7)]
    assert [worker for _, worker in results] == [holders[c.key] for c in chunks]


def test_errors_inside_a_host_come_back_as_raised_without_waiting(client):
    chunks = [client.scatter(np.full(3, 5.0))]
    hosts = ChunkHosts(client, chunks)
    try:
        start = time.monotonic()
        with pytest.raises(ValueError, match=r"bad chunk starting with 5\.0"):
            hosts.map(_fail)
        assert time.monotonic() - start < 5  # not mistaken for a lost worker
    finally:
        hosts.close()


def test_combining_on_the_client_follows_the_tree_of_tree_reduce(client):
    rng = np.random.default_rng(0)
    parts = [
        ClusterStats(rng.normal(size=(4, 3)) * 10.0**p, rng.random(4), float(rng.random()))
        for p in rng.integers(-8, 8, size=21)
    ]
    local = combine_in_tree(combine_stats, parts)
    remote = tree_reduce(client, combine_stats, [client.scatter(p) for p in parts], name="t")
    np.testing.assert_array_equal(local.sums, remote.sums)
    np.testing.assert_array_equal(local.counts, remote.counts)
    assert local.inertia == remote.inertia
    scattered = client.scatter(parts, hash=False)  # held: scattered data has no recipe
    left = tree_reduce_future(client, combine_stats, scattered, name="t")
    assert isinstance(left, Future)
    np.testing.assert_array_equal(left.result().sums, remote.sums)
    assert left.result().inertia == remote.inertia


def test_hosts_only_when_the_gathered_statistics_stay_small():
    assert fits_hosts(8, 8 * 64 * 33)
    assert not fits_hosts(10_000, 8 * 1000 * 101)
