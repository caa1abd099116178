"""Model files through the estimator: every valid model saves, loads and predicts the same;
a crafted file sets nothing but the declared, validated attributes."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from numpy.testing import assert_array_equal
from safetensors import safe_open
from safetensors.numpy import save as encode_tensors

import kmeans_dask
from kmeans_dask import KMeans
from kmeans_dask._io import safe_files


@pytest.fixture(scope="module")
def rows() -> np.ndarray:
    rng = np.random.default_rng(0)
    centers = rng.uniform(-5, 5, size=(4, 3))
    return centers[rng.integers(0, 4, 60)] + rng.normal(scale=0.5, size=(60, 3))


# --- every valid model can be saved --------------------------------------------------


def test_model_with_assign_options_saves_and_loads(client, rows, tmp_path):
    model = KMeans(4, assign="ivf", assign_options={"nlist": 2, "nprobe": 1}, random_state=0)
    model.fit(rows)
    model.save(tmp_path / "m.safetensors")
    loaded = kmeans_dask.load(tmp_path / "m.safetensors")
    assert loaded.assign_options == {"nlist": 2, "nprobe": 1}
    assert_array_equal(loaded.predict(rows), model.labels_)


@st.composite
def valid_params(draw, n_rows: int, n_features: int) -> dict:
    """A valid combination of every constructor parameter, NumPy scalars included."""
    n_clusters = draw(st.integers(1, 4))
    backend = draw(st.sampled_from(["auto", "numpy", "faiss-cpu"]))
    assign = draw(st.sampled_from(["exact", "auto", "ivf", "hnsw"]))
    options = None
    if assign == "ivf":
        nlist = draw(st.integers(1, n_clusters))
        options = draw(st.sampled_from([None, {"nlist": nlist}, {"nlist": nlist, "nprobe": 1}]))
    elif assign == "hnsw":
        options = draw(st.sampled_from([None, {"m": 8}, {"m": 4, "ef_search": 16}]))
    exact_numpy = backend != "faiss-cpu" and assign in ("exact", "auto")
    algorithms = ["auto", "lloyd", "hamerly"] if exact_numpy else ["auto", "lloyd"]
    init = draw(st.sampled_from(["k-means||", "k-means++", "random", "array", "list"]))
    if init in ("array", "list"):
        rng = np.random.default_rng(draw(st.integers(0, 2**16)))
        centers = rng.uniform(-5, 5, size=(n_clusters, n_features))
        init = centers if init == "array" else centers.tolist()
        n_init = 1
    else:
        n_init = draw(st.integers(1, 2))
    integer = st.sampled_from([int, np.int64, np.uint16])
    return {
        "n_clusters": draw(integer)(n_clusters),
        "init": init,
        "n_init": n_init,
        "max_iter": draw(st.integers(1, 20)),
        "tol": draw(st.sampled_from([float, np.float32]))(draw(st.sampled_from([0.0, 1e-4]))),
        "random_state": draw(
            st.sampled_from([None, 0, np.int64(7), "RandomState"]).map(
                lambda seed: np.random.RandomState(1) if seed == "RandomState" else seed
            )
        ),
        "backend": backend,
        "assign": assign,
        "assign_options": options,
        "algorithm": draw(st.sampled_from(algorithms)),
        "engine": draw(st.sampled_from(["auto", "tasks", "actors"])),
        "oversampling_factor": draw(st.sampled_from([0.5, 2, 3.5])),
        "init_rounds": draw(st.integers(1, 3)),
        "persist": draw(st.sampled_from([None, True])),
        "batch_size": draw(st.integers(1, 2 * n_rows)),
        "decay": draw(st.sampled_from([1.0, 0.5, np.float64(0.9)])),
        "reassignment_ratio": draw(st.sampled_from([0.0, 0.01, 0.5])),
        "verbose": draw(st.sampled_from([0, False])),
    }


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@settings(
    max_examples=20,
    derandomize=True,
    database=None,
    deadline=None,
    phases=[Phase.explicit, Phase.generate],  # no shrinking: each fit costs ~0.3 s
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(params=valid_params(n_rows=60, n_features=3), streamed=st.booleans())
def test_every_valid_model_saves_loads_and_predicts_the_same(
    client, rows, tmp_path_factory, params, streamed
):
    model = KMeans(**params)
    if streamed:
        model.fit_stream([rows[:30], rows[30:]])
    else:
        model.fit(rows)
    path = tmp_path_factory.mktemp("model") / "m.safetensors"
    model.save(path)
    loaded = kmeans_dask.load(path)
    assert_array_equal(loaded.predict(rows), model.predict(rows))
    assert_array_equal(loaded.cluster_centers_, model.cluster_centers_)
    expected = model.get_params()
    if isinstance(expected["random_state"], np.random.RandomState):
        expected["random_state"] = None  # documented: only integer seeds are stored
    got = loaded.get_params()
    assert_array_equal(np.asarray(got.pop("init")), np.asarray(expected.pop("init")))
    assert got == expected


# --- a crafted file sets only declared, validated attributes --------------------------


def _rewrite(path: Path, mutate) -> None:
    """Rewrite a model file after ``mutate(content, tensors)``, keeping it consistent."""
    with safe_open(path, framework="numpy") as file:
        metadata = file.metadata()
        tensors = {name: file.get_tensor(name) for name in file.keys()}  # noqa: SIM118
    content = json.loads(metadata["content"])
    mutate(content, tensors)
    metadata["content"] = json.dumps(content)
    metadata["sha256"] = safe_files._digest(metadata["content"], tensors)
    path.write_bytes(encode_tensors(tensors, metadata=metadata))


def _set_param(name, value):
    return lambda meta, entries: meta["params"].update({name: value})


def _set_array(name, value):
    return lambda meta, entries: entries.update({name: np.asarray(value)})


CRAFTED = [
    pytest.param(_set_array("predict", np.zeros(3)), r"unexpected tensors \['predict'\]"),
    pytest.param(_set_array("get_params", np.zeros(1)), r"unexpected.*'get_params'"),
    pytest.param(_set_array("cluster_weights_", [1.0, np.nan, 2]), "cluster_weights_.*non-finite"),
    pytest.param(_set_array("cluster_weights_", [1.0, np.inf, 2]), "cluster_weights_.*non-finite"),
    pytest.param(_set_array("cluster_weights_", [1.0, -2.0, 2]), "cluster_weights_.*negative"),
    pytest.param(_set_array("cluster_weights_", [1.0, 2.0]), r"cluster_weights_ has shape \(2,\)"),
    pytest.param(
        _set_array("cluster_weights_", np.ones(3, "f4")),
        "cluster_weights_ has dtype float32, expected float64",
    ),
    pytest.param(_set_param("tol", -1.0), "tol must be >= 0"),
    pytest.param(_set_param("init", "bogus"), "init='bogus' is not supported"),
    pytest.param(_set_param("algorithm", "elkan"), "algorithm='elkan' is not supported"),
    pytest.param(_set_param("n_init", 0), "n_init must be >= 1"),
    pytest.param(_set_param("max_iter", 2.5), "max_iter must be an integer"),
    pytest.param(_set_param("assign_options", 3), "assign_options must be a dict"),
    pytest.param(_set_param("decay", 2.0), "decay must be <= 1"),
]


@pytest.mark.parametrize(("mutate", "match"), CRAFTED)
def test_crafted_model_file_is_refused(client, rows, tmp_path, mutate, match):
    path = tmp_path / "m.safetensors"
    KMeans(3, random_state=0).fit(rows).save(path)
    _rewrite(path, mutate)
    with pytest.raises(ValueError, match=match) as info:
        kmeans_dask.load(path)
    assert str(path) in str(info.value)


def test_loaded_model_has_exactly_the_declared_attributes(client, rows, tmp_path):
    path = tmp_path / "m.safetensors"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        KMeans(3, random_state=0).fit(rows).save(path)
    loaded = kmeans_dask.load(path)
    assert sorted(vars(loaded).keys() - KMeans().get_params().keys()) == [
        "cluster_centers_",
        "cluster_weights_",
        "inertia_",
        "n_features_in_",
        "n_iter_",
        "n_steps_",
    ]
