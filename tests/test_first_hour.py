"""What a new user meets first: the dashboard, scripts without a main guard, progress,
refusals that name the problem, a lost scheduler, files checked before the work."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import textwrap
import threading
import time
import urllib.request
from pathlib import Path

import dask.array as da
import numpy as np
import pytest
import zarr
from numpy.testing import assert_array_equal
from rich.console import Console

import kmeans_dask
from kmeans_dask import KMeans
from kmeans_dask._engine.client import SchedulerLostError, local_client
from kmeans_dask._fit.history import IterationRecord
from kmeans_dask._fit.progress import LloydProgress, StepProgress
from kmeans_dask._io.checkpoints import read_checkpoint
from kmeans_dask._io.model_files import save_model
from kmeans_dask.datasets import write_blobs_zarr


def _get(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=30) as response:
        return response.status, response.read().decode("utf-8", "replace")


def test_the_dashboard_is_served_by_the_base_install():
    messages: list[str] = []
    with local_client("the dashboard test", messages.append):
        link = re.search(r"dashboard: (http://\S+)", messages[0]).group(1)
        assert link.startswith("http://127.0.0.1:") and link.endswith("/status")
        status, page = _get(link)
        assert status == 200
        assert "bokeh" in page.lower() and "needs bokeh" not in page.lower()
        status, page = _get(link.replace("/status", "/individual-task-stream"))
        assert status == 200 and "bokeh" in page.lower()


def _run_unguarded(tmp_path, make_X: str) -> subprocess.CompletedProcess:
    script = tmp_path / "unguarded.py"
    script.write_text(
        textwrap.dedent(
            f"""\
            import dask.array as da
            import numpy as np
            from kmeans_dask import KMeans
            X = {make_X}
            model = KMeans(3, random_state=0).fit(X)
            print("inertia", model.inertia_)
            """
        )
    )
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=300, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("inertia ")
    return done


def test_a_script_without_a_main_guard_still_fits_dask_data_and_says_what_to_add(tmp_path):
    done = _run_unguarded(
        tmp_path, "da.from_array(np.random.default_rng(0).normal(size=(2000, 3)), chunks=500)"
    )
    assert f"{tmp_path / 'unguarded.py'}:5: RuntimeWarning" in done.stderr
    assert 'Put the script\'s work under `if __name__ == "__main__":`' in done.stderr
    assert len(done.stderr.splitlines()) <= 3, done.stderr  # a few lines, no traceback


def test_a_script_without_a_main_guard_fits_numpy_data_in_process_silently(tmp_path):
    # Rows in the script's memory are fitted by worker threads: no process to start.
    done = _run_unguarded(tmp_path, "np.random.default_rng(0).normal(size=(2000, 3))")
    assert done.stderr == ""


def test_the_fit_progress_bar_fills_when_the_fit_converges_early():
    console = Console(file=io.StringIO(), force_terminal=True, width=120)
    with LloydProgress(max_iter=300, init="k-means||", console=console) as progress:
        for iteration in range(1, 6):
            progress.update(IterationRecord(iteration, 10.0 / iteration, 0.1, 0, 0.01))
        task = progress._progress.tasks[0]
    assert task.completed == task.total == 5
    assert task.description == "Lloyd (converged)"


def test_steps_show_a_bar_on_a_terminal():
    console = Console(file=io.StringIO(), force_terminal=True, width=120)
    with StepProgress("labelling", None, "blocks", console=console) as steps:
        steps.set_total(4)
        for index in range(4):
            steps.advance(f"block {index}")
        task = steps._progress.tasks[0]
    assert (task.completed, task.total, task.fields["detail"]) == (4, 4, "block 3")
    assert "labelling" in console.file.getvalue()


def test_steps_print_one_line_each_off_a_terminal():
    console = Console(file=io.StringIO(), force_terminal=False)
    with StepProgress("labelling", 3, "blocks", console=console) as steps:
        for index in range(3):
            steps.advance(f"block {index}")
    assert console.file.getvalue().splitlines() == [
        f"[kmeans_dask] labelling: {n}/3 blocks  block {n - 1}" for n in (1, 2, 3)
    ]


def test_elbow_and_tune_show_progress_when_asked(client, capsys):
    from kmeans_dask.elbow import elbow
    from kmeans_dask.tuning import tune

    X = np.random.default_rng(0).normal(size=(600, 2))
    elbow(X, [1, 2, 3], progress=True)
    tune(X, 8, iterations=1, progress=True)
    err = capsys.readouterr().err
    assert err.count("[kmeans_dask] elbow: ") == 3 and "3/3 fits" in err
    assert "[kmeans_dask] tune k=8: 1/" in err


def _fitted(client) -> KMeans:
    X = np.random.default_rng(0).normal(size=(300, 3))
    return KMeans(3, random_state=0).fit(X)


def _zarr_group(tmp_path: Path):
    group = zarr.open_group(str(tmp_path / "g.zarr"), mode="w")
    group.create_array("points", shape=(10, 3), dtype="f8")
    return group


@pytest.mark.parametrize(
    ("params", "make_X", "error", "match"),
    [
        ({}, _zarr_group, ValueError, r"X is a Zarr group, not an array; .*group\['points'\]"),
        ({"init": da.zeros((3, 3))}, None, TypeError, "init must be an in-memory array"),
        ({"random_state": -1}, None, ValueError, r"random_state must be an integer in \[0, "),
        ({"random_state": 2**40}, None, ValueError, "got random_state=1099511627776"),
        (
            {"random_state": np.random.default_rng(0)},
            None,
            TypeError,
            "random_state must be None, an integer .* or a numpy.random.RandomState, got "
            "Generator",
        ),
    ],
    ids=["zarr-group-object", "dask-init", "negative-seed", "huge-seed", "generator"],
)
def test_user_mistakes_are_named_and_change_nothing(
    client, tmp_path, params, make_X, error, match
):
    model = _fitted(client)
    before = model.cluster_centers_.copy()
    X = make_X(tmp_path) if make_X else np.random.default_rng(1).normal(size=(50, 3))
    with pytest.raises(error, match=match):
        model.set_params(**params).fit(X)
    assert_array_equal(model.cluster_centers_, before)


@pytest.mark.parametrize(
    ("checkpoint", "error", "match"),
    [
        ("{tmp}/nodir/fit.ckpt", FileNotFoundError, "its directory '{tmp}/nodir' does not exist"),
        ("{tmp}", IsADirectoryError, "checkpoint='{tmp}' is a directory"),
        ("/proc/fit.ckpt", PermissionError, "cannot write to its directory '/proc'"),
        ("{tmp}/fifo", ValueError, "is not a regular file"),
    ],
    ids=["missing-directory", "a-directory", "read-only-directory", "fifo"],
)
def test_a_checkpoint_that_cannot_be_written_is_refused_before_the_fit(
    client, tmp_path, checkpoint, error, match, monkeypatch
):
    os.mkfifo(tmp_path / "fifo")
    started = []
    monkeypatch.setattr(
        "kmeans_dask._fit.cluster_fit.distribute", lambda *a, **k: started.append(1) or 1 / 0
    )
    path = checkpoint.format(tmp=tmp_path)
    with pytest.raises(error, match=re.escape(match.format(tmp=tmp_path))):
        KMeans(3).fit(np.zeros((10, 3)), checkpoint=path)
    assert not started  # refused before any data reached the cluster


def test_load_refuses_a_fifo_and_invalid_parameters(tmp_path):
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(ValueError, match="not a regular file but a FIFO"):
        kmeans_dask.load(tmp_path / "fifo")  # and does not block
    path = tmp_path / "bad.safetensors"
    params = {**KMeans(2).get_params(), "max_iter": 0}
    save_model(
        path,
        params=params,
        arrays={"cluster_centers_": np.zeros((2, 3))},
        attributes={"inertia_": 0.0, "n_iter_": 1, "n_features_in_": 3},
    )
    with pytest.raises(
        ValueError, match=r"cannot load model '.*bad.safetensors': max_iter must be >= 1"
    ):
        kmeans_dask.load(path)


def test_make_data_with_bad_parameters_leaves_nothing(tmp_path):
    for args, match in [((10, 2, 0), "n_clusters"), ((10, 0, 2), "n_features")]:
        with pytest.raises(ValueError, match=f"{match} must be an integer >= 1"):
            write_blobs_zarr(str(tmp_path / "x.zarr"), *args)
    with pytest.raises(ValueError, match="cluster_std must be a finite number >= 0"):
        write_blobs_zarr(str(tmp_path / "x.zarr"), 10, 2, 2, cluster_std=-1.0)
    assert list(tmp_path.iterdir()) == []


def test_random_state_none_resumes_its_own_checkpoint(client, tmp_path, monkeypatch, capsys):
    X = np.random.default_rng(3).uniform(size=(4000, 2))
    checkpoint = str(tmp_path / "fit.ckpt")
    update = LloydProgress.update

    def interrupt_at_third(self, record):
        update(self, record)
        if record.iteration == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(LloydProgress, "update", interrupt_at_third)
    with pytest.raises(KeyboardInterrupt):
        KMeans(20, tol=0, max_iter=8, verbose=1).fit(X, checkpoint=checkpoint)
    monkeypatch.undo()
    stored = read_checkpoint(checkpoint)
    (progress,) = stored.runs
    assert len(progress.history) == 3
    capsys.readouterr()
    model = KMeans(20, tol=0, max_iter=8, verbose=1).fit(X, checkpoint=checkpoint)
    assert "resuming from checkpoint" in capsys.readouterr().out
    assert [r.inertia for r in model.history_[:3]] == [r["inertia"] for r in progress.history]
    assert model.n_iter_ == 8


_SCHEDULER = """
import sys, time
from distributed import LocalCluster
cluster = LocalCluster(n_workers=1, threads_per_worker=1, processes=False, protocol="tcp",
                       host="127.0.0.1", dashboard_address=":0")
