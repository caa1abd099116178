"""Model files and checkpoints: round trips, strict refusals, no pickle, atomic writes."""

from __future__ import annotations

import json
import os
import struct
import tracemalloc
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from safetensors import safe_open
from safetensors.numpy import save as encode_tensors

from kmeans_dask._io import safe_files
from kmeans_dask._io.checkpoints import (
    CheckpointState,
    RunProgress,
    read_checkpoint,
    write_checkpoint,
)
from kmeans_dask._io.fingerprint import fit_fingerprint
from kmeans_dask._io.model_files import ModelFile, load_model, save_model
from kmeans_dask._version import __version__

# --- helpers -------------------------------------------------------------------------


def model_kwargs(dtype=np.float64, names: bool = False, init_array: bool = False) -> dict:
    """Arguments of a valid save_model call: 3 clusters, 2 features."""
    centers = np.array([[0.0, 1.0], [2.5, -3.0], [10.0, 4.25]], dtype=dtype)
    params = {
        "n_clusters": 3,
        "init": "k-means||",
        "n_init": 1,
        "max_iter": 300,
        "tol": 1e-4,
        "random_state": 0,
        "backend": "auto",
        "assign": "exact",
        "oversampling_factor": 2.0,
        "init_rounds": 5,
        "verbose": 0,
    }
    if init_array:
        params["init"] = np.array([[0.5, 0.5], [1.0, -1.0], [9.0, 4.0]], dtype=dtype)
    attributes = {"inertia_": 12.375, "n_iter_": 7, "n_features_in_": 2}
    if names:
        attributes["feature_names_in_"] = np.array(["height", "wïdth"], dtype=object)
    return {"params": params, "arrays": {"cluster_centers_": centers}, "attributes": attributes}


def saved_model(tmp_path: Path, **options) -> Path:
    path = tmp_path / "model.safetensors"
    save_model(path, **model_kwargs(**options))
    return path


def read_raw(path: Path) -> tuple[dict[str, str], dict, dict[str, np.ndarray]]:
    """The string map, the content (parsed) and the tensors of a file."""
    with safe_open(path, framework="numpy") as file:
        metadata = file.metadata()
        tensors = {name: file.get_tensor(name) for name in file.keys()}  # noqa: SIM118
    return metadata, json.loads(metadata["content"]), tensors


def write_raw(path: Path, metadata: dict[str, str], tensors: dict[str, np.ndarray]) -> None:
    path.write_bytes(encode_tensors(tensors, metadata=metadata))


def rewrite(path: Path, mutate, *, text=None) -> None:
    """Rewrite a file after ``mutate(content, tensors)`` changed them in place; the
    sha256 is brought up to date, so what is refused is the change itself."""
    metadata, content, tensors = read_raw(path)
    mutate(content, tensors)
    metadata["content"] = json.dumps(content) if text is None else text(content)
    metadata["sha256"] = safe_files._digest(metadata["content"], tensors)
    write_raw(path, metadata, tensors)


def rewrite_metadata(path: Path, **changes) -> None:
    metadata, _, tensors = read_raw(path)
    metadata.update(changes)
    write_raw(path, {k: v for k, v in metadata.items() if v is not None}, tensors)


def refused(path: Path, *fragments: str, loader=load_model) -> str:
    """Assert that loading ``path`` raises a ValueError naming it and each fragment."""
    with pytest.raises(ValueError) as info:
        loader(path)
    message = str(info.value)
    assert str(path) in message
    for fragment in fragments:
        assert fragment in message, message
    assert info.value.__cause__ is None
    return message


def _history(*shifts: float) -> list[dict]:
    return [
        {
            "iteration": i,
            "inertia": 50.25 - i,
            "center_shift": shift,
            "n_empty": i % 2,
            "seconds": 0.01 * i,
        }
        for i, shift in enumerate(shifts, start=1)
    ]


def checkpoint_state(dtype=np.float64, finished: bool = False) -> CheckpointState:
    """Two runs of 2 x 3 centres: the first finished, the second finished or in progress."""
    centers = np.array([[1.0, 2.0, 3.0], [-1.0, 0.5, 7.0]], dtype=dtype)
    return CheckpointState(
        fingerprint=fit_fingerprint({"n_clusters": 2}, 100, 3, dtype),
        seeds=[12345, 2147483646],
        runs=[
            RunProgress(centers[::-1].copy(), _history(3.5, 0.125, 0.0), inertia=41.5),
            RunProgress(centers, _history(2.0, 0.5), inertia=40.25 if finished else None),
        ],
        completed=finished,
    )


def assert_same_state(loaded: CheckpointState, expected: CheckpointState) -> None:
    assert loaded.fingerprint == expected.fingerprint
    assert loaded.seeds == expected.seeds
    assert loaded.completed is expected.completed
    assert len(loaded.runs) == len(expected.runs)
    for got, run in zip(loaded.runs, expected.runs, strict=True):
        assert got.centers.dtype == run.centers.dtype
        np.testing.assert_array_equal(got.centers, run.centers)
        assert got.history == run.history
        assert got.inertia == run.inertia


def directory_listing(path: Path) -> list[str]:
    return sorted(entry.name for entry in path.iterdir())


# --- model files: round trips --------------------------------------------------------


