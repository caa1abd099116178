"""Bad input is refused with the right exception and a message that names the problem.

Every case runs against a model already fitted on good data and checks that
the failing call leaves it exactly as it was. Each table row is
``(input, expected exception type, regex the message must match)``; the
regexes ask for the argument's name, what was expected and the value seen.
Inputs are built by zero-argument factories so each test gets fresh arrays.
"""

from __future__ import annotations

import re

import dask.array as da
import numpy as np
import pytest
import scipy.sparse
from numpy.testing import assert_array_equal
from sklearn.datasets import make_blobs
from sklearn.exceptions import NotFittedError

from kmeans_dask import KMeans
from kmeans_dask._fit.validation import InvalidParameterError

N_SAMPLES, N_FEATURES, N_CLUSTERS, SEED = 40, 3, 3, 0
CHUNKS = (10, N_FEATURES)

_BLOBS, _BLOB_LABELS = make_blobs(
    n_samples=N_SAMPLES,
    n_features=N_FEATURES,
    centers=N_CLUSTERS,
    cluster_std=0.5,
    random_state=SEED,
)
#: One row of each blob: a fixed, cheap initialisation for the reference fit.
INIT_CENTERS = _BLOBS[
    [int(np.flatnonzero(np.equal(_BLOB_LABELS, k))[0]) for k in range(N_CLUSTERS)]
]

FITTED_ATTRIBUTES = ("cluster_centers_", "labels_", "inertia_", "n_iter_", "n_features_in_")

lit = re.escape

# Non-finite messages: the count and the first (row, column) positions.
NAN_5_1_INF_30_2 = lit(
    "Input X contains 2 non-finite value(s) (NaN or infinity); "
    "first at (row 5, column 1), (row 30, column 2)."
)
NOT_FITTED = lit("This KMeans instance is not fitted yet. Call 'fit'")
WRONG_FEATURES_2 = lit("X has 2 features, but KMeans is expecting 3 features as input.")
WRONG_FEATURES_4 = lit("X has 4 features, but KMeans is expecting 3 features as input.")
BAD_WEIGHTS_NEGATIVE = lit(
    "sample_weight contains 2 negative or non-finite value(s); first at rows 3, 17. "
    "Weights must be finite and >= 0."
)
BAD_WEIGHTS_NONFINITE = lit(
    "sample_weight contains 2 negative or non-finite value(s); first at rows 2, 33. "
    "Weights must be finite and >= 0."
)
SPARSE_DASK_BLOCKS = (
    r"Sparse data was passed for X \(a Dask array of scipy\.sparse\..*csr_matrix blocks\), "
    + lit("but dense data is required. Convert its blocks first, e.g. X.map_blocks(lambda block:")
)
WEIGHTS_SHAPE_39 = lit("sample_weight has shape (39,); expected (40,) to match the 40 rows of X")


# --- data factories ------------------------------------------------------------------


def good(n_samples: int = N_SAMPLES, n_features: int = N_FEATURES) -> np.ndarray:
    """Deterministic, finite float64 data (the first columns of the blobs)."""
    if n_features <= N_FEATURES:
        return _BLOBS[:n_samples, :n_features].copy()
    extra = np.arange(n_samples * (n_features - N_FEATURES), dtype=float)
    return np.hstack([_BLOBS[:n_samples], extra.reshape(n_samples, -1)])


def with_values(X: np.ndarray, *cells: tuple[int, int, float]) -> np.ndarray:
    X = X.copy()
    for row, column, value in cells:
        X[row, column] = value
    return X


def nan_and_inf(n_features: int = N_FEATURES) -> np.ndarray:
    """NaN at (5, 1) and +inf at (30, 2): in different 10-row chunks."""
    return with_values(good(n_features=n_features), (5, 1, np.nan), (30, 2, np.inf))


def nonfinite_in_last_chunk() -> np.ndarray:
    """NaN at (31, 0) and -inf at (35, 2): both in rows 30-39, the last 10-row chunk."""
    return with_values(good(), (31, 0, np.nan), (35, 2, -np.inf))


def dask(X: np.ndarray, chunks=CHUNKS) -> da.Array:
    return da.from_array(X, chunks=chunks)


def weights(*cells: tuple[int, float]) -> np.ndarray:
    w = np.ones(N_SAMPLES)
    for row, value in cells:
        w[row] = value
    return w


def strings() -> np.ndarray:
    return np.array([["a", "b", "c"]] * N_SAMPLES)


# --- the fitted model and its snapshot -----------------------------------------------


