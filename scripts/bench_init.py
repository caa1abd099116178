"""Initialisation: kmeans_dask's k-means|| against dask-ml's and scikit-learn's k-means++.

All three pick ``k`` initial centres from the same generated blobs (the data
of ``scripts/bench.py``), in interleaved repeats, each run starting on an
idle machine:

* ``kmeans_dask``: k-means|| (5 rounds, oversampling 2, as ``KMeans``'s
  defaults) over the data persisted on a LocalCluster, the candidates
  reduced by weighted k-means++ and Lloyd in the client;
* ``dask-ml``: ``dask_ml.cluster.k_means.init_scalable`` (its k-means||,
  what ``dask_ml.cluster.KMeans`` runs by default) on the same cluster and
  the same persisted array;
* ``sklearn``: ``sklearn.cluster.kmeans_plusplus`` (greedy k-means++, what
  ``sklearn.cluster.KMeans`` runs by default) in this process.

Reported per implementation: median seconds, the ratio to kmeans_dask, and
the inertia of the initial centres (exact, float64, the same computation for
all), relative to scikit-learn's: a better start needs fewer Lloyd
iterations.

Usage::

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python scripts/bench_init.py --repeats 3
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time
from collections.abc import Callable

import numpy as np
from distributed import Client, LocalCluster

from kmeans_dask._engine.placement import distribute
from kmeans_dask.benchmark.data import exact_inertia, make_blobs, persisted_blocks
from kmeans_dask.benchmark.schedule import run_order, wait_until_idle

#: ``KMeans``'s defaults for k-means||.
ROUNDS = 5
OVERSAMPLING_FACTOR = 2.0


def kmeans_dask_init(client: Client, data, n_clusters: int, seed: int) -> np.ndarray:
    """kmeans_dask's k-means|| over the distributed chunks of a fit."""
    from kmeans_dask._fit.initialization import init_kmeans_parallel

    return init_kmeans_parallel(
        client,
        data,
        n_clusters,
        seed,
        oversampling_factor=OVERSAMPLING_FACTOR,
        rounds=ROUNDS,
        backend="numpy",
    )


def dask_ml_init(X_dask, n_clusters: int, seed: int) -> np.ndarray:
    from dask_ml.cluster.k_means import init_scalable
    from dask_ml.utils import check_random_state

    random_state = check_random_state(seed)  # a dask RandomState, as dask-ml's KMeans passes
    return np.asarray(init_scalable(X_dask, n_clusters, random_state, None, OVERSAMPLING_FACTOR))


def sklearn_init(X: np.ndarray, n_clusters: int, seed: int) -> np.ndarray:
    from sklearn.cluster import kmeans_plusplus

    return kmeans_plusplus(X, n_clusters, random_state=seed)[0]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-samples", type=int, default=1_000_000)
    parser.add_argument("--n-features", type=int, default=32)
    parser.add_argument("--n-clusters", type=int, default=64)
    parser.add_argument("--spread", type=float, default=2.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2, help="LocalCluster threads (1 worker)")
    args = parser.parse_args(argv)
    n, d, k = args.n_samples, args.n_features, args.n_clusters
    X = make_blobs(n, d, k, 0, spread=args.spread)
    with (
        LocalCluster(
            n_workers=1,
            threads_per_worker=args.threads,
            host="127.0.0.1",
            dashboard_address=None,
            silence_logs=logging.ERROR,
        ) as cluster,
        Client(cluster) as client,
    ):
        X_dask, _futures = persisted_blocks(client, X, 0, k)
        # The chunks a fit hands to its initialisation (the data check is not timed).
        data = distribute(client, X_dask, None)
        runners: dict[str, Callable[[int], np.ndarray]] = {
            "kmeans_dask": lambda seed: kmeans_dask_init(client, data, k, seed),
            "dask-ml": lambda seed: dask_ml_init(X_dask, k, seed),
            "sklearn": lambda seed: sklearn_init(X, k, seed),
        }
        # Warm-up (compilation, imports); scikit-learn's on a small sample.
        runners["kmeans_dask"](0)
        runners["dask-ml"](0)
        sklearn_init(X[:20_000], k, 0)
        seconds: dict[str, list[float]] = {name: [] for name in runners}
        inertia: dict[str, list[float]] = {name: [] for name in runners}
        for repeat in range(args.repeats):
            for name in run_order(list(runners), repeat):
                wait_until_idle()
                start = time.perf_counter()
                centers = runners[name](repeat + 1)
                seconds[name].append(time.perf_counter() - start)
                inertia[name].append(exact_inertia(X, centers))
                print(f"repeat {repeat + 1} {name:12s} {seconds[name][-1]:7.3f} s", flush=True)
    ours = statistics.median(seconds["kmeans_dask"])
    reference = statistics.median(inertia["sklearn"])
    print(
        f"\n{n} x {d} float32 blobs (spread {args.spread}), k = {k}, {args.repeats} repeats, "
        f"LocalCluster 1 worker x {args.threads} threads, seeds 1..{args.repeats}\n"
    )
    print("| initialisation | seconds (median) | peer/ours | initial inertia vs sklearn |")
    print("|---|---:|---:|---:|")
    for name in runners:
        median = statistics.median(seconds[name])
        gap = statistics.median(inertia[name]) / reference - 1.0
        print(f"| {name} | {median:.3f} | {median / ours:.2f}x | {gap:+.2%} |")


# LocalCluster's worker processes re-import this file.
if __name__ == "__main__":
    main()
