"""The example scripts in scripts/examples run end to end (--small) and write their outputs."""

from __future__ import annotations

import importlib.util
import re
import shutil
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pandas as pd
import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "scripts" / "examples"


def _load(name: str) -> ModuleType:
    """Import scripts/examples/<name>.py by path (it is not part of the package).

    The module is deliberately not put in ``sys.modules``: its functions then
    cannot be pickled by reference to a module the workers cannot import,
    and Dask falls back to cloudpickle, which sends them by value (as it does
    for a script run as ``__main__``).
    """
    path = EXAMPLES / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"kmeans_dask_example_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _timings(output: str) -> dict[str, float]:
    line = next(line for line in output.splitlines() if line.startswith("timings: "))
    items = (item.rsplit(" ", 2) for item in line.removeprefix("timings: ").split(", "))
    return {name: float(seconds) for name, seconds, _ in items}


def test_colour_quantization(tmp_path, capsys):
    pytest.importorskip("skimage", reason="scikit-image is not installed")
    from skimage.io import imread

    example = _load("colour_quantization")
    assert example.main(["--small", "--output-dir", str(tmp_path)]) == 0
    output = capsys.readouterr().out

    png = tmp_path / "chelsea_k16.png"
    assert png.is_file()
    image = imread(png)
    assert image.shape == (300, 451, 3)
    n_colours = len(np.unique(image.reshape(-1, 3), axis=0))
    assert 1 < n_colours <= 16
    assert f"distinct colours in the output: {n_colours} (k=16)" in output
    mse = float(re.search(r"mean squared error .*: ([\d.]+)", output).group(1))
    assert 0 < mse < 0.01  # 16 colours reproduce the photo closely
    assert {"data prep", "fit", "predict"} <= set(_timings(output))


def test_customer_segmentation(tmp_path, capsys):
    example = _load("customer_segmentation")
    assert example.main(["--small", "--output-dir", str(tmp_path)]) == 0
    output = capsys.readouterr().out

    summary = pd.read_csv(tmp_path / "customer_segments.csv")
    assert list(summary.columns) == ["segment", "count", "share", *example.FEATURES]
    assert len(summary) == 5
    assert summary["segment"].tolist() == [0, 1, 2, 3, 4]
    assert summary["count"].sum() == 20_000
    assert summary["share"].sum() == pytest.approx(1.0, abs=1e-3)
    assert summary["age"].is_monotonic_increasing
    ari = float(re.search(r"adjusted Rand index .*: ([\d.]+)", output).group(1))
    assert ari > 0.8  # the latent segments are recovered
    assert {"data prep", "fit"} <= set(_timings(output))


def _check_zarr_outputs(tmp_path: Path, output: str, n_samples: int) -> None:
    zarr = pytest.importorskip("zarr")
    labels = zarr.open_array(str(tmp_path / "blobs.labels.zarr"), mode="r")
    assert labels.shape == (n_samples,)
    assert set(np.unique(labels[:])) <= set(range(8))
    assert "dashboard: http" in output
    assert "inertia" in output
    assert {"data prep", "workers up", "fit", "predict + write"} <= set(_timings(output))


def test_zarr_on_slurm_takes_slurm_when_available_else_falls_back(tmp_path, capsys):
    """Slurm up: the workers are Slurm jobs; Slurm absent: a LocalCluster, said loudly."""
    pytest.importorskip("zarr")
    example = _load("zarr_on_slurm")
    partition, why_not = example.slurm_status()
    argv = ["--small", "--n-samples", "200000", "--output-dir", str(tmp_path)]
    assert example.main(argv) == 0
    output = capsys.readouterr().out

    cluster_line = next(line for line in output.splitlines() if line.startswith("cluster: "))
    if partition is not None:
        assert cluster_line.startswith(f"cluster: slurm (partition {partition})"), output
        assert list((tmp_path / "slurm-logs").glob("*")), "no Slurm job logs written"
    else:
        assert cluster_line.startswith("cluster: local (FALLBACK"), output
        assert why_not in cluster_line
    _check_zarr_outputs(tmp_path, output, 200_000)
    print(f"\nzarr_on_slurm took: {cluster_line}")


def test_zarr_on_slurm_falls_back_without_sinfo(tmp_path, capsys, monkeypatch):
    pytest.importorskip("zarr")
    example = _load("zarr_on_slurm")
    real_which = shutil.which
    monkeypatch.setattr(
        example.shutil, "which", lambda cmd, *a, **k: None if cmd == "sinfo" else real_which(cmd)
    )
    argv = ["--small", "--n-samples", "200000", "--output-dir", str(tmp_path)]
    assert example.main(argv) == 0
    output = capsys.readouterr().out

    assert "cluster: local (FALLBACK, Slurm not used: sinfo not found)" in output
    assert not (tmp_path / "slurm-logs").exists()
    _check_zarr_outputs(tmp_path, output, 200_000)


@pytest.mark.parametrize(("example", "missing"), [("colour_quantization", "skimage")])
def test_a_missing_dependency_names_the_extra_to_install(example, missing, monkeypatch, tmp_path):
    for name in [name for name in sys.modules if name.split(".")[0] == missing] + [missing]:
        monkeypatch.setitem(sys.modules, name, None)  # importing it raises ImportError
    module = _load(example)
    with pytest.raises(SystemExit) as exit_info:
        module.main(["--small", "--output-dir", str(tmp_path)])
    assert str(exit_info.value).endswith("pip install 'kmeans_dask[examples]'")