@pytest.fixture
def fitted(client) -> KMeans:
    """A model fitted on good NumPy data on the shared cluster."""
    model = KMeans(N_CLUSTERS, init=INIT_CENTERS.copy(), random_state=SEED).fit(good())
    assert model.n_features_in_ == N_FEATURES
    return model


def snapshot(model: KMeans) -> dict:
    """The fitted attributes: the objects themselves and copies of their values."""
    return {
        name: (getattr(model, name), np.array(getattr(model, name), copy=True))
        for name in FITTED_ATTRIBUTES
    } | {"__fitted__": sorted(k for k in vars(model) if k.endswith("_"))}


def assert_unchanged(model: KMeans, before: dict) -> None:
    assert sorted(k for k in vars(model) if k.endswith("_")) == before["__fitted__"]
    for name in FITTED_ATTRIBUTES:
        obj, value = before[name]
        assert getattr(model, name) is obj, f"{name} was replaced"
        assert_array_equal(np.asarray(getattr(model, name)), value, err_msg=name)
    # The model still works and agrees with itself.
    assert_array_equal(model.predict(good()), model.labels_)


# --- fit: bad constructor parameters -------------------------------------------------

BAD_PARAMS = [
    # n_clusters
    ({"n_clusters": 0}, InvalidParameterError, lit("n_clusters must be >= 1, got n_clusters=0")),
    ({"n_clusters": -2}, InvalidParameterError, lit("n_clusters must be >= 1, got n_clusters=-2")),
    (
        {"n_clusters": 2.5},
        InvalidParameterError,
        lit("n_clusters must be an integer, got 2.5 of type float"),
    ),
    (
        {"n_clusters": "3"},
        InvalidParameterError,
        lit("n_clusters must be an integer, got '3' of type str"),
    ),
    (
        {"n_clusters": None},
        InvalidParameterError,
        lit("n_clusters must be an integer, got None of type"),
    ),
    (
        {"n_clusters": True},
        InvalidParameterError,
        lit("n_clusters must be an integer, got True of type bool"),
    ),
    # n_init
    ({"n_init": 0}, InvalidParameterError, lit("n_init must be >= 1, got n_init=0")),
    ({"n_init": -1}, InvalidParameterError, lit("n_init must be >= 1, got n_init=-1")),
    (
        {"n_init": 1.5},
        InvalidParameterError,
        lit("n_init must be 'auto' or an integer, got 1.5 of type float"),
    ),
    # max_iter
    ({"max_iter": 0}, InvalidParameterError, lit("max_iter must be >= 1, got max_iter=0")),
    ({"max_iter": -5}, InvalidParameterError, lit("max_iter must be >= 1, got max_iter=-5")),
    (
        {"max_iter": 10.0},
        InvalidParameterError,
        lit("max_iter must be an integer, got 10.0 of type float"),
    ),
    # tol
    ({"tol": -1e-3}, InvalidParameterError, lit("tol must be >= 0.0, got tol=-0.001")),
    ({"tol": -1}, InvalidParameterError, lit("tol must be >= 0.0, got tol=-1")),
    (
        {"tol": "small"},
        InvalidParameterError,
        lit("tol must be a finite real number, got 'small'"),
    ),
    # oversampling_factor
    (
        {"oversampling_factor": 0},
        InvalidParameterError,
        lit("oversampling_factor must be > 0.0, got oversampling_factor=0"),
    ),
    (
        {"oversampling_factor": -1.5},
        InvalidParameterError,
        lit("oversampling_factor must be > 0.0, got oversampling_factor=-1.5"),
    ),
    # init_rounds
    (
        {"init_rounds": 0},
        InvalidParameterError,
        lit("init_rounds must be >= 1, got init_rounds=0"),
    ),
    (
        {"init_rounds": 2.0},
        InvalidParameterError,
        lit("init_rounds must be an integer, got 2.0 of type float"),
    ),
    # names
    (
        {"backend": "gpu"},
        InvalidParameterError,
        r"backend='gpu' is not a known backend; expected one of "
        r"\['auto', 'cupy', 'faiss-cpu', 'faiss-gpu', 'numpy'\]",
    ),
    (
        {"backend": None},
        InvalidParameterError,
        r"backend=None is not a known backend; expected one of \[",
    ),
    (
        {"init": "kmeans"},
        InvalidParameterError,
        lit(
            "init='kmeans' is not supported; expected one of "
            "['k-means||', 'k-means++', 'hybrid', 'random']"
        ),
    ),
    (
        {"init": 3},
        InvalidParameterError,
        r"init must be one of \[.*\] or an array of shape .*, got int",
    ),
    # init_sample_size (checked whatever the init)
    (
        {"init_sample_size": 0},
        InvalidParameterError,
        lit("init_sample_size must be >= 1 when it counts rows, got init_sample_size=0"),
    ),
    (
        {"init": "hybrid", "init_sample_size": 0.0},
        InvalidParameterError,
        lit("init_sample_size as a float is a fraction of the rows and must be in (0, 1], got "),
    ),
    (
        {"init_sample_size": 1.5},
        InvalidParameterError,
        r"must be in \(0, 1\], got init_sample_size=1\.5",
    ),
    (
        {"init_sample_size": float("nan")},
        InvalidParameterError,
        r"in \(0, 1\], got init_sample_size=nan",
    ),
    (
        {"init_sample_size": "10%"},
        InvalidParameterError,
        lit("init_sample_size must be None, an integer >= 1 (rows) or a float in (0, 1] (a "),
    ),
    (
        {"init_sample_size": True},
        InvalidParameterError,
        r"init_sample_size must be None, .* got True of",
    ),
    (
        {"assign": "approx"},
        InvalidParameterError,
        lit(
            "assign='approx' is not supported; expected one of "
            "['exact', 'ivf', 'hnsw', 'candidates', 'auto']"
        ),
    ),
    (
        {"algorithm": "elkan"},
        InvalidParameterError,
        lit("algorithm='elkan' is not supported; expected one of ['auto', 'lloyd', 'hamerly']"),
    ),
    (
        {"engine": "threads"},
        InvalidParameterError,
        lit("engine='threads' is not supported; expected one of ['auto', 'tasks', 'actors']"),
    ),
    (
        {"assign": "candidates", "assign_options": {"exact_final": "no"}},
        TypeError,
        lit("assign_options['exact_final'] must be True or False, got 'no'"),
    ),
    (
        {"algorithm": "hamerly", "assign": "ivf", "assign_options": {"exact_final": False}},
        ValueError,
        r"algorithm='hamerly' needs the exact BLAS search .* would use 'ivf'",
    ),
    (
        {"algorithm": "hamerly", "assign": "ivf"},
        ValueError,
        r"algorithm='hamerly' needs the exact BLAS search .* would use 'ivf'",
    ),
    # init arrays
    (
        {"init": INIT_CENTERS[:2]},
        ValueError,
        lit(
            "The shape of the initial centers (2, 3) does not match the number of clusters 3: "
            "init array has shape (2, 3); expected (n_clusters, n_features) = (3, 3)"
        ),
    ),
    (
        {"init": INIT_CENTERS[:, :2]},
        ValueError,
        lit(
            "The shape of the initial centers (3, 2) does not match the number of features "
            "of the data 3: init array has shape (3, 2); expected (n_clusters, n_features) "
            "= (3, 3)"
        ),
    ),
    (
        {"init": INIT_CENTERS, "n_clusters": 4},
        ValueError,
        lit(
            "The shape of the initial centers (3, 3) does not match the number of clusters 4: "
            "init array has shape (3, 3); expected (n_clusters, n_features) = (4, 3)"
        ),
    ),
    (
        {"init": INIT_CENTERS[0]},
        ValueError,
        lit(
            "The initial centers must be a 2D array, got 1 dimension(s): init array has "
            "shape (3,); expected (n_clusters, n_features) = (3, 3)"
        ),
    ),
    (
        {"init": with_values(INIT_CENTERS, (1, 2, np.nan))},
        ValueError,
        lit("init array contains 1 non-finite values"),
    ),
    (
        {"init": with_values(INIT_CENTERS, (0, 0, np.inf), (2, 1, np.nan))},
        ValueError,
        lit("init array contains 2 non-finite values"),
    ),
    (
        {"init": INIT_CENTERS, "n_init": 2},
        InvalidParameterError,
        lit(
            "n_init=2 but init is an array of centres: with explicit initial centres only "
            "n_init=1 (or 'auto')"
        ),
    ),
    (
        {"init": np.full((3, 3), "a")},
        TypeError,
        lit("init array must be numeric, got dtype <U1"),
    ),
]


