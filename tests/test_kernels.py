"""The per-chunk kernels and backends, tested without Dask."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from kmeans_dask._kernels.block_kernels import LARGEST_BUFFER_MAX, column_moments, largest
from kmeans_dask._kernels.rng import row_uniforms, rows_kept_with_probability
from kmeans_dask._worker.chunks import Chunk
from kmeans_dask._worker.host_ops import host_ops, nearest, statistics_and_labels
from kmeans_dask._worker.results import (
    FAR_ROWS,
    Checked,
    ChunkSummary,
    combine_stats,
    merge_top,
)
from kmeans_dask._worker.tasks import (
    chunk_stats,
    farthest_rows,
    random_rows,
    sample_by_cost,
    summarize,
    update_nearest_candidate,
    weighted_cost,
)
from kmeans_dask.backends import get_backend


def _brute_force(X, centers):
    distances = ((X[:, None, :].astype(np.float64) - centers[None].astype(np.float64)) ** 2).sum(
        -1
    )
    return distances.argmin(axis=1), distances.min(axis=1)


@pytest.mark.parametrize("backend", ["numpy", "faiss-cpu"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(("n", "d", "k"), [(1, 1, 1), (1000, 3, 7), (5000, 17, 300), (300, 64, 2)])
def test_nearest_matches_brute_force(backend, dtype, n, d, k):
    rng = np.random.default_rng(n + d + k)
    X = rng.normal(size=(n, d)).astype(dtype)
    centers = rng.normal(size=(k, d)).astype(dtype)
    labels, sq_dist = nearest(X, centers, backend)
    expected_labels, expected_sq = _brute_force(X, centers)
    assert labels.dtype == np.int32
    # Float32 GEMM may swap near-ties; the chosen centre must then be as close.
    chosen = ((X.astype(np.float64) - centers[labels].astype(np.float64)) ** 2).sum(-1)
    assert_allclose(chosen, expected_sq, rtol=1e-5 if dtype == np.float32 else 1e-12, atol=1e-6)
    assert (labels == expected_labels).mean() > 0.999
    assert_allclose(sq_dist, chosen, rtol=1e-12, atol=1e-12)


def test_statistics_are_exact_weighted_sums():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(2000, 5))
    centers = X[:9].copy()
    weights = rng.uniform(0, 2, size=2000)
    stats, labels, sq_dist = statistics_and_labels(X, weights, centers, "numpy")
    for cluster in range(9):
        members = labels == cluster
        assert_allclose(stats.sums[cluster], (weights[members, None] * X[members]).sum(0))
        assert stats.counts[cluster] == pytest.approx(weights[members].sum())
    assert stats.inertia == pytest.approx(np.dot(weights, sq_dist))


def test_combined_statistics_equal_whole_array_statistics():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(3000, 4)).astype(np.float32)
    centers = X[:5].copy()
    whole, _, _ = statistics_and_labels(X, None, centers, "numpy")
    parts = [
        statistics_and_labels(X[a : a + 700], None, centers, "numpy")[0]
        for a in range(0, 3000, 700)
    ]
    combined = combine_stats(*parts)
    assert_allclose(combined.sums, whole.sums, rtol=1e-12)
    assert_array_equal(combined.counts, whole.counts)
    assert combined.inertia == pytest.approx(whole.inertia, rel=1e-12)


def test_statistics_travel_as_their_fields_with_the_arrays_out_of_band():
    """distributed sends a chunk's statistics field by field, each array as its own
    frames (not copied into a pickle), and the client gets them back whole and writable."""
    from distributed.protocol import deserialize, serialize

    rng = np.random.default_rng(2)
    X = rng.normal(size=(500, 6)).astype(np.float32)
    stats, labels, sq_dist = statistics_and_labels(X, None, X[:9].copy(), "numpy")
    chunk = Chunk(X, None, 0, host_ops())
    stats.farthest = chunk.ops.top_rows(chunk, sq_dist, labels, FAR_ROWS)
    header, frames = serialize(stats, serializers=("dask", "pickle"))
    assert header["serializer"] == "dask"
    assert sum(memoryview(frame).nbytes for frame in frames) < stats.sums.nbytes + 4096
    assert any(memoryview(frame).nbytes == stats.sums.nbytes for frame in frames)
    back = deserialize(header, frames)
    assert type(back) is type(stats)
    assert_array_equal(back.sums, stats.sums)
    assert_array_equal(back.counts, stats.counts)
    assert back.inertia == stats.inertia
    assert_array_equal(back.farthest.index, stats.farthest.index)
    back.sums[0] += 1.0  # relocating an empty cluster writes into them


@pytest.mark.parametrize("with_value", [True, False])
def test_checked_statistics_travel_with_the_sums_out_of_band(with_value):
    """The first pass's value (statistics with the data check's summaries) is sent
    field by field too: the sums are one frame of their own, not inside a pickle."""
    from distributed.protocol import deserialize, serialize

    rng = np.random.default_rng(3)
    X = rng.normal(size=(400, 5))
    stats = statistics_and_labels(X, None, X[:7].copy(), "numpy")[0] if with_value else None
    summaries = tuple(summarize(Chunk(X[a : a + 200], None, a, host_ops())) for a in (0, 200))
    header, frames = serialize(Checked(summaries, stats), serializers=("dask", "pickle"))
    assert header["serializer"] == "dask"
    if with_value:
        assert any(memoryview(frame).nbytes == stats.sums.nbytes for frame in frames)
    back = deserialize(header, frames)
    assert back.summary().n_rows == 400
    assert_array_equal(back.summary().column_mean, Checked(summaries, None).summary().column_mean)
    if with_value:
        assert_array_equal(back.value.sums, stats.sums)
        assert back.value.inertia == stats.inertia
    else:
        assert back.value is None


def test_summary_merge_gives_column_variance_and_nonfinite_positions():
    rng = np.random.default_rng(2)
    X = rng.normal(size=(1000, 3)) * [1.0, 5.0, 0.1]
    merged = None
    for start in range(0, 1000, 300):
        part = summarize(Chunk(X[start : start + 300], None, start, host_ops()))
        merged = part if merged is None else ChunkSummary.merge(merged, part)
    assert merged.n_rows == 1000
    assert_allclose(merged.column_m2 / 1000, X.var(axis=0), rtol=1e-10)
    X[[17, 650], [1, 2]] = [np.nan, np.inf]
    bad = summarize(Chunk(X[600:], None, 600, host_ops()))
    assert bad.nonfinite_count == 1
    assert bad.nonfinite_positions == [(650, 2)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n_rows", [1, 511, 512, 1300])
def test_column_moments_match_two_pass_float64(dtype, n_rows):
    rng = np.random.default_rng(n_rows)
    # A large offset: a one-pass sum of squares would lose the variance.
    X = (rng.normal(size=(n_rows, 5)) * [1.0, 1e-3, 10.0, 2.0, 0.5] + 1e4).astype(dtype)
    mean, m2 = np.empty(5), np.empty(5)
    column_moments(X, mean, m2)
    X64 = X.astype(np.float64)
    assert_allclose(mean, X64.mean(axis=0), rtol=1e-14)
    assert_allclose(m2, ((X64 - X64.mean(axis=0)) ** 2).sum(axis=0), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_column_moments_flag_nonfinite_values(value):
    X = np.ones((1300, 3))
    X[900, 1] = value
    mean, m2 = np.empty(3), np.empty(3)
    column_moments(X, mean, m2)
    assert not (np.isfinite(mean).all() and np.isfinite(m2).all())


def test_summary_of_finite_data_too_large_to_square_is_not_reported_nonfinite():
    X = np.full((10, 2), 1e200)
    X[::2] *= -1
    summary = summarize(Chunk(X, None, 0, host_ops()))
    assert summary.nonfinite_count == 0
    assert summary.nonfinite_positions == []


def test_row_uniforms_depend_only_on_global_rows():
    whole = row_uniforms(5, 2, 0, 1000)
    pieces = np.concatenate(
        [row_uniforms(5, 2, a, min(a + 333, 1000)) for a in range(0, 1000, 333)]
    )
    assert_array_equal(whole, pieces)
    assert whole.min() >= 0.0 and whole.max() < 1.0
    assert abs(whole.mean() - 0.5) < 0.05
    assert not np.array_equal(whole, row_uniforms(5, 3, 0, 1000))


def test_rows_kept_with_probability_follow_the_row_uniforms():
    rng = np.random.default_rng(4)
    sq_dist = rng.uniform(0, 2, size=2000)
    weights = rng.uniform(0, 1, size=2000)
    uniforms = row_uniforms(3, 7, 100, 2100)
    for w in (None, weights):
        probability = 0.8 * (1.0 if w is None else w) * sq_dist
        kept = rows_kept_with_probability(0.8, w, sq_dist, 3, 7, 100)
        assert_array_equal(kept, np.flatnonzero(uniforms < probability))
    assert len(rows_kept_with_probability(0.0, None, sq_dist, 3, 7, 100)) == 0
    assert len(rows_kept_with_probability(1e9, None, sq_dist + 1e-3, 3, 7, 100)) == 2000


def test_kmeans_parallel_tasks_when_every_row_is_a_candidate():
    X = np.arange(12.0).reshape(6, 2)
    chunk = Chunk(X, None, 0, host_ops())
    state = update_nearest_candidate(chunk, None, X, 0, "numpy")
    assert weighted_cost(chunk, state, "numpy") == 0.0
    assert sample_by_cost(chunk, state, 10.0, 0.0, 1, 2, "numpy").shape == (0, 2)
    # A round that drew nothing leaves the state as it was.
    assert update_nearest_candidate(chunk, state, X[:0], 6, "numpy") is state


def test_weighted_sampling_is_chunking_invariant_and_skips_zero_weights():
    rng = np.random.default_rng(3)
    X = rng.normal(size=(900, 2))
    weights = rng.uniform(0, 1, size=900)
    weights[::3] = 0.0

    def sample(step):
        parts = [
            random_rows(
                Chunk(X[a : a + step], weights[a : a + step], a, host_ops()), 50, 9, 1, True
            )
            for a in range(0, 900, step)
        ]
        return merge_top(50, *parts)

    whole, split = sample(900), sample(128)
    assert_array_equal(whole.index, split.index)
    assert (weights[whole.index] > 0).all()
    assert len(set(whole.index.tolist())) == 50


def test_unknown_backend_and_auto():
    with pytest.raises(ValueError, match="backend='nope' is not a known backend"):
        get_backend("nope")
    assert get_backend("auto").name == "numpy"


@pytest.mark.parametrize(
    "max_rows, max_count",
    [(200, 50), (3000, 2 * LARGEST_BUFFER_MAX)],  # the buffer, and the sort above its size
)
def test_largest_matches_a_full_sort_with_ties_and_infinities(max_rows, max_count):
    rng = np.random.default_rng(5)
    for trial in range(200):
        n, count = int(rng.integers(1, max_rows)), int(rng.integers(1, max_count))
        values = rng.integers(0, 5, n).astype(float) if trial % 2 else rng.random(n)
        if trial % 3 == 0:
            values[rng.random(n) < 0.3] = -np.inf
        out = np.empty(min(count, n), dtype=np.int64)
        written = largest(values, count, out)
        rows = np.arange(n)
        expected = rows[np.lexsort((rows, -values))][:count]
        assert written == len(expected)
        assert_array_equal(out, expected)


def test_chunk_statistics_report_the_rows_farthest_from_their_centre():
    rng = np.random.default_rng(6)
    X = rng.normal(size=(3000, 4))
    centers = X[:7].copy()
    parts = [
        chunk_stats(Chunk(X[a:b], None, a, host_ops()), centers, "numpy")
        for a, b in [(0, 1200), (1200, 3000)]
    ]
    combined = combine_stats(*parts)
    expected = merge_top(
        FAR_ROWS, farthest_rows(Chunk(X, None, 0, host_ops()), centers, "numpy", FAR_ROWS)
    )
    assert_array_equal(combined.farthest.index, expected.index)
    assert_array_equal(combined.farthest.rows, X[expected.index])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("k", [1, 2, 64, 256, 2049])
def test_both_score_layouts_find_the_smallest_score_and_runner_up(dtype, k):
    """Both layouts: the exact argmin of the scores (ties to the lowest index), runner-up."""
    from kmeans_dask.backends.numpy_blas import (
        ROW_LAYOUT_MAX_CENTERS,
        ROW_LAYOUT_MAX_CENTERS_X_FEATURES,
        ColumnSearcher,
        RowSearcher,
        exact_searcher,
    )

    rng = np.random.default_rng(k)
    # Integer-valued data: every score is exact, so ties are real ties.
    X = rng.integers(-3, 4, size=(1500, 6)).astype(dtype)
    centers = rng.integers(-3, 4, size=(k, 6)).astype(dtype)
    centers[k // 2 :] = centers[: k - k // 2]  # duplicated centres tie for every row
    scores = (centers.astype(np.float64) ** 2).sum(1) - 2.0 * X.astype(np.float64) @ centers.T
    expected = scores.argmin(axis=1)
    ranked = np.sort(scores, axis=1)
    expected_second = ranked[:, 1] if k > 1 else np.full(len(X), np.inf)
    sq_norms = (X.astype(np.float64) ** 2).sum(1)
    for searcher in (RowSearcher(centers), ColumnSearcher(centers)):
        assert_array_equal(searcher.nearest(X), expected)
        labels, runner_up = searcher.nearest_two(X)
        assert_array_equal(labels, expected)
        true_runner_up = np.sqrt(np.maximum(sq_norms + expected_second, 0.0))
        assert np.all(runner_up <= true_runner_up)
        assert_allclose(runner_up, true_runner_up, rtol=1e-3, atol=1e-2)
    row_layout = 16 <= k * 6 <= ROW_LAYOUT_MAX_CENTERS_X_FEATURES and k <= ROW_LAYOUT_MAX_CENTERS
    layout = RowSearcher if row_layout else ColumnSearcher
    assert isinstance(exact_searcher(centers), layout)


@pytest.mark.parametrize(
    ("cpu", "bits", "limits"),
    [
        ("haswell", 256, (16384, 16384 * 256)),  # AVX2: measured on the AMD EPYC (Zen 3)
        ("znver3", 256, (16384, 16384 * 256)),
        ("znver4", 512, (16384, 16384 * 256)),  # AVX-512 through 256-bit units (Zen 4)
        ("skylake-avx512", 512, (16384, 16384 * 256)),
        ("icelake-server", 512, (16384, 16384 * 256)),  # AVX-512 on an Intel Xeon (Ice Lake)
        ("generic", 128, (2048, 65536)),  # not measured: the large shapes go to BLAS
    ],
)
def test_the_fused_kernels_search_the_shapes_measured_faster_on_each_cpu(cpu, bits, limits):
    from kmeans_dask._kernels.vector_target import VectorTarget
    from kmeans_dask.backends.numpy_blas import row_layout_limits

    registers = 32 if bits == 512 else 16
    assert row_layout_limits(VectorTarget(cpu, bits, registers)) == limits


def assert_search_is_exact(X: np.ndarray, centers: np.ndarray) -> None:
    """``nearest_rows`` with and without the runner-up, against brute force.

    With integer-valued data every score is exact, so the kernels must return
    the true argmin (ties to the lowest index) and the runner-up score itself.
    """
    from kmeans_dask._kernels.fused_search import nearest_rows, pack_centers

    scores = (centers.astype(np.float64) ** 2).sum(1) - 2.0 * X.astype(np.float64) @ centers.T
    labels = np.full(len(X), -7, dtype=np.int32)
    second = np.full(len(X), -7, dtype=X.dtype)
    nearest_rows(X, *pack_centers(centers), labels, second)
    assert_array_equal(labels, scores.argmin(axis=1))
    expected_second = np.sort(scores, axis=1)[:, 1] if len(centers) > 1 else np.inf
    assert_array_equal(second, np.broadcast_to(expected_second, len(X)).astype(X.dtype))
    labels_only = np.full(len(X), -7, dtype=np.int32)
    nearest_rows(X, *pack_centers(centers), labels_only)
    assert_array_equal(labels_only, labels)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("k", [1, 2, 7, 16, 17, 33, 64, 65, 100, 129, 256])
@pytest.mark.parametrize("d", [1, 3, 32])
def test_fused_kernels_find_exact_minimum_index_and_runner_up(dtype, k, d):
    """Every centre count (partial vectors, several blocks) and row count (partial row groups)."""
    rng = np.random.default_rng(k * 100 + d)
    X = rng.integers(-3, 4, size=(1003, d)).astype(dtype)
    centers = rng.integers(-3, 4, size=(k, d)).astype(dtype)
    assert_search_is_exact(X, centers)


def test_packed_centres_pad_with_scores_that_never_win():
    from kmeans_dask._kernels.fused_search import MAX_VECTORS_PER_BLOCK, lanes_of, pack_centers

    lanes = lanes_of(np.float32)
    width = lanes * MAX_VECTORS_PER_BLOCK  # float32 centres per block (64 with AVX-512)
    centers = np.arange((width + 6) * 3, dtype=np.float32).reshape(width + 6, 3)
    weights, bias, vectors = pack_centers(centers)
    assert weights.shape == (2, 3, width) and bias.shape == (2, width)
    assert vectors == (0,) * MAX_VECTORS_PER_BLOCK
    assert_array_equal(weights[1, :, 5], -2.0 * centers[width + 5])
    assert_array_equal(weights[1, :, 6:], 0.0)
    assert np.isinf(bias[1, 6:]).all() and np.isfinite(bias[1, :6]).all()
    few = pack_centers(centers[: lanes - 1])[0]
    assert few.shape == (1, 3, lanes)  # one vector for a few centres
    double = pack_centers(centers[:lanes].astype(np.float64))[0]
    assert double.shape == (1, 3, lanes)  # two vectors of half as many float64 lanes


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("k", [1, 7, 64, 200, 1000])
def test_packed_centres_are_minus_twice_the_centres_and_their_float64_norms(dtype, k):
    from kmeans_dask._kernels.fused_search import pack_centers

    centers = np.random.default_rng(k).normal(size=(k, 37)).astype(dtype)
    weights, bias, _ = pack_centers(centers)
    n_blocks, _, width = weights.shape
    assert weights.flags.c_contiguous and n_blocks * width >= k
    columns = weights.transpose(0, 2, 1).reshape(n_blocks * width, 37)
    assert_array_equal(columns[:k], -2.0 * centers)
    assert_array_equal(columns[k:], 0.0)
    wide = centers.astype(np.float64)  # norms summed in float64, then rounded
    norms = np.einsum("ij,ij->i", wide, wide)
    assert_array_equal(bias.reshape(-1)[:k], norms.astype(dtype))
    assert np.isinf(bias.reshape(-1)[k:]).all()
    # The norms a searcher has already (in float64) give the same blocks.
    given = pack_centers(centers, norms)
    assert_array_equal(given[0], weights)
    assert_array_equal(given[1], bias)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_centres_beyond_the_l2_cache_are_searched_exactly(dtype):
    """Over 1 MiB of centres, with the runner-up and labels only."""
    from kmeans_dask._kernels.fused_search import MAX_VECTORS_PER_BLOCK, rows_per_kernel
    from kmeans_dask._kernels.vector_target import compile_target

    for vectors in range(1, MAX_VECTORS_PER_BLOCK + 1):  # the accumulators fit the registers
        assert rows_per_kernel(vectors) * vectors + vectors + 1 <= compile_target().registers
    n_features = 64
    rng = np.random.default_rng(5)
    X = rng.integers(-3, 4, size=(237, n_features)).astype(dtype)
    n_centers = 2**20 // (n_features * np.dtype(dtype).itemsize) + 1
    assert_search_is_exact(X, rng.integers(-3, 4, size=(n_centers, n_features)).astype(dtype))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n_rows", [3, 963, 1003])
def test_the_tiled_search_finds_the_exact_minimum_index_and_runner_up(dtype, n_rows):
    """Centres beyond ``TILED_CENTERS_BYTES``: tiles of rows, one group of centres at a time.

    Row counts with a last tile of fewer rows than a kernel scores together
    (963 = 5 x 192 + 3) and of a partial group (1003), ties to the lowest
    index across blocks (integer data has many ties).
    """
    from kmeans_dask._kernels.fused_search import TILE_ROWS, TILED_CENTERS_BYTES

    n_features = 40
    n_centers = TILED_CENTERS_BYTES // (n_features * np.dtype(dtype).itemsize) + 37
    assert 5 * TILE_ROWS + 3 == 963
    rng = np.random.default_rng(n_rows)
    X = rng.integers(-2, 3, size=(n_rows, n_features)).astype(dtype)
    assert_search_is_exact(X, rng.integers(-2, 3, size=(n_centers, n_features)).astype(dtype))


@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")
@pytest.mark.parametrize("k", [3, 70, 200])
def test_fused_kernels_return_real_centres_when_scores_overflow(k):
    """Scores that overflow to inf or NaN must still give labels of real centres.

    The compiled passes index the per-cluster sums by these labels unchecked.
    """
    from kmeans_dask._kernels.fused_search import nearest_rows, pack_centers

    rng = np.random.default_rng(k)
    X = (rng.standard_normal((1001, 5)) * 1e19).astype(np.float32)
    centers = (rng.standard_normal((k, 5)) * 1e19).astype(np.float32)
    labels = np.empty(len(X), dtype=np.int32)
    nearest_rows(X, *pack_centers(centers), labels, np.empty(len(X), dtype=np.float32))
    assert labels.min() >= 0 and labels.max() < k


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_folding_groups_of_centres_over_listed_rows_finds_their_nearest(dtype):
    """Groups folded in turn over some rows: the nearest of all groups, ties to the earliest."""
    from kmeans_dask._kernels.fused_search import fold_nearest, pack_centers

    rng = np.random.default_rng(4)
    X = rng.integers(-3, 4, size=(777, 6)).astype(dtype)
    centers = rng.integers(-3, 4, size=(150, 6)).astype(dtype)
    centers[120:] = centers[:30]  # later duplicates: the earlier group must keep the row
    scores = (centers.astype(np.float64) ** 2).sum(1) - 2.0 * X.astype(np.float64) @ centers.T
    listed = np.sort(rng.choice(len(X), size=500, replace=False)).astype(np.int64)
    labels = np.full(len(X), -1, dtype=np.int32)
    best = np.full(len(X), np.inf, dtype=dtype)
    for first, last in [(0, 7), (7, 90), (90, 150)]:
        fold_nearest(X, listed, *pack_centers(centers[first:last]), first, labels, best)
    assert_array_equal(labels[listed], scores[listed].argmin(axis=1))
    assert_array_equal(best[listed], scores[listed].min(axis=1).astype(dtype))
    untouched = np.setdiff1d(np.arange(len(X)), listed)
    assert (labels[untouched] == -1).all() and np.isinf(best[untouched]).all()
    with pytest.raises(ValueError, match="row ids"):
        fold_nearest(X, np.array([0, len(X)]), *pack_centers(centers), 0, labels, best)


def test_fused_kernels_refuse_rows_they_cannot_read():
    from kmeans_dask._kernels.fused_search import nearest_rows, pack_centers

    X = np.zeros((10, 4), dtype=np.float32)
    packed = pack_centers(X[:3].copy())
    message = "C-contiguous rows and matching labels"
    with pytest.raises(ValueError, match=message):
        nearest_rows(X[:, :2], *pack_centers(X[:3, :2].copy()), np.empty(10, dtype=np.int32))
    with pytest.raises(ValueError, match=message):
        nearest_rows(X, *packed, np.empty(9, dtype=np.int32))
    with pytest.raises(ValueError, match=message):
        nearest_rows(X, *packed, np.empty(10, dtype=np.int32), np.empty(9, dtype=np.float32))


def test_compiled_search_gives_the_exact_distances_of_the_block_loop():
    from kmeans_dask._kernels.block_kernels import squared_distances

    rng = np.random.default_rng(8)
    X = rng.normal(size=(5000, 7)).astype(np.float32)
    centers = rng.normal(size=(20, 7)).astype(np.float32)
    labels, sq_dist = nearest(X, centers, "numpy")
    expected = np.empty(len(X))
    squared_distances(X, labels, centers.astype(np.float64), expected)
    assert_array_equal(sq_dist, expected)
    assert_array_equal(labels, _brute_force(X, centers)[0])


def test_row_layout_handles_strided_blocks_and_partial_tiles():
    from kmeans_dask.backends.numpy_blas import RowSearcher

    rng = np.random.default_rng(5)
    X = rng.normal(size=(1000, 9)).astype(np.float32)
    centers = X[:13].copy()
    expected = RowSearcher(centers).nearest(np.ascontiguousarray(X[::3]))
    assert_array_equal(RowSearcher(centers).nearest(X[::3]), expected)
    assert_array_equal(_brute_force(X[::3], centers)[0], expected)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("weighted", [False, True])
def test_fused_row_pass_equals_search_then_accumulate_block_by_block(dtype, weighted):
    from kmeans_dask._kernels.block_kernels import accumulate
    from kmeans_dask.backends.numpy_blas import RowSearcher

    rng = np.random.default_rng(11)
    X = rng.normal(size=(10_000, 7)).astype(dtype)
    weights = rng.uniform(0, 2, size=len(X)) if weighted else None
    centers = X[:20].astype(np.float64)
    searcher = RowSearcher(centers.astype(dtype))
    labels, sq_dist = np.empty(len(X), np.int32), np.empty(len(X))
    sums, counts = np.zeros((20, 7)), np.zeros(20)
    inertia = searcher.assign_and_accumulate(X, weights, centers, labels, sums, counts, sq_dist)
    expected_sums, expected_counts, expected_inertia = np.zeros((20, 7)), np.zeros(20), 0.0
    for start in range(0, len(X), searcher.block_rows):
        rows = slice(start, start + searcher.block_rows)
        block_labels = searcher.nearest(X[rows])
        assert_array_equal(labels[rows], block_labels)
        expected_inertia += accumulate(
            X[rows],
            block_labels,
            None if weights is None else weights[rows],
            centers,
            expected_sums,
            expected_counts,
            np.empty(len(block_labels)),
        )
    assert_array_equal(sums, expected_sums)  # bit for bit
    assert_array_equal(counts, expected_counts)
    assert inertia == expected_inertia


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("d", [1, 5, 8, 13, 16, 40])
def test_statistics_add_rows_in_row_order_with_exact_distances(dtype, weighted, d):
    from kmeans_dask._kernels.block_kernels import accumulate, squared_distances

    rng = np.random.default_rng(d)
    X = rng.normal(size=(700, d)).astype(dtype)
    labels = rng.integers(6, size=len(X)).astype(np.int32)
    weights = rng.uniform(0, 2, size=len(X)) if weighted else None
    centers = rng.normal(size=(6, d))
    sums, counts, sq_dist = np.zeros((6, d)), np.zeros(6), np.empty(len(X))
    inertia = accumulate(X, labels, weights, centers, sums, counts, sq_dist)
    # Row by row, as a plain float64 loop adds them: the same bits.
    shares = X.astype(np.float64) * (1.0 if weights is None else weights[:, None])
    expected_sums = np.zeros((6, d))
    np.add.at(expected_sums, labels, shares)
    assert_array_equal(sums, expected_sums)
    expected_sq = ((X.astype(np.float64) - centers[labels]) ** 2).sum(1)
    assert_allclose(sq_dist, expected_sq, rtol=1e-14)
    unit = np.ones(len(X)) if weights is None else weights
    assert_array_equal(counts, np.bincount(labels, weights=unit, minlength=6))
    assert inertia == pytest.approx(np.dot(unit, sq_dist), rel=1e-14)
    # The distances alone are the same numbers.
    alone = np.empty(len(X))
    squared_distances(X, labels, centers, alone)
    assert_array_equal(alone, sq_dist)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("d", [1, 7, 8, 13, 128])
def test_four_distances_side_by_side_are_the_distances_one_by_one(dtype, d):
    import numba

    from kmeans_dask._kernels.row_statistics import row_distance, row_distances

    @numba.njit
    def both(X, centers, i, labels):
        one_by_one = [row_distance(X, i, centers, label) for label in labels]
        side_by_side = row_distances(X, i, centers, labels)
        return one_by_one, side_by_side

    rng = np.random.default_rng(d)
    X = rng.normal(size=(5, d)).astype(dtype)
    centers = rng.normal(size=(9, d))
    for i, labels in [(0, (0, 1, 2, 3)), (4, (8, 3, 8, 0))]:
        one_by_one, side_by_side = both(X, centers, i, labels)
        assert list(side_by_side) == one_by_one  # the same bits
        expected = ((X[i].astype(np.float64) - centers[list(labels)]) ** 2).sum(1)
        assert_allclose(side_by_side, expected, rtol=1e-14)


def test_statistics_of_integer_rows_are_exact_and_leave_other_clusters_alone():
    from kmeans_dask._kernels.block_kernels import accumulate

    rng = np.random.default_rng(3)
    X = rng.integers(-50, 50, size=(300, 11)).astype(np.float32)
    centers = rng.integers(-50, 50, size=(4, 11)).astype(np.float64)
    labels = np.full(len(X), 2, dtype=np.int32)
    sums, counts, sq_dist = np.zeros((4, 11)), np.zeros(4), np.empty(len(X))
    accumulate(X, labels, None, centers, sums, counts, sq_dist)
    assert_array_equal(sums[[0, 1, 3]], 0.0)  # the masked last lanes wrote nowhere else
    assert_array_equal(sums[2], X.astype(np.float64).sum(0))
    assert_array_equal(sq_dist, ((X - centers[2]) ** 2).sum(1))


@pytest.mark.parametrize("source", [np.arange(30.0).reshape(5, 6), np.ones((4, 3), np.float32)])
def test_aligned_float64_copies_only_what_it_must(source):
    from kmeans_dask._kernels.row_statistics import VECTOR_BYTES, aligned_float64

    aligned = aligned_float64(source)
    assert aligned.dtype == np.float64 and aligned.flags.c_contiguous
    assert aligned.ctypes.data % VECTOR_BYTES == 0
    assert_array_equal(aligned, source)
    assert aligned_float64(aligned) is aligned
    # An unaligned float64 array is copied to an aligned one.
    offset = aligned_float64(np.zeros(source.size + 1))[1:].reshape(source.shape)
    assert aligned_float64(offset).ctypes.data % VECTOR_BYTES == 0


@pytest.mark.parametrize("shape", [(5, 6), (1, 1), (64, 32)])
def test_aligned_zeros_are_aligned_contiguous_float64_zeros(shape):
    from kmeans_dask._kernels.row_statistics import VECTOR_BYTES, aligned_zeros

    zeros = aligned_zeros(shape)
    assert zeros.shape == shape and zeros.dtype == np.float64 and zeros.flags.c_contiguous
    assert zeros.ctypes.data % VECTOR_BYTES == 0
    assert not zeros.any()


def test_statistics_kernels_refuse_arrays_they_cannot_read():
    from kmeans_dask._kernels.block_kernels import accumulate, squared_distances

    X = np.zeros((10, 4))
    labels = np.zeros(10, dtype=np.int32)
    centers = np.zeros((3, 4))
    with pytest.raises(ValueError, match="C-contiguous rows and float64 centres and sums"):
        accumulate(
            np.asfortranarray(X),
            labels,
            None,
            centers,
            np.zeros((3, 4)),
            np.zeros(3),
            np.empty(10),
        )
    with pytest.raises(ValueError, match="C-contiguous rows and float64 centres and sums"):
        accumulate(X, labels, None, centers, np.zeros((3, 5)), np.zeros(3), np.empty(10))
    with pytest.raises(ValueError, match="C-contiguous rows and float64 centres"):
        squared_distances(X, labels, np.zeros((3, 5)), np.empty(10))
    with pytest.raises(ValueError, match="C-contiguous rows and float64 centres"):
        squared_distances(X, labels, np.asfortranarray(np.zeros((3, 4))), np.empty(10))


# --- the data check's content digest ------------------------------------------------


def _digest(X, weights=None, cuts=()):
    """The merged digest of X split into row blocks at ``cuts``, merged in reverse order."""
    import itertools
    from functools import reduce

    from kmeans_dask._worker.chunks import make_chunk

    bounds = [0, *cuts, len(X)]
    parts = [
        summarize(
            make_chunk(X[a:b], None if weights is None else weights[a:b], a, X.dtype, host_ops())
        )
        for a, b in itertools.pairwise(bounds)
    ]
    return reduce(ChunkSummary.merge, reversed(parts)).digest


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_content_digest_is_the_same_for_any_chunking_and_order(dtype):
    X = np.random.default_rng(0).normal(size=(1000, 7)).astype(dtype)
    whole = _digest(X)
    assert 0 <= whole < 2**64
    for cuts in [(1,), (500,), (3, 4, 999), tuple(range(10, 1000, 10))]:
        assert _digest(X, cuts=cuts) == whole
    # Unit weights are no weights.
    assert _digest(X, np.ones(1000), cuts=(250,)) == whole


@pytest.mark.parametrize(
    "change",
    [
        lambda X, w: X.__setitem__((17, 3), np.nextafter(X[17, 3], np.inf)),  # one bit
        lambda X, w: X.__setitem__((0, 0), -X[0, 0]),
        lambda X, w: X.__setitem__(slice(None), X[::-1]),  # rows reordered
        lambda X, w: X.__setitem__((slice(None), 2), X[::-1, 2]),  # one column permuted
        lambda X, w: X.__setitem__(slice(None), X[:, ::-1]),  # columns reordered
        lambda X, w: w.__setitem__(5, 2.0),  # one weight
        lambda X, w: w.__setitem__(slice(None), 2.0),  # all weights scaled
    ],
    ids=["bit", "sign", "rows", "column", "columns", "weight", "scaled-weights"],
)
def test_content_digest_changes_with_any_value_position_or_weight(change):
    X = np.random.default_rng(1).integers(0, 100, size=(1000, 5)).astype(np.float64)
    weights = np.ones(1000)
    before = _digest(X, weights)
    change(X, weights)
    assert _digest(X, weights, cuts=(300,)) != before


# --- IVF probes ---------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("count", [1, 3, 8])
def test_smallest_per_row_ranks_columns_with_ties_to_the_lower_one(dtype, count):
    from kmeans_dask._kernels.block_kernels import smallest_per_row

    scores = np.random.default_rng(count).integers(0, 6, size=(300, 8)).astype(dtype)
    out = np.empty((300, count), dtype=np.int64)
    smallest_per_row(scores, count, out)
    assert_array_equal(out, np.argsort(scores, axis=1, kind="stable")[:, :count])


def test_rows_by_list_groups_rows_in_ascending_order():
    from kmeans_dask._kernels.block_kernels import rows_by_list

    probes = np.random.default_rng(1).integers(0, 7, size=(500, 3)).astype(np.int64)
    rows, bounds = rows_by_list(probes, 9)
    assert bounds[0] == 0 and bounds[-1] == probes.size
    for list_no in range(9):
        expected = np.flatnonzero((probes == list_no).any(axis=1))
        expected = np.repeat(expected, (probes[expected] == list_no).sum(axis=1))
        assert_array_equal(rows[bounds[list_no] : bounds[list_no + 1]], expected)
