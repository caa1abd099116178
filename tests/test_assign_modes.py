"""KMeans(assign=...): approximate Lloyd iterations, exact final pass."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.testing import assert_array_equal
from sklearn.datasets import make_blobs

from kmeans_dask import KMeans
from kmeans_dask.backends import closing_search


@pytest.fixture(scope="module")
def clustered():
    X, _ = make_blobs(n_samples=20_000, n_features=16, centers=300, random_state=0)
    X = X.astype(np.float32)
    return X, X[np.random.default_rng(0).choice(len(X), 256, replace=False)]


@pytest.mark.parametrize(
    ("assign", "options"),
    [("ivf", None), ("ivf", {"nlist": 16, "nprobe": 8}), ("hnsw", {"ef_search": 64})],
)
def test_approximate_iterations_stay_within_one_percent_of_exact(
    client, clustered, assign, options
):
    X, init = clustered
    exact = KMeans(256, init=init, max_iter=8, tol=0).fit(X)
    approx = KMeans(256, init=init, max_iter=8, tol=0, assign=assign, assign_options=options)
    approx.fit(X)
    assert approx.inertia_ <= 1.01 * exact.inertia_
    # the final pass is exact: labels are the nearest final centres
    assert_array_equal(approx.labels_, approx.predict(X))
    distances = ((X[:, None, :] - approx.cluster_centers_[None]) ** 2).sum(-1)
    assert approx.inertia_ == pytest.approx(distances.min(axis=1).sum(), rel=1e-4)


def test_approximate_iterations_relocate_empty_clusters_without_another_pass(
    client, clustered, monkeypatch
):
    """An empty cluster moves onto a row the iteration's chunks reported.

    With approximate iterations, no exact pass over the data looks for the
    farthest rows (it cost as much as an exact iteration).
    """
    from kmeans_dask._fit import passes

    X, init = clustered
    init = init.copy()
    init[0] = 1e4  # far from every row: empty after the first assignment

    def no_extra_pass(*args, **kwargs):
        raise AssertionError("an extra pass over the data to find the farthest rows")

    monkeypatch.setattr(passes, "farthest", no_extra_pass)
    model = KMeans(256, init=init, max_iter=1, tol=0, assign="ivf").fit(X)
    assert model.history_[0].n_empty == 1
    # The relocated centre is a row of the data, its cluster's only member.
    assert (model.cluster_centers_[0] == X).all(axis=1).any()


@pytest.mark.parametrize(
    ("search", "n_clusters", "closing"),
    [
        ("ivf", 256, "ivf:nprobe=12"),  # nlist 16, default nprobe 8
        ("ivf", 4096, "ivf:nprobe=12"),  # nlist 64
        ("ivf:nlist=8", 4096, "ivf:nlist=8,nprobe=8"),  # never above nlist
        ("ivf:nlist=10", 4096, "ivf:nlist=10,nprobe=10"),
        ("ivf:nlist=64,scan=faiss", 4096, "ivf:nlist=64,nprobe=12,scan=faiss"),
        ("ivf:nprobe=4", 4096, "ivf:nprobe=4"),  # the user's nprobe is kept
        ("hnsw:ef_search=64", 4096, "hnsw:ef_search=64"),
        ("candidates", 4096, "candidates:nprobe=12"),  # its IVF searches
        ("candidates:m=8,nprobe=4", 4096, "candidates:m=8,nprobe=4"),
        ("numpy", 4096, "numpy"),
    ],
)
def test_closing_search_raises_only_the_default_ivf_probes(search, n_clusters, closing):
    assert closing_search(search, n_clusters) == closing


def test_last_iteration_probes_more_lists(client, clustered, monkeypatch):
    """The iteration ``max_iter`` ends searches with ``closing_search``; the others do not.

    With ``algorithm="auto"`` and exact final labels it searches exactly
    instead (test_moved_centers); without them no pass searches every row
    exactly."""
    from kmeans_dask._fit import passes

    searches = []
    statistics = passes.search_statistics

    def recording(client, data, centers, search, *args):
        searches.append(search)
        return statistics(client, data, centers, search, *args)

    monkeypatch.setattr(passes, "search_statistics", recording)
    X, init = clustered
    KMeans(256, init=init, max_iter=3, tol=0, assign="ivf", algorithm="lloyd").fit(X)
    assert searches == ["ivf", "ivf", "ivf:nprobe=12"]
    searches.clear()
    exact_final = {"exact_final": True}
    KMeans(256, init=init, max_iter=3, tol=0, assign="ivf", assign_options=exact_final).fit(X)
    assert searches[0] == "ivf" and searches[-1] == "numpy"
    searches.clear()
    KMeans(256, init=init, max_iter=3, tol=0, assign="ivf").fit(X)
    assert searches and "numpy" not in searches


def test_auto_is_exact_for_small_k(client, clustered):
    X, init = clustered
    exact = KMeans(256, init=init, max_iter=3, tol=0).fit(X)
    auto = KMeans(256, init=init, max_iter=3, tol=0, assign="auto").fit(X)
    assert_array_equal(auto.cluster_centers_, exact.cluster_centers_)


@pytest.mark.parametrize(
    ("params", "error", "match"),
    [
        ({"assign": "lsh"}, ValueError, r"assign='lsh' is not supported"),
        ({"assign": "ivf", "assign_options": {"nprobes": 4}}, ValueError, "nprobes"),
        ({"assign": "ivf", "assign_options": [("nprobe", 4)]}, TypeError, "assign_options"),
    ],
)
def test_bad_assign_parameters(client, clustered, params, error, match):
    X, _ = clustered
    with pytest.raises(error, match=match):
        KMeans(8, **params).fit(X[:500])
