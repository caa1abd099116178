"""Which cluster a fit runs on, and what the dashboard shows."""

from __future__ import annotations

import logging

import dask.array as da
import numpy as np
import pytest
from distributed import default_client

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


def test_the_active_client_is_used(client, capsys):
    before = client.run_on_scheduler(lambda dask_scheduler: len(dask_scheduler.task_prefixes))
    X = np.random.default_rng(0).normal(size=(2000, 3))
    KMeans(3, random_state=0).fit(X)  # iterations through per-worker actors
    KMeans(3, random_state=0, engine="tasks").fit(X)  # iterations as tasks
    assert "started a LocalCluster" not in capsys.readouterr().out
    prefixes = client.run_on_scheduler(lambda dask_scheduler: sorted(dask_scheduler.task_prefixes))
    assert len(prefixes) >= before
    for name in ["kmeans-load", "kmeans-check", "kmeans-hosts", "kmeans-assign", "kmeans-label"]:
        assert name in prefixes, prefixes
    assert any(p.startswith("kmeans||") for p in prefixes), prefixes


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
