"""Benchmark kmeans_dask against its peers on the same data and initial centres.

Every implementation clusters the same deterministic float32 blobs, starts
from the same ``k`` randomly chosen rows and runs a fixed number of Lloyd
iterations with no early stop. Runs are interleaved: repeat ``r`` runs every
implementation once (in an order rotated by ``r``, and reversed in odd
repeats, so that no implementation always follows the same one) before
repeat ``r + 1`` starts, so slow drifts of the machine hit every
implementation alike; each run waits for the machine to be idle first
(:func:`wait_until_idle`). The machine's SGEMM throughput is measured in
the same slots.

Peers:

* ``faiss``: ``faiss.Kmeans`` with subsampling disabled
  (``max_points_per_centroid = n``), in this process with all cores.
* ``sklearn``: ``sklearn.cluster.KMeans(algorithm="lloyd")``, in this process.
* ``dask-ml``: ``dask_ml.cluster.KMeans`` on the same ``LocalCluster`` and the
  same persisted Dask array as kmeans_dask.
* ``spark`` (``--with-spark``): ``pyspark.mllib.clustering.KMeans.train`` with
  ``initialModel`` on ``local[T]``, T the LocalCluster's thread count.

Seconds per iteration come from each implementation's own per-iteration
timing where it has one (kmeans_dask ``history_``, faiss ``iteration_stats``,
dask-ml's "Lloyd loop" log timers); scikit-learn and Spark have none, so
theirs is the difference between a fit of ``iterations`` and a fit of one
iteration, divided by ``iterations - 1``, which removes the per-fit costs
(input checks and copies, the final labelling pass, Spark's Python-to-JVM
transfer). The whole fit's wall time per iteration is reported as well. The
final inertia of every implementation is recomputed here the same way, in
float64, from its final centres.

Run with ``python scripts/bench.py --help`` (or ``kmeans-dask bench``). For
figures to publish, run ``env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python
scripts/bench.py ...`` so OpenBLAS picks its kernels for the real CPU.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import importlib
import importlib.metadata
import itertools
import json
import logging
import math
import os
import platform
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from kmeans_dask._memory import peak_rss, reset_peak_rss

OURS = "kmeans_dask"
#: Peers that ``--peers`` accepts (``spark`` is also added by ``--with-spark``).
KNOWN_PEERS = ("faiss", "sklearn", "dask-ml", "spark")
DEFAULT_PEERS = "faiss,sklearn,dask-ml"
DEFAULT_VARIANTS = "lloyd/tasks,lloyd/actors"
#: Inertia gaps are reported against this implementation when it ran.
REFERENCE = "sklearn"
#: SGEMM shapes: (M, K) x (K, N).
SGEMM_SHAPE = (8192, 2048, 2048)
#: Environment variables that make OpenBLAS pick kernels for another CPU.
OPENBLAS_OVERRIDES = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
#: Rows per block when computing inertia (bounds the float64 scratch memory).
INERTIA_BLOCK_ROWS = 65536
#: Rows of the untimed warm-up workload (JIT compilation, imports, pools).
WARMUP_ROWS = 20000
#: Before each timed run, wait (up to the timeout) until the machine's CPU use
#: over one sampling window is below this percentage, so no run starts while
#: the previous one's processes finish their work (a JVM after a Spark fit
#: ran at over one core for its first 0.25 s).
IDLE_CPU_PERCENT = 15.0
IDLE_SAMPLE_SECONDS = 0.2
IDLE_TIMEOUT_SECONDS = 5.0

logger = logging.getLogger(__name__)


# --- command line ------------------------------------------------------------------------


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the benchmark's options to ``parser`` (for ``kmeans-dask bench``).

    Parameters
    ----------
    parser : argparse.ArgumentParser
        Parser or sub-parser to extend.

    Returns
    -------
    argparse.ArgumentParser
        The same parser.
    """
    from kmeans_dask.backends import ALGORITHMS, BACKEND_NAMES, ENGINES

    add = parser.add_argument
    add(
        "--n-samples",
        type=_positive_int,
        default=1_000_000,
        help="rows of generated data (default: %(default)s)",
    )
    add(
        "--n-features",
        type=_positive_int,
        default=32,
        help="columns of generated data (default: %(default)s)",
    )
    add(
        "--n-clusters",
        type=_positive_int,
        default=64,
        help="k, also the number of generated blobs (default: %(default)s)",
    )
    add(
        "--iterations",
        type=_positive_int,
        default=10,
        help="Lloyd iterations every implementation runs, no early stop (default: %(default)s)",
    )
    add(
        "--repeats",
        type=_positive_int,
        default=3,
        help="interleaved repeats: repeat r runs every implementation once, then r+1 "
        "(default: %(default)s)",
    )
    add(
        "--spread",
        type=float,
        default=2.0,
        help="blob centres are uniform in [-spread, spread]^d around unit-variance noise: "
        "2 overlaps (Lloyd keeps moving), 10 separates the clusters (default: %(default)s)",
    )
    add(
        "--dtype",
        choices=("float32", "float64"),
        default="float32",
        help="data dtype; faiss is skipped for float64 (default: %(default)s)",
    )
    add(
        "--workers",
        type=_positive_int,
        default=1,
        help="LocalCluster worker processes (default: %(default)s)",
    )
    add(
        "--threads-per-worker",
        type=_positive_int,
        default=2,
        help="threads per LocalCluster worker (default: %(default)s)",
    )
    add(
        "--chunk-rows",
        type=int,
        default=0,
        help="rows per Dask chunk; 0 splits as a fit on the NumPy array does: at most "
        "~64 MiB, 4 per worker thread while the per-chunk sums stay small, else one "
        "(default: %(default)s)",
    )
    add(
        "--backend",
        choices=BACKEND_NAMES,
        default="auto",
        help="kmeans_dask assignment backend (default: %(default)s)",
    )
    add(
        "--algorithm",
        choices=ALGORITHMS,
        default="auto",
        help="kmeans_dask algorithm (default: %(default)s)",
    )
    add(
        "--engine",
        choices=ENGINES,
        default="auto",
        help="kmeans_dask iteration engine (default: %(default)s)",
    )
    add(
        "--variants",
        default=DEFAULT_VARIANTS,
        help="extra kmeans_dask rows as comma-separated ALGORITHM/ENGINE pairs, e.g. "
        "'lloyd/tasks' (plain Lloyd through tasks, what --algorithm/--engine improve on); "
        "'none' for none (default: %(default)s)",
    )
    add(
        "--peers",
        default=DEFAULT_PEERS,
        help=f"comma-separated peers out of {', '.join(KNOWN_PEERS)}; 'none' for none "
        "(default: %(default)s)",
    )
    add(
        "--with-spark",
        action="store_true",
        help="also run Spark MLlib's KMeans via pyspark on local[threads] (default: %(default)s)",
    )
    add(
        "--spark-driver-memory",
        default="4g",
        help="spark.driver.memory for --with-spark (default: %(default)s)",
    )
    add(
        "--seed",
        type=int,
        default=0,
        help="seed of the data and of the initial centres (default: %(default)s)",
    )
    add(
        "--no-warmup",
        dest="warmup",
        action="store_false",
        help=f"skip the untimed warm-up round on {WARMUP_ROWS} rows that compiles "
        "kernels and starts pools (default: warm up)",
    )
    add(
        "--json",
        metavar="PATH",
        default=None,
        help="also write the results as JSON to PATH (default: %(default)s)",
    )
    add(
        "--markdown",
        action="store_true",
        help="also print a Markdown block for benchmarks/RESULTS.md (default: %(default)s)",
    )
    return parser


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    """The benchmark's argument parser.

    Parameters
    ----------
    prog : str, optional
        Program name shown in the usage line.

    Returns
    -------
    argparse.ArgumentParser
    """
    parser = argparse.ArgumentParser(
        prog=prog,
        description=(
            "Benchmark kmeans_dask against faiss, scikit-learn, dask-ml (and Spark MLlib) "
            "on the same data and initial centres with a fixed iteration count. For "
            "figures, run under `env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE`."
        ),
    )
    return add_arguments(parser)


