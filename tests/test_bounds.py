"""Hamerly bounds: they are valid, they skip work, and they never change the answer."""

from __future__ import annotations

import gc

import numpy as np
import pytest
from distributed import Client, LocalCluster
from numpy.testing import assert_array_equal
from sklearn.cluster import KMeans as SKKMeans

import kmeans_dask._fit.passes as passes_module
import kmeans_dask._worker.bounds as bounds_module
import kmeans_dask._worker.tasks as tasks_module
from kmeans_dask import KMeans
from kmeans_dask._fit.bounds_schedule import center_movement, centers_settled, half_gaps
from kmeans_dask._worker.bounds import CenterMovement, RowBounds, bounded_assign
from kmeans_dask._worker.host_ops import statistics_and_labels
from kmeans_dask._worker.memo import ChunkMemo
from kmeans_dask._worker.searchers import PreparedSearch
from kmeans_dask.backends import get_backend, resolve_algorithm


def _distances(X, centers):
    diff = X[:, None, :].astype(np.float64) - centers[None].astype(np.float64)
    return np.sqrt((diff**2).sum(-1))


class CountingSearcher:
    """Wraps the BLAS searcher and counts the rows it is asked to search."""

    def __init__(self, centers):
        self._inner = get_backend("numpy").searcher(centers)
        self.block_rows = self._inner.block_rows
        self.searched = 0

    def nearest_two(self, block):
        self.searched += block.shape[0]
        return self._inner.nearest_two(block)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("offset", [0.0, 1e3])
@pytest.mark.parametrize(("n", "d", "k"), [(500, 3, 1), (2000, 8, 2), (3000, 17, 40)])
def test_nearest_two_gives_the_nearest_and_a_true_lower_bound(dtype, offset, n, d, k):
    rng = np.random.default_rng(n + d + k)
    X = (rng.normal(size=(n, d)) + offset).astype(dtype)
    centers = (rng.normal(size=(k, d)) + offset).astype(dtype)
    labels, runner_up = get_backend("numpy").searcher(centers).nearest_two(X)
    distances = _distances(X, centers)
    rows = np.arange(n)
    if offset == 0.0:
        # The chosen centre is the nearest up to float rounding of the GEMM
        # (far from the origin float32 GEMM distances cancel: only the bound holds).
        assert np.all(distances[rows, labels] <= distances.min(axis=1) * (1 + 1e-5) + 1e-5)
    others = distances.copy()
    others[rows, labels] = np.inf
    assert np.all(runner_up <= others.min(axis=1))
    if k == 1:
        assert np.all(np.isinf(runner_up))
    elif offset == 0.0:
        # Not uselessly loose either: the rounding slack is tiny near the origin.
        assert np.all(runner_up >= others.min(axis=1) - 1e-2)


def test_half_gaps_are_lower_bounds_and_tight():
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(50, 6))
    distances = _distances(centers, centers)
    np.fill_diagonal(distances, np.inf)
    gaps = half_gaps(centers)
    assert np.all(gaps <= distances.min(axis=1) / 2)
    np.testing.assert_allclose(gaps, distances.min(axis=1) / 2, rtol=1e-9)
    assert np.isinf(half_gaps(centers[:1])).all()
    rows = np.array([3, 17, 40])
    np.testing.assert_allclose(half_gaps(centers, rows), gaps[rows], rtol=1e-12)


def test_centres_count_as_settled_when_they_move_little_against_their_gaps():
    centers = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])  # half-gaps 5
    all_moved = centers.copy()
    all_moved[:, 0] += 0.24  # below 0.05 x the median half-gap
    assert centers_settled(centers, all_moved)
    one_moved = centers.copy()
    one_moved[2, 1] += 0.26  # above it
    assert not centers_settled(centers, one_moved)
    # Many centres: the median half-gap comes from a sample, and is close.
    rng = np.random.default_rng(4)
    many = rng.normal(size=(3000, 3))
    sampled = np.median(half_gaps(many, np.linspace(0, 2999, 256).astype(np.intp)))
    assert sampled == pytest.approx(np.median(half_gaps(many)), rel=0.2)


