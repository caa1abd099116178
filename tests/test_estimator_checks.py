"""scikit-learn's own estimator checks, run against a live Dask cluster."""

from __future__ import annotations

import pytest
from sklearn.base import clone
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

from kmeans_dask import KMeans


@pytest.fixture(autouse=True)
def _active_client(client):
    """Every check fits on the shared cluster instead of starting its own."""
    yield


@parametrize_with_checks([KMeans(n_clusters=3, random_state=0, max_iter=20)])
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


def test_clone_and_pipeline(client, blobs):
    X, _ = blobs
    model = KMeans(n_clusters=6, init="k-means++", random_state=0, backend="numpy")
    copy = clone(model)
    assert copy.get_params() == model.get_params()
    pipeline = make_pipeline(StandardScaler(), model).fit(X)
    labels = pipeline.predict(X)
    assert labels.shape == (len(X),)
    assert len(set(labels.tolist())) == 6
    assert pipeline.transform(X).shape == (len(X), 6)
