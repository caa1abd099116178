"""Results do not depend on the worker count, the chunking or the seed plumbing."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
from distributed import Client, LocalCluster
from numpy.testing import assert_allclose, assert_array_equal
from sklearn.datasets import make_blobs

from kmeans_dask import KMeans


@pytest.fixture(scope="module")
def data():
    X, _ = make_blobs(n_samples=6000, n_features=6, centers=12, cluster_std=1.5, random_state=1)
    return X


def _fit(X, **params):
    return KMeans(12, n_init=1, random_state=7, max_iter=50, **params).fit(X)


@pytest.mark.parametrize("init", ["k-means||", "k-means++", "random"])
def test_identical_for_one_two_three_workers(data, init):
    X = da.from_array(data, chunks=(1000, 6))
    results = []
    for n_workers in (1, 2, 3):
        with (
            LocalCluster(
                n_workers=n_workers, threads_per_worker=1, processes=False, dashboard_address=":0"
            ) as cluster,
            Client(cluster),
        ):
            model = _fit(X, init=init)
            results.append((model.cluster_centers_, model.labels_.compute(), model.inertia_))
    for centers, labels, inertia in results[1:]:
        assert_array_equal(centers, results[0][0])  # bit for bit
        assert_array_equal(labels, results[0][1])
        assert inertia == results[0][2]


@pytest.mark.parametrize("init", ["k-means||", "k-means++", "random"])
def test_invariant_to_row_chunking(client, data, init):
    reference = _fit(da.from_array(data, chunks=(6000, 6)), init=init)
    for chunks in [(500, 6), (777, 6), (1999, 3)]:
        model = _fit(da.from_array(data, chunks=chunks), init=init)
        assert_array_equal(model.labels_.compute(), reference.labels_.compute())
        assert_allclose(model.cluster_centers_, reference.cluster_centers_, rtol=1e-12)
        assert model.inertia_ == pytest.approx(reference.inertia_, rel=1e-12)
        assert model.n_iter_ == reference.n_iter_


def test_same_seed_same_result_and_different_seed_differs(client, data):
    first = KMeans(12, random_state=3, init="random").fit(data)
    again = KMeans(12, random_state=3, init="random").fit(data)
    other = KMeans(12, random_state=4, init="random").fit(data)
    assert_array_equal(first.cluster_centers_, again.cluster_centers_)
    assert not np.array_equal(first.cluster_centers_, other.cluster_centers_)


def test_n_init_keeps_the_best_run(client, data):
    # Run 1 of n_init=5 uses the same seed as the single run with the same random_state.
    single = KMeans(12, init="random", random_state=11, n_init=1).fit(data)
    best_of_five = KMeans(12, init="random", random_state=11, n_init=5).fit(data)
    assert best_of_five.inertia_ <= single.inertia_
    assert best_of_five.inertia_ < 0.999 * single.inertia_  # random init on 12 blobs is poor


def test_numpy_input_splits_finer_only_while_the_statistics_stay_small():
    from kmeans_dask._engine.placement import PARALLEL_BLOCKS, numpy_row_chunks

    # 1M x 32 float32, k = 64: 16 KiB of sums per block, PARALLEL_BLOCKS blocks.
    blocks = numpy_row_chunks(1_000_000, 32, 4, statistics_bytes=64 * 32 * 8)
    assert len(blocks) == PARALLEL_BLOCKS and sum(blocks) == 1_000_000
    assert max(blocks) - min(blocks) <= 1
    # 200k x 128, k = 2048: 2 MiB of sums per block, halved down to two blocks.
    blocks = numpy_row_chunks(200_000, 128, 4, statistics_bytes=2048 * 128 * 8)
    assert blocks == (100_000, 100_000)
    # 200k x 128, k = 512: a quarter of that, four blocks.
    assert len(numpy_row_chunks(200_000, 128, 4, statistics_bytes=512 * 128 * 8)) == 8
    # Large data: blocks of at most ~64 MiB whatever the statistics.
    assert len(numpy_row_chunks(10_000_000, 32, 8)) == 39
    # Few rows: no block below the minimum size.
    assert numpy_row_chunks(3000, 4, 8) == (1500, 1500)


CLUSTER_SHAPES = [(2, 1), (1, 2), (3, 1)]


def _on_cluster(n_workers: int, threads: int, fit):
    with (
        LocalCluster(
            n_workers=n_workers,
            threads_per_worker=threads,
            processes=False,
            dashboard_address=":0",
        ) as cluster,
        Client(cluster),
    ):
        return fit()


@pytest.fixture(scope="module")
def wide_numpy():
    """Enough rows for 16 blocks, with an offset that makes float sums order-sensitive."""
    rng = np.random.default_rng(3)
    centers = rng.uniform(-50, 50, size=(8, 6))
    return 1e4 + centers[rng.integers(0, 8, 40_000)] + rng.normal(size=(40_000, 6)) * 30


def test_numpy_input_identical_for_any_workers_and_threads(wide_numpy):
    def fit():
        model = KMeans(8, init="k-means||", random_state=2, max_iter=30, tol=0).fit(wide_numpy)
        return model.cluster_centers_, model.labels_, model.inertia_

    results = [_on_cluster(workers, threads, fit) for workers, threads in CLUSTER_SHAPES]
    for centers, labels, inertia in results[1:]:
        assert_array_equal(centers, results[0][0])  # bit for bit
        assert_array_equal(labels, results[0][1])
        assert inertia == results[0][2]


def test_checkpoint_resumes_on_another_cluster(wide_numpy, tmp_path):
    params = {"n_clusters": 8, "random_state": 2, "tol": 0}
    path = tmp_path / "fit.ckpt"
    _on_cluster(2, 1, lambda: KMeans(**params, max_iter=3).fit(wide_numpy, checkpoint=path))
    started = path.read_bytes()
    reference = _on_cluster(2, 1, lambda: KMeans(**params, max_iter=8).fit(wide_numpy))
    assert reference.n_iter_ == 8  # the resumed fits have iterations left to run
    for workers, threads in [(1, 2), (3, 1)]:
        path.write_bytes(started)
        resumed = _on_cluster(
            workers,
            threads,
            lambda: KMeans(**params, max_iter=8).fit(wide_numpy, checkpoint=path),
        )
        assert_array_equal(resumed.cluster_centers_, reference.cluster_centers_)
        assert resumed.inertia_ == reference.inertia_
        assert [r.center_shift for r in resumed.history_] == [
            r.center_shift for r in reference.history_
        ]


def _row_block_count(n_rows: int) -> int:
    from kmeans_dask._worker.threads import map_row_blocks

    return len(map_row_blocks(len, np.zeros((n_rows, 2))))


def test_row_blocks_split_over_threads_only_outside_workers(client):
    """A worker already runs one task per thread: a task's search must not add threads."""
    import os

    from kmeans_dask._worker.threads import MIN_ROWS_PER_THREAD

    n_rows = 4 * MIN_ROWS_PER_THREAD
    assert client.submit(_row_block_count, n_rows, pure=False).result() == 1
    assert _row_block_count(n_rows) == min(os.cpu_count() or 1, 4)
