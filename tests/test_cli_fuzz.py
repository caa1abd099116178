"""Fuzzing the command line: generated bad arguments and paths for every subcommand.

Each generated command must be refused with exit status 2 and one line
``kmeans-dask COMMAND: error: ...`` that names the argument, with no
traceback, and must leave the files it was given (and the directory) as they
were: nothing created, nothing half-written.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import kmeans_dask
from kmeans_dask.cli import EXIT_BAD_INPUT, main

#: Values no numeric option accepts.
BAD_NUMBERS = ["0", "-1", "-7", "x", "1.5", "", "nan", "inf", "-inf", "1e400", "0x10", "one"]
#: (command, option, bad values beyond BAD_NUMBERS' applicable ones)
NUMERIC_OPTIONS = {
    "fit": [
        "-k",
        "--n-init",
        "--max-iter",
        "--init-rounds",
        "--batch-size",
        "--workers",
        "--threads-per-worker",
    ],
    "make-data": ["-n", "-d", "-k", "--chunk-rows"],
    "tune": ["-k", "--sample", "--iterations"],
    "elbow": ["--max-iter", "--workers", "--threads-per-worker", "--silhouette-sample"],
    "predict": ["--workers", "--threads-per-worker"],
    "demo": ["--n-samples", "--n-features", "-k", "--workers"],
}
#: Options whose value must be a non-negative, positive or bounded number: these are bad for all.
NEGATIVE_ONLY = {
    "fit": [
        "--tol",
        "--reassignment-ratio",
        "--decay",
        "--random-state",
        "--oversampling-factor",
        "--timeout",
        "--init-sample-size",
    ],
    "predict": ["--timeout"],
    "make-data": ["--cluster-std", "--seed"],
    "tune": ["--max-gap", "--seed"],
    "elbow": ["--random-state", "--init-sample-size"],
}
BAD_FOR_ALL = ["-1", "-0.5", "x", "", "nan", "inf", "-inf", "1e400"]
CHOICES = {
    "fit": ["--init", "--backend", "--assign", "--algorithm", "--engine", "--persist"],
    "make-data": ["--dtype"],
    "elbow": ["--scale", "--init"],
}


@pytest.fixture(scope="module")
def files(tmp_path_factory, cluster):
    """Good inputs to refer to, and bad paths of every kind."""
    from distributed import Client

    root = tmp_path_factory.mktemp("fuzz")
    data = np.random.default_rng(0).normal(size=(200, 3))
    np.save(root / "data.npy", data)
    with Client(cluster):
        kmeans_dask.KMeans(2, random_state=0).fit(data).save(root / "model.safetensors")
    shutil.copy(Path(__file__).parent / "data" / "model-0.1.0.npz", root / "old.npz")
    (root / "directory").mkdir()
    (root / "directory.npy").mkdir()
    (root / "garbage.npy").write_bytes(b"\x93NUMPY garbage")
    (root / "garbage.safetensors").write_bytes(b"PK garbage")
    (root / "text.zarr").write_text("not a store")
    os.mkfifo(root / "fifo.npy")
    os.mkfifo(root / "fifo.safetensors")
    return root


def _snapshot(root: Path) -> dict[str, str]:
    """Every entry under ``root`` with a digest of its content."""
    entries = {}
    for path in sorted(root.rglob("*")):
        if path.is_file() and not path.is_fifo():
            entries[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
        else:
            entries[str(path)] = "fifo" if path.is_fifo() else "directory"
    return entries


def _numeric(command: str) -> st.SearchStrategy[list[str]]:
    bad = st.sampled_from(BAD_NUMBERS)
    for_all = st.sampled_from(BAD_FOR_ALL)
    options = [st.tuples(st.sampled_from(NUMERIC_OPTIONS[command]), bad)]
    if command in NEGATIVE_ONLY:
        options.append(st.tuples(st.sampled_from(NEGATIVE_ONLY[command]), for_all))
    if command in CHOICES:
        junk = st.text(st.characters(codec="ascii", exclude_characters="\x00"), max_size=8)
        options.append(st.tuples(st.sampled_from(CHOICES[command]), junk.map(lambda t: t + "?")))
    return st.one_of(options).map(list)


BAD_INPUTS = ["missing.npy", "missing.zarr", "directory", "directory.npy", "garbage.npy"]
BAD_INPUTS += ["text.zarr", "fifo.npy"]
BAD_MODELS = ["missing.safetensors", "directory", "garbage.safetensors", "data.npy"]
BAD_MODELS += ["fifo.safetensors", "old.npz"]
BAD_OUTPUTS = ["nodir/out.safetensors", "directory", "directory.npy", "data.npy"]
BAD_OUTPUTS += ["fifo.safetensors", "/proc/x"]


@st.composite
def bad_commands(draw) -> list[str]:
    """A command with exactly one bad argument (a number, a choice or a path)."""
    commands = ["fit", "make-data", "tune", "elbow", "predict", "info", "convert"]
    command = draw(st.sampled_from(commands))
    good = {
        "fit": ["fit", "data.npy"],
        "make-data": ["make-data", "new.zarr", "-n", "10"],
        "tune": ["tune", "data.npy", "-k", "2"],
        "elbow": ["elbow", "data.npy"],
        "predict": ["predict", "model.safetensors", "data.npy", "-o", "labels.npy"],
        "info": ["info", "model.safetensors"],
        "convert": ["convert", "old.npz", "new.safetensors"],
    }[command]
    kinds = ["path"] + (["number"] if command in NUMERIC_OPTIONS else [])
    if draw(st.sampled_from(kinds)) == "number":
        return good + draw(_numeric(command))
    if command == "info":
        return ["info", draw(st.sampled_from(BAD_MODELS))]
    if command == "convert":
        if draw(st.booleans()):  # a new model is no 0.1.0 file either
            return ["convert", draw(st.sampled_from([*BAD_MODELS[:-1], "model.safetensors"])), "n"]
        return ["convert", "old.npz", draw(st.sampled_from(BAD_OUTPUTS))]
    if command == "predict":
        where = draw(st.sampled_from(["model", "input", "output"]))
        model = draw(st.sampled_from(BAD_MODELS)) if where == "model" else "model.safetensors"
        source = draw(st.sampled_from(BAD_INPUTS)) if where == "input" else "data.npy"
        output = draw(st.sampled_from(BAD_OUTPUTS)) if where == "output" else "labels.npy"
        return [
            "predict",
            model,
            source,
            "-o",
            output,
            *draw(st.sampled_from([[], ["--overwrite"]])),
        ]
    if command == "make-data":
        return [
            "make-data",
            draw(st.sampled_from(["directory", "fifo.npy", "data.npy"])),
            "-n",
            "10",
        ]
    if command == "fit" and draw(st.booleans()):
        option = draw(st.sampled_from(["-o", "--checkpoint"]))
        return ["fit", "data.npy", option, draw(st.sampled_from(BAD_OUTPUTS))]
    return [command, draw(st.sampled_from(BAD_INPUTS)), *good[2:]]


@settings(
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", "80")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(argv=bad_commands())
def test_generated_bad_commands_are_refused_in_one_line(files, cluster, capsys, argv):
    before = _snapshot(files)
    cwd = os.getcwd()
    os.chdir(files)
    try:
        extra = ["--scheduler", cluster.scheduler_address]
        scheduled = argv[0] in ("fit", "elbow", "predict") and "--workers" not in argv
        code = main([*argv, *(extra if scheduled else [])])
    finally:
        os.chdir(cwd)
    captured = capsys.readouterr()
    err = [line for line in captured.err.splitlines() if not line.startswith("dashboard: ")]
    assert code == EXIT_BAD_INPUT, (argv, captured.err)
    assert len(err) == 1, (argv, captured.err)
    assert err[0].startswith(f"kmeans-dask {argv[0]}: error: "), (argv, err)
    assert "Traceback" not in captured.err
    assert _snapshot(files) == before, argv  # nothing created, changed or half-written