def _params_id(params: dict) -> str:
    return "-".join(
        f"{k}={'array' + str(np.shape(v)) if isinstance(v, np.ndarray) else v!r}"
        for k, v in params.items()
    )


@pytest.mark.parametrize(
    ("params", "error", "match"),
    [pytest.param(*row, id=_params_id(row[0])) for row in BAD_PARAMS],
)
def test_fit_bad_params(fitted, params, error, match):
    before = snapshot(fitted)
    good_params = fitted.get_params()
    fitted.set_params(**params)
    with pytest.raises(error, match=match) as info:
        fitted.fit(good())
    assert type(info.value) is error
    fitted.set_params(**good_params)  # so the check can predict (e.g. with a valid backend)
    assert_unchanged(fitted, before)


@pytest.mark.parametrize(
    ("params", "error", "match"),
    [pytest.param(*row, id=_params_id(row[0])) for row in BAD_PARAMS],
)
def test_partial_fit_refuses_what_fit_refuses(params, error, match):
    """One rule for both: a first partial_fit call checks the parameters as fit does."""
    model = KMeans(N_CLUSTERS, init=INIT_CENTERS.copy(), random_state=SEED).set_params(**params)
    with pytest.raises(error, match=match) as info:
        model.partial_fit(good())
    assert type(info.value) is error
    assert not hasattr(model, "cluster_centers_")


