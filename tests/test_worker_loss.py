"""A worker killed mid-fit (a real SIGKILL) does not change the result."""

from __future__ import annotations

import os
import signal
import threading
import time

import dask.array as da
import numpy as np
import pytest
import zarr
from distributed import Client, LocalCluster
from numpy.testing import assert_array_equal

from kmeans_dask import KMeans
from kmeans_dask._engine.hosts import ChunkHosts

PARAMS = {"n_clusters": 30, "init": "k-means||", "random_state": 0, "max_iter": 40, "tol": 0.0}


@pytest.fixture(scope="module")
def rows():
    return np.random.default_rng(0).uniform(size=(120_000, 8))


@pytest.fixture
def fragile_cluster():
    """Two nanny-managed worker processes: a killed one is restarted by its nanny."""
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, host="127.0.0.1", dashboard_address=":0"
        ) as cluster,
        Client(cluster) as client,
    ):
        yield client


def _kill_a_worker_during(client, fit):
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
    client.wait_for_workers(2, timeout=60)  # the nanny replaces the killed process
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


def test_fit_through_the_actor_handles_survives_a_killed_worker(
    fragile_cluster, rows, monkeypatch
):
    """The fallback path of the actors (their public handles) recovers as the direct one."""

    async def handler_changed(hosts):
        return False

    monkeypatch.setattr(ChunkHosts, "_direct_calls_answer", handler_changed)
    undisturbed = KMeans(**PARAMS, engine="actors").fit(rows)
    disturbed = _kill_a_worker_during(
        fragile_cluster, lambda: KMeans(**PARAMS, engine="actors").fit(rows)
    )
    assert_array_equal(disturbed.cluster_centers_, undisturbed.cluster_centers_)
    assert disturbed.inertia_ == undisturbed.inertia_
    assert_array_equal(disturbed.labels_, undisturbed.labels_)
