"""The pure mini-batch update behind ``partial_fit`` (kmeans_dask._fit.streaming)."""

from __future__ import annotations

import copy
import math
import re

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from sklearn.cluster import MiniBatchKMeans

from kmeans_dask._fit.streaming import (
    BatchReport,
    StreamState,
    decay_from_half_life,
    init_stream_state,
    minibatch_update,
)

GRID_MEANS = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [10.0, 10.0]])


def _blobs(rng: np.random.RandomState, n: int, means: np.ndarray = GRID_MEANS) -> np.ndarray:
    return means[rng.randint(len(means), size=n)] + rng.normal(size=(n, means.shape[1]))


def _hand_update(state: StreamState, X, w, decay):
    """The documented rule, written out with plain NumPy (no reassignment)."""
    C = state.centers.astype(np.float64)
    d2 = ((X[:, None, :] - C[None, :, :]) ** 2).sum(axis=2)
    labels = d2.argmin(axis=1)
    inertia = float((w * d2[np.arange(len(X)), labels]).sum())
    counts = decay * state.counts
    centers = C.copy()
    for j in range(len(C)):
        mask = labels == j
        m_j = w[mask].sum()
        if m_j > 0:
            s_j = (w[mask, None] * X[mask]).sum(axis=0)
            centers[j] = (counts[j] * C[j] + s_j) / (counts[j] + m_j)
        counts[j] += m_j
    return centers, counts, inertia


# --- decay -------------------------------------------------------------------------------


def test_decay_from_half_life():
    assert decay_from_half_life(1) == 0.5
    assert decay_from_half_life(math.inf) == 1.0
    decay = decay_from_half_life(7.5)
    assert 0 < decay < 1
    assert decay**7.5 == pytest.approx(0.5, rel=1e-12)
    for bad in (0, -1.0, math.nan, "2"):
        with pytest.raises(ValueError, match="half_life_batches"):
            decay_from_half_life(bad)


# --- the update rule ---------------------------------------------------------------------


def test_one_update_matches_hand_computation():
    rng = np.random.RandomState(0)
    X = _blobs(rng, 30, GRID_MEANS[:3])
    w = rng.uniform(0.0, 3.0, size=30)
    state = StreamState(
        centers=np.array([[0.5, 0.5], [9.0, 1.0], [0.0, 9.0], [40.0, 40.0]]),
        counts=np.array([2.0, 0.5, 4.0, 3.0]),
        n_batches=4,
        n_seen=12.0,
    )
    decay = 0.7
    expected_centers, expected_counts, expected_inertia = _hand_update(state, X, w, decay)

    new, report = minibatch_update(
        state, X, w, decay=decay, reassignment_ratio=0.0, random_state=np.random.RandomState(0)
    )

    assert_allclose(new.centers, expected_centers, rtol=1e-12)
    assert_allclose(new.counts, expected_counts, rtol=1e-12)
    # The far centre got no weight: same position, decayed count.
    assert_array_equal(new.centers[3], state.centers[3])
    assert new.counts[3] == pytest.approx(decay * 3.0)
    assert report == BatchReport(
        inertia=pytest.approx(expected_inertia, rel=1e-12),
        n_reassigned=0,
        batch_weight=pytest.approx(w.sum()),
    )
    assert new.n_batches == 5
    assert new.n_seen == pytest.approx(12.0 + w.sum())


def test_weight_two_equals_duplicated_rows():
    rng = np.random.RandomState(1)
    X = _blobs(rng, 25)
    w = rng.randint(0, 4, size=25).astype(float)  # 0 (dropped) to 3 copies
    state = StreamState(
        centers=GRID_MEANS + 0.3, counts=np.array([5.0, 1.0, 2.0, 7.0]), n_batches=2
    )
    kwargs = {"decay": 0.9, "reassignment_ratio": 0.0}

    weighted, weighted_report = minibatch_update(
        state, X, w, random_state=np.random.RandomState(0), **kwargs
    )
    duplicated, duplicated_report = minibatch_update(
        state,
        np.repeat(X, w.astype(int), axis=0),
        None,
        random_state=np.random.RandomState(0),
        **kwargs,
    )

    assert_allclose(weighted.centers, duplicated.centers, rtol=1e-12)
    assert_allclose(weighted.counts, duplicated.counts, rtol=1e-12)
    assert weighted_report.inertia == pytest.approx(duplicated_report.inertia, rel=1e-12)
    assert weighted_report.batch_weight == duplicated_report.batch_weight == w.sum()
    assert weighted.n_seen == duplicated.n_seen


