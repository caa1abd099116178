"""The GPU path without a GPU: the fused CUDA kernel under numba-cuda's simulator and as
PTX for sm_90, the CuPy operations through the whole fit (simulated), and the errors
for a GPU asked for where there is none."""

from __future__ import annotations

import json
import subprocess
import sys
import types

import numpy as np
import pytest

from kmeans_dask import KMeans

_SIMULATED = r"""
import json, sys
import numpy as np
from kmeans_dask._kernels.cuda_search import nearest_fused

rng = np.random.default_rng(0)
out = {}
for dtype in ("float32", "float64"):
    X = rng.normal(size=(300, 5)).astype(dtype)
    C = np.vstack([X[:6], X[:1]])  # a repeated centre: ties go to the lowest index
    labels = np.empty(len(X), np.int32)
    sq_dist = np.empty(len(X))
    nearest_fused(X, C, (C * C).sum(axis=1), labels, sq_dist)
    distances = ((X[:, None, :].astype(float) - C[None].astype(float)) ** 2).sum(-1)
    out[dtype] = [
        bool((labels == distances.argmin(axis=1)).all()),
        float(np.abs(sq_dist - distances.min(axis=1)).max()),
    ]
print(json.dumps(out))
"""

_SIMULATED_FIT = r"""
import json
import threading

import dask
import numpy as np
from distributed import Client, LocalCluster
from sklearn.cluster import KMeans as SKKMeans

import kmeans_dask._engine.placement as placement
from kmeans_dask import KMeans
from kmeans_dask._worker.cupy_ops import CuPyOps

# numba-cuda's simulator has one kernel context per process and does not support
# concurrent kernel launches: the two workers' threads take turns (launched at
# once, they hung the test in one CI run).
SIMULATOR = threading.Lock()


class SimulatedGPUOps(CuPyOps):
    # CuPyOps on NumPy rows: the fused kernel runs in numba-cuda's simulator.
    def __init__(self):
        super().__init__()
        self.namespace = "numpy"
        self.name = "simulated-gpu"

    def __reduce__(self):
        return SimulatedGPUOps, ()

    def place(self, block, weights, offset, dtype):  # no GPU memory to ask about
        return self.resident(block, weights, offset, dtype)

    def resident(self, block, weights, offset, dtype):
        return super(CuPyOps, self).resident(block, weights, offset, dtype)

    def nearest(self, chunk, centers, search):  # one simulated kernel at a time
        with SIMULATOR:
            return super().nearest(chunk, centers, search)


if __name__ == "__main__":
    # The simulator starts a thread per simulated CUDA thread, and the worker's profiler
    # calls sys._current_frames every 10 ms: on CPython 3.11 as in CI the two can
    # deadlock (CPython gh-106883, a GC inside sys._current_frames). It hung the test in
    # a CI run.
    dask.config.set({"distributed.worker.profile.enabled": False})
    placement.chunk_ops_for = lambda X, backend="auto": SimulatedGPUOps()
    rng = np.random.default_rng(1)
    centers = rng.normal(scale=5, size=(4, 3))
    X = centers[rng.integers(0, 4, 600)] + rng.normal(size=(600, 3))
    init = X[:4].copy()
    reference = SKKMeans(4, init=init, n_init=1, max_iter=6, tol=0, algorithm="lloyd").fit(X)
    results = {}
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                      dashboard_address=":0") as cluster, Client(cluster):
        for engine in ("tasks", "actors"):
            model = KMeans(4, init=init, max_iter=6, tol=0, engine=engine).fit(X)
            results[engine] = [
                bool((model.labels_ == reference.labels_).all()),
                float(np.abs(model.cluster_centers_ - reference.cluster_centers_).max()),
            ]
    print(json.dumps(results))
"""


