"""How often each criterion of ``kmeans_dask.elbow.elbow`` finds the true number of clusters.

Quality benchmark (no timings). For each data set whose k is known, one
:func:`kmeans_dask.elbow.elbow` sweep over ``ks = 1 .. 2 k_true + 2`` (at
least 1 .. 12) on a LocalCluster records the ``k`` each criterion picks
(elbow = kneedle on log inertia, the highest silhouette on a seeded sample,
the highest Calinski-Harabasz, the lowest Davies-Bouldin) and the suggested
``k``. Two more elbow rules are scored on the same inertias for comparison:
the kneedle on linear inertia, and the ``kneed`` package's ``KneeLocator``
(convex, decreasing, S=1, offline) on log inertia (when kneed is installed).

Data sets, all shipped offline: ``make_blobs`` in several shapes (seeds
0 .. ``--seeds - 1`` each), iris (3), wine standardised (3) and digits (10).

Prints one line per data set and a Markdown table: for each criterion, how
often it is right overall and per family, plus the tie-break orders of the
majority vote (``suggest_k``) scored on the same picks.

Usage::

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python scripts/bench_choose_k.py --seeds 8
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
import warnings
from collections.abc import Callable

import numpy as np
from distributed import Client, LocalCluster
from sklearn.datasets import load_digits, load_iris, load_wine, make_blobs
from sklearn.exceptions import ConvergenceWarning
from sklearn.preprocessing import StandardScaler

from kmeans_dask import elbow as elbow_module
from kmeans_dask.elbow import elbow, knee_point

#: (centres, features, cluster_std, rows) of the blob families.
BLOB_SHAPES = [
    (3, 2, 1.0, 1500),
    (4, 5, 1.5, 2000),
    (5, 10, 2.0, 2000),
    (6, 2, 1.5, 3000),
    (8, 8, 1.0, 3000),
    (10, 16, 2.5, 4000),
]


def data_sets(seeds: int) -> list[tuple[str, str, Callable[[], np.ndarray], int]]:
    """(family, name, load, true k) for every data set."""
    sets = [
        (
            f"blobs k={k} d={d} std={std}",
            f"blobs k={k} d={d} std={std} seed={seed}",
            lambda k=k, d=d, std=std, n=n, seed=seed: make_blobs(
                n, n_features=d, centers=k, cluster_std=std, random_state=seed
            )[0],
            k,
        )
        for (k, d, std, n), seed in itertools.product(BLOB_SHAPES, range(seeds))
    ]
    sets += [
        ("iris", "iris", lambda: load_iris().data, 3),
        (
            "wine (standardised)",
            "wine",
            lambda: StandardScaler().fit_transform(load_wine().data),
            3,
        ),
        ("digits", "digits", lambda: load_digits().data, 10),
    ]
    return sets


def kneed_pick(ks: list[int], inertias: list[float]) -> int | None:
    """kneed's KneeLocator on log inertia, or None when kneed is missing or finds none."""
    try:
        from kneed import KneeLocator
    except ImportError:
        return None
    knee = KneeLocator(ks, np.log(inertias), curve="convex", direction="decreasing").knee
    return None if knee is None else int(knee)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=8, help="seeds per blob shape")
    parser.add_argument("--json", help="write every data set's picks to this JSON file")
    args = parser.parse_args()
    warnings.simplefilter("ignore", ConvergenceWarning)
    rows = []
    started = time.perf_counter()
    cluster = LocalCluster(n_workers=1, threads_per_worker=2, processes=False)
    with cluster, Client(cluster):
        for family, name, load, true_k in data_sets(args.seeds):
            X = load()
            ks = list(range(1, max(12, 2 * true_k + 3)))
            result = elbow(X, ks, random_state=0)
            picks = dict(result.picks)
            linear = knee_point(ks, result.inertias, "linear")
            picks["elbow (linear)"] = None if linear is None else ks[linear]
            picks["kneed (log)"] = kneed_pick(ks, result.inertias)
            picks["suggested"] = result.suggested_k
            rows.append({"family": family, "name": name, "true_k": true_k, "picks": picks})
            print(f"{name:40s} true {true_k:2d}  {picks}  ({result.reason})", flush=True)
    print(f"\n{len(rows)} data sets in {time.perf_counter() - started:.0f} s\n")
    if args.json:
        with open(args.json, "w") as file:
            json.dump(rows, file, indent=1)
    report(rows)


def report(rows: list[dict]) -> None:
    """Markdown: per criterion, right picks overall and per family; tie-break orders."""
    criteria = list(rows[0]["picks"])
    families = list(dict.fromkeys(row["family"] for row in rows))
    print("| criterion | all | " + " | ".join(families) + " |")
    print("|---" * (len(families) + 2) + "|")
    for criterion in criteria:
        cells = []
        for group in [None, *families]:
            chosen = [r for r in rows if group is None or r["family"] == group]
            right = sum(r["picks"][criterion] == r["true_k"] for r in chosen)
            cells.append(f"{right}/{len(chosen)}")
        print(f"| {criterion} | " + " | ".join(cells) + " |")
    print("\nMajority vote of the four criteria, by tie-break order:")
    names = list(elbow_module.CRITERIA)
    for order in itertools.permutations(names):
        elbow_module.CRITERIA = {name: name for name in order}
        right = sum(
            elbow_module.suggest_k({n: r["picks"][n] for n in names})[0] == r["true_k"]
            for r in rows
        )
        print(f"  {' > '.join(order)}: {right}/{len(rows)}")


if __name__ == "__main__":
    main()
