"""The ``kmeans-dask`` command line.

Subcommands: ``demo``, ``compile``, ``fit``, ``predict``, ``make-data``, ``elbow``,
``tune``, ``segment``, ``info`` and ``bench`` (the parser: :mod:`kmeans_dask._cli_parser`).
Exit status: 0 on success, 2 when the input is refused (bad arguments, files
or data: one line names the argument, what was expected and what was seen),
1 when something fails while running (e.g. a scheduler that does not answer
or is lost), 130 when interrupted (Ctrl-C: one line says where it stopped,
what was saved and how to go on). Outputs are written whole or not at all.
"""

from __future__ import annotations

import multiprocessing
import signal

if getattr(multiprocessing.current_process(), "_inheriting", False):
    # A worker process of this command's cluster, importing the command as its
    # main module while it starts (multiprocessing's own test for that case).
    # Ctrl-C at a terminal reaches the whole process group; only the command
    # itself takes it, and closes its cluster in order.
    signal.signal(signal.SIGINT, signal.SIG_IGN)

import argparse
import contextlib
import json
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from multiprocessing import resource_tracker
from typing import Any

import numpy as np

from kmeans_dask._cli_parser import (
    EXIT_BAD_INPUT,
    PERSIST_CHOICES,
    ArgumentsRefused,
    build_parser,
    estimator_defaults,
    print_error,
)
from kmeans_dask._fit.interrupts import deferred_interrupts

#: Exit status for a failure while running.
EXIT_FAILURE = 1
#: Exit status after Ctrl-C (128 + SIGINT), as shells report it.
EXIT_INTERRUPTED = 130

#: Errors that mean the command's input was refused (exit status 2).
BAD_INPUT_ERRORS = (
    ValueError,
    TypeError,
    FileNotFoundError,
    FileExistsError,
    IsADirectoryError,
    NotADirectoryError,
    PermissionError,
)


def _open_input(path: str, columns: list[str] | None = None) -> Any:
    """A Zarr path stays a path (KMeans reads it); ``.npy`` is memory-mapped as Dask.

    A CSV or Parquet table (file, directory of parts, glob) is read as a
    Dask DataFrame of ``columns``. Each is opened here, so that a missing or
    unreadable input is refused before a cluster starts.
    """
    from kmeans_dask._io.tables import read_table, table_format

    if table_format(path) is not None:
        return read_table(path, columns)
    if columns is not None:
        raise ValueError(
            f"--columns selects columns of a CSV or Parquet table, but {path!r} is not one"
        )
    if not path.endswith(".npy"):
        from kmeans_dask._io.inputs import open_zarr

        open_zarr(path)
        return path
    import dask.array as da

    if not os.path.exists(path):
        raise FileNotFoundError(f"input file {path!r} does not exist")
    if not os.path.isfile(path):
        raise IsADirectoryError(f"input {path!r} is not a regular file; expected a .npy file")
    from kmeans_dask._io.inputs import NpyFile

    try:
        array = NpyFile(path)
    except ValueError as exc:
        raise ValueError(f"input {path!r} is not a readable .npy file ({exc})") from None
    # Each task reads its rows from the file: the graph holds the path, not the data.
    return da.from_array(array, chunks=(262_144, -1) if array.ndim == 2 else -1)


def _as_array(X: Any) -> Any:
    """A table's numbers as a Dask array (its row count computed); anything else as it is."""
    from kmeans_dask._io.tables import is_dataframe, table_as_array

    return table_as_array(X) if is_dataframe(X) else X


