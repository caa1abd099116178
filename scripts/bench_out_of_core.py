"""Out-of-core throughput: a Zarr array larger than the workers' memory.

Writes (once) a Zarr array of Gaussian blobs several times larger than the
memory limit of a one-worker LocalCluster, then measures in the same run,
``--repeats`` times in turn (medians reported):

* the raw rate at which the store can be read and decompressed (every chunk
  read by as many threads as the worker has), through ``zarr`` (the
  reference of issue #24) and straight from the chunk files
  (:class:`~kmeans_dask._io.chunk_files.ChunkFiles`), in this process
  and inside the worker (whose memory allocator distributed's nanny tunes
  to return freed memory at once, ``MALLOC_TRIM_THRESHOLD_``), there both
  as the nanny left it and under :func:`streaming_allocations`, and
* the rate at which ``KMeans(persist=False)`` streams it, each way:
  ``tasks`` (one task per block and pass, blocks read through zarr: the
  streamed path before read-ahead), ``actors`` with read-ahead turned off
  in the worker, ``nanny`` (actors reading ahead through zarr, with the
  worker's allocator left as the nanny set it: the streamed path before
  :mod:`kmeans_dask._worker.allocator`), ``zarr`` (actors reading ahead
  through zarr into buffers reused from the heap: the streamed path before
  :mod:`kmeans_dask._io.chunk_files`) and ``auto`` (today's: that, the
  blocks decoded straight from the chunk files). For each: the median Lloyd
  iteration (bytes of the array over its seconds) and the whole fit (bytes
  times the passes over it: the k-means++ sample pass, which checks the
  data too, one per Lloyd iteration and the final pass, over the fit's wall
  time),

and the peak resident memory of the worker during each fit against its limit.
On a shared machine rates move with the load; the CPU seconds per GiB
(process CPU time over the GiB read, or over the GiB a fit streamed) move
far less, so they are printed besides.

Usage::

    python scripts/bench_out_of_core.py --path /tmp/ooc.zarr --gib 1.5 --memory-limit 480MiB
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import time
import warnings
from collections import defaultdict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, nullcontext
from typing import NamedTuple
from unittest.mock import patch

import zarr
from dask.utils import parse_bytes
from distributed import Client, LocalCluster
from sklearn.exceptions import ConvergenceWarning

from kmeans_dask import KMeans
from kmeans_dask._engine import placement
from kmeans_dask._io.chunk_files import chunk_files_of
from kmeans_dask._worker.allocator import streaming_allocations
from kmeans_dask.benchmark.memory import peak_rss, reset_peak_rss
from kmeans_dask.datasets import write_blobs_zarr


class Variant(NamedTuple):
    """One way to stream the passes."""

    label: str
    engine: str
    read_ahead: bool
    heap_buffers: bool
    """Whether the worker runs streamed passes under :func:`streaming_allocations`."""
    chunk_files: bool
    """Whether blocks are decoded straight from the chunk files (else through zarr)."""

    @property
    def name(self) -> str:
        """The label's first word, as ``--passes`` names it."""
        return self.label.split()[0].rstrip(",:")


#: The streamed passes compared.
VARIANTS = [
    Variant("tasks (before)", "tasks", True, heap_buffers=False, chunk_files=False),
    Variant("actors, no read-ahead", "actors", False, heap_buffers=True, chunk_files=True),
    Variant("nanny: actors + read-ahead, nanny's allocator, zarr", "auto", True, False, False),
    Variant("zarr: actors + read-ahead + heap buffers, zarr", "auto", True, True, False),
    Variant("auto: actors + read-ahead + heap buffers + chunk files", "auto", True, True, True),
]


#: Raw rates measured inside the worker: label, heap buffers, from the chunk files.
IN_WORKER_RATES = [
    ("worker", False, False),
    ("worker, heap buffers", True, False),
    ("worker, heap buffers, chunk files", True, True),
]


