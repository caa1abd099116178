"""A fit on workers paused by their memory limit ends with a clear error, never hangs.

The clusters here run their workers as threads of the test process, which
start in a fraction of a second. A worker is paused either by its memory
monitor (a pause threshold below the process's memory) or by setting its
status, on a worker without a memory limit, whose status no monitor resets.
Every fit runs in a thread joined with a deadline, so a fit that hangs fails
its test instead of hanging the suite.
"""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import dask
import dask.array as da
import numpy as np
import pytest
import zarr
from distributed import Client, LocalCluster
from distributed.core import Status
from numpy.testing import assert_array_equal

import kmeans_dask._fit.runs as runs_module
from kmeans_dask import KMeans
from kmeans_dask._engine.pauses import PAUSED_TIMEOUT_KEY, WorkersPausedError, paused_timeout
from kmeans_dask._io.checkpoints import read_checkpoint

#: Longest a fit in these tests may take before it counts as hung.
DEADLINE = 60.0
#: Lloyd runs to a fixed point in 21 (k=3) and 49 (k=4) iterations on ``rows``.
PARAMS = {"n_clusters": 4, "random_state": 0, "n_init": 1, "max_iter": 300, "tol": 0.0}


@pytest.fixture(scope="module")
def rows() -> np.ndarray:
    return np.random.default_rng(0).normal(size=(4000, 3))


@pytest.fixture(scope="module", autouse=True)
def frozen_before() -> None:
    """Exempt what earlier tests left alive from the collections below: each would
    traverse it again (half a second a test late in a full run)."""
    gc.collect()
    gc.freeze()


@pytest.fixture(autouse=True)
def collected() -> Iterator[None]:
    """After each test, collect its garbage: the workers ran in this process, and what
    they keep for a chunk (kmeans_dask._worker.memo) goes only with the chunk, which an
    error's traceback can hold in a reference cycle."""
    yield
    gc.collect()


@contextmanager
def threaded_cluster(n_workers: int, **worker_options: Any) -> Iterator[Client]:
    """A client of a LocalCluster whose workers are threads of this process."""
    with (
        LocalCluster(
            n_workers=n_workers,
            threads_per_worker=1,
            processes=False,
            dashboard_address=":0",
            **worker_options,
        ) as cluster,
        Client(cluster) as client,
    ):
        yield client


def finished_within(seconds: float, work: Callable[[], Any]) -> Any:
    """``work()`` in a thread: its value or error, or a test failure if it is not done in time."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = work()
        except BaseException as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        pytest.fail(f"still waiting after {seconds:.0f} s: the fit hangs")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def _set_status(status: str, dask_worker) -> None:
    dask_worker.status = Status[status]


def set_status(client: Client, status: str, workers: list[str] | None = None) -> None:
    """Pause or resume ``workers`` (all by default) and wait until the scheduler knows."""
    client.run(_set_status, status, workers=workers)
    wanted = set(workers or client.scheduler_info(n_workers=-1)["workers"])
    deadline = time.monotonic() + 10
    while True:
        seen = client.scheduler_info(n_workers=-1)["workers"]
        if all(seen[address]["status"] == status for address in wanted):
            return
        assert time.monotonic() < deadline, f"the scheduler did not see {wanted} {status}"
        time.sleep(0.05)


def zarr_path(rows: np.ndarray, tmp_path) -> str:
    path = str(tmp_path / "rows.zarr")
    zarr.create_array(path, shape=rows.shape, chunks=(500, rows.shape[1]), dtype="f8")[:] = rows
    return path


INPUTS = {
    "numpy-actors": (lambda rows, tmp_path: rows, {"engine": "actors"}),
    "numpy-tasks": (lambda rows, tmp_path: rows, {"engine": "tasks"}),
    "dask-actors": (lambda rows, tmp_path: da.from_array(rows, chunks=500), {"engine": "actors"}),
    "zarr-streamed": (zarr_path, {"engine": "tasks", "persist": False}),
}


@pytest.mark.parametrize("case", list(INPUTS))
def test_a_fit_on_workers_their_memory_paused_fails_naming_them(rows, tmp_path, case):
    """The reported hang: the worker's own memory passes the pause threshold, for good."""
    make_input, options = INPUTS[case]
    X = make_input(rows, tmp_path)
    with (
        dask.config.set({"distributed.worker.memory.pause": 0.01}),
        threaded_cluster(1, memory_limit="1GiB") as client,
        dask.config.set({PAUSED_TIMEOUT_KEY: 0.5}),
    ):
        set_status(client, "paused")  # the memory monitor does it within 0.1 s; wait for it
        (address,) = client.scheduler_info(n_workers=-1)["workers"]
        model = KMeans(**PARAMS, **options)
        with pytest.raises(WorkersPausedError) as raised:
            finished_within(DEADLINE, lambda: model.fit(X))
    message = str(raised.value)
    for part in [
        f"{address} (",
        "in use of its memory_limit 1.00 GiB",
        "pause threshold 1% = 10.24 MiB",
        "a larger memory_limit",
        "fewer threads per worker or smaller chunks",
        "'distributed.worker.memory.pause'",
        "'kmeans_dask.paused-timeout' (now 0.5 s)",
    ]:
        assert part in message
    assert not hasattr(model, "cluster_centers_")


