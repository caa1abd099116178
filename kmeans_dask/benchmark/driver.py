"""The benchmark's run: start the cluster, warm up, interleave the repeats, report."""

from __future__ import annotations

import argparse
import functools
import importlib
import importlib.metadata
import json
import logging
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from kmeans_dask.benchmark.data import exact_inertia, initial_centers, make_blobs, persisted_blocks
from kmeans_dask.benchmark.machine import SGEMM_SHAPE, SgemmResult, environment_info, measure_sgemm
from kmeans_dask.benchmark.options import (
    OURS,
    WARMUP_ROWS,
    build_parser,
    parse_peers,
    parse_variants,
    variant_name,
)
from kmeans_dask.benchmark.overhead import iteration_overhead_seconds
from kmeans_dask.benchmark.runs import (
    RunResult,
    Workload,
    run_dask_ml,
    run_faiss,
    run_kmeans_dask,
    run_sklearn,
    run_spark,
    start_spark,
    warm_bounds_kernels,
)
from kmeans_dask.benchmark.schedule import run_order, wait_until_idle
from kmeans_dask.benchmark.summary import (
    format_fraction,
    format_markdown,
    format_seconds,
    format_table,
    summarize,
)


def _available(peers: list[str], dtype: np.dtype) -> list[str]:
    """Peers whose libraries import; the others are reported and dropped."""
    modules = {"faiss": "faiss", "sklearn": "sklearn", "dask-ml": "dask_ml", "spark": "pyspark"}
    keep = []
    for peer in peers:
        try:
            importlib.import_module(modules[peer])
        except ImportError as exc:
            hint = " (pip install pyspark; it needs a Java runtime)" if peer == "spark" else ""
            print(f"skipping {peer}: cannot import {modules[peer]}: {exc}{hint}", flush=True)
            continue
        if peer == "faiss" and dtype != np.float32:
            print("skipping faiss: faiss.Kmeans only takes float32 data", flush=True)
            continue
        keep.append(peer)
    return keep


def _describe(result: RunResult) -> str:
    text = (
        f"{result.name:12s} {format_seconds(result.seconds_per_iter)} s/iter  "
        f"fit {result.fit_seconds:.3f} s  n_iter {result.n_iter if result.n_iter else '?'}  "
        f"inertia {result.inertia:.8e}  [{result.timing}]"
    )
    if result.iteration_seconds:
        text += (
            "\n"
            + " " * 16
            + "per-iteration s: "
            + " ".join(f"{s:.4f}" for s in result.iteration_seconds)
        )
    return text


@dataclass
class Measurements:
    """Everything the repeats measured, for the report."""

    results: list[RunResult] = field(default_factory=list)
    overheads: dict[str, list[float]] = field(default_factory=lambda: {"tasks": [], "actors": []})
    """Seconds of an empty iteration per repeat, by engine."""
    sgemm: SgemmResult = field(default_factory=lambda: SgemmResult(SGEMM_SHAPE))
    failed: set[str] = field(default_factory=set)
    chunk_rows: list[int] = field(default_factory=list)


