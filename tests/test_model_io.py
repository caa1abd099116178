"""Model files and checkpoints: round trips, strict refusals, no pickle, atomic writes."""

from __future__ import annotations

import io
import json
import os
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from kmeans_dask import _model_io
from kmeans_dask._model_io import (
    CheckpointState,
    ModelFile,
    RunProgress,
    fit_fingerprint,
    load_model,
    read_checkpoint,
    save_model,
    write_checkpoint,
)
from kmeans_dask._version import __version__

META = "__metadata__"


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
    path = tmp_path / "model.npz"
    save_model(path, **model_kwargs(**options))
    return path


def read_raw(path: Path) -> tuple[dict, dict[str, np.ndarray]]:
    """The metadata and every other entry of an archive, read without pickle."""
    with np.load(path, allow_pickle=False) as archive:
        entries = {key: archive[key] for key in archive.files}
    metadata = json.loads(entries.pop(META).tobytes().decode("utf-8"))
    return metadata, entries


def rewrite(path: Path, mutate) -> None:
    """Rewrite an archive after ``mutate(metadata, entries)`` changed it in place."""
    metadata, entries = read_raw(path)
    mutate(metadata, entries)
    raw = json.dumps(metadata).encode("utf-8")
    entries[META] = np.frombuffer(raw, dtype=np.uint8)
    np.savez(path, **entries)  # default allow_pickle=True: object arrays get pickled


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
    path = tmp_path / "model.npz"
    save_model(path, **kwargs)
    model = load_model(path)
    assert isinstance(model, ModelFile)
    assert model.format_version == 1
    assert model.library_version == __version__
    assert model.params == kwargs["params"]
    assert list(model.arrays) == ["cluster_centers_"]
    centers = model.arrays["cluster_centers_"]
    assert centers.dtype == np.dtype(dtype)
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
    # The array is an archive entry; the JSON only names it.
    metadata, entries = read_raw(path)
    assert "init" not in metadata["params"]
    assert metadata["array_params"] == ["init"]
    assert set(entries) == {"cluster_centers_", "params.init"}


def test_model_file_layout_is_plain_npz_with_json_metadata(tmp_path):
    path = saved_model(tmp_path, names=True)
    with zipfile.ZipFile(path) as archive:
        assert sorted(archive.namelist()) == ["__metadata__.npy", "cluster_centers_.npy"]
    with np.load(path, allow_pickle=False) as archive:
        assert archive[META].dtype == np.uint8 and archive[META].ndim == 1
    metadata, _ = read_raw(path)
    assert metadata["format"] == "kmeans_dask.model"
    assert metadata["format_version"] == 1
    assert metadata["library_version"] == __version__
    assert metadata["attributes"]["feature_names_in_"] == ["height", "wïdth"]
    assert metadata["arrays"] == {"cluster_centers_": {"shape": [3, 2], "dtype": "<f8"}}


def test_model_save_normalises_numpy_scalars_and_lists(tmp_path):
    kwargs = model_kwargs()
    kwargs["params"].update(n_clusters=np.int64(3), tol=np.float32(0.5), init=[[0, 0]] * 3)
    kwargs["attributes"].update(inertia_=np.float32(2.0), n_iter_=np.int32(4), n_features_in_=2)
    path = tmp_path / "model.npz"
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
    assert directory_listing(tmp_path) == ["model.npz"]


# --- model files: refusals on load ---------------------------------------------------


def test_load_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"model\.npz"):
        load_model(tmp_path / "model.npz")


def test_load_refuses_extra_key(tmp_path):
    path = saved_model(tmp_path)
    rewrite(path, lambda meta, entries: entries.update(sneaky=np.zeros(3)))
    refused(path, "unexpected", "sneaky")


def test_load_refuses_missing_key(tmp_path):
    path = saved_model(tmp_path)
    rewrite(path, lambda meta, entries: entries.pop("cluster_centers_"))
    refused(path, "missing", "cluster_centers_")


def test_load_refuses_missing_init_entry(tmp_path):
    path = saved_model(tmp_path, init_array=True)
    rewrite(path, lambda meta, entries: entries.pop("params.init"))
    refused(path, "missing", "params.init")