TOO_FEW_SAMPLES = [
    pytest.param(lambda: good(5), id="numpy"),
    pytest.param(lambda: dask(good(5), chunks=(2, 3)), id="dask"),
    pytest.param(lambda: da.from_array(good(5), chunks=(2, 3))[da.arange(5) >= 0], id="dask-nan"),
]


@pytest.mark.parametrize("make_X", TOO_FEW_SAMPLES)
@pytest.mark.parametrize("init", ["k-means||", "k-means++", "random"])
def test_fit_more_clusters_than_samples(fitted, make_X, init):
    before = snapshot(fitted)
    fitted.set_params(n_clusters=8, init=init)
    with pytest.raises(ValueError, match=lit("n_samples=5 should be >= n_clusters=8.")):
        fitted.fit(make_X())
    assert_unchanged(fitted, before)


# --- fit: bad X ----------------------------------------------------------------------

BAD_FIT_X = [
    # non-finite values: how many, and where
    pytest.param(nan_and_inf, ValueError, NAN_5_1_INF_30_2, id="nan-inf-numpy"),
    pytest.param(lambda: dask(nan_and_inf()), ValueError, NAN_5_1_INF_30_2, id="nan-inf-dask"),
    pytest.param(
        lambda: dask(nan_and_inf(), chunks=(7, 2)),
        ValueError,
        NAN_5_1_INF_30_2,
        id="nan-inf-dask-uneven-chunks",
    ),
    pytest.param(
        lambda: dask(with_values(good(), (37, 0, -np.inf)), chunks=(7, 3)),
        ValueError,
        lit(
            "Input X contains 1 non-finite value(s) (NaN or infinity); first at (row 37, column 0)"
        ),
        id="neg-inf-dask-offset",
    ),
    pytest.param(
        lambda: np.full((N_SAMPLES, N_FEATURES), np.nan),
        ValueError,
        lit(
            "Input X contains 120 non-finite value(s) (NaN or infinity); first at "
            "(row 0, column 0), (row 0, column 1), (row 0, column 2), "
            "(row 1, column 0), (row 1, column 1)."
        ),
        id="all-nan-numpy",
    ),
    # a different number of features: n_features_in_ must be restored too
    pytest.param(
        lambda: nan_and_inf(n_features=5), ValueError, NAN_5_1_INF_30_2, id="nan-5-features-numpy"
    ),
    pytest.param(
        lambda: dask(nan_and_inf(n_features=4), chunks=(10, 4)),
        ValueError,
        NAN_5_1_INF_30_2,
        id="nan-4-features-dask",
    ),
    # dimensions
    pytest.param(
        lambda: good()[:, 0],
        ValueError,
        r"(?s)Expected 2D array, got 1D array instead.*Reshape your data",
        id="1d-numpy",
    ),
    pytest.param(
        lambda: good().reshape(N_SAMPLES, N_FEATURES, 1),
        ValueError,
        lit("Found array with dim 3, while dim <= 2 is required by KMeans."),
        id="3d-numpy",
    ),
    pytest.param(
        lambda: dask(good()[:, 0], chunks=10),
        ValueError,
        lit("Expected a 2-D array for X, got a 1-D Dask array of shape (40,). Reshape your data"),
        id="1d-dask",
    ),
    pytest.param(
        lambda: dask(good().reshape(N_SAMPLES, N_FEATURES, 1), chunks=(10, 3, 1)),
        ValueError,
        lit("Expected a 2-D array for X, got a 3-D Dask array of shape (40, 3, 1)."),
        id="3d-dask",
    ),
    # empty
    pytest.param(
        lambda: np.empty((0, N_FEATURES)),
        ValueError,
        lit("Found array with 0 sample(s) (shape=(0, 3)) while a minimum of 1 is required"),
        id="0-rows-numpy",
    ),
    pytest.param(
        lambda: np.empty((N_SAMPLES, 0)),
        ValueError,
        lit("Found array with 0 feature(s) (shape=(40, 0)) while a minimum of 1 is required"),
        id="0-columns-numpy",
    ),
    pytest.param(
        lambda: dask(np.empty((0, N_FEATURES))),
        ValueError,
        lit("Found array with 0 sample(s) and 3 feature(s) (shape=(0, 3)) while a minimum of 1"),
        id="0-rows-dask",
    ),
    pytest.param(
        lambda: dask(np.empty((N_SAMPLES, 0)), chunks=(10, 1)),
        ValueError,
        lit("Found array with 40 sample(s) and 0 feature(s) (shape=(40, 0)) while a minimum of 1"),
        id="0-columns-dask",
    ),
    # dtype
    pytest.param(
        strings, ValueError, r"could not convert string to float: .*'a'", id="strings-numpy"
    ),
    pytest.param(
        lambda: strings().astype(object),
        ValueError,
        r"could not convert string to float: .*'a'",
        id="object-strings-numpy",
    ),
    pytest.param(
        lambda: good() + 1j, ValueError, r"^Complex data not supported", id="complex-numpy"
    ),
    pytest.param(
        lambda: dask(strings()),
        TypeError,
        lit(
            "X has dtype <U1; expected a real numeric dtype (float32, float64, integer or boolean)"
        ),
        id="strings-dask",
    ),
    pytest.param(
        lambda: dask(strings().astype(object)),
        TypeError,
        lit("X has dtype object; expected a real numeric dtype"),
        id="object-strings-dask",
    ),
    pytest.param(
        lambda: dask(good() + 1j),
        TypeError,
        lit("X has dtype complex128; expected a real numeric dtype"),
        id="complex-dask",
    ),
    # sparse: refused as scikit-learn refuses what it cannot take, naming the fix
    pytest.param(
        lambda: scipy.sparse.csr_matrix(good()),
        TypeError,
        lit("Sparse data was passed for X, but dense data is required. Use '.toarray()'"),
        id="sparse-scipy",
    ),
    pytest.param(
        lambda: dask(good()).map_blocks(scipy.sparse.csr_matrix),
        TypeError,
        SPARSE_DASK_BLOCKS,
        id="sparse-dask-blocks",
    ),
]