def run(args: argparse.Namespace) -> int:
    """Run the benchmark described by parsed ``args``.

    Parameters
    ----------
    args : argparse.Namespace
        From :func:`build_parser`.

    Returns
    -------
    int
        Exit status: 0 on success, 1 if kmeans_dask itself failed, 2 for bad
        arguments.
    """
    from kmeans_dask.backends import resolve_auto

    dtype = np.dtype(args.dtype)
    try:
        peers = parse_peers(args.peers, args.with_spark)
        variants = parse_variants(args.variants)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.n_clusters > args.n_samples:
        print("error: --n-clusters must not exceed --n-samples", file=sys.stderr)
        return 2
    env = environment_info()
    if env["openblas_overrides"]:
        print(
            f"WARNING: {', '.join(env['openblas_overrides'])} set: OpenBLAS may not use the "
            "kernels of this CPU. For figures run `env -u OPENBLAS_CORETYPE -u "
            "OPENBLAS_L2_SIZE python scripts/bench.py ...`.",
            flush=True,
        )
    peers = _available(peers, dtype)
    names = [OURS, *(variant_name(*variant) for variant in variants), *peers]
    backend = resolve_auto() if args.backend == "auto" else args.backend
    n, d, k = args.n_samples, args.n_features, args.n_clusters

    start = time.perf_counter()
    X = make_blobs(n, d, k, args.seed, dtype, args.spread)
    init = initial_centers(X, k, args.seed)
    print(
        f"data: {n} x {d} {dtype}, k={k}, {args.iterations} iterations, {args.repeats} "
        f"repeat(s); generated in {time.perf_counter() - start:.1f} s; implementations: "
        f"{', '.join(names)}",
        flush=True,
    )
    measured = _measure(args, X, init, names, variants, backend)
    if OURS in measured.failed:
        print("kmeans_dask failed; no summary", file=sys.stderr)
        return 1
    params = {
        "n_samples": n,
        "n_features": d,
        "n_clusters": k,
        "iterations": args.iterations,
        "repeats": args.repeats,
        "dtype": str(dtype),
        "spread": args.spread,
        "workers": args.workers,
        "threads_per_worker": args.threads_per_worker,
        "chunk_rows": measured.chunk_rows,
        "backend": backend,
        "algorithm": args.algorithm,
        "engine": args.engine,
        "variants": [list(v) for v in variants],
        "seed": args.seed,
        "peers": peers,
        "argv": " ".join(sys.argv[1:]),
    }
    _report(args, measured, names, env, params, X.nbytes)
    return 0


def _measure(
    args: argparse.Namespace,
    X: np.ndarray,
    init: np.ndarray,
    names: list[str],
    variants: list[tuple[str, str]],
    backend: str,
) -> Measurements:
    """Start the cluster (and Spark), warm up, then time every implementation per repeat.

    An implementation that fails is reported and dropped from ``names`` and
    the later repeats.
    """
    from distributed import Client, LocalCluster

    n_threads = args.workers * args.threads_per_worker
    measured = Measurements()
    sc = None
    with (
        warnings.catch_warnings(),
        LocalCluster(
            n_workers=args.workers,
            threads_per_worker=args.threads_per_worker,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
            silence_logs=logging.ERROR,
        ) as cluster,
        Client(cluster) as client,
    ):
        warnings.filterwarnings("ignore", message=".*[Ll]arge graph.*")
        X_dask, chunk_futures = persisted_blocks(client, X, args.chunk_rows, args.n_clusters)
        measured.chunk_rows = list(X_dask.chunks[0])
        print(
            f"LocalCluster: {args.workers} worker(s) x {args.threads_per_worker} thread(s); "
            f"{X_dask.numblocks[0]} chunk(s) of ~{X_dask.chunks[0][0]} rows persisted",
            flush=True,
        )
        work = Workload(X, X_dask, init, args.iterations)
        if "spark" in names:
            try:
                start = time.perf_counter()
                sc, work.spark_rdd = start_spark(X, n_threads, args.spark_driver_memory)
                print(
                    f"spark: local[{n_threads}] started, RDD cached in "
                    f"{time.perf_counter() - start:.1f} s",
                    flush=True,
                )
            except Exception as exc:  # a JVM problem should not sink the other peers
                print(f"skipping spark: could not start it: {exc!r}", flush=True)
                names.remove("spark")
        try:
            runners = _runners(args, variants, backend)
            if args.warmup:
                _warm_up(client, work, names, runners, measured.failed, sc is not None)
            for repeat in range(args.repeats):
                print(f"repeat {repeat + 1}/{args.repeats}", flush=True)
                _timed_repeat(work, repeat, runners, run_order(names, repeat), measured)
                for engine, seconds in measured.overheads.items():
                    seconds.append(iteration_overhead_seconds(client, chunk_futures, init, engine))
                measure_sgemm(measured.sgemm)
                print(
                    f"  empty iteration: tasks {format_seconds(measured.overheads['tasks'][-1])}"
                    f" s, actors {format_seconds(measured.overheads['actors'][-1])} s; SGEMM "
                    f"{measured.sgemm.gflops:.1f} GFLOP/s "
                    f"({measured.sgemm.gflops_one_thread:.1f} per thread)",
                    flush=True,
                )
        finally:
            if sc is not None:
                sc.stop()
    return measured


