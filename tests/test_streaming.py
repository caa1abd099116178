"""partial_fit / fit_stream on the estimator, and model files."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
import zarr
from numpy.testing import assert_allclose, assert_array_equal
from sklearn.cluster import MiniBatchKMeans

import kmeans_dask
from kmeans_dask import KMeans


@pytest.fixture
def batches():
    rng = np.random.default_rng(0)
    centers = rng.uniform(-10, 10, size=(5, 3))
    return [centers[rng.integers(0, 5, 400)] + rng.normal(size=(400, 3)) for _ in range(6)]


def _state(model):
    return (
        model.cluster_centers_.copy(),
        model.cluster_weights_.copy(),
        model.n_steps_,
        model.n_features_in_,
    )


def test_partial_fit_matches_sklearn_minibatch(batches):
    init = batches[0][:5].copy()
    ours = KMeans(5, init=init, reassignment_ratio=0.0)
    ref = MiniBatchKMeans(5, init=init, n_init=1, reassignment_ratio=0.0, batch_size=400)
    for batch in batches:
        ours.partial_fit(batch)
        ref.partial_fit(batch)
        assert_allclose(ours.cluster_centers_, ref.cluster_centers_, rtol=1e-10, atol=1e-10)
    assert ours.n_steps_ == ref.n_steps_ == len(batches)
    assert_array_equal(ours.labels_, ref.labels_)
    assert ours.inertia_ == pytest.approx(ref.inertia_, rel=1e-10)


@pytest.mark.parametrize(
    ("bad_batch", "match"),
    [
        (np.ones((10, 4)), "X has 4 features, but KMeans is expecting 3 features"),
        (np.zeros((0, 3)), "0 sample"),
        (np.array([[1.0, np.nan, 2.0]] * 3), r"non-finite.*\(row 0, column 1\)"),
    ],
    ids=["features", "empty", "nan"],
)
def test_rejected_batch_leaves_the_model_unchanged(batches, bad_batch, match):
    model = KMeans(5, random_state=0)
    untouched = KMeans(5, random_state=0)
    for batch in batches[:3]:
        model.partial_fit(batch)
        untouched.partial_fit(batch)
    before = _state(model)
    with pytest.raises(ValueError, match=match):
        model.partial_fit(bad_batch)
    for got, expected in zip(_state(model), before, strict=True):
        assert_array_equal(got, expected)
    # and the stream goes on exactly as if the bad batch had never come
    model.partial_fit(batches[3])
    untouched.partial_fit(batches[3])
    assert_array_equal(model.cluster_centers_, untouched.cluster_centers_)


def test_first_batch_smaller_than_n_clusters_is_refused():
    model = KMeans(8)
    with pytest.raises(ValueError, match="first batch has 5 rows"):
        model.partial_fit(np.random.default_rng(0).normal(size=(5, 2)))
    assert not hasattr(model, "cluster_centers_")


def test_dask_batches_and_weights_are_accepted(batches):
    plain = KMeans(5, random_state=1)
    lazy = KMeans(5, random_state=1)
    for batch in batches:
        weights = np.linspace(0.5, 2.0, len(batch))
        plain.partial_fit(batch, sample_weight=weights)
        lazy.partial_fit(da.from_array(batch, chunks=100), sample_weight=da.from_array(weights))
    assert_array_equal(plain.cluster_centers_, lazy.cluster_centers_)


def test_fit_stream_reads_zarr_batch_by_batch(batches, tmp_path):
    rows = np.concatenate(batches)
    path = str(tmp_path / "stream.zarr")
    zarr.create_array(path, shape=rows.shape, chunks=(250, 3), dtype="f8")[:] = rows
    streamed = KMeans(5, random_state=2, batch_size=400).fit_stream(path)
    by_hand = KMeans(5, random_state=2)
    for batch in batches:
        by_hand.partial_fit(batch)
    assert_array_equal(streamed.cluster_centers_, by_hand.cluster_centers_)
    assert streamed.n_steps_ == len(batches)


def test_partial_fit_after_fit_continues_from_the_fitted_counts(client, batches):
    rows = np.concatenate(batches[:3])
    model = KMeans(5, random_state=0).fit(rows)
    assert model.cluster_weights_.sum() == pytest.approx(len(rows))
    centers_before = model.cluster_centers_.copy()
    model.partial_fit(batches[3])
    moved = np.abs(model.cluster_centers_ - centers_before).max()
    assert 0 < moved < 0.5  # a small step: 400 new rows against 1200 counted ones
    assert model.n_steps_ == 1


def test_save_and_load_round_trip(client, batches, tmp_path):
    rows = np.concatenate(batches)
    model = KMeans(5, random_state=0).fit(rows)
    path = tmp_path / "model.safetensors"
    model.save(path)
    loaded = kmeans_dask.load(path)
    assert loaded.get_params() == model.get_params()
    assert_array_equal(loaded.cluster_centers_, model.cluster_centers_)
    assert loaded.inertia_ == model.inertia_ and loaded.n_iter_ == model.n_iter_
    assert_array_equal(loaded.predict(rows), model.labels_)
    assert loaded.score(rows) == pytest.approx(model.score(rows))
    # streaming goes on from the saved counts exactly as from the live model
    loaded.partial_fit(batches[0])
    model.partial_fit(batches[0])
    assert_array_equal(loaded.cluster_centers_, model.cluster_centers_)


def test_save_and_load_keep_an_init_array_and_feature_names(client, tmp_path):
    pandas = pytest.importorskip("pandas")
    frame = pandas.DataFrame(
        np.random.default_rng(0).normal(size=(200, 2)), columns=["height", "width"]
    )
    init = frame.to_numpy()[:3]
    model = KMeans(3, init=init).fit(frame)
    model.save(tmp_path / "m.safetensors")
    loaded = kmeans_dask.load(tmp_path / "m.safetensors")
    assert_array_equal(loaded.init, init)
    assert list(loaded.feature_names_in_) == ["height", "width"]
    assert_array_equal(loaded.predict(frame), model.labels_)


def test_save_unfitted_and_load_garbage_are_refused(tmp_path):
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        KMeans(3).save(tmp_path / "m.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a model")
    with pytest.raises(ValueError, match=r"junk\.safetensors"):
        kmeans_dask.load(tmp_path / "junk.safetensors")
    with pytest.raises(FileNotFoundError):
        kmeans_dask.load(tmp_path / "missing.safetensors")


# --- batches of another array library (CuPy on a GPU; array-api-strict here) ---------


def _strict(array):
    xp = pytest.importorskip("array_api_strict", reason="array-api-strict is a test dependency")
    return xp.asarray(array)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("weighted", [False, True])
def test_array_api_batches_are_worked_on_in_their_own_memory(batches, dtype, weighted):
    """The stream of array-API batches is the stream of the same NumPy batches; labels_
    stay in the batch's memory."""
    rng = np.random.default_rng(4)
    on_host = KMeans(5, random_state=3, reassignment_ratio=0.2)
    in_place = KMeans(5, random_state=3, reassignment_ratio=0.2)
    for batch in batches:
        batch = batch.astype(dtype)
        weights = rng.uniform(0.5, 2.0, len(batch)) if weighted else None
        on_host.partial_fit(batch, sample_weight=weights)
        in_place.partial_fit(_strict(batch), sample_weight=weights)
        assert type(in_place.labels_).__module__.startswith("array_api_strict")
        assert_array_equal(np.from_dlpack(in_place.labels_), on_host.labels_)
    rtol = 1e-5 if dtype == np.float32 else 1e-12
    assert_allclose(in_place.cluster_centers_, on_host.cluster_centers_, rtol=rtol)
    assert in_place.cluster_centers_.dtype == dtype
    assert_array_equal(in_place.cluster_weights_, on_host.cluster_weights_)
    assert in_place.inertia_ == pytest.approx(on_host.inertia_, rel=rtol)
    assert in_place.n_features_in_ == 3


