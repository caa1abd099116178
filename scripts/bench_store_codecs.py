"""CPU cost of reading the same rows stored with other codecs and chunk sizes.

Copies the first ``--rows`` rows of a 2-D float32 Zarr array into one store
per variant (Zstandard level 0, Zarr's default; no compression; Blosc-LZ4
with byte shuffle; Zstandard with smaller and larger chunks), then reads
each back with 2 threads, 3 times, through zarr and straight from the chunk
files as a streamed pass does (:mod:`kmeans_dask._io.chunk_files`), and
prints the median rate and the process CPU seconds per GiB read. CPU time is what a loaded machine
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

from kmeans_dask._io.chunk_files import chunk_files_of

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


def read_cost(array: zarr.Array, chunk_rows: int, files: bool) -> tuple[float, float]:
    """Median rate (bytes/s) and CPU seconds per GiB of 3 reads of ``array`` by 2 threads."""
    chunk_files = chunk_files_of(array) if files else None

    def read(start: int) -> float:
        if chunk_files is None:
            return array[start : start + chunk_rows].sum()
        return chunk_files.read(start, chunk_rows).sum()

    rates, costs = [], []
    for _ in range(3):
        cpu, started = _cpu_seconds(), time.perf_counter()
        with ThreadPoolExecutor(2) as pool:
            list(pool.map(read, range(0, array.shape[0], chunk_rows)))
        rates.append(array.nbytes / (time.perf_counter() - started))
        costs.append((_cpu_seconds() - cpu) / (array.nbytes / 2**30))
    return statistics.median(rates), statistics.median(costs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", required=True, help="a 2-D Zarr array to copy rows from")
    parser.add_argument("--work", default="/tmp/kmeans_dask_codecs", help="folder for the copies")
    parser.add_argument("--rows", type=int, default=6_400_000, help="rows copied")
    args = parser.parse_args()
    source = zarr.open_array(args.source, mode="r")
    print("| codec, chunk | on disk | zarr: rate | CPU s/GiB | chunk files: rate | CPU s/GiB |")
    print("| --- | --- | --- | --- | --- | --- |")
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
        (zarr_rate, zarr_cost), (files_rate, files_cost) = (
            read_cost(array, chunk_rows, files) for files in (False, True)
        )
        print(
            f"| {name} | {stored / array.nbytes:.0%} "
            f"| {zarr_rate / 2**20:,.0f} MiB/s | {zarr_cost:.2f} "
            f"| {files_rate / 2**20:,.0f} MiB/s | {files_cost:.2f} |"
        )


if __name__ == "__main__":
    main()
