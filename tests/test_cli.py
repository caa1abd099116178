"""The kmeans-dask command line, end to end on the session cluster."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import numpy as np
import pytest
import zarr
from numpy.testing import assert_array_equal

import kmeans_dask
from kmeans_dask.cli import EXIT_BAD_INPUT, EXIT_FAILURE, main


@pytest.fixture
def on_cluster(cluster):
    return ["--scheduler", cluster.scheduler_address]


@pytest.fixture
def data_path(tmp_path):
    path = str(tmp_path / "data.zarr")
    assert (
        main(["make-data", path, "-n", "20000", "-d", "4", "-k", "5", "--chunk-rows", "5000"]) == 0
    )
    return path


def test_make_data_fit_info_predict(tmp_path, data_path, on_cluster, capsys):
    stored = zarr.open_array(data_path, mode="r")
    assert stored.shape == (20000, 4) and stored.chunks == (5000, 4)
    model_path = str(tmp_path / "model.npz")
    capsys.readouterr()
    assert main(["fit", data_path, "-k", "5", "-o", model_path, "--json", *on_cluster]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["n_clusters"] == 5 and summary["n_iter"] == len(summary["history"])

    assert main(["info", model_path, "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["arrays"]["cluster_centers_"]["shape"] == [5, 4]
    assert info["attributes"]["inertia_"] == pytest.approx(summary["inertia"])

    assert main(["predict", model_path, data_path, *on_cluster]) == 0
    labels_path = data_path.removesuffix(".zarr") + ".labels.zarr"
    labels = zarr.open_array(labels_path, mode="r")[:]
    model = kmeans_dask.load(model_path)
    assert_array_equal(labels, model.predict(stored[:]))
    # the labels file is not overwritten silently
    assert main(["predict", model_path, data_path, *on_cluster]) == EXIT_BAD_INPUT
    assert "--overwrite" in capsys.readouterr().err


def test_fit_npy_input_with_checkpoint(tmp_path, on_cluster, capsys):
    rows = np.random.default_rng(0).normal(size=(3000, 3)).astype(np.float32)
    np.save(tmp_path / "rows.npy", rows)
    args = [
        "fit",
        str(tmp_path / "rows.npy"),
        "-k",
        "4",
        "--json",
        *on_cluster,
        "--checkpoint",
        str(tmp_path / "fit.ckpt"),
    ]
    assert main(args) == 0
    first = json.loads(capsys.readouterr().out)
    assert main(args) == 0  # completed checkpoint: same result
    assert json.loads(capsys.readouterr().out)["inertia"] == first["inertia"]


def test_fit_algorithm_and_engine_options_give_the_same_model(tmp_path, on_cluster, capsys):
    rows = np.random.default_rng(1).normal(size=(3000, 3))
    np.save(tmp_path / "rows.npy", rows)
    results = []
    for algorithm, engine in [("lloyd", "tasks"), ("hamerly", "actors")]:
        argv = ["fit", str(tmp_path / "rows.npy"), "-k", "4", "--random-state", "0", "--json"]
        argv += on_cluster
        assert main([*argv, "--algorithm", algorithm, "--engine", engine]) == 0
        results.append(json.loads(capsys.readouterr().out))
    assert results[0]["inertia"] == results[1]["inertia"]
    assert results[0]["n_iter"] == results[1]["n_iter"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["fit", "{data}", "-k", "0"], "-k/--n-clusters: expected an integer >= 1, got '0'"),
        (["fit", "{tmp}/missing.zarr", "-k", "3"], "does not exist"),
        (["fit", "{tmp}/missing.npy", "-k", "3"], "does not exist"),
        (["info", "{tmp}/missing.npz"], "missing.npz"),
    ],
    ids=["bad-k", "missing-zarr", "missing-npy", "missing-model"],
)
def test_bad_input_exits_2_with_the_reason(tmp_path, data_path, on_cluster, capsys, argv, message):
    argv = [a.format(data=data_path, tmp=tmp_path) for a in argv]
    extra = on_cluster if argv[0] == "fit" else []
    assert main([*argv, *extra]) == EXIT_BAD_INPUT
    assert message in capsys.readouterr().err


def test_unanswering_scheduler_fails_in_bounded_time_naming_it(data_path, capsys):
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        address = f"tcp://127.0.0.1:{probe.getsockname()[1]}"
    assert main(["fit", data_path, "-k", "3", "--scheduler", address, "--timeout", "2"]) == (
        EXIT_FAILURE
    )
    assert f"no Dask scheduler answered at '{address}' within 2.0 s" in capsys.readouterr().err


def test_tune_recommends_a_search(data_path, capsys):
    assert (
        main(["tune", data_path, "-k", "64", "--sample", "5000", "--iterations", "2", "--json"])
        == 0
    )
    report = json.loads(capsys.readouterr().out)
    assigns = [row["assign"] for row in report["results"]]
    assert assigns[0] == "exact" and "ivf" in assigns and "hnsw" in assigns
    assert report["results"][0]["inertia_gap"] == 0.0
    assert report["recommended"]["inertia_gap"] <= 0.001


def test_elbow_writes_a_png_and_suggests_k(tmp_path, on_cluster, capsys):
    path = str(tmp_path / "four.zarr")
    assert (
        main(["make-data", path, "-n", "4000", "-d", "2", "-k", "4", "--cluster-std", "0.3"]) == 0
    )
    png = tmp_path / "elbow.png"
    capsys.readouterr()
    args = ["elbow", path, "--ks", "1,2,3,4,5,6,8", "--png", str(png), "--json", *on_cluster]
    assert main(args) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["suggested_k"] == 4
    assert png.stat().st_size > 10_000


@pytest.mark.parametrize(
    "command", ["fit", "predict", "make-data", "info", "demo", "bench", "tune", "elbow"]
)
def test_every_command_has_help_with_defaults(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert "usage: kmeans-dask" in text
    if command not in ("info",):
        assert "(default:" in text


def test_fit_on_a_cluster_spec(data_path, capsys):
    spec = str(Path(__file__).parents[1] / "cluster_specs" / "local.yaml")
    assert main(["fit", data_path, "-k", "5", "--json", "--cluster", spec]) == 0
    captured = capsys.readouterr()
    assert f"cluster from {spec}" in captured.err
    assert json.loads(captured.out)["n_clusters"] == 5


def test_cluster_spec_overrides_from_the_command_line(data_path, capsys):
    spec = str(Path(__file__).parents[1] / "cluster_specs" / "local.yaml")
    args = [
        "fit",
        data_path,
        "-k",
        "5",
        "--json",
        "--cluster",
        spec,
        "--set",
        "n_workers=1",
        "--set",
        "threads_per_worker=1",
    ]
    assert main(args) == 0
    assert json.loads(capsys.readouterr().out)["n_clusters"] == 5
    assert main([*args[:-2], "--set", "n_wrokers=1"]) == EXIT_BAD_INPUT
    assert "n_wrokers" in capsys.readouterr().err