def test_array_api_batches_carry_on_a_fitted_model_and_stream(batches):
    fitted = KMeans(5, random_state=0).fit(np.vstack(batches[:2]))
    reference = kmeans_dask.KMeans(5, random_state=0).fit(np.vstack(batches[:2]))
    fitted.fit_stream(_strict(batch) for batch in batches[2:])
    reference.fit_stream(batches[2:])
    assert_allclose(fitted.cluster_centers_, reference.cluster_centers_, rtol=1e-12)


@pytest.mark.parametrize(
    ("batch", "error", "match"),
    [
        (lambda b: b[:, :2], ValueError, "X has 2 features, but KMeans is expecting 3"),
        (lambda b: b[0], ValueError, r"Expected a 2D array, got a 1D array of shape \(3,\)"),
        (lambda b: np.where(np.arange(len(b))[:, None] == 7, np.nan, b), ValueError, "row 7"),
        (lambda b: b > 0, None, None),  # booleans are numbers, as for NumPy batches
    ],
)
def test_array_api_batches_are_refused_as_numpy_batches_are(batches, batch, error, match):
    model = KMeans(5, random_state=0).partial_fit(batches[0])
    before = _stream_state(model)
    if error is None:
        model.partial_fit(_strict(batch(batches[1])))
        assert model.n_steps_ == 2
        return
    with pytest.raises(error, match=match):
        model.partial_fit(_strict(batch(batches[1])))
    _assert_same_stream_state(model, before)


