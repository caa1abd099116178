"""backend="faiss-gpu": Faiss's flat index on a GPU, for host rows.

Where Faiss has no GPU support it is refused before any work, naming what
to install. Its wiring runs here on a stand-in (Faiss's CPU index behind the
GPU names, in an in-process cluster); the real search runs where a GPU Faiss is.
"""

from __future__ import annotations

import threading

import faiss
import numpy as np
import pytest
from distributed import Client, LocalCluster
from numpy.testing import assert_array_equal
from sklearn.datasets import make_blobs

from kmeans_dask import KMeans
from kmeans_dask.backends import get_backend, resolve_auto


def _data():
    X, _ = make_blobs(n_samples=3000, n_features=6, centers=5, random_state=0)
    X = X.astype(np.float32)
    return X, X[:5].copy()


def _has_gpu_faiss() -> bool:
    return hasattr(faiss, "GpuIndexFlatL2") and faiss.get_num_gpus() > 0


@pytest.fixture
def stand_in_gpu_faiss(monkeypatch):
    """Faiss's CPU flat index behind the GPU names; counts the indexes built."""
    built = []

    def gpu_index(resources, n_features):
        built.append(threading.get_ident())
        return faiss.IndexFlatL2(n_features)

    monkeypatch.setattr(faiss, "StandardGpuResources", object, raising=False)
    monkeypatch.setattr(faiss, "GpuIndexFlatL2", gpu_index, raising=False)
    monkeypatch.setattr(faiss, "get_num_gpus", lambda: 1)
    return built


@pytest.mark.skipif(_has_gpu_faiss(), reason="this Faiss has GPU support and sees a GPU")
def test_faiss_without_gpu_support_is_refused_before_any_work():
    X, init = _data()
    model = KMeans(5, init=init, backend="faiss-gpu")
    with pytest.raises(ImportError, match=r"backend='faiss-gpu'.*faiss-gpu-cu12"):
        model.fit(X)
    assert not hasattr(model, "cluster_centers_")


def test_auto_never_picks_a_gpu_search(stand_in_gpu_faiss):
    assert resolve_auto() == "numpy"


def test_each_thread_searches_with_its_own_gpu_index(stand_in_gpu_faiss):
    X, init = _data()
    searcher = get_backend("faiss-gpu").searcher(init)
    results = {}
    # Both threads alive at once: a finished thread's ident can be reused.
    both_started = threading.Barrier(2)

    def search(name):
        both_started.wait(timeout=30)
        results[name] = searcher.nearest(X)
        results[name + "-again"] = searcher.nearest(X)

    threads = [threading.Thread(target=search, args=(str(i),)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(stand_in_gpu_faiss) == len(set(stand_in_gpu_faiss)) == 2
    expected = get_backend("faiss-cpu").searcher(init).nearest(X)
    for labels in results.values():
        assert_array_equal(labels, expected)


@pytest.mark.parametrize("engine", ["tasks", "actors"])
def test_a_faiss_gpu_fit_is_the_faiss_cpu_fit(stand_in_gpu_faiss, engine):
    X, init = _data()
    with (
        LocalCluster(n_workers=1, threads_per_worker=2, processes=False) as cluster,
        Client(cluster),
    ):
        gpu = KMeans(5, init=init, max_iter=10, tol=0, backend="faiss-gpu", engine=engine).fit(X)
        cpu = KMeans(5, init=init, max_iter=10, tol=0, backend="faiss-cpu", engine=engine).fit(X)
    assert stand_in_gpu_faiss  # the GPU index did the searching
    assert_array_equal(gpu.cluster_centers_, cpu.cluster_centers_)
    assert_array_equal(gpu.labels_, cpu.labels_)
    assert gpu.inertia_ == cpu.inertia_


@pytest.mark.gpu
@pytest.mark.skipif(not _has_gpu_faiss(), reason="Faiss has no GPU support or sees no GPU here")
def test_faiss_gpu_fit_on_a_gpu_matches_faiss_cpu():
    X, init = _data()
    gpu = KMeans(5, init=init, max_iter=10, tol=0, backend="faiss-gpu").fit(X)
    cpu = KMeans(5, init=init, max_iter=10, tol=0, backend="faiss-cpu").fit(X)
    assert_array_equal(gpu.labels_, cpu.labels_)
    np.testing.assert_allclose(gpu.cluster_centers_, cpu.cluster_centers_, rtol=1e-6)
