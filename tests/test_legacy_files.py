"""Files written by kmeans_dask 0.1.0 (``.npz``): models are converted, never unpickled."""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
from numpy.testing import assert_array_equal

import kmeans_dask
from kmeans_dask._io.legacy import convert_legacy_model
from kmeans_dask._io.model_files import load_model
from kmeans_dask.cli import EXIT_BAD_INPUT, main

DATA = Path(__file__).parent / "data"
OLD = DATA / "model-0.1.0.npz"


def test_a_0_1_0_model_converts_to_the_same_model(tmp_path):
    before = OLD.read_bytes()
    convert_legacy_model(OLD, tmp_path / "model.safetensors")
    model = load_model(tmp_path / "model.safetensors")
    assert OLD.read_bytes() == before
    # Parameters added after 0.1.0 are absent and take their defaults on load;
    # n_init is written in the file (1, then the default), and stays.
    defaults = kmeans_dask.KMeans(3, random_state=0, n_init=1).get_params()
    assert model.params == {k: v for k, v in defaults.items() if k != "init_sample_size"}
    assert kmeans_dask.load(tmp_path / "model.safetensors").get_params() == defaults
    assert_array_equal(model.arrays["cluster_centers_"], [[0.0, 1.0], [2.5, -3.0], [10.0, 4.25]])
    assert_array_equal(model.arrays["cluster_weights_"], [4.0, 5.0, 6.0])
    assert model.attributes == {
        "inertia_": 12.375,
        "n_iter_": 7,
        "n_features_in_": 2,
        "feature_names_in_": ["height", "width"],
    }


def test_a_0_1_0_model_with_an_init_array_converts(tmp_path):
    convert_legacy_model(DATA / "model-0.1.0-init.npz", tmp_path / "model.safetensors")
    model = load_model(tmp_path / "model.safetensors")
    init = model.params["init"]
    assert init.dtype == np.float32
    assert_array_equal(init, [[0.5, 0.5], [1.0, -1.0], [9.0, 4.0]])
    assert_array_equal(model.arrays["cluster_centers_"], init + 1)


def test_the_convert_command_writes_a_model_that_loads(tmp_path, capsys):
    target = tmp_path / "model.safetensors"
    assert main(["convert", str(OLD), str(target)]) == 0
    assert f"converted {OLD} (kmeans_dask 0.1.0) to {target}" in capsys.readouterr().out
    model = kmeans_dask.load(target)
    assert model.n_clusters == 3 and list(model.feature_names_in_) == ["height", "width"]
    assert_array_equal(model.cluster_weights_, [4.0, 5.0, 6.0])


def test_the_convert_command_refuses_to_write_over_its_input(tmp_path, capsys):
    old = tmp_path / "model.npz"
    shutil.copy(OLD, old)
    assert main(["convert", str(old), str(old)]) == EXIT_BAD_INPUT
    assert "would destroy the model" in capsys.readouterr().err
    assert old.read_bytes() == OLD.read_bytes()


def _rewritten(tmp_path: Path, mutate, *, compressed: bool = False) -> Path:
    """The 0.1.0 fixture after ``mutate(metadata, entries)``."""
    with np.load(OLD, allow_pickle=False) as archive:
        entries = {name: archive[name] for name in archive.files}
    metadata = json.loads(entries.pop("__metadata__").tobytes())
    mutate(metadata, entries)
    raw = np.frombuffer(json.dumps(metadata).encode(), dtype=np.uint8)
    path = tmp_path / "old.npz"
    (np.savez_compressed if compressed else np.savez)(path, __metadata__=raw, **entries)
    return path


class _Exploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('pwned')",))


def _pickled(metadata: dict, entries: dict, marker: Path) -> None:
    entries["cluster_centers_"] = np.array([_Exploit(marker)] * 6, dtype=object).reshape(3, 2)


@pytest.mark.parametrize(
    ("make", "fragment"),
    [
        (lambda tmp: tmp / "garbage.npz", "not a kmeans_dask 0.1.0 .npz model file"),
        (lambda tmp: _rewritten(tmp, lambda m, e: None, compressed=True), "compressed"),
        (
            lambda tmp: _rewritten(tmp, lambda m, e: e.update(extra=np.zeros(1))),
            "unexpected entries ['extra']",
        ),
        (lambda tmp: _rewritten(tmp, lambda m, e: e.pop("cluster_centers_")), "missing tensors"),
        (lambda tmp: _rewritten(tmp, lambda m, e: m.update(format_version=2)), "format_version 2"),
        (lambda tmp: _rewritten(tmp, lambda m, e: m.pop("attributes")), "KeyError"),
        (
            lambda tmp: _rewritten(tmp, lambda m, e: e["cluster_centers_"].fill(np.nan)),
            "cluster_centers_ contains 6 non-finite value(s)",
        ),
        (
            lambda tmp: _rewritten(tmp, lambda m, e: e["cluster_weights_"].fill(-1)),
            "cluster_weights_ contains 3 negative value(s)",
        ),
        (
            lambda tmp: _rewritten(tmp, lambda m, e: _pickled(m, e, tmp / "marker")),
            "Object arrays cannot be loaded when allow_pickle=False",
        ),
    ],
    ids=[
        "garbage",
        "compressed",
        "extra-entry",
        "no-centres",
        "other-version",
        "no-attributes",
        "nan-centres",
        "negative-weights",
        "pickled",
    ],
)
def test_convert_refuses_what_is_not_a_valid_0_1_0_model(tmp_path, make, fragment):
    (tmp_path / "garbage.npz").write_bytes(b"PK\x03\x04 not really a ZIP")
    source = make(tmp_path)
    with pytest.raises(ValueError) as info:
        convert_legacy_model(source, tmp_path / "new.safetensors")
    assert fragment in str(info.value)
    assert not (tmp_path / "new.safetensors").exists()
    assert not (tmp_path / "marker").exists()


def test_convert_refuses_a_missing_file_and_a_new_model(tmp_path):
    with pytest.raises(FileNotFoundError, match="no model file"):
        convert_legacy_model(tmp_path / "missing.npz", tmp_path / "new.safetensors")
    convert_legacy_model(OLD, tmp_path / "new.safetensors")
    with pytest.raises(ValueError, match=r"not a kmeans_dask 0\.1\.0 \.npz model file"):
        convert_legacy_model(tmp_path / "new.safetensors", tmp_path / "again.safetensors")


def test_convert_refuses_an_archive_declaring_more_than_the_file(tmp_path):
    path = tmp_path / "old.npz"
    shutil.copy(OLD, path)
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
    start = data.index(b"PK\x01\x02")  # the first entry of the central directory
    data[start + 20 : start + 28] = (2**31).to_bytes(4, "little") * 2
    path.write_bytes(bytes(data))
    assert names
    with pytest.raises(ValueError, match="compressed or larger than the file"):
        convert_legacy_model(path, tmp_path / "new.safetensors")
