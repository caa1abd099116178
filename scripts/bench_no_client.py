"""Whole fits without a Dask client, as a script or a notebook calls them.

``KMeans(k).fit(X)`` with no client starts a LocalCluster for the fit and
closes it afterwards: that start is part of what the user waits for, and
on small data most of it. For each shape this times, in one process, the
whole call from the same initial centres with a fixed number of
iterations (``tol=0``):

* kmeans_dask on the NumPy rows (its workers are threads of this process);
* kmeans_dask on the same rows as a Dask array (worker processes);
* scikit-learn's ``KMeans`` and ``faiss.Kmeans`` (no cluster to start).

Implementations take turns within each repeat, in an order that changes
from repeat to repeat (none always runs first, or after the same one). The
first repeat (kernels loaded from Numba's cache, libraries warmed) is shown
apart from the median of the others. Ratios are each implementation's time
over kmeans_dask's on NumPy rows. To time an older tree, run this script
with ``PYTHONPATH`` set to it (``git worktree add /tmp/before <commit>``).

Usage::

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python scripts/bench_no_client.py
    python scripts/bench_no_client.py --shapes 3000x5:3 --repeats 5
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from collections.abc import Callable

import numpy as np

from kmeans_dask.benchmark.schedule import run_order


def _shape(text: str) -> tuple[int, int, int]:
    """``"ROWSxFEATURES:K"`` as (rows, features, k)."""
    try:
        size, k = text.split(":")
        rows, features = size.lower().split("x")
        shape = int(rows), int(features), int(k)
    except ValueError:
        message = f"expected ROWSxFEATURES:K, e.g. 3000x5:3; got {text!r}"
        raise argparse.ArgumentTypeError(message) from None
    if min(shape) < 1 or shape[2] > shape[0]:
        raise argparse.ArgumentTypeError(
            f"expected 1 <= K <= ROWS and FEATURES >= 1; got {text!r}"
        )
    return shape


def _fitters(iterations: int) -> dict[str, Callable[[np.ndarray, np.ndarray], float]]:
    """Each implementation: a whole fit of (rows, initial centres), returning the inertia."""
    import dask.array as da
    import faiss
    from sklearn.cluster import KMeans as SklearnKMeans

    from kmeans_dask import KMeans

    def ours(X: np.ndarray, init: np.ndarray) -> float:
        return KMeans(len(init), init=init, max_iter=iterations, tol=0).fit(X).inertia_

    def ours_dask(X: np.ndarray, init: np.ndarray) -> float:
        rows = da.from_array(X, chunks=(max(1, -(-len(X) // 4)), X.shape[1]))
        return KMeans(len(init), init=init, max_iter=iterations, tol=0).fit(rows).inertia_

    def sklearn(X: np.ndarray, init: np.ndarray) -> float:
        model = SklearnKMeans(len(init), init=init, n_init=1, max_iter=iterations, tol=0)
        return model.fit(X).inertia_

    def faiss_kmeans(X: np.ndarray, init: np.ndarray) -> float:
        model = faiss.Kmeans(
            X.shape[1], len(init), niter=iterations, max_points_per_centroid=10**9
        )
        model.train(X, init_centroids=init)
        return float(model.obj[-1])

    return {
        "kmeans_dask, NumPy rows (in-process threads)": ours,
        "kmeans_dask, Dask array (worker processes)": ours_dask,
        "scikit-learn": sklearn,
        "faiss.Kmeans": faiss_kmeans,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--shapes",
        type=lambda text: [_shape(part) for part in text.split(",")],
        default=[(3_000, 5, 3), (100_000, 32, 64), (1_000_000, 32, 64)],
        help="comma-separated ROWSxFEATURES:K (default 3000x5:3,100000x32:64,1000000x32:64)",
    )
    parser.add_argument("--iterations", type=int, default=10, help="Lloyd iterations (tol=0)")
    parser.add_argument("--repeats", type=int, default=4, help="rounds; the first shown apart")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.repeats < 2 or args.iterations < 1:
        parser.error("--repeats must be >= 2 and --iterations >= 1")

    warnings.simplefilter("ignore")  # ConvergenceWarning: max_iter stops every fit by design
    fitters = _fitters(args.iterations)
    print(f"{args.iterations} iterations from the same initial centres, float32 blobs")
    print("| rows x features, k | implementation | first fit s | fit s (median) | vs ours |")
    print("|---|---|---:|---:|---:|")
    for rows, features, k in args.shapes:
        rng = np.random.default_rng(args.seed)
        truth = rng.uniform(-4, 4, size=(k, features))
        X = (truth[rng.integers(k, size=rows)] + rng.normal(size=(rows, features))).astype(
            np.float32
        )
        init = X[rng.choice(rows, k, replace=False)].copy()
        seconds: dict[str, list[float]] = {name: [] for name in fitters}
        for repeat in range(args.repeats):
            for name in run_order(list(fitters), repeat):
                started = time.perf_counter()
                fitters[name](X, init)
                seconds[name].append(time.perf_counter() - started)
        ours = statistics.median(seconds[next(iter(fitters))][1:])
        for name, times in seconds.items():
            median = statistics.median(times[1:])
            print(
                f"| {rows:,} x {features}, k = {k} | {name} | {times[0]:.4f} | {median:.4f} "
                f"| {median / ours:.2f}x |"
            )


if __name__ == "__main__":
    main()
