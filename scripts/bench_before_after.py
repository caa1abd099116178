"""Two versions of the package, side by side in one run, through ``KMeans.fit``.

For a change that must not cost speed (a refactoring), this times the same
fits with the package imported from two source trees, alternating between
them round after round so that both see the same machine state:

    git worktree add /tmp/before <commit>
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE \\
        python scripts/bench_before_after.py --before /tmp/before --rounds 5

Each fit runs in a fresh process on a LocalCluster of one worker with two
threads, from the same initial centres, for a fixed number of iterations
(``tol=0``), after one untimed round that fills each tree's Numba cache;
the per-iteration time is the median of the fit's
``history_`` after the first iteration (which includes compilation and
cache effects), the whole fit is timed around ``fit``. Both trees use the
interpreter and the packages of this environment.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

SHAPES = {
    # name: (n_samples, n_features, n_clusters, max_iter)
    "1M x 32, k = 64": (1_000_000, 32, 64, 10),
    "200k x 128, k = 2048": (200_000, 128, 2048, 5),
}

_FIT = r"""
import json, sys, time
import numpy as np
from distributed import Client, LocalCluster
from kmeans_dask import KMeans

n, d, k, max_iter = (int(v) for v in sys.argv[1:5])
rng = np.random.default_rng(0)
centers = rng.normal(scale=4.0, size=(k, d))
X = (centers[rng.integers(0, k, n)] + rng.normal(size=(n, d))).astype(np.float32)
init = X[rng.choice(n, k, replace=False)]
if __name__ == "__main__":
    with LocalCluster(n_workers=1, threads_per_worker=2, dashboard_address=":0") as cluster, \
            Client(cluster):
        KMeans(k, init=init, max_iter=2, tol=0).fit(X)  # warm: compile, start the workers
        start = time.perf_counter()
        model = KMeans(k, init=init, max_iter=max_iter, tol=0).fit(X)
        fit = time.perf_counter() - start
    per_iteration = [record.seconds for record in model.history_[1:]]
    print(json.dumps({"fit": fit, "iteration": per_iteration, "inertia": model.inertia_}))
"""


def _run(tree: Path, shape: tuple[int, int, int, int]) -> dict:
    env = dict(os.environ, PYTHONPATH=str(tree))
    result = subprocess.run(
        [sys.executable, "-c", _FIT, *map(str, shape)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        cwd=tree,
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=Path, required=True, help="source tree of the old code")
    parser.add_argument("--after", type=Path, default=REPO, help="source tree of the new code")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--shapes", nargs="*", default=list(SHAPES), choices=list(SHAPES))
    args = parser.parse_args()
    trees = {"before": args.before.resolve(), "after": args.after.resolve()}
    print("| shape | version | per iteration, median (s) | whole fit, median (s) | inertia |")
    print("|---|---|---|---|---|")
    for name in args.shapes:
        runs: dict[str, list[dict]] = {label: [] for label in trees}
        for tree in trees.values():  # fills each tree's Numba cache: not timed
            _run(tree, SHAPES[name])
        for round_index in range(args.rounds):
            order = list(trees) if round_index % 2 == 0 else list(trees)[::-1]
            for label in order:
                runs[label].append(_run(trees[label], SHAPES[name]))
        medians = {}
        for label, results in runs.items():
            iteration = statistics.median(t for r in results for t in r["iteration"])
            fit = statistics.median(r["fit"] for r in results)
            medians[label] = (iteration, fit)
            print(
                f"| {name} | {label} | {iteration:.4f} | {fit:.3f} | {results[0]['inertia']:.6g} |"
            )
        ratio_iteration = medians["after"][0] / medians["before"][0]
        ratio_fit = medians["after"][1] / medians["before"][1]
        print(f"| {name} | after / before | {ratio_iteration:.3f} | {ratio_fit:.3f} | |")


if __name__ == "__main__":
    main()