def _runners(
    args: argparse.Namespace, variants: list[tuple[str, str]], backend: str
) -> dict[str, Callable[[Workload], RunResult]]:
    """One callable per implementation name, each timing one fit of a workload."""
    variant_runners = {
        variant_name(algorithm, engine): functools.partial(
            run_kmeans_dask,
            backend=backend,
            algorithm=algorithm,
            engine=engine,
            name=variant_name(algorithm, engine),
        )
        for algorithm, engine in variants
    }
    return {
        OURS: lambda w: run_kmeans_dask(w, backend, args.algorithm, args.engine),
        **variant_runners,
        "faiss": lambda w: run_faiss(w, args.seed),
        "sklearn": run_sklearn,
        "dask-ml": run_dask_ml,
        "spark": lambda w: run_spark(w, args.seed),
    }


def _warm_up(
    client: Any,
    work: Workload,
    names: list[str],
    runners: dict[str, Callable[[Workload], RunResult]],
    failed: set[str],
    with_spark: bool,
) -> None:
    """Untimed short fits of every implementation (compilation, imports, pools)."""
    k = work.init.shape[0]
    rows = min(work.X.shape[0], max(WARMUP_ROWS, 4 * k))
    warm_rdd = None
    if with_spark:
        warm_rdd = work.spark_rdd.zipWithIndex().filter(lambda p: p[1] < rows).keys().cache()
    warm = Workload(work.X[:rows], work.X_dask[:rows].persist(), work.init, 2, warm_rdd)
    for name in names:
        try:
            runners[name](warm)
        except Exception as exc:
            print(f"{name} failed in the warm-up: {exc!r}", flush=True)
            failed.add(name)
    client.run(warm_bounds_kernels, str(work.X.dtype))
    if warm_rdd is not None:
        warm_rdd.unpersist()
    print("warm-up done", flush=True)


def _timed_repeat(
    work: Workload,
    repeat: int,
    runners: dict[str, Callable[[Workload], RunResult]],
    order: list[str],
    measured: Measurements,
) -> None:
    """One timed fit of each implementation in ``order``, each on an idle machine."""
    for name in order:
        if name in measured.failed:
            continue
        wait_until_idle()
        try:
            result = runners[name](work)
        except Exception as exc:
            print(f"  {name} failed: {exc!r}; dropping it", flush=True)
            measured.failed.add(name)
            continue
        result.repeat = repeat
        result.inertia = exact_inertia(work.X, result.centers)
        result.centers = None
        if result.n_iter is not None and result.n_iter < work.iterations:
            print(
                f"  WARNING: {name} stopped after {result.n_iter} of {work.iterations} "
                "iterations (exact convergence)",
                flush=True,
            )
        measured.results.append(result)
        print("  " + _describe(result), flush=True)


