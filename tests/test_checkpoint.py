"""Checkpoints: a fit killed mid-run resumes to exactly the uninterrupted result."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
from numpy.testing import assert_array_equal

from kmeans_dask import KMeans
from kmeans_dask._model_io import read_checkpoint

PARAMS = {"n_clusters": 40, "init": "k-means++", "random_state": 0, "max_iter": 60, "tol": 0.0}

FIT_SCRIPT = textwrap.dedent(
    """
    import sys
    import numpy as np
    from distributed import Client, LocalCluster
    from kmeans_dask import KMeans

    if __name__ == "__main__":
        X = np.random.default_rng(0).uniform(size=(100_000, 8))
        with (
            LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                         dashboard_address=":0") as cluster,
            Client(cluster),
        ):
            KMeans(**{params}, n_init=int(sys.argv[2])).fit(X, checkpoint=sys.argv[1])
    """
).format(params=PARAMS)


@pytest.fixture(scope="module")
def data():
    return np.random.default_rng(0).uniform(size=(100_000, 8))


def _kill_when(path, process, reached, timeout=240.0):
    """SIGKILL ``process`` once the checkpoint at ``path`` satisfies ``reached``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, "the fit finished before it could be killed"
        try:
            state = read_checkpoint(path)
        except ValueError:
            state = None  # never expected: writes are atomic; retried to be sure
        if state is not None and reached(state):
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=30)
            return state
        time.sleep(0.01)
    process.kill()
    pytest.fail("checkpoint never reached the kill point")


@pytest.mark.parametrize(
    ("n_init", "kill_point"),
    [
        (1, lambda state: state.iteration >= 4),
        (2, lambda state: state.run == 1 and state.iteration >= 2),
    ],
    ids=["mid-run", "second-run"],
)
def test_killed_fit_resumes_to_the_uninterrupted_result(
    client, data, tmp_path, n_init, kill_point
):
    reference = KMeans(**PARAMS, n_init=n_init).fit(data)
    path = tmp_path / "fit.ckpt"
    script = tmp_path / "fit.py"
    script.write_text(FIT_SCRIPT)
    process = subprocess.Popen(
        [sys.executable, str(script), str(path), str(n_init)],
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    state = _kill_when(path, process, kill_point)
    assert process.returncode == -signal.SIGKILL
    assert not state.completed

    resumed = KMeans(**PARAMS, n_init=n_init).fit(data, checkpoint=path)
    assert_array_equal(resumed.cluster_centers_, reference.cluster_centers_)
    assert resumed.inertia_ == reference.inertia_
    assert resumed.n_iter_ == reference.n_iter_
    assert_array_equal(resumed.labels_, reference.labels_)
    assert read_checkpoint(path).completed


def test_completed_checkpoint_returns_the_same_model(client, data, tmp_path):
    path = tmp_path / "fit.ckpt"
    first = KMeans(**PARAMS, engine="actors").fit(data, checkpoint=path)
    # The engine does not change the result, so it does not refuse the checkpoint.
    again = KMeans(**PARAMS, engine="tasks").fit(data, checkpoint=path)
    assert_array_equal(again.cluster_centers_, first.cluster_centers_)
    assert again.inertia_ == first.inertia_
    assert again.n_iter_ == first.n_iter_


@pytest.mark.parametrize(
    "change",
    [{"n_clusters": 39}, {"random_state": 1}, {"max_iter": 61}],
    ids=["n_clusters", "random_state", "max_iter"],
)
def test_checkpoint_of_another_fit_is_refused(client, data, tmp_path, change):
    path = tmp_path / "fit.ckpt"
    KMeans(**{**PARAMS, "max_iter": 2}).fit(data, checkpoint=path)
    other = KMeans(**{**PARAMS, "max_iter": 2, **change})
    with pytest.raises(ValueError, match="belongs to a different fit"):
        other.fit(data, checkpoint=path)
    assert not hasattr(other, "cluster_centers_")
    with pytest.raises(ValueError, match="belongs to a different fit"):
        KMeans(**{**PARAMS, "max_iter": 2}).fit(data[:-1], checkpoint=path)
