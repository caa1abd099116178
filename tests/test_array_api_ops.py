"""The per-chunk seam: a second implementation, on array-api-strict chunks, through both engines.

Every pass of a fit goes through the chunks' ops. Here the chunks are
``array_api_strict`` arrays (which allow nothing outside the array API
standard) held by :class:`~kmeans_dask._worker.array_api_ops.ArrayAPIOps`,
and the fit must agree with scikit-learn and with the host ops as the host
path does: so nothing above the seam touches the rows.
"""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from sklearn.cluster import KMeans as SKKMeans
from sklearn.datasets import make_blobs

import kmeans_dask._engine.placement as placement
import kmeans_dask._fit.passes as passes
from kmeans_dask import KMeans
from kmeans_dask._worker.array_api_ops import ArrayAPIOps, nearest_rows, segment_sums

xp = pytest.importorskip("array_api_strict", reason="array-api-strict is a test dependency")

STRICT = ArrayAPIOps("array_api_strict")


@pytest.fixture
def strict_chunks(monkeypatch):
    """Every fit in the test places its chunks as array-api-strict arrays."""
    placed = []

    def strict_ops_for(X, backend="auto"):
        placed.append(X.shape)
        return STRICT

    monkeypatch.setattr(placement, "chunk_ops_for", strict_ops_for)
    return placed


def _data(dtype=np.float64, n=2400, d=5, k=6, seed=0):
    X, _ = make_blobs(n_samples=n, n_features=d, centers=k, cluster_std=1.5, random_state=seed)
    X = X.astype(dtype)
    init = X[np.random.default_rng(seed).choice(n, k, replace=False)]
    return X, init


def _chunk_types(chunk):
    return type(chunk.data).__module__.split(".")[0], type(chunk.ops).__name__


def test_chunks_live_as_array_api_strict_arrays_on_the_workers(client):
    X, _ = _data()
    data = placement.distribute(client, X, None, statistics_bytes=8 * 6 * 6, ops=STRICT)
    try:
        kinds = set(client.gather([client.submit(_chunk_types, c) for c in data.chunks]))
    finally:
        data.release()
    assert kinds == {("array_api_strict", "ArrayAPIOps")}


