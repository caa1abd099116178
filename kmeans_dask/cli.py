"""The ``kmeans-dask`` command line."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

import numpy as np

#: Exit status for input the command refuses (bad arguments, bad data).
EXIT_BAD_INPUT = 2
#: Exit status for a failure while running.
EXIT_FAILURE = 1


def _demo(args: argparse.Namespace) -> int:
    from distributed import Client, LocalCluster
    from rich.console import Console
    from rich.table import Table

    from kmeans_dask import KMeans
    from kmeans_dask.datasets import make_blobs

    console = Console()
    console.print(
        f"[bold]kmeans_dask demo[/]: {args.n_samples:,} x {args.n_features} float32 blobs, "
        f"k={args.n_clusters}, on a LocalCluster of {args.workers} worker(s) x "
        f"{args.threads_per_worker} thread(s)"
    )
    started = time.perf_counter()
    with (
        LocalCluster(
            n_workers=args.workers,
            threads_per_worker=args.threads_per_worker,
            host="127.0.0.1",
            dashboard_address="127.0.0.1:8787",
        ) as cluster,
        Client(cluster) as client,
    ):
        console.print(f"dashboard: {client.dashboard_link}")
        X, true_centers = make_blobs(
            args.n_samples,
            args.n_features,
            args.n_clusters,
            cluster_std=args.cluster_std,
            random_state=args.seed,
        )
        model = KMeans(args.n_clusters, random_state=args.seed, verbose=1)
        fit_started = time.perf_counter()
        model.fit(X)
        fit_seconds = time.perf_counter() - fit_started
        sizes = np.bincount(model.labels_.compute(), minlength=args.n_clusters)
    # How far each true blob centre is from its nearest fitted centre.
    gaps = np.sqrt(
        ((true_centers[:, None, :] - model.cluster_centers_[None]) ** 2).sum(-1).min(axis=1)
    )
    per_iteration = np.median([r.seconds for r in model.history_])
    table = Table(title="result")
    table.add_column("quantity")
    table.add_column("value", justify="right")
    for name, value in [
        ("inertia", f"{model.inertia_:.6g}"),
        ("mean squared distance to centre", f"{model.inertia_ / args.n_samples:.4f}"),
        ("iterations", str(model.n_iter_)),
        ("fit time (s, incl. loading and k-means||)", f"{fit_seconds:.2f}"),
        ("median time per iteration (s)", f"{per_iteration:.4f}"),
        ("cluster sizes (min / max)", f"{sizes.min():,} / {sizes.max():,}"),
        ("true centre to nearest fitted centre (max)", f"{gaps.max():.3f}"),
        ("total wall time (s)", f"{time.perf_counter() - started:.2f}"),
    ]:
        table.add_row(name, value)
    console.print(table)
    return 0


def _bench(args: argparse.Namespace) -> int:
    from kmeans_dask.benchmark import run

    return run(args)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``kmeans-dask`` and its subcommands."""
    parser = argparse.ArgumentParser(
        prog="kmeans-dask",
        description="Scalable k-means on Dask.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = commands.add_parser(
        "demo",
        help="fit generated blobs on a LocalCluster, printing progress and results",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    demo.add_argument("--n-samples", type=int, default=1_000_000, help="rows to generate")
    demo.add_argument("--n-features", type=int, default=16, help="columns")
    demo.add_argument("--n-clusters", "-k", type=int, default=32, help="clusters")
    demo.add_argument("--cluster-std", type=float, default=5.0, help="blob standard deviation")
    demo.add_argument("--workers", type=int, default=1, help="LocalCluster worker processes")
    demo.add_argument("--threads-per-worker", type=int, default=2, help="threads per worker")
    demo.add_argument("--seed", type=int, default=0, help="random seed")
    demo.set_defaults(run=_demo)

    from kmeans_dask import benchmark

    bench = commands.add_parser(
        "bench",
        help="benchmark against faiss, scikit-learn, dask-ml (and Spark)",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    benchmark.add_arguments(bench)
    bench.set_defaults(run=_bench)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``kmeans-dask``; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, TypeError, FileNotFoundError) as exc:
        print(f"kmeans-dask: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT


if __name__ == "__main__":
    raise SystemExit(main())
