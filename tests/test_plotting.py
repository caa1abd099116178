"""The elbow helper and the diagnostic plots (matplotlib, Agg backend)."""

from __future__ import annotations

import json

import dask.array as da
import numpy as np
import pytest
from sklearn.datasets import make_blobs
from sklearn.exceptions import NotFittedError

pytest.importorskip("matplotlib")
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.collections import PolyCollection

from kmeans_dask import KMeans
from kmeans_dask.elbow import ElbowResult, elbow, knee_point
from kmeans_dask.plotting import (
    plot_clusters_2d,
    plot_convergence,
    plot_elbow,
    plot_silhouette,
    silhouette_on_sample,
)


@pytest.fixture(scope="module")
def four_blobs():
    """2,000 rows, 4 features, 4 well-separated blobs."""
    X, _ = make_blobs(n_samples=2000, n_features=4, centers=4, cluster_std=1.0, random_state=3)
    return X


@pytest.fixture
def fitted(client, four_blobs):
    return KMeans(4, random_state=0).fit(four_blobs)


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _saved(ax, path) -> None:
    ax.figure.savefig(path)
    assert path.exists()
    assert path.stat().st_size > 5_000, f"{path.name} is only {path.stat().st_size} bytes"


# --- elbow ---------------------------------------------------------------------------


def test_elbow_finds_four_blobs_and_plots(client, four_blobs, tmp_path):
    result = elbow(four_blobs, range(1, 9), random_state=0)
    assert result.ks == list(range(1, 9))
    assert len(result.inertias) == len(result.seconds) == 8
    assert all(s > 0 for s in result.seconds)
    drops = np.diff(result.inertias)
    assert np.all(drops <= 1e-9 * result.inertias[0]), (
        f"inertia increased with k: {dict(zip(result.ks, result.inertias, strict=True))}"
    )
    by_k = dict(zip(result.ks, result.inertias, strict=True))
    assert result.scale == "log"
    assert result.suggested_k == 4, (
        f"suggested k={result.suggested_k} for 4 true blobs; inertias {by_k}"
    )
    # the textbook rule on linear inertia stops early on such curves: within one
    linear = result.ks[knee_point(result.ks, result.inertias, "linear")]
    assert abs(linear - 4) <= 1, f"linear kneedle suggested k={linear}; inertias {by_k}"

    rows = json.loads(json.dumps(result.to_rows()))
    assert [r["k"] for r in rows] == result.ks
    assert [r["k"] for r in rows if r["suggested"]] == [result.suggested_k]

    ax = plot_elbow(result)
    labels = [line.get_label() for line in ax.get_lines()]
    assert "inertia" in labels and "chord" in labels and "elbow: k=4" in labels
    curve = next(line for line in ax.get_lines() if line.get_label() == "inertia")
    np.testing.assert_array_equal(curve.get_xdata(), result.ks)
    marker = next(line for line in ax.get_lines() if line.get_label() == "elbow: k=4")
    assert list(marker.get_xdata()) == [4]
    assert ax.get_yscale() == "log"
    _saved(ax, tmp_path / "elbow.png")


def test_knee_point_rule():
    curve = [100, 60, 25, 20, 17, 15]
    assert knee_point([1, 2, 3, 4, 5, 6], curve, "linear") == 2
    # the units of either axis do not matter
    scaled = [v * 1e7 for v in curve]
    assert knee_point([10, 20, 30, 40, 50, 60], scaled, "linear") == 2
    assert knee_point([1, 2, 3, 4, 5, 6], [100, 50, 25, 3, 2.9, 2.8]) == 3  # log
    assert knee_point([1, 2, 3, 4], [4, 3, 2, 1], "linear") is None  # a line has no elbow
    assert knee_point([1, 2, 3, 4], [8, 4, 2, 1]) is None  # nor a line on the log scale
    assert knee_point([1, 2, 3, 4], [9.0, 1.0, 0.9, 0.0]) in (1, None)  # 0 is clipped, no error
    assert knee_point([1, 2], [5, 1]) is None
    assert knee_point([1, 2, 3], [1, 1, 1]) is None
    with pytest.raises(ValueError, match="scale"):
        knee_point([1, 2, 3], [3, 2, 1], "sqrt")


def test_plot_elbow_without_suggestion(tmp_path):
    result = ElbowResult(
        ks=[2, 4], inertias=[10.0, 5.0], seconds=[0.1, 0.1], suggested_k=None, scale="linear"
    )
    ax = plot_elbow(result)
    assert ax.get_title() == "no elbow found"
    assert ax.get_yscale() == "linear"
    assert not any(line.get_label().startswith("elbow") for line in ax.get_lines())
    _saved(ax, tmp_path / "no_elbow.png")


@pytest.mark.parametrize(
    ("ks", "match"),
    [
        ([], "ks is empty"),
        ([0, 1, 2], "k=0"),
        ([2, -1], "k=-1"),
        ([1, 2.5], "integers"),
        ([2, 3, 2], "duplicates"),
        (5, "iterable"),
    ],
)
def test_elbow_refuses_bad_ks(four_blobs, ks, match):
    with pytest.raises(ValueError, match=match):
        elbow(four_blobs, ks)


def test_elbow_refuses_k_above_rows_and_n_clusters():
    with pytest.raises(ValueError, match="only 10 rows"):
        elbow(np.zeros((10, 2)), [2, 20])
    with pytest.raises(ValueError, match="as ks"):
        elbow(np.zeros((10, 2)), [2, 3], n_clusters=4)
    with pytest.raises(ValueError, match="scale"):
        elbow(np.zeros((10, 2)), [2, 3], scale="sqrt")


# --- plots of a fitted model ------------------------------------------------------------


