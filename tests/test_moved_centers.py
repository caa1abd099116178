"""Passes after an exact one search each row among the centres that moved since."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from numpy.testing import assert_array_equal
from sklearn.datasets import make_blobs

import kmeans_dask._fit.lloyd as lloyd
import kmeans_dask._fit.passes as passes_module
from kmeans_dask import KMeans
from kmeans_dask._kernels.row_statistics import aligned_float64
from kmeans_dask._worker import tasks
from kmeans_dask._worker.chunks import Chunk
from kmeans_dask._worker.host_ops import host_ops
from kmeans_dask._worker.moved_centers import nearest_after_moves
from kmeans_dask._worker.searchers import prepared_search
from kmeans_dask._worker.staged_ops import StagedOps


def _exact(rows: np.ndarray, centers: np.ndarray) -> np.ndarray:
    """Brute force in float64, ties to the lowest index."""
    rows, centers = rows.astype(np.float64), centers.astype(np.float64)
    return np.argmin(((rows[:, None, :] - centers[None]) ** 2).sum(-1), axis=1).astype(np.int32)


def _after_moves(rows, before, after, search, moved, labels):
    """:func:`nearest_after_moves` from ``before`` to ``after``, with the searcher over all
    of ``after`` prepared; the rows that searcher was asked about."""
    everywhere = prepared_search(search, after.astype(rows.dtype)).searcher
    asked = []
    spy = SimpleNamespace(
        block_rows=everywhere.block_rows,
        nearest=lambda block: asked.append(len(block)) or everywhere.nearest(block),
    )
    moved = np.asarray(moved)
    moved_from = before[moved]
    nearest_after_moves(
        rows, spy, after, aligned_float64(after), search, moved, moved_from, labels
    )
    return sum(asked)


@pytest.fixture
def rows_and_centers():
    rng = np.random.default_rng(11)
    centers = rng.standard_normal((96, 7)).astype(np.float32)
    rows = centers[rng.integers(0, 96, 3000)] + 0.4 * rng.standard_normal((3000, 7))
    return rows.astype(np.float32), centers


@pytest.mark.parametrize("share", [0.0, 0.05, 0.2, 0.5, 1.0])
@pytest.mark.parametrize(("search", "dtype"), [("numpy", np.float32), ("numpy", np.float64),
                                               ("faiss-cpu", np.float32)])  # fmt: skip
def test_rows_find_their_nearest_centre_among_the_moved_ones(
    rows_and_centers, share, search, dtype
):
    if search == "faiss-cpu":
        pytest.importorskip("faiss")
    rows, centers = (array.astype(dtype) for array in rows_and_centers)
    rng = np.random.default_rng(int(share * 100))
    moved = np.sort(rng.choice(len(centers), int(share * len(centers)), replace=False))
    after = centers.copy()
    after[moved] += (0.6 * rng.standard_normal((moved.size, centers.shape[1]))).astype(dtype)
    labels = _exact(rows, centers)
    before = labels.copy()
    _after_moves(rows, centers, after, search, moved, labels)
    assert_array_equal(labels, _exact(rows, after))
    changed = labels != before
    assert changed.any() == (share > 0)
    # A row changes centre only to a moved one, or from one.
    assert np.all(np.isin(labels[changed], moved) | np.isin(before[changed], moved))


def test_a_tie_between_a_moved_centre_and_the_own_one_goes_to_the_lower_index():
    rows = np.array([[0.0, 0.0], [0.0, 0.0]], dtype=np.float32)
    # Row 0 sits on centre 2; centre 0 moves onto it too. Row 1 sits on centre
    # 0; centre 2 moves onto it: both rows end with centre 0.
    centers = np.array([[5.0, 5.0], [9.0, 9.0], [0.0, 0.0]], dtype=np.float32)
    after = centers.copy()
    after[0] = 0.0
    labels = np.array([2, 0], dtype=np.int32)
    _after_moves(rows, centers, after, "numpy", np.array([0, 2]), labels)
    assert_array_equal(labels, [0, 0])
    labels = np.array([2, 2], dtype=np.int32)
    _after_moves(rows, centers, after, "numpy", np.array([0]), labels)
    assert_array_equal(labels, [0, 0])


def test_no_moved_centre_leaves_every_label(rows_and_centers):
    rows, centers = rows_and_centers
    labels = _exact(rows, centers)
    kept = labels.copy()
    empty = np.array([], dtype=np.int32)
    assert _after_moves(rows, centers, centers, "numpy", empty, labels) == 0
    assert_array_equal(labels, kept)


def test_only_rows_whose_centre_moved_away_are_searched_among_all_centres(rows_and_centers):
    """A row whose centre moved nearer to it is searched among the moved centres alone:
    every centre that did not move is at least as far as its own was."""
    rows, centers = rows_and_centers
    rng = np.random.default_rng(5)
    moved = np.sort(rng.choice(len(centers), 30, replace=False)).astype(np.int32)
    after = centers.copy()
    after[moved] += (0.3 * rng.standard_normal((moved.size, centers.shape[1]))).astype(np.float32)
    labels = _exact(rows, centers)
    own = labels.copy()
    searched = _after_moves(rows, centers, after, "numpy", moved[::-1], labels)  # any order
    assert_array_equal(labels, _exact(rows, after))
    own_moved = np.isin(own, moved)
    sq = lambda c: ((rows.astype(np.float64) - c[own].astype(np.float64)) ** 2).sum(1)  # noqa: E731
    away = own_moved & (sq(after) >= sq(centers))
    assert searched == away.sum()
    assert 0 < away.sum() < own_moved.sum()  # some moved nearer, some away


# --- the chunk task ---------------------------------------------------------------


def test_task_from_kept_labels_equals_the_plain_pass(rows_and_centers):
    rows, centers = rows_and_centers
    chunk = host_ops().place(rows, None, 0, np.float32)
    tasks.stats_keeping_labels(chunk, centers, "numpy", None, "previous")
    moved = np.array([3, 17, 40], dtype=np.int32)
    after = centers.copy()
    after[moved] += np.float32(0.3)
    stats = tasks.stats_from_moved_centers(
        chunk, after, "numpy", "new", "previous", moved, centers[moved]
    )
    plain = tasks.chunk_stats(chunk, after, "numpy")
    assert_array_equal(tasks.LABELS.take(chunk, "new"), _exact(rows, after))
    assert_array_equal(stats.sums, plain.sums)
    assert_array_equal(stats.counts, plain.counts)
    assert stats.inertia == plain.inertia  # summed over the same blocks


def test_task_without_kept_labels_makes_the_plain_pass(rows_and_centers):
    """Labels lost with a worker: a full search, the same result."""
    rows, centers = rows_and_centers
    chunk = host_ops().place(rows, None, 0, np.float32)
    moved = np.array([5], dtype=np.int32)
    stats = tasks.stats_from_moved_centers(
        chunk, centers, "numpy", "new", "lost", moved, centers[moved]
    )
    plain = tasks.chunk_stats(chunk, centers, "numpy")
    assert_array_equal(stats.sums, plain.sums)
    assert tasks.LABELS.take(chunk, "new") is not None  # kept for the next pass


def test_ops_that_scan_no_candidates_refuse_the_pass(rows_and_centers):
    rows, centers = rows_and_centers
    staged = Chunk(rows, None, 0, StagedOps(host_ops()))
    with pytest.raises(NotImplementedError, match="scans no candidates"):
        staged.ops.moved_centers_pass(
            staged, centers, "numpy", np.array([1]), centers[[1]], np.zeros(3000)
        )


# --- fits ---------------------------------------------------------------------------


@pytest.fixture
def many_blobs():
    X, _ = make_blobs(n_samples=12_000, n_features=8, centers=150, random_state=2)
    X = X.astype(np.float32)
    return X, X[np.random.default_rng(2).choice(len(X), 128, replace=False)]


def _record(monkeypatch, names):
    """The calls, in order, of the ``passes`` functions ``names``; a pass from kept
    labels is recorded by its task's name (``stats_from_candidates``,
    ``stats_from_moved_centers``)."""
    calls = []
    for name in names:
        if name.startswith("stats_from_"):
            continue
        original = getattr(passes_module, name)

        def recording(*args, name=name, original=original, **kwargs):
            calls.append(name)
            return original(*args, **kwargs)

        monkeypatch.setattr(passes_module, name, recording)
    from_kept_labels = passes_module.statistics_from_kept_labels

    def recording_task(client, data, task, *args, **options):
        if task.__name__ in names:
            calls.append(task.__name__)
        return from_kept_labels(client, data, task, *args, **options)

    monkeypatch.setattr(passes_module, "statistics_from_kept_labels", recording_task)
    return calls


@pytest.mark.parametrize("engine", ["tasks", "actors"])
def test_exact_fits_search_moved_centres_with_the_result_of_plain_lloyd(
    client, many_blobs, monkeypatch, engine
):
    X, init = many_blobs
    plain = KMeans(128, init=init, max_iter=30, tol=0, algorithm="lloyd", engine=engine).fit(X)
    calls = _record(monkeypatch, ["search_statistics", "stats_from_moved_centers"])
    fit = KMeans(128, init=init, max_iter=30, tol=0, engine=engine).fit(X)
    assert "stats_from_moved_centers" in calls
    assert_array_equal(fit.cluster_centers_, plain.cluster_centers_)
    assert_array_equal(fit.labels_, plain.labels_)
    assert fit.inertia_ == plain.inertia_
    assert fit.n_iter_ == plain.n_iter_
    assert [r.inertia for r in fit.history_] == [r.inertia for r in plain.history_]


@pytest.mark.parametrize("settled", [True, False])
def test_a_fit_ended_by_tol_searches_no_row_of_an_unmoved_centre_in_its_final_pass(
    client, many_blobs, monkeypatch, settled
):
    """Hamerly bounds skip rows in the final pass where the centres settled;
    where they did not, the rows search among the moved centres."""
    X, init = many_blobs
    plain = KMeans(128, init=init, max_iter=100, tol=1e-3, algorithm="lloyd").fit(X)
    assert plain.history_[-1].center_shift > 0  # a final pass is needed
    if not settled:  # the centres never count as settled: no bounds
        monkeypatch.setattr(lloyd.BoundsSchedule, "ticket", lambda *args, **kwargs: None)
    finals = []
    original = passes_module.final_pass
    monkeypatch.setattr(
        passes_module, "final_pass", lambda *args: finals.append(args[-1]) or original(*args)
    )
    calls = _record(monkeypatch, ["stats_from_moved_centers"])
    fit = KMeans(128, init=init, max_iter=100, tol=1e-3).fit(X)
    if settled:
        assert len(finals) == 1 and finals[0] is not None  # with the bounds
    else:
        assert finals == [] and calls[-1] == "stats_from_moved_centers"
    assert_array_equal(fit.labels_, plain.labels_)
    assert_array_equal(fit.labels_, fit.predict(X))
    assert fit.inertia_ == pytest.approx(plain.inertia_, rel=1e-12)


def test_few_centres_or_many_moved_make_a_full_search():
    assert lloyd.few_moved(np.arange(32), 128)
    assert not lloyd.few_moved(np.arange(33), 128)  # more than a quarter
    assert not lloyd.few_moved(np.arange(1), 64)  # gathering the rows costs a search
    assert not lloyd.few_moved(None, 1024)  # the call's first iteration
    assert lloyd.few_moved(np.arange(512), 1024)  # up to half from k = 1024
    assert not lloyd.few_moved(np.arange(513), 1024)


def test_approximate_fits_end_with_exact_iterations_and_final_labels(
    client, many_blobs, monkeypatch
):
    """With exact final labels, the iteration max_iter ends searches exactly; the final
    pass, among the moved centres."""
    X, init = many_blobs
    calls = _record(
        monkeypatch,
        ["search_statistics", "stats_from_candidates", "stats_from_moved_centers", "final_pass"],
    )
    exact_final = {"exact_final": True}
    fit = KMeans(
        128, init=init, max_iter=8, tol=0, assign="candidates", assign_options=exact_final
    ).fit(X)
    assert calls[0] == "search_statistics"  # IVF from the initial centres
    assert "final_pass" not in calls
    assert calls[-1] == "stats_from_moved_centers"
    assert_array_equal(fit.labels_, fit.predict(X))
    exact = KMeans(128, init=init, max_iter=8, tol=0).fit(X)
    assert fit.inertia_ <= 1.01 * exact.inertia_


def test_algorithm_lloyd_searches_every_row(client, many_blobs, monkeypatch):
    X, init = many_blobs
    calls = _record(monkeypatch, ["stats_from_moved_centers", "stats_from_candidates"])
    KMeans(128, init=init, max_iter=8, tol=0, algorithm="lloyd").fit(X)
    KMeans(128, init=init, max_iter=8, tol=0, assign="candidates", algorithm="lloyd").fit(X)
    assert "stats_from_moved_centers" not in calls
    assert "stats_from_candidates" in calls  # the approximate iterations throughout
