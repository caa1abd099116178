"""Which cluster a fit runs on, and what the dashboard shows."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import dask.array as da
import numpy as np
import pytest
from distributed import default_client
from numpy.testing import assert_allclose, assert_array_equal

from kmeans_dask import KMeans


def test_without_a_client_a_local_cluster_is_started_and_closed(capsys):
    with pytest.raises(ValueError):
        default_client()  # no client is active in this test
    X = np.random.default_rng(0).normal(size=(2000, 3))
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.INFO)
    handler.emit = records.append
    logger = logging.getLogger("kmeans_dask")
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.INFO)  # setLevel, not .level: it clears the loggers' caches
    try:
        model = KMeans(3, random_state=0).fit(X)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    assert capsys.readouterr().out == ""  # a library prints nothing unasked
    link = "started a LocalCluster for this fit; dashboard: http://127.0.0.1:"
    assert any(link in record.getMessage() for record in records), records
    assert isinstance(model.labels_, np.ndarray)  # gathered before the cluster closed
    with pytest.raises(ValueError):
        default_client()  # and nothing is left behind
    KMeans(3, random_state=0, verbose=1).fit(X)
    assert link in capsys.readouterr().out  # asked for


@pytest.mark.parametrize(
    ("make_X", "where"),
    [
        (lambda X: X, {"processes": False}),  # rows in this process: worker threads
        (lambda X: da.from_array(X, chunks=1000), {"host": "127.0.0.1"}),  # worker processes
    ],
    ids=["numpy", "dask"],
)
def test_without_a_client_numpy_rows_are_fitted_by_threads_that_give_cores_back(
    monkeypatch, make_X, where
):
    import faiss
    from threadpoolctl import threadpool_info

    from kmeans_dask._engine import client as client_module

    for name in client_module.nanny_variables():  # as in a process that started no cluster
        monkeypatch.delenv(name, raising=False)

    started = []
    local_cluster = client_module.LocalCluster

    def recording(**kwargs):
        started.append(kwargs)
        return local_cluster(**kwargs)

    monkeypatch.setattr(client_module, "LocalCluster", recording)
    pools = [(pool["filepath"], pool["num_threads"]) for pool in threadpool_info()]
    faiss_threads = faiss.omp_get_max_threads()
    X = np.random.default_rng(0).normal(size=(3000, 3))
    exact = KMeans(3, random_state=0).fit(X)
    model = KMeans(3, random_state=0, backend="faiss-cpu").fit(make_X(X))
    in_process = {"dashboard_address": "127.0.0.1:0", "processes": False}
    assert started == [in_process, {"dashboard_address": "127.0.0.1:0", **where}]
    assert_allclose(np.asarray(model.labels_), exact.labels_)
    # The workers' one-thread caps on BLAS, OpenMP and Faiss ended with their cluster.
    assert [(pool["filepath"], pool["num_threads"]) for pool in threadpool_info()] == pools
    assert faiss.omp_get_max_threads() == faiss_threads
    # Worker processes' nannies set OMP_NUM_THREADS=1 and others here; they are gone.
    assert not client_module.nanny_variables() & set(os.environ)


_CONCURRENT_FITS = """
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from sklearn.cluster import KMeans as SklearnKMeans
from threadpoolctl import threadpool_info

from kmeans_dask import KMeans


def data(seed):
    X = np.random.default_rng(seed).normal(size=(20000, 4))
    X[::3] += 4
    return X, X[:5].copy()


def fit(seed):
    X, init = data(seed)
    return KMeans(5, init=init, max_iter=10, tol=0).fit(X).labels_


if __name__ == "__main__":
    # scikit-learn first, alone: its own caps, overlapping in threads, can leave
    # BLAS capped (threadpoolctl's limiters each restore what they found).
    expected = [
        SklearnKMeans(5, init=init, n_init=1, max_iter=10, tol=0).fit(X).labels_
        for X, init in map(data, range(6))
    ]
    pools = [(pool["filepath"], pool["num_threads"]) for pool in threadpool_info()]
    with ThreadPoolExecutor(3) as threads:
        labels = list(threads.map(fit, range(6)))
    after = [(pool["filepath"], pool["num_threads"]) for pool in threadpool_info()]
    agreed = all((a == b).all() for a, b in zip(labels, expected))
    print(agreed, after == pools, max(n for _, n in pools))