def test_load_refuses_archive_without_metadata(tmp_path):
    path = tmp_path / "plain.npz"
    np.savez(path, cluster_centers_=np.zeros((3, 2)))
    refused(path, "__metadata__")


def test_load_refuses_shape_differing_from_metadata(tmp_path):
    path = saved_model(tmp_path)
    rewrite(path, lambda meta, entries: entries.update(cluster_centers_=np.zeros((4, 2))))
    refused(path, "cluster_centers_", "shape (4, 2)", "(3, 2)")


def test_load_refuses_centers_inconsistent_with_params(tmp_path):
    path = saved_model(tmp_path)

    def mutate(meta, entries):
        entries["cluster_centers_"] = np.zeros((4, 2))
        meta["arrays"]["cluster_centers_"]["shape"] = [4, 2]

    rewrite(path, mutate)
    refused(path, "cluster_centers_", "n_clusters", "(3, 2)")


def test_load_refuses_centers_inconsistent_with_n_features(tmp_path):
    path = saved_model(tmp_path)

    def mutate(meta, entries):
        entries["cluster_centers_"] = np.zeros((3, 5))
        meta["arrays"]["cluster_centers_"]["shape"] = [3, 5]

    rewrite(path, mutate)
    refused(path, "n_features_in_")


def test_load_refuses_one_dimensional_centers(tmp_path):
    path = saved_model(tmp_path)

    def mutate(meta, entries):
        entries["cluster_centers_"] = np.zeros(6)
        meta["arrays"]["cluster_centers_"]["shape"] = [6]

    rewrite(path, mutate)
    refused(path, "cluster_centers_", "shape")


def test_load_refuses_dtype_differing_from_metadata(tmp_path):
    path = saved_model(tmp_path)
    rewrite(path, lambda meta, entries: entries.update(cluster_centers_=np.zeros((3, 2), "f4")))
    refused(path, "cluster_centers_", "dtype float32", "float64")


@pytest.mark.parametrize("dtype", ["int64", "float16", "complex128", "bool"])
def test_load_refuses_wrong_center_dtype(tmp_path, dtype):
    path = saved_model(tmp_path)

    def mutate(meta, entries):
        entries["cluster_centers_"] = np.zeros((3, 2), dtype=dtype)
        meta["arrays"]["cluster_centers_"]["dtype"] = np.dtype(dtype).str

    rewrite(path, mutate)
    refused(path, "dtype")


def test_load_refuses_non_numeric_entry(tmp_path):
    path = saved_model(tmp_path)

    def mutate(meta, entries):
        entries["labels"] = np.array(["a", "b"])
        meta["arrays"]["labels"] = {"shape": [2], "dtype": "<U1"}

    rewrite(path, mutate)
    refused(path, "labels", "not a real numeric dtype")


def test_load_refuses_object_array(tmp_path):
    path = saved_model(tmp_path)

    def mutate(meta, entries):
        entries["cluster_centers_"] = np.empty((3, 2), dtype=object)
        meta["arrays"]["cluster_centers_"]["dtype"] = "|O"

    rewrite(path, mutate)
    refused(path, "not a real numeric dtype")


def test_load_refuses_non_finite_centers(tmp_path):
    path = saved_model(tmp_path)

    def mutate(meta, entries):
        entries["cluster_centers_"][1, 0] = np.nan

    rewrite(path, mutate)
    refused(path, "cluster_centers_", "non-finite")


def test_load_refuses_newer_format_version(tmp_path):
    path = saved_model(tmp_path)
    rewrite(path, lambda meta, entries: meta.update(format_version=2, library_version="9.0"))
    message = refused(path, "format_version 2", "format_version 1", "upgrade")
    assert "9.0" in message


@pytest.mark.parametrize("version", [0, -1, "1", 1.0, None, True])
def test_load_refuses_invalid_format_version(tmp_path, version):
    path = saved_model(tmp_path)
    rewrite(path, lambda meta, entries: meta.update(format_version=version))
    refused(path, "format_version")