def test_a_scatter_that_gives_up_on_paused_workers_says_why(rows):
    """Scattering gives up by itself after distributed's connect timeout (here 1 s,
    shorter than the paused timeout): that too is reported as the workers' pause."""
    with (
        dask.config.set({"distributed.comm.timeouts.connect": "1s"}),
        threaded_cluster(1, memory_limit=0) as client,
        dask.config.set({PAUSED_TIMEOUT_KEY: 30}),
    ):
        set_status(client, "paused")
        with pytest.raises(WorkersPausedError, match=r"paused for \d+ s: .*no memory limit"):
            finished_within(DEADLINE, lambda: KMeans(**PARAMS).fit(rows))


def test_partial_fit_on_a_dask_batch_of_paused_workers_fails_and_keeps_the_model(rows):
    """A Dask batch is computed on the active client: watched as the fit's passes are."""
    model = KMeans(**PARAMS).partial_fit(rows[:1000])
    before = model.cluster_centers_.copy()
    batch = da.from_array(rows[1000:], chunks=1000)
    with threaded_cluster(1, memory_limit=0) as client, dask.config.set({PAUSED_TIMEOUT_KEY: 0.5}):
        assert_array_equal(model.partial_fit(batch[:500]).labels_.shape, (500,))
        after_one = model.cluster_centers_.copy()
        set_status(client, "paused")
        with pytest.raises(WorkersPausedError, match="has been paused"):
            finished_within(DEADLINE, lambda: model.partial_fit(batch))
    assert not np.array_equal(after_one, before)
    assert_array_equal(model.cluster_centers_, after_one)
    assert model.n_steps_ == 2


def test_a_fit_stopped_by_paused_workers_keeps_the_model_and_its_checkpoint(
    rows, tmp_path, monkeypatch
):
    """Paused after two iterations: the model is unchanged, the checkpoint keeps both,
    and the same fit on a working cluster resumes to the undisturbed result."""
    path = tmp_path / "fit.ckpt"
    params = {**PARAMS, "engine": "tasks"}
    with threaded_cluster(1, memory_limit=0) as client, dask.config.set({PAUSED_TIMEOUT_KEY: 0.5}):
        undisturbed = KMeans(**params).fit(rows)
        model = KMeans(**{**params, "n_clusters": 3}).fit(rows)
        before = model.cluster_centers_.copy()
        write = runs_module.write_checkpoint
        writes = []

        def write_then_pause(*args, **kwargs):
            write(*args, **kwargs)
            writes.append(1)
            if len(writes) == 2:
                set_status(client, "paused")

        monkeypatch.setattr(runs_module, "write_checkpoint", write_then_pause)
        model.set_params(n_clusters=4)
        with pytest.raises(WorkersPausedError, match="has been paused"):
            finished_within(DEADLINE, lambda: model.fit(rows, checkpoint=path))
        assert_array_equal(model.cluster_centers_, before)
        (run,) = read_checkpoint(path).runs
        assert len(run.history) == 2
        monkeypatch.undo()
        set_status(client, "running")
        resumed = finished_within(DEADLINE, lambda: model.fit(rows, checkpoint=path))
    assert_array_equal(resumed.cluster_centers_, undisturbed.cluster_centers_)
    assert_array_equal(resumed.labels_, undisturbed.labels_)


