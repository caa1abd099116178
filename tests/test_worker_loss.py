"""A worker killed mid-fit (a real SIGKILL) does not change the result."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import dask.array as da
import numpy as np
import pytest
import zarr
from distributed import Client, LocalCluster
from numpy.testing import assert_array_equal
from sklearn.datasets import make_blobs

import kmeans_dask._engine.hosts as hosts_module
from kmeans_dask import KMeans
from kmeans_dask._engine import placement
from kmeans_dask._engine.hosts import ChunkHosts, HostLost
from kmeans_dask._engine.mapreduce import CLIENT_GATHER_BYTES
from kmeans_dask._worker.results import ClusterStats, combine_stats

PARAMS = {"n_clusters": 30, "init": "k-means||", "random_state": 0, "max_iter": 40, "tol": 0.0}

#: One value of this size is more than the client gathers: the hosts combine worker to worker.
LARGE = CLIENT_GATHER_BYTES + 1


@pytest.fixture(scope="module")
def rows():
    return np.random.default_rng(0).uniform(size=(120_000, 8))


@contextmanager
def _nanny_cluster(n_workers: int, threads_per_worker: int) -> Iterator[Client]:
    """A client of nanny-managed worker processes: a killed one is restarted by its nanny."""
    with (
        LocalCluster(
            n_workers=n_workers,
            threads_per_worker=threads_per_worker,
            host="127.0.0.1",
            dashboard_address=":0",
        ) as cluster,
        Client(cluster) as client,
    ):
        yield client


@pytest.fixture
def fragile_cluster():
    """Two worker processes, one thread each."""
    with _nanny_cluster(2, 1) as client:
        yield client


@pytest.fixture
def lone_worker():
    """One worker process: while its nanny restarts it, the cluster has none."""
    with _nanny_cluster(1, 2) as client:
        yield client


def _kill_a_worker_during(client, fit, workers=2):
    """Run ``fit`` while another thread SIGKILLs one worker process once it is busy."""
    fit_done = threading.Event()
    killed = {}

    def killer():
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not fit_done.is_set():
            # Lloyd iterations run as "kmeans-assign" tasks or through "kmeans-hosts" actors.
            processing = client.processing()
            held = client.has_what()
            if any(
                "kmeans-assign" in str(key) for tasks in processing.values() for key in tasks
            ) or any("kmeans-hosts" in str(key) for keys in held.values() for key in keys):
                time.sleep(0.3)  # a few iterations in
                pids = client.run(os.getpid)
                address = sorted(pids)[0]
                os.kill(pids[address], signal.SIGKILL)
                killed["address"] = address
                killed["while_fitting"] = not fit_done.is_set()
                return
            time.sleep(0.01)

    thread = threading.Thread(target=killer)
    thread.start()
    try:
        model = fit()
    finally:
        fit_done.set()
        thread.join()
    assert killed.get("while_fitting"), "the worker was not killed during the fit"
    client.wait_for_workers(workers, timeout=60)  # the nanny replaces the killed process
    return model


@pytest.mark.parametrize("engine", ["tasks", "actors"])
@pytest.mark.parametrize("kind", ["numpy", "dask", "zarr"])
def test_fit_survives_a_killed_worker(fragile_cluster, rows, tmp_path, kind, engine):
    if kind == "numpy":
        data = rows
    elif kind == "dask":
        data = da.from_array(rows, chunks=(15_000, 8))
    else:
        data = str(tmp_path / "rows.zarr")
        zarr.create_array(data, shape=rows.shape, chunks=(15_000, 8), dtype=rows.dtype)[:] = rows
    undisturbed = KMeans(**PARAMS, engine=engine).fit(data)
    disturbed = _kill_a_worker_during(
        fragile_cluster, lambda: KMeans(**PARAMS, engine=engine).fit(data)
    )
    assert_array_equal(disturbed.cluster_centers_, undisturbed.cluster_centers_)
    assert disturbed.inertia_ == undisturbed.inertia_
    assert disturbed.n_iter_ == undisturbed.n_iter_
    labels = disturbed.labels_
    expected = undisturbed.labels_
    if kind != "numpy":
        labels, expected = labels.compute(), expected.compute()
    assert_array_equal(labels, expected)


def test_a_streamed_fit_waits_for_its_only_worker_to_come_back(lone_worker, rows, tmp_path):
    store = str(tmp_path / "rows.zarr")
    zarr.create_array(store, shape=rows.shape, chunks=(15_000, 8), dtype=rows.dtype)[:] = rows
    undisturbed = KMeans(**PARAMS, persist=False).fit(store)
    disturbed = _kill_a_worker_during(
        lone_worker, lambda: KMeans(**PARAMS, persist=False).fit(store), workers=1
    )
    assert_array_equal(disturbed.cluster_centers_, undisturbed.cluster_centers_)
    assert disturbed.inertia_ == undisturbed.inertia_
    assert_array_equal(disturbed.labels_.compute(), undisturbed.labels_.compute())


def test_a_fit_that_lost_its_last_worker_says_so_when_none_joins(monkeypatch):
    monkeypatch.setattr(placement, "WORKER_RETURN_TIMEOUT", 0.5)
    data = placement.DistributedData(chunks=[], row_chunks=(), n_features=2, dtype=np.float64)
    with (
        LocalCluster(n_workers=0, host="127.0.0.1", dashboard_address=":0") as cluster,
        Client(cluster) as client,
        pytest.raises(RuntimeError, match=r"a worker was lost and none is left: waited 0 s"),
    ):
        data.recover(client)


async def _handler_changed(hosts):
    return False


def _stats_slow_for_chunk_one(chunk):
    if chunk[0] == 1:
        time.sleep(20)  # killed before it wakes
    return ClusterStats(np.full((4, 3), chunk[0]), np.ones(4), float(chunk[0]))


def _host_states(client, hosts, address):
    """The values a host keeps for others and why it failed, on the worker at ``address``."""
    keys = [future.key for future in hosts._futures]

    def state(dask_worker):
        actors = [dask_worker.state.actors.get(key) for key in keys]
        return [(len(a._kept), a._failure) for a in actors if a is not None]

    return client.run(state, workers=[address])[address]


@pytest.mark.parametrize("direct", [True, False])
def test_a_worker_lost_while_another_waits_for_its_values_is_a_lost_host(
    fragile_cluster, monkeypatch, direct
):
    """The host combining the root waits for the other worker's values when it dies."""
    client = fragile_cluster
    if not direct:
        monkeypatch.setattr(ChunkHosts, "_direct_calls_answer", _handler_changed)
    first, second = sorted(client.scheduler_info()["workers"])
    chunks = [
        client.scatter(np.full(3, float(i)), workers=[(first, second)[i % 2]], hash=False)
        for i in range(4)
    ]
    hosts = ChunkHosts(client, chunks)
    assert hosts.direct == direct
    pid = client.run(os.getpid, workers=[second])[second]

    def kill_once_the_first_waits():
        # The first worker's host has asked for the second's values: kill the second.
        deadline = time.monotonic() + 60
        while _host_states(client, hosts, second) == [(0, None)]:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        os.kill(pid, signal.SIGKILL)

    killer = threading.Thread(target=kill_once_the_first_waits)
    killer.start()
    try:
        with pytest.raises(HostLost):
            hosts.map_reduce(_stats_slow_for_chunk_one, combine_stats, result_bytes=LARGE)
        # The first worker stops waiting for the dead one's values and keeps none: its
        # call fails (direct), or the client tells it the iteration is given up (handles,
        # which may wait for ever on a dead actor).
        deadline = time.monotonic() + 30
        while not (states := _host_states(client, hosts, first))[0][1]:
            assert time.monotonic() < deadline, states
            time.sleep(0.1)
        ((n_kept, failure),) = states
        assert n_kept == 0
        assert isinstance(failure, OSError if direct else (OSError, RuntimeError))
    finally:
        killer.join()
        hosts.close()
    client.wait_for_workers(2, timeout=60)