@contextlib.contextmanager
def _interrupts_held() -> Iterator[None]:
    """Hold Ctrl-C while a cluster starts or closes, and raise it afterwards.

    A cluster interrupted half-way through starting cannot be closed (its
    workers' states are undefined), and one interrupted half-way through
    closing leaves processes behind; both end in tracebacks at exit. The
    signal is blocked, not caught: threads started meanwhile (the cluster's
    event loop) inherit the block, and so do the worker processes they
    start, across ``exec``: a terminal's Ctrl-C reaches the whole process
    group, and a worker caught importing Python would die with a fatal
    error. When the block is lifted, a Ctrl-C that came meanwhile is
    delivered here.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    # Started first: starting it later would lift the block in the thread
    # that does (it blocks SIGINT while it spawns, then unblocks).
    resource_tracker.ensure_running()
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


@contextlib.contextmanager
def _opened(make: Callable[[], Any]) -> Iterator[Any]:
    """``with make() as value``, yielding ``(make(), value)``; Ctrl-C held meanwhile."""
    with _interrupts_held():
        manager = make()
        value = manager.__enter__()
    try:
        yield manager, value
    except BaseException:
        with _interrupts_held():
            if not manager.__exit__(*sys.exc_info()):
                raise
    else:
        with _interrupts_held():
            manager.__exit__(None, None, None)


@contextlib.contextmanager
def _client(args: argparse.Namespace) -> Iterator[Any]:
    """Connect to ``--scheduler``, or start a cluster; print the dashboard link."""
    from distributed import Client, LocalCluster

    if args.cluster:
        from kmeans_dask.clusters import from_spec

        overrides = _overrides(args.set)
        with _opened(lambda: from_spec(args.cluster, **overrides)) as (handle, client):
            print_error(f"cluster from {args.cluster}; dashboard: {client.dashboard_link}")
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
        with _opened(lambda: client):
            print_error(f"dashboard: {client.dashboard_link}")
            yield client
        return
    with (
        _opened(
            lambda: LocalCluster(
                n_workers=args.workers,
                threads_per_worker=args.threads_per_worker,
                host="127.0.0.1",
                dashboard_address="127.0.0.1:8787",
            )
        ) as (cluster, _),
        _opened(lambda: Client(cluster)) as (client, _),
    ):
        print_error(f"dashboard: {client.dashboard_link}")
        yield client


def _overrides(items: list[str]) -> dict[str, Any]:
    """``["jobs=4", "walltime=01:00:00"]`` as keyword overrides, values read as YAML."""
    import yaml

    overrides = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--set expects KEY=VALUE, got {item!r}")
        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError as exc:
            raise ValueError(f"--set {item!r}: the value is not valid YAML ({exc})") from None
        overrides[key.replace("-", "_")] = value if key == "walltime" else parsed
    return overrides


def _refuse_overlap(output: str | None, what: str, *sources: tuple[str, str]) -> None:
    """Refuse an output that would write over (or inside) one of ``sources``."""
    from kmeans_dask._io.output_paths import same_or_nested

    for source, name in sources:
        if output is not None and source is not None and same_or_nested(output, source):
            raise ValueError(
                f"{what} {output!r} is the {name} {source!r} (or inside it, or it inside "
                f"{what}): writing it would destroy the {name}; choose another path"
            )


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


def _estimator(args: argparse.Namespace) -> Any:
    """The KMeans that ``fit``'s options describe, its parameters checked."""
    from kmeans_dask import KMeans
    from kmeans_dask._fit.validation import validate_params

    params = {name: getattr(args, name) for name in estimator_defaults() if name != "verbose"}
    params["persist"] = PERSIST_CHOICES[args.persist]
    if args.init.endswith(".npy"):
        if not os.path.isfile(args.init):
            raise FileNotFoundError(f"--init {args.init!r}: no such .npy file of centres")
        params["init"] = np.load(args.init, allow_pickle=False)
    model = KMeans(**params, verbose=0 if args.json or args.quiet else 1)
    validate_params(model.get_params())
    return model


def _fit(args: argparse.Namespace) -> int:
    from kmeans_dask._io.output_paths import check_writable

    model = _estimator(args)
    for path, what in ((args.output, "--output"), (args.checkpoint, "--checkpoint")):
        if path is not None:
            check_writable(path, what)
    _refuse_overlap(args.output, "--output", (args.input, "input"))
    _refuse_overlap(
        args.checkpoint, "--checkpoint", (args.input, "input"), (args.output, "--output")
    )
    X = _open_input(args.input, args.columns)
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