def _run_simulated(source: str) -> dict:
    result = subprocess.run(
        [sys.executable, "-c", source],
        env={**__import__("os").environ, "NUMBA_ENABLE_CUDASIM": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_fused_kernel_finds_the_nearest_centre_and_its_exact_distance_in_the_simulator():
    for dtype, (same_labels, largest_error) in _run_simulated(_SIMULATED).items():
        assert same_labels, dtype
        assert largest_error < 1e-9, dtype


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_fused_kernel_compiles_to_ptx_for_hopper(dtype):
    from kmeans_dask._kernels.cuda_search import compile_ptx

    ptx = compile_ptx(dtype, (9, 0))
    assert ".target sm_90" in ptx
    assert "ld.shared" in ptx  # the centres are read from shared memory


def test_the_gpu_operations_fit_as_scikit_learn_through_both_engines_in_the_simulator():
    results = _run_simulated(_SIMULATED_FIT)
    for engine, (same_labels, largest_difference) in results.items():
        assert same_labels, engine
        assert largest_difference < 1e-10, engine


def test_a_gpu_backend_without_cupy_is_refused_before_any_work(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", None)  # as if not installed
    X = np.random.default_rng(0).normal(size=(100, 3))
    model = KMeans(3, backend="cupy")
    with pytest.raises(ImportError, match=r"backend='cupy' needs CuPy.*kmeans_dask\[gpu\]"):
        model.fit(X)
    assert not hasattr(model, "cluster_centers_")


def test_a_gpu_backend_where_cupy_sees_no_gpu_says_what_to_do(monkeypatch):
    from kmeans_dask._worker.cupy_ops import require_gpu

    no_device = types.SimpleNamespace(cuda=types.SimpleNamespace(is_available=lambda: False))
    monkeypatch.setitem(sys.modules, "cupy", no_device)
    with pytest.raises(RuntimeError, match=r"needs an NVIDIA GPU.*local-cuda\.yaml"):
        require_gpu()


def test_hamerly_bounds_are_refused_with_a_device_backend(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", types.ModuleType("cupy"))
    X = np.random.default_rng(0).normal(size=(100, 3))
    with pytest.raises(ValueError, match=r"algorithm='hamerly'.*backend='cupy'"):
        KMeans(3, backend="cupy", algorithm="hamerly").fit(X)


class _GPURows:
    """Stands in for a CuPy block: exposes the CUDA array interface, nothing else."""

    __module__ = "cupy"

    @property
    def __cuda_array_interface__(self) -> dict:
        return {"shape": (2, 2), "typestr": "<f4", "data": (0, False), "version": 3}


def test_a_gpu_block_among_host_blocks_is_refused_with_what_to_do():
    from kmeans_dask._worker.host_ops import host_ops

    with pytest.raises(TypeError, match=r"block at row 40 holds GPU rows.*same kind"):
        host_ops().place(_GPURows(), None, 40, np.float32)


def test_predict_and_transform_of_device_blocks_stay_on_their_device():
    """The block functions behind predict/transform on non-NumPy (CuPy) blocks."""
    xp = pytest.importorskip("array_api_strict", reason="array-api-strict is a test dependency")
    from kmeans_dask._fit.apply import _predict_block, _transform_block

    rng = np.random.default_rng(3)
    X = rng.normal(size=(50, 4))
    centers = rng.normal(size=(5, 4))
    distances = np.sqrt(((X[:, None, :] - centers[None]) ** 2).sum(-1))
    labels = _predict_block(xp.asarray(X), centers, "numpy")
    assert type(labels).__module__.startswith("array_api_strict")
    np.testing.assert_array_equal(np.from_dlpack(labels), distances.argmin(axis=1))
    np.testing.assert_allclose(
        np.from_dlpack(_transform_block(xp.asarray(X), centers)), distances, rtol=1e-9
    )
    # float32 rows and float64 centres: float64 distances, as transform's other paths.
    widened = _transform_block(xp.asarray(X.astype(np.float32)), centers)
    assert widened.dtype == xp.float64
    np.testing.assert_allclose(np.from_dlpack(widened), distances, rtol=1e-6)
    bad = X.copy()
    bad[7, 2] = np.nan
    with pytest.raises(ValueError, match=r"\(row 17, column 2\)|row 17"):
        _predict_block(
            xp.asarray(bad), centers, "numpy", block_info={0: {"array-location": [(10, 60)]}}
        )


def test_arrays_of_other_libraries_are_told_apart_and_brought_home():
    import dask.array as da

    from kmeans_dask._io.inputs import as_host_array, host_dtype, is_device_array

    xp = pytest.importorskip("array_api_strict", reason="array-api-strict is a test dependency")
    rows = np.arange(6.0, dtype=np.float32).reshape(3, 2)
    assert is_device_array(xp.asarray(rows))
    assert not is_device_array(rows) and not is_device_array(da.from_array(rows))
    assert not is_device_array([[1.0, 2.0]])
    np.testing.assert_array_equal(as_host_array(xp.asarray(rows)), rows)
    np.testing.assert_array_equal(as_host_array(da.from_array(rows)), rows)
    assert host_dtype(xp.float32) == np.float32 and host_dtype(rows.dtype) == np.float32
