"""The kmeans-dask command line, end to end on the session cluster."""

from __future__ import annotations

import json
import re
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
    model_path = str(tmp_path / "model.safetensors")
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
        (["info", "{tmp}/missing.safetensors"], "missing.safetensors"),
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
    "command",
    ["fit", "predict", "make-data", "info", "demo", "compile", "bench", "tune", "elbow"],
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


def _npy(tmp_path: Path, name: str = "rows.npy", n: int = 600, seed: int = 0) -> str:
    path = tmp_path / name
    np.save(path, np.random.default_rng(seed).normal(size=(n, 3)))
    return str(path)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["fit", "{npy}", "--workers", "0"], "--workers: expected an integer >= 1, got '0'"),
        (["fit", "{npy}", "--workers", "-1"], "--workers: expected an integer >= 1, got '-1'"),
        (["fit", "{npy}", "--threads-per-worker", "0"], "--threads-per-worker: expected"),
        (["fit", "{npy}", "--random-state", "-1"], "--random-state: expected an integer in"),
        (["fit", "{npy}", "--random-state", str(2**40)], "--random-state: expected"),
        (["fit", "{npy}", "--assign-options", "nprobe"], "--assign-options: expected KEY=VALUE"),
        (["fit", "{npy}", "--init", "kmeans"], "--init: expected one of k-means||"),
        (["fit", "{npy}", "--decay", "2"], "--decay: expected a number in (0, 1], got '2'"),
        (
            ["fit", "{npy}", "-o", "{tmp}/nodir/m.safetensors"],
            "its directory '{tmp}/nodir' does not",
        ),
        (["fit", "{npy}", "-o", "{tmp}"], "--output='{tmp}' is a directory"),
        (["fit", "{npy}", "--checkpoint", "{tmp}/nodir/ck"], "--checkpoint='{tmp}/nodir/ck'"),
        (["fit", "{npy}", "--checkpoint", "/proc/ck"], "cannot write to its directory '/proc'"),
        (["fit", "{npy}", "-o", "{npy}"], "writing it would destroy the input"),
        (["fit", "{npy}", "--checkpoint", "{npy}"], "writing it would destroy the input"),
        (["fit", "{tmp}"], "no Zarr array or group found"),
        (["fit", "{tmp}/dir.npy"], "is not a regular file; expected a .npy file"),
        (["fit", "{tmp}/bad.npy"], "is not a readable .npy file"),
        (["fit", "{npy}", "--init", "{tmp}/missing.npy"], "no such .npy file of centres"),
        (["tune", "{npy}", "-k", "2", "--iterations", "0"], "--iterations: expected an integer"),
        (["make-data", "{tmp}/m.zarr", "-k", "0"], "-k/--n-clusters: expected an integer >= 1"),
        (["make-data", "{tmp}/m.zarr", "-d", "0"], "-d/--n-features: expected an integer >= 1"),
        (["make-data", "{tmp}/m.zarr", "--cluster-std", "-1"], "--cluster-std: expected"),
        (["make-data", "{tmp}/dir.npy"], "is a directory but not a Zarr store"),
        (["predict", "{model}", "{tmp}/dir.npy", "-o", "{tmp}/l.npy"], "not a regular file"),
        (["predict", "{model}", "{npy}", "-o", "{tmp}/dir.npy"], "is a directory; refusing"),
        (["predict", "{tmp}/dir.npy", "{npy}"], "not a regular file"),
        (["info", "{tmp}/dir.npy"], "not a regular file"),
    ],
)
def test_refused_arguments_exit_2_with_one_named_line(tmp_path, client, capsys, argv, message):
    npy = _npy(tmp_path)
    (tmp_path / "dir.npy").mkdir()
    (tmp_path / "bad.npy").write_bytes(b"not numpy")
    model = tmp_path / "m.safetensors"
    kmeans_dask.KMeans(2, random_state=0).fit(np.load(npy)).save(model)
    before = sorted(tmp_path.rglob("*"))
    values = {"npy": npy, "tmp": str(tmp_path), "model": str(model)}
    capsys.readouterr()
    assert main([a.format(**values) for a in argv]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith(f"kmeans-dask {argv[0]}: error: ")
    assert message.format(**values) in err
    assert sorted(tmp_path.rglob("*")) == before  # nothing half-written


def test_fit_offers_every_estimator_parameter_with_its_default(tmp_path, on_cluster, capsys):
    from kmeans_dask._cli_parser import build_parser
    from kmeans_dask.cli import COMMANDS, _estimator

    parser = build_parser({name: run for name, (run, _) in COMMANDS.items()})
    args = parser.parse_args(["fit", "x.zarr"])
    params = kmeans_dask.KMeans().get_params()
    for name, default in params.items():
        if name == "persist":
            assert args.persist == "auto" and default is None
        elif name != "verbose":  # --quiet / --json
            assert getattr(args, name) == default, name
    # and the values given reach the model
    npy = _npy(tmp_path)
    argv = ["fit", npy, "-k", "3", "--assign", "ivf", "--assign-options", "{nprobe: 2, nlist: 2}"]
    assert _estimator(parser.parse_args(argv)).assign_options == {"nprobe": 2, "nlist": 2}
    argv = ["fit", npy, "--assign", "ivf", "--assign-options", "nprobe=2,exact_final=false"]
    assert _estimator(parser.parse_args(argv)).assign_options == {
        "nprobe": 2,
        "exact_final": False,
    }
    model_path = str(tmp_path / "m.safetensors")
    argv = ["fit", npy, "-k", "3", "--oversampling-factor", "3", "--init-rounds", "2"]
    argv += ["--decay", "0.5", "--batch-size", "100", "--reassignment-ratio", "0"]
    argv += ["--random-state", "7", "--persist", "yes", "--engine", "tasks"]
    argv += ["--assign", "ivf", "--assign-options", "{nprobe: 2, nlist: 2, exact_final: false}"]
    assert main([*argv, "-o", model_path, "--json", *on_cluster]) == 0
    loaded = kmeans_dask.load(model_path).get_params()
    options = {"nprobe": 2, "nlist": 2, "exact_final": False}
    assert (loaded["assign"], loaded["assign_options"]) == ("ivf", options)
    assert (loaded["oversampling_factor"], loaded["init_rounds"]) == (3.0, 2)
    assert (loaded["decay"], loaded["batch_size"], loaded["reassignment_ratio"]) == (0.5, 100, 0)
    assert (loaded["random_state"], loaded["persist"], loaded["engine"]) == (7, True, "tasks")


def test_fit_takes_initial_centres_from_a_npy_file(tmp_path, on_cluster, capsys):
    npy = _npy(tmp_path)
    centres = tmp_path / "init.npy"
    np.save(centres, np.load(npy)[:3])
    argv = ["fit", npy, "-k", "3", "--init", str(centres), "--max-iter", "1", "--json"]
    assert main([*argv, *on_cluster]) == 0
    expected = kmeans_dask.KMeans(3, init=np.load(centres), max_iter=1).fit(np.load(npy))
    assert json.loads(capsys.readouterr().out)["inertia"] == pytest.approx(expected.inertia_)


def test_predict_refuses_to_write_over_its_input(
    tmp_path, data_path, on_cluster, capsys, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    model = str(tmp_path / "m.safetensors")
    assert main(["fit", data_path, "-k", "3", "-o", model, "--json", *on_cluster]) == 0
    before = zarr.open_array(data_path, mode="r")[:]
    link = tmp_path / "link.zarr"
    link.symlink_to(data_path)
    for output in (data_path, "./data.zarr", link, "data.zarr/c"):
        argv = ["predict", model, data_path, "-o", str(output), "--overwrite", *on_cluster]
        assert main(argv) == EXIT_BAD_INPUT
        assert "writing it would destroy the input" in capsys.readouterr().err
    assert_array_equal(zarr.open_array(data_path, mode="r")[:], before)


def test_predict_replaces_an_output_only_once_the_new_one_is_complete(
    tmp_path, data_path, on_cluster, capsys, monkeypatch
):
    model_path = str(tmp_path / "m.safetensors")
    assert main(["fit", data_path, "-k", "3", "-o", model_path, "--json", *on_cluster]) == 0
    labels = str(tmp_path / "labels.npy")
    np.save(labels, np.arange(5))
    model = kmeans_dask.load(model_path)

    def failing_predict(self, X):
        raise ValueError("failed half-way")

    monkeypatch.setattr(type(model), "predict", failing_predict)
    argv = ["predict", model_path, data_path, "-o", labels, "--overwrite", *on_cluster]
    assert main(argv) == EXIT_BAD_INPUT
    monkeypatch.undo()
    assert_array_equal(np.load(labels), np.arange(5))  # the old output is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "data.zarr",
        "labels.npy",
        "m.safetensors",
    ]
    assert main(argv) == 0  # and replaced when the new one is complete
    assert_array_equal(np.load(labels), model.predict(zarr.open_array(data_path)[:]))


def test_make_data_onto_an_existing_store_suggests_overwrite(data_path, capsys):
    assert main(["make-data", data_path, "-n", "100", "-d", "4"]) == EXIT_BAD_INPUT
    assert "exists; pass --overwrite" in capsys.readouterr().err
    assert zarr.open_array(data_path, mode="r").shape == (20000, 4)
    assert main(["make-data", data_path, "-n", "100", "-d", "2", "--overwrite"]) == 0
    assert zarr.open_array(data_path, mode="r").shape == (100, 2)


def test_help_shows_each_default_once_and_none_for_required_options(capsys):
    for command in ("fit", "predict", "tune", "bench", "make-data"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        text = capsys.readouterr().out
        assert "(default: None)" not in " ".join(text.split()), command
        for option in re.split(r"\n  (?=-)", text.split("options:", 1)[1]):
            assert option.count("default") <= 1, (command, option)


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"kmeans-dask {kmeans_dask.__version__}"


def test_info_prints_tables(tmp_path, client, capsys):
    model = tmp_path / "m.safetensors"
    kmeans_dask.KMeans(2, random_state=0).fit(np.load(_npy(tmp_path))).save(model)
    capsys.readouterr()
    assert main(["info", str(model)]) == 0
    out = capsys.readouterr().out
    assert "{" not in out  # no raw Python dicts
    for title in ("parameters", "fitted attributes", "arrays"):
        assert title in out
    assert re.search(r"n_clusters\s*│\s*2", out)
    assert re.search(r"cluster_centers_\s*│\s*float64 \(2, 3\)", out)


def test_tune_recommends_a_command_fit_accepts(tmp_path, data_path, on_cluster, capsys):
    argv = ["tune", data_path, "-k", "64", "--sample", "5000", "--iterations", "2", "--json"]
    assert main(argv) == 0
    captured = capsys.readouterr()
    command = json.loads(captured.out)["recommended"]["fit_command"]
    assert command[:2] == ["kmeans-dask", "fit"]
    assert "[kmeans_dask] tune k=64:" in captured.err  # a line per step off a terminal
    assert main([*command[1:], "--max-iter", "2", "--json", *on_cluster]) == 0