def _report(
    args: argparse.Namespace,
    measured: Measurements,
    names: list[str],
    env: dict[str, Any],
    params: dict[str, Any],
    data_bytes: int,
) -> None:
    """Print the table and the notes (and the Markdown and JSON versions when asked)."""
    n_threads = args.workers * args.threads_per_worker
    flops_per_iter = 2.0 * args.n_samples * args.n_features * args.n_clusters
    sgemm, overheads = measured.sgemm, measured.overheads
    summaries = summarize(measured.results, names, flops_per_iter, sgemm.gflops, args.iterations)
    ours = next(s for s in summaries if s.name == OURS)
    thread_sgemm = sgemm.gflops_one_thread * n_threads
    ours_engine = "tasks" if args.engine == "tasks" else "actors"
    overhead = float(statistics.median(overheads[ours_engine]))
    extra = [
        f"SGEMM ({SGEMM_SHAPE[0]}x{SGEMM_SHAPE[1]}) @ ({SGEMM_SHAPE[1]}x{SGEMM_SHAPE[2]}) "
        f"float32: {sgemm.gflops:.1f} GFLOP/s with {sgemm.threads} BLAS thread(s), "
        f"{sgemm.gflops_one_thread:.1f} GFLOP/s on one thread",
    ]
    for summary in summaries:
        if summary.name.startswith(OURS):
            extra.append(
                f"{summary.name} assignment step: 2*n*d*k / s_iter = {summary.gflops:.1f} "
                f"GFLOP/s = {format_fraction(summary.sgemm_fraction)} of SGEMM "
                f"({format_fraction(summary.gflops / thread_sgemm if thread_sgemm else None)} "
                f"of {n_threads} x the one-thread SGEMM)"
            )
    extra.append(
        "Dask part of an iteration (median wall time of an empty iteration over the same "
        f"chunks: centres out, do-nothing map, statistics reduced): tasks "
        f"{format_seconds(statistics.median(overheads['tasks']))} s, actors "
        f"{format_seconds(statistics.median(overheads['actors']))} s; kmeans_dask "
        f"({ours_engine}): {format_fraction(overhead / ours.median_seconds_per_iter)} of its "
        f"{format_seconds(ours.median_seconds_per_iter)} s/iter"
    )
    peaks = [r.peak_worker_rss for r in measured.results if r.name == OURS and r.peak_worker_rss]
    if peaks:
        data_per_worker = data_bytes / max(args.workers, 1)
        extra.append(
            f"kmeans_dask peak worker RSS during fit: {max(peaks) / 2**20:,.0f} MiB for "
            f"{data_per_worker / 2**20:,.0f} MiB of data per worker "
            f"(includes the Python/NumPy/Numba baseline of the worker process)"
        )
    print()
    print(
        f"Results: {args.n_samples} x {args.n_features} {params['dtype']}, "
        f"k={args.n_clusters}, {args.iterations} iterations, median/min over "
        f"{args.repeats} interleaved repeat(s). peer/ours > 1 means kmeans_dask is faster; "
        "'paired' is the median of the ratios taken within each repeat."
    )
    print(format_table(summaries))
    print()
    for summary in summaries:
        print(f"  {summary.name}: s/iter from {summary.timing}")
    for line in extra:
        print(line)
    spread = [s.name for s in summaries if s.inertia_spread > 1e-12]
    if spread:
        print(f"Note: final inertia varied across repeats for {', '.join(spread)}.")
    overrides = ", ".join(env["openblas_overrides"])
    print(
        "Figures are only comparable when taken with `env -u OPENBLAS_CORETYPE -u "
        "OPENBLAS_L2_SIZE python scripts/bench.py ...`"
        + (f" (this run had {overrides} set)." if overrides else ".")
    )
    if args.markdown:
        print()
        print(format_markdown(summaries, env, params, extra))
    if args.json:
        payload = {
            "parameters": params,
            "environment": env,
            "sgemm": asdict(sgemm),
            "empty_iteration_seconds": overheads,
            "dask_overhead_seconds_per_iter": overhead,
            "summaries": [asdict(s) for s in summaries],
            "runs": [
                {k: v for k, v in asdict(r).items() if k != "centers"} for r in measured.results
            ],
            "failed": sorted(measured.failed),
        }
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(payload, f, indent=2, default=str)
        print(f"wrote {args.json}")


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``scripts/bench.py`` and ``kmeans-dask bench``.

    Parameters
    ----------
    argv : list of str, optional
        Arguments without the program name; ``sys.argv[1:]`` when None.

    Returns
    -------
    int
        Exit status.
    """
    return run(build_parser().parse_args(argv))