@pytest.mark.parametrize("marker", ["sklearn.model", None, ["kmeans_dask.model"]])
def test_load_refuses_wrong_format_marker(tmp_path, marker):
    path = saved_model(tmp_path)
    rewrite(path, lambda meta, entries: meta.update(format=marker))
    refused(path, "format marker")


def test_load_refuses_checkpoint_file(tmp_path):
    path = tmp_path / "checkpoint.npz"
    write_checkpoint(path, checkpoint_state())
    refused(path, "checkpoint file", "not a model file")


def test_load_refuses_truncated_file(tmp_path):
    path = saved_model(tmp_path)
    data = path.read_bytes()
    for size in (100, len(data) // 2, len(data) - 10):
        truncated = tmp_path / f"truncated-{size}.npz"
        truncated.write_bytes(data[:size])
        refused(truncated, "truncated or corrupted")


def test_load_refuses_corrupted_entry_data(tmp_path):
    path = saved_model(tmp_path)
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo("cluster_centers_.npy")
    position = info.header_offset + 30 + len(info.filename) + 140  # inside the array data
    data[position] ^= 0xFF
    path.write_bytes(bytes(data))
    refused(path, "truncated or corrupted")  # the CRC check fails


def test_load_refuses_random_bytes(tmp_path):
    path = tmp_path / "random.npz"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    refused(path, "not an .npz archive")


def test_load_refuses_random_bytes_behind_a_zip_signature(tmp_path):
    path = tmp_path / "random.npz"
    path.write_bytes(b"PK\x03\x04" + np.random.default_rng(1).bytes(4096))
    refused(path, "truncated or corrupted")


def test_load_refuses_empty_file(tmp_path):
    path = tmp_path / "empty.npz"
    path.write_bytes(b"")
    refused(path, "empty")


def test_load_refuses_plain_npy_file(tmp_path):
    path = tmp_path / "centers.npy"
    np.save(path, np.zeros((3, 2)))
    refused(path, "not an .npz archive")


def test_load_refuses_directory(tmp_path):
    refused(tmp_path, "directory")


def test_load_refuses_metadata_that_is_not_json(tmp_path):
    path = tmp_path / "model.npz"
    entries = {META: np.frombuffer(b"{not json", dtype=np.uint8), "cluster_centers_": np.zeros(2)}
    np.savez(path, **entries)
    refused(path, "not valid JSON")


def test_load_refuses_metadata_with_nan_constant(tmp_path):
    path = saved_model(tmp_path)
    metadata, entries = read_raw(path)
    text = json.dumps(metadata).replace('"inertia_": 12.375', '"inertia_": NaN')
    entries[META] = np.frombuffer(text.encode(), dtype=np.uint8)
    np.savez(path, **entries)
    refused(path, "NaN")


def test_load_refuses_metadata_of_wrong_dtype(tmp_path):
    path = saved_model(tmp_path)
    metadata, entries = read_raw(path)
    entries[META] = np.frombuffer(json.dumps(metadata).encode(), dtype=np.uint8).astype(np.int64)
    np.savez(path, **entries)
    refused(path, "uint8")


def test_load_refuses_non_npy_entry(tmp_path):
    path = saved_model(tmp_path)
    with zipfile.ZipFile(path, "a") as archive:
        archive.writestr("notes.txt", "hello")
    refused(path, "not .npy arrays", "notes.txt")


@pytest.mark.parametrize(
    ("section", "name", "value", "fragment"),
    [
        ("attributes", "n_iter_", "7", "n_iter_"),
        ("attributes", "n_iter_", -1, "n_iter_"),
        ("attributes", "n_iter_", 7.0, "n_iter_"),
        ("attributes", "inertia_", "12.375", "inertia_"),
        ("attributes", "inertia_", -1.0, "inertia_"),
        ("attributes", "inertia_", True, "inertia_"),
        ("attributes", "n_features_in_", 0, "n_features_in_"),
        ("attributes", "feature_names_in_", ["a"], "feature_names_in_"),
        ("attributes", "feature_names_in_", ["a", 2], "feature_names_in_"),
        ("attributes", "feature_names_in_", "ab", "feature_names_in_"),
        ("attributes", "history_", [], "unknown ['history_']"),
        ("params", "n_clusters", "3", "n_clusters"),
        ("params", "n_clusters", 3.0, "n_clusters"),
        ("params", "tol", [1e-4], "tol"),
        ("params", "tol", {"value": {"nested": 1e-4}}, "tol"),
        ("params", "assign_options", {"nprobe": [4]}, "assign_options"),
        ("params", "not an identifier", 1, "identifier"),
    ],
)
def test_load_refuses_json_fields_of_wrong_type(tmp_path, section, name, value, fragment):
    path = saved_model(tmp_path)
    rewrite(path, lambda meta, entries: meta[section].update({name: value}))
    refused(path, fragment)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda meta: meta.pop("attributes"),
        lambda meta: meta.update(extra_field=1),
        lambda meta: meta.update(params=[]),
        lambda meta: meta.update(library_version=1),
        lambda meta: meta.update(array_params="init"),
        lambda meta: meta.update(array_params=["init"]),
        lambda meta: meta["arrays"]["cluster_centers_"].update(shape=[3, -2]),
        lambda meta: meta["arrays"]["cluster_centers_"].update(dtype="not-a-dtype"),
        lambda meta: meta["arrays"]["cluster_centers_"].update(dtype=8),
        lambda meta: meta["arrays"]["cluster_centers_"].update(order="C"),
    ],
    ids=[
        "missing-section",
        "extra-section",
        "params-not-object",
        "version-not-str",
        "array-params-not-list",
        "array-param-without-entry",
        "negative-shape",
        "unknown-dtype",
        "dtype-not-str",
        "extra-spec-key",
    ],
)
def test_load_refuses_malformed_metadata(tmp_path, mutate):
    path = saved_model(tmp_path)
    rewrite(path, lambda meta, entries: mutate(meta))
    refused(path)


