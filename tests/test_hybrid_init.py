"""init="hybrid": exact k-means on a worker-drawn sample starts the full fit."""

from __future__ import annotations

import json
import re
from pathlib import Path

import dask.array as da
import numpy as np
import pytest
import zarr
from numpy.testing import assert_allclose, assert_array_equal
from sklearn.cluster import KMeans as SKLearnKMeans
from sklearn.datasets import make_blobs

import kmeans_dask._fit.hybrid_init as hybrid_module
from kmeans_dask import KMeans, load
from kmeans_dask._fit.hybrid_init import MIN_SAMPLE_ROWS, resolve_sample_size
from kmeans_dask.cli import main


@pytest.fixture(scope="module")
def blobs12():
    X, _ = make_blobs(6000, n_features=4, centers=12, cluster_std=1.5, random_state=7)
    return X


@pytest.fixture
def sampled(monkeypatch):
    """The rows and weights the client's Lloyd got, per hybrid initialisation."""
    seen: list[tuple[np.ndarray, np.ndarray]] = []
    lloyd = hybrid_module.local_lloyd

    def recording(points, weights, centers, **kwargs):
        seen.append((points.copy(), weights.copy()))
        return lloyd(points, weights, centers, **kwargs)

    monkeypatch.setattr(hybrid_module, "local_lloyd", recording)
    return seen


@pytest.mark.parametrize(
    "size, n_samples, n_clusters, expected",
    [
        (None, 10**6, 8, MIN_SAMPLE_ROWS),
        (None, 10**6, 1000, 100_000),
        (None, 500, 8, 500),  # never more than the data has
        (300, 10**6, 8, 300),
        (np.int64(300), 10**6, 8, 300),
        (0.1, 5000, 8, 500),
        (1.0, 5000, 8, 5000),
        (8, 5000, 8, 8),
    ],
)
def test_sample_size_rows_fraction_or_default(size, n_samples, n_clusters, expected):
    assert resolve_sample_size(size, n_samples, n_clusters) == expected


def test_the_client_gets_only_the_sample_drawn_on_the_workers(client, blobs12, sampled):
    lazy = da.from_array(blobs12, chunks=(700, 4))
    KMeans(12, init="hybrid", init_sample_size=900, random_state=0).fit(lazy)
    (points, weights), *_ = sampled
    assert points.shape == (900, 4)
    assert_array_equal(weights, np.ones(900))
    # distinct rows of the data
    rows = {tuple(row) for row in blobs12}
    assert len({tuple(row) for row in points}) == 900 and {tuple(p) for p in points} <= rows


def test_sample_keeps_the_rows_weights(client, blobs12, sampled):
    weights = np.arange(len(blobs12)) % 3 + 1.0
    KMeans(12, init="hybrid", init_sample_size=0.2, random_state=0).fit(
        blobs12, sample_weight=weights
    )
    points, got = sampled[0]
    index = {tuple(row): i for i, row in enumerate(blobs12)}
    assert len(points) == 1200
    assert_array_equal(got, weights[[index[tuple(p)] for p in points]])


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_same_sample_for_numpy_dask_zarr_any_chunking_and_streamed(
    client, blobs12, tmp_path, sampled
):
    path = str(tmp_path / "x.zarr")
    store = zarr.open_array(path, mode="w", shape=blobs12.shape, chunks=(1000, 4))
    store[:] = blobs12
    inputs = {
        "numpy": (blobs12, {}),
        "dask": (da.from_array(blobs12, chunks=(450, 4)), {}),
        "zarr": (path, {}),
        "zarr streamed": (path, {"persist": False}),
    }
    fits = {
        name: KMeans(12, init="hybrid", init_sample_size=0.25, random_state=3, max_iter=1, **extra)
        .fit(X)
        .cluster_centers_
        for name, (X, extra) in inputs.items()
    }
    for (points, _), name in zip(sampled, inputs, strict=True):
        assert_array_equal(points, sampled[0][0], err_msg=name)
    for name, centers in fits.items():  # one full Lloyd pass later: sums in another order
        assert_allclose(centers, fits["numpy"], rtol=1e-12, err_msg=name)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_deterministic_with_random_state_and_seed_dependent(client, blobs12):
    def centers(seed):
        model = KMeans(12, init="hybrid", init_sample_size=600, random_state=seed, max_iter=1)
        return model.fit(blobs12).cluster_centers_

    assert_array_equal(centers(1), centers(1))
    assert not np.array_equal(centers(1), centers(2))