@pytest.mark.parametrize("n_clusters", [1500, 5000])
def test_settling_is_decided_as_by_the_sampled_median_alone(n_clusters):
    """The subset's bound only ever answers early what the full estimate would."""
    from kmeans_dask._fit import bounds_schedule

    rng = np.random.default_rng(n_clusters)
    centers = rng.normal(size=(n_clusters, 8))
    sample = np.unique(
        np.linspace(0, n_clusters - 1, bounds_schedule.SETTLED_SAMPLE).astype(np.intp)
    )
    limit = bounds_schedule.SETTLED_RATIO * np.median(half_gaps(centers, sample))
    direction = rng.normal(size=8)
    direction /= np.linalg.norm(direction)
    full_calls = []
    real_half_gaps = bounds_schedule.half_gaps

    def counted(points, rows=None):
        full_calls.append(len(points) == n_clusters)
        return real_half_gaps(points, rows)

    for factor, settled in [
        (0.5, True),
        (0.999, True),
        (1.001, False),
        (3.0, False),
        (50.0, False),
    ]:
        moved = centers.copy()
        moved[7] += factor * limit * direction  # the largest shift; the others stay
        full_calls.clear()
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(bounds_schedule, "half_gaps", counted)
            assert centers_settled(moved, centers) is settled
        # Far moves are decided among the subset alone.
        assert any(full_calls) is (factor < 3.0)


def test_center_movement_reports_the_two_largest_shifts():
    old = np.zeros((4, 2))
    new = np.array([[0.0, 1.0], [3.0, 4.0], [0.0, 2.0], [0.0, 0.0]])
    movement = center_movement(old, new)
    assert np.all(movement.shift >= [1.0, 5.0, 2.0, 0.0])
    np.testing.assert_allclose(movement.shift, [1.0, 5.0, 2.0, 0.0], rtol=1e-9)
    largest, center, runner_up = movement.largest
    assert center == 1
    assert largest == pytest.approx(5.0) and runner_up == pytest.approx(2.0)
    single = CenterMovement(shift=np.array([0.5]), half_gap=np.array([np.inf]))
    assert single.largest == (0.5, 0, 0.0)


def _lloyd_steps(X, weights, centers, n_steps):
    """Lloyd steps with bounds, each also done plainly: yields both, and the centres."""
    previous, movement = None, None
    for _ in range(n_steps):
        searcher = CountingSearcher(centers)
        sums, counts = np.zeros(centers.shape), np.zeros(len(centers))
        bounds, sq_dist, inertia = bounded_assign(
            X,
            weights,
            centers,
            PreparedSearch(searcher, False, True),
            previous,
            movement,
            sums,
            counts,
        )
        plain, labels, plain_sq = statistics_and_labels(X, weights, centers, "numpy")
        yield (
            centers,
            bounds,
            (sums, counts, inertia, sq_dist),
            (plain, labels, plain_sq),
            searcher,
        )
        new = (sums / np.maximum(counts, 1e-300)[:, None]).astype(centers.dtype)
        new[counts == 0] = centers[counts == 0]
        movement = center_movement(centers, new)
        previous, centers = bounds, new


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_bounded_iterations_equal_plain_ones_and_skip_most_rows(dtype):
    rng = np.random.default_rng(1)
    true_centers = rng.uniform(-10, 10, size=(12, 5))
    X = true_centers[rng.integers(0, 12, 4000)] + rng.normal(scale=0.5, size=(4000, 5))
    X = X.astype(dtype)
    weights = rng.uniform(0.5, 2.0, 4000)
    searched = []
    steps = _lloyd_steps(X, weights, X[:12].copy(), 20)
    for _, bounds, (sums, counts, inertia, sq_dist), (plain, labels, plain_sq), searcher in steps:
        assert_array_equal(bounds.labels, labels)
        # Same labels, same kernel, same blocks: bit-identical statistics.
        assert_array_equal(sums, plain.sums)
        assert_array_equal(counts, plain.counts)
        assert inertia == plain.inertia
        assert_array_equal(sq_dist, plain_sq)
        searched.append(searcher.searched)
    assert searched[0] == len(X)
    # Once the centres settle, almost no row needs a search.
    assert searched[-1] < 0.01 * len(X)
    assert sum(searched) < 0.3 * len(searched) * len(X)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("weighted", [False, True])