@pytest.mark.parametrize(("make_X", "error", "match"), BAD_FIT_X)
def test_fit_bad_X(fitted, make_X, error, match):
    before = snapshot(fitted)
    # The reference init array has 3 columns; a named init lets data of any width
    # reach the data checks.
    fitted.set_params(init="k-means||")
    with pytest.raises(error, match=match) as info:
        fitted.fit(make_X())
    assert type(info.value) is error
    assert_unchanged(fitted, before)


# --- fit: bad sample_weight ----------------------------------------------------------

BAD_FIT_WEIGHTS = [
    # shape
    pytest.param(good, lambda: np.ones(39), ValueError, WEIGHTS_SHAPE_39, id="short-numpy"),
    pytest.param(
        good,
        lambda: np.ones((N_SAMPLES, 1)),
        ValueError,
        lit("sample_weight has shape (40, 1); expected (40,) to match the 40 rows of X"),
        id="2d-numpy",
    ),
    pytest.param(
        good,
        lambda: dask(np.ones(39), chunks=10),
        ValueError,
        WEIGHTS_SHAPE_39,
        id="short-dask",
    ),
    pytest.param(
        lambda: dask(good()),
        lambda: dask(np.ones(41), chunks=10),
        ValueError,
        lit("sample_weight has shape (41,); expected (40,) to match the 40 rows of X"),
        id="long-dask-dask-X",
    ),
    # negative
    pytest.param(
        good, lambda: weights((3, -1), (17, -2)), ValueError, BAD_WEIGHTS_NEGATIVE, id="neg-numpy"
    ),
    pytest.param(
        good,
        lambda: dask(weights((3, -1), (17, -2)), chunks=10),
        ValueError,
        BAD_WEIGHTS_NEGATIVE,
        id="neg-dask",
    ),
    pytest.param(
        lambda: dask(good()),
        lambda: weights((3, -1), (17, -2)),
        ValueError,
        BAD_WEIGHTS_NEGATIVE,
        id="neg-numpy-dask-X",
    ),
    pytest.param(
        lambda: dask(good()),
        lambda: dask(weights((3, -1), (17, -2)), chunks=7),
        ValueError,
        BAD_WEIGHTS_NEGATIVE,
        id="neg-dask-dask-X-other-chunks",
    ),
    # NaN / inf
    pytest.param(
        good,
        lambda: weights((2, np.nan), (33, np.inf)),
        ValueError,
        BAD_WEIGHTS_NONFINITE,
        id="nan-inf-numpy",
    ),
    pytest.param(
        good,
        lambda: dask(weights((2, np.nan), (33, np.inf)), chunks=10),
        ValueError,
        BAD_WEIGHTS_NONFINITE,
        id="nan-inf-dask",
    ),
    pytest.param(
        lambda: dask(good()),
        lambda: dask(weights((2, -np.inf), (33, np.nan)), chunks=10),
        ValueError,
        BAD_WEIGHTS_NONFINITE,
        id="inf-nan-dask-dask-X",
    ),
    # all zero
    pytest.param(
        good,
        lambda: np.zeros(N_SAMPLES),
        ValueError,
        lit("sample_weight: every weight is zero (they sum to 0); at least one must be positive"),
        id="zero-numpy",
    ),
    pytest.param(
        lambda: dask(good()),
        lambda: da.zeros(N_SAMPLES, chunks=10),
        ValueError,
        r"sample_weight: every weight is zero",
        id="zero-dask-dask-X",
    ),
    pytest.param(
        good, lambda: 0.0, ValueError, r"sample_weight: every weight is zero", id="zero-scalar"
    ),
    # dtype
    pytest.param(
        good,
        lambda: np.full(N_SAMPLES, "a"),
        TypeError,
        lit("sample_weight must be numeric, got dtype <U1"),
        id="strings-numpy",
    ),
]


