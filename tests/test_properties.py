"""Property tests (Hypothesis) of the Lloyd loop, chunking, weights, streaming and k-means||.

Hypothesis draws only shapes, seeds and parameters; the arrays are built with
NumPy from a drawn seed, which keeps every example small and cheap. All runs
are deterministic (``derandomize=True``) and use the session's two-worker
``LocalCluster`` through the ``client`` fixture.

Properties
----------
* The weighted inertia never increases from one Lloyd iteration to the next
  (``history_``), and the final ``inertia_`` is at most the last recorded one,
  also when empty clusters are relocated.
* With a seed, the result does not depend on how the rows are chunked; with
  an explicit ``init`` array, it does not depend on the *order* of the row
  blocks either (random draws are keyed on global row indices, so the
  permutation property needs an initialisation that does not draw).
* ``sample_weight=2`` on a row is the same as the row appearing twice.
* One ``partial_fit`` batch applies exactly the documented mini-batch rule
  (:mod:`kmeans_dask._fit.streaming`) to the previous centres and counts.
* k-means|| returns ``n_clusters`` distinct centres whenever the data has at
  least ``n_clusters`` distinct points, however many rows repeat them.
"""

from __future__ import annotations

import itertools
import warnings
from unittest import mock

import dask.array as da
import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, assume, given, settings
from hypothesis import strategies as st
from numpy.testing import assert_allclose, assert_array_equal
from sklearn.exceptions import ConvergenceWarning

import kmeans_dask._fit.cluster_fit as cluster_fit
from kmeans_dask import KMeans

#: Shared by every property: reproducible, no deadline (a fit takes ~0.1-1 s on
#: a 2-core machine), and the function-scoped ``client`` fixture is fine because
#: it is only a handle on the session cluster.
BASE_SETTINGS = settings(
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)

SEEDS = st.integers(0, 2**32 - 1)

#: Relative float tolerance of comparisons, per data dtype.
REL_TOL = {np.float64: 1e-9, np.float32: 1e-5}


def _settings(max_examples: int, **kwargs) -> settings:
    return settings(BASE_SETTINGS, max_examples=max_examples, **kwargs)


def _blobs(seed: int, n_samples: int, n_features: int, n_centers: int = 4):
    """Gaussian blobs (float64) and the generator that made them, for further draws."""
    rng = np.random.default_rng(seed)
    centers = rng.uniform(-10, 10, size=(n_centers, n_features))
    labels = rng.integers(0, n_centers, n_samples)
    X = centers[labels] + rng.normal(size=(n_samples, n_features))
    return X, rng


def _random_init(rng: np.random.Generator, X: np.ndarray, n_clusters: int) -> np.ndarray:
    """Centres drawn uniformly in the bounding box of X (some may attract no row)."""
    return rng.uniform(X.min(axis=0), X.max(axis=0), size=(n_clusters, X.shape[1]))


@st.composite
def chunked_rows(draw, min_rows: int, max_rows: int, max_chunks: int = 5):
    """A number of rows and a row chunking of them: ``(n_rows, chunk_sizes)``."""
    n_rows = draw(st.integers(min_rows, max_rows))
    cuts = draw(
        st.lists(st.integers(1, n_rows - 1), max_size=max_chunks - 1, unique=True).map(sorted)
    )
    bounds = [0, *cuts, n_rows]
    return n_rows, tuple(int(b - a) for a, b in itertools.pairwise(bounds))


def _labels(model: KMeans) -> np.ndarray:
    labels = model.labels_
    return np.asarray(labels.compute() if isinstance(labels, da.Array) else labels)