@pytest.mark.parametrize("names", [False, True], ids=["no-names", "feature-names"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_model_round_trip(tmp_path, dtype, names):
    kwargs = model_kwargs(dtype=dtype, names=names)
    path = tmp_path / "model.safetensors"
    save_model(path, **kwargs)
    model = load_model(path)
    assert isinstance(model, ModelFile)
    assert model.format_version == 2
    assert model.library_version == __version__
    assert model.params == kwargs["params"]
    assert list(model.arrays) == ["cluster_centers_"]
    centers = model.arrays["cluster_centers_"]
    assert centers.dtype == np.dtype(dtype) and centers.flags.writeable
    np.testing.assert_array_equal(centers, kwargs["arrays"]["cluster_centers_"])
    expected = {"inertia_": 12.375, "n_iter_": 7, "n_features_in_": 2}
    if names:
        expected["feature_names_in_"] = ["height", "wïdth"]
    assert model.attributes == expected
    assert type(model.attributes["inertia_"]) is float


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_model_round_trip_with_init_array(tmp_path, dtype):
    kwargs = model_kwargs(dtype=dtype, init_array=True)
    path = saved_model(tmp_path, dtype=dtype, init_array=True)
    model = load_model(path)
    init = model.params["init"]
    assert isinstance(init, np.ndarray) and init.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(init, kwargs["params"]["init"])
    assert {k: v for k, v in model.params.items() if k != "init"} == {
        k: v for k, v in kwargs["params"].items() if k != "init"
    }
    # The array is a tensor; the content only names it.
    _, content, tensors = read_raw(path)
    assert "init" not in content["params"]
    assert content["array_params"] == ["init"]
    assert set(tensors) == {"cluster_centers_", "params.init"}


def test_model_file_layout_is_safetensors_with_json_content(tmp_path):
    path = saved_model(tmp_path, names=True)
    metadata, content, tensors = read_raw(path)
    assert sorted(metadata) == ["content", "format", "format_version", "library_version", "sha256"]
    assert metadata["format"] == "kmeans_dask.model"
    assert metadata["format_version"] == "2"
    assert metadata["library_version"] == __version__
    assert sorted(content) == ["array_params", "attributes", "params"]
    assert content["attributes"]["feature_names_in_"] == ["height", "wïdth"]
    assert list(tensors) == ["cluster_centers_"]
    assert tensors["cluster_centers_"].dtype == np.float64


def test_model_save_normalises_numpy_scalars_and_lists(tmp_path):
    kwargs = model_kwargs()
    kwargs["params"].update(n_clusters=np.int64(3), tol=np.float32(0.5), init=[[0, 0]] * 3)
    kwargs["attributes"].update(inertia_=np.float32(2.0), n_iter_=np.int32(4), n_features_in_=2)
    path = tmp_path / "model.safetensors"
    save_model(str(path), **kwargs)
    model = load_model(str(path))
    assert model.params["n_clusters"] == 3 and type(model.params["n_clusters"]) is int
    assert model.params["tol"] == 0.5
    np.testing.assert_array_equal(model.params["init"], np.zeros((3, 2)))
    assert model.attributes["inertia_"] == 2.0 and model.attributes["n_iter_"] == 4


def test_model_save_replaces_an_existing_file(tmp_path):
    path = saved_model(tmp_path)
    kwargs = model_kwargs()
    kwargs["attributes"]["inertia_"] = 1.0
    save_model(path, **kwargs)
    assert load_model(path).attributes["inertia_"] == 1.0
    assert directory_listing(tmp_path) == ["model.safetensors"]


# --- model files: refusals on load ---------------------------------------------------


def test_load_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"model\.safetensors"):
        load_model(tmp_path / "model.safetensors")


def test_load_refuses_extra_tensor(tmp_path):
    path = saved_model(tmp_path)
    rewrite(path, lambda content, tensors: tensors.update(sneaky=np.zeros(3)))
    refused(path, "unexpected tensors ['sneaky']")


def test_load_refuses_missing_tensor(tmp_path):
    path = saved_model(tmp_path)
    rewrite(path, lambda content, tensors: tensors.pop("cluster_centers_"))
    refused(path, "missing tensors ['cluster_centers_']")


def test_load_refuses_missing_init_tensor(tmp_path):
    path = saved_model(tmp_path, init_array=True)
    rewrite(path, lambda content, tensors: tensors.pop("params.init"))
    refused(path, "missing tensors ['params.init']")


def test_load_refuses_a_safetensors_file_of_someone_else(tmp_path):
    path = tmp_path / "other.safetensors"
    write_raw(path, {"format": "pt"}, {"weight": np.zeros((3, 2))})
    refused(path, "format marker is 'pt'", "kmeans_dask.model")
    write_raw(path, {}, {"cluster_centers_": np.zeros((3, 2))})
    refused(path, "format marker is None")


@pytest.mark.parametrize(
    ("centers", "fragment"),
    [
        (np.zeros((4, 2)), "cluster_centers_ has shape (4, 2), but the content makes it (3, 2)"),
        (np.zeros((3, 5)), "cluster_centers_ has shape (3, 5), but the content makes it (3, 2)"),
        (np.zeros(6), "cluster_centers_ has shape (6,)"),
        (np.zeros((3, 2, 1)), "cluster_centers_ has shape (3, 2, 1)"),
    ],
)
def test_load_refuses_centers_inconsistent_with_the_content(tmp_path, centers, fragment):
    path = saved_model(tmp_path)
    rewrite(path, lambda content, tensors: tensors.update(cluster_centers_=centers))
    refused(path, fragment)


@pytest.mark.parametrize(
    ("dtype", "name"),
    [("int64", "int64"), ("int32", "int32"), ("float16", "F16"), ("bool", "BOOL")],
)
def test_load_refuses_wrong_center_dtype(tmp_path, dtype, name):
    path = saved_model(tmp_path)
    rewrite(path, lambda c, tensors: tensors.update(cluster_centers_=np.zeros((3, 2), dtype)))
    refused(path, f"cluster_centers_ has dtype {name}, expected float32 or float64")


def test_load_refuses_non_finite_centers(tmp_path):
    path = saved_model(tmp_path)
    rewrite(path, lambda content, tensors: tensors["cluster_centers_"].__setitem__((1, 0), np.nan))
    refused(path, "cluster_centers_ contains 1 non-finite value(s)")


def test_load_refuses_newer_format_version(tmp_path):
    path = saved_model(tmp_path)
    rewrite_metadata(path, format_version="3", library_version="9.0")
    message = refused(path, "format_version 3", "reads format_version 2", "upgrade")
    assert "9.0" in message


def test_load_refuses_an_older_format_version(tmp_path):
    path = saved_model(tmp_path)
    rewrite_metadata(path, format_version="1")
    refused(path, "format_version 1", "save the model again")


@pytest.mark.parametrize("version", ["0", "-1", "1.0", "", " 2", "02", "²", None])
def test_load_refuses_invalid_format_version(tmp_path, version):
    path = saved_model(tmp_path)
    rewrite_metadata(path, format_version=version)
    refused(path, "format_version")


@pytest.mark.parametrize("marker", ["sklearn.model", "", None])
def test_load_refuses_wrong_format_marker(tmp_path, marker):
    path = saved_model(tmp_path)
    rewrite_metadata(path, format=marker)
    refused(path, "format marker")


@pytest.mark.parametrize(
    "changes",
    [{"extra": "1"}, {"sha256": None}, {"content": None}, {"library_version": None}],
    ids=["extra-field", "no-digest", "no-content", "no-version"],
)
def test_load_refuses_a_string_map_other_than_declared(tmp_path, changes):
    path = saved_model(tmp_path)
    rewrite_metadata(path, **changes)
    refused(path, "its metadata holds")


def test_load_refuses_checkpoint_file(tmp_path):
    path = tmp_path / "checkpoint.safetensors"
    write_checkpoint(path, checkpoint_state())
    refused(path, "checkpoint file", "not a model file")


def test_load_refuses_truncated_file(tmp_path):
    path = saved_model(tmp_path)
    data = path.read_bytes()
    for size in (4, 8, 100, len(data) // 2, len(data) - 10, len(data) - 1):
        truncated = tmp_path / f"truncated-{size}.safetensors"
        truncated.write_bytes(data[:size])
        refused(truncated, "not a readable safetensors file (truncated or corrupted?)")


def test_load_refuses_corrupted_tensor_data(tmp_path):
    path = saved_model(tmp_path)
    data = bytearray(path.read_bytes())
    data[-3] ^= 0x01  # inside the centres' bytes: still a finite float64
    path.write_bytes(bytes(data))
    refused(path, "do not match their sha256 (corrupted?)")


def test_load_refuses_corrupted_content(tmp_path):
    path = saved_model(tmp_path)
    data = path.read_bytes()
    changed = data.replace(b"12.375", b"12.335")  # the inertia, inside the header
    assert changed != data
    path.write_bytes(changed)
    refused(path, "do not match their sha256 (corrupted?)")


def test_load_refuses_random_bytes(tmp_path):
    path = tmp_path / "random.safetensors"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    refused(path, "not a readable safetensors file")


def test_load_refuses_empty_file(tmp_path):
    path = tmp_path / "empty.safetensors"
    path.write_bytes(b"")
    refused(path, "not a readable safetensors file", "header too small")


def test_load_refuses_plain_npy_file(tmp_path):
    path = tmp_path / "centers.npy"
    np.save(path, np.zeros((3, 2)))
    refused(path, "not a readable safetensors file")


def test_load_refuses_directory(tmp_path):
    refused(tmp_path, "directory")


def test_load_refuses_content_that_is_not_json(tmp_path):
    path = saved_model(tmp_path)
    rewrite(path, lambda content, tensors: None, text=lambda content: "{not json")
    refused(path, "not valid JSON")


def test_load_refuses_content_with_nan_constant(tmp_path):
    path = saved_model(tmp_path)
    text = lambda content: json.dumps(content).replace('"inertia_": 12.375', '"inertia_": NaN')  # noqa: E731
    rewrite(path, lambda content, tensors: None, text=text)
    refused(path, "NaN")


def test_load_refuses_an_overflowing_number(tmp_path):
    path = saved_model(tmp_path)
    text = lambda content: json.dumps(content).replace('"inertia_": 12.375', '"inertia_": 1e999')  # noqa: E731
    rewrite(path, lambda content, tensors: None, text=text)
    refused(path, "Expected `float` <= ", "$.attributes.inertia_")


def test_load_refuses_repeated_content_keys(tmp_path):
    path = saved_model(tmp_path)
    text = lambda content: json.dumps(content)[:-1] + ', "params": {}}'  # noqa: E731
    rewrite(path, lambda content, tensors: None, text=text)
    refused(path, "repeats the keys ['params']")


@pytest.mark.parametrize(
    ("section", "name", "value", "fragment"),
    [
        ("attributes", "n_iter_", "7", "$.attributes.n_iter_"),
        ("attributes", "n_iter_", -1, "$.attributes.n_iter_"),
        ("attributes", "n_iter_", 7.0, "$.attributes.n_iter_"),
        ("attributes", "inertia_", "12.375", "$.attributes.inertia_"),
        ("attributes", "inertia_", -1.0, "$.attributes.inertia_"),
        ("attributes", "inertia_", True, "$.attributes.inertia_"),
        ("attributes", "n_features_in_", 0, "$.attributes.n_features_in_"),
        ("attributes", "feature_names_in_", ["a"], "feature_names_in_ has 1 names"),
        ("attributes", "feature_names_in_", ["a", 2], "$.attributes.feature_names_in_[1]"),
        ("attributes", "feature_names_in_", "ab", "$.attributes.feature_names_in_"),
        ("attributes", "history_", [], "unknown field `history_`"),
        ("params", "n_clusters", "3", "'n_clusters' must be an integer >= 1"),
        ("params", "n_clusters", 3.0, "'n_clusters' must be an integer >= 1"),
        ("params", "n_clusters", True, "'n_clusters' must be an integer >= 1"),
        ("params", "tol", [1e-4], "parameter 'tol' is [0.0001]"),
        ("params", "tol", {"value": {"nested": 1e-4}}, "parameter 'tol'"),
        ("params", "assign_options", {"nprobe": [4]}, "parameter 'assign_options'"),
        ("params", "not an identifier", 1, "`key` in `$.params`"),
        ("params", "init", "k-means++", "stored twice"),
    ],
)
def test_load_refuses_content_fields_of_wrong_type(tmp_path, section, name, value, fragment):
    path = saved_model(tmp_path, init_array=name == "init")
    rewrite(path, lambda content, tensors: content[section].update({name: value}))
    refused(path, fragment)


@pytest.mark.parametrize(
    ("mutate", "fragment"),
    [
        (lambda content: content.pop("attributes"), "missing required field `attributes`"),
        (lambda content: content.update(extra_field=1), "unknown field `extra_field`"),
        (lambda content: content.update(params=[]), "$.params"),
        (lambda content: content.update(array_params="init"), "$.array_params"),
        (
            lambda content: (content.update(array_params=["init"]), content["params"].pop("init")),
            "missing tensors ['params.init']",
        ),
        (lambda content: content.update(array_params=["n_init"]), "$.array_params[0]"),
        (lambda content: content.update(array_params=["init", "init"]), "stored twice"),
        (lambda content: content.update(arrays={}), "unknown field `arrays`"),
    ],
    ids=[
        "missing-section",
        "extra-section",
        "params-not-object",
        "array-params-not-list",
        "array-param-without-tensor",
        "array-param-not-declared",
        "array-param-twice",
        "the-0.1.0-arrays-field",
    ],
)
def test_load_refuses_malformed_content(tmp_path, mutate, fragment):
    path = saved_model(tmp_path)
    rewrite(path, lambda content, tensors: mutate(content))
    refused(path, fragment)


# --- bounds: what a file may make us read and allocate -------------------------------


def _crafted(path: Path, header: dict, data: bytes = b"") -> Path:
    text = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text + data)
    return path


def test_load_refuses_a_tensor_declaring_more_than_the_file_holds(tmp_path):
    """A header claiming a huge shape is refused before anything is allocated."""
    path = saved_model(tmp_path)
    metadata, _, _ = read_raw(path)
    header = {
        "__metadata__": metadata,
        "cluster_centers_": {"dtype": "F64", "shape": [3, 2**40], "data_offsets": [0, 48]},
    }
    _crafted(path, header, np.zeros(6).tobytes())
    tracemalloc.start()
    try:
        refused(path, "not a readable safetensors file")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2**20


def test_load_refuses_a_huge_header_without_reading_it(tmp_path):
    path = tmp_path / "huge.safetensors"
    path.write_bytes(struct.pack("<Q", 2**40) + b"{}")
    refused(path, "header too large")


def test_load_refuses_overlapping_or_unknown_dtype_tensors(tmp_path):
    path = tmp_path / "crafted.safetensors"
    overlapping = {
        "a": {"dtype": "F64", "shape": [2], "data_offsets": [0, 16]},
        "b": {"dtype": "F64", "shape": [2], "data_offsets": [0, 16]},
    }
    refused(_crafted(path, overlapping, bytes(16)), "not a readable safetensors file")
    pickled = {"a": {"dtype": "O", "shape": [1], "data_offsets": [0, 8]}}
    refused(_crafted(path, pickled, bytes(8)), "not a readable safetensors file")


def test_load_refuses_a_dtype_numpy_lacks_before_reading_it(tmp_path):
    path = saved_model(tmp_path)
    metadata, _, _ = read_raw(path)
    bfloat16 = {"dtype": "BF16", "shape": [3, 2], "data_offsets": [0, 12]}
    _crafted(path, {"__metadata__": metadata, "cluster_centers_": bfloat16}, bytes(12))
    refused(path, "cluster_centers_ has dtype BF16, expected float32 or float64")


def test_load_refuses_many_tensors(tmp_path):
    path = saved_model(tmp_path)
    rewrite(path, lambda c, tensors: tensors.update({f"a{i}": np.zeros(1) for i in range(3000)}))
    refused(path, "unexpected tensors ['a0', 'a1', ")


# --- no pickle, ever -----------------------------------------------------------------


class _Exploit:
    """Unpickling this runs code that creates the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('pwned')",))


def _exploit_array(marker: Path) -> np.ndarray:
    payload = np.empty((3, 2), dtype=object)
    payload[...] = _Exploit(marker)
    return payload


def test_exploit_payload_is_live(tmp_path):
    """Control: the crafted object array does run code when NumPy unpickles it."""
    marker = tmp_path / "control-marker"
    path = tmp_path / "control.npz"
    np.savez(path, cluster_centers_=_exploit_array(marker))
    assert not marker.exists()
    with np.load(path, allow_pickle=True) as archive:
        archive["cluster_centers_"]
    assert marker.read_text() == "pwned"


@pytest.mark.parametrize("loader", [load_model, read_checkpoint], ids=["model", "checkpoint"])
def test_a_pickled_npz_file_is_refused_without_running_it(tmp_path, loader):
    marker = tmp_path / "marker"
    path = tmp_path / "exploit.npz"
    np.savez(path, cluster_centers_=_exploit_array(marker), centers=_exploit_array(marker))
    refused(path, "kmeans_dask 0.1.0", loader=loader)
    assert not marker.exists()


def test_pickle_bytes_in_a_tensor_are_only_bytes(tmp_path):
    """A tensor holding a pickle is read as numbers, never unpickled."""
    import pickle

    marker = tmp_path / "marker"
    payload = np.frombuffer(pickle.dumps(_Exploit(marker)), dtype=np.uint8)
    path = saved_model(tmp_path)
    rewrite(path, lambda content, tensors: tensors.update(cluster_centers_=payload))
    refused(path, "cluster_centers_ has dtype U8")
    assert not marker.exists()


def test_save_refuses_object_arrays(tmp_path):
    kwargs = model_kwargs()
    kwargs["arrays"]["extra"] = np.array([{"a": 1}], dtype=object)
    with pytest.raises(ValueError, match=r"extra.*dtype object"):
        save_model(tmp_path / "model.safetensors", **kwargs)
    assert directory_listing(tmp_path) == []


# --- model files: refusals on save ---------------------------------------------------


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        (lambda kw: kw["params"].update(random_state=np.random.RandomState(0)), "RandomState"),
        (lambda kw: kw["params"].update(tol=float("nan")), "'tol' is nan; only None"),
        (lambda kw: kw["params"].update(tol=float("inf")), "finite float"),
        (lambda kw: kw["params"].pop("n_clusters"), "n_clusters"),
        (lambda kw: kw["params"].update(init=np.array(["a", "b"])), "'init'"),
        (lambda kw: kw["params"].update(init=np.zeros((2, 2))), "params.init has shape"),
        (lambda kw: kw["arrays"].pop("cluster_centers_"), "cluster_centers_"),
        (lambda kw: kw["arrays"].update(cluster_centers_=np.zeros((2, 2))), "(3, 2)"),
        (lambda kw: kw["arrays"].update(cluster_centers_=np.zeros((3, 2), "i8")), "float32"),
        (lambda kw: kw["arrays"].update(cluster_centers_=np.full((3, 2), np.inf)), "non-finite"),
        (lambda kw: kw["arrays"].update(__metadata__=np.zeros(1)), "__metadata__"),
        (lambda kw: kw["arrays"].update(file=np.zeros(1)), "'file'"),
        (lambda kw: kw["arrays"].update(predict=np.zeros(3)), "unexpected tensors ['predict']"),
        (lambda kw: kw["arrays"].update(cluster_weights_=np.ones(2)), "cluster_weights_"),
        (lambda kw: kw["arrays"].update(cluster_weights_=np.ones(3, "f4")), "float64"),
        (lambda kw: kw["arrays"].update(cluster_weights_=np.array([1.0, -1, 2])), "negative"),
        (lambda kw: kw["arrays"].update(cluster_weights_=np.array([1.0, np.nan, 2])), "finite"),
        (lambda kw: kw["params"].update(tol=[1e-4]), "parameter 'tol' is [0.0001]"),
        (lambda kw: kw["params"].update(assign_options={1: 2}), "with str keys"),
        (lambda kw: kw["params"].update(assign_options={"a": {"b": 1}}), "'assign_options'"),
        (lambda kw: kw["attributes"].update(history_=[]), "history_"),
        (lambda kw: kw["attributes"].pop("inertia_"), "inertia_"),
        (lambda kw: kw["attributes"].update(feature_names_in_=["a", 1]), "feature_names_in_"),
        (lambda kw: kw["attributes"].update(feature_names_in_=["a"]), "feature_names_in_"),
        (lambda kw: kw.update(params=[("n_clusters", 3)]), "params must be a mapping"),
    ],
)
def test_save_refuses_what_cannot_be_stored(tmp_path, change, fragment):
    kwargs = model_kwargs()
    change(kwargs)
    path = tmp_path / "model.safetensors"
    with pytest.raises(ValueError, match="cannot save model") as info:
        save_model(path, **kwargs)
    assert str(path) in str(info.value)
    assert fragment in str(info.value)
    assert directory_listing(tmp_path) == []


def test_save_accepts_none_feature_names(tmp_path):
    kwargs = model_kwargs()
    kwargs["attributes"]["feature_names_in_"] = None
    save_model(tmp_path / "model.safetensors", **kwargs)
    assert "feature_names_in_" not in load_model(tmp_path / "model.safetensors").attributes


# --- atomic writes -------------------------------------------------------------------


def _fail(*args, **kwargs):
    raise OSError("simulated crash")


def test_model_save_crash_before_replace_keeps_previous_file(tmp_path, monkeypatch):
    path = saved_model(tmp_path)
    kwargs = model_kwargs()
    kwargs["attributes"]["inertia_"] = 1.0
    monkeypatch.setattr(os, "replace", _fail)
    with pytest.raises(OSError, match="simulated crash"):
        save_model(path, **kwargs)
    monkeypatch.undo()
    assert load_model(path).attributes["inertia_"] == 12.375
    assert directory_listing(tmp_path) == ["model.safetensors"]


def test_checkpoint_crash_before_replace_keeps_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "fit.ckpt"
    old = checkpoint_state()
    write_checkpoint(path, old)
    new = checkpoint_state(finished=True)
    monkeypatch.setattr(os, "replace", _fail)
    with pytest.raises(OSError, match="simulated crash"):
        write_checkpoint(path, new)
    monkeypatch.undo()
    assert_same_state(read_checkpoint(path), old)
    assert directory_listing(tmp_path) == ["fit.ckpt"]


def test_checkpoint_kill_while_writing_keeps_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "fit.ckpt"
    old = checkpoint_state()
    write_checkpoint(path, old)
    written = []

    def killed(descriptor):
        written.append(os.fstat(descriptor).st_size)
        raise KeyboardInterrupt  # a kill after the data, before it is durable and renamed

    monkeypatch.setattr(os, "fsync", killed)
    with pytest.raises(KeyboardInterrupt):
        write_checkpoint(path, checkpoint_state(finished=True))
    monkeypatch.undo()
    assert written and written[0] > 0
    assert_same_state(read_checkpoint(path), old)
    assert directory_listing(tmp_path) == ["fit.ckpt"]


def test_checkpoint_is_fsynced_before_replace(tmp_path, monkeypatch):
    calls = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        calls.append("fsync")
        return real_fsync(fd)

    def replace(src, dst):
        calls.append(("replace", os.path.dirname(src) == str(tmp_path), Path(src).exists()))
        return real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    write_checkpoint(tmp_path / "fit.ckpt", checkpoint_state())
    assert calls[0] == "fsync"  # the temporary file's data
    assert calls[1] == ("replace", True, True)  # a sibling of the target
    assert calls[2] == "fsync"  # the directory, so that the rename is durable
    monkeypatch.undo()
    assert read_checkpoint(tmp_path / "fit.ckpt") is not None


def test_refused_save_leaves_previous_file_untouched(tmp_path):
    path = saved_model(tmp_path)
    before = path.read_bytes()
    kwargs = model_kwargs()
    kwargs["arrays"]["cluster_centers_"] = np.full((3, 2), np.nan)
    with pytest.raises(ValueError, match="non-finite"):
        save_model(path, **kwargs)
    assert path.read_bytes() == before
    assert directory_listing(tmp_path) == ["model.safetensors"]


# --- checkpoints ---------------------------------------------------------------------


@pytest.mark.parametrize("finished", [True, False], ids=["finished", "in-progress"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_checkpoint_round_trip(tmp_path, dtype, finished):
    path = tmp_path / "fit.ckpt"
    state = checkpoint_state(dtype=dtype, finished=finished)
    write_checkpoint(path, state)
    loaded = read_checkpoint(path)
    assert isinstance(loaded, CheckpointState)
    assert_same_state(loaded, state)
    metadata, content, tensors = read_raw(path)
    assert metadata["format"] == "kmeans_dask.checkpoint"
    assert metadata["format_version"] == "3"
    assert sorted(content) == ["completed", "fingerprint", "runs", "seeds"]
    assert set(tensors) == {"centers"} and tensors["centers"].shape == (2, 2, 3)


def test_checkpoint_of_no_run_round_trips(tmp_path):
    path = tmp_path / "fit.ckpt"
    state = CheckpointState(fingerprint="f", seeds=[1])
    write_checkpoint(path, state)
    assert_same_state(read_checkpoint(path), state)


def test_checkpoint_overwrite_and_completed(tmp_path):
    path = tmp_path / "fit.ckpt"
    write_checkpoint(path, checkpoint_state())
    final = checkpoint_state(finished=True)
    final.runs[1].history.append(_history(2.0, 0.5, 0.25)[-1])
    write_checkpoint(path, final)
    assert_same_state(read_checkpoint(path), final)
    assert directory_listing(tmp_path) == ["fit.ckpt"]


def test_checkpoint_accepts_iteration_records_and_numpy_scalars(tmp_path):
    @dataclass(frozen=True)
    class Record:  # same fields as kmeans_dask._fit.history.IterationRecord
        iteration: int
        inertia: float
        center_shift: float
        n_empty: int
        seconds: float

    state = checkpoint_state()
    state.runs[0].history = [Record(1, 3, np.float64(0.5), np.int64(0), 0.25)]
    state.runs[0].inertia = np.float32(41.5)
    state.seeds = [np.int64(7), 8]
    path = tmp_path / "fit.ckpt"
    write_checkpoint(path, state)
    loaded = read_checkpoint(path)
    assert loaded.runs[0].history == [
        {"iteration": 1, "inertia": 3.0, "center_shift": 0.5, "n_empty": 0, "seconds": 0.25}
    ]
    assert type(loaded.runs[0].history[0]["inertia"]) is float
    assert loaded.seeds == [7, 8] and loaded.runs[0].inertia == 41.5


def test_read_checkpoint_missing_file_gives_none(tmp_path):
    assert read_checkpoint(tmp_path / "nothing.ckpt") is None


def test_checkpoint_fingerprint_mismatch_is_detectable(tmp_path):
    path = tmp_path / "fit.ckpt"
    write_checkpoint(path, checkpoint_state())
    stored = read_checkpoint(path).fingerprint
    assert stored == fit_fingerprint({"n_clusters": 2}, 100, 3, np.float64)
    assert stored != fit_fingerprint({"n_clusters": 3}, 100, 3, np.float64)
    assert stored != fit_fingerprint({"n_clusters": 2}, 101, 3, np.float64)


def _run(s: CheckpointState, position: int = 0) -> RunProgress:
    return s.runs[position]


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        (lambda s: setattr(_run(s), "centers", np.zeros((3, 3))), "share one shape"),
        (lambda s: setattr(_run(s), "centers", np.zeros((2, 3), "f4")), "share one shape"),
        (lambda s: [setattr(r, "centers", np.zeros((2, 3), "i8")) for r in s.runs], "float32"),
        (lambda s: [setattr(r, "centers", np.zeros(3)) for r in s.runs], "centers has shape"),
        (lambda s: setattr(_run(s), "centers", np.full((2, 3), np.nan)), "non-finite"),
        (lambda s: setattr(_run(s), "centers", None), "dtype object"),
        (lambda s: setattr(_run(s), "inertia", -1.0), "$.runs[0].inertia"),
        (lambda s: setattr(_run(s), "inertia", float("nan")), "$.runs[0].inertia"),
        (lambda s: setattr(_run(s), "history", []), "$.runs[0].history"),
        (lambda s: s.runs.append(s.runs[0]), "3 runs but only 2 seeds"),
        (lambda s: s.runs.append("run"), "runs[2] must be a RunProgress"),
        (lambda s: setattr(s, "runs", None), "runs must be a list"),
        (lambda s: setattr(s, "completed", True), "not every run finished"),
        (lambda s: setattr(s, "fingerprint", ""), "$.fingerprint"),
        (lambda s: setattr(s, "completed", "yes"), "$.completed"),
        (lambda s: setattr(s, "seeds", [1.5, 2]), "$.seeds[0]"),
        (lambda s: setattr(s, "seeds", "12"), "$.seeds"),
        (lambda s: _run(s).history.append({"iteration": 3}), "$.runs[0].history[3]"),
        (lambda s: _run(s).history[0].update(inertia=float("inf")), "$.runs[0].history[0]"),
        (lambda s: _run(s).history[0].update(extra=1), "unknown field `extra`"),
        (lambda s: _run(s, 1).history.append([1, 2]), "$.runs[1].history[2]"),
    ],
)
def test_write_checkpoint_refuses_bad_state(tmp_path, change, fragment):
    state = checkpoint_state()
    change(state)
    path = tmp_path / "fit.ckpt"
    with pytest.raises(ValueError, match="cannot write checkpoint") as info:
        write_checkpoint(path, state)
    assert str(path) in str(info.value) and fragment in str(info.value)
    assert directory_listing(tmp_path) == []


def test_write_checkpoint_refuses_other_objects(tmp_path):
    with pytest.raises(TypeError, match="CheckpointState"):
        write_checkpoint(tmp_path / "fit.ckpt", {"run": 1})


def test_read_checkpoint_refuses_model_file(tmp_path):
    path = saved_model(tmp_path)
    refused(path, "model file", "not a checkpoint file", loader=read_checkpoint)


def test_read_checkpoint_refuses_newer_version(tmp_path):
    path = tmp_path / "fit.ckpt"
    write_checkpoint(path, checkpoint_state())
    rewrite_metadata(path, format_version="5")
    refused(path, "format_version 5", "format_version 3", "upgrade", loader=read_checkpoint)


def test_read_checkpoint_refuses_an_older_layout(tmp_path):
    path = tmp_path / "fit.ckpt"
    write_checkpoint(path, checkpoint_state())
    rewrite_metadata(path, format_version="2")
    refused(path, "format_version 2", "delete it to start the fit over", loader=read_checkpoint)


def test_read_checkpoint_refuses_truncated_and_random_files(tmp_path):
    path = tmp_path / "fit.ckpt"
    write_checkpoint(path, checkpoint_state())
    data = path.read_bytes()
    path.write_bytes(data[:100])
    refused(path, "truncated or corrupted", loader=read_checkpoint)
    path.write_bytes(np.random.default_rng(2).bytes(1000))
    refused(path, "not a readable safetensors file", loader=read_checkpoint)


@pytest.mark.parametrize(
    ("mutate", "fragment"),
    [
        (lambda content, tensors: tensors.update(extra=np.zeros(1)), "unexpected tensors"),
        (lambda content, tensors: tensors.pop("centers"), "missing tensors"),
        (lambda content, tensors: tensors.update(centers=np.zeros((1, 2, 3))), "(2, 'any'"),
        (lambda content, tensors: tensors.update(centers=np.zeros((2, 6))), "centers has shape"),
        (lambda content, tensors: content["runs"][0].update(history=[{"iteration": "1"}]), "$."),
        (lambda content, tensors: content["runs"][0].update(inertia="41.5"), "inertia"),
        (lambda content, tensors: content["runs"][0].pop("inertia"), "`inertia`"),
        (lambda content, tensors: content.update(completed=1), "$.completed"),
        (lambda content, tensors: content.pop("seeds"), "`seeds`"),
    ],
    ids=[
        "extra-tensor",
        "missing-tensor",
        "fewer-centres-than-runs",
        "two-dimensional",
        "bad-history",
        "bad-inertia",
        "missing-inertia",
        "bad-completed",
        "missing-field",
    ],
)
def test_read_checkpoint_refuses_tampered_file(tmp_path, mutate, fragment):
    path = tmp_path / "fit.ckpt"
    write_checkpoint(path, checkpoint_state())
    rewrite(path, mutate)
    refused(path, fragment, loader=read_checkpoint)


# --- files written by kmeans_dask 0.1.0 ----------------------------------------------

DATA = Path(__file__).parent / "data"


def test_a_0_1_0_model_file_is_refused_with_the_command_that_converts_it():
    refused(
        DATA / "model-0.1.0.npz",
        "ZIP (.npz) archive",
        "kmeans_dask 0.1.0 model files",
        "kmeans-dask convert OLD.npz NEW.safetensors",
    )


def test_a_0_1_0_checkpoint_is_refused_saying_to_start_over():
    refused(
        DATA / "checkpoint-0.1.0.npz",
        "kmeans_dask 0.1.0 checkpoints",
        "delete it to start the fit over",
        loader=read_checkpoint,
    )


# --- fingerprints --------------------------------------------------------------------

PARAMS = {
    "n_clusters": 8,
    "init": "k-means||",
    "n_init": 1,
    "max_iter": 300,
    "tol": 1e-4,
    "random_state": 0,
    "backend": "auto",
    "assign": "exact",
    "oversampling_factor": 2.0,
    "init_rounds": 5,
}


def test_fingerprint_is_stable():
    digest = fit_fingerprint(PARAMS, 1000, 5, np.float64)
    # Pinned: the canonical form must not change silently (old checkpoints
    # would stop matching).
    assert digest == "417e898b05c93065949f6f0fc93625ab33d6a0ac7e59aa8cd144d324426cc5ef"
    assert len(digest) == 64 and int(digest, 16) >= 0
    assert fit_fingerprint(dict(reversed(PARAMS.items())), 1000, 5, "float64") == digest
    numpy_scalars = {**PARAMS, "n_clusters": np.int64(8), "tol": np.float64(1e-4)}
    assert fit_fingerprint(numpy_scalars, np.int64(1000), 5, np.dtype("<f8")) == digest


def test_fingerprint_of_array_param_depends_only_on_values_dtype_and_shape():
    init = np.arange(10, dtype=np.float64).reshape(5, 2)
    digest = fit_fingerprint({**PARAMS, "init": init}, 100, 2, np.float64)
    assert fit_fingerprint({**PARAMS, "init": init.copy()}, 100, 2, np.float64) == digest
    fortran = np.asfortranarray(init)
    assert fit_fingerprint({**PARAMS, "init": fortran}, 100, 2, np.float64) == digest
    swapped = init.astype(">f8")
    assert fit_fingerprint({**PARAMS, "init": swapped}, 100, 2, np.float64) == digest


def test_fingerprint_of_random_state_follows_its_state():
    first = fit_fingerprint({"random_state": np.random.RandomState(3)}, 10, 2, "f8")
    assert fit_fingerprint({"random_state": np.random.RandomState(3)}, 10, 2, "f8") == first
    assert fit_fingerprint({"random_state": np.random.RandomState(4)}, 10, 2, "f8") != first


@pytest.mark.parametrize(
    "change",
    [
        {"n_clusters": 9},
        {"tol": 1e-3},
        {"tol": 1},  # type matters: 1 is not 1e-4, and an int is not a float
        {"init": "k-means++"},
        {"init": np.zeros((8, 5))},
        {"random_state": None},
        {"random_state": 1},
        {"max_iter": 299},
        {"extra": True},
    ],
    ids=repr,
)
def test_fingerprint_is_sensitive_to_params(change):
    base = fit_fingerprint(PARAMS, 1000, 5, np.float64)
    assert fit_fingerprint({**PARAMS, **change}, 1000, 5, np.float64) != base


def test_fingerprint_is_sensitive_to_data_shape_and_dtype():
    base = fit_fingerprint(PARAMS, 1000, 5, np.float64)
    assert fit_fingerprint(PARAMS, 1001, 5, np.float64) != base
    assert fit_fingerprint(PARAMS, 1000, 6, np.float64) != base
    assert fit_fingerprint(PARAMS, 1000, 5, np.float32) != base


def test_fingerprint_is_sensitive_to_init_array_content_and_dtype():
    init = np.zeros((8, 5))
    base = fit_fingerprint({**PARAMS, "init": init}, 1000, 5, np.float64)
    changed = init.copy()
    changed[7, 4] = 1e-12
    assert fit_fingerprint({**PARAMS, "init": changed}, 1000, 5, np.float64) != base
    as_float32 = init.astype(np.float32)
    assert fit_fingerprint({**PARAMS, "init": as_float32}, 1000, 5, np.float64) != base
    reshaped = init.reshape(5, 8)
    assert fit_fingerprint({**PARAMS, "init": reshaped}, 1000, 5, np.float64) != base


def test_fingerprint_refuses_what_it_cannot_canonicalise():
    with pytest.raises(TypeError, match="random_state"):
        fit_fingerprint({"random_state": object()}, 10, 2, "f8")
    with pytest.raises(TypeError, match="init"):
        fit_fingerprint({"init": np.array([object()])}, 10, 2, "f8")
    with pytest.raises(ValueError, match="n_samples"):
        fit_fingerprint(PARAMS, -1, 2, "f8")
    with pytest.raises(ValueError, match="n_features"):
        fit_fingerprint(PARAMS, 10, True, "f8")