def _labels_output(args: argparse.Namespace) -> str:
    return args.output or _default_labels_path(args.input)


def _load_model(path: str) -> Any:
    """A model file (``KMeans.save``) or a pipeline file (``segment --save-pipeline``)."""
    import kmeans_dask
    from kmeans_dask._io.output_paths import check_readable_file
    from kmeans_dask._tables.pipeline_files import is_pipeline_file

    check_readable_file(path, "model file")
    if os.path.isfile(path) and is_pipeline_file(path):
        from kmeans_dask.preprocessing import load_pipeline

        return load_pipeline(path)
    return kmeans_dask.load(path)


def _predict(args: argparse.Namespace) -> int:
    from kmeans_dask._io.tables import output_format, table_format

    output = _labels_output(args)
    _refuse_overlap(output, "--output", (args.input, "input"), (args.model, "model"))
    model = _load_model(args.model)
    X = _open_input(args.input, args.columns)
    table_output = output.lower().endswith((".csv", ".parquet", ".pq", ".parq"))
    if table_output:
        output_format(output, "--output")
        if table_format(args.input) is None:
            raise ValueError(
                f"--output {output!r} is a table, but the input {args.input!r} is not: write "
                "labels of an array to .zarr or .npy"
            )
        _refuse_existing(output, "--output", args.overwrite)
    started = time.perf_counter()
    if table_output:
        with _client(args):
            n_samples = _write_labelled(args, model, output)
    else:
        from kmeans_dask._io.output_paths import written_whole

        as_npy = output.endswith(".npy")
        with (
            written_whole(output, "--output", overwrite=args.overwrite, store=not as_npy) as part,
            _client(args),
        ):
            n_samples = _write_labels(model, X, part, as_npy)
    seconds = time.perf_counter() - started
    result = {"labels": output, "n_samples": n_samples, "seconds": round(seconds, 3)}
    print(json.dumps(result) if args.json else f"wrote {result['n_samples']:,} labels to {output}")
    return 0


def _write_labels(model: Any, X: Any, path: str, as_npy: bool) -> int:
    """Labels of every row, to a .npy file or a Zarr array at ``path``."""
    from kmeans_dask._fit.progress import StepProgress, persist_with_progress

    labels = model.predict(X if hasattr(model, "steps") else _as_array(X))
    if not hasattr(labels, "dask"):  # a pipeline given a pandas table labels it at once
        labels = np.asarray(labels)
    else:
        with StepProgress("labelling", None, "blocks", min_interval=2.0) as steps:
            labels = persist_with_progress(labels, steps)
    if as_npy:
        with open(path, "wb") as handle:
            np.save(handle, np.asarray(labels))
    else:
        import dask.array as da

        da.asarray(labels).to_zarr(path)
    return int(labels.shape[0])


def _write_labelled(args: argparse.Namespace, model: Any, output: str) -> int:
    """The whole input table (every column) with a ``segment`` column, as CSV or Parquet."""
    from kmeans_dask._fit.progress import StepProgress
    from kmeans_dask._io.tables import read_table, write_table
    from kmeans_dask.segmentation import label_table

    table = read_table(args.input)
    features = args.columns
    if features is None and not hasattr(model, "steps") and hasattr(model, "feature_names_in_"):
        features = list(model.feature_names_in_)
    labelled = label_table(table, model, features=features)
    with StepProgress("labelling", 1, "tables") as steps:
        write_table(labelled, output, overwrite=args.overwrite)
        steps.advance(f"written to {output}")
    return len(table)


