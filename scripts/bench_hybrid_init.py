"""Hybrid initialisation against k-means|| and k-means++: time and final inertia.

For each data set, seed and initialisation, one ``KMeans(...).fit`` as users
call it, on a LocalCluster of ``--workers`` single-threaded workers,
recording the time of the initialisation (from the fit's own report), the
time of the whole fit, the Lloyd iterations and the final inertia. One
small fit per initialisation first compiles the kernels (not timed).
Initialisations: ``k-means||`` (the default), ``k-means++`` (on a sample of
``max(10000, 20 k)`` rows), ``hybrid`` with its default sample
(``max(20000, 100 k)`` rows) and ``hybrid`` on 10% of the rows.

Data sets:

* ``blobs``: 300,000 x 16 overlapping Gaussian blobs (std 4 in a box of
  side 20), k = 32, float32, in worker memory;
* ``astronaut``: the 512 x 512 RGB pixels of scikit-image's astronaut
  (262,144 x 3, scaled to [0, 1], float32), k = 32 (colour quantisation);
* ``zarr``: 600,000 x 32 blobs (std 3), k = 64, written to a Zarr array in
  100,000-row chunks and streamed from the store in every pass
  (``persist=False``).

Prints one line per fit and a Markdown table of medians over the seeds,
with each inertia relative to the lowest any fit reached on that data set.

Usage::

    python scripts/bench_hybrid_init.py --seeds 3 --zarr /tmp/hybrid_bench.zarr
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
from distributed import Client, LocalCluster
from sklearn.exceptions import ConvergenceWarning

from kmeans_dask import KMeans
from kmeans_dask.datasets import make_blobs, write_blobs_zarr

#: label -> KMeans parameters of each initialisation.
INITS: dict[str, dict[str, Any]] = {
    "k-means||": {"init": "k-means||"},
    "k-means++": {"init": "k-means++"},
    "hybrid (default sample)": {"init": "hybrid"},
    "hybrid (10% of rows)": {"init": "hybrid", "init_sample_size": 0.1},
}


def astronaut_pixels() -> np.ndarray:
    from skimage.data import astronaut

    return (astronaut().reshape(-1, 3) / 255.0).astype(np.float32)


def data_sets(zarr_path: str) -> dict[str, tuple[Callable[[], Any], int, dict[str, Any]]]:
    """name -> (load, k, extra KMeans parameters)."""

    def blobs() -> np.ndarray:
        X, _ = make_blobs(300_000, 16, 32, cluster_std=4.0, chunk_rows=50_000, random_state=1)
        return X.compute()

    def zarr_blobs() -> str:
        if not os.path.exists(zarr_path):
            write_blobs_zarr(zarr_path, 600_000, 32, 64, chunk_rows=100_000, cluster_std=3.0)
        return zarr_path

    return {
        "blobs 300k x 16, k=32": (blobs, 32, {}),
        "astronaut pixels 262k x 3, k=32": (astronaut_pixels, 32, {}),
        "zarr 600k x 32, k=64, streamed": (zarr_blobs, 64, {"persist": False}),
    }


def one_fit(X: Any, k: int, seed: int, params: dict[str, Any]) -> dict[str, float]:
    model = KMeans(k, random_state=seed, **params)
    reports: list[str] = []
    model._report = reports.append  # the fit reports its initialisation time
    started = time.perf_counter()
    model.fit(X)
    seconds = time.perf_counter() - started
    init_line = next(line for line in reports if line.startswith("Initialization complete"))
    return {
        "init_s": float(init_line.rsplit(" in ", 1)[1].split()[0]),
        "fit_s": seconds,
        "n_iter": model.n_iter_,
        "inertia": float(model.inertia_),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3, help="seeds per data set and init")
    parser.add_argument("--workers", type=int, default=2, help="single-threaded workers")
    parser.add_argument("--zarr", default="/tmp/kmeans_dask_hybrid_bench.zarr", help="Zarr path")
    args = parser.parse_args()
    warnings.simplefilter("ignore", ConvergenceWarning)
    results: dict[tuple[str, str], list[dict[str, float]]] = {}
    cluster = LocalCluster(n_workers=args.workers, threads_per_worker=1, dashboard_address=":0")
    with cluster, Client(cluster):
        warm_up = np.random.default_rng(0).normal(size=(20_000, 8)).astype(np.float32)
        for params in INITS.values():  # compile the kernels on the workers and the client
            KMeans(8, random_state=0, max_iter=3, **params).fit(warm_up)
        for name, (load, k, extra) in data_sets(args.zarr).items():
            X = load()
            for seed in range(args.seeds):
                for label, params in INITS.items():
                    run = one_fit(X, k, seed, {**extra, **params})
                    results.setdefault((name, label), []).append(run)
                    print(
                        f"{name:34s} {label:24s} seed {seed}: init {run['init_s']:7.2f} s, "
                        f"fit {run['fit_s']:7.2f} s, {run['n_iter']:3d} iter, "
                        f"inertia {run['inertia']:.6g}",
                        flush=True,
                    )
    print()
    print(
        "| data set | init | init s | fit s | Lloyd iterations | final inertia "
        "/ best of all fits |"
    )
    print("|---|---|---:|---:|---:|---:|")
    for name in data_sets(args.zarr):
        best = min(run["inertia"] for (n, _), runs in results.items() if n == name for run in runs)
        for label in INITS:
            runs = results[(name, label)]
            median = {key: statistics.median(run[key] for run in runs) for key in runs[0]}
            worst = max(run["inertia"] for run in runs) / best
            print(
                f"| {name} | {label} | {median['init_s']:.2f} | {median['fit_s']:.2f} | "
                f"{median['n_iter']:.0f} | {median['inertia'] / best:.5f} (worst {worst:.5f}) |"
            )


if __name__ == "__main__":
    main()
