"""Choosing k: scores from the fitted statistics, each criterion's pick, the suggestion."""

from __future__ import annotations

import json
import re

import dask.array as da
import numpy as np
import pytest
import zarr
from sklearn.cluster import KMeans as SKLearnKMeans
from sklearn.datasets import load_iris, make_blobs
from sklearn.metrics import calinski_harabasz_score, davies_bouldin_score, silhouette_score

from kmeans_dask import KMeans
from kmeans_dask._fit.scores import (
    ClusterStatistics,
    calinski_harabasz,
    cluster_statistics,
    davies_bouldin,
    fitted_scores,
)
from kmeans_dask.cli import main
from kmeans_dask.elbow import CRITERIA, ElbowResult, elbow, pick_by_criterion, suggest_k


@pytest.fixture(scope="module")
def small():
    """600 rows, 3 features, 4 overlapping blobs (float64)."""
    return make_blobs(600, n_features=3, centers=4, cluster_std=2.5, random_state=1)[0]


def _sklearn_scores(X, labels):
    return calinski_harabasz_score(X, labels), davies_bouldin_score(X, labels)


# --- the scores against scikit-learn -------------------------------------------------


@pytest.mark.parametrize("n_clusters", [2, 4, 7])
@pytest.mark.parametrize("chunks", [None, 97])
def test_scores_equal_sklearns_on_converged_centres(small, n_clusters, chunks):
    fitted = SKLearnKMeans(n_clusters, n_init=1, tol=0.0, random_state=0).fit(small)
    centers = fitted.cluster_centers_
    X = small if chunks is None else da.from_array(small, chunks=(chunks, 3))
    stats = cluster_statistics(X, centers, "numpy")
    ch, db = _sklearn_scores(small, fitted.predict(small))
    np.testing.assert_allclose(calinski_harabasz(stats, centers), ch, rtol=1e-6)
    np.testing.assert_allclose(davies_bouldin(stats, centers), db, rtol=1e-6)


def test_calinski_harabasz_is_sklearns_also_for_centres_that_are_not_the_means(small):
    # Rows as centres: far from the means of the rows nearest to them.
    centers = small[[0, 1, 2, 3]] + 0.5
    labels = np.argmin(np.linalg.norm(small[:, None] - centers[None], axis=2), axis=1)
    stats = cluster_statistics(small, centers, "numpy")
    assert np.any(np.abs(stats.row_sums / stats.counts[:, None] - centers) > 0.1)
    np.testing.assert_allclose(
        calinski_harabasz(stats, centers), calinski_harabasz_score(small, labels), rtol=1e-6
    )
    # Davies-Bouldin (the documented variant) takes the fitted centres as centroids.
    spread = stats.distances / stats.counts
    gaps = np.linalg.norm(centers[:, None] - centers[None], axis=2)
    ratios = (spread[:, None] + spread[None]) / np.where(gaps > 0, gaps, np.inf)
    assert davies_bouldin(stats, centers) == pytest.approx(ratios.max(axis=1).mean(), rel=1e-12)


def test_fitted_scores_on_numpy_dask_and_zarr_agree_with_sklearn(client, small, tmp_path):
    model = KMeans(4, random_state=0, tol=0.0).fit(small)
    expected = _sklearn_scores(small, model.labels_)
    store = zarr.open_array(str(tmp_path / "x.zarr"), mode="w", shape=small.shape, chunks=(128, 3))
    store[:] = small
    for X in (small, da.from_array(small, chunks=(150, 3)), str(tmp_path / "x.zarr")):
        np.testing.assert_allclose(fitted_scores(model, X), expected, rtol=1e-6)


def test_fitted_scores_read_the_chunks_on_the_workers_and_return_only_sums(client, small):
    model = KMeans(3, random_state=0).fit(small)
    X = da.from_array(small, chunks=(100, 3))
    stats = cluster_statistics(X, model.cluster_centers_, "numpy")
    assert stats.counts.sum() == len(small)
    assert stats.row_sums.shape == (3, 3)
    assert stats.sq_distances.sum() == pytest.approx(model.inertia_, rel=1e-9)


def test_degenerate_scores_follow_sklearn():
    # Every row on its centre: within dispersion 0 (CH 1.0) and spreads 0 (DB 0.0).
    X = np.repeat([[0.0, 0.0], [3.0, 4.0]], 5, axis=0)
    centers = np.array([[0.0, 0.0], [3.0, 4.0]])
    stats = cluster_statistics(X, centers, "numpy")
    labels = np.repeat([0, 1], 5)
    assert calinski_harabasz(stats, centers) == calinski_harabasz_score(X, labels) == 1.0
    assert davies_bouldin(stats, centers) == davies_bouldin_score(X, labels) == 0.0


