"""Compiling the kernels of a fit before the fit needs them.

Numba compiles a kernel for each signature (dtypes, layouts, which optional
arguments are given, how many vector registers of centres a block holds) on
its first call, and keeps the machine code in its on-disk cache
(``NUMBA_CACHE_DIR``, else ``__pycache__`` next to the sources; README,
"Compiled kernels on a cluster"). :func:`compile_fit_kernels` runs every host
chunk operation a default fit runs, in the fit's order, once on a few rows of
the fit's dtype and width and with its number of clusters: so it compiles
(or loads from the cache) exactly the signatures that fit calls, and no
others. :func:`compile_kernels` does it for several dtypes in parallel
processes, filling the cache ahead of any fit (``kmeans-dask compile``).
"""

from __future__ import annotations

import threading
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_all_start_methods, get_context

import numpy as np

from kmeans_dask._fit.bounds_schedule import center_movement
from kmeans_dask._fit.lloyd import local_lloyd
from kmeans_dask._kernels.fused_search import MAX_VECTORS_PER_BLOCK, lanes_of
from kmeans_dask._worker.chunks import Chunk
from kmeans_dask._worker.host_ops import host_ops

#: Rows of the stand-in data: enough for every pass to take its usual path.
_ROWS = 64

#: The parts of a fit whose kernels :func:`compile_fit_kernels` compiles: the
#: data check and the initialisation; the Lloyd iterations and the labels.
STAGES = ("initialization", "iterations")


def compile_fit_kernels(
    dtype,
    n_clusters: int,
    n_features: int,
    *,
    weighted: bool = False,
    search: str = "numpy",
    stages: tuple[str, ...] = STAGES,
) -> None:
    """Compile the kernels a fit of ``n_clusters`` on ``dtype`` rows of ``n_features`` runs.

    Runs, on stand-in rows, the data check and k-means|| (its first row, the
    candidate passes for every number of centre vectors a round can hold,
    the weighted Lloyd on the candidates that the client runs), then plain
    and bounded Lloyd passes and the final labelling, each as the fit calls
    it.

    Parameters
    ----------
    dtype : float32 or float64
        The dtype the fit computes in.
    n_clusters, n_features : int
    weighted : bool, default=False
        Whether the fit has ``sample_weight`` (other signatures).
    search : str, default="numpy"
        The iterations' search (a backend name).
    stages : tuple of str, default=STAGES
        Which of :data:`STAGES` to compile for.
    """
    unknown = set(stages) - set(STAGES)
    if unknown:
        raise ValueError(f"stages must be among {STAGES}, got {sorted(unknown)}")
    dtype = np.dtype(dtype)
    if dtype not in (np.float32, np.float64):
        raise ValueError(f"dtype must be float32 or float64, got {dtype.name}")
    if n_clusters < 1 or n_features < 1:
        raise ValueError(
            f"n_clusters={n_clusters} and n_features={n_features} should both be >= 1"
        )
    rng = np.random.default_rng(0)
    ops = host_ops()
    rows = rng.standard_normal((_ROWS, n_features)).astype(dtype)
    weights = rng.random(_ROWS) + 0.5 if weighted else None
    chunk = ops.place(rows, weights, 0, dtype)
    centers = rng.standard_normal((n_clusters, n_features)).astype(dtype)
    if "initialization" in stages:
        _initialization(chunk, centers, search, rng)
    if "iterations" in stages:
        _iterations(chunk, centers, search)


def _initialization(chunk: Chunk, centers: np.ndarray, search: str, rng) -> None:
    """The data check, the first k-means|| candidate, the rounds, the client's Lloyd."""
    ops, rows = chunk.ops, chunk.data
    ops.summarize(chunk, with_digest=True)
    keys = ops.random_keys(chunk, 0, 1, weighted=True)
    ops.top_rows(chunk, keys, np.full(chunk.n_rows, -1, np.int32), 1)
    # k-means|| rounds: candidates filling 1 to MAX_VECTORS_PER_BLOCK vectors.
    state = ops.fold_candidates(chunk, None, rows[:1], 0, search)
    lanes = lanes_of(rows.dtype)
    for vectors in range(1, MAX_VECTORS_PER_BLOCK + 1):
        candidates = rows[rng.integers(0, chunk.n_rows, vectors * lanes)]
        state = ops.fold_candidates(chunk, state, candidates, 1, search)
    ops.weighted_cost(chunk, state)
    ops.sample_by_cost(chunk, state, 1.0, 0, 2)
    ops.candidate_weights(chunk, state, 1 + MAX_VECTORS_PER_BLOCK * lanes)
    # The client's weighted Lloyd on the candidates (about 2k of them).
    points = rng.standard_normal((2 * len(centers), rows.shape[1])).astype(rows.dtype)
    local_lloyd(
        points, rng.random(len(points)) + 0.5, centers, max_iter=2, tol=0.0, backend=search
    )


def _iterations(chunk: Chunk, centers: np.ndarray, search: str) -> None:
    """A plain Lloyd pass, a bounded one seeding bounds, one moving them, the labels.

    Each pass also ranks its farthest rows, as in the fit.
    """
    ops = chunk.ops
    ops.lloyd_pass(chunk, centers, search, keep_labels=True)
    first = ops.bounded_pass(chunk, centers, search, None, None)
    moved = centers + np.asarray(1e-3, centers.dtype)
    ops.bounded_pass(chunk, moved, search, first.bounds, center_movement(centers, moved))
    ops.nearest(chunk, centers, search)


class KernelCompilation:
    """:func:`compile_fit_kernels` for each of ``dtypes``, each stage in a process of its own.

    Numba compiles under one lock per process, so separate processes are
    what compiles in parallel (each stage compiles what it uses, so kernels
    both use are compiled twice); each writes Numba's on-disk cache, where
    a fit's workers then find the kernels. It starts at construction and
    runs while the caller does other work (starting a cluster, loading
    data); :meth:`wait` waits for it. With one process, it all runs at
    construction, in this one.
    """

    def __init__(
        self, dtypes, n_clusters: int, n_features: int, *, weighted: bool = False, processes: int
    ) -> None:
        jobs = [(np.dtype(dtype).name, stage) for dtype in dtypes for stage in STAGES]
        options = {"n_clusters": n_clusters, "n_features": n_features, "weighted": weighted}
        self._pool = None
        self._running = []
        if processes <= 1:
            for dtype, stage in jobs:
                compile_fit_kernels(dtype, stages=(stage,), **options)
            return
        # Forked processes start at once, but a fork copies only the calling
        # thread: locks other threads hold (Numba's compiler lock among them)
        # would stay held in the child. So fork only a single-threaded process.
        alone = threading.active_count() == 1 and "fork" in get_all_start_methods()
        self._pool = ProcessPoolExecutor(
            min(processes, len(jobs)), mp_context=get_context("fork" if alone else "spawn")
        )
        self._running = [
            self._pool.submit(compile_fit_kernels, dtype, stages=(stage,), **options)
            for dtype, stage in jobs
        ]

    def wait(self) -> None:
        """Wait for every process to finish (raising the first error) and end them."""
        try:
            for job in self._running:
                job.result()
        finally:
            if self._pool is not None:
                self._pool.shutdown(cancel_futures=True)
