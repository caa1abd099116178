"""Searchers prepared once per set of centres in a process, shared by its threads."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from numpy.testing import assert_array_equal

from kmeans_dask._worker import searchers
from kmeans_dask._worker.searchers import CACHED_SEARCHERS, prepared_search
from kmeans_dask.backends import get_backend


@pytest.fixture(autouse=True)
def _fresh_cache():
    searchers.clear()
    yield
    searchers.clear()


def test_the_same_centres_get_the_same_searcher_and_other_centres_another():
    centers = np.random.default_rng(0).normal(size=(8, 4))
    first = prepared_search("numpy", centers)
    assert prepared_search("numpy", centers.copy()) is first  # found by value
    moved = centers.copy()
    moved[3, 1] = np.nextafter(moved[3, 1], np.inf)  # one ulp is other centres
    assert prepared_search("numpy", moved) is not first
    assert prepared_search("numpy", centers.astype(np.float32)) is not first
    assert prepared_search("faiss-cpu", centers) is not first


def test_centres_that_differ_only_between_the_rows_compared_first_are_other_centres():
    centers = np.random.default_rng(2).normal(size=(200, 4))  # rows 0, 3, ... compared first
    first = prepared_search("numpy", centers)
    moved = centers.copy()
    moved[199, 0] += 1.0
    assert prepared_search("numpy", moved) is not first
    assert prepared_search("numpy", centers[:199]) is not first
    assert prepared_search("numpy", centers.copy()) is first


def test_the_cache_keeps_a_few_recent_searchers_only():
    rng = np.random.default_rng(1)
    sets = [rng.normal(size=(4, 3)) for _ in range(CACHED_SEARCHERS + 2)]
    kept = [prepared_search("numpy", c) for c in sets]
    assert prepared_search("numpy", sets[-1]) is kept[-1]
    assert prepared_search("numpy", sets[0]) is not kept[0]  # evicted, prepared again


def test_an_error_while_preparing_reaches_every_caller_and_is_not_kept():
    centers = np.ones((3, 2))
    with pytest.raises(ValueError, match="nprobe"):
        prepared_search("ivf:nlist=2,nprobe=5", centers)
    with pytest.raises(ValueError, match="nprobe"):
        prepared_search("ivf:nlist=2,nprobe=5", centers)


@pytest.mark.parametrize(
    ("spec", "n_clusters", "n_features"),
    [("numpy", 2, 3), ("numpy", 64, 32), ("numpy", 300, 300), ("ivf", 256, 16)],
)
def test_threads_sharing_a_searcher_get_what_a_searcher_of_their_own_gives(
    spec, n_clusters, n_features
):
    """Column layout (a score buffer per thread), row layout, IVF: safe to share."""
    rng = np.random.default_rng(n_clusters)
    blocks = [rng.normal(size=(700, n_features)) for _ in range(48)]
    centers = rng.normal(size=(n_clusters, n_features))
    expected = [get_backend(spec).searcher(centers).nearest(b) for b in blocks]
    shared = prepared_search(spec, centers).searcher
    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(shared.nearest, blocks))
    for mine, theirs in zip(got, expected, strict=True):
        assert_array_equal(mine, theirs)