def test_empty_clusters_are_left_out_and_one_cluster_has_no_score():
    stats = ClusterStatistics(
        counts=np.array([2.0, 0.0, 2.0]),
        row_sums=np.array([[0.0, 2.0], [0.0, 0.0], [10.0, 2.0]]),
        sq_distances=np.array([2.0, 0.0, 2.0]),
        distances=np.array([2.0, 0.0, 2.0]),
    )
    centers = np.array([[0.0, 1.0], [100.0, 100.0], [5.0, 1.0]])
    X = np.array([[0.0, 0.0], [0.0, 2.0], [5.0, 0.0], [5.0, 2.0]])
    labels = np.array([0, 0, 2, 2])
    assert calinski_harabasz(stats, centers) == pytest.approx(calinski_harabasz_score(X, labels))
    assert davies_bouldin(stats, centers) == pytest.approx(davies_bouldin_score(X, labels))
    one = ClusterStatistics(stats.counts[:1], stats.row_sums[:1], stats.sq_distances[:1],
                            stats.distances[:1])  # fmt: skip
    assert np.isnan(calinski_harabasz(one, centers[:1]))
    assert np.isnan(davies_bouldin(one, centers[:1]))


# --- picks and the suggestion --------------------------------------------------------


def test_each_criterion_picks_its_best_k_smaller_on_ties():
    picks = pick_by_criterion(
        [1, 2, 3, 4, 5],
        [100.0, 50.0, 10.0, 9.0, 8.5],
        [np.nan, 0.6, 0.7, 0.7, 0.5],
        [np.nan, 10.0, 30.0, 20.0, 35.0],
        [np.nan, 0.9, 0.4, 0.6, 0.5],
    )
    assert picks == {"calinski_harabasz": 5, "elbow": 3, "silhouette": 3, "davies_bouldin": 3}
    assert list(picks) == list(CRITERIA)
    assert pick_by_criterion([1, 2, 3], [9.0, 2.0, 1.0]) == {"elbow": 2}
    assert pick_by_criterion([1, 2], [9.0, 2.0], [np.nan, np.nan]) == {
        "silhouette": None,
        "elbow": None,
    }


@pytest.mark.parametrize(
    "picks, k, reason",
    [
        (
            {"silhouette": 4, "calinski_harabasz": 4, "davies_bouldin": 4, "elbow": 4},
            4,
            "all four criteria pick k=4",
        ),
        (
            {"silhouette": 2, "calinski_harabasz": 3, "davies_bouldin": 3, "elbow": 3},
            3,
            "Calinski-Harabasz, elbow and Davies-Bouldin pick k=3; silhouette picks 2",
        ),
        # A tie of two against two goes to the criterion listed first in CRITERIA.
        (
            {"silhouette": 2, "calinski_harabasz": 3, "davies_bouldin": 2, "elbow": 3},
            3,
            "Calinski-Harabasz and elbow pick k=3; silhouette picks 2, Davies-Bouldin 2 (a tie "
            "with k=2: Calinski-Harabasz, the most reliable criterion in our measurements, "
            "decides)",
        ),
        (
            {"silhouette": 2, "calinski_harabasz": 5, "davies_bouldin": 3, "elbow": 4},
            5,
            "Calinski-Harabasz picks k=5; elbow picks 4, silhouette 2, Davies-Bouldin 3 (a tie "
            "with k=2, 3, 4: Calinski-Harabasz, the most reliable criterion in our "
            "measurements, decides)",
        ),
        ({"elbow": 4}, 4, "elbow picks k=4"),
        (
            {"elbow": 4, "silhouette": 2},
            4,
            "elbow picks k=4; silhouette picks 2 (a tie with k=2: elbow, the most reliable "
            "criterion in our measurements, decides)",
        ),
        (
            {"silhouette": None, "elbow": 2},
            2,
            "elbow picks k=2 (silhouette: no pick)",
        ),
        ({"elbow": None}, None, "no criterion picks a k (try more or wider ks)"),
    ],
)
def test_suggestion_is_the_majority_and_says_why(picks, k, reason):
    assert suggest_k(picks) == (k, reason)