def test_float32_stays_float32():
    rng = np.random.RandomState(2)
    X = _blobs(rng, 40).astype(np.float32)
    state, _ = init_stream_state(X, None, 4, random_state=np.random.RandomState(0))
    assert state.centers.dtype == np.float32
    assert state.counts.dtype == np.float64
    new, _ = minibatch_update(
        state, X.astype(np.float64), None, random_state=np.random.RandomState(0)
    )
    assert new.centers.dtype == np.float32


# --- agreement with scikit-learn ---------------------------------------------------------


@pytest.mark.parametrize("weighted", [False, True], ids=["unit", "weighted"])
def test_matches_sklearn_partial_fit_without_reassignment(weighted):
    """decay=1, reassignment off: the same centres and counts as MiniBatchKMeans, batch by batch.

    Agreement is to rounding only: the per-cluster sums are accumulated in a
    different order, so centres agree to ~1e-14 rather than bit for bit.
    """
    rng = np.random.RandomState(3)
    n, k = 50, 5
    means = rng.normal(scale=8.0, size=(k, 3))
    batches = [_blobs(rng, n, means) for _ in range(8)]
    weights = [rng.uniform(0.1, 3.0, size=n) if weighted else None for _ in batches]
    C0 = batches[0][:k].copy()
    reference = MiniBatchKMeans(
        n_clusters=k, init=C0, n_init=1, reassignment_ratio=0.0, batch_size=n, random_state=0
    )
    ours = np.random.RandomState(0)

    state = None
    for X, w in zip(batches, weights, strict=True):
        reference.partial_fit(X, sample_weight=w)
        if state is None:
            state, _ = init_stream_state(X, w, k, init=C0, random_state=ours)
        else:
            state, _ = minibatch_update(state, X, w, reassignment_ratio=0.0, random_state=ours)
        assert_allclose(state.centers, reference.cluster_centers_, rtol=1e-12, atol=1e-12)
        assert_allclose(state.counts, reference._counts, rtol=1e-12)


@pytest.mark.parametrize("weight", [None, 2.0], ids=["unit", "equal-weights"])
def test_matches_sklearn_partial_fit_with_reassignment(weight):
    """With the default reassignment_ratio and equal-size batches, a dying centre is
    reassigned at the same batch, onto the same row, as by MiniBatchKMeans (same random
    stream). The first batch gives every centre some weight, because scikit-learn would
    reassign centres left empty by it and this module does not (see its docstring)."""
    rng = np.random.RandomState(3)
    n, k = 40, 5
    batches = [_blobs(rng, n) for _ in range(12)]
    batches[0][0] = [50.0, 50.0]  # a lone outlier, only in the first batch
    C0 = np.vstack([GRID_MEANS + 0.5, [[50.0, 50.0]]])
    weights = None if weight is None else np.full(n, weight)
    reference = MiniBatchKMeans(n_clusters=k, init=C0, n_init=1, batch_size=n, random_state=7)
    ours = np.random.RandomState(7)

    state, n_reassigned = None, 0
    for X in batches:
        reference.partial_fit(X, sample_weight=weights)
        if state is None:
            state, report = init_stream_state(X, weights, k, init=C0, random_state=ours)
        else:
            state, report = minibatch_update(state, X, weights, random_state=ours)
        n_reassigned += report.n_reassigned
        assert_allclose(state.centers, reference.cluster_centers_, rtol=1e-12, atol=1e-12)
        assert_allclose(state.counts, reference._counts, rtol=1e-12)
    assert n_reassigned == 1


