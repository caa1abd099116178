"""Same initial centres => same result as scikit-learn's Lloyd KMeans."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from sklearn.cluster import KMeans as SKKMeans
from sklearn.datasets import make_blobs

from kmeans_dask import KMeans

SHAPES = [
    # n_samples, n_features, n_clusters, dtype
    (2000, 2, 3, np.float64),
    (3000, 5, 8, np.float32),
    (4000, 16, 20, np.float64),
    (2500, 40, 5, np.float32),
]


def _data(n_samples, n_features, n_clusters, dtype, seed=0):
    X, _ = make_blobs(
        n_samples=n_samples,
        n_features=n_features,
        centers=n_clusters,
        cluster_std=2.0,
        random_state=seed,
    )
    X = X.astype(dtype)
    init = X[np.random.default_rng(seed).choice(n_samples, n_clusters, replace=False)]
    return X, init


def _tolerances(dtype):
    return {"rtol": 1e-4, "atol": 1e-4} if dtype == np.float32 else {"rtol": 1e-9, "atol": 1e-9}


@pytest.mark.parametrize(("n_samples", "n_features", "n_clusters", "dtype"), SHAPES)
def test_same_result_as_sklearn(client, n_samples, n_features, n_clusters, dtype):
    X, init = _data(n_samples, n_features, n_clusters, dtype)
    ours = KMeans(n_clusters, init=init, max_iter=100, tol=1e-4).fit(X)
    ref = SKKMeans(n_clusters, init=init, n_init=1, max_iter=100, tol=1e-4, algorithm="lloyd")
    ref.fit(X)
    assert_array_equal(ours.labels_, ref.labels_)
    assert_allclose(ours.cluster_centers_, ref.cluster_centers_, **_tolerances(dtype))
    assert ours.inertia_ == pytest.approx(ref.inertia_, rel=1e-5 if dtype == np.float32 else 1e-9)
    assert ours.n_iter_ == ref.n_iter_
    assert ours.cluster_centers_.dtype == dtype


def test_same_result_as_sklearn_with_sample_weight(client):
    X, init = _data(3000, 4, 6, np.float64, seed=3)
    weights = np.random.default_rng(1).uniform(0.1, 3.0, size=len(X))
    ours = KMeans(6, init=init, tol=0).fit(X, sample_weight=weights)
    ref = SKKMeans(6, init=init, n_init=1, tol=0, algorithm="lloyd").fit(X, sample_weight=weights)
    assert_array_equal(ours.labels_, ref.labels_)
    assert_allclose(ours.cluster_centers_, ref.cluster_centers_, rtol=1e-9)
    assert ours.inertia_ == pytest.approx(ref.inertia_, rel=1e-9)


@pytest.mark.parametrize("max_iter", [1, 2, 3])
def test_inertia_is_of_final_centres_when_max_iter_stops(client, max_iter):
    X, init = _data(2000, 3, 7, np.float64, seed=5)
    ours = KMeans(7, init=init, max_iter=max_iter, tol=0).fit(X)
    ref = SKKMeans(7, init=init, n_init=1, max_iter=max_iter, tol=0, algorithm="lloyd").fit(X)
    assert ours.n_iter_ == max_iter
    assert_allclose(ours.cluster_centers_, ref.cluster_centers_, rtol=1e-10)
    distances = ((X[:, None, :] - ours.cluster_centers_[None]) ** 2).sum(-1)
    assert ours.inertia_ == pytest.approx(distances.min(axis=1).sum(), rel=1e-10)
    assert ours.inertia_ == pytest.approx(ref.inertia_, rel=1e-10)
    assert_array_equal(ours.labels_, distances.argmin(axis=1))


def test_dask_input_matches_numpy_input(client):
    X, init = _data(3000, 6, 5, np.float64, seed=2)
    from_numpy = KMeans(5, init=init).fit(X)
    from_dask = KMeans(5, init=init).fit(da.from_array(X, chunks=(700, 3)))
    assert isinstance(from_dask.labels_, da.Array)
    assert_array_equal(from_dask.labels_.compute(), from_numpy.labels_)
    assert_allclose(from_dask.cluster_centers_, from_numpy.cluster_centers_, rtol=1e-12)
    assert from_dask.inertia_ == pytest.approx(from_numpy.inertia_, rel=1e-12)


def test_predict_transform_score_agree_with_sklearn(client):
    X, init = _data(2000, 4, 5, np.float64, seed=4)
    ours = KMeans(5, init=init).fit(X)
    ref = SKKMeans(5, init=init, n_init=1, algorithm="lloyd").fit(X)
    X_new = np.random.default_rng(0).normal(scale=8.0, size=(500, 4))
    assert_array_equal(ours.predict(X_new), ref.predict(X_new))
    assert_allclose(ours.transform(X_new), ref.transform(X_new), rtol=1e-9)
    assert ours.score(X_new) == pytest.approx(ref.score(X_new), rel=1e-9)
    X_dask = da.from_array(X_new, chunks=(128, 4))
    assert_array_equal(ours.predict(X_dask).compute(), ref.predict(X_new))
    assert_allclose(ours.transform(X_dask).compute(), ref.transform(X_new), rtol=1e-9)
    assert ours.score(X_dask) == pytest.approx(ref.score(X_new), rel=1e-9)


@pytest.mark.parametrize("fit_dtype", [np.float32, np.float64])
@pytest.mark.parametrize("new_dtype", [np.float32, np.float64])
def test_transform_dtype_and_values_as_sklearn(client, fit_dtype, new_dtype):
    """float64 distances where the rows or the centres are float64 (dask-ml's suite checks it)."""
    X, init = _data(600, 3, 4, fit_dtype, seed=8)
    ours = KMeans(4, init=init).fit(X)
    ref = SKKMeans(4, init=init, n_init=1, algorithm="lloyd").fit(X)
    X_new = np.random.default_rng(1).normal(scale=8.0, size=(300, 3)).astype(new_dtype)
    expected = ref.transform(X_new)
    rtol = 1e-9 if expected.dtype == np.float64 and fit_dtype == np.float64 else 1e-4
    for got in (ours.transform(X_new), ours.transform(da.from_array(X_new, chunks=(100, 3)))):
        assert got.dtype == expected.dtype
        assert_allclose(np.asarray(got), expected, rtol=rtol)


def test_fit_predict_and_labels_match_predict(client, blobs):
    X, _ = blobs
    model = KMeans(6, random_state=0)
    labels = model.fit_predict(X)
    assert labels.dtype == np.int32
    assert_array_equal(labels, model.predict(X))


def test_backends_agree(client):
    X, init = _data(3000, 8, 10, np.float32, seed=6)
    numpy_fit = KMeans(10, init=init, backend="numpy").fit(X)
    faiss_fit = KMeans(10, init=init, backend="faiss-cpu").fit(X)
    assert_array_equal(numpy_fit.labels_, faiss_fit.labels_)
    assert_allclose(numpy_fit.cluster_centers_, faiss_fit.cluster_centers_, rtol=1e-6)
