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
from kmeans_dask._io.checkpoints import read_checkpoint

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
        (1, lambda state: len(state.runs[-1].history) >= 4),
        (2, lambda state: len(state.runs) == 2 and len(state.runs[1].history) >= 2),
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


SMALL = {"n_clusters": 12, "init": "k-means++", "random_state": 0, "tol": 0.0}


@pytest.fixture(scope="module")
def small():
    rng = np.random.default_rng(1)
    centers = rng.uniform(-4, 4, size=(12, 4))
    return centers[rng.integers(0, 12, 6000)] + rng.normal(size=(6000, 4))


def _assert_same_fit(model, reference):
    assert_array_equal(model.cluster_centers_, reference.cluster_centers_)
    assert model.inertia_ == reference.inertia_
    assert model.n_iter_ == reference.n_iter_
    assert_array_equal(model.labels_, reference.labels_)
    assert [r.center_shift for r in model.history_] == [r.center_shift for r in reference.history_]


@pytest.mark.parametrize("n_init", [1, 2])
def test_larger_max_iter_goes_on_to_the_uninterrupted_result(client, small, tmp_path, n_init):
    path = tmp_path / "fit.ckpt"
    KMeans(**SMALL, n_init=n_init, max_iter=6).fit(small, checkpoint=path)
    first = read_checkpoint(path)
    assert first.completed and [len(run.history) for run in first.runs] == [6] * n_init

    resumed = KMeans(**SMALL, n_init=n_init, max_iter=12).fit(small, checkpoint=path)
    _assert_same_fit(resumed, KMeans(**SMALL, n_init=n_init, max_iter=12).fit(small))
    after = read_checkpoint(path)
    assert after.completed
    for before, run in zip(first.runs, after.runs, strict=True):
        assert len(run.history) == 12
        assert run.history[:6] == before.history[:6]  # kept, not run again (same seconds)


def test_smaller_tol_goes_on_from_a_converged_run(client, small, tmp_path):
    path = tmp_path / "fit.ckpt"
    loose = KMeans(**{**SMALL, "tol": 1e-2}, max_iter=100).fit(small, checkpoint=path)
    tight = {**SMALL, "tol": 1e-9}
    reference = KMeans(**tight, max_iter=100).fit(small)
    assert loose.n_iter_ < reference.n_iter_  # the tighter tolerance runs further
    resumed = KMeans(**tight, max_iter=100).fit(small, checkpoint=path)
    _assert_same_fit(resumed, reference)
    assert read_checkpoint(path).runs[0].history[: loose.n_iter_] == [
        {name: getattr(r, name) for name in vars(r)} for r in loose.history_
    ]


def test_finished_checkpoint_with_the_same_stop_is_taken_as_it_is(client, small, tmp_path):
    path = tmp_path / "fit.ckpt"
    first = KMeans(**SMALL, n_init=2, max_iter=5).fit(small, checkpoint=path)
    content = path.read_bytes()
    again = KMeans(**SMALL, n_init=2, max_iter=5).fit(small, checkpoint=path)
    _assert_same_fit(again, first)
    assert path.read_bytes() == content  # nothing ran, nothing written


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"max_iter": 4}, "after 6 iterations, but this fit's max_iter=4 and tol stop it at "),
        ({"tol": 1e3}, "stop it at iteration 1"),
    ],
    ids=["smaller-max_iter", "larger-tol"],
)
def test_checkpoint_past_the_new_stop_is_refused(client, small, tmp_path, change, match):
    path = tmp_path / "fit.ckpt"
    KMeans(**SMALL, max_iter=6).fit(small, checkpoint=path)
    content = path.read_bytes()
    other = KMeans(**{**SMALL, "max_iter": 6, **change})
    with pytest.raises(ValueError, match=match):
        other.fit(small, checkpoint=path)
    assert not hasattr(other, "cluster_centers_")
    assert path.read_bytes() == content


def _permuted_column(X):
    Y = X.copy()
    Y[:, 2] = np.random.default_rng(5).permutation(Y[:, 2])
    return Y


@pytest.mark.parametrize(
    ("change", "make_data"),
    [
        ({"n_clusters": 11}, None),
        ({"random_state": 1}, None),
        ({"init": "random"}, None),
        ({"n_init": 2}, None),
        ({}, lambda X: X[:-1]),
        ({}, lambda X: X.astype(np.float32)),
        ({}, lambda X: X[:, :3]),
        ({}, _permuted_column),  # same shape, dtype and column means
        ({}, lambda X: np.nextafter(X, np.inf)),
    ],
    ids=[
        "n_clusters",
        "random_state",
        "init",
        "n_init",
        "rows",
        "dtype",
        "features",
        "permuted-column",
        "last-bit",
    ],
)
def test_checkpoint_of_another_fit_is_refused(client, small, tmp_path, change, make_data):
    path = tmp_path / "fit.ckpt"
    KMeans(**SMALL, max_iter=2).fit(small, checkpoint=path)
    other = KMeans(**{**SMALL, "max_iter": 2, **change})
    data = small if make_data is None else make_data(small)
    with pytest.raises(ValueError, match="belongs to a different fit"):
        other.fit(data, checkpoint=path)
    assert not hasattr(other, "cluster_centers_")


def test_checkpoint_of_other_integer_data_with_the_same_means_is_refused(client, tmp_path):
    """Issue #18.2: integer data B, one column of A permuted, resumed A's checkpoint."""
    A = np.random.default_rng(0).integers(0, 1000, size=(4000, 3))
    B = A.copy()
    B[:, 1] = B[::-1, 1]
    assert (A.mean(axis=0) == B.mean(axis=0)).all()
    path = tmp_path / "fit.ckpt"
    KMeans(**SMALL, max_iter=2).fit(A, checkpoint=path)
    with pytest.raises(ValueError, match="belongs to a different fit"):
        KMeans(**SMALL, max_iter=2).fit(B, checkpoint=path)


def test_weights_are_part_of_the_data(client, small, tmp_path):
    path = tmp_path / "fit.ckpt"
    weights = np.ones(len(small))
    # Unit weights are no weights: the same fit.
    KMeans(**SMALL, max_iter=2).fit(small, checkpoint=path)
    KMeans(**SMALL, max_iter=2).fit(small, sample_weight=weights, checkpoint=path)
    weights[7] = 2.0
    with pytest.raises(ValueError, match="belongs to a different fit"):
        KMeans(**SMALL, max_iter=2).fit(small, sample_weight=weights, checkpoint=path)