@pytest.mark.parametrize("init", ["k-means++", "random"])
@pytest.mark.parametrize("weighted", [False, True], ids=["unit", "weighted"])
def test_init_matches_sklearn_first_partial_fit(init, weighted):
    rng = np.random.RandomState(4)
    X = _blobs(rng, 60)
    w = rng.uniform(0.1, 2.0, size=60) if weighted else None
    reference = MiniBatchKMeans(
        n_clusters=4, init=init, n_init=1, reassignment_ratio=0.0, batch_size=60, random_state=5
    ).partial_fit(X, sample_weight=w)

    state, report = init_stream_state(X, w, 4, init=init, random_state=np.random.RandomState(5))

    assert_allclose(state.centers, reference.cluster_centers_, rtol=1e-12, atol=1e-12)
    assert_allclose(state.counts, reference._counts, rtol=1e-12)
    assert state.n_batches == 1
    assert report.batch_weight == pytest.approx(60.0 if w is None else w.sum())


def test_first_batch_never_reassigns_unlike_sklearn():
    """A centre that gets nothing from the first batch stays put (count 0) and is moved at
    the second batch; scikit-learn moves it during the first partial_fit already."""
    rng = np.random.RandomState(5)
    first, second = _blobs(rng, 40), _blobs(rng, 40)
    C0 = np.vstack([GRID_MEANS, [[100.0, 100.0]]])

    state, report = init_stream_state(first, None, 5, init=C0, random_state=rng)
    assert report.n_reassigned == 0
    assert_array_equal(state.centers[4], C0[4])
    assert state.counts[4] == 0

    state, report = minibatch_update(state, second, None, random_state=rng)
    assert report.n_reassigned == 1
    assert any(np.array_equal(state.centers[4], row) for row in second)

    reference = MiniBatchKMeans(n_clusters=5, init=C0, n_init=1, batch_size=40, random_state=0)
    reference.partial_fit(first)
    assert not np.array_equal(reference.cluster_centers_[4], C0[4])


# --- forgetting and reassignment ---------------------------------------------------------


def test_decay_forgets_a_shifted_distribution():
    rng = np.random.RandomState(6)
    before = [_blobs(rng, 40, GRID_MEANS[:2]) for _ in range(20)]
    shifted_means = GRID_MEANS[:2] + np.array([0.0, 5.0])
    after = [_blobs(rng, 40, shifted_means) for _ in range(5)]
    C0 = GRID_MEANS[:2] + 0.5

    def error_after_stream(decay: float) -> float:
        rs = np.random.RandomState(0)
        state, _ = init_stream_state(before[0], None, 2, init=C0, random_state=rs)
        for X in before[1:] + after:
            state, _ = minibatch_update(state, X, None, decay=decay, random_state=rs)
        order = np.argsort(state.centers[:, 0])
        return float(np.abs(state.centers[order] - shifted_means).max())

    remembering = error_after_stream(1.0)
    forgetting = error_after_stream(decay_from_half_life(1.0))
    assert remembering > 2.5  # 20 old batches against 5 new ones: still near the old means
    assert forgetting < 1.0
    assert forgetting < remembering


def _state_with_dead_centre() -> StreamState:
    return StreamState(
        centers=np.array([[0.0, 0.0], [10.0, 0.0], [500.0, 500.0]]),
        counts=np.array([50.0, 40.0, 0.1]),
        n_batches=3,
        n_seen=90.1,
    )


def test_reassignment_moves_dead_centre_onto_data():
    rng = np.random.RandomState(7)
    X = _blobs(rng, 40, GRID_MEANS[:2])  # 40 rows >= 10 * n_clusters: the check is due
    state = _state_with_dead_centre()

    new, report = minibatch_update(state, X, None, random_state=np.random.RandomState(0))

    assert report.n_reassigned == 1
    assert any(np.array_equal(new.centers[2], row) for row in X)
    assert new.counts[2] == new.counts[:2].min()
    assert_allclose(new.centers[:2], _hand_update(state, X, np.ones(40), 1.0)[0][:2])
    # An update with reassignment disabled leaves the dead centre where it was.
    kept, report = minibatch_update(
        state, X, None, reassignment_ratio=0.0, random_state=np.random.RandomState(0)
    )
    assert report.n_reassigned == 0
    assert_array_equal(kept.centers[2], state.centers[2])


@pytest.mark.parametrize("seed", range(5))
def test_reassignment_never_draws_zero_weight_rows(seed):
    rng = np.random.RandomState(seed)
    X = _blobs(rng, 40, GRID_MEANS[:2])
    w = np.zeros(40)
    w[::8] = rng.uniform(0.5, 2.0, size=5)
    new, report = minibatch_update(
        _state_with_dead_centre(), X, w, random_state=np.random.RandomState(seed)
    )
    assert report.n_reassigned == 1
    (chosen,) = [i for i, row in enumerate(X) if np.array_equal(new.centers[2], row)]
    assert w[chosen] > 0