def test_load_refuses_duplicated_metadata_keys(tmp_path):
    path = saved_model(tmp_path)
    metadata, entries = read_raw(path)
    text = json.dumps(metadata)[:-1] + ', "format_version": 1}'
    entries[META] = np.frombuffer(text.encode(), dtype=np.uint8)
    np.savez(path, **entries)
    refused(path, "repeats the key 'format_version'")


def test_load_refuses_entry_declaring_more_data_than_it_holds(tmp_path):
    """A header claiming a huge shape is refused before anything is allocated."""
    path = saved_model(tmp_path)
    huge = (3, 2**40)

    def mutate(meta, entries):
        meta["arrays"]["cluster_centers_"]["shape"] = list(huge)
        meta["attributes"]["n_features_in_"] = huge[1]

    rewrite(path, mutate)
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "<f8", "fortran_order": False, "shape": huge}
    )
    with zipfile.ZipFile(path) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    members["cluster_centers_.npy"] = header.getvalue() + np.zeros(6).tobytes()
    with zipfile.ZipFile(path, "w") as archive:
        for name, content in members.items():
            archive.writestr(name, content)
    refused(path, "cluster_centers_", "holds only", "truncated")


# --- bounds: what a file may make us read and allocate -------------------------------


def _zeros_model(path: Path, n_clusters: int, n_features: int, compressed: bool) -> None:
    """A model file of zeros whose metadata agrees with its (large) centres."""
    kwargs = model_kwargs()
    kwargs["params"]["n_clusters"] = n_clusters
    kwargs["attributes"]["n_features_in_"] = n_features
    metadata, payload = _model_io._model_payload(
        kwargs["params"],
        {"cluster_centers_": np.zeros((n_clusters, n_features))},
        {**kwargs["attributes"]},
    )
    raw = np.frombuffer(json.dumps(metadata).encode("utf-8"), dtype=np.uint8)
    (np.savez_compressed if compressed else np.savez)(path, **{META: raw}, **payload)