def parse_peers(text: str, with_spark: bool) -> list[str]:
    """Peer names from ``--peers`` and ``--with-spark``, in the order given.

    Parameters
    ----------
    text : str
        Comma-separated names, or "none" / "" for no peer.
    with_spark : bool
        Append "spark" if it is not listed.

    Returns
    -------
    list of str

    Raises
    ------
    ValueError
        For an unknown name.
    """
    names = [p.strip().lower() for p in text.split(",") if p.strip()]
    if names == ["none"]:
        names = []
    peers: list[str] = []
    for name in names:
        name = {"scikit-learn": "sklearn", "dask_ml": "dask-ml", "pyspark": "spark"}.get(
            name, name
        )
        if name not in KNOWN_PEERS:
            raise ValueError(f"unknown peer {name!r}; choose from {', '.join(KNOWN_PEERS)}")
        if name not in peers:
            peers.append(name)
    if with_spark and "spark" not in peers:
        peers.append("spark")
    return peers


def parse_variants(text: str) -> list[tuple[str, str]]:
    """``(algorithm, engine)`` pairs from ``--variants``.

    Parameters
    ----------
    text : str
        Comma-separated ``ALGORITHM/ENGINE`` pairs, or "none" / "".

    Returns
    -------
    list of (str, str)

    Raises
    ------
    ValueError
        For a malformed pair or an unknown algorithm or engine.
    """
    from kmeans_dask.backends import ALGORITHMS, ENGINES

    items = [item.strip() for item in text.split(",") if item.strip()]
    if items == ["none"]:
        return []
    variants = []
    for item in items:
        algorithm, _, engine = item.partition("/")
        if algorithm not in ALGORITHMS or engine not in ENGINES:
            raise ValueError(
                f"variant {item!r} is not ALGORITHM/ENGINE with ALGORITHM in "
                f"{', '.join(ALGORITHMS)} and ENGINE in {', '.join(ENGINES)}"
            )
        variants.append((algorithm, engine))
    return variants


def variant_name(algorithm: str, engine: str) -> str:
    """Row name of a kmeans_dask variant."""
    return f"{OURS}[{algorithm},{engine}]"


# --- data ----------------------------------------------------------------------------------


def make_blobs(
    n_samples: int,
    n_features: int,
    n_blobs: int,
    seed: int,
    dtype: str | np.dtype = "float32",
    spread: float = 2.0,
) -> np.ndarray:
    """Deterministic Gaussian blobs.

    Blob centres are uniform in ``[-spread, spread]^d`` and every row is a
    centre plus standard normal noise. With the default spread of 2 the blobs
    overlap enough that Lloyd's algorithm does not reach an exact fixed
    point within a few dozen iterations (which would stop scikit-learn and
    Spark early); a spread of 10 or more gives well separated clusters.

    Parameters
    ----------
    n_samples, n_features, n_blobs : int
        Shape of the data and number of blobs.
    seed : int
        Seed of ``numpy.random.default_rng``.
    dtype : str or numpy.dtype, default="float32"
    spread : float, default=2.0
        Half-width of the box the blob centres are drawn from.

    Returns
    -------
    ndarray of shape (n_samples, n_features)
        C-contiguous, of ``dtype``.
    """
    dtype = np.dtype(dtype)
    rng = np.random.default_rng(seed)
    centres = rng.uniform(-spread, spread, size=(n_blobs, n_features)).astype(dtype)
    X = np.empty((n_samples, n_features), dtype=dtype)
    step = 1 << 18
    for start in range(0, n_samples, step):
        stop = min(start + step, n_samples)
        labels = rng.integers(n_blobs, size=stop - start)
        X[start:stop] = rng.standard_normal((stop - start, n_features), dtype=dtype)
        X[start:stop] += centres[labels]
    return X


def initial_centers(X: np.ndarray, n_clusters: int, seed: int) -> np.ndarray:
    """``n_clusters`` distinct rows of ``X`` drawn with a fixed seed.

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features)
    n_clusters : int
    seed : int
        The rows are drawn by ``default_rng(seed + 1)``, independently of the data.

    Returns
    -------
    ndarray of shape (n_clusters, n_features)
        A copy, in X's dtype.
    """
    rng = np.random.default_rng(seed + 1)
    rows = np.sort(rng.choice(X.shape[0], size=n_clusters, replace=False))
    return np.ascontiguousarray(X[rows])


