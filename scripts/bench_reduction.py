"""Bytes into the client and time per iteration as the workers grow (issue 24, point 1).

Three measures, each on a fresh LocalCluster of ``W`` worker processes with
one thread each, over Dask input of ``--chunks`` blocks of ``--rows`` rows
(float32), persisted on the workers as a fit persists it:

* ``empty`` (component): the Dask part of a Lloyd iteration,
  :func:`kmeans_dask.benchmark.overhead.iteration_overhead_seconds`: the
  centres sent, a do-nothing task per chunk returning statistics of the real
  size (k x d float64 sums, k counts), combined in the reduction tree.
  Median over ``--iterations``.
* ``fit`` (whole fit): ``KMeans(k, init=<array>, max_iter=--fit-iterations,
  tol=0).fit(X)``; the median of its iterations' times (``history_``), and
  the whole fit's wall time.
* ``paired`` (component, new code only): empty iterations as ``empty``,
  alternating on the same cluster the client's gathering of the top of the
  tree (main's way, the same code path: ``client``) and the way chosen by
  the statistics' size (``chosen``), so both see the same load.
* ``sweep``: ``paired`` for several k x d, with also the whole tree worker
  to worker whatever the size (``workers``), to choose the threshold.
* ``engines``: empty iterations of the statistics' real size through the
  actors and as tasks, alternating on the same cluster over the same
  chunks (so both see the same load), for ``--k`` x ``--d`` and the sizes
  of ``sweep``: whether ``engine="auto"`` needs tasks for large statistics.

Bytes into the client count the array bytes of every value the client
receives from the hosts' calls or ``Client.gather`` (the statistics; the
messages' own framing is not counted). Run it with the code to measure on
the path, e.g. main's code from a worktree::

    PYTHONPATH=/tmp/before-tree python scripts/bench_reduction.py --label before
    python scripts/bench_reduction.py --label after

Prints one JSON object per line.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import dask.array as da
import numpy as np
from distributed import Client, LocalCluster

import kmeans_dask
from kmeans_dask._engine.hosts import ChunkHosts
from kmeans_dask._engine.mapreduce import map_chunks, send, tree_reduce
from kmeans_dask._engine.placement import distribute
from kmeans_dask._worker.results import combine_stats, statistics_nbytes
from kmeans_dask.benchmark.overhead import _empty_statistics, iteration_overhead_seconds

#: The statistics' shapes of ``--measure sweep``.
SWEEP_SIZES = [(64, 32), (256, 64), (1024, 64), (1024, 128), (4096, 128)]


def array_bytes(value: Any) -> int:
    """Bytes of the NumPy arrays in ``value`` (lists, tuples, dicts, dataclasses)."""
    if isinstance(value, np.ndarray):
        return value.nbytes
    if isinstance(value, list | tuple):
        return sum(array_bytes(v) for v in value)
    if isinstance(value, dict):
        return sum(array_bytes(v) for v in value.values())
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return sum(array_bytes(getattr(value, f.name)) for f in dataclasses.fields(value))
    return 0


@contextmanager
def counting_received() -> Iterator[list[int]]:
    """Count the array bytes the client receives from the hosts and from ``gather``."""
    received = [0]
    call, gather = ChunkHosts._call, Client.gather

    def counted_call(self, *args, **kwargs):
        answers = call(self, *args, **kwargs)
        received[0] += array_bytes(answers)
        return answers

    def counted_gather(self, *args, **kwargs):
        values = gather(self, *args, **kwargs)
        received[0] += array_bytes(values)
        return values

    ChunkHosts._call, Client.gather = counted_call, counted_gather
    try:
        yield received
    finally:
        ChunkHosts._call, Client.gather = call, gather


def _data(args: argparse.Namespace) -> da.Array:
    rng = np.random.default_rng(0)
    X = rng.standard_normal((args.chunks * args.rows, args.d), dtype=np.float32)
    return da.from_array(X, chunks=(args.rows, args.d))


def _cluster(n_workers: int) -> LocalCluster:
    return LocalCluster(
        n_workers=n_workers,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=None,
        memory_limit=0,
    )


def empty(args: argparse.Namespace, n_workers: int, engine: str) -> dict:
    X = _data(args)
    centers = np.zeros((args.k, args.d), dtype=np.float32)
    with _cluster(n_workers) as cluster, Client(cluster) as client:
        data = distribute(client, X, None, engine=engine)
        try:
            iteration_overhead_seconds(client, data.chunks, centers, engine, 1)  # warm up
            with counting_received() as received:
                seconds = iteration_overhead_seconds(
                    client, data.chunks, centers, engine, args.iterations
                )
        finally:
            data.release()
    return {
        "seconds": seconds,
        "client_MiB_per_iteration": received[0] / args.iterations / 2**20,
    }


def fit(args: argparse.Namespace, n_workers: int, engine: str) -> dict:
    X = _data(args)
    init = np.asarray(X[: args.k].compute(), dtype=np.float32)
    with _cluster(n_workers) as cluster, Client(cluster):
        params = {"init": init, "n_init": 1, "max_iter": args.fit_iterations, "tol": 0.0}
        kmeans_dask.KMeans(args.k, **params, engine=engine).fit(X)  # compile, warm up
        with counting_received() as received:
            start = time.perf_counter()
            model = kmeans_dask.KMeans(args.k, **params, engine=engine).fit(X)
            wall = time.perf_counter() - start
    times = [record.time for record in model.history_]
    return {
        "iteration_seconds": statistics.median(times),
        "fit_seconds": wall,
        "client_MiB_per_fit": received[0] / 2**20,
        "iterations": len(times),
    }


def _empty_iteration(client, data, hosts, centers, result_bytes) -> None:
    """One empty iteration (as ``iteration_overhead_seconds`` runs it), with ``result_bytes``."""
    if hosts is not None:
        hosts.map_reduce(_empty_statistics, combine_stats, centers, result_bytes=result_bytes)
        return
    sent = send(client, centers, "bench-centers")
    parts = map_chunks(client, _empty_statistics, data.chunks, sent, name="bench-empty")
    tree_reduce(client, combine_stats, parts, name="bench-reduce", result_bytes=result_bytes)


def paired(args: argparse.Namespace, n_workers: int) -> list[dict]:
    """Empty iterations, the client's gathering (``client``) and the new choice interleaved.

    ``client``: a size of 0, so the client gathers the top of the tree as
    main's code always did (the same code path); ``chosen``: the real size
    of the statistics, so the engine chooses. For each k x d of the sweep.
    """
    rows = []
    X = _data(args)
    sizes = [(args.k, args.d)] if args.measure == "paired" else SWEEP_SIZES
    with _cluster(n_workers) as cluster, Client(cluster) as client:
        for engine in args.engines:
            data = distribute(client, X, None, engine=engine)
            hosts = ChunkHosts(client, data.chunks) if engine == "actors" else None
            try:
                for k, d in sizes:
                    centers = np.zeros((k, d), dtype=np.float32)
                    ways = {"client": 0, "chosen": statistics_nbytes(k, d)}
                    if args.measure == "sweep":  # 2**40 bytes are always too many to gather
                        ways["workers"] = 2**40
                    seconds: dict[str, list[float]] = {way: [] for way in ways}
                    received = {}
                    for round_ in range(args.iterations + 1):
                        for way, size in ways.items():
                            with counting_received() as count:
                                start = time.perf_counter()
                                _empty_iteration(client, data, hosts, centers, size)
                                if round_:  # the first round warms up
                                    seconds[way].append(time.perf_counter() - start)
                            received[way] = count[0]
                    rows.append(
                        {
                            "engine": engine,
                            "k": k,
                            "d": d,
                            "set_MiB": statistics_nbytes(k, d) / 2**20,
                            **{f"{way}_MiB": n / 2**20 for way, n in received.items()},
                            **{f"{way}_s": statistics.median(s) for way, s in seconds.items()},
                        }
                    )
            finally:
                if hosts is not None:
                    hosts.close()
                data.release()
    return rows


def engines(args: argparse.Namespace, n_workers: int) -> list[dict]:
    """Empty iterations through the actors and as tasks, interleaved, for several k x d."""
    rows = []
    X = _data(args)
    with _cluster(n_workers) as cluster, Client(cluster) as client:
        data = distribute(client, X, None, engine="tasks")
        hosts = ChunkHosts(client, data.chunks)
        try:
            for k, d in dict.fromkeys([(args.k, args.d), *SWEEP_SIZES]):
                centers = np.zeros((k, d), dtype=np.float32)
                size = statistics_nbytes(k, d)
                ways = {"actors": hosts, "tasks": None}
                seconds: dict[str, list[float]] = {way: [] for way in ways}
                for round_ in range(args.iterations + 1):
                    for way, way_hosts in ways.items():
                        start = time.perf_counter()
                        _empty_iteration(client, data, way_hosts, centers, size)
                        if round_:  # the first round warms up
                            seconds[way].append(time.perf_counter() - start)
                medians = {way: statistics.median(s) for way, s in seconds.items()}
                rows.append(
                    {
                        "k": k,
                        "d": d,
                        "gathered_MiB": args.chunks * size / 2**20,
                        **{f"{way}_s": m for way, m in medians.items()},
                        "tasks_over_actors": medians["tasks"] / medians["actors"],
                    }
                )
        finally:
            hosts.close()
            data.release()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--label", default="", help="written into every line (before/after)")
    parser.add_argument(
        "--measure", choices=["empty", "fit", "paired", "sweep", "engines"], default="empty"
    )
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 4, 16, 32])
    parser.add_argument("--engines", nargs="+", default=["actors", "tasks"])
    parser.add_argument("--k", type=int, default=16384)
    parser.add_argument("--d", type=int, default=128)
    parser.add_argument("--chunks", type=int, default=64)
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--iterations", type=int, default=5)
    parser.add_argument("--fit-iterations", type=int, default=3)
    args = parser.parse_args()
    common = {"label": args.label, "measure": args.measure, "k": args.k, "d": args.d}
    common |= {"chunks": args.chunks, "rows": args.rows}
    for n_workers in args.workers:
        if args.measure in ("paired", "sweep", "engines"):
            measure = engines if args.measure == "engines" else paired
            for row in measure(args, n_workers):
                print(json.dumps({**common, "workers": n_workers, **row}), flush=True)
            continue
        for engine in args.engines:
            result = (empty if args.measure == "empty" else fit)(args, n_workers, engine)
            print(json.dumps({**common, "workers": n_workers, "engine": engine, **result}))


if __name__ == "__main__":
    main()