@pytest.mark.parametrize(("make_X", "make_weights", "error", "match"), BAD_FIT_WEIGHTS)
def test_fit_bad_sample_weight(fitted, make_X, make_weights, error, match):
    before = snapshot(fitted)
    with pytest.raises(error, match=match) as info:
        fitted.fit(make_X(), sample_weight=make_weights())
    assert type(info.value) is error
    assert_unchanged(fitted, before)


# --- predict / transform / score: errors raised by the call --------------------------

BAD_PREDICT_X = [
    *(
        pytest.param(method, make_X, error, match, id=f"{method}-{name}")
        for method in ("predict", "transform", "score")
        for name, make_X, error, match in [
            ("nan-inf-numpy", nan_and_inf, ValueError, NAN_5_1_INF_30_2),
            ("2-features-numpy", lambda: good(n_features=2), ValueError, WRONG_FEATURES_2),
            ("4-features-numpy", lambda: good(n_features=4), ValueError, WRONG_FEATURES_4),
            (
                "2-features-dask",
                lambda: dask(good(n_features=2), chunks=(10, 2)),
                ValueError,
                WRONG_FEATURES_2,
            ),
            (
                "4-features-dask",
                lambda: dask(good(n_features=4), chunks=(10, 2)),
                ValueError,
                WRONG_FEATURES_4,
            ),
            (
                "1d-numpy",
                lambda: good()[:, 0],
                ValueError,
                r"Expected 2D array, got 1D array instead",
            ),
            (
                "1d-dask",
                lambda: dask(good()[:, 0], chunks=10),
                ValueError,
                lit("Expected a 2-D array for X, got a 1-D Dask array of shape (40,)"),
            ),
            (
                "strings-dask",
                lambda: dask(strings()),
                TypeError,
                lit("X has dtype <U1; expected a real numeric dtype"),
            ),
            (
                "sparse-dask-blocks",
                lambda: dask(good()).map_blocks(scipy.sparse.csr_matrix),
                TypeError,
                SPARSE_DASK_BLOCKS,
            ),
        ]
    ),
    # Dask score computes at once, so its error comes from the call itself.
    pytest.param(
        "score",
        lambda: dask(nonfinite_in_last_chunk()),
        ValueError,
        lit(
            "Input X contains 2 non-finite value(s) (NaN or infinity); "
            "first at (row 31, column 0), (row 35, column 2)."
        ),
        id="score-nan-inf-dask",
    ),
]


@pytest.mark.parametrize(("method", "make_X", "error", "match"), BAD_PREDICT_X)
def test_predict_transform_score_bad_X(fitted, method, make_X, error, match):
    before = snapshot(fitted)
    with pytest.raises(error, match=match) as info:
        getattr(fitted, method)(make_X())
    assert type(info.value) is error
    assert_unchanged(fitted, before)


# --- predict / transform on Dask: lazy, the error comes on .compute() ----------------

LAZY_NONFINITE = [
    pytest.param(
        lambda: dask(nonfinite_in_last_chunk()),
        lit(
            "Input X contains 2 non-finite value(s) (NaN or infinity); "
            "first at (row 31, column 0), (row 35, column 2)."
        ),
        id="nan-inf-last-chunk",
    ),
    pytest.param(
        lambda: dask(with_values(good(), (23, 1, np.nan)), chunks=(7, 3)),
        lit(
            "Input X contains 1 non-finite value(s) (NaN or infinity); "
            "first at (row 23, column 1)."
        ),
        id="nan-uneven-chunks",
    ),
]