def test_reassignment_follows_sklearn_cadence():
    """With no zero count, the check runs once 10 * n_clusters rows have been seen."""
    rng = np.random.RandomState(8)
    state, rs = _state_with_dead_centre(), np.random.RandomState(0)
    reassigned = []
    for _ in range(4):  # 4 batches of 10 rows; the check is due at the third (30 rows)
        state, report = minibatch_update(
            state, _blobs(rng, 10, GRID_MEANS[:2]), None, random_state=rs
        )
        reassigned.append(report.n_reassigned)
    assert reassigned == [0, 0, 1, 0]


# --- immutability and errors -------------------------------------------------------------


def test_input_state_is_not_mutated():
    rng = np.random.RandomState(9)
    X = _blobs(rng, 40, GRID_MEANS[:2])
    state = _state_with_dead_centre()
    saved = copy.deepcopy(state)

    new, report = minibatch_update(state, X, None, decay=0.5, random_state=rng)

    assert report.n_reassigned == 1
    assert_array_equal(state.centers, saved.centers)
    assert_array_equal(state.counts, saved.counts)
    assert (state.n_batches, state.n_seen) == (saved.n_batches, saved.n_seen)
    assert not np.shares_memory(new.centers, state.centers)
    assert not np.shares_memory(new.counts, state.counts)


@pytest.mark.parametrize(
    ("batch", "weights", "kwargs", "message"),
    [
        ([[0.0, np.nan]] * 40, None, {}, "non-finite"),
        ([[0.0, 0.0, 0.0]] * 40, None, {}, "3 features, but the model has 2"),
        (np.zeros((0, 2)), None, {}, "0 rows"),
        ([[0.0, 0.0]] * 40, [1.0] * 39 + [-1.0], {}, "negative or non-finite"),
        ([[0.0, 0.0]] * 40, [1.0] * 3, {}, "weights has shape"),
        ([[0.0, 0.0]] * 40, None, {"decay": 0.0}, "decay"),
        ([[0.0, 0.0]] * 40, None, {"decay": 1.5}, "decay"),
        ([[0.0, 0.0]] * 40, None, {"reassignment_ratio": -0.1}, "reassignment_ratio"),
    ],
    ids=[
        "nan",
        "features",
        "empty",
        "negative-weight",
        "weight-shape",
        "decay-0",
        "decay>1",
        "ratio",
    ],
)
def test_rejected_batch_leaves_state_and_rng_untouched(batch, weights, kwargs, message):
    state = _state_with_dead_centre()
    saved = copy.deepcopy(state)
    rs = np.random.RandomState(0)
    rng_before = rs.get_state()[1].copy()

    with pytest.raises(ValueError, match=message):
        minibatch_update(state, np.asarray(batch), weights, random_state=rs, **kwargs)

    assert_array_equal(state.centers, saved.centers)
    assert_array_equal(state.counts, saved.counts)
    assert_array_equal(rs.get_state()[1], rng_before)


def test_random_state_must_be_a_randomstate():
    with pytest.raises(TypeError, match="RandomState"):
        minibatch_update(_state_with_dead_centre(), np.zeros((4, 2)), None, random_state=0)


def test_first_batch_smaller_than_n_clusters():
    message = "first batch has 5 rows; partial_fit needs at least n_clusters=8 rows to initialise"
    with pytest.raises(ValueError, match=re.escape(message)):
        init_stream_state(np.zeros((5, 2)), None, 8, random_state=np.random.RandomState(0))


def test_init_rejects_unknown_method_and_bad_array():
    X = _blobs(np.random.RandomState(10), 20)
    with pytest.raises(ValueError, match=re.escape("init='k-means||'")):
        init_stream_state(X, None, 4, init="k-means||", random_state=np.random.RandomState(0))
    with pytest.raises(ValueError, match="init array has shape"):
        init_stream_state(X, None, 4, init=np.zeros((3, 2)), random_state=np.random.RandomState(0))
