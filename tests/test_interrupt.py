"""Ctrl-C: SIGINT sent to the process group of a real ``kmeans-dask`` process, as a terminal does.

Each interrupted command exits 130 with one line saying where it stopped, what
was saved and how to go on; no traceback; checkpoints and outputs are intact
or absent, never half-written; an interrupted fit resumes to the result of an
uninterrupted one.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import psutil
import pytest
import zarr

from kmeans_dask._io.checkpoints import read_checkpoint
from kmeans_dask.cli import EXIT_INTERRUPTED, main

SCRIPT = Path(sys.executable).with_name("kmeans-dask")
COMMAND = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "kmeans_dask.cli"]
WORKERS = ["--workers", "1", "--threads-per-worker", "1"]


def interrupt(argv: list[str], ready: Callable[[subprocess.Popen, str], bool], cwd: Path):
    """Run ``kmeans-dask argv``; once ``ready(process, stderr so far)``, send SIGINT to its group.

    Returns (exit status, stdout, stderr).
    """
    process = subprocess.Popen(
        [*COMMAND, *argv],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    streams = {"out": [], "err": []}
    readers = [
        threading.Thread(target=lambda s=stream, k=key: streams[k].extend(s), daemon=True)
        for stream, key in ((process.stdout, "out"), (process.stderr, "err"))
    ]
    for reader in readers:
        reader.start()
    deadline = time.monotonic() + 180
    try:
        while not ready(process, "".join(streams["err"])):
            assert process.poll() is None, "".join(streams["err"])
            assert time.monotonic() < deadline, "never got ready"
            time.sleep(0.01)
        os.killpg(process.pid, signal.SIGINT)
        process.wait(timeout=120)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    for reader in readers:
        reader.join(timeout=10)
    return process.returncode, "".join(streams["out"]), "".join(streams["err"])


def _last_line_only(err: str) -> str:
    """The interrupt message; the only other lines allowed are the usual status lines."""
    assert "Traceback" not in err, err
    lines = [
        line
        for line in err.splitlines()
        if not line.startswith(("dashboard: ", "[kmeans_dask] ", "  warnings.warn", "Perhaps"))
        and "Port 8787 is already in use" not in line
        and not line.startswith("Hosting the HTTP server")
    ]
    assert len(lines) == 1, err
    return lines[0]


def _checkpoint_at(path: Path, iteration: int) -> Callable[[subprocess.Popen, str], bool]:
    def ready(process, err):
        try:
            state = read_checkpoint(path)
        except ValueError:
            return False
        return state is not None and bool(state.runs) and len(state.runs[-1].history) >= iteration

    return ready


def test_ctrl_c_mid_fit_saves_says_how_to_resume_and_resumes_exactly(
    tmp_path, cluster, capsys, monkeypatch
):
    np.save(tmp_path / "x.npy", np.random.default_rng(0).uniform(size=(200_000, 2)))
    argv = ["fit", "x.npy", "-k", "64", "--tol", "0", "--max-iter", "150"]
    argv += ["--random-state", "0", "--checkpoint", "fit.ckpt"]
    code, _, err = interrupt([*argv, *WORKERS], _checkpoint_at(tmp_path / "fit.ckpt", 2), tmp_path)
    assert code == EXIT_INTERRUPTED
    line = _last_line_only(err)
    stopped = read_checkpoint(tmp_path / "fit.ckpt")
    (progress,) = stopped.runs
    assert line == (
        f"kmeans-dask fit: interrupted; Checkpoint 'fit.ckpt' holds run 1, iteration "
        f"{len(progress.history)}; run the same command again to resume from there."
    )
    assert not stopped.completed and 2 <= len(progress.history) < 150

    monkeypatch.chdir(tmp_path)  # the same command again (on the test cluster): it resumes
    on_cluster = ["--scheduler", cluster.scheduler_address, "--json"]
    capsys.readouterr()
    assert main([*argv, *on_cluster]) == 0
    resumed = json.loads(capsys.readouterr().out)
    assert main([*argv[:-2], *on_cluster]) == 0  # no checkpoint: uninterrupted
    uninterrupted = json.loads(capsys.readouterr().out)
    assert resumed["inertia"] == uninterrupted["inertia"]
    assert resumed["n_iter"] == uninterrupted["n_iter"]


def test_ctrl_c_while_the_cluster_starts_exits_cleanly(tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((100, 2)))

    def starting(process, err):  # its first worker process is being started
        try:
            return bool(psutil.Process(process.pid).children())
        except psutil.NoSuchProcess:
            return False

    code, _, err = interrupt(["fit", "x.npy", "-k", "2", *WORKERS], starting, tmp_path)
    assert code == EXIT_INTERRUPTED
    assert _last_line_only(err).startswith("kmeans-dask fit: interrupted; nothing was saved")


def test_ctrl_c_in_make_data_leaves_the_old_store_intact(tmp_path):
    assert main(["make-data", str(tmp_path / "d.zarr"), "-n", "100", "-d", "2"]) == 0
    argv = ["make-data", "d.zarr", "-n", "50000000", "-d", "8", "--chunk-rows", "100000"]
    writing = lambda process, err: "[kmeans_dask] writing" in err  # noqa: E731
    code, _, err = interrupt([*argv, "--overwrite"], writing, tmp_path)
    assert code == EXIT_INTERRUPTED
    assert _last_line_only(err) == (
        "kmeans-dask make-data: interrupted; nothing was written to 'd.zarr' (anything there "
        "is unchanged); run the same command again"
    )
    assert zarr.open_array(str(tmp_path / "d.zarr"), mode="r").shape == (100, 2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.zarr"]  # no temporary left


@pytest.mark.parametrize("command", ["predict", "elbow", "tune"])
def test_ctrl_c_in_other_commands_says_what_was_saved(tmp_path, client, command):
    from kmeans_dask import KMeans

    X = np.random.default_rng(0).normal(size=(2_000_000, 2)).astype(np.float32)
    np.save(tmp_path / "x.npy", X)
    KMeans(4, random_state=0).fit(X[:1000]).save(tmp_path / "m.safetensors")
    np.save(tmp_path / "labels.npy", np.arange(3))
    argv, expected = {
        "predict": (
            ["predict", "m.safetensors", "x.npy", "-o", "labels.npy", "--overwrite", *WORKERS],
            "no labels were written to 'labels.npy' (anything there is unchanged); "
            "run the same command again",
        ),
        "elbow": (
            ["elbow", "x.npy", "--ks", "2,4,8,16,32", *WORKERS],
            "nothing was saved; run the same command again",
        ),
        "tune": (
            ["tune", "x.npy", "-k", "512", "--sample", "50000"],
            "nothing was saved; run the same command again",
        ),
    }[command]
    started = lambda process, err: "dashboard:" in err or "tune k=512" in err  # noqa: E731
    code, _, err = interrupt(argv, started, tmp_path)
    assert code == EXIT_INTERRUPTED
    assert _last_line_only(err) == f"kmeans-dask {command}: interrupted; {expected}"
    np.testing.assert_array_equal(np.load(tmp_path / "labels.npy"), np.arange(3))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels.npy", "m.safetensors", "x.npy"]
