"""Which cluster a fit runs on, and what the dashboard shows."""

from __future__ import annotations

import logging

import dask.array as da
import numpy as np
import pytest
from distributed import default_client
from numpy.testing import assert_allclose

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


def _tasks_run_per_prefix(client) -> dict[str, int]:
    return client.run_on_scheduler(
        lambda dask_scheduler: {
            name: sum(prefix.state_counts.values())
            for name, prefix in dask_scheduler.task_prefixes.items()
        }
    )


def test_the_active_client_is_used(client, capsys):
    before = _tasks_run_per_prefix(client)
    X = np.random.default_rng(0).normal(size=(2000, 3))
    KMeans(3, random_state=0).fit(X)  # iterations through per-worker actors
    KMeans(3, random_state=0, engine="tasks").fit(X)  # iterations as tasks
    KMeans(3, random_state=0).fit(da.from_array(X, chunks=500))  # blocks loaded by tasks
    assert "started a LocalCluster" not in capsys.readouterr().out
    after = _tasks_run_per_prefix(client)
    for name in ["kmeans-load", "kmeans-hosts", "kmeans-assign", "kmeans-label"]:
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