def test_a_worker_paused_for_a_moment_does_not_end_the_fit(rows):
    """A pause shorter than the timeout (a worker spilling, then resuming) is waited out."""
    with threaded_cluster(1, memory_limit=0) as client, dask.config.set({PAUSED_TIMEOUT_KEY: 10}):
        undisturbed = KMeans(**PARAMS).fit(rows)
        set_status(client, "paused")
        resume = threading.Timer(2.0, set_status, (client, "running"))
        resume.start()
        try:
            model = finished_within(DEADLINE, lambda: KMeans(**PARAMS).fit(rows))
        finally:
            resume.join()
    assert_array_equal(model.cluster_centers_, undisturbed.cluster_centers_)


@pytest.mark.parametrize("engine", ["actors", "tasks"])
@pytest.mark.parametrize("when", ["before the fit", "after its first iteration"])
def test_with_one_of_two_workers_paused_the_fit_completes(rows, monkeypatch, engine, when):
    """The other worker runs the work: no error, and the result of an undisturbed fit."""
    params = {**PARAMS, "engine": engine}
    with threaded_cluster(2, memory_limit=0) as client, dask.config.set({PAUSED_TIMEOUT_KEY: 0}):
        undisturbed = KMeans(**params).fit(rows)
        first = sorted(client.scheduler_info(n_workers=-1)["workers"])[:1]
        if when == "before the fit":
            set_status(client, "paused", first)
        else:
            iterate = runs_module.lloyd

            def pause_after_one(*args, on_iteration=None, **kwargs):
                def then_pause(centers, history):
                    if on_iteration is not None:
                        on_iteration(centers, history)
                    if len(history) == 1:
                        set_status(client, "paused", first)

                return iterate(*args, on_iteration=then_pause, **kwargs)

            monkeypatch.setattr(runs_module, "lloyd", pause_after_one)
        model = finished_within(DEADLINE, lambda: KMeans(**params).fit(rows))
    assert_array_equal(model.cluster_centers_, undisturbed.cluster_centers_)
    assert_array_equal(model.labels_, undisturbed.labels_)


@pytest.mark.parametrize(
    ("value", "seconds"), [(None, None), (0, 0.0), (2.5, 2.5), ("90s", 90.0), ("2 minutes", 120.0)]
)
def test_the_paused_timeout_is_read_from_the_dask_config(value, seconds):
    with dask.config.set({PAUSED_TIMEOUT_KEY: value}):
        assert paused_timeout() == seconds


def test_the_paused_timeout_defaults_to_a_minute():
    assert paused_timeout() == 60.0


@pytest.mark.parametrize(
    ("value", "match"),
    [
        ("soon", r"'kmeans_dask.paused-timeout' should be a number of seconds.*got 'soon'"),
        (True, r"'kmeans_dask.paused-timeout' should be a number of seconds.*got True"),
        (-1, r"'kmeans_dask.paused-timeout' should be >= 0; got -1"),
        ([1], r"'kmeans_dask.paused-timeout' should be a number of seconds.*got \[1\]"),
    ],
)
def test_a_bad_paused_timeout_is_refused(value, match):
    with dask.config.set({PAUSED_TIMEOUT_KEY: value}), pytest.raises(ValueError, match=match):
        paused_timeout()


def test_the_error_is_public_and_a_runtime_error():
    import kmeans_dask

    assert "WorkersPausedError" in dir(kmeans_dask)
    assert issubclass(kmeans_dask.WorkersPausedError, RuntimeError)
