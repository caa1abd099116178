"""CPU cost of reading the same rows stored with other codecs and chunk sizes.

Copies the first ``--rows`` rows of a 2-D float32 Zarr array into one store
per variant (Zstandard level 0, Zarr's default; no compression; Blosc-LZ4
with byte shuffle; Zstandard with smaller and larger chunks), then reads
each back with 2 threads, 3 times, and prints the median rate and the
process CPU seconds per GiB read. CPU time is what a loaded machine
distorts least. Run it once as it is and once with
``MALLOC_TRIM_THRESHOLD_=65536`` (what distributed's nanny gives a worker).

Usage::

    python scripts/bench_store_codecs.py --source /tmp/ooc.zarr --work /tmp/codecs
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import time
from concurrent.futures import ThreadPoolExecutor

import zarr
from zarr.codecs import BloscCodec

#: name -> (rows per chunk, compressors as zarr.create_array takes them)
VARIANTS = {
    "zstd-0, 100k rows": (100_000, "auto"),
    "none, 100k rows": (100_000, None),
    "blosc-lz4, 100k rows": (100_000, [BloscCodec(cname="lz4", clevel=5, shuffle="shuffle")]),
    "zstd-0, 25k rows": (25_000, "auto"),
    "zstd-0, 400k rows": (400_000, "auto"),
}


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", required=True, help="a 2-D Zarr array to copy rows from")
    parser.add_argument("--work", default="/tmp/kmeans_dask_codecs", help="folder for the copies")
    parser.add_argument("--rows", type=int, default=6_400_000, help="rows copied")
    args = parser.parse_args()
    source = zarr.open_array(args.source, mode="r")
    print("| codec, chunk | on disk | read rate | CPU s/GiB |")
    print("| --- | --- | --- | --- |")
    for name, (chunk_rows, compressors) in VARIANTS.items():
        path = os.path.join(args.work, name.replace(", ", "-").replace(" ", ""))
        if not os.path.exists(path):
            array = zarr.create_array(
                path,
                shape=(args.rows, source.shape[1]),
                chunks=(chunk_rows, source.shape[1]),
                dtype=source.dtype,
                compressors=compressors,
            )
            for start in range(0, args.rows, 400_000):
                array[start : start + 400_000] = source[start : min(start + 400_000, args.rows)]
        array = zarr.open_array(path, mode="r")
        stored = sum(
            os.path.getsize(os.path.join(root, file))
            for root, _, files in os.walk(path)
            for file in files
        )
        rates, costs = [], []
        for _ in range(3):
            cpu, started = _cpu_seconds(), time.perf_counter()
            with ThreadPoolExecutor(2) as pool:
                starts = range(0, args.rows, chunk_rows)
                list(pool.map(lambda s, a=array, r=chunk_rows: a[s : s + r].sum(), starts))
            rates.append(array.nbytes / (time.perf_counter() - started))
            costs.append((_cpu_seconds() - cpu) / (array.nbytes / 2**30))
        print(
            f"| {name} | {stored / array.nbytes:.0%} | "
            f"{statistics.median(rates) / 2**20:,.0f} MiB/s | {statistics.median(costs):.2f} |"
        )


if __name__ == "__main__":
    main()
