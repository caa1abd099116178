"""A Zarr dataset three times the workers' memory clusters like in-memory data."""

from __future__ import annotations

import numpy as np
import pytest
import zarr
from distributed import Client, LocalCluster
from numpy.testing import assert_array_equal

from kmeans_dask import KMeans
from kmeans_dask.benchmark.memory import peak_rss, reset_peak_rss
from kmeans_dask.datasets import write_blobs_zarr

MEMORY_LIMIT = 600 * 2**20
N_FEATURES = 32
CHUNK_ROWS = 50_000
N_SAMPLES = 300 * CHUNK_ROWS  # 3.05 x the memory limit
MAX_ITER = 3


def _spilled(dask_worker) -> int:
    return len(getattr(dask_worker.data, "slow", ()))


@pytest.fixture(scope="module")
def big_store(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("big") / "big.zarr")
    # Uncompressed, so the test measures memory, not decompression speed
    # (scripts/bench_out_of_core.py measures compressed throughput).
    write_blobs_zarr(
        path,
        N_SAMPLES,
        N_FEATURES,
        10,
        chunk_rows=CHUNK_ROWS,
        cluster_std=3.0,
        random_state=2,
        compress=False,
    )
    return path


def test_larger_than_memory_zarr_streams_to_the_in_memory_result(cluster, big_store):
    array = zarr.open_array(big_store, mode="r")
    assert array.nbytes >= 3 * MEMORY_LIMIT
    rng = np.random.default_rng(0)
    init = array[np.sort(rng.choice(N_SAMPLES, 10, replace=False))]

    with Client(cluster):  # unlimited workers: the in-memory reference
        reference = KMeans(10, init=init, max_iter=MAX_ITER, persist=True).fit(big_store)

    with (
        LocalCluster(
            n_workers=1,
            threads_per_worker=2,
            memory_limit=MEMORY_LIMIT,
            host="127.0.0.1",
            dashboard_address=":0",
        ) as small,
        Client(small) as client,
    ):
        # Compile the kernels first (Numba's compiler needs memory once per
        # process), then measure the fit alone.
        KMeans(10, init=init, max_iter=1).fit(array[: 2 * CHUNK_ROWS])
        client.run(reset_peak_rss)
        workers_before = set(client.scheduler_info()["workers"])
        model = KMeans(10, init=init, max_iter=MAX_ITER).fit(big_store)  # persist decided: no
        peaks = client.run(peak_rss)
        spilled = client.run(_spilled)
        assert set(client.scheduler_info()["workers"]) == workers_before  # none restarted

    assert max(peaks.values()) < MEMORY_LIMIT, peaks
    assert sum(spilled.values()) == 0
    assert_array_equal(model.cluster_centers_, reference.cluster_centers_)
    assert model.inertia_ == reference.inertia_
    assert model.n_iter_ == reference.n_iter_ == MAX_ITER
