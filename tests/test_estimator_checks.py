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


def test_feature_names_out_name_one_column_per_centre(client, blobs):
    import pandas as pd

    X, _ = blobs
    frame = pd.DataFrame(X, columns=[f"f{i}" for i in range(X.shape[1])])
    pipeline = make_pipeline(StandardScaler(), KMeans(3, random_state=0))
    pipeline.set_output(transform="pandas").fit(frame)
    expected = ["kmeans0", "kmeans1", "kmeans2"]
    assert pipeline.get_feature_names_out().tolist() == expected
    distances = pipeline.transform(frame)
    assert isinstance(distances, pd.DataFrame)
    assert distances.columns.tolist() == expected
    assert distances.index.equals(frame.index)
    model = pipeline[-1]
    assert model.get_feature_names_out().tolist() == expected
    with pytest.raises(ValueError, match="input_features is not equal to feature_names_in_"):
        model.get_feature_names_out(["a", "b", "c", "d", "e"])
