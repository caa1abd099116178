"""Per-row statistics alone, on one thread: kmeans_dask's kernel against plain loops.

After the search, every row of a Lloyd pass is added into its cluster's
float64 sums and its exact squared distance to its centre is computed. For
a grid of feature counts ``d`` it times, on the same float32 rows, labels
(64 clusters) and float64 centres, in interleaved repeats:

* ``ours``: ``kmeans_dask._kernels.block_kernels.accumulate``, generated code working on
  one register of float64 lanes (eight with AVX-512, else four) with a
  masked last step (``kmeans_dask/_kernels/row_statistics.py``);
* ``loop``: the same loop written plainly in Numba (``fastmath`` reassociation,
  so LLVM vectorises it as it chooses: what kmeans_dask used before);
* ``numpy``: ``np.add.at`` for the sums and ``((X - C[labels]) ** 2).sum(1)``.

Each is called as kmeans_dask's passes call it, block by block of
``--block-rows`` rows, in two settings: a whole chunk of ``--rows`` rows
read from memory (a Hamerly pass, which searches few rows) and one block
over and over, in cache (a plain pass, which has just searched the block).
``ours`` and ``loop`` are interleaved; ``numpy`` is timed after them: its
large temporaries push the rows out of the caches and slowed whichever
kernel ran next.
Sums and centres start at a multiple of 64 bytes, as in the passes, or
``--offset`` bytes past one. Each timing covers ``--calls`` passes in a row:
alternating 512-bit with narrower code call by call would time the
processor's switches between them, which a real pass, whose search kernels
run 512-bit code too, does not make. It prints milliseconds per million
rows, each peer's time over ``ours`` in both settings, and whether the
peers' sums are bit for bit ours (``loop`` must be).

Usage::

    python scripts/bench_statistics.py
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numba
import numpy as np

from kmeans_dask._kernels.block_kernels import accumulate
from kmeans_dask._kernels.row_statistics import aligned_zeros
from kmeans_dask.benchmark.schedule import run_order

N_CLUSTERS = 64


@numba.njit(nogil=True, fastmath={"reassoc", "contract", "nsz"})
def plain_loop(block, labels, centers, sums, counts, sq_dist):
    """The statistics as a plain Numba loop over rows and features."""
    inertia = 0.0
    for i in range(block.shape[0]):
        label = labels[i]
        counts[label] += 1.0
        dist = 0.0
        for f in range(block.shape[1]):
            x = np.float64(block[i, f])
            sums[label, f] += x
            diff = x - centers[label, f]
            dist += diff * diff
        sq_dist[i] = dist
        inertia += dist
    return inertia


def numpy_statistics(block, labels, centers, sums, counts, sq_dist):
    """The statistics with NumPy's unbuffered scatter-add."""
    rows = block.astype(np.float64)
    np.add.at(sums, labels, rows)
    counts += np.bincount(labels, minlength=len(counts))
    sq_dist[:] = ((rows - centers[labels]) ** 2).sum(1)
    return float(sq_dist.sum())


def ours(block, labels, centers, sums, counts, sq_dist):
    """kmeans_dask's statistics (unit weights)."""
    return accumulate(block, labels, None, centers, sums, counts, sq_dist)


def float64_at(shape: tuple[int, int], offset: int) -> np.ndarray:
    """Zeros of ``shape`` starting ``offset`` bytes past a multiple of 64."""
    size = shape[0] * shape[1]
    buffer = aligned_zeros((size + offset // 8,))
    return buffer[offset // 8 :].reshape(shape)


def passes(
    statistics_of: Callable, X, labels, centers, block_rows: int, calls: int, offset: int
) -> Callable[[], np.ndarray]:
    """A no-argument call: ``calls`` passes over X block by block, returning the sums."""

    def call() -> np.ndarray:
        sums = float64_at((N_CLUSTERS, X.shape[1]), offset)
        counts, sq_dist = np.zeros(N_CLUSTERS), np.empty(len(X))
        for _ in range(calls):
            for start in range(0, len(X), block_rows):
                rows = slice(start, start + block_rows)
                statistics_of(X[rows], labels[rows], centers, sums, counts, sq_dist[rows])
        return sums

    return call


def timed(calls: dict[str, Callable[[], np.ndarray]], repeats: int) -> dict[str, float]:
    """Median seconds of each call over interleaved repeats."""
    seconds: dict[str, list[float]] = {name: [] for name in calls}
    for repeat in range(repeats):
        for name in run_order(list(calls), repeat):
            start = time.perf_counter()
            calls[name]()
            seconds[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in seconds.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--features", default="5,8,16,32,64,128", help="d values, comma-separated")
    parser.add_argument("--rows", type=int, default=125_000, help="rows of the chunk")
    parser.add_argument("--block-rows", type=int, default=4096, help="rows per call")
    parser.add_argument("--calls", type=int, default=5, help="passes per timing")
    parser.add_argument("--offset", type=int, default=0, help="bytes past 64-byte alignment")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args(argv)
    if args.offset % 8:
        parser.error(f"--offset must be a multiple of 8 bytes, got {args.offset}")
    implementations = {"ours": ours, "loop": plain_loop, "numpy": numpy_statistics}
    rng = np.random.default_rng(0)
    print(
        "| d | chunk: ours ms/1M rows | loop | numpy "
        "| cached block: ours ms/1M rows | loop | numpy | same sums as ours |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---|")
    for d in (int(v) for v in args.features.split(",")):
        X = rng.standard_normal((args.rows, d), dtype=np.float32)
        labels = rng.integers(N_CLUSTERS, size=args.rows).astype(np.int32)
        centers = float64_at((N_CLUSTERS, d), args.offset)
        centers[...] = rng.standard_normal((N_CLUSTERS, d))
        cells = []
        same: list[str] = []
        for rows, calls in ((args.rows, args.calls), (args.block_rows, args.calls * 20)):
            runs = {
                name: passes(
                    f, X[:rows], labels[:rows], centers, args.block_rows, calls, args.offset
                )
                for name, f in implementations.items()
            }
            expected = runs["ours"]()
            same = [name for name, run in runs.items() if np.array_equal(run(), expected)]
            numpy_run = runs.pop("numpy")
            median = timed(runs, args.repeats) | timed({"numpy": numpy_run}, args.repeats)
            base = median["ours"]
            cells += [
                f"{base / (rows * calls) * 1e9:.2f}",
                f"{median['loop'] / base:.2f}x",
                f"{median['numpy'] / base:.2f}x",
            ]
        print(f"| {d} | {' | '.join(cells)} | {', '.join(same)} |", flush=True)


if __name__ == "__main__":
    main()