def exact_inertia(
    X: np.ndarray, centers: np.ndarray, block_rows: int = INERTIA_BLOCK_ROWS
) -> float:
    """Sum of squared distances of each row to its nearest centre, in float64.

    The nearest centre is found from float64 GEMM-expanded distances; the
    squared distance to it is then computed exactly as ``sum((x - c)**2)``.
    Rows are processed in blocks so scratch memory stays bounded.

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features)
    centers : array-like of shape (n_clusters, n_features)
    block_rows : int, default=65536

    Returns
    -------
    float
    """
    centers64 = np.asarray(centers, dtype=np.float64)
    center_norms = np.einsum("ij,ij->i", centers64, centers64)
    total = 0.0
    for start in range(0, X.shape[0], block_rows):
        block = np.asarray(X[start : start + block_rows], dtype=np.float64)
        scores = center_norms[None, :] - 2.0 * (block @ centers64.T)
        nearest = np.argmin(scores, axis=1)
        diff = block - centers64[nearest]
        total += float(np.einsum("ij,ij->", diff, diff))
    return total


# --- SGEMM ---------------------------------------------------------------------------------


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


def run_order(names: Sequence[str], repeat: int) -> list[str]:
    """The order of the implementations in repeat ``repeat``.

    Rotated by ``repeat`` and reversed when it is odd: over the repeats every
    implementation runs in several positions and after different ones.
    """
    shift = repeat % len(names)
    order = [*names[shift:], *names[:shift]]
    return order[::-1] if repeat % 2 else order


def wait_until_idle(
    threshold: float = IDLE_CPU_PERCENT,
    sample_seconds: float = IDLE_SAMPLE_SECONDS,
    timeout: float = IDLE_TIMEOUT_SECONDS,
) -> float:
    """Block until system-wide CPU use over ``sample_seconds`` is below ``threshold`` %.

    Returns
    -------
    float
        The last sample (above ``threshold`` only when ``timeout`` ran out).
    """
    import psutil  # a dependency of distributed

    deadline = time.monotonic() + timeout
    while True:
        busy = psutil.cpu_percent(interval=sample_seconds)
        if busy < threshold or time.monotonic() >= deadline:
            return busy


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


# --- runs ----------------------------------------------------------------------------------


@dataclass
class Workload:
    """The data every implementation sees, in each form one of them needs."""

    X: np.ndarray
    """Data in this process."""
    X_dask: Any
    """The same rows as a Dask array persisted on the LocalCluster."""
    init: np.ndarray
    """Initial centres, in X's dtype."""
    iterations: int
    spark_rdd: Any = None
    """The rows as a cached RDD of DenseVectors (``--with-spark`` only)."""


@dataclass
class RunResult:
    """One run of one implementation."""

    name: str
    repeat: int
    seconds_per_iter: float
    """Per-iteration figure: the median of the iteration times where the
    implementation reports them, else the differential estimate."""
    fit_seconds: float
    """Wall time of the whole fit call (with ``iterations`` iterations)."""
    n_iter: int | None
    timing: str
    """Where ``seconds_per_iter`` comes from."""
    iteration_seconds: list[float] = field(default_factory=list)
    reported_inertia: float | None = None
    """The implementation's own inertia figure, where it has one (not comparable)."""
    inertia: float = math.nan
    """Recomputed by :func:`exact_inertia` from the final centres."""
    centers: np.ndarray | None = field(default=None, repr=False)
    peak_worker_rss: int | None = None
    """Largest peak resident memory of a worker during the fit (kmeans_dask only)."""


def _median_or_total(iteration_seconds: list[float], total: float, n_iter: int) -> float:
    if iteration_seconds:
        return float(statistics.median(iteration_seconds))
    return total / max(n_iter, 1)


def run_kmeans_dask(
    work: Workload,
    backend: str = "auto",
    algorithm: str = "auto",
    engine: str = "auto",
    name: str = OURS,
) -> RunResult:
    """Fit :class:`kmeans_dask.KMeans` on the persisted Dask array.

    Parameters
    ----------
    work : Workload
    backend, algorithm, engine : str, default="auto"
        The estimator's parameters of those names.
    name : str, default="kmeans_dask"
        Row name of the result.

    Returns
    -------
    RunResult
        ``seconds_per_iter`` is the median of ``history_`` seconds.
    """
    from distributed import default_client

    from kmeans_dask import KMeans

    client = default_client()
    client.run(reset_peak_rss)
    model = KMeans(
        n_clusters=work.init.shape[0],
        init=work.init,
        n_init=1,
        max_iter=work.iterations,
        tol=0.0,
        backend=backend,
        algorithm=algorithm,
        engine=engine,
    )
    start = time.perf_counter()
    model.fit(work.X_dask)
    fit_seconds = time.perf_counter() - start
    iteration_seconds = [record.seconds for record in model.history_]
    result = RunResult(
        name,
        0,
        _median_or_total(iteration_seconds, fit_seconds, model.n_iter_),
        fit_seconds,
        int(model.n_iter_),
        "history_ (median)",
        iteration_seconds,
        float(model.inertia_),
        centers=np.asarray(model.cluster_centers_),
        peak_worker_rss=max(client.run(peak_rss).values()),
    )
    del model
    return result


def run_faiss(work: Workload, seed: int = 0) -> RunResult:
    """Train ``faiss.Kmeans`` from the initial centres without subsampling.

    Parameters
    ----------
    work : Workload
    seed : int, default=0

    Returns
    -------
    RunResult
        ``seconds_per_iter`` is the median of the per-iteration times from
        ``iteration_stats`` (faiss reports cumulative times).
    """
    import faiss

    X = work.X
    if X.dtype != np.float32:
        raise TypeError("faiss.Kmeans needs float32 data")
    n, d = X.shape
    k = work.init.shape[0]
    km = faiss.Kmeans(
        d,
        k,
        niter=work.iterations,
        max_points_per_centroid=n,
        min_points_per_centroid=1,
        seed=seed,
        verbose=False,
    )
    start = time.perf_counter()
    km.train(X, init_centroids=np.ascontiguousarray(work.init, dtype=np.float32))
    fit_seconds = time.perf_counter() - start
    cumulative = [float(s["time"]) for s in km.iteration_stats]
    iteration_seconds = list(np.diff([0.0, *cumulative]))
    return RunResult(
        "faiss",
        0,
        _median_or_total(iteration_seconds, fit_seconds, len(cumulative)),
        fit_seconds,
        len(cumulative),
        "iteration_stats (median)",
        [float(s) for s in iteration_seconds],
        float(km.obj[-1]) if len(km.obj) else None,
        centers=np.array(km.centroids, copy=True),
    )


