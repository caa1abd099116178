"""The machine a benchmark runs on: SGEMM throughput, CPU and vector extensions, versions."""

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


def _cpuinfo_value(*names: str) -> str | None:
    """The value of the first /proc/cpuinfo line named one of ``names`` (lower case), if any."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                name, _, value = line.partition(":")
                if name.strip().lower() in names:
                    return value.strip()
    except OSError:
        pass
    return None


def _cpu_model() -> str:
    return _cpuinfo_value("model name") or platform.processor() or platform.machine()


#: Vector extensions by the /proc/cpuinfo flag that shows them, widest first.
_VECTOR_EXTENSIONS = (
    ("avx512f", "AVX-512"),
    ("avx2", "AVX2"),
    ("avx", "AVX"),
    ("sse2", "SSE2"),
    ("sve", "SVE"),
    ("asimd", "NEON"),
)


def vector_extensions(flags: set[str] | None = None) -> str:
    """The widest vector extension the CPU has, by name ("AVX-512", "AVX2", "NEON", ...).

    Parameters
    ----------
    flags : set of str, optional
        CPU flags as /proc/cpuinfo lists them ("flags" on x86-64, "Features"
        on aarch64); by default this machine's.

    Returns
    -------
    str
        The name, or ``"unknown"`` where no flag names a known extension.
    """
    if flags is None:
        flags = set((_cpuinfo_value("flags", "features") or "").split())
    return next((name for flag, name in _VECTOR_EXTENSIONS if flag in flags), "unknown")


def kernel_target() -> str:
    """What kmeans_dask's kernels are generated for, saying when the target is fixed.

    Returns
    -------
    str
        For example ``"znver4, 512-bit vectors x 32"``, or with
        ``NUMBA_CPU_NAME=haswell`` set ``"haswell, 256-bit vectors x 16
        (NUMBA_CPU_NAME=haswell: emulating another CPU)"``.
    """
    import numba

    from kmeans_dask._kernels.vector_target import compile_target

    target = compile_target()
    text = f"{target.cpu}, {target.vector_bits}-bit vectors x {target.registers}"
    if numba.config.CPU_NAME:
        text += f" (NUMBA_CPU_NAME={numba.config.CPU_NAME}: emulating another CPU)"
    return text


def faiss_simd_level() -> str | None:
    """The SIMD level Faiss dispatches to (``FAISS_SIMD_LEVEL`` may lower it), if installed."""
    try:
        import faiss
    except ImportError:
        return None
    config = getattr(faiss, "SIMDConfig", None)
    return str(config.get_level_name()) if config is not None else None


def machine_line(info: dict[str, Any]) -> str:
    """One line naming the machine of :func:`environment_info` ``info``, for a script's header.

    Date, CPU and its vector extensions, usable cores, the kernels' target,
    Faiss's SIMD level, BLAS and any OpenBLAS overrides.
    """
    return (
        f"{info['date']}, {info['cpu_model']} ({info['vector_extensions']}, "
        f"{info['cpus_usable']} usable cores), kernels for {info['kernels']}, "
        f"faiss SIMD level {info['faiss_simd']}, BLAS {info['blas']}, "
        f"OPENBLAS overrides: {info['openblas_overrides'] or 'none'}"
    )


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
    """Date, host, CPU and its vector extensions, kernels' target, cores, memory, BLAS, versions.

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
        "vector_extensions": vector_extensions(),
        "kernels": kernel_target(),
        "faiss_simd": faiss_simd_level(),
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
