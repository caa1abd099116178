"""Empty clusters: relocated onto far rows while that makes progress, never back and forth."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn.cluster import KMeans as SKKMeans
from sklearn.exceptions import ConvergenceWarning

from kmeans_dask import KMeans
from kmeans_dask._fit.history import IterationRecord
from kmeans_dask._fit.lloyd import local_lloyd
from kmeans_dask._fit.update import off_center, relocation_pays
from kmeans_dask._worker.results import RankedRows


def _fit_quietly(model, X, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # fewer distinct points than k
        return model.fit(X, **kwargs)


def _three_points_repeated(dtype=np.float64):
    """scikit-learn's #28055 case: 3,000 rows, only 3 distinct."""
    points = np.random.RandomState(0).normal(size=(3, 4))
    return points[np.random.RandomState(0).randint(0, 3, 3000)].astype(dtype)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("init", ["k-means||", "k-means++"])
def test_more_clusters_than_distinct_rows_stops_at_once(client, dtype, init):
    X = _three_points_repeated(dtype)
    model = _fit_quietly(KMeans(6, init=init, random_state=0), X)
    reference = _fit_quietly(SKKMeans(6, random_state=0, n_init=1), X)
    assert model.n_iter_ <= reference.n_iter_ == 2
    # every row sits on its centre: nothing was moved, nothing to gain by moving
    assert [record.n_empty for record in model.history_] == [0] * model.n_iter_
    assert model.inertia_ == pytest.approx(0.0, abs=1e-20)


def test_rows_on_their_centres_leave_empty_clusters_alone(client):
    X = np.array([[0, 0], [1, 1], [1, 1], [1, 0], [0, 1]], dtype=float)
    model = _fit_quietly(KMeans(5, init=X), X)
    reference = _fit_quietly(SKKMeans(5, init=X, n_init=1), X)
    assert model.n_iter_ == reference.n_iter_ == 1
    np.testing.assert_array_equal(model.cluster_centers_, X)
    np.testing.assert_array_equal(model.labels_, reference.labels_)


def test_relocation_without_progress_stops_instead_of_cycling(client):
    """Rows of weight 0 far away: moving empty clusters onto them gains nothing."""
    rng = np.random.default_rng(0)
    heavy = np.repeat([[0.0, 0.0], [1.0, 0.0]], 50, axis=0)
    weightless = rng.normal(scale=100.0, size=(20, 2))
    X = np.vstack([heavy, weightless])
    weights = np.r_[np.ones(len(heavy)), np.zeros(len(weightless))]
    init = np.array([[0.0, 0.0], [1.0, 0.0], [0.5, 0.0], [0.25, 0.0], [0.75, 0.0]])
    model = _fit_quietly(KMeans(5, init=init, max_iter=50, tol=0.0), X, sample_weight=weights)
    assert model.n_iter_ < 10
    assert model.inertia_ == pytest.approx(0.0, abs=1e-20)


def _ranked(score, rows, labels):
    rows = np.asarray(rows, dtype=float)
    return RankedRows(
        np.asarray(score, dtype=float),
        np.arange(len(rows)),
        rows,
        np.ones(len(rows)),
        np.asarray(labels, dtype=np.int32),
    )


def test_off_center_keeps_rows_farther_than_rounding():
    centers = np.array([[1.0, 2.0], [3.0, 4.0]])
    far = _ranked([4.0, 1e-30, 0.0], [[3.0, 2.0], [3.0, 4.0], [1.0, 2.0]], [0, 1, 0])
    kept = off_center(far, centers)
    np.testing.assert_array_equal(kept.index, [0])
    assert len(off_center(far.head(0), centers).rows) == 0
    # a squared distance of rounding size, relative to the rows' norms, is "on the centre"
    large = np.array([[1e8, 0.0]])
    noise = _ranked([1e-6], [[1e8, 1e-3]], [0])
    assert len(off_center(noise, large).rows) == 0
    assert len(off_center(_ranked([1.0], [[1e8, 1.0]], [0]), large).rows) == 1


def _record(iteration, inertia, n_empty):
    return IterationRecord(iteration, inertia, 1.0, n_empty, 0.0)


@pytest.mark.parametrize(
    ("inertias", "relocated", "next_inertia", "expected"),
    [
        ([], [], 5.0, True),  # nothing tried yet
        ([10.0], [2], 5.0, True),  # relocation paid
        ([10.0], [2], 10.0, False),  # relocated, no progress
        ([10.0, 5.0], [2, 0], 7.0, True),  # a rise after an iteration that moved nothing
        ([10.0, 10.0, 4.0], [1, 0, 0], 3.0, False),  # once without progress, never again
    ],
)
def test_relocation_pays_only_while_the_inertia_falls(inertias, relocated, next_inertia, expected):
    history = [
        _record(i + 1, inertia, n)
        for i, (inertia, n) in enumerate(zip(inertias, relocated, strict=True))
    ]
    assert relocation_pays(history, next_inertia) is expected


def test_local_lloyd_on_duplicated_candidates_keeps_its_centres():
    points = np.array([[0.0, 0.0], [1.0, 1.0]])
    weights = np.array([3.0, 2.0])
    centers = np.array([[0.0, 0.0], [1.0, 1.0], [1.0, 1.0]])
    result = local_lloyd(points, weights, centers, max_iter=30, tol=0.0, backend="numpy")
    np.testing.assert_array_equal(result, centers)
