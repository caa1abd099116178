"""Clusters of more than five workers: every worker counts, and all close quietly."""

from __future__ import annotations

import logging
import sys
import types

import dask.array as da
import numpy as np
import pytest
from distributed import Client, Future, LocalCluster

import kmeans_dask._worker.threads as threads_module
from kmeans_dask import KMeans
from kmeans_dask._engine.client import worker_info
from kmeans_dask._engine.placement import fits_in_memory

MiB = 2**20


@pytest.fixture
def five_listed_by_default(monkeypatch):
    """``Client.scheduler_info()`` as the releases that list five workers unless asked."""
    listing = Client.scheduler_info

    def scheduler_info(self, n_workers: int = 5, **kwargs):
        return listing(self, n_workers=n_workers, **kwargs)

    monkeypatch.setattr(Client, "scheduler_info", scheduler_info)


def test_the_memory_of_every_worker_counts(five_listed_by_default):
    with (
        LocalCluster(
            n_workers=7,
            threads_per_worker=1,
            processes=False,
            memory_limit=100 * MiB,
            dashboard_address=":0",
        ) as cluster,
        Client(cluster) as client,
    ):
        client.wait_for_workers(7)
        assert len(worker_info(client)) == 7
        # Persisted data may use half of the 700 MiB the seven workers have.
        assert fits_in_memory(client, 340 * MiB)
        assert not fits_in_memory(client, 360 * MiB)


def test_closing_after_a_fit_on_sixteen_workers_is_quiet(caplog):
    """Nothing of the fit runs or waits when it returns, and its workers exit promptly."""
    X = da.from_array(np.random.default_rng(0).normal(size=(64_000, 4)), chunks=4_000)
    with (
        LocalCluster(n_workers=16, threads_per_worker=1, dashboard_address=":0") as cluster,
        Client(cluster),
    ):
        model = KMeans(4, random_state=0, max_iter=20).fit(X)
        assert model.labels_.chunks == X.chunks[:1]
        caplog.clear()
        caplog.set_level(logging.WARNING, logger="distributed")
    closing = [f"{r.name} {r.levelname}: {r.getMessage()[:200]}" for r in caplog.records]
    assert closing == []


def test_a_fit_returns_with_nothing_left_running(client):
    """Labels stay on the workers, but their tasks have finished: a close right after is quiet."""
    X = da.from_array(np.random.default_rng(1).normal(size=(40_000, 3)), chunks=2_500)
    for engine in ("actors", "tasks"):
        model = KMeans(3, random_state=0, max_iter=3, engine=engine).fit(X)
        futures = [v for v in model.labels_.__dask_graph__().values() if isinstance(v, Future)]
        assert futures and all(future.status == "finished" for future in futures)
        assert not any(client.processing().values())


def test_worker_processes_skip_the_final_collection(monkeypatch):
    """Registered once per worker process, with the native thread cap."""
    registered = []
    monkeypatch.setattr(threads_module.atexit, "register", registered.append)
    monkeypatch.setattr(threads_module, "_limited", set())
    with (
        LocalCluster(n_workers=1, processes=False, dashboard_address=":0") as cluster,
        Client(cluster) as client,
    ):
        KMeans(2, random_state=0, max_iter=2).fit(np.random.default_rng(0).normal(size=(500, 2)))
        client.run(threads_module.limit_worker_threads)
    # once; libraries the fit imports first (when this test runs alone) register their own
    assert registered.count(threads_module.skip_final_collection) == 1


def test_a_faiss_still_being_imported_is_capped_at_a_later_call(monkeypatch):
    """Another worker thread may be importing Faiss when a task starts: its module
    is in ``sys.modules`` before its functions (a CI failure: "partially
    initialized module 'faiss' has no attribute 'omp_set_num_threads'")."""
    importing = types.ModuleType("faiss")
    monkeypatch.setitem(sys.modules, "faiss", importing)
    monkeypatch.setattr(threads_module, "_limited", {"native"})  # BLAS left as it is
    monkeypatch.setattr(threads_module, "_in_dask_worker", lambda: True)
    threads_module.limit_worker_threads()
    assert threads_module._limited == {"native"}
    capped = []
    importing.omp_set_num_threads = capped.append  # the import has finished
    threads_module.limit_worker_threads()
    threads_module.limit_worker_threads()
    assert capped == [1]
    assert threads_module._limited == {"native", "faiss"}