print(cluster.scheduler_address, flush=True)
time.sleep(600)
"""


def test_a_lost_scheduler_is_named_with_the_checkpoint_to_resume(tmp_path):
    from distributed import Client

    process = subprocess.Popen(
        [sys.executable, "-c", _SCHEDULER], stdout=subprocess.PIPE, text=True
    )
    try:
        address = process.stdout.readline().strip()
        checkpoint = tmp_path / "fit.ckpt"
        X = np.random.default_rng(0).uniform(size=(100_000, 2))

        def kill_once_checkpointed():
            while not checkpoint.exists() and process.poll() is None:
                time.sleep(0.01)
            process.kill()

        with Client(address, timeout=30) as client:
            threading.Thread(target=kill_once_checkpointed, daemon=True).start()
            started = time.monotonic()
            with pytest.raises(SchedulerLostError) as lost:
                KMeans(100, tol=0, max_iter=300, random_state=0).fit(X, checkpoint=str(checkpoint))
            assert time.monotonic() - started < 25  # said at once, not after reconnecting
            assert client.status != "running"
        message = str(lost.value)
        assert message.startswith(f"scheduler lost: the Dask scheduler at {address}")
        assert re.search(
            r"Checkpoint '.*fit.ckpt' holds run 1, iteration \d+; run the same", message
        )
        assert "worker" not in message.split("). ")[-1]
    finally:
        process.kill()
        process.wait()


def test_the_cli_says_scheduler_lost_and_exits_1(tmp_path, capsys):
    from kmeans_dask.cli import EXIT_FAILURE, main

    np.save(tmp_path / "x.npy", np.random.default_rng(0).uniform(size=(100_000, 2)))
    process = subprocess.Popen(
        [sys.executable, "-c", _SCHEDULER], stdout=subprocess.PIPE, text=True
    )
    try:
        address = process.stdout.readline().strip()
        checkpoint = tmp_path / "fit.ckpt"

        def kill_once_checkpointed():
            while not checkpoint.exists() and process.poll() is None:
                time.sleep(0.01)
            process.kill()

        threading.Thread(target=kill_once_checkpointed, daemon=True).start()
        argv = ["fit", str(tmp_path / "x.npy"), "-k", "100", "--tol", "0", "--random-state", "0"]
        argv += ["--checkpoint", str(checkpoint), "--scheduler", address, "--quiet"]
        assert main(argv) == EXIT_FAILURE
        err = capsys.readouterr().err.splitlines()[-1]
        assert err.startswith("kmeans-dask fit: failed: scheduler lost: the Dask scheduler at")
        assert re.search(r"Checkpoint '.*fit.ckpt' holds run 1, iteration \d+", err), err
    finally:
        process.kill()
        process.wait()