"""


def test_fits_in_several_threads_at_once_agree_and_give_cores_back(tmp_path):
    # In a fresh process: the cap is shared by the fits' in-process clusters and
    # undone when the last one ends, whichever thread that is.
    script = tmp_path / "concurrent_fits.py"
    script.write_text(_CONCURRENT_FITS)
    from kmeans_dask._engine.client import nanny_variables

    # Not the one-thread settings the session cluster's nannies left in this process.
    environment = {k: v for k, v in os.environ.items() if k not in nanny_variables()}
    done = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        env=environment,
    )
    assert done.returncode == 0, done.stderr
    agreed, restored, threads = done.stdout.split()
    assert (agreed, restored) == ("True", "True"), done.stdout
    assert int(threads) == (os.cpu_count() or 1)  # the check is not vacuous


def _tasks_run_per_prefix(client) -> dict[str, int]:
    return client.run_on_scheduler(
        lambda dask_scheduler: {
            name: sum(prefix.state_counts.values())
            for name, prefix in dask_scheduler.task_prefixes.items()
        }
    )


def test_the_active_client_is_used(client, capsys, tmp_path):
    before = _tasks_run_per_prefix(client)
    X = np.random.default_rng(0).normal(size=(2000, 3))
    KMeans(3, random_state=0).fit(X)  # iterations through per-worker actors
    # Iterations as tasks; a checkpoint has the data checked in a pass of its own.
    KMeans(3, random_state=0, engine="tasks").fit(X, checkpoint=tmp_path / "fit.ckpt")
    KMeans(3, random_state=0).fit(da.from_array(X, chunks=500))  # blocks loaded by tasks
    assert "started a LocalCluster" not in capsys.readouterr().out
    after = _tasks_run_per_prefix(client)
    for name in ["kmeans-load", "kmeans-check", "kmeans-hosts", "kmeans-assign", "kmeans-label"]:
        assert after.get(name, 0) > before.get(name, 0), (name, after)
    assert any(
        name.startswith("kmeans||") and count > before.get(name, 0)
        for name, count in after.items()
    ), after


def test_dask_labels_stay_on_the_cluster_with_an_active_client(client):
    X = da.from_array(np.random.default_rng(1).normal(size=(3000, 2)), chunks=1000)
    model = KMeans(2, random_state=0).fit(X)
    assert isinstance(model.labels_, da.Array)
    assert model.labels_.chunks == ((1000, 1000, 1000),)
    assert len(client.who_has()) > 0  # the label futures are held in worker memory


def test_verbose_fit_prints_progress_and_history_is_a_table(client, capsys):
    X = np.random.default_rng(2).normal(size=(3000, 2))
    model = KMeans(4, random_state=0, verbose=1, tol=0, max_iter=5).fit(X)
    printed = capsys.readouterr().out
    assert printed.count("[kmeans_dask] Iteration ") == model.n_iter_ == 5
    table = str(model.history_)
    assert table.splitlines()[0].split() == [
        "iteration",
        "inertia",
        "center_shift",
        "n_empty",
        "seconds",
    ]
    assert len(table.splitlines()) == 6
    assert "<table>" in model.history_._repr_html_()
    frame = model.history_.to_pandas()
    assert list(frame.index) == [1, 2, 3, 4, 5]
    assert frame["inertia"].is_monotonic_decreasing


def test_neighbour_tables_hold_the_processes_shared_cap_and_give_it_back(monkeypatch):
    """A hold taken while a table is made outlasts the table's: the cap stays until it ends.

    (With a limiter of its own, the table restored the limits it had found,
    uncapping BLAS under the other holder, whose end then capped it for good.)
    """
    from contextlib import ExitStack

    from threadpoolctl import threadpool_info

    from kmeans_dask._kernels import candidate_search
    from kmeans_dask._kernels.native_threads import native_cap
    from kmeans_dask.backends.approximate import candidate_table

    def limits():
        return [(pool["filepath"], pool["num_threads"]) for pool in threadpool_info()]

    other_hold = ExitStack()
    real_table = candidate_search.neighbour_table

    def taking_a_hold_meanwhile(*args):
        if not other_hold._exit_callbacks:
            other_hold.enter_context(native_cap())
        return real_table(*args)

    monkeypatch.setattr(candidate_search, "neighbour_table", taking_a_hold_meanwhile)
    centers = np.random.default_rng(2).normal(size=(600, 8))
    before = limits()
    table = candidate_table(centers, 6)
    assert all(threads == 1 for _, threads in limits())  # still held
    other_hold.close()
    assert limits() == before
    assert_array_equal(table[:, 0], np.arange(600))  # each centre its own nearest