def test_load_refuses_a_compressed_file_before_allocating(tmp_path):
    """160 MB of zeros in a file of a few hundred KB: refused without expanding it."""
    import tracemalloc

    path = tmp_path / "bomb.npz"
    _zeros_model(path, 20_000, 1000, compressed=True)
    assert path.stat().st_size < 2**20
    tracemalloc.start()
    try:
        refused(path, "is compressed", "uncompressed")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2**20
    # Control: stored uncompressed, the same model loads.
    _zeros_model(path, 200, 10, compressed=False)
    assert load_model(path).arrays["cluster_centers_"].shape == (200, 10)


def _patch_central_directory(path: Path, name: str, size: int) -> None:
    """Make the ZIP directory declare ``size`` bytes (stored and expanded) for ``name``."""
    data = bytearray(path.read_bytes())
    start = data.index(b"PK\x01\x02")
    while True:
        name_length = int.from_bytes(data[start + 28 : start + 30], "little")
        if data[start + 46 : start + 46 + name_length] == name.encode():
            break
        start = data.index(b"PK\x01\x02", start + 1)
    data[start + 20 : start + 28] = size.to_bytes(4, "little") * 2
    path.write_bytes(bytes(data))


def test_load_refuses_entries_declaring_more_than_the_file_holds(tmp_path):
    path = saved_model(tmp_path)
    _patch_central_directory(path, "cluster_centers_.npy", 2**31)
    refused(path, "declare", "more than the file")


def test_load_refuses_many_entries_before_reading_the_directory(tmp_path, monkeypatch):
    """The entry count comes from the ZIP end record: refused in constant time."""
    path = tmp_path / "many.npz"
    with zipfile.ZipFile(path, "w") as archive:
        for i in range(3000):
            archive.writestr(f"a{i}.npy", b"")

    def not_parsed(*args, **kwargs):
        raise AssertionError("the archive's directory was parsed")

    monkeypatch.setattr(zipfile.ZipFile, "__init__", not_parsed)
    refused(path, "declares 3000 entries", "more than the 16")


def test_load_refuses_duplicated_entries(tmp_path):
    path = saved_model(tmp_path)
    with zipfile.ZipFile(path) as archive:
        members = [(info.filename, archive.read(info)) for info in archive.infolist()]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # zipfile warns of the duplicate
        with zipfile.ZipFile(path, "w") as archive:
            for name, content in [*members[:2], members[1]]:
                archive.writestr(name, content)
    refused(path, "duplicated entries")


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


@pytest.mark.parametrize("declared", ["<f8", "|O"], ids=["claims-float64", "claims-object"])
def test_load_refuses_pickled_object_array_without_running_it(tmp_path, declared):
    marker = tmp_path / "marker"
    path = saved_model(tmp_path)

    def mutate(meta, entries):
        entries["cluster_centers_"] = _exploit_array(marker)
        meta["arrays"]["cluster_centers_"]["dtype"] = declared

    rewrite(path, mutate)
    with zipfile.ZipFile(path) as archive:  # the file really holds a pickle
        assert b"exec" in archive.read("cluster_centers_.npy")
    refused(path, "cluster_centers_")
    assert not marker.exists()


def test_read_checkpoint_refuses_pickled_object_array_without_running_it(tmp_path):
    marker = tmp_path / "marker"
    path = tmp_path / "checkpoint.npz"
    write_checkpoint(path, checkpoint_state())
    rewrite(path, lambda meta, entries: entries.update(centers=_exploit_array(marker)))
    refused(path, "centers", loader=read_checkpoint)
    assert not marker.exists()


def test_save_refuses_object_arrays(tmp_path):
    kwargs = model_kwargs()
    kwargs["arrays"]["extra"] = np.array([{"a": 1}], dtype=object)
    with pytest.raises(ValueError, match=r"extra.*dtype object"):
        save_model(tmp_path / "model.npz", **kwargs)
    assert directory_listing(tmp_path) == []


