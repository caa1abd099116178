"""Streamed Zarr passes through the actors, read ahead: the same fit as one task per block."""

from __future__ import annotations

import os
import threading

import dask.array as da
import numpy as np
import pytest
import zarr
from distributed import Client, LocalCluster
from numpy.testing import assert_array_equal

from kmeans_dask import KMeans
from kmeans_dask._engine.placement import distribute
from kmeans_dask._worker.chunks import BlockReadError
from kmeans_dask.datasets import write_blobs_zarr

N_SAMPLES = 12_000


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    """The same rows in stores of 1, 4 and 12 blocks."""
    root = tmp_path_factory.mktemp("streamed")
    paths = {}
    for chunk_rows in (N_SAMPLES, 3_000, 1_000):
        paths[chunk_rows] = str(root / f"rows{chunk_rows}.zarr")
        write_blobs_zarr(paths[chunk_rows], N_SAMPLES, 5, 6, chunk_rows=chunk_rows, random_state=4)
    return paths


@pytest.fixture(scope="module")
def two_threads():
    """One worker with two threads."""
    with LocalCluster(
        n_workers=1, threads_per_worker=2, host="127.0.0.1", dashboard_address=":0"
    ) as cluster:
        yield cluster


def _allow_read_ahead(most_per_thread: int) -> None:
    from kmeans_dask._worker import reading

    reading.MAX_AHEAD_PER_THREAD = most_per_thread


def _read_ahead_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("kmeans-read-ahead")]


def _fit(path: str, engine: str) -> KMeans:
    model = KMeans(6, init="k-means++", max_iter=4, tol=0.0, random_state=2, engine=engine)
    return model.set_params(persist=False).fit(path)


@pytest.mark.parametrize("workers", ["two workers of one thread", "one worker of two threads"])
@pytest.mark.parametrize("chunk_rows", [N_SAMPLES, 3_000, 1_000])
def test_read_ahead_fits_bit_for_bit_as_one_task_per_block(
    cluster, two_threads, stores, workers, chunk_rows
):
    path = stores[chunk_rows]
    with Client(cluster if workers.startswith("two") else two_threads) as client:
        tasks = _fit(path, "tasks")
        fits = {}
        try:
            for most_per_thread in (0, 1, 2):
                client.run(_allow_read_ahead, most_per_thread)
                fits[most_per_thread] = _fit(path, "auto")
        finally:
            client.run(_allow_read_ahead, 2)
        assert not any(client.run(_read_ahead_threads).values())  # none left running
    for model in fits.values():
        assert_array_equal(model.cluster_centers_, tasks.cluster_centers_)
        assert model.inertia_ == tasks.inertia_
        assert model.n_iter_ == tasks.n_iter_


@pytest.mark.parametrize("engine", ["tasks", "auto"])
def test_a_corrupted_block_fails_the_fit_naming_its_rows(client, tmp_path, engine):
    path = str(tmp_path / "corrupted.zarr")
    write_blobs_zarr(path, 4_000, 3, 2, chunk_rows=1_000, random_state=0)
    with open(os.path.join(path, "c", "2", "0"), "wb") as chunk_file:
        chunk_file.write(b"not zstd" * 50)
    model = KMeans(2, max_iter=2, persist=False, engine=engine)
    with pytest.raises(BlockReadError, match=r"rows 2000 to 3000 of the Zarr array at .*corrupt"):
        model.fit(path)
    assert not hasattr(model, "cluster_centers_")
    assert not any(client.run(_read_ahead_threads).values())
    # The cluster still works.
    assert np.isfinite(KMeans(2, max_iter=2, engine=engine).fit(np.eye(3) + 1.0).inertia_)


@pytest.mark.parametrize(
    ("engine", "through_actors"), [("auto", True), ("actors", True), ("tasks", False)]
)
def test_streamed_blocks_go_through_the_actors_unless_tasks_are_asked_for(
    client, stores, engine, through_actors
):
    array = zarr.open_array(stores[3_000], mode="r")
    data = distribute(
        client, da.from_zarr(array), None, stream_from=array, statistics_bytes=8, engine=engine
    )
    assert not data.persisted
    assert data.use_hosts is through_actors
    assert [block.offset for block in data.chunks] == [0, 3_000, 6_000, 9_000]