@pytest.mark.parametrize(
    ("direct", "reduction"), [(False, "client"), (True, "workers"), (False, "workers")]
)
def test_fit_through_the_actors_survives_a_killed_worker_either_way(
    fragile_cluster, rows, monkeypatch, direct, reduction
):
    """The fallback path of the actors (their public handles) recovers as the direct one,
    and so does every pass combined worker to worker (by either path)."""
    if reduction == "workers":
        monkeypatch.setattr(hosts_module, "CLIENT_GATHER_BYTES", -1)
    if not direct:
        monkeypatch.setattr(ChunkHosts, "_direct_calls_answer", _handler_changed)
    undisturbed = KMeans(**PARAMS, engine="actors").fit(rows)
    disturbed = _kill_a_worker_during(
        fragile_cluster, lambda: KMeans(**PARAMS, engine="actors").fit(rows)
    )
    assert_array_equal(disturbed.cluster_centers_, undisturbed.cluster_centers_)
    assert disturbed.inertia_ == undisturbed.inertia_
    assert_array_equal(disturbed.labels_, undisturbed.labels_)


def _count_candidate_checks(dask_worker):
    """In a worker: count the chunk passes whose candidates held (and were used)."""
    from kmeans_dask._worker import host_ops

    checks = dask_worker.candidate_checks_held = []
    check = host_ops._candidates_hold

    def counted(*args):
        held = check(*args)
        checks.append(held)
        return held

    host_ops._candidates_hold = counted


def test_a_candidate_fit_survives_a_killed_worker_with_exact_final_labels(fragile_cluster):
    """Chunks whose kept labels died with their worker search with IVF for an iteration
    (README, "Faults"): the fit ends, its final pass is exact, and it lands as near."""
    X, _ = make_blobs(60_000, 8, centers=40, cluster_std=2.0, random_state=1)
    params = {**PARAMS, "n_clusters": 64, "max_iter": 30, "assign": "candidates"}
    fragile_cluster.run(_count_candidate_checks)
    undisturbed = KMeans(**params, engine="actors").fit(X)
    held = fragile_cluster.run(lambda dask_worker: sum(dask_worker.candidate_checks_held))
    assert sum(held.values()) > 0, "no chunk moved its rows among candidates"
    disturbed = _kill_a_worker_during(
        fragile_cluster, lambda: KMeans(**params, engine="actors").fit(X)
    )
    distances = ((X[:, None, :] - disturbed.cluster_centers_[None]) ** 2).sum(axis=2)
    assert_array_equal(disturbed.labels_, distances.argmin(axis=1))
    assert disturbed.inertia_ == pytest.approx(distances.min(axis=1).sum(), rel=1e-9)
    assert disturbed.inertia_ == pytest.approx(undisturbed.inertia_, rel=0.01)