@pytest.mark.parametrize("engine", ["tasks", "actors"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_same_result_as_sklearn_and_the_host_ops(client, strict_chunks, engine, dtype):
    X, init = _data(dtype)
    weights = np.random.default_rng(1).uniform(0.5, 2.0, len(X))
    ours = KMeans(6, init=init, tol=1e-4, engine=engine).fit(X, sample_weight=weights)
    assert strict_chunks  # the fit went through the strict chunks
    reference = SKKMeans(6, init=init, n_init=1, tol=1e-4, algorithm="lloyd")
    reference.fit(X, sample_weight=weights)
    assert_array_equal(ours.labels_, reference.labels_)
    rtol = 1e-5 if dtype == np.float32 else 1e-10
    assert_allclose(ours.cluster_centers_, reference.cluster_centers_, rtol=rtol)
    assert ours.inertia_ == pytest.approx(reference.inertia_, rel=rtol)
    assert ours.n_iter_ == reference.n_iter_
    assert ours.cluster_centers_.dtype == dtype


@pytest.mark.parametrize("engine", ["tasks", "actors"])
@pytest.mark.parametrize("init", ["k-means||", "k-means++", "random"])
def test_every_initialisation_draws_what_the_host_ops_draw(client, monkeypatch, engine, init):
    """Random draws are keyed on global rows, so the chunks' memory changes nothing."""
    X, _ = _data(n=3000, k=8, seed=2)
    X_dask = da.from_array(X, chunks=(700, 5))
    host = KMeans(8, init=init, n_init=1, max_iter=3, tol=0, random_state=5, engine=engine)
    host.fit(X_dask)
    monkeypatch.setattr(placement, "chunk_ops_for", lambda X, backend="auto": STRICT)
    strict = KMeans(8, init=init, n_init=1, max_iter=3, tol=0, random_state=5, engine=engine)
    strict.fit(X_dask)
    assert_allclose(strict.cluster_centers_, host.cluster_centers_, rtol=1e-9)
    assert_array_equal(strict.labels_.compute(), host.labels_.compute())
    assert strict.inertia_ == pytest.approx(host.inertia_, rel=1e-9)


def test_empty_clusters_and_empty_blocks_go_through_the_seam(client, strict_chunks):
    X = np.random.RandomState(0).normal(size=(3, 4))[np.random.RandomState(0).randint(0, 3, 300)]
    model = KMeans(6, random_state=0).fit(da.from_array(X, chunks=((0, 100, 0, 200), (4,))))
    assert model.n_iter_ <= 3
    assert model.inertia_ == pytest.approx(0.0, abs=1e-12)
    blobs, init = _data(n=2000, k=3, seed=6)
    far = np.vstack([init, init + 1e3])  # three centres that attract nothing at first
    relocated = KMeans(6, init=far, max_iter=30, tol=0).fit(
        da.from_array(blobs, chunks=((0, 900, 0, 1100), (5,)))
    )
    reference = SKKMeans(6, init=far, n_init=1, max_iter=30, tol=0, algorithm="lloyd").fit(blobs)
    assert relocated.history_[0].n_empty == 3
    assert_allclose(relocated.cluster_centers_, reference.cluster_centers_, rtol=1e-9)


def test_streamed_zarr_blocks_are_read_into_the_ops_memory(client, strict_chunks, tmp_path):
    zarr = pytest.importorskip("zarr")
    X, init = _data(n=2000, k=5, seed=4)
    store = zarr.open_array(tmp_path / "x.zarr", mode="w", shape=X.shape, chunks=(300, 5))
    store[:] = X
    streamed = KMeans(5, init=init, tol=0, persist=False).fit(str(tmp_path / "x.zarr"))
    reference = SKKMeans(5, init=init, n_init=1, tol=0, algorithm="lloyd").fit(X)
    assert_allclose(streamed.cluster_centers_, reference.cluster_centers_, rtol=1e-10)
    assert streamed.inertia_ == pytest.approx(reference.inertia_, rel=1e-10)


def test_nearest_rows_is_the_brute_force_nearest_with_exact_distances():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(500, 7))
    centers = rng.normal(size=(9, 7))
    labels, sq_dist = nearest_rows(xp, xp.asarray(X), centers)
    distances = ((X[:, None, :] - centers[None]) ** 2).sum(-1)
    assert_array_equal(np.from_dlpack(labels), distances.argmin(axis=1))
    assert_allclose(np.from_dlpack(sq_dist), distances.min(axis=1), rtol=1e-12)


def test_segment_sums_match_bincount_and_repeat_bit_for_bit(monkeypatch):
    rng = np.random.default_rng(1)
    X = rng.normal(size=(5000, 3))
    labels = rng.integers(0, 11, len(X)).astype(np.int32)
    weights = rng.uniform(0, 2, len(X))
    # Small blocks, so several one-hot products are added.
    monkeypatch.setattr("kmeans_dask._worker.array_api_ops.BLOCK_ELEMENTS", 11 * 700)
    sums, counts = segment_sums(xp, xp.asarray(X), xp.asarray(weights), xp.asarray(labels), 11)
    expected_counts = np.bincount(labels, weights=weights, minlength=11)
    expected_sums = np.stack(
        [np.bincount(labels, weights=weights * X[:, j], minlength=11) for j in range(3)], axis=1
    )
    assert_allclose(np.from_dlpack(counts), expected_counts, rtol=1e-12)
    assert_allclose(np.from_dlpack(sums), expected_sums, rtol=1e-10, atol=1e-12)
    again, _ = segment_sums(xp, xp.asarray(X), xp.asarray(weights), xp.asarray(labels), 11)
    assert_array_equal(np.from_dlpack(again), np.from_dlpack(sums))


def test_ops_that_scan_no_candidates_get_no_row_candidate_passes(
    client, strict_chunks, monkeypatch
):
    """Their chunks would make plain passes whose changes cannot be added up, and each
    pass's statistics would be counted twice: the fit makes plain passes instead."""
    monkeypatch.setattr("kmeans_dask.backends.approximate.ROW_CANDIDATES_FROM", 8)
    monkeypatch.setattr("kmeans_dask.backends.approximate.EXACT_FIRST_BELOW", 8)
    row_candidate_passes = []
    monkeypatch.setattr(
        passes, "row_candidate_statistics", lambda *args, **kw: row_candidate_passes.append(args)
    )
    X, init = _data(n=3000, d=8, k=8)
    model = KMeans(8, init=init, max_iter=4, tol=0, assign="candidates").fit(X)
    assert strict_chunks and not row_candidate_passes
    assert model.inertia_ > 0
