"""Data larger than the GPUs' memory: host chunks staged into the device's memory per pass.

The device here is array-api-strict (the stand-in of the GPU in CI): staged
chunks must give what resident chunks give, bit for bit, pass by pass and
through whole fits on both engines.
"""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
from numpy.testing import assert_array_equal
from sklearn.datasets import make_blobs

import kmeans_dask._engine.placement as placement
from kmeans_dask import KMeans
from kmeans_dask._worker.array_api_ops import ArrayAPIOps
from kmeans_dask._worker.cupy_ops import HEADROOM, stays_resident
from kmeans_dask._worker.results import combine_stats
from kmeans_dask._worker.staged_ops import StagedOps

pytest.importorskip("array_api_strict", reason="array-api-strict is a test dependency")

DEVICE = ArrayAPIOps("array_api_strict")
STAGED = StagedOps(DEVICE)


def _data(n=2400, d=5, k=6, seed=0):
    X, _ = make_blobs(n_samples=n, n_features=d, centers=k, cluster_std=1.5, random_state=seed)
    init = X[np.random.default_rng(seed).choice(n, k, replace=False)]
    return X, init


def _host(array):
    return DEVICE.to_host(array)


def test_a_staged_chunk_is_kept_in_host_memory_and_pickles_with_its_device():
    X, _ = _data(n=50)
    chunk = STAGED.place(X, None, 100, np.float64)
    assert isinstance(chunk.data, np.ndarray) and chunk.ops is STAGED
    assert chunk.offset == 100
    assert StagedOps(ArrayAPIOps("array_api_strict")) == STAGED
    rebuilt, args = STAGED.__reduce__()
    assert rebuilt(*args) == STAGED


@pytest.mark.parametrize("weighted", [False, True])
def test_every_pass_on_a_staged_chunk_is_the_resident_pass(weighted):
    X, init = _data(n=700)
    weights = np.random.default_rng(3).uniform(0.5, 2.0, len(X)) if weighted else None
    staged = STAGED.place(X, weights, 40, np.float64)
    resident = DEVICE.place(X, weights, 40, np.float64)

    a, b = STAGED.summarize(staged, True), DEVICE.summarize(resident, True)
    assert_array_equal(a.column_m2, b.column_m2)
    assert a.digest == b.digest and a.weight_sum == b.weight_sum

    a, b = (
        STAGED.lloyd_pass(staged, init, "numpy", True),
        DEVICE.lloyd_pass(resident, init, "numpy", True),
    )
    assert_array_equal(a.stats.sums, b.stats.sums)
    assert_array_equal(a.stats.counts, b.stats.counts)
    assert a.stats.inertia == b.stats.inertia
    assert_array_equal(_host(a.labels), _host(b.labels))
    assert_array_equal(STAGED.handed_over(a.labels), DEVICE.handed_over(b.labels))

    labels, sq_dist = STAGED.nearest(staged, init, "numpy")
    assert_array_equal(_host(sq_dist), _host(DEVICE.nearest(resident, init, "numpy")[1]))
    top_a = STAGED.top_rows(staged, sq_dist, labels, 5)
    top_b = DEVICE.top_rows(resident, sq_dist, labels, 5)
    assert_array_equal(top_a.rows, top_b.rows)
    assert_array_equal(top_a.index, top_b.index)

    keys = STAGED.random_keys(staged, 7, 1, weighted)
    assert_array_equal(_host(keys), _host(DEVICE.random_keys(resident, 7, 1, weighted)))

    state_a = STAGED.fold_candidates(staged, None, init[:3], 0, "numpy")
    state_b = DEVICE.fold_candidates(resident, None, init[:3], 0, "numpy")
    state_a = STAGED.fold_candidates(staged, state_a, init[3:], 3, "numpy")
    state_b = DEVICE.fold_candidates(resident, state_b, init[3:], 3, "numpy")
    assert STAGED.weighted_cost(staged, state_a) == DEVICE.weighted_cost(resident, state_b)
    assert_array_equal(
        STAGED.sample_by_cost(staged, state_a, 0.01, 5, 2),
        DEVICE.sample_by_cost(resident, state_b, 0.01, 5, 2),
    )
    assert_array_equal(
        STAGED.candidate_weights(staged, state_a, 6),
        DEVICE.candidate_weights(resident, state_b, 6),
    )


def test_a_mix_of_staged_and_resident_chunks_combines_as_all_resident():
    X, init = _data(n=2000)
    blocks = [X[i : i + 300] for i in range(0, len(X), 300)]
    offsets = range(0, len(X), 300)
    mixed = [
        (STAGED if i % 2 else DEVICE).place(block, None, offset, np.float64)
        for i, (block, offset) in enumerate(zip(blocks, offsets, strict=True))
    ]
    resident = [DEVICE.place(b, None, o, np.float64) for b, o in zip(blocks, offsets, strict=True)]
    stats_mixed = combine_stats(*[c.ops.lloyd_pass(c, init, "numpy", False).stats for c in mixed])
    stats_resident = combine_stats(
        *[c.ops.lloyd_pass(c, init, "numpy", False).stats for c in resident]
    )
    assert_array_equal(stats_mixed.sums, stats_resident.sums)
    assert stats_mixed.inertia == stats_resident.inertia


@pytest.mark.parametrize("engine", ["tasks", "actors"])
def test_a_fit_on_staged_chunks_is_the_fit_on_resident_ones(client, monkeypatch, engine):
    X, init = _data()
    X_dask = da.from_array(X, chunks=(500, 5))
    weights = np.random.default_rng(1).uniform(0.5, 2.0, len(X))
    monkeypatch.setattr(placement, "chunk_ops_for", lambda X, backend="auto": DEVICE)
    resident = KMeans(6, init=init, max_iter=8, tol=0, engine=engine)
    resident.fit(X_dask, sample_weight=weights)
    monkeypatch.setattr(placement, "chunk_ops_for", lambda X, backend="auto": STAGED)
    staged = KMeans(6, init=init, max_iter=8, tol=0, engine=engine)
    staged.fit(X_dask, sample_weight=weights)
    assert_array_equal(staged.cluster_centers_, resident.cluster_centers_)
    assert staged.inertia_ == resident.inertia_
    assert_array_equal(staged.labels_.compute(), resident.labels_.compute())


@pytest.mark.parametrize(
    ("nbytes", "free", "total", "resident"),
    [
        (10, 100, 100, True),
        (int(100 * (1 - HEADROOM)), 100, 100, True),
        (int(100 * (1 - HEADROOM)) + 1, 100, 100, False),
        (5, 30, 100, True),
        (6, 30, 100, False),  # the headroom is kept
        (1, 20, 100, False),  # the headroom is already taken
        (0, 0, 100, False),
    ],
)
def test_a_chunk_stays_on_the_gpu_only_while_the_headroom_is_left(nbytes, free, total, resident):
    assert stays_resident(nbytes, free, total) is resident
