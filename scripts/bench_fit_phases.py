"""A whole fit split into its phases: the fixed cost against the iterations.

Fits NumPy blobs (default 1M x 32 float32, k = 64, from the first k rows,
10 iterations with ``tol=0``; ``--max-iter 300`` runs to strict convergence)
on a LocalCluster of one worker with two threads, and times, by wrapping the
fit's own functions: placing the rows (the scatter and the load tasks,
waited for), starting the actors, the data check's pass of its own (where
the tree has one), the Lloyd iterations (``history_``), the final pass and
making ``labels_``. With ``--input dask`` the rows are a Dask array
persisted on the cluster beforehand, in the blocks ``scripts/bench.py``
fits (its whole-fit figure): placing is then the load tasks that wrap the
blocks, and the labels stay on the workers, one task per chunk.
Each phase counts its own time only (starting the actors inside the check's
pass counts as "actors"). The fixed cost is the whole fit less ``n_iter``
times the median iteration, so work moved into the first iteration (the
data check folded into it, the actors started by it) still counts as fixed;
"first extra" is how much longer the first iteration took than the median.
Each source tree given runs in a process of its own (``PYTHONPATH``), trees
taking turns, so they see the same machine load; medians over the repeats.

Usage::

    git worktree add /tmp/before <commit>
    python scripts/bench_fit_phases.py --tree before=/tmp/before --tree after=. --repeats 5
    python scripts/bench_fit_phases.py --tree main=. --input dask --repeats 7
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

PHASES = (
    "placing",
    "actors",
    "check",
    "first extra",
    "iterations",
    "final",
    "labels",
    "fixed",
    "fit",
    "per iteration",
)


def measure(n_samples: int, n_features: int, n_clusters: int, max_iter: int, rows_as: str) -> dict:
    """One fit's phases, in seconds (run inside the tree's process); ``rows_as``
    "numpy" or "dask" (persisted beforehand)."""
    import numpy as np
    from distributed import Client, LocalCluster, wait

    from kmeans_dask import KMeans
    from kmeans_dask._engine import hosts, placement
    from kmeans_dask._fit import cluster_fit, lloyd

    seconds = dict.fromkeys(PHASES, 0.0)
    #: Time spent in phases nested inside the running ones, per level.
    nested: list[float] = []

    def timed(name, function, after=None):
        def wrapper(*args, **kwargs):
            nested.append(0.0)
            start = time.perf_counter()
            try:
                result = function(*args, **kwargs)
                if after is not None:
                    after(result)
            finally:
                spent = time.perf_counter() - start
                inner = nested.pop()
                seconds[name] += spent - inner
                if nested:
                    nested[-1] += spent
            return result

        return wrapper

    def loaded(data):
        wait([c for c in data.chunks if hasattr(c, "status")])

    cluster_fit.distribute = timed("placing", placement.distribute, loaded)
    placement.ChunkHosts = timed("actors", hosts.ChunkHosts)
    placement.DistributedData.check = timed("check", placement.DistributedData.check)
    try:  # the passes have had a module of their own since 2026-12-06
        from kmeans_dask._fit import passes

        passes.final_pass = timed("final", passes.final_pass)
    except ImportError:  # an older tree
        lloyd._final_pass = timed("final", lloyd._final_pass)
    cluster_fit.labels_from = timed("labels", cluster_fit.labels_from)

    rng = np.random.default_rng(0)
    centers = rng.uniform(-2, 2, (n_clusters, n_features))
    noise = rng.normal(size=(n_samples, n_features))
    X = (centers[rng.integers(0, n_clusters, n_samples)] + noise).astype(np.float32)
    with (
        LocalCluster(n_workers=1, threads_per_worker=2, dashboard_address=":0") as cluster,
        Client(cluster) as client,
    ):
        rows = X
        if rows_as == "dask":
            from kmeans_dask.benchmark.data import persisted_blocks

            rows, _blocks = persisted_blocks(client, X, 0, n_clusters)
        model = KMeans(n_clusters, init=X[:n_clusters], n_init=1, max_iter=max_iter, tol=0.0)
        model.fit(rows)  # kernels compiled, worker warm
        for name in seconds:
            seconds[name] = 0.0
        start = time.perf_counter()
        model.fit(rows)
        seconds["fit"] = time.perf_counter() - start
    iterations = [r.seconds for r in model.history_]
    median = statistics.median(iterations)
    seconds["iterations"] = sum(iterations)
    seconds["per iteration"] = median
    seconds["first extra"] = iterations[0] - median
    seconds["fixed"] = seconds["fit"] - len(iterations) * median
    seconds["n_iter"] = model.n_iter_
    seconds["inertia"] = float(model.inertia_)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", action="append", help="NAME=PATH of a source tree; repeat")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--n-samples", type=int, default=1_000_000)
    parser.add_argument("--n-features", type=int, default=32)
    parser.add_argument("-k", "--n-clusters", type=int, default=64)
    parser.add_argument("--max-iter", type=int, default=10)
    parser.add_argument(
        "--input",
        choices=("numpy", "dask"),
        default="numpy",
        help="the rows as a NumPy array, or as a Dask array persisted beforehand (bench.py's fit)",
    )
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    sizes = (args.n_samples, args.n_features, args.n_clusters, args.max_iter)
    if args.one:
        print(json.dumps(measure(*sizes, args.input)))
        return
    trees = [(name, Path(path)) for name, _, path in (t.partition("=") for t in args.tree)]
    found: dict[str, list[dict]] = {name: [] for name, _ in trees}
    for _ in range(args.repeats):
        for name, tree in trees:
            env = {**os.environ, "PYTHONPATH": str(tree.resolve())}
            done = subprocess.run(
                [sys.executable, __file__, "--one", *sys.argv[1:]],
                env=env,
                capture_output=True,
                text=True,
                check=True,
            )
            found[name].append(json.loads(done.stdout.strip().splitlines()[-1]))
    print(
        f"1 worker x 2 threads; {' x '.join(map(str, sizes[:2]))} {args.input} rows, "
        f"k = {sizes[2]}"
    )
    print("| tree | " + " | ".join(f"{p} (ms)" for p in PHASES) + " | fixed / iteration |")
    print("| --- |" + " ---: |" * (len(PHASES) + 1))
    for name, runs in found.items():
        medians = [1e3 * statistics.median(r[p] for r in runs) for p in PHASES]
        in_iterations = statistics.median(r["fixed"] / r["per iteration"] for r in runs)
        cells = " | ".join(f"{m:.1f}" for m in medians)
        print(f"| {name} | {cells} | {in_iterations:.2f} |")
    for name, runs in found.items():
        print(f"{name}: inertia {runs[0]['inertia']!r}, n_iter {runs[0]['n_iter']}")
    print(
        "fixed, each repeat (ms): "
        + "; ".join(
            f"{name} " + ", ".join(f"{1e3 * r['fixed']:.0f}" for r in runs)
            for name, runs in found.items()
        )
    )


if __name__ == "__main__":
    main()