# --- a refused stream changes nothing ------------------------------------------------


def _stream_state(model):
    return (
        model.cluster_centers_.copy(),
        model.cluster_weights_.copy(),
        model.n_steps_,
        model.inertia_,
        model.labels_.copy(),
        model._stream,
        model._stream_rng.get_state()[1].copy(),
    )


def _assert_same_stream_state(model, before):
    got = _stream_state(model)
    for value, expected in zip(got, before, strict=True):
        if isinstance(expected, np.ndarray):
            assert_array_equal(value, expected)
        else:
            assert value == expected


def _streaming_model(batches):
    # A high ratio reassigns centres, which draws from the model's generator.
    model = KMeans(5, random_state=0, reassignment_ratio=0.5)
    for batch in batches[:2]:
        model.partial_fit(batch)
    return model


def test_refused_zarr_stream_leaves_the_model_as_it_was_and_names_the_global_row(
    batches, tmp_path
):
    rows = np.concatenate(batches)  # 2400 rows
    rows[1523, 1] = np.inf
    path = str(tmp_path / "bad.zarr")
    zarr.create_array(path, shape=rows.shape, chunks=(500, 3), dtype="f8")[:] = rows
    model = _streaming_model(batches)
    twin = _streaming_model(batches)
    before = _stream_state(model)
    model.set_params(batch_size=100)
    with pytest.raises(ValueError, match=r"1 non-finite value.*\(row 1523, column 1\)"):
        model.fit_stream(path)
    model.set_params(batch_size=65_536)
    _assert_same_stream_state(model, before)
    # The stream goes on exactly as if the refused one had never come.
    for batch in batches[2:4]:
        model.partial_fit(batch)
        twin.partial_fit(batch)
    assert_array_equal(model.cluster_centers_, twin.cluster_centers_)
    assert_array_equal(model.cluster_weights_, twin.cluster_weights_)


@pytest.mark.parametrize(
    ("make_stream", "match"),
    [
        (
            lambda b: ([b[2], b[3], np.where(np.arange(400)[:, None] == 7, np.nan, b[4])], None),
            r"\(row 807, column 0\)",
        ),
        (
            lambda b: (b[2:5], [np.ones(400), np.ones(400), -np.ones(400)]),
            r"weights contains 400 negative or non-finite value\(s\); first at rows 800, 801",
        ),
        (lambda b: (b[2:5], [np.ones(400)] * 2), "sample_weights gave 2 arrays but batches more"),
        (lambda b: (b[2:4], [np.ones(400)] * 3), "sample_weights gave more arrays than batches"),
        (lambda b: ([b[2], b[3][:, :2]], None), "X has 2 features"),
        (lambda b: ([b[2], np.full((400, 3), 1e300)], None), "too large for float64 sums"),
        (lambda b: (b[2:4], [np.ones(400), np.full(400, 1e308)]), "weights sum to inf"),
    ],
    ids=["nan", "weights", "fewer-weights", "more-weights", "width", "huge", "huge-weights"],
)
def test_refused_stream_of_batches_leaves_the_model_as_it_was(batches, make_stream, match):
    model = _streaming_model(batches)
    before = _stream_state(model)
    stream, weights = make_stream(batches)
    with pytest.raises(ValueError, match=match):
        model.fit_stream(stream, sample_weights=weights)
    _assert_same_stream_state(model, before)


def test_refused_first_stream_leaves_the_model_unfitted(batches):
    model = KMeans(5, random_state=np.random.RandomState(3))
    state = model.random_state.get_state()[1].copy()
    with pytest.raises(ValueError, match=r"\(row 400, column 2\)"):
        model.fit_stream([batches[0], np.where(np.arange(400)[:, None] == 0, np.nan, batches[1])])
    assert not hasattr(model, "cluster_centers_") and not hasattr(model, "_stream")
    # The initialisation's draws from the given generator are undone too.
    assert_array_equal(model.random_state.get_state()[1], state)


@pytest.mark.parametrize(
    "batch",
    [np.zeros((4, 3), dtype=complex), np.zeros((4, 1), dtype=[("a", "<i4"), ("b", "<f8")])],
)
def test_a_batch_of_non_real_numbers_is_refused_by_its_dtype(batch):
    from kmeans_dask._fit.streaming import StreamState, minibatch_update

    state = StreamState(np.zeros((2, 3)), np.ones(2))
    with pytest.raises(TypeError, match="batch must be numeric, got dtype"):
        minibatch_update(state, batch, random_state=np.random.RandomState(0))
