"""The machine the benchmark runs on: its SGEMM throughput, CPU, BLAS and library versions."""

from __future__ import annotations

import datetime as dt
import importlib
import importlib.metadata
import math
import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

#: SGEMM shapes: (M, K) x (K, N).
SGEMM_SHAPE = (8192, 2048, 2048)

#: Environment variables that make OpenBLAS pick kernels for another CPU.
OPENBLAS_OVERRIDES = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")


@dataclass
class SgemmResult:
    """Best SGEMM throughput seen, with all default threads and with one thread."""

    shape: tuple[int, int, int]
    gflops: float = 0.0
    gflops_one_thread: float = 0.0
    threads: int = 0


def _best_seconds(fn: Callable[[], Any], repeats: int) -> float:
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def measure_sgemm(result: SgemmResult, repeats: int = 3) -> SgemmResult:
    """Time float32 ``A @ B`` and fold the best throughput into ``result``.

    Parameters
    ----------
    result : SgemmResult
        Its ``shape`` (M, K, N) gives ``A`` (M, K) and ``B`` (K, N); its best
        figures are updated in place.
    repeats : int, default=3
        Timed products per thread setting (after one untimed product).

    Returns
    -------
    SgemmResult
        ``result``.
    """
    from threadpoolctl import threadpool_info, threadpool_limits

    m, k, n = result.shape
    rng = np.random.default_rng(12345)
    A = rng.standard_normal((m, k), dtype=np.float32)
    B = rng.standard_normal((k, n), dtype=np.float32)
    C = np.empty((m, n), dtype=np.float32)
    flops = 2.0 * m * k * n

    def product() -> None:
        np.matmul(A, B, out=C)

    product()
    seconds = _best_seconds(product, repeats)
    result.gflops = max(result.gflops, flops / seconds / 1e9)
    blas = [p for p in threadpool_info() if p.get("user_api") == "blas"]
    result.threads = int(blas[0]["num_threads"]) if blas else 0
    with threadpool_limits(limits=1, user_api="blas"):
        product()
        seconds = _best_seconds(product, max(1, repeats - 1))
    result.gflops_one_thread = max(result.gflops_one_thread, flops / seconds / 1e9)
    return result


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        module = {"faiss-cpu": "faiss", "scikit-learn": "sklearn"}.get(dist, dist)
        try:
            return str(getattr(importlib.import_module(module), "__version__", None) or "")
        except ImportError:
            return None


def environment_info() -> dict[str, Any]:
    """Date, host, CPU, cores, memory, BLAS and library versions.

    Returns
    -------
    dict
    """
    from threadpoolctl import threadpool_info

    from kmeans_dask import __version__

    blas = [p for p in threadpool_info() if p.get("user_api") == "blas"]
    blas_text = (
        ", ".join(
            f"{p.get('internal_api')} {p.get('version')} ({p.get('architecture')}, "
            f"{p.get('num_threads')} threads)"
            for p in blas
        )
        or "unknown"
    )
    try:
        memory_gib = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        memory_gib = None
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    return {
        "date": dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        "host": platform.node(),
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": usable,
        "memory_gib": memory_gib,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "blas": blas_text,
        "openblas_overrides": [
            f"{v}={os.environ[v]}" for v in OPENBLAS_OVERRIDES if v in os.environ
        ],
        "versions": {
            "kmeans_dask": __version__,
            "numpy": _version("numpy"),
            "dask": _version("dask"),
            "distributed": _version("distributed"),
            "dask-ml": _version("dask-ml"),
            "faiss": _version("faiss-cpu"),
            "scikit-learn": _version("scikit-learn"),
            "pyspark": _version("pyspark"),
        },
    }