# --- model files: refusals on save ---------------------------------------------------


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        (lambda kw: kw["params"].update(random_state=np.random.RandomState(0)), "RandomState"),
        (lambda kw: kw["params"].update(tol=float("nan")), "finite"),
        (lambda kw: kw["params"].pop("n_clusters"), "n_clusters"),
        (lambda kw: kw["params"].update(init=np.array(["a", "b"])), "'init'"),
        (lambda kw: kw["params"].update(init=np.zeros((2, 2))), "params.init has shape"),
        (lambda kw: kw["arrays"].pop("cluster_centers_"), "cluster_centers_"),
        (lambda kw: kw["arrays"].update(cluster_centers_=np.zeros((2, 2))), "n_clusters"),
        (lambda kw: kw["arrays"].update(cluster_centers_=np.zeros((3, 2), "i8")), "float32"),
        (lambda kw: kw["arrays"].update(cluster_centers_=np.full((3, 2), np.inf)), "non-finite"),
        (lambda kw: kw["arrays"].update(__metadata__=np.zeros(1)), "__metadata__"),
        (lambda kw: kw["arrays"].update(file=np.zeros(1)), "'file'"),
        (lambda kw: kw["arrays"].update(predict=np.zeros(3)), "unexpected array entries"),
        (lambda kw: kw["arrays"].update(cluster_weights_=np.ones(2)), "cluster_weights_"),
        (lambda kw: kw["arrays"].update(cluster_weights_=np.ones(3, "f4")), "float64"),
        (lambda kw: kw["arrays"].update(cluster_weights_=np.array([1.0, -1, 2])), "negative"),
        (lambda kw: kw["arrays"].update(cluster_weights_=np.array([1.0, np.nan, 2])), "finite"),
        (lambda kw: kw["params"].update(tol=[1e-4]), "'tol' is of type list"),
        (lambda kw: kw["params"].update(assign_options={1: 2}), "assign_options"),
        (lambda kw: kw["params"].update(assign_options={"a": {"b": 1}}), "assign_options"),
        (lambda kw: kw["attributes"].update(history_=[]), "history_"),
        (lambda kw: kw["attributes"].pop("inertia_"), "inertia_"),
        (lambda kw: kw["attributes"].update(feature_names_in_=["a", 1]), "feature_names_in_"),
        (lambda kw: kw["attributes"].update(feature_names_in_=["a"]), "feature_names_in_"),
    ],
)
def test_save_refuses_what_cannot_be_stored(tmp_path, change, fragment):
    kwargs = model_kwargs()
    change(kwargs)
    path = tmp_path / "model.npz"
    with pytest.raises(ValueError, match="cannot save model") as info:
        save_model(path, **kwargs)
    assert str(path) in str(info.value)
    assert fragment in str(info.value)
    assert directory_listing(tmp_path) == []


def test_save_accepts_none_feature_names(tmp_path):
    kwargs = model_kwargs()
    kwargs["attributes"]["feature_names_in_"] = None
    save_model(tmp_path / "model.npz", **kwargs)
    assert "feature_names_in_" not in load_model(tmp_path / "model.npz").attributes


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
    assert directory_listing(tmp_path) == ["model.npz"]


def test_checkpoint_crash_before_replace_keeps_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.npz"
    old = checkpoint_state()
    write_checkpoint(path, old)
    new = checkpoint_state(finished=True)
    monkeypatch.setattr(os, "replace", _fail)
    with pytest.raises(OSError, match="simulated crash"):
        write_checkpoint(path, new)
    monkeypatch.undo()
    assert_same_state(read_checkpoint(path), old)
    assert directory_listing(tmp_path) == ["checkpoint.npz"]


def test_checkpoint_crash_while_writing_keeps_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.npz"
    old = checkpoint_state()
    write_checkpoint(path, old)

    def half_written(file, *args, **kwargs):
        file.write(b"PK\x03\x04 half an archive")
        raise KeyboardInterrupt  # a kill in the middle of np.savez

    monkeypatch.setattr(np, "savez", half_written)
    with pytest.raises(KeyboardInterrupt):
        write_checkpoint(path, checkpoint_state(finished=True))
    monkeypatch.undo()
    assert_same_state(read_checkpoint(path), old)
    assert directory_listing(tmp_path) == ["checkpoint.npz"]


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
    write_checkpoint(tmp_path / "checkpoint.npz", checkpoint_state())
    assert calls[0] == "fsync"  # the temporary file's data
    assert calls[1] == ("replace", True, True)  # a sibling of the target
    monkeypatch.undo()
    assert read_checkpoint(tmp_path / "checkpoint.npz") is not None


