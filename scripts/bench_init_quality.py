"""How often an initialisation ends in a poor local optimum, against scikit-learn.

Quality benchmark (no timings). For every seed, one fit with ``n_init=1``
through ``KMeans.fit`` as users call it, on a LocalCluster, with
``init="k-means||"`` and ``init="k-means++"``, and scikit-learn's ``KMeans``
(greedy k-means++, ``n_init=1``) with the same seed number. A fit is a
*poor optimum* when its final inertia exceeds the lowest inertia any fit
reached on that data set by more than ``--margin`` (1% by default).

Data sets, all shipped offline: the three overlapping blobs of
scikit-learn's own KMeans tests (100 x 5, k = 3), iris (k = 3), wine
standardised (k = 3) and digits (k = 10).

Reported per data set and method: poor optima out of the seeds, the rate
with its 95% Wilson interval, and the two-sided p-value of Fisher's exact
test against scikit-learn's count (a large p: no evidence of a difference).

Usage::

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python scripts/bench_init_quality.py --seeds 1000
"""

from __future__ import annotations

import argparse
import math
import warnings
from collections.abc import Callable

import numpy as np
from distributed import Client, LocalCluster
from scipy.stats import fisher_exact
from sklearn.cluster import KMeans as SKLearnKMeans
from sklearn.datasets import load_digits, load_iris, load_wine, make_blobs
from sklearn.exceptions import ConvergenceWarning
from sklearn.preprocessing import StandardScaler

from kmeans_dask import KMeans


def sklearn_test_blobs() -> np.ndarray:
    """The data of scikit-learn's ``sklearn/cluster/tests/test_k_means.py``."""
    centers = np.array(
        [[0.0, 5.0, 0.0, 0.0, 0.0], [1.0, 1.0, 4.0, 0.0, 0.0], [1.0, 0.0, 0.0, 5.0, 1.0]]
    )
    return make_blobs(n_samples=100, centers=centers, cluster_std=1.0, random_state=42)[0]


#: name -> (data, k)
DATA_SETS: dict[str, Callable[[], tuple[np.ndarray, int]]] = {
    "sklearn test blobs": lambda: (sklearn_test_blobs(), 3),
    "iris": lambda: (load_iris().data, 3),
    "wine (standardised)": lambda: (StandardScaler().fit_transform(load_wine().data), 3),
    "digits": lambda: (load_digits().data, 10),
}


def final_inertias(X: np.ndarray, k: int, seeds: range) -> dict[str, np.ndarray]:
    """Final inertia of one fit per seed and method."""
    fits: dict[str, Callable[[int], float]] = {
        "kmeans_dask k-means||": lambda seed: KMeans(k, random_state=seed).fit(X).inertia_,
        "kmeans_dask k-means++": lambda seed: (
            KMeans(k, init="k-means++", random_state=seed).fit(X).inertia_
        ),
        "scikit-learn k-means++": lambda seed: (
            SKLearnKMeans(k, n_init=1, random_state=seed).fit(X).inertia_
        ),
    }
    return {name: np.array([fit(seed) for seed in seeds]) for name, fit in fits.items()}


def wilson_interval(successes: int, trials: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a binomial rate."""
    rate = successes / trials
    centre = (rate + z * z / (2 * trials)) / (1 + z * z / trials)
    half = (z / (1 + z * z / trials)) * math.sqrt(
        rate * (1 - rate) / trials + z * z / (4 * trials * trials)
    )
    return max(0.0, centre - half), min(1.0, centre + half)


def report(data_name: str, inertias: dict[str, np.ndarray], margin: float) -> list[str]:
    best = min(values.min() for values in inertias.values())
    poor = {name: int((values > (1 + margin) * best).sum()) for name, values in inertias.items()}
    n_seeds = len(next(iter(inertias.values())))
    reference = poor["scikit-learn k-means++"]
    lines = []
    for method, count in poor.items():
        low, high = wilson_interval(count, n_seeds)
        p_value = fisher_exact([[count, n_seeds - count], [reference, n_seeds - reference]])[1]
        lines.append(
            f"| {data_name} | {method} | {count}/{n_seeds} | {100 * count / n_seeds:.1f}% "
            f"({100 * low:.1f}-{100 * high:.1f}%) | {p_value:.2f} | {best:.6g} |"
        )
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=500, help="seeds per data set and method")
    parser.add_argument(
        "--margin", type=float, default=0.01, help="poor: inertia above (1 + margin) x best"
    )
    args = parser.parse_args(argv)
    lines = [
        "| data | method | poor optima | rate (95% interval) | p vs scikit-learn | best inertia |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    with (
        LocalCluster(n_workers=1, threads_per_worker=2, processes=False) as cluster,
        Client(cluster),
        warnings.catch_warnings(),
    ):
        warnings.simplefilter("ignore", ConvergenceWarning)
        for name, load in DATA_SETS.items():
            X, k = load()
            lines += report(name, final_inertias(X, k, range(args.seeds)), args.margin)
            print(lines[-1].split("|")[1].strip(), "done", flush=True)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