def _differential(
    fit: Callable[[int], tuple[Any, float]], iterations: int
) -> tuple[Any, float, float, str]:
    """Fit with ``iterations`` and with 1 iteration; per-iteration time from the difference."""
    model, full = fit(iterations)
    if iterations < 2:
        return model, full, full, "fit wall / iterations"
    _, single = fit(1)
    if full <= single:  # noise swamped the iterations: fall back to the whole fit
        return model, full, full / iterations, "fit wall / iterations (fit(1) >= fit(n))"
    per_iter = (full - single) / (iterations - 1)
    return model, full, per_iter, f"(fit({iterations}) - fit(1)) / {iterations - 1}"


def run_sklearn(work: Workload) -> RunResult:
    """Fit scikit-learn's Lloyd ``KMeans`` from the initial centres.

    Parameters
    ----------
    work : Workload

    Returns
    -------
    RunResult
        ``seconds_per_iter`` is the differential estimate (scikit-learn
        reports no per-iteration time).
    """
    from sklearn.cluster import KMeans as SKKMeans

    def fit(max_iter: int) -> tuple[Any, float]:
        model = SKKMeans(
            n_clusters=work.init.shape[0],
            init=work.init,
            n_init=1,
            max_iter=max_iter,
            tol=0.0,
            algorithm="lloyd",
        )
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model.fit(work.X)
        return model, time.perf_counter() - start

    model, fit_seconds, per_iter, timing = _differential(fit, work.iterations)
    return RunResult(
        "sklearn",
        0,
        per_iter,
        fit_seconds,
        int(model.n_iter_),
        timing,
        [],
        float(model.inertia_),
        centers=np.asarray(model.cluster_centers_),
    )


class _LoopTimes(logging.Handler):
    """Collects dask-ml's "Finished Lloyd loop N. in <timedelta>" log records."""

    def __init__(self) -> None:
        super().__init__(level=logging.INFO)
        self.seconds: list[float] = []

    def emit(self, record: logging.LogRecord) -> None:
        args = record.args if isinstance(record.args, tuple) else ()
        if (
            record.msg.startswith("Finished")
            and len(args) == 2
            and str(args[0]).startswith("Lloyd loop")
            and isinstance(args[1], dt.timedelta)
        ):
            self.seconds.append(args[1].total_seconds())


@contextlib.contextmanager
def _capture_dask_ml_loops() -> Iterator[_LoopTimes]:
    dask_ml_logger = logging.getLogger("dask_ml.cluster.k_means")
    handler = _LoopTimes()
    saved = dask_ml_logger.level, dask_ml_logger.propagate
    dask_ml_logger.addHandler(handler)
    dask_ml_logger.setLevel(logging.INFO)
    dask_ml_logger.propagate = False
    try:
        yield handler
    finally:
        dask_ml_logger.removeHandler(handler)
        dask_ml_logger.setLevel(saved[0])
        dask_ml_logger.propagate = saved[1]


def run_dask_ml(work: Workload) -> RunResult:
    """Fit ``dask_ml.cluster.KMeans`` on the same persisted Dask array.

    dask-ml stops only when the centre shift is ``< tol``, so ``tol=0``
    runs all iterations. Its ``inertia_`` is a sum of unsquared distances,
    so it is kept only as ``reported_inertia``.

    Parameters
    ----------
    work : Workload

    Returns
    -------
    RunResult
        ``seconds_per_iter`` is the median of dask-ml's own "Lloyd loop"
        timers.
    """
    from dask_ml.cluster import KMeans as DaskMLKMeans

    model = DaskMLKMeans(
        n_clusters=work.init.shape[0],
        init=work.init,
        max_iter=work.iterations,
        tol=0.0,
        n_init=1,
    )
    with _capture_dask_ml_loops() as loops, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        start = time.perf_counter()
        model.fit(work.X_dask)
        fit_seconds = time.perf_counter() - start
    return RunResult(
        "dask-ml",
        0,
        _median_or_total(loops.seconds, fit_seconds, int(model.n_iter_)),
        fit_seconds,
        int(model.n_iter_),
        "Lloyd loop log timers (median)" if loops.seconds else "fit wall / iterations",
        loops.seconds,
        float(model.inertia_),
        centers=np.asarray(model.cluster_centers_),
    )


def start_spark(X: np.ndarray, threads: int, driver_memory: str) -> tuple[Any, Any]:
    """Start a ``local[threads]`` SparkContext and cache X as an RDD of DenseVectors.

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features)
    threads : int
    driver_memory : str
        ``spark.driver.memory``.

    Returns
    -------
    (SparkContext, RDD)
        The RDD is cached and counted, so loading is not timed later.
    """
    from pyspark import SparkConf, SparkContext

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    conf = (
        SparkConf()
        .setMaster(f"local[{threads}]")
        .setAppName("kmeans_dask-bench")
        .set("spark.driver.memory", driver_memory)
        .set("spark.ui.enabled", "false")
        .set("spark.ui.showConsoleProgress", "false")
        .set("spark.driver.host", "127.0.0.1")
        .set("spark.driver.bindAddress", "127.0.0.1")
    )
    sc = SparkContext(conf=conf)
    sc.setLogLevel("ERROR")
    n_slices = max(threads, math.ceil(X.nbytes * 2 / (64 * 2**20)))
    blocks = np.array_split(np.asarray(X, dtype=np.float64), n_slices)

    def as_vectors(block):  # nested, so it is pickled by value for Spark's workers
        from pyspark.mllib.linalg import DenseVector

        return [DenseVector(row) for row in block]

    rdd = sc.parallelize(blocks, n_slices).flatMap(as_vectors).cache()
    rdd.count()
    return sc, rdd