# --- the sweep -----------------------------------------------------------------------


def test_elbow_scores_every_k_and_all_criteria_find_four_blobs(client):
    X, _ = make_blobs(1500, n_features=4, centers=4, cluster_std=1.0, random_state=3)
    result = elbow(X, range(1, 8), random_state=0, tol=0.0, silhouette_sample_size=2000)
    assert result.suggested_k == 4 and result.reason == "all four criteria pick k=4"
    assert set(result.picks.values()) == {4}
    assert np.isnan(result.silhouettes[0]) and np.isnan(result.calinski_harabasz[0])
    for k, sil, ch, db in zip(
        result.ks[1:],
        result.silhouettes[1:],
        result.calinski_harabasz[1:],
        result.davies_bouldin[1:],
        strict=True,
    ):
        labels = KMeans(k, random_state=0, tol=0.0).fit(X).labels_
        assert sil == pytest.approx(silhouette_score(X, labels), rel=1e-6)  # sample = all rows
        assert ch == pytest.approx(calinski_harabasz_score(X, labels), rel=1e-6)
        assert db == pytest.approx(davies_bouldin_score(X, labels), rel=1e-6)
    row = result.to_rows()[3]
    assert row["picked_by"] == list(CRITERIA) and row["suggested"]
    assert json.loads(json.dumps(result.to_rows()))[0]["silhouette"] is None


def test_silhouette_uses_one_seeded_sample_for_every_k(client):
    X = load_iris().data
    first = elbow(X, [2, 3], random_state=5, silhouette_sample_size=60)
    again = elbow(X, [2, 3], random_state=5, silhouette_sample_size=60)
    other = elbow(X, [2, 3], random_state=6, silhouette_sample_size=60)
    assert first.silhouettes == again.silhouettes
    assert first.silhouettes != other.silhouettes
    rows = np.sort(np.random.default_rng(5).choice(len(X), size=60, replace=False))
    model = KMeans(3, random_state=5).fit(X)
    expected = silhouette_score(X[rows], model.predict(X[rows]))
    assert first.silhouettes[1] == pytest.approx(expected, rel=1e-12)


def test_elbow_without_scores_suggests_the_elbow(client):
    X, _ = make_blobs(800, n_features=2, centers=3, random_state=0)
    result = elbow(X, range(1, 7), scores=False)
    assert result.picks == {"elbow": 3} and result.suggested_k == 3
    assert result.silhouettes == result.calinski_harabasz == result.davies_bouldin == []
    assert result.reason == "elbow picks k=3"


def test_elbow_scores_a_dask_array_without_computing_it_on_the_client(client, monkeypatch):
    X, _ = make_blobs(1200, n_features=3, centers=3, random_state=2)
    lazy = da.from_array(X, chunks=(200, 3))
    monkeypatch.setattr(
        da.Array, "__array__", lambda *a, **k: pytest.fail("the data was brought to the client")
    )
    result = elbow(lazy, [2, 3, 4], random_state=0, silhouette_sample_size=300)
    assert result.suggested_k == 3


@pytest.mark.parametrize(
    "params, match",
    [
        ({"silhouette_sample_size": 1}, r"silhouette_sample_size must be an integer >= 2, got 1"),
        ({"silhouette_sample_size": 0.5}, r"silhouette_sample_size .* got 0\.5"),
        ({"silhouette_sample_size": True}, r"silhouette_sample_size .* got True"),
        ({"silhouette_sample_size": "100"}, r"silhouette_sample_size .* got '100'"),
    ],
)
def test_elbow_refuses_bad_score_options(params, match):
    with pytest.raises(ValueError, match=match):
        elbow(np.zeros((10, 2)), [2, 3], **params)


def test_result_without_scores_keeps_its_old_rows():
    result = ElbowResult([1, 2, 3], [9.0, 2.0, 1.0], [0.1, 0.1, 0.1], 2, [2, 3, 3])
    assert [row["silhouette"] for row in result.to_rows()] == [None, None, None]
    assert [row["picked_by"] for row in result.to_rows()] == [[], [], []]


# --- the command line ----------------------------------------------------------------


@pytest.fixture
def three_blobs_npy(tmp_path):
    X, _ = make_blobs(900, centers=[[0, 0], [10, 0], [0, 10]], cluster_std=0.8, random_state=4)
    path = tmp_path / "three.npy"
    np.save(path, X)
    return str(path)