@pytest.mark.parametrize("method", ["predict", "transform"])
@pytest.mark.parametrize(("make_X", "match"), LAZY_NONFINITE)
def test_dask_predict_nonfinite_raises_on_compute(fitted, method, make_X, match):
    before = snapshot(fitted)
    result = getattr(fitted, method)(make_X())  # builds the graph, reads no data
    assert isinstance(result, da.Array)
    with pytest.raises(ValueError, match=match) as info:
        result.compute()
    assert type(info.value) is ValueError
    assert_unchanged(fitted, before)


# --- predict before fit ----------------------------------------------------------------


@pytest.mark.parametrize("method", ["predict", "transform", "score"])
@pytest.mark.parametrize(
    "make_X", [pytest.param(good, id="numpy"), pytest.param(lambda: dask(good()), id="dask")]
)
def test_not_fitted(client, method, make_X):
    model = KMeans(N_CLUSTERS, random_state=SEED)
    with pytest.raises(NotFittedError, match=NOT_FITTED):
        getattr(model, method)(make_X())
    assert not [k for k in vars(model) if k.endswith("_")]  # still not fitted


# --- score: bad sample_weight ------------------------------------------------------------


BAD_SCORE_WEIGHTS = [
    pytest.param(good, lambda: np.ones(39), ValueError, WEIGHTS_SHAPE_39, id="short-numpy"),
    pytest.param(
        lambda: dask(good()),
        lambda: dask(np.ones(39), chunks=10),
        ValueError,
        WEIGHTS_SHAPE_39,
        id="short-dask-dask-X",
    ),
    pytest.param(
        good, lambda: weights((3, -1), (17, -2)), ValueError, BAD_WEIGHTS_NEGATIVE, id="neg-numpy"
    ),
    pytest.param(
        good,
        lambda: weights((2, np.nan), (33, np.inf)),
        ValueError,
        BAD_WEIGHTS_NONFINITE,
        id="nan-inf-numpy",
    ),
    pytest.param(
        good,
        lambda: dask(weights((3, -1), (17, -2)), chunks=10),
        ValueError,
        BAD_WEIGHTS_NEGATIVE,
        id="neg-dask",
    ),
    pytest.param(
        lambda: dask(good()),
        lambda: weights((3, -1), (17, -2)),
        ValueError,
        BAD_WEIGHTS_NEGATIVE,
        id="neg-numpy-dask-X",
    ),
    pytest.param(
        lambda: dask(good()),
        lambda: dask(weights((2, np.nan), (33, np.inf)), chunks=10),
        ValueError,
        BAD_WEIGHTS_NONFINITE,
        id="nan-inf-dask-dask-X",
    ),
]


@pytest.mark.parametrize(("make_X", "make_weights", "error", "match"), BAD_SCORE_WEIGHTS)
def test_score_bad_sample_weight(fitted, make_X, make_weights, error, match):
    before = snapshot(fitted)
    with pytest.raises(error, match=match) as info:
        fitted.score(make_X(), sample_weight=make_weights())
    assert type(info.value) is error
    assert_unchanged(fitted, before)


# --- other entry points: Zarr, model files, cluster specs, streams, the CLI -----------


def _zarr_input(tmp_path, kind: str) -> str:
    import zarr

    path = str(tmp_path / f"{kind}.zarr")
    if kind == "group":
        zarr.open_group(path, mode="w").create_array("points", shape=(10, 3), dtype="f8")
    elif kind == "flat":
        zarr.create_array(path, shape=(40,), dtype="f4")
    elif kind == "text":
        zarr.create_array(path, shape=(40, 3), dtype=str)
    return path


@pytest.mark.parametrize(
    ("kind", "error", "match"),
    [
        ("missing", FileNotFoundError, r"Zarr input '.*missing\.zarr' does not exist"),
        ("group", ValueError, r"is a Zarr group, not an array.*\['points'\]"),
        ("flat", ValueError, r"Expected a 2-D array for X, got a 1-D Dask array of shape \(40,\)"),
        ("text", TypeError, r"X has dtype .*; expected a real numeric dtype"),
    ],
)
@pytest.mark.parametrize("method", ["fit", "predict", "fit_stream"])
def test_bad_zarr_input(fitted, tmp_path, kind, error, match, method):
    path = _zarr_input(tmp_path, kind)
    before = snapshot(fitted)
    with pytest.raises(error, match=match):
        getattr(fitted, method)(path)
    assert_unchanged(fitted, before)


