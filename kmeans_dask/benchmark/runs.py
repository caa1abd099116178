"""One timed fit of each implementation: kmeans_dask and its peers on the same workload."""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import math
import os
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from kmeans_dask.benchmark.memory import peak_rss, reset_peak_rss
from kmeans_dask.benchmark.options import OURS


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
    from kmeans_dask._fit.bounds_schedule import center_movement
    from kmeans_dask._worker.bounds import bounded_assign
    from kmeans_dask._worker.searchers import prepared_search

    rng = np.random.default_rng(0)
    X = rng.normal(size=(4096, 4)).astype(dtype)
    centers = X[:8].copy()
    moved = centers + np.asarray(1e-3, dtype=dtype)
    previous, _, _ = bounded_assign(
        X,
        None,
        centers,
        prepared_search("numpy", centers),
        None,
        None,
        np.zeros((8, 4)),
        np.zeros(8),
    )
    bounded_assign(
        X,
        None,
        moved,
        prepared_search("numpy", moved),
        previous,
        center_movement(centers, moved),
        np.zeros((8, 4)),
        np.zeros(8),
    )
