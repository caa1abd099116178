"""Zarr input: paths and arrays, persisted or streamed, lazy labels."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
import zarr
from dask.utils import key_split
from distributed import get_task_stream
from numpy.testing import assert_allclose, assert_array_equal

from kmeans_dask import KMeans
from kmeans_dask.datasets import write_blobs_zarr


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("zarr") / "blobs.zarr")
    write_blobs_zarr(path, 20_000, 6, 8, chunk_rows=3_000, cluster_std=2.0, random_state=1)
    return path


def test_zarr_path_array_and_numpy_give_the_same_fit(client, store):
    X = zarr.open_array(store, mode="r")[:]
    from_numpy = KMeans(8, random_state=0).fit(X)
    from_path = KMeans(8, random_state=0).fit(store)
    from_array = KMeans(8, random_state=0).fit(zarr.open_array(store, mode="r"))
    for model in (from_path, from_array):
        assert_allclose(model.cluster_centers_, from_numpy.cluster_centers_, rtol=1e-5)
        assert_array_equal(model.labels_.compute(), from_numpy.labels_)
        assert model.inertia_ == pytest.approx(from_numpy.inertia_, rel=1e-6)


@pytest.mark.parametrize(
    ("init", "engine"),
    [
        ("k-means||", "auto"),
        ("k-means||", "tasks"),
        ("k-means++", "auto"),
        ("random", "auto"),
    ],
)
def test_streamed_fit_equals_persisted_fit(client, store, init, engine):
    persisted = KMeans(8, init=init, n_init=1, random_state=3, persist=True).fit(store)
    streamed = KMeans(8, init=init, n_init=1, random_state=3, persist=False, engine=engine).fit(
        store
    )
    assert_array_equal(streamed.cluster_centers_, persisted.cluster_centers_)
    assert streamed.inertia_ == persisted.inertia_
    assert streamed.n_iter_ == persisted.n_iter_
    # streamed labels are lazy: a graph over the store, not data in memory
    assert isinstance(streamed.labels_, da.Array)
    assert_array_equal(streamed.labels_.compute(), persisted.labels_.compute())


def test_streamed_k_means_parallel_rounds_run_through_the_actors(client, store):
    with get_task_stream(client) as stream:
        KMeans(8, init="k-means||", random_state=3, max_iter=1, persist=False).fit(store)
    prefixes = {key_split(task["key"]) for task in stream.data}
    assert not {prefix for prefix in prefixes if prefix.startswith("kmeans||")}


def test_predict_on_zarr_path_is_lazy(client, store):
    model = KMeans(8, random_state=0).fit(store)
    labels = model.predict(store)
    assert isinstance(labels, da.Array)
    assert set(labels.chunks[0][:-1]) == {zarr.open_array(store, mode="r").chunks[0]}
    assert_array_equal(labels.compute(), model.labels_.compute())


def test_zarr_group_path_with_array_name(client, tmp_path):
    group = zarr.open_group(str(tmp_path / "g.zarr"), mode="w")
    rows = np.random.default_rng(0).normal(size=(500, 3))
    group.create_array("points", shape=rows.shape, chunks=(100, 3), dtype="f8")[:] = rows
    model = KMeans(4, random_state=0).fit(str(tmp_path / "g.zarr" / "points"))
    assert model.cluster_centers_.shape == (4, 3)
    with pytest.raises(ValueError, match=r"is a Zarr group, not an array.*\['points'\]"):
        KMeans(4).fit(str(tmp_path / "g.zarr"))


def test_zarr_bad_inputs(client, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"missing\.zarr' does not exist"):
        KMeans(2).fit(str(tmp_path / "missing.zarr"))
    flat = zarr.create_array(str(tmp_path / "flat.zarr"), shape=(100,), dtype="f4")
    with pytest.raises(ValueError, match="Expected a 2-D array for X, got a 1-D"):
        KMeans(2).fit(flat)
    text = zarr.create_array(str(tmp_path / "text.zarr"), shape=(10, 2), dtype=str)
    with pytest.raises(TypeError, match="expected a real numeric dtype"):
        KMeans(2).fit(text)
    with pytest.raises(ValueError, match="persist=False streams the data from its store"):
        KMeans(2, persist=False).fit(np.zeros((10, 2)))