def _model_file(tmp_path, fitted, damage: str):
    path = tmp_path / "model.safetensors"
    fitted.save(path)
    data = path.read_bytes()
    if damage == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        path.write_bytes(b"\x93NUMPY not really" * 10)
    elif damage in ("extra-key", "missing-key"):
        from safetensors import safe_open
        from safetensors.numpy import save

        with safe_open(path, framework="numpy") as file:
            metadata = file.metadata()
            tensors = {name: file.get_tensor(name) for name in file.keys()}  # noqa: SIM118
        if damage == "extra-key":
            tensors["surprise"] = np.zeros(3)
        else:
            del tensors["cluster_centers_"]
        path.write_bytes(save(tensors, metadata=metadata))
    return path


@pytest.mark.parametrize(
    ("damage", "match"),
    [
        ("truncated", r"model\.safetensors"),
        ("garbage", r"model\.safetensors"),
        ("extra-key", r"surprise"),
        ("missing-key", r"cluster_centers_"),
    ],
)
def test_damaged_model_file_is_refused_and_left_as_is(fitted, tmp_path, damage, match):
    import kmeans_dask

    path = _model_file(tmp_path, fitted, damage)
    content = path.read_bytes()
    with pytest.raises(ValueError, match=match):
        kmeans_dask.load(path)
    assert path.read_bytes() == content


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("kind: local\nn_wrokers: 2\n", r"unknown key 'n_wrokers'.*n_workers"),
        ("kind: nowhere\n", r"kind"),
    ],
)
def test_cluster_spec_with_a_bad_key_starts_nothing(tmp_path, text, match):
    from kmeans_dask.clusters import from_spec

    spec = tmp_path / "spec.yaml"
    spec.write_text(text)
    with pytest.raises(ValueError, match=match):
        from_spec(spec)


def test_unanswering_scheduler_is_named_within_the_timeout(tmp_path, capsys):
    import socket
    import time

    from kmeans_dask.cli import EXIT_FAILURE, main

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        address = f"tcp://127.0.0.1:{probe.getsockname()[1]}"
    np.save(tmp_path / "x.npy", good())
    started = time.monotonic()
    status = main(
        ["fit", str(tmp_path / "x.npy"), "-k", "2", "--scheduler", address, "--timeout", "1"]
    )
    assert status == EXIT_FAILURE and time.monotonic() - started < 30
    assert address in capsys.readouterr().err


@pytest.mark.parametrize(
    ("batch", "error", "match"),
    [
        (
            lambda: with_values(good(), (3, 1, np.nan)),
            ValueError,
            r"non-finite.*\(row 3, column 1\)",
        ),
        (lambda: good()[:0], ValueError, "0 sample"),
        (lambda: good(n_features=N_FEATURES + 1), ValueError, "features"),
    ],
    ids=["nan", "empty", "width"],
)
def test_bad_stream_batch_changes_nothing(fitted, batch, error, match):
    fitted.partial_fit(good())  # a stream in progress
    before = snapshot(fitted)
    weights_before = fitted.cluster_weights_.copy()
    with pytest.raises(error, match=match):
        fitted.partial_fit(batch())
    assert_unchanged(fitted, before)
    assert_array_equal(fitted.cluster_weights_, weights_before)


@pytest.mark.parametrize("dtype", [np.int64, np.int32, np.uint8, bool])
def test_integer_and_boolean_data_fit_as_float64(client, dtype):
    X = (good() * 3).astype(dtype) if dtype is not bool else good() > np.median(good(), axis=0)
    as_int = KMeans(N_CLUSTERS, random_state=SEED).fit(X)
    as_float = KMeans(N_CLUSTERS, random_state=SEED).fit(X.astype(np.float64))
    assert as_int.cluster_centers_.dtype == np.float64
    assert_array_equal(as_int.cluster_centers_, as_float.cluster_centers_)


def test_zero_variance_data_fits_and_warns_when_k_exceeds_distinct_rows(client):
    from sklearn.exceptions import ConvergenceWarning

    constant = np.full((50, N_FEATURES), 7.0)
    single = KMeans(1, random_state=SEED).fit(constant)
    assert single.inertia_ == 0.0
    assert_array_equal(single.cluster_centers_, np.full((1, N_FEATURES), 7.0))
    with pytest.warns(ConvergenceWarning, match=r"distinct clusters \(1\)"):
        several = KMeans(3, random_state=SEED).fit(constant)
    assert np.isfinite(several.cluster_centers_).all()
