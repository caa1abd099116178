"""On a real GPU (skipped elsewhere, with the reason): CuPy chunks resident on the device,
the same answer as the CPU path and the same answer twice."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from sklearn.datasets import make_blobs

from kmeans_dask import KMeans


def _gpu_reason() -> str | None:
    try:
        import cupy
    except ImportError:
        return "CuPy is not installed (pip install 'kmeans_dask[gpu]')"
    try:
        available = cupy.cuda.is_available()
    except Exception as exc:  # a broken driver reads as no GPU
        return f"CuPy cannot reach a GPU: {exc}"
    return None if available else "no NVIDIA GPU is visible to CuPy"


pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(_gpu_reason() is not None, reason=str(_gpu_reason())),
]


@pytest.fixture(scope="module")
def gpu_client():
    from distributed import Client, LocalCluster

    # Two workers sharing the one GPU: the fit must not depend on the worker count.
    with (
        LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=":0") as cluster,
        Client(cluster) as client,
    ):
        yield client


def _data(dtype=np.float32):
    X, _ = make_blobs(n_samples=20_000, n_features=16, centers=12, random_state=0)
    X = X.astype(dtype)
    return X, X[np.random.default_rng(0).choice(len(X), 12, replace=False)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gpu_fit_gives_the_labels_of_the_cpu_fit(gpu_client, dtype):
    X, init = _data(dtype)
    gpu = KMeans(12, init=init, max_iter=20, tol=0, backend="cupy").fit(X)
    cpu = KMeans(12, init=init, max_iter=20, tol=0).fit(X)
    assert (gpu.labels_ == cpu.labels_).mean() > 0.999  # near-ties may differ
    assert_allclose(gpu.cluster_centers_, cpu.cluster_centers_, rtol=1e-3, atol=1e-3)


def test_gpu_fit_is_bit_identical_run_to_run_and_for_any_engine(gpu_client):
    X, init = _data()
    runs = [
        KMeans(12, init=init, max_iter=15, tol=0, backend="cupy", engine=engine).fit(X)
        for engine in ("actors", "actors", "tasks")
    ]
    for run in runs[1:]:
        assert_array_equal(run.cluster_centers_, runs[0].cluster_centers_)
        assert run.inertia_ == runs[0].inertia_


def test_cupy_input_is_fitted_on_the_gpu_with_auto(gpu_client):
    import cupy
    import dask.array as da

    X, init = _data()
    X_gpu = da.from_array(cupy.asarray(X), chunks=(5000, 16), asarray=False)
    model = KMeans(12, init=init, max_iter=10, tol=0).fit(X_gpu)
    reference = KMeans(12, init=init, max_iter=10, tol=0).fit(X)
    assert_allclose(model.cluster_centers_, reference.cluster_centers_, rtol=1e-3, atol=1e-3)


def test_data_larger_than_the_gpu_is_staged_from_host_memory_with_the_same_result(monkeypatch):
    """With no room left on the GPU, every chunk stays in host memory and is staged per pass."""
    from distributed import Client, LocalCluster

    import kmeans_dask._worker.cupy_ops as cupy_ops

    X, init = _data()
    with (
        LocalCluster(n_workers=1, threads_per_worker=2, processes=False) as cluster,
        Client(cluster),
    ):
        resident = KMeans(12, init=init, max_iter=10, tol=0, backend="cupy").fit(X)
        placed = []

        class CountedStagedOps(cupy_ops.StagedOps):
            def place(self, block, weights, offset, dtype):
                placed.append(offset)
                return super().place(block, weights, offset, dtype)

        monkeypatch.setattr(cupy_ops, "device_memory", lambda: (0, 80 * 2**30))
        monkeypatch.setattr(cupy_ops, "StagedOps", CountedStagedOps)
        staged = KMeans(12, init=init, max_iter=10, tol=0, backend="cupy").fit(X)
    assert placed  # the chunks were kept in host memory
    assert_array_equal(staged.cluster_centers_, resident.cluster_centers_)
    assert staged.inertia_ == resident.inertia_
    assert_array_equal(staged.labels_, resident.labels_)


def test_partial_fit_on_cupy_batches_runs_on_the_gpu_and_keeps_labels_there():
    import cupy

    X, _ = _data(np.float32)
    on_host, on_gpu = KMeans(12, random_state=0), KMeans(12, random_state=0)
    for start in range(0, len(X), 5000):
        on_host.partial_fit(X[start : start + 5000])
        on_gpu.partial_fit(cupy.asarray(X[start : start + 5000]))
        assert isinstance(on_gpu.labels_, cupy.ndarray)
    assert_allclose(on_gpu.cluster_centers_, on_host.cluster_centers_, rtol=1e-4, atol=1e-4)


def test_cupy_arrays_give_cupy_labels_predictions_and_distances(gpu_client):
    import cupy

    X, init = _data()
    X_gpu = cupy.asarray(X)
    model = KMeans(12, init=init, max_iter=10, tol=0).fit(X_gpu)
    reference = KMeans(12, init=init, max_iter=10, tol=0).fit(X)
    assert isinstance(model.labels_, cupy.ndarray)
    assert_array_equal(model.labels_.get(), reference.labels_)
    assert isinstance(model.predict(X_gpu), cupy.ndarray)
    assert isinstance(model.transform(X_gpu), cupy.ndarray)
    assert_allclose(model.cluster_centers_, reference.cluster_centers_, rtol=1e-3, atol=1e-3)