def _refuse_existing(path: str | None, what: str, overwrite: bool) -> None:
    """Refuse, before any work, an output that exists (unless --overwrite) or cannot be written."""
    from kmeans_dask._io.output_paths import check_writable

    if path is None:
        return
    if os.path.lexists(path) and not overwrite:
        raise FileExistsError(f"{what} {path!r} exists; pass --overwrite to replace it")
    check_writable(path, what, directory_ok=True)


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
        progress=True,
    )
    size = args.n_samples * args.n_features * np.dtype(args.dtype).itemsize
    print(
        f"wrote {args.n_samples:,} x {args.n_features} {args.dtype} rows ({size / 2**20:,.1f} MiB "
        f"uncompressed) to {args.output} in {time.perf_counter() - started:.2f} s"
    )
    return 0


def _read_sample(
    path: str, n_rows: int, seed: int, columns: list[str] | None = None
) -> np.ndarray:
    """Up to ``n_rows`` random rows (in storage order) of a Zarr array, .npy file or table."""
    from kmeans_dask._io.tables import table_format

    if path.endswith(".npy") or table_format(path) is not None:
        array = _as_array(_open_input(path, columns))
    else:
        from kmeans_dask._io.inputs import open_zarr

        array = open_zarr(path)
    if array.ndim != 2:
        raise ValueError(f"{path!r} holds a {array.ndim}-D array; expected rows x features")
    if array.dtype.kind not in "biuf":
        raise TypeError(f"{path!r} holds {array.dtype} values; expected real numbers")
    if array.shape[0] <= n_rows:
        sample = np.asarray(array[:])
    else:
        rows = np.sort(np.random.default_rng(seed).choice(array.shape[0], n_rows, replace=False))
        sample = np.asarray(array[rows] if hasattr(array, "dask") else array.oindex[rows, :])
    if not np.isfinite(sample).all():
        raise ValueError(f"the sample of {path!r} holds NaN or infinite values")
    return sample


def _fit_options(assign: str, options: dict) -> list[str]:
    """``fit`` options that select this search."""
    extra = ["--assign-options", ",".join(f"{k}={v}" for k, v in options.items())]
    return ["--assign", assign, *(extra if options else [])]


def _tune(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from kmeans_dask.tuning import as_rows, tune

    sample = _read_sample(args.input, args.sample, args.seed, args.columns)
    if sample.dtype.kind != "f":
        sample = sample.astype(np.float64)
    results, best = tune(
        sample,
        args.n_clusters,
        iterations=args.iterations,
        max_inertia_gap=args.max_gap,
        random_state=args.seed,
        progress=True,
    )
    command = ["kmeans-dask", "fit", args.input, "-k", str(args.n_clusters)]
    command += _fit_options(best.assign, best.assign_options)
    if args.json:
        recommended = {**as_rows([best])[0], "fit_command": command}
        print(json.dumps({"results": as_rows(results), "recommended": recommended}))
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
            ", ".join(f"{k}={v}" for k, v in r.assign_options.items()),
            f"{r.seconds_per_iteration:.4f}",
            f"{r.speedup:.2f}x",
            f"{r.inertia_gap:+.3%}",
            f"{r.recall:.4f}",
        )
    Console().print(table)
    options = f", assign_options={best.assign_options}" if best.assign_options else ""
    print(
        f"recommended (fastest within {args.max_gap:.2%} inertia): "
        f"KMeans(..., assign={best.assign!r}{options}), on the command line:\n"
        f"  {' '.join(command)}"
    )
    return 0