def run_spark(work: Workload, seed: int = 0) -> RunResult:
    """Train Spark MLlib's ``KMeans`` from the initial centres with ``epsilon=0``.

    Parameters
    ----------
    work : Workload
        ``spark_rdd`` must be set (see :func:`start_spark`).
    seed : int, default=0

    Returns
    -------
    RunResult
        ``seconds_per_iter`` is the differential estimate, which removes the
        Python-to-JVM transfer each ``train`` call makes.
    """
    from pyspark.mllib.clustering import KMeans as SparkKMeans
    from pyspark.mllib.clustering import KMeansModel

    initial = KMeansModel([np.asarray(c, dtype=np.float64) for c in work.init])

    def fit(max_iter: int) -> tuple[Any, float]:
        start = time.perf_counter()
        model = SparkKMeans.train(
            work.spark_rdd,
            work.init.shape[0],
            maxIterations=max_iter,
            seed=seed,
            epsilon=0.0,
            initialModel=initial,
        )
        return model, time.perf_counter() - start

    model, fit_seconds, per_iter, timing = _differential(fit, work.iterations)
    return RunResult(
        "spark",
        0,
        per_iter,
        fit_seconds,
        None,
        timing,
        [],
        None,
        centers=np.array([np.asarray(c) for c in model.clusterCenters], dtype=np.float64),
    )


def warm_bounds_kernels(dtype: str) -> None:
    """Compile (or load from Numba's cache) the Hamerly kernels in this process.

    A short warm-up fit may never reach the pruning kernels; this calls each
    on a tiny input so no timed iteration pays for their first call.
    """
    from kmeans_dask._bounds import bounded_assign, center_movement
    from kmeans_dask.backends import get_backend

    rng = np.random.default_rng(0)
    X = rng.normal(size=(4096, 4)).astype(dtype)
    centers = X[:8].copy()
    moved = centers + np.asarray(1e-3, dtype=dtype)
    previous, _, _ = bounded_assign(
        X,
        None,
        centers,
        get_backend("numpy").searcher(centers),
        None,
        None,
        np.zeros((8, 4)),
        np.zeros(8),
    )
    bounded_assign(
        X,
        None,
        moved,
        get_backend("numpy").searcher(moved),
        previous,
        center_movement(centers, moved),
        np.zeros((8, 4)),
        np.zeros(8),
    )


def _empty_statistics(chunk: Any, centers: np.ndarray) -> Any:
    """A chunk task that does no work but returns statistics of the real size."""
    from kmeans_dask._chunks import ClusterStats

    return ClusterStats(np.zeros(centers.shape), np.zeros(centers.shape[0]), 0.0)


def iteration_overhead_seconds(
    client: Any, chunks: Sequence[Any], centers: np.ndarray, engine: str, iterations: int = 20
) -> float:
    """Median wall time of an empty Lloyd iteration: the Dask part of an iteration.

    Sends ``centers`` and maps a do-nothing task over the chunk futures
    (through tasks or through per-worker actors, as ``engine`` says), then
    combines the per-chunk statistics the way the Lloyd loop does.

    Parameters
    ----------
    client : distributed.Client
    chunks : sequence of Future
        The data's chunks on the workers.
    centers : ndarray
        Centres of the real size, shipped every iteration as the loop does.
    engine : {"tasks", "actors"}
    iterations : int, default=20

    Returns
    -------
    float
        Seconds.
    """
    from kmeans_dask._chunks import combine_stats
    from kmeans_dask._hosts import ChunkHosts
    from kmeans_dask._mapreduce import map_chunks, send, tree_reduce

    seconds = []
    if engine == "actors":
        hosts = ChunkHosts(client, chunks)
        try:
            for _ in range(iterations):
                start = time.perf_counter()
                hosts.map_reduce(_empty_statistics, combine_stats, centers)
                seconds.append(time.perf_counter() - start)
        finally:
            hosts.close()
    else:
        for _ in range(iterations):
            start = time.perf_counter()
            sent = send(client, centers, "bench-centers")
            parts = map_chunks(client, _empty_statistics, chunks, sent, name="bench-empty")
            tree_reduce(client, combine_stats, parts, name="bench-reduce")
            seconds.append(time.perf_counter() - start)
    return float(statistics.median(seconds))


# --- summary -------------------------------------------------------------------------------


@dataclass
class Summary:
    """One implementation over all repeats."""

    name: str
    median_seconds_per_iter: float
    min_seconds_per_iter: float
    fit_seconds_per_iter: float
    inertia: float
    inertia_gap: float | None
    speed_ratio: float | None
    """This implementation's s/iter over kmeans_dask's (> 1: kmeans_dask is faster)."""
    paired_speed_ratio: float | None
    """The median over repeats of the same ratio taken within each repeat, where
    both ran minutes apart at most: robust to the machine's speed drifting."""
    fit_speed_ratio: float | None
    gflops: float
    sgemm_fraction: float | None
    timing: str
    n_iter: int | None
    repeats: int
    inertia_spread: float
    """Relative spread of the recomputed inertia over repeats (0 if deterministic)."""


def summarize(
    results: Sequence[RunResult],
    names: Sequence[str],
    flops_per_iter: float,
    sgemm_gflops: float,
    iterations: int,
) -> list[Summary]:
    """Aggregate runs per implementation: medians and minima over repeats.

    Parameters
    ----------
    results : sequence of RunResult
    names : sequence of str
        Implementations in the order to report.
    flops_per_iter : float
        ``2 * n * d * k``.
    sgemm_gflops : float
        Machine SGEMM throughput.
    iterations : int

    Returns
    -------
    list of Summary
    """
    rows: dict[str, dict[str, float]] = {}
    out: list[Summary] = []
    for name in names:
        runs = [r for r in results if r.name == name]
        if not runs:
            continue
        per_iter = [r.seconds_per_iter for r in runs]
        fit_per_iter = [r.fit_seconds / (r.n_iter or iterations) for r in runs]
        inertias = [r.inertia for r in runs]
        inertia = float(statistics.median(inertias))
        median = float(statistics.median(per_iter))
        rows[name] = {"median": median, "fit": float(statistics.median(fit_per_iter))}
        gflops = flops_per_iter / median / 1e9 if median > 0 else math.nan
        out.append(
            Summary(
                name=name,
                median_seconds_per_iter=median,
                min_seconds_per_iter=float(min(per_iter)),
                fit_seconds_per_iter=rows[name]["fit"],
                inertia=inertia,
                inertia_gap=None,
                speed_ratio=None,
                paired_speed_ratio=None,
                fit_speed_ratio=None,
                gflops=gflops,
                sgemm_fraction=gflops / sgemm_gflops if sgemm_gflops > 0 else None,
                timing="; ".join(dict.fromkeys(r.timing for r in runs)),
                n_iter=runs[0].n_iter,
                repeats=len(runs),
                inertia_spread=(max(inertias) - min(inertias)) / abs(inertia) if inertia else 0.0,
            )
        )
    reference = next((s for s in out if s.name == REFERENCE), None) or next(
        (s for s in out if s.name == OURS), None
    )
    ours = rows.get(OURS)
    ours_by_repeat = {r.repeat: r.seconds_per_iter for r in results if r.name == OURS}
    for summary in out:
        paired = [
            r.seconds_per_iter / ours_by_repeat[r.repeat]
            for r in results
            if r.name == summary.name and ours_by_repeat.get(r.repeat, 0) > 0
        ]
        if paired:
            summary.paired_speed_ratio = float(statistics.median(paired))
        if reference is not None and reference.inertia:
            summary.inertia_gap = (summary.inertia - reference.inertia) / reference.inertia
        if ours and ours["median"] > 0:
            summary.speed_ratio = summary.median_seconds_per_iter / ours["median"]
        if ours and ours["fit"] > 0:
            summary.fit_speed_ratio = summary.fit_seconds_per_iter / ours["fit"]
    return out


