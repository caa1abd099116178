"""Out-of-core throughput: a Zarr array larger than the workers' memory.

Writes (once) a Zarr array of Gaussian blobs several times larger than the
memory limit of a one-worker LocalCluster, then measures in the same run:

* the raw rate at which the store can be read and decompressed (every chunk
  read with ``zarr`` by as many threads as the worker has), and
* the rate at which ``KMeans(persist=False)`` streams it: bytes of the array
  times the passes over it (one check pass, the k-means++ sample pass, one
  per Lloyd iteration and the final pass), divided by the fit's wall time,

and the peak resident memory of the worker against its limit.

Usage::

    python scripts/bench_out_of_core.py --path /tmp/ooc.zarr --gib 2 --memory-limit 500MiB
"""

from __future__ import annotations

import argparse
import os
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import zarr
from dask.utils import parse_bytes
from distributed import Client, LocalCluster

from kmeans_dask import KMeans
from kmeans_dask.benchmark.memory import peak_rss
from kmeans_dask.datasets import write_blobs_zarr


def read_rate(path: str, threads: int) -> float:
    """Bytes per second to read and decompress every chunk of the array."""
    array = zarr.open_array(path, mode="r")
    rows = array.chunks[0]
    starts = range(0, array.shape[0], rows)
    started = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(lambda s: array[s : s + rows].sum(), starts))
    return array.nbytes / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--path", default="/tmp/kmeans_dask_ooc.zarr", help="Zarr array path")
    parser.add_argument("--gib", type=float, default=2.0, help="size of the array in GiB")
    parser.add_argument("--n-features", type=int, default=16, help="columns")
    parser.add_argument("--n-clusters", type=int, default=16, help="k")
    parser.add_argument("--memory-limit", default="500MiB", help="the worker's memory limit")
    parser.add_argument("--threads", type=int, default=2, help="worker threads")
    parser.add_argument("--max-iter", type=int, default=5, help="Lloyd iterations (tol=0)")
    args = parser.parse_args()

    chunk_rows = 100_000
    n_samples = int(args.gib * 2**30 / (4 * args.n_features)) // chunk_rows * chunk_rows
    if not os.path.exists(args.path):
        started = time.perf_counter()
        write_blobs_zarr(
            args.path,
            n_samples,
            args.n_features,
            args.n_clusters,
            chunk_rows=chunk_rows,
            cluster_std=3.0,
            random_state=0,
        )
        print(f"wrote {args.path} in {time.perf_counter() - started:.1f} s")
    array = zarr.open_array(args.path, mode="r")
    limit = parse_bytes(args.memory_limit)
    print(
        f"array: {array.shape} {array.dtype}, {array.nbytes / 2**30:.2f} GiB "
        f"= {array.nbytes / limit:.1f} x the worker memory limit ({args.memory_limit})"
    )

    raw = read_rate(args.path, args.threads)
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
        model = KMeans(
            args.n_clusters, init="k-means++", random_state=0, max_iter=args.max_iter, tol=0.0
        )
        started = time.perf_counter()
        model.fit(args.path)
        seconds = time.perf_counter() - started
        peak = max(client.run(peak_rss).values())
    passes = 2 + model.n_iter_ + 1
    streamed = array.nbytes * passes / seconds
    per_iteration = np.median([r.seconds for r in model.history_])
    print(f"raw read + decompress ({args.threads} threads): {raw / 2**20:,.0f} MiB/s")
    print(
        f"streamed fit: {passes} passes in {seconds:.1f} s = {streamed / 2**20:,.0f} MiB/s "
        f"({streamed / raw:.0%} of the raw rate); median iteration {per_iteration:.2f} s "
        f"= {array.nbytes / per_iteration / 2**20:,.0f} MiB/s"
    )
    print(f"worker peak RSS {peak / 2**20:,.0f} MiB of a {limit / 2**20:,.0f} MiB limit")


if __name__ == "__main__":
    main()
