"""The final assignment pass is skipped when the last iteration left the centres as they were.

On strict convergence the last iteration's pass assigned the rows to the
final centres already: its labels and inertia are those the final pass would
give, bit for bit (scikit-learn skips its last E-step then too). Each case
fits twice, once as it is and once with the skip switched off, and compares.
"""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
import zarr
from distributed import get_task_stream
from numpy.testing import assert_array_equal

from kmeans_dask import KMeans
from kmeans_dask._fit import lloyd as lloyd_module
from kmeans_dask._fit import passes as passes_module
from kmeans_dask._worker import tasks as tasks_module
from kmeans_dask._worker.chunks import make_chunk
from kmeans_dask._worker.host_ops import host_ops
from kmeans_dask._worker.tasks import chunk_labels, kept_labels, stats_keeping_labels


@pytest.fixture
def final_passes(monkeypatch):
    """How many final passes the fits made (a list, one entry per pass)."""
    passes = []
    final_pass = passes_module.final_pass

    def counted(*args, **kwargs):
        passes.append(True)
        return final_pass(*args, **kwargs)

    monkeypatch.setattr(passes_module, "final_pass", counted)
    return passes


def _without_skip(monkeypatch):
    """Make every run end with its final pass, as before the skip."""
    monkeypatch.setattr(lloyd_module, "LastPass", lambda *args: None)


def _fit_both_ways(monkeypatch, final_passes, make_model, X, **fit_kwargs):
    skipped = make_model().fit(X, **fit_kwargs)
    assert final_passes == []  # converged strictly: no final pass
    with monkeypatch.context() as patch:
        _without_skip(patch)
        reference = make_model().fit(X, **fit_kwargs)
    assert final_passes == [True]
    assert skipped.history_[-1].center_shift == 0.0
    assert skipped.n_iter_ == reference.n_iter_
    assert skipped.inertia_ == reference.inertia_  # bit for bit
    assert_array_equal(skipped.cluster_centers_, reference.cluster_centers_)
    return skipped, reference


def _labels(model):
    labels = model.labels_
    return labels.compute() if isinstance(labels, da.Array) else np.asarray(labels)


@pytest.mark.parametrize("engine", ["actors", "tasks"])
@pytest.mark.parametrize("algorithm", ["lloyd", "hamerly", "auto"])
@pytest.mark.parametrize("weighted", [False, True])
def test_strict_convergence_skips_the_final_pass_with_the_same_result(
    client, blobs, monkeypatch, final_passes, engine, algorithm, weighted
):
    X = blobs[0].astype(np.float32)
    weights = np.random.default_rng(1).uniform(0.1, 3.0, len(X)) if weighted else None
    skipped, reference = _fit_both_ways(
        monkeypatch,
        final_passes,
        lambda: KMeans(
            6, random_state=0, tol=0.0, max_iter=300, engine=engine, algorithm=algorithm
        ),
        X,
        sample_weight=weights,
    )
    assert_array_equal(skipped.labels_, reference.labels_)
    assert skipped.labels_.dtype == reference.labels_.dtype


def test_dask_input_keeps_its_labels_lazy_and_the_same(client, blobs, monkeypatch, final_passes):
    X = da.from_array(blobs[0], chunks=700)
    skipped, reference = _fit_both_ways(
        monkeypatch, final_passes, lambda: KMeans(6, random_state=0, tol=0.0, max_iter=300), X
    )
    assert isinstance(skipped.labels_, da.Array)
    assert skipped.labels_.chunks == X.chunks[:1]
    assert_array_equal(_labels(skipped), _labels(reference))


def test_streamed_zarr_skips_its_final_statistics_pass(
    client, blobs, tmp_path, monkeypatch, final_passes
):
    path = str(tmp_path / "blobs.zarr")
    store = zarr.create_array(path, shape=blobs[0].shape, chunks=(500, 5), dtype="f8")
    store[:] = blobs[0]
    skipped, reference = _fit_both_ways(
        monkeypatch,
        final_passes,
        lambda: KMeans(6, random_state=0, tol=0.0, max_iter=300, persist=False),
        path,
    )
    assert_array_equal(_labels(skipped), _labels(reference))


def test_a_run_stopped_by_tol_or_max_iter_ends_with_its_final_pass(client, blobs, final_passes):
    stopped = KMeans(6, init="random", n_init=1, random_state=0, tol=0.0, max_iter=1).fit(blobs[0])
    assert stopped.history_[-1].center_shift > 0
    within_tol = KMeans(6, init="random", n_init=1, random_state=0, tol=0.1).fit(blobs[0])
    assert within_tol.history_[-1].center_shift > 0
    assert final_passes == [True, True]


def test_a_plain_pass_keeps_its_labels_in_those_nobody_took():
    """No new memory per iteration (page faults under the nanny's malloc settings)."""
    rng = np.random.default_rng(0)
    chunk = make_chunk(rng.normal(size=(500, 3)), None, 0, np.float64, host_ops())
    centers, moved = rng.normal(size=(4, 3)), rng.normal(size=(4, 3))
    stats_keeping_labels(chunk, centers, "numpy", None, ("run", 1))
    first = tasks_module.LABELS.get(chunk, ("run", 1))
    stats_keeping_labels(chunk, moved, "numpy", None, ("run", 2))
    second = tasks_module.LABELS.get(chunk, ("run", 2))
    assert second is first
    assert_array_equal(second, chunk_labels(chunk, moved, "numpy")[0])
    handed_over = kept_labels(chunk, moved, "numpy", ("run", 2))
    stats_keeping_labels(chunk, centers, "numpy", None, ("run", 3))
    assert tasks_module.LABELS.take(chunk, ("run", 3)) is not handed_over
    assert_array_equal(handed_over, chunk_labels(chunk, moved, "numpy")[0])


@pytest.mark.parametrize("n_init", [1, 3])
def test_numpy_labels_come_from_the_actors_without_a_task_per_chunk(client, blobs, n_init):
    """A NumPy fit through the actors gets its labels in one call per worker: no
    ``kmeans-labels`` task runs, and they are those of the tasks engine and of predict."""
    X = blobs[0]
    params = {"n_clusters": 6, "random_state": 0, "n_init": n_init, "max_iter": 4, "tol": 0.0}
    with get_task_stream(client) as stream:
        through_actors = KMeans(**params, engine="actors").fit(X)
    assert not [t for t in stream.data if str(t["key"]).startswith("('kmeans-labels")]
    through_tasks = KMeans(**params, engine="tasks").fit(X)
    assert isinstance(through_actors.labels_, np.ndarray)
    assert_array_equal(through_actors.labels_, through_tasks.labels_)
    assert_array_equal(through_actors.labels_, through_actors.predict(X))
