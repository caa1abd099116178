"""The ``kmeans-dask`` command line.

Subcommands: ``demo``, ``fit``, ``predict``, ``make-data``, ``elbow``,
``tune``, ``info`` and ``bench``. Every option shows its default in ``--help``. Exit status: 0 on
success, 2 when the input is refused (bad arguments, files or data), 1 when
something fails while running (e.g. a scheduler that does not answer).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

#: Exit status for input the command refuses (bad arguments, bad data).
EXIT_BAD_INPUT = 2
#: Exit status for a failure while running.
EXIT_FAILURE = 1


def _print_err(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _open_input(path: str) -> Any:
    """A Zarr path stays a path (KMeans reads it); ``.npy`` is memory-mapped as Dask."""
    if path.endswith(".npy"):
        import dask.array as da

        if not os.path.exists(path):
            raise FileNotFoundError(f"input file {path!r} does not exist")
        return da.from_array(np.load(path, mmap_mode="r"), chunks=(262_144, -1))
    return path


@contextlib.contextmanager
def _client(args: argparse.Namespace) -> Iterator[Any]:
    """Connect to ``--scheduler``, or start a LocalCluster; print the dashboard link."""
    from distributed import Client, LocalCluster

    if args.cluster:
        from kmeans_dask.clusters import from_spec

        handle = from_spec(args.cluster, **_overrides(args.set))
        with handle as client:
            _print_err(f"cluster from {args.cluster}; dashboard: {client.dashboard_link}")
            handle.wait_for_workers(timeout=args.timeout)
            yield client
        return
    if args.scheduler:
        try:
            client = Client(args.scheduler, timeout=args.timeout)
        except OSError as exc:
            raise ConnectionError(
                f"no Dask scheduler answered at {args.scheduler!r} within {args.timeout} s ({exc})"
            ) from exc
        with client:
            _print_err(f"dashboard: {client.dashboard_link}")
            yield client
        return
    with (
        LocalCluster(
            n_workers=args.workers,
            threads_per_worker=args.threads_per_worker,
            host="127.0.0.1",
            dashboard_address="127.0.0.1:8787",
        ) as cluster,
        Client(cluster) as client,
    ):
        _print_err(f"dashboard: {client.dashboard_link}")
        yield client


def _overrides(items: list[str]) -> dict[str, Any]:
    """``["jobs=4", "walltime=01:00:00"]`` as keyword overrides, values read as YAML."""
    import yaml

    overrides = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--set expects KEY=VALUE, got {item!r}")
        parsed = yaml.safe_load(value)
        overrides[key.replace("-", "_")] = value if key == "walltime" else parsed
    return overrides


def _summary(model: Any, seconds: float) -> dict[str, Any]:
    return {
        "n_clusters": int(model.n_clusters),
        "n_features": int(model.n_features_in_),
        "inertia": float(model.inertia_),
        "n_iter": int(model.n_iter_),
        "seconds": round(seconds, 3),
        "history": [
            {
                "iteration": r.iteration,
                "inertia": r.inertia,
                "shift": r.center_shift,
                "seconds": round(r.seconds, 4),
            }
            for r in getattr(model, "history_", [])
        ],
    }


def _fit(args: argparse.Namespace) -> int:
    from kmeans_dask import KMeans

    X = _open_input(args.input)
    model = KMeans(
        args.n_clusters,
        init=args.init,
        n_init=args.n_init,
        max_iter=args.max_iter,
        tol=args.tol,
        random_state=args.random_state,
        backend=args.backend,
        assign=args.assign,
        algorithm=args.algorithm,
        engine=args.engine,
        persist={"auto": None, "yes": True, "no": False}[args.persist],
        verbose=0 if args.json else 1,
    )
    with _client(args):
        started = time.perf_counter()
        model.fit(X, checkpoint=args.checkpoint)
        seconds = time.perf_counter() - started
    if args.output:
        model.save(args.output)
    summary = _summary(model, seconds)
    if args.json:
        print(json.dumps({**summary, "model": args.output}, indent=2))
    else:
        print(
            f"k={model.n_clusters}: inertia {model.inertia_:.6g} after {model.n_iter_} "
            f"iteration(s) in {seconds:.2f} s"
            + (f"; model saved to {args.output}" if args.output else "")
        )
    return 0


def _default_labels_path(input_path: str) -> str:
    stem = input_path.rstrip("/")
    for suffix in (".zarr", ".npy"):
        if stem.endswith(suffix):
            stem = stem[: -len(suffix)]
    return f"{stem}.labels.zarr"


def _predict(args: argparse.Namespace) -> int:
    import kmeans_dask

    model = kmeans_dask.load(args.model)
    X = _open_input(args.input)
    output = args.output or _default_labels_path(args.input)
    if os.path.exists(output) and not args.overwrite:
        raise FileExistsError(f"{output!r} exists; pass --overwrite to replace it")
    with _client(args):
        started = time.perf_counter()
        labels = model.predict(X)
        if output.endswith(".npy"):
            np.save(output, np.asarray(labels.compute() if hasattr(labels, "compute") else labels))
        else:
            import dask.array as da

            da.asarray(labels).to_zarr(output, overwrite=args.overwrite)
        seconds = time.perf_counter() - started
    result = {"labels": output, "n_samples": int(labels.shape[0]), "seconds": round(seconds, 3)}
    print(json.dumps(result) if args.json else f"wrote {result['n_samples']:,} labels to {output}")
    return 0


def _make_data(args: argparse.Namespace) -> int:
    from kmeans_dask.datasets import write_blobs_zarr

    started = time.perf_counter()
    write_blobs_zarr(
        args.output,
        args.n_samples,
        args.n_features,
        args.n_clusters,
        chunk_rows=args.chunk_rows,
        cluster_std=args.cluster_std,
        dtype=np.dtype(args.dtype),
        random_state=args.seed,
        overwrite=args.overwrite,
    )
    size = args.n_samples * args.n_features * np.dtype(args.dtype).itemsize
    print(
        f"wrote {args.n_samples:,} x {args.n_features} {args.dtype} rows ({size / 2**20:,.1f} MiB "
        f"uncompressed) to {args.output} in {time.perf_counter() - started:.2f} s"
    )
    return 0


def _read_sample(path: str, n_rows: int, seed: int) -> np.ndarray:
    """Up to ``n_rows`` random rows (in storage order) of a Zarr array or .npy file."""
    if path.endswith(".npy"):
        if not os.path.exists(path):
            raise FileNotFoundError(f"input file {path!r} does not exist")
        array = np.load(path, mmap_mode="r")
    else:
        from kmeans_dask._inputs import open_zarr

        array = open_zarr(path)
    if array.ndim != 2:
        raise ValueError(f"{path!r} holds a {array.ndim}-D array; expected rows x features")
    if array.shape[0] <= n_rows:
        return np.asarray(array[:])
    rows = np.sort(np.random.default_rng(seed).choice(array.shape[0], n_rows, replace=False))
    return np.asarray(array[rows] if path.endswith(".npy") else array.oindex[rows, :])


def _tune(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from kmeans_dask.tuning import as_rows, tune

    sample = _read_sample(args.input, args.sample, args.seed)
    if sample.dtype.kind != "f":
        sample = sample.astype(np.float64)
    results, best = tune(
        sample,
        args.n_clusters,
        iterations=args.iterations,
        max_inertia_gap=args.max_gap,
        random_state=args.seed,
    )
    if args.json:
        print(json.dumps({"results": as_rows(results), "recommended": as_rows([best])[0]}))
        return 0
    table = Table(
        title=f"{len(sample):,} sampled rows, k={args.n_clusters}, "
        f"{args.iterations} Lloyd iterations from the same k-means++ centres"
    )
    for column in ("assign", "options", "s/iter", "speed-up", "inertia gap", "recall"):
        table.add_column(column, justify="left" if column in ("assign", "options") else "right")
    for r in results:
        table.add_row(
            r.assign,
            str(r.assign_options or ""),
            f"{r.seconds_per_iteration:.4f}",
            f"{r.speedup:.2f}x",
            f"{r.inertia_gap:+.3%}",
            f"{r.recall:.4f}",
        )
    Console().print(table)
    options = f", assign_options={best.assign_options}" if best.assign_options else ""
    print(
        f"recommended (fastest within {args.max_gap:.2%} inertia): "
        f"KMeans(..., assign={best.assign!r}{options})"
    )
    return 0


def _info(args: argparse.Namespace) -> int:
    from kmeans_dask._model_io import load_model

    stored = load_model(args.model)
    info = {
        "file": args.model,
        "format_version": stored.format_version,
        "written_by": stored.library_version,
        "params": {
            k: (v.tolist() if isinstance(v, np.ndarray) else v)
            for k, v in stored.params.items()
            if k != "init" or isinstance(v, str)
        },
        "attributes": stored.attributes,
        "arrays": {
            k: {"shape": list(v.shape), "dtype": str(v.dtype)} for k, v in stored.arrays.items()
        },
    }
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        for key, value in info.items():
            print(f"{key}: {value}")
    return 0


def _demo(args: argparse.Namespace) -> int:
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
    with _client(args):
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


def _parse_ks(text: str) -> list[int]:
    """``--ks 2,4,8,16`` -> [2, 4, 8, 16]."""
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers such as 2,4,8,16, got {text!r}"
        ) from None


def _elbow(args: argparse.Namespace) -> int:
    from kmeans_dask.elbow import elbow

    if args.png:  # refuse before fitting anything
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise ValueError("--png needs matplotlib: pip install matplotlib") from None
    X = _open_input(args.input)
    with _client(args):
        result = elbow(
            X,
            args.ks,
            random_state=args.random_state,
            scale=args.scale,
            init=args.init,
            max_iter=args.max_iter,
            verbose=0,
        )
    if args.png:
        from kmeans_dask.plotting import plot_elbow

        plot_elbow(result).figure.savefig(args.png, dpi=120)
    if args.json:
        print(
            json.dumps(
                {
                    "suggested_k": result.suggested_k,
                    "scale": result.scale,
                    "png": args.png,
                    "results": result.to_rows(),
                },
                indent=2,
            )
        )
        return 0
    for row in result.to_rows():
        mark = "  <- elbow" if row["suggested"] else ""
        print(f"k={row['k']:>5}  inertia {row['inertia']:.6g}  {row['seconds']:.2f} s{mark}")
    print(
        f"suggested k: {result.suggested_k}"
        if result.suggested_k is not None
        else "no elbow found (try more or wider --ks)"
    )
    if args.png:
        print(f"plot written to {args.png}")
    return 0


def _add_cluster_options(parser: argparse.ArgumentParser, workers: int, threads: int) -> None:
    group = parser.add_argument_group("cluster")
    where = group.add_mutually_exclusive_group()
    where.add_argument(
        "--cluster", default=None, help="cluster spec YAML (cluster_specs/: local, slurm, pbs...)"
    )
    where.add_argument(
        "--scheduler", default=None, help="address of a running Dask scheduler (tcp://host:port)"
    )
    group.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a key of the --cluster spec (cores, memory, jobs, walltime, ...); repeat",
    )
    group.add_argument(
        "--timeout",
        type=float,
        default=10.0,
        help="seconds to wait for --scheduler to answer, or for --cluster workers to start",
    )
    group.add_argument("--workers", type=int, default=workers, help="LocalCluster workers")
    group.add_argument(
        "--threads-per-worker", type=int, default=threads, help="threads per LocalCluster worker"
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``kmeans-dask`` and its subcommands."""
    from kmeans_dask import benchmark
    from kmeans_dask._validation import INIT_METHODS
    from kmeans_dask.backends import ALGORITHMS, ASSIGN_MODES, BACKEND_NAMES, ENGINES

    formatter = argparse.ArgumentDefaultsHelpFormatter
    parser = argparse.ArgumentParser(
        prog="kmeans-dask", description="Scalable k-means on Dask.", formatter_class=formatter
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    fit = commands.add_parser(
        "fit", help="fit a model on a Zarr array or .npy file", formatter_class=formatter
    )
    fit.add_argument("input", help="Zarr array path/URL or .npy file, rows x features")
    fit.add_argument("-k", "--n-clusters", type=int, required=True, help="number of clusters")
    fit.add_argument("--init", default="k-means||", choices=INIT_METHODS, help="initialisation")
    fit.add_argument("--n-init", type=int, default=1, help="initialisations; best is kept")
    fit.add_argument("--max-iter", type=int, default=300, help="Lloyd iterations per run")
    fit.add_argument("--tol", type=float, default=1e-4, help="relative tolerance (scikit-learn's)")
    fit.add_argument("--random-state", type=int, default=0, help="seed")
    fit.add_argument("--backend", default="auto", choices=BACKEND_NAMES, help="assignment backend")
    fit.add_argument(
        "--assign", default="exact", choices=ASSIGN_MODES, help="exact or approximate (large k)"
    )
    fit.add_argument(
        "--algorithm",
        default="auto",
        choices=ALGORITHMS,
        help="'hamerly' skips rows whose centre cannot change; 'lloyd' searches every row",
    )
    fit.add_argument(
        "--engine",
        default="auto",
        choices=ENGINES,
        help="passes over the data through per-worker actors (low latency) or tasks (task stream)",
    )
    fit.add_argument(
        "--persist",
        default="auto",
        choices=("auto", "yes", "no"),
        help="keep the data in worker memory; 'no' streams it from Zarr every pass",
    )
    fit.add_argument(
        "--checkpoint", default=None, help="checkpoint file: written every iteration, resumed from"
    )
    fit.add_argument("-o", "--output", default=None, help="write the model to this .npz file")
    fit.add_argument("--json", action="store_true", help="print a JSON summary only")
    _add_cluster_options(fit, workers=1, threads=2)
    fit.set_defaults(run=_fit)

    predict = commands.add_parser(
        "predict", help="label the rows of an input with a saved model", formatter_class=formatter
    )
    predict.add_argument("model", help="model file written by `fit --output`")
    predict.add_argument("input", help="Zarr array path/URL or .npy file")
    predict.add_argument(
        "-o",
        "--output",
        default=None,
        help="labels file, .zarr or .npy (default: <input>.labels.zarr next to the input)",
    )
    predict.add_argument("--overwrite", action="store_true", help="replace an existing output")
    predict.add_argument("--json", action="store_true", help="print a JSON summary only")
    _add_cluster_options(predict, workers=1, threads=2)
    predict.set_defaults(run=_predict)

    make_data = commands.add_parser(
        "make-data",
        help="write synthetic blobs to a Zarr array, chunk by chunk",
        formatter_class=formatter,
    )
    make_data.add_argument("output", help="Zarr array path to create")
    make_data.add_argument("-n", "--n-samples", type=int, default=1_000_000, help="rows")
    make_data.add_argument("-d", "--n-features", type=int, default=32, help="columns")
    make_data.add_argument("-k", "--n-clusters", type=int, default=64, help="blobs")
    make_data.add_argument("--chunk-rows", type=int, default=250_000, help="rows per Zarr chunk")
    make_data.add_argument(
        "--cluster-std", type=float, default=1.0, help="blob standard deviation"
    )
    make_data.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    make_data.add_argument("--seed", type=int, default=0, help="random seed")
    make_data.add_argument("--overwrite", action="store_true", help="replace an existing array")
    make_data.set_defaults(run=_make_data)

    tune = commands.add_parser(
        "tune",
        help="measure exact vs approximate assignment on a sample and recommend one",
        formatter_class=formatter,
    )
    tune.add_argument("input", help="Zarr array path/URL or .npy file")
    tune.add_argument("-k", "--n-clusters", type=int, required=True, help="number of clusters")
    tune.add_argument("--sample", type=int, default=100_000, help="rows to sample")
    tune.add_argument("--iterations", type=int, default=5, help="Lloyd iterations per setting")
    tune.add_argument(
        "--max-gap", type=float, default=0.001, help="largest acceptable relative inertia gap"
    )
    tune.add_argument("--seed", type=int, default=0, help="random seed")
    tune.add_argument("--json", action="store_true", help="print JSON")
    tune.set_defaults(run=_tune)

    elbow_cmd = commands.add_parser(
        "elbow",
        help="fit several k on the same data and suggest one (kneedle elbow)",
        formatter_class=formatter,
    )
    elbow_cmd.add_argument("input", help="Zarr array path/URL or .npy file, rows x features")
    elbow_cmd.add_argument(
        "--ks", type=_parse_ks, default=[2, 4, 8, 16, 32], help="comma-separated k to fit"
    )
    elbow_cmd.add_argument("--png", default=None, help="write the elbow plot to this PNG")
    elbow_cmd.add_argument(
        "--scale",
        default="log",
        choices=("log", "linear"),
        help="inertia scale on which the elbow is sought",
    )
    elbow_cmd.add_argument("--init", default="k-means||", choices=INIT_METHODS, help="init")
    elbow_cmd.add_argument("--max-iter", type=int, default=300, help="Lloyd iterations per fit")
    elbow_cmd.add_argument("--random-state", type=int, default=0, help="seed of every fit")
    elbow_cmd.add_argument("--json", action="store_true", help="print JSON only")
    _add_cluster_options(elbow_cmd, workers=1, threads=2)
    elbow_cmd.set_defaults(run=_elbow)

    info = commands.add_parser("info", help="show a saved model", formatter_class=formatter)
    info.add_argument("model", help="model file")
    info.add_argument("--json", action="store_true", help="print JSON")
    info.set_defaults(run=_info)

    demo = commands.add_parser(
        "demo",
        help="fit generated blobs on a LocalCluster, printing progress and results",
        formatter_class=formatter,
    )
    demo.add_argument("--n-samples", type=int, default=1_000_000, help="rows to generate")
    demo.add_argument("--n-features", type=int, default=16, help="columns")
    demo.add_argument("--n-clusters", "-k", type=int, default=32, help="clusters")
    demo.add_argument("--cluster-std", type=float, default=5.0, help="blob standard deviation")
    demo.add_argument("--seed", type=int, default=0, help="random seed")
    _add_cluster_options(demo, workers=1, threads=2)
    demo.set_defaults(run=_demo)

    bench = commands.add_parser(
        "bench",
        help="benchmark against faiss, scikit-learn, dask-ml (and Spark)",
        formatter_class=formatter,
    )
    benchmark.add_arguments(bench)
    bench.set_defaults(run=_bench)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``kmeans-dask``; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, TypeError, FileNotFoundError, FileExistsError) as exc:
        _print_err(f"kmeans-dask {args.command}: error: {exc}")
        return EXIT_BAD_INPUT
    except (ConnectionError, OSError, TimeoutError) as exc:
        _print_err(f"kmeans-dask {args.command}: failed: {exc}")
        return EXIT_FAILURE


if __name__ == "__main__":
    raise SystemExit(main())
