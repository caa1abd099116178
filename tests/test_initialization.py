"""k-means|| quality and behaviour, compared with scikit-learn's k-means++."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.cluster import KMeans as SKKMeans
from sklearn.datasets import make_blobs
from sklearn.preprocessing import StandardScaler

from kmeans_dask import KMeans


@pytest.mark.parametrize(("n_clusters", "seed"), [(20, 0), (50, 1), (100, 2)])
def test_kmeans_parallel_is_as_good_as_sklearn_kmeans_plusplus(client, n_clusters, seed):
    X, _ = make_blobs(
        n_samples=20000, n_features=8, centers=n_clusters, cluster_std=1.0, random_state=seed
    )
    X = StandardScaler().fit_transform(X)
    ours = [KMeans(n_clusters, random_state=s).fit(X).inertia_ for s in range(3)]
    ref = [SKKMeans(n_clusters, n_init=1, random_state=s).fit(X).inertia_ for s in range(3)]
    assert np.median(ours) <= 1.05 * np.median(ref)


def test_kmeans_parallel_candidates_scale_with_oversampling(client, monkeypatch):
    from kmeans_dask._fit import initialization as _initialization

    X, _ = make_blobs(n_samples=20000, n_features=4, centers=30, random_state=0)
    seen = {}
    original = _initialization.weighted_plusplus

    def spy(points, weights, n_clusters, seed):
        seen["n_candidates"] = len(points)
        seen["total_weight"] = weights.sum()
        return original(points, weights, n_clusters, seed)

    monkeypatch.setattr(_initialization, "weighted_plusplus", spy)
    KMeans(30, random_state=0, init_rounds=5, oversampling_factor=2.0, max_iter=1).fit(X)
    # about l = 2k candidates per round for 5 rounds, plus the first one
    assert 4 * 2 * 30 <= seen["n_candidates"] <= 6 * 2 * 30
    assert seen["total_weight"] == pytest.approx(len(X))


def test_duplicate_points_never_become_duplicate_centres(client):
    rng = np.random.default_rng(0)
    distinct = rng.normal(size=(12, 3)) * 10
    X = np.repeat(distinct, 200, axis=0)
    model = KMeans(12, random_state=0).fit(X)
    assert len(np.unique(model.cluster_centers_.round(9), axis=0)) == 12
    assert model.inertia_ == pytest.approx(0.0, abs=1e-9)


def test_fewer_distinct_points_than_clusters_warns(client):
    X = np.repeat(np.arange(5, dtype=float)[:, None], 10, axis=0)
    from sklearn.exceptions import ConvergenceWarning

    with pytest.warns(ConvergenceWarning, match=r"distinct clusters \(5\).*n_clusters \(8\)"):
        model = KMeans(8, random_state=0).fit(X)
    assert np.isfinite(model.cluster_centers_).all()
    assert model.inertia_ == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("init", ["k-means||", "k-means++", "random"])
def test_empty_clusters_are_repaired_not_nan(client, init):
    # Initial centres far from the data leave clusters empty in iteration 1.
    rng = np.random.default_rng(1)
    X = rng.normal(size=(500, 2))
    far_init = np.vstack([X[:3], [[1e3, 1e3], [-1e3, 1e3], [1e3, -1e3]]])
    model = KMeans(6, init=far_init, max_iter=20).fit(X)
    assert np.isfinite(model.cluster_centers_).all()
    assert model.history_[0].n_empty == 3
    assert len(np.unique(model.labels_)) == 6
    # and every built-in init gives finite centres on the same data
    assert np.isfinite(KMeans(6, init=init, random_state=0).fit(X).cluster_centers_).all()


@pytest.mark.parametrize("init", ["k-means||", "k-means++", "random"])
def test_actors_and_tasks_pick_the_same_initial_centres(client, init):
    import kmeans_dask._worker.tasks as tasks_module

    X, _ = make_blobs(n_samples=12_000, n_features=5, centers=9, random_state=3)
    fits = {
        engine: KMeans(9, init=init, n_init=1, random_state=4, max_iter=1, engine=engine).fit(X)
        for engine in ("tasks", "actors")
    }
    np.testing.assert_array_equal(fits["actors"].cluster_centers_, fits["tasks"].cluster_centers_)
    assert fits["actors"].inertia_ == fits["tasks"].inertia_
    # The rounds' per-row state is released with the last round.
    assert set(client.run(lambda: len(tasks_module.NEAREST_CANDIDATES)).values()) == {0}


def test_lost_kmeans_parallel_state_is_an_error_not_a_silent_restart():
    from kmeans_dask._worker.chunks import make_chunk
    from kmeans_dask._worker.host_ops import host_ops
    from kmeans_dask._worker.tasks import sample_by_cost_kept

    chunk = make_chunk(np.zeros((10, 2)), None, 30, np.float64, host_ops())
    with pytest.raises(RuntimeError, match=r"k-means\|\| state of the chunk at row 30 is missing"):
        sample_by_cost_kept(chunk, 2.0, 1.0, 0, 16, "numpy", "no-such-run")


@pytest.mark.parametrize("init", ["k-means||", "k-means++"])
def test_poor_local_optima_are_as_rare_as_with_greedy_kmeans_plusplus(client, init):
    """scikit-learn's test blobs, one init per seed: greedy k-means++ rarely fails.

    Over 5,000 seeds scikit-learn ends 1.2% of its fits in the poor optimum
    (inertia about 1008 instead of 465); k-means++ with one trial per centre
    (not greedy) 7.7%, random rows 16% (benchmarks/RESULTS.md).
    """
    blob_centers = np.array(
        [[0.0, 5.0, 0.0, 0.0, 0.0], [1.0, 1.0, 4.0, 0.0, 0.0], [1.0, 0.0, 0.0, 5.0, 1.0]]
    )
    X, _ = make_blobs(n_samples=100, centers=blob_centers, cluster_std=1.0, random_state=42)
    inertias = [KMeans(3, init=init, random_state=seed).fit(X).inertia_ for seed in range(100)]
    assert min(inertias) == pytest.approx(465.1052, rel=1e-6)
    assert sum(inertia > 470 for inertia in inertias) <= 3