def test_cli_elbow_prints_one_table_and_the_reason(three_blobs_npy, cluster, capsys):
    argv = ["elbow", three_blobs_npy, "--ks", "1,2,3,4,5,6", "--scheduler"]
    assert main([*argv, cluster.scheduler_address]) == 0
    out = capsys.readouterr().out
    for column in ("inertia", "silhouette", "CH", "DB", "picked by"):
        assert column in out
    assert "all four" in out
    assert "suggested k: 3* (all four criteria pick k=3)" in " ".join(out.split())


def test_cli_elbow_json_has_scores_picks_and_reason(three_blobs_npy, cluster, capsys, tmp_path):
    png = tmp_path / "k.png"
    argv = ["elbow", three_blobs_npy, "--ks", "2,3,4", "--json", "--png", str(png)]
    argv += ["--silhouette-sample", "300", "--scheduler", cluster.scheduler_address]
    assert main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["suggested_k"] == 3 and report["reason"] == "all four criteria pick k=3"
    assert report["picks"] == {name: 3 for name in CRITERIA}
    assert {"silhouette", "calinski_harabasz", "davies_bouldin"} <= set(report["results"][0])
    assert png.stat().st_size > 10_000


@pytest.mark.parametrize(
    "option, value, match",
    [
        ("--silhouette-sample", "1", "expected an integer >= 2, got '1'"),
        ("--init-sample-size", "0", "expected a number of rows .* got '0'"),
        ("--init-sample-size", "1.5", "expected a number of rows .* got '1.5'"),
    ],
)
def test_cli_elbow_refuses_bad_options(three_blobs_npy, capsys, option, value, match):
    assert main(["elbow", three_blobs_npy, option, value]) == 2
    assert re.search(match, capsys.readouterr().err)


# --- the plot ------------------------------------------------------------------------


def _result_with_scores() -> ElbowResult:
    ks = [1, 2, 3, 4, 5]
    silhouettes = [np.nan, 0.5, 0.8, 0.6, 0.55]
    ch = [np.nan, 100.0, 300.0, 250.0, 200.0]
    db = [np.nan, 0.9, 0.3, 0.5, 0.6]
    inertias = [100.0, 40.0, 5.0, 4.5, 4.2]
    picks = pick_by_criterion(ks, inertias, silhouettes, ch, db)
    k, reason = suggest_k(picks)
    return ElbowResult(
        ks, inertias, [0.1] * 5, k, [3] * 5, "log", silhouettes, ch, db, picks, reason
    )


def test_plot_k_selection_draws_every_criterion_and_the_suggestion(tmp_path):
    pytest.importorskip("matplotlib")
    import matplotlib.pyplot as plt

    from kmeans_dask.plotting import plot_k_selection

    result = _result_with_scores()
    figure = plot_k_selection(result)
    try:
        assert len(figure.axes) == 4
        assert figure._suptitle.get_text() == "suggested k=3: all four criteria pick k=3"
        labels = [[line.get_label() for line in ax.get_lines()] for ax in figure.axes]
        assert "elbow: k=3" in labels[0]
        assert all("pick: k=3" in panel for panel in labels[1:])
        ylabels = [ax.get_ylabel() for ax in figure.axes[1:]]
        assert ylabels == [
            "silhouette (higher is better)",
            "Calinski-Harabasz (higher is better)",
            "Davies-Bouldin (lower is better)",
        ]
        figure.savefig(tmp_path / "k.png")
        assert (tmp_path / "k.png").stat().st_size > 10_000
    finally:
        plt.close(figure)


def test_plot_k_selection_without_scores_and_elbow_marks_its_own_pick():
    pytest.importorskip("matplotlib")
    import matplotlib.pyplot as plt

    from kmeans_dask.plotting import plot_elbow, plot_k_selection

    fits_only = ElbowResult([1, 2, 3, 4], [9.0, 2.0, 1.5, 1.2], [0.1] * 4, 2, picks={"elbow": 2})
    figure = plot_k_selection(fits_only)
    assert len(figure.axes) == 1
    plt.close(figure)
    # A suggestion other than the elbow: the inertia panel marks the elbow's pick.
    result = _result_with_scores()
    disagreeing = ElbowResult(
        result.ks, result.inertias, result.seconds, 4, picks={**result.picks, "elbow": 3}
    )
    ax = plot_elbow(disagreeing)
    assert ax.get_title() == "elbow at k=3"
    plt.close(ax.figure)
