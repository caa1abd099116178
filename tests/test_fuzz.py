"""Fuzzing the Python API: generated bad input gets a clean, named error and changes nothing.

Hypothesis draws bad data (shapes, dtypes, non-finite and absurd values, NumPy or
Dask), bad weights, bad parameters and bad files, and feeds them to ``fit``,
``predict``, ``partial_fit``, ``fit_stream`` and ``kmeans_dask.load``. Every call
must raise ``ValueError`` or ``TypeError`` (``FileNotFoundError`` for a path that
does not exist) with a message, never another exception and never silently, and
leave the model exactly as it was (its fitted attributes, its parameters and the
state of its random generators) and files as they were. A bad parameter must be
named in the message.
"""

from __future__ import annotations

import os
from pathlib import Path

import dask.array as da
import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, assume, given, settings
from hypothesis import strategies as st
from numpy.testing import assert_array_equal
from sklearn.datasets import make_blobs

import kmeans_dask
from kmeans_dask import KMeans

N_SAMPLES, N_FEATURES, N_CLUSTERS = 30, 3, 3
GOOD, _ = make_blobs(
    n_samples=N_SAMPLES, n_features=N_FEATURES, centers=N_CLUSTERS, random_state=0
)

FUZZ_SETTINGS = settings(
    derandomize=True,
    database=None,
    deadline=None,
    phases=[Phase.explicit, Phase.generate],  # no shrinking: a failure prints its input
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# --- what is drawn -------------------------------------------------------------------


@st.composite
def nonfinite(draw) -> np.ndarray:
    X = GOOD.copy()
    for _ in range(draw(st.integers(1, 3))):
        row, column = draw(st.integers(0, N_SAMPLES - 1)), draw(st.integers(0, N_FEATURES - 1))
        X[row, column] = draw(st.sampled_from([np.nan, np.inf, -np.inf]))
    return X


def _other_width(width: int) -> np.ndarray:
    return np.hstack([GOOD, GOOD])[:, :width]


BAD_SHAPES_AND_TYPES = st.one_of(
    nonfinite(),
    st.sampled_from(
        [
            GOOD[:, 0],  # 1-D
            GOOD[None],  # 3-D
            np.float64(5.0),
            GOOD[:0],  # no rows
            GOOD[:, :0],  # no columns
            np.full((N_SAMPLES, N_FEATURES), "a"),
            GOOD + 1j,
            np.where(np.eye(N_SAMPLES, N_FEATURES, dtype=bool), None, GOOD.astype(object)),
            [[1.0, 2.0, 3.0], [4.0, 5.0]],  # ragged
            "not an array: no such file",
        ]
    ),
)
#: Bad only for a fitted model, whose width is set.
OTHER_WIDTH = st.integers(1, 2 * N_FEATURES).filter(lambda w: w != N_FEATURES).map(_other_width)
#: Too large for float64 sums; a fit and a stream must refuse them.
ABSURD_VALUES = st.sampled_from([GOOD * 1e160, GOOD * 1e200, np.full_like(GOOD, 1e300)])
#: Too large for float32 distances: refused where they set the dtype (fit, first batch).
ABSURD_FLOAT32 = st.just((GOOD * 1e20).astype(np.float32))


@st.composite
def as_dask_sometimes(draw, data: st.SearchStrategy) -> object:
    X = draw(data)
    if draw(st.booleans()) and isinstance(X, np.ndarray) and X.ndim == 2 and X.dtype != object:
        return da.from_array(X, chunks=(draw(st.integers(1, max(1, len(X)))), -1))
    return X


WEIGHT_FAULTS = ("length", "negative", "nan", "inf", "zero", "huge", "text", "2d")


@st.composite
def bad_weights(draw, faults: tuple[str, ...] = WEIGHT_FAULTS) -> object:
    n_rows = N_SAMPLES
    weights = np.ones(n_rows)
    kind = draw(st.sampled_from(faults))
    if kind == "length":
        return np.ones(n_rows + draw(st.sampled_from([-2, -1, 1, 5])))
    if kind in ("negative", "nan", "inf"):
        rows = draw(st.lists(st.integers(0, n_rows - 1), min_size=1, max_size=3))
        weights[rows] = {"negative": -1.0, "nan": np.nan, "inf": np.inf}[kind]
        return weights
    return {
        "zero": np.zeros(n_rows),
        "huge": np.full(n_rows, 1e308),
        "text": np.full(n_rows, "w"),
        "2d": np.ones((n_rows, 2)),
    }[kind]


#: (parameter, a value it does not take): the message must name the parameter.
BAD_PARAMS = st.sampled_from(
    [
        ("n_clusters", 0),
        ("n_clusters", -3),
        ("n_clusters", 2.5),
        ("n_clusters", "3"),
        ("n_clusters", None),
        ("n_clusters", np.float64(3)),
        ("n_init", 0),
        ("max_iter", 0),
        ("max_iter", 1.5),
        ("tol", -1.0),
        ("tol", float("nan")),
        ("tol", float("inf")),
        ("tol", "1e-4"),
        ("init", "kmeans"),
        ("init", 3),
        ("init", np.zeros((N_CLUSTERS + 1, N_FEATURES))),
        ("init", np.zeros((N_CLUSTERS, N_FEATURES + 1))),
        ("init", np.full((N_CLUSTERS, N_FEATURES), np.nan)),
        ("init", np.full((N_CLUSTERS, N_FEATURES), "a")),
        ("backend", "gpu"),
        ("assign", "approx"),
        ("assign_options", "nprobe=4"),
        ("assign_options", [("nprobe", 4)]),
        ("algorithm", "elkan"),
        ("engine", "threads"),
        ("oversampling_factor", 0),
        ("oversampling_factor", -1.0),
        ("init_rounds", 0),
        ("persist", "yes"),
        ("batch_size", 0),
        ("decay", 0.0),
        ("decay", 1.5),
        ("reassignment_ratio", -0.1),
        ("verbose", -1),
    ]
)

# --- the model and what "unchanged" means --------------------------------------------


@pytest.fixture(scope="module")
def fitted_model(cluster) -> KMeans:
    from distributed import Client

    with Client(cluster):
        return KMeans(N_CLUSTERS, random_state=np.random.RandomState(0)).fit(GOOD)


def _snapshot(model: KMeans) -> dict:
    state = {
        name: np.array(value, copy=True) if isinstance(value, np.ndarray) else value
        for name, value in vars(model).items()
        if not isinstance(value, np.random.RandomState)
    }
    generators = {
        name: value.get_state()[1].copy()
        for name, value in vars(model).items()
        if isinstance(value, np.random.RandomState)
    }
    return {"state": state, "generators": generators}


def _assert_same(model: KMeans, before: dict) -> None:
    after = _snapshot(model)
    assert after["state"].keys() == before["state"].keys()
    for name, value in before["state"].items():
        got = after["state"][name]
        if isinstance(value, np.ndarray):
            assert_array_equal(got, value, err_msg=name)
        elif hasattr(value, "__dict__") and not isinstance(value, type):
            assert got is value, name  # an object the model holds was not replaced
        else:
            assert got == value or (got != got and value != value), name
    assert after["generators"].keys() == before["generators"].keys()
    for name, value in before["generators"].items():
        assert_array_equal(after["generators"][name], value, err_msg=name)


def _refused(call, *, name: str | None = None, allow_missing: bool = False) -> None:
    """``call()`` raises a clean error with a message (naming ``name`` if given)."""
    expected = (ValueError, TypeError) + ((FileNotFoundError,) if allow_missing else ())
    with pytest.raises(Exception) as info:
        call()
    assert isinstance(info.value, expected), f"{type(info.value).__name__}: {info.value}"
    message = str(info.value)
    assert message.strip(), f"{type(info.value).__name__} without a message"
    if name is not None:
        assert name in message, message


def _copy(model: KMeans) -> KMeans:
    import copy

    return copy.deepcopy(model)


# --- fit ---------------------------------------------------------------------------


@FUZZ_SETTINGS
@given(
    X=as_dask_sometimes(st.one_of(BAD_SHAPES_AND_TYPES, ABSURD_VALUES, ABSURD_FLOAT32)),
    unfitted=st.booleans(),
)
def test_fit_refuses_bad_data(client, fitted_model, X, unfitted):
    model = KMeans(N_CLUSTERS) if unfitted else _copy(fitted_model)
    before = _snapshot(model)
    _refused(lambda: model.fit(X), allow_missing=isinstance(X, str))
    _assert_same(model, before)


@FUZZ_SETTINGS
@given(weights=bad_weights(), dask_weights=st.booleans(), dask_X=st.booleans())
def test_fit_refuses_bad_weights(client, fitted_model, weights, dask_weights, dask_X):
    model = _copy(fitted_model)
    before = _snapshot(model)
    X = da.from_array(GOOD, chunks=(10, -1)) if dask_X else GOOD
    if dask_weights and weights.dtype.kind == "f" and weights.ndim == 1:
        weights = da.from_array(weights, chunks=7)
    _refused(lambda: model.fit(X, sample_weight=weights))
    _assert_same(model, before)


@FUZZ_SETTINGS
@given(bad=BAD_PARAMS, unfitted=st.booleans())
def test_fit_refuses_bad_params_and_names_them(client, fitted_model, bad, unfitted):
    name, value = bad
    model = KMeans(N_CLUSTERS) if unfitted else _copy(fitted_model)
    model.set_params(**{name: value})
    before = _snapshot(model)
    _refused(lambda: model.fit(GOOD), name=name)
    _assert_same(model, before)


# --- predict, partial_fit, fit_stream --------------------------------------------------


def _predict(model: KMeans, X) -> None:
    labels = model.predict(X)
    if isinstance(labels, da.Array):
        labels.compute()  # a lazy result raises when computed


@FUZZ_SETTINGS
@given(X=as_dask_sometimes(st.one_of(BAD_SHAPES_AND_TYPES, OTHER_WIDTH)))
def test_predict_refuses_bad_data(client, fitted_model, X):
    model = _copy(fitted_model)
    before = _snapshot(model)
    _refused(lambda: _predict(model, X), allow_missing=isinstance(X, str))
    _assert_same(model, before)


def test_lazy_results_of_two_inputs_are_their_own(client, fitted_model):
    """Found by the fuzzing: predict named its output keys "kmeans-predict" for every
    input, so two predictions computed together (or a key still held) shared results."""
    import dask

    X, Y = GOOD, GOOD[::-1].copy()
    lazy = [da.from_array(data, chunks=(10, -1)) for data in (X, Y)]
    labels = dask.compute(*(fitted_model.predict(data) for data in lazy))
    distances = dask.compute(*(fitted_model.transform(data) for data in lazy))
    for data, got, far in zip((X, Y), labels, distances, strict=True):
        assert_array_equal(got, fitted_model.predict(data))
        assert_array_equal(far, fitted_model.transform(data))


@st.composite
def streaming_model(draw, min_batches: int = 0) -> KMeans:
    """Unfitted, fitted, or streaming already (a generator in use)."""
    model = KMeans(N_CLUSTERS, random_state=np.random.RandomState(1), reassignment_ratio=0.5)
    for _ in range(draw(st.integers(min_batches, 2))):
        model.partial_fit(GOOD)
    return model


@FUZZ_SETTINGS
@given(model=streaming_model(), X=st.one_of(BAD_SHAPES_AND_TYPES, ABSURD_VALUES))
def test_partial_fit_refuses_bad_batches(model, X):
    before = _snapshot(model)
    _refused(lambda: model.partial_fit(X), allow_missing=isinstance(X, str))
    _assert_same(model, before)


@FUZZ_SETTINGS
@given(
    model=streaming_model(),
    # A batch of zero weight is refused only as the first (nothing to start from).
    weights=bad_weights(faults=tuple(set(WEIGHT_FAULTS) - {"zero"})),
)
def test_partial_fit_refuses_bad_weights(model, weights):
    before = _snapshot(model)
    _refused(lambda: model.partial_fit(GOOD, sample_weight=weights))
    _assert_same(model, before)


@FUZZ_SETTINGS
@given(X=st.one_of(ABSURD_FLOAT32), weights=st.just(None) | bad_weights(faults=("zero",)))
def test_partial_fit_refuses_a_bad_first_batch(X, weights):
    model = KMeans(N_CLUSTERS, random_state=np.random.RandomState(1))
    before = _snapshot(model)
    if weights is not None:
        X = GOOD
    _refused(lambda: model.partial_fit(X, sample_weight=weights), allow_missing=isinstance(X, str))
    _assert_same(model, before)


@FUZZ_SETTINGS
@given(model=streaming_model(min_batches=1), X=OTHER_WIDTH)
def test_partial_fit_refuses_another_width(model, X):
    before = _snapshot(model)
    _refused(lambda: model.partial_fit(X))
    _assert_same(model, before)


@FUZZ_SETTINGS
@given(
    model=streaming_model(),
    bad=st.one_of(BAD_SHAPES_AND_TYPES, ABSURD_VALUES),
    position=st.integers(0, 2),
)
def test_fit_stream_refuses_a_bad_batch_and_undoes_the_stream(model, bad, position):
    stream = [GOOD, GOOD[::-1], GOOD]
    stream[position] = bad
    before = _snapshot(model)
    _refused(lambda: model.fit_stream(stream), allow_missing=isinstance(bad, str))
    _assert_same(model, before)


@FUZZ_SETTINGS
@given(model=streaming_model(), bad=BAD_PARAMS)
def test_partial_fit_refuses_bad_params_and_names_them(model, bad):
    name, value = bad
    # As scikit-learn's partial_fit, the init array is only read (and checked) by the first.
    assume(not (hasattr(model, "cluster_centers_") and isinstance(value, np.ndarray)))
    model.set_params(**{name: value})
    before = _snapshot(model)
    _refused(lambda: model.partial_fit(GOOD), name=name)
    _assert_same(model, before)


# --- load ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model_bytes(fitted_model, tmp_path_factory) -> bytes:
    path = tmp_path_factory.mktemp("fuzz") / "model.safetensors"
    fitted_model.save(path)
    return path.read_bytes()


@st.composite
def damaged_file(draw, valid: bytes) -> bytes:
    kind = draw(st.sampled_from(["truncate", "flip", "random", "empty", "prefix"]))
    if kind == "truncate":
        return valid[: draw(st.integers(0, len(valid) - 1))]
    if kind == "flip":
        data = bytearray(valid)
        for _ in range(draw(st.integers(1, 8))):
            position = draw(st.integers(0, len(data) - 1))
            data[position] ^= 1 << draw(st.integers(0, 7))
        return bytes(data)
    if kind == "random":
        return draw(st.binary(min_size=1, max_size=2000))
    if kind == "prefix":
        return b"PK\x03\x04" + draw(st.binary(max_size=500))
    return b""


@FUZZ_SETTINGS
@given(data=st.data())
def test_load_refuses_damaged_files_and_leaves_them(model_bytes, tmp_path_factory, data):
    content = data.draw(damaged_file(model_bytes))
    directory = tmp_path_factory.mktemp("load")
    path = directory / "model.safetensors"
    path.write_bytes(content)
    try:
        loaded = kmeans_dask.load(path)
    except (ValueError, TypeError) as exc:
        assert str(path) in str(exc), str(exc)
    else:
        # A flipped bit may land where it changes nothing checkable (a float of the
        # centres, a timestamp): then what loads is a valid model.
        assert np.isfinite(loaded.cluster_centers_).all()
        loaded.predict(GOOD)
    assert path.read_bytes() == content
    assert sorted(os.listdir(directory)) == ["model.safetensors"]


@pytest.mark.parametrize(
    "make_path",
    [
        lambda tmp: tmp / "missing.safetensors",
        lambda tmp: tmp,  # a directory
        lambda tmp: _written(tmp / "x.npy", lambda p: np.save(p, GOOD)),
        lambda tmp: _written(tmp / "x.txt", lambda p: p.write_text("a model?")),
    ],
    ids=["missing", "directory", "npy", "text"],
)
def test_load_refuses_paths_that_hold_no_model(tmp_path, make_path):
    path = make_path(tmp_path)
    _refused(lambda: kmeans_dask.load(path), allow_missing=True)


def _written(path: Path, write) -> Path:
    write(path)
    return path