def _fmt_seconds(value: float) -> str:
    if not math.isfinite(value):
        return "n/a"
    return f"{value:.4f}" if value >= 0.01 else f"{value:.2e}"


def _fmt_ratio(value: float | None) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.2f}x"


def _fmt_gap(value: float | None) -> str:
    if value is None:
        return "n/a"
    return "0" if value == 0 else f"{value:+.2e}"


def _fmt_fraction(value: float | None) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{100 * value:.1f}%"


TABLE_HEADER = (
    "implementation",
    "s/iter median",
    "s/iter min",
    "fit s/iter",
    "final inertia",
    "gap vs {ref}",
    "peer/ours s/iter",
    "paired peer/ours",
    "peer/ours fit",
    "% of SGEMM",
)


def table_rows(summaries: Sequence[Summary]) -> tuple[list[str], list[list[str]]]:
    """Header and formatted cells of the results table.

    Parameters
    ----------
    summaries : sequence of Summary

    Returns
    -------
    header : list of str
    rows : list of list of str
    """
    ref = REFERENCE if any(s.name == REFERENCE for s in summaries) else OURS
    header = [h.format(ref=ref) for h in TABLE_HEADER]
    rows = [
        [
            s.name,
            _fmt_seconds(s.median_seconds_per_iter),
            _fmt_seconds(s.min_seconds_per_iter),
            _fmt_seconds(s.fit_seconds_per_iter),
            f"{s.inertia:.8e}",
            _fmt_gap(s.inertia_gap),
            _fmt_ratio(s.speed_ratio),
            _fmt_ratio(s.paired_speed_ratio),
            _fmt_ratio(s.fit_speed_ratio),
            _fmt_fraction(s.sgemm_fraction),
        ]
        for s in summaries
    ]
    return header, rows