def test_the_whole_data_as_sample_is_already_converged(client, blobs12):
    # A sample of every row is exact k-means on the data: the full fit barely moves.
    model = KMeans(12, init="hybrid", init_sample_size=1.0, random_state=0, tol=1e-4)
    model.fit(blobs12)
    assert model.n_iter_ <= 2


def test_hybrid_is_as_good_as_sklearn(client, blobs12):
    ours = KMeans(12, init="hybrid", init_sample_size=0.1, random_state=0).fit(blobs12)
    best = SKLearnKMeans(12, n_init=10, random_state=0).fit(blobs12)
    assert ours.inertia_ <= 1.01 * best.inertia_


@pytest.mark.parametrize(
    "size, match",
    [
        (5, re.escape("init_sample_size=5 gives a sample of 5 rows (of n_samples=6000), fewer "
                      "than n_clusters=12; init='hybrid' needs at least one row per cluster: "
                      "raise init_sample_size")),
        (0.001, r"init_sample_size=0\.001 gives a sample of 6 rows .* n_clusters=12"),
    ],
)  # fmt: skip
def test_a_sample_smaller_than_k_is_refused_before_any_work(blobs12, size, match, monkeypatch):
    import kmeans_dask._fit.cluster_fit as estimator_module

    monkeypatch.setattr(estimator_module, "client_for_fit", lambda *a, **k: pytest.fail("started"))
    model = KMeans(12, init="hybrid", init_sample_size=size)
    with pytest.raises(ValueError, match=match):
        model.fit(blobs12)
    assert not hasattr(model, "cluster_centers_")
    # Other inits ignore the sample size.
    assert KMeans(12, init_sample_size=size).get_params()["init_sample_size"] == size


def test_partial_fit_starts_with_kmeans_plusplus(blobs12):
    hybrid = KMeans(12, init="hybrid", random_state=0).partial_fit(blobs12[:2000])
    plusplus = KMeans(12, init="k-means++", random_state=0).partial_fit(blobs12[:2000])
    assert_array_equal(hybrid.cluster_centers_, plusplus.cluster_centers_)


def test_model_file_keeps_init_and_sample_size(client, blobs12, tmp_path):
    model = KMeans(12, init="hybrid", init_sample_size=0.3, random_state=0).fit(blobs12)
    model.save(tmp_path / "m.npz")
    loaded = load(tmp_path / "m.npz")
    assert loaded.get_params()["init"] == "hybrid"
    assert loaded.get_params()["init_sample_size"] == 0.3


def test_cli_fit_with_hybrid_init(tmp_path, blobs12, cluster, capsys):
    path, model_path = tmp_path / "x.npy", str(tmp_path / "m.npz")
    np.save(path, blobs12)
    for size, expected in (("0.5", 0.5), ("2000", 2000)):
        argv = ["fit", str(path), "-k", "12", "--init", "hybrid", "--init-sample-size", size]
        argv += ["-o", model_path, "--json", "--scheduler", cluster.scheduler_address]
        assert main(argv) == 0
        assert json.loads(capsys.readouterr().out)["n_clusters"] == 12
        params = load(model_path).get_params()
        assert params["init"] == "hybrid" and params["init_sample_size"] == expected
        assert type(params["init_sample_size"]) is type(expected)
        Path(model_path).unlink()


@pytest.mark.parametrize("value", ["0", "-3", "1.5", "0.0", "many"])
def test_cli_refuses_bad_sample_sizes(tmp_path, value, capsys):
    assert main(["fit", str(tmp_path / "x.npy"), "-k", "3", "--init-sample-size", value]) == 2
    err = capsys.readouterr().err
    assert "--init-sample-size: expected a number of rows (an integer >= 1) or a fraction" in err
    assert repr(value) in err