def test_refused_save_leaves_previous_file_untouched(tmp_path):
    path = saved_model(tmp_path)
    before = path.read_bytes()
    kwargs = model_kwargs()
    kwargs["arrays"]["cluster_centers_"] = np.full((3, 2), np.nan)
    with pytest.raises(ValueError, match="non-finite"):
        save_model(path, **kwargs)
    assert path.read_bytes() == before
    assert directory_listing(tmp_path) == ["model.npz"]


# --- checkpoints ---------------------------------------------------------------------


@pytest.mark.parametrize("finished", [True, False], ids=["finished", "in-progress"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_checkpoint_round_trip(tmp_path, dtype, finished):
    path = tmp_path / "checkpoint.npz"
    state = checkpoint_state(dtype=dtype, finished=finished)
    write_checkpoint(path, state)
    loaded = read_checkpoint(path)
    assert isinstance(loaded, CheckpointState)
    assert_same_state(loaded, state)
    metadata, entries = read_raw(path)
    assert metadata["format"] == "kmeans_dask.checkpoint"
    assert metadata["format_version"] == 2
    assert set(entries) == {"centers"} and entries["centers"].shape == (2, 2, 3)


def test_checkpoint_of_no_run_round_trips(tmp_path):
    path = tmp_path / "checkpoint.npz"
    state = CheckpointState(fingerprint="f", seeds=[1])
    write_checkpoint(path, state)
    assert_same_state(read_checkpoint(path), state)


def test_checkpoint_overwrite_and_completed(tmp_path):
    path = tmp_path / "checkpoint.npz"
    write_checkpoint(path, checkpoint_state())
    final = checkpoint_state(finished=True)
    final.runs[1].history.append(_history(2.0, 0.5, 0.25)[-1])
    write_checkpoint(path, final)
    assert_same_state(read_checkpoint(path), final)
    assert directory_listing(tmp_path) == ["checkpoint.npz"]


def test_checkpoint_accepts_iteration_records_and_numpy_scalars(tmp_path):
    @dataclass(frozen=True)
    class Record:  # same fields as kmeans_dask._fit.lloyd.IterationRecord
        iteration: int
        inertia: float
        center_shift: float
        n_empty: int
        seconds: float

    state = checkpoint_state()
    state.runs[0].history = [Record(1, 3, np.float64(0.5), np.int64(0), 0.25)]
    state.runs[0].inertia = np.float32(41.5)
    state.seeds = [np.int64(7), 8]
    path = tmp_path / "checkpoint.npz"
    write_checkpoint(path, state)
    loaded = read_checkpoint(path)
    assert loaded.runs[0].history == [
        {"iteration": 1, "inertia": 3.0, "center_shift": 0.5, "n_empty": 0, "seconds": 0.25}
    ]
    assert type(loaded.runs[0].history[0]["inertia"]) is float
    assert loaded.seeds == [7, 8] and loaded.runs[0].inertia == 41.5


def test_read_checkpoint_missing_file_gives_none(tmp_path):
    assert read_checkpoint(tmp_path / "nothing.npz") is None


def test_checkpoint_fingerprint_mismatch_is_detectable(tmp_path):
    path = tmp_path / "checkpoint.npz"
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
        (lambda s: [setattr(r, "centers", np.zeros(3)) for r in s.runs], "3-D"),
        (lambda s: setattr(_run(s), "centers", np.full((2, 3), np.nan)), "non-finite"),
        (lambda s: setattr(_run(s), "centers", None), "dtype object"),
        (lambda s: setattr(_run(s), "inertia", -1.0), "runs[0]['inertia']"),
        (lambda s: setattr(_run(s), "inertia", float("nan")), "runs[0].inertia"),
        (lambda s: setattr(_run(s), "history", []), "empty"),
        (lambda s: s.runs.append(s.runs[0]), "3 runs but only 2 seeds"),
        (lambda s: s.runs.append("run"), "runs[2] must be a RunProgress"),
        (lambda s: setattr(s, "runs", None), "runs must be a list"),
        (lambda s: setattr(s, "completed", True), "not every run finished"),
        (lambda s: setattr(s, "fingerprint", ""), "fingerprint"),
        (lambda s: setattr(s, "completed", "yes"), "completed"),
        (lambda s: setattr(s, "seeds", [1.5, 2]), "seeds"),
        (lambda s: setattr(s, "seeds", "12"), "seeds"),
        (lambda s: _run(s).history.append({"iteration": 3}), "history'][3]"),
        (lambda s: _run(s).history[0].update(inertia=float("inf")), "runs[0].history[0]"),
        (lambda s: _run(s).history[0].update(extra=1), "history'][0]"),
        (lambda s: _run(s, 1).history.append([1, 2]), "runs[1].history[2]"),
    ],
)
def test_write_checkpoint_refuses_bad_state(tmp_path, change, fragment):
    state = checkpoint_state()
    change(state)
    path = tmp_path / "checkpoint.npz"
    with pytest.raises(ValueError, match="cannot write checkpoint") as info:
        write_checkpoint(path, state)
    assert str(path) in str(info.value) and fragment in str(info.value)
    assert directory_listing(tmp_path) == []


