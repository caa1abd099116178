"""Finite but absurd numbers: sums that would overflow are refused, NumPy integer
parameters never overflow in size arithmetic."""

from __future__ import annotations

import warnings

import dask.array as da
import numpy as np
import pytest
from numpy.testing import assert_array_equal
from sklearn.datasets import make_blobs

from kmeans_dask import KMeans
from kmeans_dask._fit.validation import validate_params

X_GOOD, _ = make_blobs(n_samples=60, n_features=3, centers=3, cluster_std=0.5, random_state=0)


def _weights(value: float) -> np.ndarray:
    return np.full(len(X_GOOD), value)


ABSURD = [
    pytest.param(lambda: X_GOOD, lambda: _weights(1e308), "weights sum to inf", id="weights"),
    pytest.param(
        lambda: da.from_array(X_GOOD, chunks=(20, 3)),
        lambda: da.from_array(_weights(1e308), chunks=20),
        "weights sum to inf",
        id="weights-dask",
    ),
    pytest.param(
        lambda: X_GOOD * 1e5, lambda: _weights(1e300), "too large for float64 sums", id="product"
    ),
    pytest.param(lambda: X_GOOD * 1e160, lambda: None, "too large for float64 sums", id="values"),
    pytest.param(
        lambda: X_GOOD * 1e200,
        lambda: None,
        r"X is too large for float64 sums: it holds \|values\| beyond 1\.34e\+154, whose "
        r"squares exceed float64's largest value .*; rescale X$",
        id="values-whose-moments-overflow",
    ),
    pytest.param(
        lambda: da.from_array(X_GOOD * 1e160, chunks=(20, 3)),
        lambda: None,
        "too large for float64 sums",
        id="values-dask",
    ),
    pytest.param(
        lambda: (X_GOOD * 1e19).astype(np.float32),
        lambda: None,
        r"X is float32 and its \|values\| <= .*e\+2\d \(a bound from the column means and "
        r"variances\) give squared distances up to .*, beyond float32's largest value",
        id="float32",
    ),
]


@pytest.mark.parametrize(("make_X", "make_weights", "match"), ABSURD)
def test_fit_refuses_sums_that_overflow(client, make_X, make_weights, match):
    model = KMeans(3, random_state=0).fit(X_GOOD)
    before = {name: np.copy(value) for name, value in vars(model).items() if name.endswith("_")}
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # and no overflow warnings on the way
        with pytest.raises(ValueError, match=match):
            model.fit(make_X(), sample_weight=make_weights())
    for name, value in before.items():
        assert_array_equal(getattr(model, name), value)


@pytest.mark.parametrize(
    ("X", "weights"),
    [
        (X_GOOD * 1e100, None),
        (X_GOOD, _weights(1e300)),
        ((X_GOOD * 1e15).astype(np.float32), None),
    ],
    ids=["large-values", "large-weights", "large-float32"],
)
def test_large_but_summable_numbers_fit(client, X, weights):
    model = KMeans(3, random_state=0).fit(X, sample_weight=weights)
    assert np.isfinite(model.cluster_centers_).all()
    assert np.isfinite(model.inertia_)
    assert_array_equal(model.predict(X), model.labels_)


def test_partial_fit_refuses_weights_that_overflow():
    model = KMeans(3, random_state=0).partial_fit(X_GOOD)
    centers = model.cluster_centers_.copy()
    with pytest.raises(ValueError, match="weights sum to inf"):
        model.partial_fit(X_GOOD, sample_weight=_weights(1e308))
    with pytest.raises(ValueError, match="too large for float64 sums"):
        model.partial_fit(X_GOOD * 1e200)
    assert_array_equal(model.cluster_centers_, centers)
    assert model.n_steps_ == 1


@pytest.mark.parametrize("n_clusters", [np.uint8(250), np.int16(250), np.uint64(250)])
@pytest.mark.parametrize("init", ["k-means||", "k-means++", "random"])
def test_numpy_integer_n_clusters_never_overflows(client, n_clusters, init):
    X = np.random.default_rng(0).normal(size=(600, 3))
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        model = KMeans(n_clusters, init=init, random_state=0, max_iter=3).fit(X)
    assert model.cluster_centers_.shape == (250, 3)
    assert model.get_params()["n_clusters"] is n_clusters  # as set, after the fit too


def test_partial_fit_with_numpy_integer_parameters():
    X = np.random.default_rng(0).normal(size=(300, 2))
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        model = KMeans(np.uint8(250), batch_size=np.uint8(200), random_state=np.int64(0))
        model.partial_fit(X).fit_stream([X])
    assert model.cluster_centers_.shape == (250, 2)


def test_validate_params_gives_plain_python_numbers():
    params = KMeans(
        np.uint8(250),
        n_init=np.int32(2),
        max_iter=np.int64(5),
        tol=np.float32(1e-3),
        decay=np.float16(0.5),
        random_state=np.uint32(7),
        batch_size=np.uint16(9),
    ).get_params()
    plain = validate_params(params)
    for name in ("n_clusters", "n_init", "max_iter", "batch_size", "random_state", "init_rounds"):
        assert type(plain[name]) is int, name
    for name in ("tol", "decay", "oversampling_factor", "reassignment_ratio"):
        assert type(plain[name]) is float, name
    assert plain["n_clusters"] == 250 and plain["random_state"] == 7
    assert plain["init"] == params["init"]