# --- Lloyd: the inertia never increases --------------------------------------------------


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@_settings(25)
@given(
    seed=SEEDS,
    n_samples=st.integers(20, 400),
    n_features=st.integers(1, 6),
    n_clusters=st.integers(1, 8),
    max_iter=st.integers(1, 8),
    dtype=st.sampled_from([np.float64, np.float32]),
    weighted=st.booleans(),
    as_dask=st.booleans(),
)
def test_inertia_never_increases_across_lloyd_iterations(
    client, seed, n_samples, n_features, n_clusters, max_iter, dtype, weighted, as_dask
):
    X, rng = _blobs(seed, n_samples, n_features)
    init = _random_init(rng, X, n_clusters)
    weights = None
    if weighted:  # including rows of weight 0
        weights = rng.uniform(0, 3, n_samples) * (rng.random(n_samples) > 0.1)
        weights[0] = 1.0  # at least one row counts
    X = X.astype(dtype)
    data = da.from_array(X, chunks=(max(1, n_samples // 3), n_features)) if as_dask else X

    model = KMeans(n_clusters, init=init, tol=0.0, max_iter=max_iter).fit(
        data, sample_weight=weights
    )

    rel = REL_TOL[dtype]
    inertias = [record.inertia for record in model.history_]
    assert len(inertias) == model.n_iter_ >= 1
    for iteration, (before, after) in enumerate(itertools.pairwise(inertias), start=2):
        assert after <= before + rel * abs(before) + 1e-12, (iteration, inertias)
    assert model.inertia_ <= inertias[-1] + rel * abs(inertias[-1]) + 1e-12, (
        model.inertia_,
        inertias,
    )


# --- chunking and block order ------------------------------------------------------------


@_settings(12)
@given(
    rows=chunked_rows(60, 500),
    seed=SEEDS,
    n_features=st.integers(1, 5),
    n_clusters=st.integers(2, 6),
    init=st.sampled_from(["k-means||", "k-means++", "random"]),
    random_state=st.integers(0, 2**31 - 1),
)
def test_seeded_result_invariant_to_row_chunking(
    client, rows, seed, n_features, n_clusters, init, random_state
):
    n_samples, chunks = rows
    X, _ = _blobs(seed, n_samples, n_features)
    params = dict(init=init, random_state=random_state, tol=0.0, max_iter=30)

    reference = KMeans(n_clusters, **params).fit(X)  # NumPy input: the package's own chunking
    model = KMeans(n_clusters, **params).fit(da.from_array(X, chunks=(chunks, n_features)))

    assert_array_equal(_labels(model), _labels(reference))
    assert_allclose(model.cluster_centers_, reference.cluster_centers_, rtol=1e-9, atol=1e-9)
    assert model.inertia_ == pytest.approx(reference.inertia_, rel=1e-9)
    assert model.n_iter_ == reference.n_iter_


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@_settings(15)
@given(
    rows=chunked_rows(40, 500),
    seed=SEEDS,
    n_features=st.integers(1, 5),
    n_clusters=st.integers(1, 6),
    order_seed=SEEDS,
)
def test_explicit_init_result_invariant_to_block_order(
    client, rows, seed, n_features, n_clusters, order_seed
):
    n_samples, chunks = rows
    X, rng = _blobs(seed, n_samples, n_features)
    init = _random_init(rng, X, n_clusters)
    bounds = np.cumsum((0, *chunks))
    order = np.random.default_rng(order_seed).permutation(len(chunks))
    index = np.concatenate([np.arange(bounds[b], bounds[b + 1]) for b in order])
    permuted_chunks = tuple(chunks[b] for b in order)

    params = dict(init=init, tol=0.0, max_iter=30)
    model = KMeans(n_clusters, **params).fit(da.from_array(X, chunks=(chunks, n_features)))
    permuted = KMeans(n_clusters, **params).fit(
        da.from_array(X[index], chunks=(permuted_chunks, n_features))
    )

    labels = np.empty(n_samples, dtype=np.int32)
    labels[index] = _labels(permuted)  # row index[j] of X is row j of the permuted data
    assert_array_equal(labels, _labels(model))
    assert_allclose(permuted.cluster_centers_, model.cluster_centers_, rtol=1e-9, atol=1e-9)
    assert permuted.inertia_ == pytest.approx(model.inertia_, rel=1e-9)
    assert permuted.n_iter_ == model.n_iter_


# --- sample weights ----------------------------------------------------------------------


@_settings(20)
@given(
    seed=SEEDS,
    n_samples=st.integers(20, 300),
    n_features=st.integers(1, 5),
    n_clusters=st.integers(1, 6),
    as_dask=st.booleans(),
)
def test_weight_two_equals_duplicated_rows(
    client, seed, n_samples, n_features, n_clusters, as_dask
):
    X, rng = _blobs(seed, n_samples, n_features)
    twice = rng.random(n_samples) < rng.uniform(0.1, 0.9)
    weights = np.where(twice, 2.0, 1.0)
    X_dup = np.concatenate([X, X[twice]])
    # Distinct rows as initial centres: the initialisation draws nothing.
    init = X[rng.choice(n_samples, n_clusters, replace=False)]

    def fit(data, sample_weight=None):
        if as_dask:
            data = da.from_array(data, chunks=(max(1, len(data) // 3), n_features))
        return KMeans(n_clusters, init=init, tol=0.0, max_iter=30).fit(
            data, sample_weight=sample_weight
        )

    weighted, duplicated = fit(X, weights), fit(X_dup)

    # Relocating an empty cluster moves the farthest *row*: a row of weight 2
    # moves whole, a duplicated row moves one copy. The two then differ by
    # design (as in scikit-learn), so such examples are not this property's.
    assume(not any(r.n_empty for r in (*weighted.history_, *duplicated.history_)))
    assert_allclose(weighted.cluster_centers_, duplicated.cluster_centers_, rtol=1e-9, atol=1e-9)
    assert weighted.inertia_ == pytest.approx(duplicated.inertia_, rel=1e-9)
    assert weighted.n_iter_ == duplicated.n_iter_
    assert_allclose(weighted.cluster_weights_, duplicated.cluster_weights_, rtol=1e-12)
    assert_array_equal(_labels(duplicated)[:n_samples], _labels(weighted))


# --- partial_fit: the documented mini-batch rule -----------------------------------------


def _minibatch_by_hand(centers, counts, batch, weights, decay):
    """The rule of :mod:`kmeans_dask._fit.streaming`, in plain float64 NumPy."""
    centers = centers.astype(np.float64)
    n_clusters = centers.shape[0]
    sq_dist = ((batch[:, None, :] - centers[None, :, :]) ** 2).sum(axis=2)
    labels = sq_dist.argmin(axis=1)
    w = np.ones(len(batch)) if weights is None else weights
    batch_weight = np.bincount(labels, weights=w, minlength=n_clusters)
    sums = np.zeros_like(centers)
    np.add.at(sums, labels, w[:, None] * batch)
    new_counts = decay * counts + batch_weight
    new_centers = centers.copy()
    hit = batch_weight > 0
    new_centers[hit] = (decay * counts[hit, None] * centers[hit] + sums[hit]) / new_counts[
        hit, None
    ]
    return new_centers, new_counts


@_settings(25)
@given(
    seed=SEEDS,
    n_features=st.integers(1, 5),
    n_clusters=st.integers(1, 6),
    n_batches=st.integers(1, 4),
    decay=st.sampled_from([1.0, 0.9, 0.5, 0.05]),
    weighted=st.booleans(),
    start_from_fit=st.booleans(),
)
def test_partial_fit_applies_the_documented_minibatch_update(
    client, seed, n_features, n_clusters, n_batches, decay, weighted, start_from_fit
):
    X, rng = _blobs(seed, 200, n_features)
    init = _random_init(rng, X, n_clusters)
    model = KMeans(n_clusters, init=init, decay=decay, reassignment_ratio=0.0, max_iter=5)
    if start_from_fit:
        model.fit(X)  # partial_fit carries on from these centres and counts
        centers, counts = model.cluster_centers_.copy(), model.cluster_weights_.copy()
    else:
        centers, counts = init.copy(), np.zeros(n_clusters)  # the first batch initialises

    for step in range(1, n_batches + 1):
        batch, _ = _blobs(int(rng.integers(2**32)), int(rng.integers(n_clusters, 120)), n_features)
        weights = None
        if weighted:  # some rows of weight 0: a cluster may get rows but no weight
            weights = rng.uniform(0, 2, len(batch)) * (rng.random(len(batch)) > 0.3)
        expected_centers, expected_counts = _minibatch_by_hand(
            centers, counts, batch, weights, decay
        )

        model.partial_fit(batch, sample_weight=weights)

        assert_allclose(model.cluster_centers_, expected_centers, rtol=1e-10, atol=1e-10)
        assert_allclose(model.cluster_weights_, expected_counts, rtol=1e-12, atol=1e-12)
        assert model.n_steps_ == step
        # labels_ and inertia_ describe the batch under the updated centres
        sq_dist = ((batch[:, None, :] - expected_centers[None]) ** 2).sum(axis=2)
        assert_array_equal(model.labels_, sq_dist.argmin(axis=1))
        w = np.ones(len(batch)) if weights is None else weights
        assert model.inertia_ == pytest.approx(float(w @ sq_dist.min(axis=1)), rel=1e-9, abs=1e-12)
        centers, counts = model.cluster_centers_.copy(), model.cluster_weights_.copy()


# --- k-means||: no duplicate centres -----------------------------------------------------


def _repeated_points(seed: int, n_clusters: int, extra: int, n_features: int) -> np.ndarray:
    """``n_clusters + extra`` distinct points, each repeated 1 to 300 times, shuffled."""
    rng = np.random.default_rng(seed)
    n_distinct = n_clusters + extra
    scales = rng.choice([0.01, 1.0, 100.0], size=(n_distinct, 1))
    points = rng.normal(size=(n_distinct, n_features)) * scales
    repeats = rng.choice([1, 2, 50, 300], size=n_distinct)
    X = np.repeat(points, repeats, axis=0)
    assert len(np.unique(X, axis=0)) == n_distinct
    return X[rng.permutation(len(X))]


def _kmeans_parallel_init(X, n_clusters, random_state, **params) -> np.ndarray:
    """The centres the fit's initialisation returned."""
    recorded = []
    initial_centers = cluster_fit.initial_centers

    def recording(*args, **kwargs):
        recorded.append(initial_centers(*args, **kwargs))
        return recorded[-1]

    model = KMeans(n_clusters, random_state=random_state, max_iter=1, **params)
    with mock.patch.object(cluster_fit, "initial_centers", recording), warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(X)
    return recorded[-1]


@_settings(20)
@given(
    seed=SEEDS,
    n_clusters=st.integers(2, 8),
    extra=st.integers(0, 4),
    n_features=st.integers(1, 4),
    random_state=st.integers(0, 2**31 - 1),
)
def test_kmeans_parallel_init_has_no_duplicate_centres(
    client, seed, n_clusters, extra, n_features, random_state
):
    X = _repeated_points(seed, n_clusters, extra, n_features)
    centers = _kmeans_parallel_init(X, n_clusters, random_state)
    assert centers.shape == (n_clusters, n_features)
    assert len(np.unique(centers, axis=0)) == n_clusters, centers


@_settings(20, phases=[Phase.explicit, Phase.generate])  # no shrinking: each fit costs ~0.5 s
@given(
    seed=SEEDS,
    n_clusters=st.integers(2, 8),
    extra=st.integers(0, 4),
    n_features=st.integers(1, 4),
    random_state=st.integers(0, 2**31 - 1),
    init_rounds=st.integers(1, 5),
    oversampling_factor=st.sampled_from([0.5, 1.0, 2.0]),
)
def test_kmeans_parallel_init_has_no_duplicate_centres_for_any_rounds_and_oversampling(
    client, seed, n_clusters, extra, n_features, random_state, init_rounds, oversampling_factor
):
    X = _repeated_points(seed, n_clusters, extra, n_features)
    centers = _kmeans_parallel_init(
        X,
        n_clusters,
        random_state,
        init_rounds=init_rounds,
        oversampling_factor=oversampling_factor,
    )
    assert len(np.unique(centers, axis=0)) == n_clusters, centers