def test_compiled_bounded_pass_equals_the_block_loop(dtype, weighted):
    """The row searcher's one-call pass: same labels, bounds and sums, bit for bit."""
    from kmeans_dask.backends.numpy_blas import RowSearcher

    rng = np.random.default_rng(3)
    true_centers = rng.uniform(-4, 4, size=(20, 6))
    X = true_centers[rng.integers(0, 20, 9000)] + rng.normal(size=(9000, 6))
    X = X.astype(dtype)
    weights = rng.uniform(0.5, 2.0, len(X)) if weighted else None
    steps = _lloyd_steps(X, weights, X[:20].copy(), 12)
    previous, movement, last_centers = None, None, None
    for centers, bounds, (sums, counts, inertia, sq_dist), _, _ in steps:
        if last_centers is not None:
            movement = center_movement(last_centers, centers)
        compiled = PreparedSearch(RowSearcher(centers), fused_passes=True, runner_up=True)
        assert RowSearcher.fused_passes
        got_sums, got_counts = np.zeros(centers.shape), np.zeros(len(centers))
        got, got_sq, got_inertia = bounded_assign(
            X, weights, centers, compiled, previous, movement, got_sums, got_counts
        )
        assert_array_equal(got.labels, bounds.labels)
        assert_array_equal(got.upper, bounds.upper)
        assert_array_equal(got.lower, bounds.lower)
        assert_array_equal(got_sums, sums)
        assert_array_equal(got_counts, counts)
        assert_array_equal(got_sq, sq_dist)
        assert got_inertia == inertia
        previous = RowBounds(got.labels.copy(), got.upper.copy(), got.lower.copy())
        last_centers = centers


def test_bounds_stay_valid_through_iterations():
    rng = np.random.default_rng(2)
    X = rng.normal(size=(3000, 4))
    for centers, bounds, _, _, _ in _lloyd_steps(X, None, X[:25].copy(), 8):
        distances = _distances(X, centers)
        rows = np.arange(len(X))
        own = distances[rows, bounds.labels]
        others = distances.copy()
        others[rows, bounds.labels] = np.inf
        assert np.all(bounds.upper >= own * (1 - 1e-12))
        assert np.all(bounds.lower <= others.min(axis=1) * (1 + 1e-12))
        # The label is the true nearest centre.
        assert np.all(own <= others.min(axis=1) * (1 + 1e-12))


def test_memo_returns_only_the_matching_tag_once():
    memo = ChunkMemo()

    class Owner:  # stands in for a worker-resident chunk
        pass

    chunk, other = Owner(), Owner()
    state = RowBounds(np.zeros(3, np.int32), np.zeros(3), np.zeros(3))
    memo.put(chunk, ("run", 4), state)
    assert memo.take(other, ("run", 4)) is None
    assert memo.take(chunk, ("other-run", 4)) is None  # a mismatch drops the entry
    memo.put(chunk, ("run", 4), state)
    assert memo.take(chunk, ("run", 3)) is None
    memo.put(chunk, ("run", 4), state)
    assert memo.take(chunk, ("run", 4)) is state
    assert memo.take(chunk, ("run", 4)) is None  # taken, not copied
    memo.put(chunk, ("run", 4), state)
    memo.put(chunk, ("run", 5), state)
    assert len(memo) == 1  # one entry per chunk: the newest
    assert memo.take(chunk, ("run", 4)) is None
    memo.put(chunk, ("run", 5), state)
    del chunk
    gc.collect()
    assert len(memo) == 0  # the entry dies with its chunk