def _info(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from kmeans_dask._io.model_files import load_model
    from kmeans_dask._io.output_paths import check_readable_file

    check_readable_file(args.model, "model file")
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
        return 0
    if "init" not in info["params"]:
        shape = stored.params["init"].shape
        info["params"]["init"] = f"array of centres, shape {tuple(shape)}"
    console = Console()
    console.print(
        f"[bold]{args.model}[/]: kmeans_dask model file, format version "
        f"{stored.format_version}, written by kmeans_dask {stored.library_version}",
        highlight=False,
    )
    tables = (
        ("parameters", info["params"]),
        ("fitted attributes", info["attributes"]),
        ("arrays", {k: f"{v['dtype']} {tuple(v['shape'])}" for k, v in info["arrays"].items()}),
    )
    for title, entries in tables:
        table = Table(title=title, title_justify="left")
        table.add_column("name")
        table.add_column("value")
        for name, value in entries.items():
            table.add_row(name, str(value))
        console.print(table)
    return 0


def _convert(args: argparse.Namespace) -> int:
    from kmeans_dask._io.legacy import convert_legacy_model
    from kmeans_dask._io.output_paths import written_whole

    _refuse_overlap(args.output, "output", (args.model, "model"))
    with written_whole(args.output, "output", overwrite=args.overwrite, store=False) as partial:
        convert_legacy_model(args.model, partial)
    print(f"converted {args.model} (kmeans_dask 0.1.0) to {args.output}")
    return 0


def _compile(args: argparse.Namespace) -> int:
    from kmeans_dask._fit.compile_ahead import KernelCompilation
    from kmeans_dask._kernels.block_kernels import column_moments
    from kmeans_dask._kernels.shared_cache import cache_path

    started = time.perf_counter()
    KernelCompilation(
        args.dtype,
        args.n_clusters,
        args.n_features,
        weighted=args.weighted,
        processes=args.processes,
    ).wait()
    where = os.path.dirname(cache_path(column_moments))
    print(
        f"compiled the kernels of fits of k={args.n_clusters} on {', '.join(args.dtype)} rows "
        f"in {time.perf_counter() - started:.1f} s; cached under {where}"
    )
    return 0


def _demo(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from kmeans_dask import KMeans
    from kmeans_dask._fit.compile_ahead import KernelCompilation
    from kmeans_dask.datasets import make_blobs

    console = Console()
    console.print(
        f"[bold]kmeans_dask demo[/]: {args.n_samples:,} x {args.n_features} float32 blobs, "
        f"k={args.n_clusters}, on a LocalCluster of {args.workers} worker(s) x "
        f"{args.threads_per_worker} thread(s)"
    )
    started = time.perf_counter()
    # The kernels compile (or load from Numba's cache) in two processes while
    # the cluster starts, so the fit finds them in the cache.
    compilation = KernelCompilation(["float32"], args.n_clusters, args.n_features, processes=2)
    with _client(args):
        X, true_centers = make_blobs(
            args.n_samples,
            args.n_features,
            args.n_clusters,
            cluster_std=args.cluster_std,
            random_state=args.seed,
        )
        waited = time.perf_counter()
        compilation.wait()
        waited = time.perf_counter() - waited
        compiled = time.perf_counter() - started
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
        ("kernels compiled or loaded, while the cluster started (s)", f"{compiled:.2f}"),
        ("of which waited for after the cluster started (s)", f"{waited:.2f}"),
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


def _elbow(args: argparse.Namespace) -> int:
    from kmeans_dask.elbow import elbow

    if args.png:  # refuse before fitting anything
        from kmeans_dask._io.output_paths import check_writable

        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise ImportError("--png needs matplotlib: pip install 'kmeans_dask[plot]'") from None
        check_writable(args.png, "--png")
    X = _open_input(args.input, args.columns)
    with _client(args):
        result = elbow(
            _as_array(X),
            args.ks,
            random_state=args.random_state,
            scale=args.scale,
            init=args.init,
            init_sample_size=args.init_sample_size,
            silhouette_sample_size=args.silhouette_sample,
            max_iter=args.max_iter,
            verbose=0,
            progress=True,
        )
    if args.png:
        from kmeans_dask.plotting import plot_k_selection

        plot_k_selection(result).savefig(args.png, dpi=120)
    if args.json:
        print(
            json.dumps(
                {
                    "suggested_k": result.suggested_k,
                    "reason": result.reason,
                    "picks": result.picks,
                    "scale": result.scale,
                    "png": args.png,
                    "results": result.to_rows(),
                },
                indent=2,
            )
        )
        return 0
    _print_elbow_table(result)
    if args.png:
        print(f"plot written to {args.png}")
    return 0


def _print_elbow_table(result: Any) -> None:
    """The k sweep as one rich table: scores, each criterion's pick, the suggestion."""
    from rich.console import Console
    from rich.table import Table

    short = {
        "silhouette": "silhouette",
        "calinski_harabasz": "CH",
        "davies_bouldin": "DB",
        "elbow": "elbow",
    }

    def score(value: float | None, form: str) -> str:
        return "-" if value is None else format(value, form)

    table = Table(
        title=f"choosing k: elbow on {result.scale} inertia, silhouette on a sample",
        caption="CH: Calinski-Harabasz (highest wins); DB: Davies-Bouldin (lowest wins)",
    )
    for column in ("k", "inertia", "silhouette", "CH", "DB", "fit s"):
        table.add_column(column, justify="right", no_wrap=True)
    table.add_column("picked by")
    for row in result.to_rows():
        picked = ", ".join(short[name] for name in row["picked_by"])
        if len(row["picked_by"]) == len(short):
            picked = "all four"
        table.add_row(
            f"[bold]{row['k']}*[/bold]" if row["suggested"] else str(row["k"]),
            f"{row['inertia']:.6g}",
            score(row["silhouette"], ".3f"),
            score(row["calinski_harabasz"], ".5g"),
            score(row["davies_bouldin"], ".3f"),
            f"{row['seconds']:.2f}",
            picked,
        )
    console = Console()
    console.print(table)
    if result.suggested_k is None:
        console.print(f"no k suggested: {result.reason}", highlight=False)
    else:
        console.print(f"suggested k: {result.suggested_k}* ({result.reason})", highlight=False)


def _segment(args: argparse.Namespace) -> int:
    from rich.console import Console

    from kmeans_dask._fit.progress import StepProgress
    from kmeans_dask._io.tables import output_format, read_table, write_table
    from kmeans_dask.segmentation import segment, summary_table, write_summary

    output_format(args.output, "--output")
    outputs = [
        (args.output, "--output"),
        (args.summary, "--summary"),
        (args.plot, "--plot"),
        (args.save_pipeline, "--save-pipeline"),
    ]
    named = [(path, what) for path, what in outputs if path is not None]
    for index, (path, what) in enumerate(named):
        _refuse_overlap(path, what, (args.input, "input"), *named[:index])
        _refuse_existing(path, what, args.overwrite)
    if args.plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise ImportError("--plot needs matplotlib: pip install 'kmeans_dask[plot]'") from None
    if args.summary and not args.summary.lower().endswith((".csv", ".md")):
        raise ValueError(f"--summary {args.summary!r}: expected a name ending in .csv or .md")
    table = read_table(args.input)
    progress = not (args.quiet or args.json)
    with _client(args):
        started = time.perf_counter()
        result = segment(
            table,
            args.n_clusters,
            columns=args.columns,
            ks=args.ks,
            impute=args.impute,
            fill_value=args.fill_value,
            outlier_threshold=args.outlier_z,
            scale=None if args.scale == "none" else args.scale,
            max_categories=args.max_categories,
            pca=args.pca,
            random_state=args.random_state,
            progress=progress,
        )
        with StepProgress("writing", 1, "tables", enabled=progress) as steps:
            write_table(result.labelled, args.output, overwrite=args.overwrite)
            steps.advance(f"{args.output}: every input column, every row, and `segment`")
        seconds = time.perf_counter() - started
    if args.summary:
        write_summary(result.summary, args.summary, overwrite=args.overwrite)
    if args.plot:
        from kmeans_dask._io.output_paths import written_whole
        from kmeans_dask.plotting import plot_segments

        figure = plot_segments(result.summary).figure
        with written_whole(args.plot, "--plot", overwrite=args.overwrite, store=False) as partial:
            figure.savefig(partial, dpi=120, format="png")
    if args.save_pipeline:
        from kmeans_dask.preprocessing import save_pipeline

        save_pipeline(result.pipeline, args.save_pipeline, overwrite=args.overwrite)
    n_rows = int(result.summary["size"].sum())
    how = "chosen by the elbow" if result.elbow is not None else "given"
    if args.json:
        report = {
            "output": args.output,
            "n_rows": n_rows,
            "n_segments": result.n_clusters,
            "k": how,
            "outliers_left_out_of_fit": result.n_outliers,
            "seconds": round(seconds, 3),
            "summary": result.summary.to_dict(orient="records"),
            "elbow": None if result.elbow is None else result.elbow.to_rows(),
        }
        print(json.dumps(report, indent=2, default=float))
        return 0
    Console().print(summary_table(result.summary, title=f"{result.n_clusters} segments"))
    print(
        f"{n_rows:,} rows in {result.n_clusters} segments (k {how}); {result.n_outliers:,} "
        f"outlier row(s) left out of the fit and labelled by their nearest segment; "
        f"{seconds:.2f} s; wrote {args.output}" + "".join(f", {path}" for path, _ in named[1:])
    )
    return 0


def _written_nothing(args: argparse.Namespace) -> str:
    return (
        "each output is written whole or not at all, and none half-written is left; run the "
        "same command again (with --overwrite if some were written)"
    )


def _fit_interrupted(args: argparse.Namespace) -> str:
    from kmeans_dask._io.output_paths import resume_hint

    if args.checkpoint is None:
        return "nothing was saved (with --checkpoint FILE a rerun resumes where it stopped)"
    return resume_hint(args.checkpoint, again="run the same command again")


#: Each subcommand, and what to say when Ctrl-C stops it.
COMMANDS: dict[str, tuple[Callable[[argparse.Namespace], int], Callable[..., str]]] = {
    "fit": (_fit, _fit_interrupted),
    "predict": (
        _predict,
        lambda args: (
            f"no labels were written to {_labels_output(args)!r} (anything there "
            "is unchanged); run the same command again"
        ),
    ),
    "make-data": (
        _make_data,
        lambda args: (
            f"nothing was written to {args.output!r} (anything there is unchanged); "
            "run the same command again"
        ),
    ),
    "tune": (_tune, lambda args: "nothing was saved; run the same command again"),
    "elbow": (_elbow, lambda args: "nothing was saved; run the same command again"),
    "segment": (_segment, _written_nothing),
    "info": (_info, lambda args: "nothing was changed"),
    "convert": (
        _convert,
        lambda args: f"nothing was written to {args.output!r} (anything there is unchanged)",
    ),
    "compile": (_compile, lambda args: "the kernels compiled so far stay in the cache"),
    "demo": (_demo, lambda args: "nothing was saved"),
    "bench": (_bench, lambda args: "no results were written; run the same command again"),
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``kmeans-dask``; returns the exit status."""
    try:
        parser = build_parser({name: run for name, (run, _) in COMMANDS.items()})
        args = parser.parse_args(argv)
    except KeyboardInterrupt:
        print_error("kmeans-dask: interrupted; nothing was started")
        return EXIT_INTERRUPTED
    except ArgumentsRefused as exc:
        print_error(str(exc))
        return EXIT_BAD_INPUT
    try:
        with deferred_interrupts():
            return args.run(args)
    except KeyboardInterrupt:
        print_error(f"kmeans-dask {args.command}: interrupted; {COMMANDS[args.command][1](args)}")
        return EXIT_INTERRUPTED
    except BAD_INPUT_ERRORS as exc:
        print_error(f"kmeans-dask {args.command}: error: {exc}")
        return EXIT_BAD_INPUT
    except (ImportError, ConnectionError, OSError, TimeoutError) as exc:
        print_error(f"kmeans-dask {args.command}: failed: {exc}")
        return EXIT_FAILURE


if __name__ == "__main__":
    raise SystemExit(main())