def test_plot_convergence(fitted, tmp_path):
    ax = plot_convergence(fitted)
    n = len(fitted.history_)
    inertia, final = ax.get_lines()
    np.testing.assert_array_equal(inertia.get_xdata(), [r.iteration for r in fitted.history_])
    assert list(inertia.get_ydata()) == [r.inertia for r in fitted.history_]
    assert final.get_ydata()[0] == pytest.approx(fitted.inertia_)
    assert ax.get_yscale() == "log"
    (shift_ax,) = [a for a in ax.get_shared_x_axes().get_siblings(ax) if a is not ax]
    (shift,) = shift_ax.get_lines()
    assert len(shift.get_xdata()) == n
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [
        "inertia",
        "final inertia",
        "centre shift",
    ]
    _saved(ax, tmp_path / "convergence.png")


def test_plot_convergence_on_given_axes(fitted):
    _, (left, right) = plt.subplots(1, 2)
    assert plot_convergence(fitted, ax=right) is right
    assert not left.get_lines()


def test_silhouette_on_sample(client, fitted, four_blobs):
    score = silhouette_on_sample(fitted, four_blobs, n_samples=1_000)
    assert score > 0.5
    lazy = da.from_array(four_blobs, chunks=(300, 4))
    # the same rows are sampled from NumPy and Dask input
    assert silhouette_on_sample(fitted, lazy, n_samples=1_000) == pytest.approx(score)
    assert silhouette_on_sample(fitted, four_blobs, n_samples=50_000) > 0.5  # all rows


def test_plot_silhouette(fitted, four_blobs, tmp_path):
    ax = plot_silhouette(fitted, four_blobs, n_samples=800)
    bands = [c for c in ax.collections if isinstance(c, PolyCollection)]
    assert len(bands) == 4
    assert sorted(t.get_text() for t in ax.texts) == ["0", "1", "2", "3"]
    (mean_line,) = ax.get_lines()
    expected = silhouette_on_sample(fitted, four_blobs, n_samples=800)
    assert mean_line.get_xdata()[0] == pytest.approx(expected)
    _saved(ax, tmp_path / "silhouette.png")


def test_plot_clusters_2d(fitted, four_blobs, tmp_path):
    lazy = da.from_array(four_blobs, chunks=(500, 4))
    ax = plot_clusters_2d(fitted, lazy, n_samples=600)
    rows, centres = ax.collections
    assert rows.get_offsets().shape == (600, 2)
    assert centres.get_offsets().shape == (4, 2)
    assert len(np.unique(rows.get_array())) == 4  # coloured by 4 predicted clusters
    assert ax.get_xlabel().startswith("PC1") and ax.get_ylabel().startswith("PC2")
    _saved(ax, tmp_path / "clusters.png")


def test_plot_clusters_2d_one_feature(client):
    X = np.concatenate([np.zeros(50), np.full(50, 10.0)])[:, None]
    model = KMeans(2, random_state=0).fit(X)
    ax = plot_clusters_2d(model, X)
    rows, _ = ax.collections
    assert rows.get_offsets().shape == (100, 2)
    assert np.all(np.asarray(rows.get_offsets())[:, 1] == 0)


# --- refused inputs ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "call",
    [
        plot_convergence,
        lambda m: silhouette_on_sample(m, np.zeros((10, 2))),
        lambda m: plot_silhouette(m, np.zeros((10, 2))),
        lambda m: plot_clusters_2d(m, np.zeros((10, 2))),
    ],
)
def test_unfitted_model_is_refused(call):
    with pytest.raises(NotFittedError):
        call(KMeans(3))


def test_model_without_history_is_refused(fitted):
    del fitted.history_
    with pytest.raises(ValueError, match="no iteration history"):
        plot_convergence(fitted)


def test_silhouette_needs_two_clusters(client):
    X = np.zeros((20, 2))
    X[10:] = 5.0
    model = KMeans(2, random_state=0).fit(X)
    with pytest.raises(ValueError, match="distinct clusters"):
        silhouette_on_sample(model, X[:10])


@pytest.mark.parametrize("n_samples", [0, 1, 2.5])
def test_bad_n_samples(fitted, four_blobs, n_samples):
    with pytest.raises(ValueError, match="n_samples"):
        silhouette_on_sample(fitted, four_blobs, n_samples=n_samples)


def test_missing_matplotlib_is_named(monkeypatch):
    import sys

    from kmeans_dask import plotting

    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ImportError, match="pip install matplotlib"):
        plotting._pyplot()


def test_plot_elbow_says_its_scales_and_spaces_octaves_of_k_evenly(tmp_path):
    ks = [2, 4, 8, 16, 32, 64]
    result = ElbowResult(
        ks=ks, inertias=[2.0**-k for k in range(6)], seconds=[0.1] * 6, suggested_k=8
    )
    ax = plot_elbow(result)
    assert ax.get_yscale() == "log" and ax.get_ylabel() == "inertia (log scale)"
    assert ax.get_xscale() == "log" and ax.get_xlabel() == "number of clusters k (log scale)"
    assert list(ax.get_xticks()) == ks
    ax.figure.canvas.draw()
    assert [t.get_text() for t in ax.get_xticklabels()] == [str(k) for k in ks]
    _saved(ax, tmp_path / "elbow_octaves.png")


def test_plot_clusters_2d_gives_every_cluster_its_own_colour(client):
    X, _ = make_blobs(n_samples=3000, n_features=2, centers=30, random_state=0)
    model = KMeans(30, random_state=0).fit(X)
    ax = plot_clusters_2d(model, X, n_samples=3000)
    rows, _ = ax.collections
    colours = {tuple(c) for c in rows.cmap(rows.norm(np.arange(30)))}
    assert len(colours) == 30
