"""Approximate nearest-centre searchers (IVF, HNSW) and ``choose_assign_mode``."""

from __future__ import annotations

import faiss
import numpy as np
import pytest
from sklearn.datasets import make_blobs

from kmeans_dask._kernels.block_kernels import accumulate
from kmeans_dask.backends.approximate import (
    AUTO_IVF_MIN_CLUSTERS,
    AUTO_IVF_MIN_FEATURES,
    MORE_LISTS_FROM,
    HNSWBackend,
    HNSWSearcher,
    IVFBackend,
    IVFSearcher,
    choose_assign_mode,
    default_nlist,
    default_nprobe,
)
from kmeans_dask.backends.numpy_blas import exact_searcher


@pytest.fixture(scope="module")
def clustered() -> np.ndarray:
    """12,000 rows, 24 features, 80 well separated blobs (float32)."""
    X, _ = make_blobs(n_samples=12_000, n_features=24, centers=80, cluster_std=1.0, random_state=0)
    return X.astype(np.float32)


def _initial(X: np.ndarray, k: int, seed: int = 1) -> np.ndarray:
    rows = np.sort(np.random.default_rng(seed).choice(X.shape[0], size=k, replace=False))
    return np.ascontiguousarray(X[rows])


def _labels(searcher, X: np.ndarray) -> np.ndarray:
    step = searcher.block_rows
    return np.concatenate([searcher.nearest(X[i : i + step]) for i in range(0, len(X), step)])


def _lloyd(X: np.ndarray, init: np.ndarray, make_searcher, n_iter: int) -> np.ndarray:
    centers = init.astype(np.float64)
    for _ in range(n_iter):
        labels = _labels(make_searcher(centers.astype(X.dtype)), X)
        sums = np.zeros_like(centers)
        counts = np.zeros(len(centers))
        accumulate(X, labels, None, centers, sums, counts, np.empty(len(X)))
        nonempty = counts > 0
        centers[nonempty] = sums[nonempty] / counts[nonempty, None]
    return centers


def _inertia(X: np.ndarray, centers: np.ndarray) -> float:
    labels = _labels(exact_searcher(centers.astype(X.dtype)), X)
    centers = np.asarray(centers, dtype=np.float64)
    sums = np.zeros_like(centers)
    return accumulate(X, labels, None, centers, sums, np.zeros(len(centers)), np.empty(len(X)))


SEARCHERS = {
    "ivf": lambda centers: IVFSearcher(centers),
    "ivf-faiss-scan": lambda centers: IVFSearcher(centers, scan="faiss"),
    "hnsw": lambda centers: HNSWSearcher(centers),
}


@pytest.mark.parametrize("name", sorted(SEARCHERS))
@pytest.mark.parametrize("k", [256, 1024])
def test_recall_on_clustered_data(clustered, name, k):
    centers = _initial(clustered, k)
    truth = _labels(exact_searcher(centers), clustered)
    labels = _labels(SEARCHERS[name](centers), clustered)
    assert np.mean(labels == truth) >= 0.95