def read_rate(
    path: str, threads: int, heap_buffers: bool = False, files: bool = False
) -> tuple[float, float]:
    """Bytes per second to read and decompress every chunk of the array, and CPU s per GiB.

    Through zarr, or with ``files`` straight from the chunk files. With
    ``heap_buffers``, under :func:`streaming_allocations` for blocks of one
    chunk.
    """
    array = zarr.open_array(path, mode="r")
    rows = array.chunks[0]
    starts = range(0, array.shape[0], rows)
    block_bytes = rows * array.shape[1] * array.dtype.itemsize
    tuning = streaming_allocations(block_bytes) if heap_buffers else nullcontext()
    chunk_files = chunk_files_of(array) if files else None
    if files and chunk_files is None:
        raise SystemExit(f"{path}: a layout that zarr must read (see chunk_files_of)")

    def read(start: int) -> float:
        if chunk_files is None:
            return array[start : start + rows].sum()
        return chunk_files.read(start, rows).sum()

    cpu, started = cpu_seconds(), time.perf_counter()
    with tuning, ThreadPoolExecutor(threads) as pool:
        list(pool.map(read, starts))
    seconds = time.perf_counter() - started
    return array.nbytes / seconds, (cpu_seconds() - cpu) / (array.nbytes / 2**30)