def test_write_checkpoint_refuses_other_objects(tmp_path):
    with pytest.raises(TypeError, match="CheckpointState"):
        write_checkpoint(tmp_path / "checkpoint.npz", {"run": 1})


def test_read_checkpoint_refuses_model_file(tmp_path):
    path = saved_model(tmp_path)
    refused(path, "model file", "not a checkpoint file", loader=read_checkpoint)


def test_read_checkpoint_refuses_newer_version(tmp_path):
    path = tmp_path / "checkpoint.npz"
    write_checkpoint(path, checkpoint_state())
    rewrite(path, lambda meta, entries: meta.update(format_version=5))
    refused(path, "format_version 5", "format_version 2", loader=read_checkpoint)


def test_read_checkpoint_refuses_the_older_layout(tmp_path):
    path = tmp_path / "checkpoint.npz"
    write_checkpoint(path, checkpoint_state())
    rewrite(path, lambda meta, entries: meta.update(format_version=1))
    refused(path, "format_version 1", "older kmeans_dask", "delete", loader=read_checkpoint)


def test_read_checkpoint_refuses_truncated_and_random_files(tmp_path):
    path = tmp_path / "checkpoint.npz"
    write_checkpoint(path, checkpoint_state())
    data = path.read_bytes()
    path.write_bytes(data[:100])
    refused(path, "truncated or corrupted", loader=read_checkpoint)
    path.write_bytes(np.random.default_rng(2).bytes(1000))
    refused(path, "not an .npz archive", loader=read_checkpoint)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda meta, entries: entries.update(extra=np.zeros(1)),
        lambda meta, entries: entries.pop("centers"),
        lambda meta, entries: entries.update(centers=np.zeros((2, 2, 4))),
        lambda meta, entries: entries.update(centers=np.zeros((1, 2, 3))),
        lambda meta, entries: meta["runs"][0].update(history=[{"iteration": "1"}]),
        lambda meta, entries: meta["runs"][0].update(inertia="41.5"),
        lambda meta, entries: meta["runs"][0].pop("inertia"),
        lambda meta, entries: meta.update(completed=1),
        lambda meta, entries: meta.pop("seeds"),
    ],
    ids=[
        "extra-key",
        "missing-key",
        "wrong-shape",
        "fewer-centres-than-runs",
        "bad-history",
        "bad-inertia",
        "missing-inertia",
        "bad-completed",
        "missing-field",
    ],
)
def test_read_checkpoint_refuses_tampered_file(tmp_path, mutate):
    path = tmp_path / "checkpoint.npz"
    write_checkpoint(path, checkpoint_state())
    rewrite(path, mutate)
    refused(path, loader=read_checkpoint)


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


def test_module_exports():
    assert set(_model_io.__all__) >= {
        "save_model",
        "load_model",
        "ModelFile",
        "write_checkpoint",
        "read_checkpoint",
        "CheckpointState",
        "fit_fingerprint",
    }
