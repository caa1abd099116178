"""Component benchmark: reading a Zarr store under the allocator settings a Dask worker has.

distributed's nanny starts workers with ``MALLOC_TRIM_THRESHOLD_=65536``;
:mod:`kmeans_dask._worker.allocator` lifts glibc's thresholds while a
streamed pass runs. This reads every chunk of a store with ``--threads``
threads, in a fresh process per setting, turn about, and reports for each the
rate, the user and kernel CPU time per GiB and the minor page faults:

* ``plain``: glibc's adaptive thresholds (no variable set);
* ``nanny``: ``MALLOC_TRIM_THRESHOLD_=65536``, as in a worker;
* ``nanny, mmap threshold only``: the same plus ``MALLOC_MMAP_THRESHOLD_``
  at 32 MiB, the trim threshold left at 64 KiB;
* ``nanny + streaming_allocations``: the nanny's setting, the chunks read
  under :func:`~kmeans_dask._worker.allocator.streaming_allocations`.

Usage::

    python scripts/bench_allocator.py --path /tmp/ooc.zarr --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

NANNY = {"MALLOC_TRIM_THRESHOLD_": "65536"}
#: (label, environment, whether to read under streaming_allocations)
SETTINGS = [
    ("plain", {}, False),
    ("nanny", NANNY, False),
    ("nanny, mmap threshold only", {**NANNY, "MALLOC_MMAP_THRESHOLD_": str(32 * 2**20)}, False),
    ("nanny + streaming_allocations", NANNY, True),
]

#: Run in a fresh process: read the store, print the measures as JSON.
READER = """
import json, resource, sys, time
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
import zarr
from kmeans_dask._worker.allocator import streaming_allocations

path, threads, tuned = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1"
array = zarr.open_array(path, mode="r")
rows = array.chunks[0]
block_bytes = rows * array.shape[1] * array.dtype.itemsize
before, started = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
with streaming_allocations(block_bytes) if tuned else nullcontext():
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(lambda s: array[s : s + rows].sum(), range(0, array.shape[0], rows)))
seconds, after = time.perf_counter() - started, resource.getrusage(resource.RUSAGE_SELF)
gib = array.nbytes / 2**30
print(json.dumps({
    "rate": array.nbytes / 2**20 / seconds,
    "user": (after.ru_utime - before.ru_utime) / gib,
    "system": (after.ru_stime - before.ru_stime) / gib,
    "faults": after.ru_minflt - before.ru_minflt,
}))
"""


def read_once(path: str, threads: int, environment: dict[str, str], tuned: bool) -> dict:
    """The measures of one read of the store in a fresh process."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    result = subprocess.run(
        [sys.executable, "-c", READER, path, str(threads), "1" if tuned else "0"],
        env={**clean, **environment},
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(result.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--path", required=True, help="a Zarr array")
    parser.add_argument("--threads", type=int, default=2, help="reading threads")
    parser.add_argument("--repeats", type=int, default=3, help="reads per setting")
    args = parser.parse_args()
    runs: dict[str, list[dict]] = {label: [] for label, _, _ in SETTINGS}
    read_once(args.path, args.threads, {}, False)  # the page cache, warm
    for _ in range(args.repeats):
        for label, environment, tuned in SETTINGS:
            runs[label].append(read_once(args.path, args.threads, environment, tuned))
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    print(f"{args.path}, {args.threads} threads, medians of {args.repeats} (load {load})")
    print("| allocator | rate | user CPU s/GiB | kernel CPU s/GiB | minor faults |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for label, measures in runs.items():

        def median(key: str, measures: list[dict] = measures) -> float:
            return statistics.median(m[key] for m in measures)

        print(
            f"| {label} | {median('rate'):,.0f} MiB/s | {median('user'):.2f} "
            f"| {median('system'):.2f} | {median('faults'):,.0f} |"
        )


if __name__ == "__main__":
    main()