def format_table(summaries: Sequence[Summary]) -> str:
    """Plain-text results table, one line per implementation.

    Parameters
    ----------
    summaries : sequence of Summary

    Returns
    -------
    str
    """
    header, rows = table_rows(summaries)
    widths = [max(len(c) for c in col) for col in zip(header, *rows, strict=True)]
    lines = [
        "  ".join(
            cell.rjust(width) if i else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        )
        for row in (header, *rows)
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def format_markdown(
    summaries: Sequence[Summary], env: dict[str, Any], params: dict[str, Any], extra: list[str]
) -> str:
    """A Markdown section for ``benchmarks/RESULTS.md``.

    Parameters
    ----------
    summaries : sequence of Summary
    env : dict
        From :func:`environment_info`.
    params : dict
        The benchmark's parameters.
    extra : list of str
        Further bullet lines (SGEMM, overhead).

    Returns
    -------
    str
    """
    header, rows = table_rows(summaries)
    versions = ", ".join(f"{k} {v}" for k, v in env["versions"].items() if v)
    overrides = env["openblas_overrides"]
    lines = [
        f"### {env['date']} — {env['host']}",
        "",
        f"- CPU: {env['cpu_model']}; {env['cpus_usable']} usable cores "
        f"({env['cpu_count']} logical); {env['memory_gib']} GiB; Python {env['python']}; "
        f"BLAS: {env['blas']}",
        f"- Versions: {versions}",
        f"- Data: {params['n_samples']} x {params['n_features']} {params['dtype']} blobs "
        f"(centres in [-{params['spread']:g}, {params['spread']:g}]^d), "
        f"k = {params['n_clusters']}, {params['iterations']} iterations, "
        f"{params['repeats']} interleaved repeats, seed {params['seed']}; LocalCluster "
        f"{params['workers']} worker(s) x {params['threads_per_worker']} thread(s), "
        f"kmeans_dask backend {params['backend']}",
        "- Command: `env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python scripts/bench.py "
        f"{params['argv']}`"
        + (
            ""
            if not overrides
            else f" — WARNING: this run had {', '.join(overrides)} set, so figures may not "
            "reflect the real CPU"
        ),
        *(f"- {line}" for line in extra),
        "",
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|",
        *("| " + " | ".join(r) + " |" for r in rows),
    ]
    return "\n".join(lines)


# --- environment ---------------------------------------------------------------------------


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


# --- driver --------------------------------------------------------------------------------


def _available(peers: list[str], dtype: np.dtype) -> list[str]:
    """Peers whose libraries import; the others are reported and dropped."""
    modules = {"faiss": "faiss", "sklearn": "sklearn", "dask-ml": "dask_ml", "spark": "pyspark"}
    keep = []
    for peer in peers:
        try:
            importlib.import_module(modules[peer])
        except ImportError as exc:
            hint = " (pip install pyspark; it needs a Java runtime)" if peer == "spark" else ""
            print(f"skipping {peer}: cannot import {modules[peer]}: {exc}{hint}", flush=True)
            continue
        if peer == "faiss" and dtype != np.float32:
            print("skipping faiss: faiss.Kmeans only takes float32 data", flush=True)
            continue
        keep.append(peer)
    return keep


def _dask_workload(
    client: Any, X: np.ndarray, chunk_rows: int, n_threads: int, n_clusters: int
) -> Any:
    """Scatter row blocks of X to the workers and wrap them as one Dask array.

    Without ``chunk_rows`` the blocks are those a fit on the NumPy array makes.
    """
    import dask.array as da

    from kmeans_dask._chunks import statistics_nbytes
    from kmeans_dask._inputs import numpy_row_chunks

    n, d = X.shape
    if chunk_rows > 0:
        sizes = [min(chunk_rows, n - s) for s in range(0, n, chunk_rows)]
    else:
        stats_bytes = statistics_nbytes(n_clusters, d)
        sizes = list(numpy_row_chunks(n, d, X.dtype.itemsize, n_threads, stats_bytes))
    bounds = np.cumsum([0, *sizes])
    futures = client.scatter([X[a:b] for a, b in itertools.pairwise(bounds)], hash=False)
    blocks = [
        da.from_delayed(f, shape=(int(b - a), d), dtype=X.dtype)
        for f, a, b in zip(futures, bounds[:-1], bounds[1:], strict=True)
    ]
    return da.concatenate(blocks).persist(), futures


def _describe(result: RunResult) -> str:
    text = (
        f"{result.name:12s} {_fmt_seconds(result.seconds_per_iter)} s/iter  "
        f"fit {result.fit_seconds:.3f} s  n_iter {result.n_iter if result.n_iter else '?'}  "
        f"inertia {result.inertia:.8e}  [{result.timing}]"
    )
    if result.iteration_seconds:
        text += (
            "\n"
            + " " * 16
            + "per-iteration s: "
            + " ".join(f"{s:.4f}" for s in result.iteration_seconds)
        )
    return text


def run(args: argparse.Namespace) -> int:
    """Run the benchmark described by parsed ``args``.

    Parameters
    ----------
    args : argparse.Namespace
        From :func:`build_parser`.

    Returns
    -------
    int
        Exit status: 0 on success, 1 if kmeans_dask itself failed.
    """
    from distributed import Client, LocalCluster

    from kmeans_dask.backends import resolve_auto

    dtype = np.dtype(args.dtype)
    try:
        peers = parse_peers(args.peers, args.with_spark)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.n_clusters > args.n_samples:
        print("error: --n-clusters must not exceed --n-samples", file=sys.stderr)
        return 2
    env = environment_info()
    if env["openblas_overrides"]:
        print(
            f"WARNING: {', '.join(env['openblas_overrides'])} set: OpenBLAS may not use the "
            "kernels of this CPU. For figures run `env -u OPENBLAS_CORETYPE -u "
            "OPENBLAS_L2_SIZE python scripts/bench.py ...`.",
            flush=True,
        )
    try:
        variants = parse_variants(args.variants)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    peers = _available(peers, dtype)
    variant_names = [variant_name(*variant) for variant in variants]
    names = [OURS, *variant_names, *peers]
    backend = resolve_auto() if args.backend == "auto" else args.backend
    n, d, k, iters = args.n_samples, args.n_features, args.n_clusters, args.iterations
    n_threads = args.workers * args.threads_per_worker
    flops_per_iter = 2.0 * n * d * k

    start = time.perf_counter()
    X = make_blobs(n, d, k, args.seed, dtype, args.spread)
    init = initial_centers(X, k, args.seed)
    print(
        f"data: {n} x {d} {dtype}, k={k}, {iters} iterations, {args.repeats} repeat(s); "
        f"generated in {time.perf_counter() - start:.1f} s; implementations: "
        f"{', '.join(names)}",
        flush=True,
    )

    results: list[RunResult] = []
    overheads: dict[str, list[float]] = {"tasks": [], "actors": []}
    sgemm = SgemmResult(SGEMM_SHAPE)
    failed: set[str] = set()
    sc = None
    with (
        warnings.catch_warnings(),
        LocalCluster(
            n_workers=args.workers,
            threads_per_worker=args.threads_per_worker,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
            silence_logs=logging.ERROR,
        ) as cluster,
        Client(cluster) as client,
    ):
        warnings.filterwarnings("ignore", message=".*[Ll]arge graph.*")
        X_dask, _futures = _dask_workload(client, X, args.chunk_rows, n_threads, args.n_clusters)
        print(
            f"LocalCluster: {args.workers} worker(s) x {args.threads_per_worker} thread(s); "
            f"{X_dask.numblocks[0]} chunk(s) of ~{X_dask.chunks[0][0]} rows persisted",
            flush=True,
        )
        work = Workload(X, X_dask, init, iters)
        if "spark" in peers:
            try:
                start = time.perf_counter()
                sc, work.spark_rdd = start_spark(X, n_threads, args.spark_driver_memory)
                print(
                    f"spark: local[{n_threads}] started, RDD cached in "
                    f"{time.perf_counter() - start:.1f} s",
                    flush=True,
                )
            except Exception as exc:  # a JVM problem should not sink the other peers
                print(f"skipping spark: could not start it: {exc!r}", flush=True)
                names.remove("spark")
        try:
            runners: dict[str, Callable[[Workload], RunResult]] = {
                OURS: lambda w: run_kmeans_dask(w, backend, args.algorithm, args.engine),
                **{
                    name: lambda w, a=a, e=e, name=name: run_kmeans_dask(w, backend, a, e, name)
                    for name, (a, e) in zip(variant_names, variants, strict=True)
                },
                "faiss": lambda w: run_faiss(w, args.seed),
                "sklearn": run_sklearn,
                "dask-ml": run_dask_ml,
                "spark": lambda w: run_spark(w, args.seed),
            }
            if args.warmup:
                rows = min(n, max(WARMUP_ROWS, 4 * k))
                warm_rdd = None
                if sc is not None:
                    warm_rdd = work.spark_rdd.zipWithIndex().filter(lambda p: p[1] < rows).keys()
                    warm_rdd = warm_rdd.cache()
                warm = Workload(X[:rows], X_dask[:rows].persist(), init, 2, warm_rdd)
                for name in names:
                    try:
                        runners[name](warm)
                    except Exception as exc:
                        print(f"{name} failed in the warm-up: {exc!r}", flush=True)
                        failed.add(name)
                client.run(warm_bounds_kernels, str(dtype))
                if warm_rdd is not None:
                    warm_rdd.unpersist()
                print("warm-up done", flush=True)
            for repeat in range(args.repeats):
                order = run_order(names, repeat)
                print(f"repeat {repeat + 1}/{args.repeats}", flush=True)
                for name in order:
                    if name in failed:
                        continue
                    wait_until_idle()
                    try:
                        result = runners[name](work)
                    except Exception as exc:
                        print(f"  {name} failed: {exc!r}; dropping it", flush=True)
                        failed.add(name)
                        continue
                    result.repeat = repeat
                    result.inertia = exact_inertia(X, result.centers)
                    result.centers = None
                    if result.n_iter is not None and result.n_iter < iters:
                        print(
                            f"  WARNING: {name} stopped after {result.n_iter} of {iters} "
                            "iterations (exact convergence)",
                            flush=True,
                        )
                    results.append(result)
                    print("  " + _describe(result), flush=True)
                for engine, seconds in overheads.items():
                    seconds.append(iteration_overhead_seconds(client, _futures, init, engine))
                measure_sgemm(sgemm)
                print(
                    f"  empty iteration: tasks {_fmt_seconds(overheads['tasks'][-1])} s, "
                    f"actors {_fmt_seconds(overheads['actors'][-1])} s; SGEMM "
                    f"{sgemm.gflops:.1f} GFLOP/s ({sgemm.gflops_one_thread:.1f} per thread)",
                    flush=True,
                )
        finally:
            if sc is not None:
                sc.stop()

    if OURS in failed:
        print("kmeans_dask failed; no summary", file=sys.stderr)
        return 1
    summaries = summarize(results, names, flops_per_iter, sgemm.gflops, iters)
    ours = next(s for s in summaries if s.name == OURS)
    thread_sgemm = sgemm.gflops_one_thread * n_threads
    ours_engine = "tasks" if args.engine == "tasks" else "actors"
    overhead = float(statistics.median(overheads[ours_engine]))
    extra = [
        f"SGEMM ({SGEMM_SHAPE[0]}x{SGEMM_SHAPE[1]}) @ ({SGEMM_SHAPE[1]}x{SGEMM_SHAPE[2]}) "
        f"float32: {sgemm.gflops:.1f} GFLOP/s with {sgemm.threads} BLAS thread(s), "
        f"{sgemm.gflops_one_thread:.1f} GFLOP/s on one thread",
    ]
    for summary in summaries:
        if summary.name.startswith(OURS):
            extra.append(
                f"{summary.name} assignment step: 2*n*d*k / s_iter = {summary.gflops:.1f} "
                f"GFLOP/s = {_fmt_fraction(summary.sgemm_fraction)} of SGEMM "
                f"({_fmt_fraction(summary.gflops / thread_sgemm if thread_sgemm else None)} of "
                f"{n_threads} x the one-thread SGEMM)"
            )
    extra += [
        "Dask part of an iteration (median wall time of an empty iteration over the same "
        f"chunks: centres out, do-nothing map, statistics reduced): tasks "
        f"{_fmt_seconds(statistics.median(overheads['tasks']))} s, actors "
        f"{_fmt_seconds(statistics.median(overheads['actors']))} s; kmeans_dask "
        f"({ours_engine}): {_fmt_fraction(overhead / ours.median_seconds_per_iter)} of its "
        f"{_fmt_seconds(ours.median_seconds_per_iter)} s/iter",
    ]
    peaks = [r.peak_worker_rss for r in results if r.name == OURS and r.peak_worker_rss]
    if peaks:
        data_per_worker = X.nbytes / max(args.workers, 1)
        extra.append(
            f"kmeans_dask peak worker RSS during fit: {max(peaks) / 2**20:,.0f} MiB for "
            f"{data_per_worker / 2**20:,.0f} MiB of data per worker "
            f"(includes the Python/NumPy/Numba baseline of the worker process)"
        )
    print()
    print(
        f"Results: {n} x {d} {dtype}, k={k}, {iters} iterations, median/min over "
        f"{args.repeats} interleaved repeat(s). peer/ours > 1 means kmeans_dask is faster; "
        "'paired' is the median of the ratios taken within each repeat."
    )
    print(format_table(summaries))
    print()
    for summary in summaries:
        print(f"  {summary.name}: s/iter from {summary.timing}")
    for line in extra:
        print(line)
    spread = [s.name for s in summaries if s.inertia_spread > 1e-12]
    if spread:
        print(f"Note: final inertia varied across repeats for {', '.join(spread)}.")
    overrides = ", ".join(env["openblas_overrides"])
    print(
        "Figures are only comparable when taken with `env -u OPENBLAS_CORETYPE -u "
        "OPENBLAS_L2_SIZE python scripts/bench.py ...`"
        + (f" (this run had {overrides} set)." if overrides else ".")
    )

    params = {
        "n_samples": n,
        "n_features": d,
        "n_clusters": k,
        "iterations": iters,
        "repeats": args.repeats,
        "dtype": str(dtype),
        "spread": args.spread,
        "workers": args.workers,
        "threads_per_worker": args.threads_per_worker,
        "chunk_rows": list(X_dask.chunks[0]),
        "backend": backend,
        "algorithm": args.algorithm,
        "engine": args.engine,
        "variants": [list(v) for v in variants],
        "seed": args.seed,
        "peers": peers,
        "argv": " ".join(sys.argv[1:]),
    }
    if args.markdown:
        print()
        print(format_markdown(summaries, env, params, extra))
    if args.json:
        payload = {
            "parameters": params,
            "environment": env,
            "sgemm": asdict(sgemm),
            "empty_iteration_seconds": overheads,
            "dask_overhead_seconds_per_iter": overhead,
            "summaries": [asdict(s) for s in summaries],
            "runs": [{k: v for k, v in asdict(r).items() if k != "centers"} for r in results],
            "failed": sorted(failed),
        }
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(payload, f, indent=2, default=str)
        print(f"wrote {args.json}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``scripts/bench.py`` and ``kmeans-dask bench``.

    Parameters
    ----------
    argv : list of str, optional
        Arguments without the program name; ``sys.argv[1:]`` when None.

    Returns
    -------
    int
        Exit status.
    """
    return run(build_parser().parse_args(argv))