def cpu_seconds() -> float:
    """User and system CPU time of this process so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@contextmanager
def _nanny_allocator(block_bytes: int) -> Iterator[None]:
    """Stands in for :func:`streaming_allocations`: the allocator as the nanny set it."""
    yield


def _configure_worker(variant: Variant) -> None:
    """In a worker: read ahead or not, into heap buffers or not."""
    from kmeans_dask._worker import allocator, reading

    reading.MAX_AHEAD_PER_THREAD = 2 if variant.read_ahead else 0
    reading.streaming_allocations = (
        allocator.streaming_allocations if variant.heap_buffers else _nanny_allocator
    )


@contextmanager
def _reading(variant: Variant) -> Iterator[None]:
    """Blocks read from the chunk files, or (``chunk_files`` False) through zarr."""
    if variant.chunk_files:
        yield
        return
    with patch.object(placement, "chunk_files_of", lambda array: None):
        yield


def array_gib(path: str) -> float:
    """Size of the array at ``path`` in GiB."""
    return zarr.open_array(path, mode="r").nbytes / 2**30


def _fit(client: Client, path: str, args: argparse.Namespace, variant: Variant) -> dict:
    client.run(_configure_worker, variant)
    client.run(reset_peak_rss)
    model = KMeans(
        args.n_clusters,
        init="k-means++",
        random_state=0,
        max_iter=args.max_iter,
        tol=0.0,
        engine=variant.engine,
        persist=False,
    )
    (cpu,) = client.run(cpu_seconds).values()
    started = time.perf_counter()
    with _reading(variant):
        model.fit(path)
    seconds = time.perf_counter() - started
    (cpu_after,) = client.run(cpu_seconds).values()
    # The k-means++ sample (which checks the data too), the iterations, and
    # the final pass unless the last iteration moved no centre.
    passes = 1 + model.n_iter_ + int(model.history_[-1].center_shift > 0)
    return {
        "fit_seconds": seconds,
        "passes": passes,
        "cpu_per_gib": (cpu_after - cpu) / (passes * array_gib(path)),
        "iteration": statistics.median(r.seconds for r in model.history_),
        "peak": max(client.run(peak_rss).values()),
        "inertia": model.inertia_,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--path", default="/tmp/kmeans_dask_ooc.zarr", help="Zarr array path")
    parser.add_argument("--gib", type=float, default=2.0, help="size of the array in GiB")
    parser.add_argument("--n-features", type=int, default=16, help="columns")
    parser.add_argument("--n-clusters", type=int, default=16, help="k")
    parser.add_argument("--chunk-rows", type=int, default=100_000, help="rows per Zarr chunk")
    parser.add_argument("--no-compress", action="store_true", help="write the store uncompressed")
    parser.add_argument("--memory-limit", default="500MiB", help="the worker's memory limit")
    parser.add_argument("--threads", type=int, default=2, help="worker threads")
    parser.add_argument("--max-iter", type=int, default=5, help="Lloyd iterations (tol=0)")
    parser.add_argument("--repeats", type=int, default=3, help="rounds of all measurements")
    parser.add_argument(
        "--passes",
        nargs="+",
        choices=[variant.name for variant in VARIANTS],
        default=[variant.name for variant in VARIANTS],
        help="the streamed passes to measure (first word of each)",
    )
    parser.add_argument(
        "--raw-in-worker",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also measure the raw rate inside the worker",
    )
    args = parser.parse_args()
    warnings.filterwarnings("ignore", category=ConvergenceWarning)  # tol=0 on purpose
    variants = [variant for variant in VARIANTS if variant.name in args.passes]

    n_samples = int(args.gib * 2**30 / (4 * args.n_features)) // args.chunk_rows * args.chunk_rows
    if not os.path.exists(args.path):
        started = time.perf_counter()
        write_blobs_zarr(
            args.path,
            n_samples,
            args.n_features,
            args.n_clusters,
            chunk_rows=args.chunk_rows,
            cluster_std=3.0,
            random_state=0,
            compress=not args.no_compress,
        )
        print(f"wrote {args.path} in {time.perf_counter() - started:.1f} s")
    array = zarr.open_array(args.path, mode="r")
    limit = parse_bytes(args.memory_limit)
    stored = sum(
        os.path.getsize(os.path.join(root, name))
        for root, _, names in os.walk(args.path)
        for name in names
    )
    print(
        f"array: {array.shape} {array.dtype}, chunks {array.chunks}, "
        f"{array.nbytes / 2**30:.2f} GiB ({stored / array.nbytes:.0%} on disk) "
        f"= {array.nbytes / limit:.1f} x the worker memory limit ({args.memory_limit})"
    )

    rates: dict[str, list[float]] = defaultdict(list)
    cpu: dict[str, list[float]] = defaultdict(list)
    fits: dict[str, list[dict]] = defaultdict(list)
    with (
        LocalCluster(
            n_workers=1,
            threads_per_worker=args.threads,
            memory_limit=limit,
            host="127.0.0.1",
            dashboard_address=":0",
        ) as cluster,
        Client(cluster) as client,
    ):
        # Compile the kernels in the worker first: that is no part of a pass.
        KMeans(args.n_clusters, max_iter=1, n_init=1).fit(array[: 2 * args.chunk_rows])
        for repeat in range(args.repeats):
            for label, files in [("here", False), ("here, chunk files", True)]:
                rate, cost = read_rate(args.path, args.threads, files=files)
                rates[label].append(rate)
                cpu[label].append(cost)
            if args.raw_in_worker:
                # client.run, not a task: a worker paused near its memory
                # limit runs no task until its memory falls.
                for label, heap_buffers, files in IN_WORKER_RATES:
                    ((rate, cost),) = client.run(
                        read_rate, args.path, args.threads, heap_buffers, files
                    ).values()
                    rates[label].append(rate)
                    cpu[label].append(cost)
            order = variants if repeat % 2 == 0 else variants[::-1]
            for variant in order:
                fits[variant.label].append(_fit(client, args.path, args, variant))
            print(f"repeat {repeat + 1} of {args.repeats} done (load {os.getloadavg()[0]:.1f})")

    raw = statistics.median(rates["here"])
    raw_files = statistics.median(rates["here, chunk files"])

    def cost(label: str) -> str:
        return f"{statistics.median(cpu[label]):.2f} CPU s/GiB"

    print(
        f"raw read + decompress ({args.threads} threads), here: {raw / 2**20:,.0f} MiB/s, "
        f"{cost('here')}"
    )
    print(
        f"  ... from the chunk files: {raw_files / 2**20:,.0f} MiB/s ({raw_files / raw:.0%}), "
        f"{cost('here, chunk files')}"
    )
    if args.raw_in_worker:
        for label, _, _ in IN_WORKER_RATES:
            in_worker = statistics.median(rates[label])
            print(
                f"  ... inside the {label}: {in_worker / 2**20:,.0f} MiB/s "
                f"({in_worker / raw:.0%}), {cost(label)}"
            )
    print(f"medians of {args.repeats}; 'of raw': of zarr's raw rate here, then of the files'")
    print(
        "| pass | median iteration | of raw | of files' raw | whole fit | of raw "
        "| worker CPU s/GiB per pass | worker peak RSS |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for variant in variants:
        label = variant.label
        runs = fits[label]
        iteration = array.nbytes / statistics.median(r["iteration"] for r in runs)
        whole = statistics.median(array.nbytes * r["passes"] / r["fit_seconds"] for r in runs)
        peak = max(r["peak"] for r in runs)
        fit_seconds = statistics.median(r["fit_seconds"] for r in runs)
        pass_cost = statistics.median(r["cpu_per_gib"] for r in runs)
        print(f"{label}: whole fit {fit_seconds:.1f} s")
        print(
            f"| {label} | {iteration / 2**20:,.0f} MiB/s | {iteration / raw:.0%} "
            f"| {iteration / raw_files:.0%} | {whole / 2**20:,.0f} MiB/s | {whole / raw:.0%} "
            f"| {pass_cost:.2f} | {peak / 2**20:,.0f} of {limit / 2**20:,.0f} MiB |"
        )
    inertias = {r["inertia"] for runs in fits.values() for r in runs}
    print(f"inertia the same in every fit: {len(inertias) == 1}")


if __name__ == "__main__":
    main()
