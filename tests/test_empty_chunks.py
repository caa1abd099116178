"""Empty row blocks (common after filtering a Dask array) work in every pass."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest

from kmeans_dask import KMeans
from kmeans_dask._worker.chunks import Chunk
from kmeans_dask._worker.host_ops import host_ops
from kmeans_dask._worker.results import ChunkSummary, combine_stats, merge_top
from kmeans_dask._worker.tasks import (
    candidate_weights,
    chunk_labels,
    chunk_stats,
    farthest_rows,
    random_rows,
    sample_by_cost,
    summarize,
    update_nearest_candidate,
    weighted_cost,
)

ROWS = np.random.default_rng(0).random((100, 4))
WEIGHTS = np.random.default_rng(1).uniform(0.5, 2.0, size=100)

EMPTY_SOMEWHERE = {
    "first": (0, 5, 95),
    "last": (60, 40, 0),
    "middle": (50, 0, 0, 50),
    "all but one": (0, 0, 100, 0),
}


@pytest.mark.parametrize("chunks", EMPTY_SOMEWHERE.values(), ids=EMPTY_SOMEWHERE.keys())
@pytest.mark.parametrize("engine", ["actors", "tasks"])
@pytest.mark.parametrize("init", ["k-means||", "k-means++", "random"])
def test_fit_with_empty_blocks_equals_fit_without_them(client, chunks, engine, init):
    X = da.from_array(ROWS, chunks=(chunks, (4,)))
    weights = da.from_array(WEIGHTS, chunks=(chunks,))
    without = tuple(c for c in chunks if c)
    params = dict(n_clusters=3, init=init, n_init=1, engine=engine, random_state=0, max_iter=20)
    model = KMeans(**params).fit(X, sample_weight=weights)
    reference = KMeans(**params).fit(
        da.from_array(ROWS, chunks=(without, (4,))),
        sample_weight=da.from_array(WEIGHTS, chunks=(without,)),
    )
    np.testing.assert_array_equal(model.cluster_centers_, reference.cluster_centers_)
    assert model.inertia_ == reference.inertia_
    assert model.labels_.chunks == X.chunks[:1]
    labels = model.labels_.compute()
    np.testing.assert_array_equal(labels, reference.labels_.compute())
    predicted = model.predict(X)
    assert predicted.chunks == X.chunks[:1]
    np.testing.assert_array_equal(predicted.compute(), labels)
    distances = model.transform(X).compute()
    np.testing.assert_array_equal(distances.argmin(axis=1), labels)
    assert model.score(X, sample_weight=weights) == pytest.approx(-model.inertia_, rel=1e-12)


@pytest.mark.parametrize("chunks", EMPTY_SOMEWHERE.values(), ids=EMPTY_SOMEWHERE.keys())
def test_partial_fit_takes_a_batch_with_empty_blocks(chunks):
    X = da.from_array(ROWS, chunks=(chunks, (4,)))
    model = KMeans(3, random_state=0).partial_fit(X).partial_fit(X)
    reference = KMeans(3, random_state=0).partial_fit(ROWS).partial_fit(ROWS)
    np.testing.assert_array_equal(model.cluster_centers_, reference.cluster_centers_)


def test_every_chunk_pass_accepts_an_empty_chunk():
    """The per-chunk functions of every pass, on a chunk with no rows."""
    empty = Chunk(np.empty((0, 4)), None, 7, host_ops())
    centers = ROWS[:3]
    summary = summarize(empty)
    assert (summary.n_rows, summary.nonfinite_count, summary.weight_sum) == (0, 0, 0.0)
    full = summarize(Chunk(ROWS, None, 0, host_ops()))
    assert ChunkSummary.merge(summary, full) is full
    stats = chunk_stats(empty, centers, "numpy")
    assert stats.sums.dtype == np.float64 and not stats.counts.any() and stats.inertia == 0.0
    total = combine_stats(stats, chunk_stats(Chunk(ROWS, None, 0, host_ops()), centers, "numpy"))
    assert total.counts.sum() == len(ROWS)
    labels, _ = chunk_labels(empty, centers, "numpy")
    assert labels.shape == (0,)
    far = farthest_rows(empty, centers, "numpy", 2)
    assert len(
        merge_top(
            2, far, farthest_rows(Chunk(ROWS, None, 0, host_ops()), centers, "numpy", 2)
        ).rows
    )
    assert random_rows(empty, 3, seed=0, stream=1, weighted=True).rows.shape == (0, 4)
    state = update_nearest_candidate(empty, None, centers, 0, "numpy")
    assert weighted_cost(empty, state, "numpy") == 0.0
    assert sample_by_cost(empty, state, 2.0, 1.0, 0, 16, "numpy").shape == (0, 4)
    weights = candidate_weights(empty, state, 3, "numpy")
    assert weights.dtype == np.float64 and weights.tolist() == [0.0, 0.0, 0.0]