def test_algorithm_needs_a_search_that_gives_bounds():
    assert resolve_algorithm("auto", "numpy") == "settled"
    assert resolve_algorithm("hamerly", "numpy") == "always"
    assert resolve_algorithm("lloyd", "numpy") == "off"
    assert resolve_algorithm("auto", "ivf:nprobe=8") == "off"
    # An approximate search whose exact final pass gives bounds: exact at the close.
    closing = resolve_algorithm("auto", "ivf:nprobe=8", exact="numpy", exact_final=True)
    assert closing == "closing"
    assert resolve_algorithm("auto", "candidates", exact="faiss-cpu", exact_final=True) == "off"
    assert resolve_algorithm("lloyd", "candidates", exact="numpy", exact_final=True) == "off"
    # Without an exact final pass (the default): moved-centre passes from the
    # approximate labels.
    assert resolve_algorithm("auto", "candidates", exact="numpy") == "moved"
    assert resolve_algorithm("auto", "ivf", exact="faiss-cpu", exact_final=False) == "off"
    assert resolve_algorithm("lloyd", "ivf", exact="numpy", exact_final=False) == "off"
    with pytest.raises(ValueError, match=r"algorithm='hamerly' needs .*'ivf:nprobe=8'"):
        resolve_algorithm("hamerly", "ivf:nprobe=8")
    X = np.random.default_rng(0).normal(size=(100, 2))
    for bad, match in [
        ({"algorithm": "elkan"}, r"algorithm='elkan'.*expected one of"),
        ({"algorithm": "hamerly", "backend": "faiss-cpu"}, r"algorithm='hamerly' needs"),
    ]:
        model = KMeans(n_clusters=3, **bad)
        with pytest.raises(ValueError, match=match):
            model.fit(X)
        assert not hasattr(model, "cluster_centers_")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fit_with_bounds_equals_plain_lloyd_and_uses_them(client, blobs, dtype):
    X = blobs[0].astype(dtype)
    init = X[np.random.default_rng(3).choice(len(X), 6, replace=False)]
    fits = {
        algorithm: KMeans(6, init=init, max_iter=40, tol=0.0, algorithm=algorithm).fit(X)
        for algorithm in ("lloyd", "hamerly", "auto")
    }
    plain = fits["lloyd"]
    for bounded in (fits["hamerly"], fits["auto"]):
        assert_array_equal(bounded.labels_, plain.labels_)
        assert_array_equal(bounded.cluster_centers_, plain.cluster_centers_)
        assert bounded.inertia_ == plain.inertia_
        assert bounded.n_iter_ == plain.n_iter_
        assert [r.inertia for r in bounded.history_] == [r.inertia for r in plain.history_]


@pytest.mark.parametrize("max_iter", [1, 20])
@pytest.mark.parametrize("engine", ["tasks", "actors"])
def test_workers_reuse_bounds_and_free_them(blobs, memo_hits, monkeypatch, engine, max_iter):
    # A memo of this test's own (the workers run in this process).
    memo = ChunkMemo()
    monkeypatch.setattr(bounds_module, "MEMO", memo)
    monkeypatch.setattr(tasks_module, "MEMO", memo)
    hits = memo_hits(memo)
    X, y = blobs
    # Start near the blob centres, so the bounds skip most rows from the start.
    init = np.array([X[y == label].mean(axis=0) + 0.3 for label in range(6)])
    with (
        LocalCluster(
            n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None
        ) as cluster,
        Client(cluster),
    ):
        model = KMeans(6, init=init, max_iter=max_iter, tol=0.0, algorithm="hamerly")
        model.set_params(engine=engine).fit(X)
        # Stopped by max_iter, or converged strictly (no final pass).
        assert (model.history_[-1].center_shift == 0) == (max_iter == 20)
        # The first iteration searches everything; every later task finds the
        # bounds its chunk left in the previous one, and so does the final
        # pass, or the labels' hand-over when there is none.
        n_chunks = len(hits) // (model.n_iter_ + 1)
        assert hits == [False] * n_chunks + [True] * (len(hits) - n_chunks)
        assert len(memo) == 0  # freed while the chunks are still alive


def test_empty_clusters_move_to_the_rows_the_pass_reported(client, blobs, monkeypatch):
    """Relocation uses the farthest rows each chunk reports: no extra pass, same result."""
    X = blobs[0]
    # Three centres far from every row: they attract nothing in the first iteration.
    init = np.vstack([X[:3], X[:3] + 1e3])
    searched_again = []
    extra_pass = passes_module.farthest
    monkeypatch.setattr(
        passes_module,
        "farthest",
        lambda *args, **kwargs: searched_again.append(1) or extra_pass(*args, **kwargs),
    )
    model = KMeans(6, init=init, max_iter=30, tol=0.0, engine="tasks").fit(X)
    assert model.history_[0].n_empty == 3
    assert not searched_again
    approximate = KMeans(6, init=init, max_iter=30, tol=0.0, assign="ivf").fit(X)
    assert approximate.history_[0].n_empty == 3
    assert not searched_again  # approximate iterations too: the rows their chunks reported
    reference = SKKMeans(6, init=init, n_init=1, max_iter=30, tol=0.0, algorithm="lloyd").fit(X)
    np.testing.assert_allclose(model.cluster_centers_, reference.cluster_centers_, rtol=1e-10)
    assert model.inertia_ == pytest.approx(reference.inertia_, rel=1e-10)
    assert approximate.inertia_ == pytest.approx(reference.inertia_, rel=1e-2)