@pytest.mark.parametrize("name", sorted(SEARCHERS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_labels_are_int32_and_in_range(clustered, name, dtype):
    X = clustered[:3000].astype(dtype)
    centers = _initial(X, 300)
    searcher = SEARCHERS[name](centers)
    assert isinstance(searcher.block_rows, int) and searcher.block_rows > 0
    labels = searcher.nearest(X)
    assert labels.dtype == np.int32
    assert labels.shape == (len(X),)
    assert labels.min() >= 0 and labels.max() < len(centers)
    empty = searcher.nearest(X[:0])
    assert empty.dtype == np.int32 and empty.shape == (0,)


@pytest.mark.parametrize("scan", ["fused", "faiss"])
def test_rows_a_scan_leaves_unanswered_fall_back_to_exact(clustered, scan):
    """A row whose probed lists are all empty gets no centre from the scan (-1) and is
    searched exactly. The lists of a k-means of the centres are seldom empty, so the
    scan here leaves every third row unanswered."""
    centers = _initial(clustered, 200)
    searcher = IVFSearcher(centers, nlist=16, nprobe=2, scan=scan)
    X = clustered[:600]
    answered = searcher.nearest(X)
    name = "_nearest_fused" if scan == "fused" else "_nearest_faiss"
    scan_all = getattr(searcher, name)

    def scan_missing_every_third(block, *args):
        labels = scan_all(block, *args)
        labels[::3] = -1
        return labels

    setattr(searcher, name, scan_missing_every_third)
    labels = searcher.nearest(X)
    np.testing.assert_array_equal(labels[::3], exact_searcher(centers).nearest(X[::3]))
    kept = np.arange(len(X)) % 3 != 0
    np.testing.assert_array_equal(labels[kept], answered[kept])


def test_hnsw_unanswered_rows_fall_back_to_exact(clustered):
    centers = _initial(clustered, 200)
    searcher = HNSWSearcher(centers)
    searcher.index.search = lambda x, k: (  # a search that answers nothing
        np.full((len(x), k), np.inf, dtype=np.float32),
        np.full((len(x), k), -1, dtype=np.int64),
    )
    X = clustered[:500]
    np.testing.assert_array_equal(searcher.nearest(X), exact_searcher(centers).nearest(X))


def test_ivf_overrides_are_respected(clustered):
    centers = _initial(clustered, 500)
    searcher = IVFSearcher(centers, nlist=10, nprobe=3)
    assert (searcher.nlist, searcher.nprobe) == (10, 3)
    assert (searcher.index.nlist, searcher.index.nprobe) == (10, 3)
    assert sum(searcher.index.invlists.list_size(i) for i in range(10)) == 500
    defaults = IVFSearcher(centers)
    assert defaults.nlist == default_nlist(500) == 22
    assert defaults.nprobe == default_nprobe(22) == 8
    backend = IVFBackend(nlist=7, nprobe=2)
    assert backend.name == "ivf"
    assert (backend.searcher(centers).nlist, backend.searcher(centers).nprobe) == (7, 2)


def test_hnsw_overrides_are_respected(clustered):
    centers = _initial(clustered, 300)
    searcher = HNSWSearcher(centers, m=8, ef_search=20)
    assert (searcher.m, searcher.ef_search) == (8, 20)
    assert searcher.index.hnsw.efSearch == 20
    assert searcher.index.ntotal == 300
    backend = HNSWBackend(m=12, ef_search=33)
    assert backend.name == "hnsw"
    assert backend.searcher(centers).index.hnsw.efSearch == 33


@pytest.mark.parametrize(
    "kwargs",
    [{"nlist": 0}, {"nlist": 301}, {"nlist": 10, "nprobe": 0}, {"nlist": 10, "nprobe": 11}],
)
def test_ivf_rejects_bad_parameters(kwargs):
    centers = np.random.default_rng(0).normal(size=(300, 4)).astype(np.float32)
    with pytest.raises(ValueError):
        IVFSearcher(centers, **kwargs)


def test_defaults_stay_in_range():
    for k in (1, 2, 3, 10, 100, 4096, 16384, 1 << 20):
        nlist = default_nlist(k)
        assert 1 <= nlist <= k
        assert 1 <= default_nprobe(nlist) <= nlist
    X = np.random.default_rng(1).normal(size=(50, 5)).astype(np.float32)
    for k in (1, 2, 3):  # tiny k: every list is probed, so the search is exact
        centers = np.random.default_rng(k).normal(size=(k, 5)).astype(np.float32)
        exact = exact_searcher(centers).nearest(X)
        np.testing.assert_array_equal(IVFSearcher(centers).nearest(X), exact)
        np.testing.assert_array_equal(HNSWSearcher(centers).nearest(X), exact)


def test_default_nlist_is_sqrt_k_then_up_to_twice_it_from_more_lists_from():
    expected = {500: 22, 4096: 64, 8192: 91, 11585: 161, 16384: 256, 65536: 512, 1 << 20: 2048}
    assert {k: default_nlist(k) for k in expected} == expected
    below, twice = MORE_LISTS_FROM, 2 * MORE_LISTS_FROM
    assert default_nlist(below) == round(below**0.5)
    assert default_nlist(twice) == round(2 * twice**0.5)


def test_probing_every_list_is_exact(clustered):
    X = clustered[:4000].astype(np.float64)
    centers = _initial(X, 400)
    searcher = IVFSearcher(centers, nlist=20, nprobe=20)
    np.testing.assert_array_equal(searcher.nearest(X), exact_searcher(centers).nearest(X))


def test_fused_scan_matches_faiss_scan(clustered):
    centers = _initial(clustered, 1000)
    fused = _labels(IVFSearcher(centers, nlist=32, nprobe=4), clustered)
    scan = _labels(IVFSearcher(centers, nlist=32, nprobe=4, scan="faiss"), clustered)
    assert np.mean(fused == scan) >= 0.999


@pytest.mark.parametrize("name", sorted(SEARCHERS))
def test_deterministic_across_builds_and_threads(clustered, name):
    centers = _initial(clustered, 700)
    previous = faiss.omp_get_max_threads()
    try:
        faiss.omp_set_num_threads(1)
        first = _labels(SEARCHERS[name](centers), clustered)
        faiss.omp_set_num_threads(2)
        second = _labels(SEARCHERS[name](centers), clustered)
    finally:
        faiss.omp_set_num_threads(previous)
    np.testing.assert_array_equal(first, second)


@pytest.mark.parametrize("name", sorted(SEARCHERS))
def test_lloyd_inertia_close_to_exact(clustered, name):
    init = _initial(clustered, 512, seed=3)
    exact = _inertia(clustered, _lloyd(clustered, init, exact_searcher, 4))
    approximate = _inertia(clustered, _lloyd(clustered, init, SEARCHERS[name], 4))
    assert abs(approximate - exact) <= 0.01 * exact


def test_choose_assign_mode():
    assert choose_assign_mode(8, 2) == "exact"
    assert choose_assign_mode(1024, 128) == "exact"
    assert choose_assign_mode(AUTO_IVF_MIN_CLUSTERS - 1, 128) == "exact"
    assert choose_assign_mode(AUTO_IVF_MIN_CLUSTERS, 128) == "candidates"
    assert choose_assign_mode(16384, 64) == "candidates"
    assert choose_assign_mode(16384, AUTO_IVF_MIN_FEATURES - 1) == "exact"
    with pytest.raises(ValueError):
        choose_assign_mode(0, 10)
    with pytest.raises(ValueError):
        choose_assign_mode(10, 0)


def test_a_centre_whose_nearest_list_is_full_takes_its_next_nearest_with_room():
    from kmeans_dask._kernels.block_kernels import fill_nearest_with_room

    # Four lists on a line; centres placed in order of priority.
    coarse = np.array([[0.0], [1.0], [3.0], [10.0]])
    centers = np.array([[0.1], [0.2], [0.3], [0.4], [0.9], [2.0]])
    nearest = np.array([0, 0, 0, 0, 1, 1])
    order = np.arange(6)
    # Capacity 2: two centres fill list 0; the next two go to their next
    # nearest list with room (1). Centre 4 finds its two nearest lists (1, 0)
    # full and goes to its nearest all the same, over capacity, not to list 2
    # or 3 (with room, but not among its two nearest). Centre 5 is as near to
    # list 1 as to list 2: the tie ranks list 1 first, which is full.
    lists = fill_nearest_with_room(centers, coarse, nearest, order, 2, 2)
    assert lists.tolist() == [0, 0, 1, 1, 1, 2]
    roomy = fill_nearest_with_room(centers, coarse, nearest, order, 10, 2)
    assert roomy.tolist() == nearest.tolist()
    # The order of placement decides who gets the room.
    reversed_order = order[::-1].copy()
    late = fill_nearest_with_room(centers, coarse, nearest, reversed_order, 2, 2)
    assert late.tolist() == [0, 0, 0, 0, 1, 1]


def test_ivf_lists_stay_balanced_on_centres_filling_a_ball():
    """After a Lloyd step on overlapping data, k-means over the centres had left one list
    with most of them: the search was then nearly exact in cost."""
    from kmeans_dask.backends.ivf_lists import MAX_LIST_SIZE_RATIO

    rng = np.random.default_rng(1)
    X = rng.normal(size=(10_000, 128)).astype(np.float32)
    init = X[rng.choice(len(X), 1024, replace=False)]
    labels = IVFSearcher(init).nearest(X)  # one approximate Lloyd step (410 in one list before)
    sums = np.zeros((1024, 128))
    np.add.at(sums, labels, X)
    counts = np.bincount(labels, minlength=1024)
    centers = np.where(counts[:, None] > 0, sums / np.maximum(counts, 1)[:, None], init)
    searcher = IVFSearcher(centers.astype(np.float32))
    sizes = np.diff(searcher._list_bounds)
    assert sizes.max() <= np.ceil(MAX_LIST_SIZE_RATIO * 1024 / searcher.nlist)
    sizes_faiss = [searcher.index.invlists.list_size(i) for i in range(searcher.nlist)]
    assert sorted(sizes_faiss) == sorted(sizes.tolist())  # Faiss's scan sees the same lists
