"""Component benchmark: one chunk's pass among the moved centres against a full pass.

After an exact pass, a row whose centre did not move (or moved nearer to
it) is searched among the centres that moved alone
(:mod:`kmeans_dask._worker.moved_centers`). This
times, on one thread and one chunk of float32 blobs, the plain exact pass
(``tasks.chunk_stats``, ``"numpy"`` search) and the pass from the previous
labels (``tasks.stats_from_moved_centers``) with the first ``m`` centres
moved, for several shapes and shares of moved centres, and prints the
ratio. It chose ``MOVED_CENTERS_MAX_SHARE`` and
``MOVED_CENTERS_MIN_CLUSTERS`` (``kmeans_dask/_fit/lloyd.py``). Whole fits
are measured by ``scripts/bench_assign_fit.py``.

Usage::

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE OPENBLAS_NUM_THREADS=1 \\
        python scripts/bench_moved_centers.py
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from kmeans_dask._worker import tasks
from kmeans_dask._worker.host_ops import host_ops
from kmeans_dask.benchmark.data import initial_centers, make_blobs
from kmeans_dask.benchmark.machine import environment_info

#: Rows x features x k of each chunk timed, by default.
SHAPES = "250000x32x64,250000x32x256,50000x128x2048,25000x128x16384"


def best_seconds(run, repeats: int) -> float:
    """The fastest of ``repeats`` calls of ``run`` (which returns its own seconds)."""
    return min(run() for _ in range(repeats))


def time_shape(n_rows: int, n_features: int, k: int, shares, repeats: int) -> list[str]:
    """Table rows for one chunk shape: the plain pass and each share of moved centres."""
    X = make_blobs(n_rows, n_features, k, 0)
    centers = initial_centers(X, k, 0)
    chunk = host_ops().place(X, None, 0, np.float32)

    def plain() -> float:
        start = time.perf_counter()
        tasks.chunk_stats(chunk, centers, "numpy")
        return time.perf_counter() - start

    plain_seconds = best_seconds(plain, repeats)
    rows = []
    for share in shares:
        moved = np.arange(max(1, int(share * k)), dtype=np.int32)
        after = centers.copy()
        after[moved] += np.float32(0.01)

        def among_moved(moved=moved, after=after) -> float:
            tasks.stats_keeping_labels(chunk, centers, "numpy", None, "previous")
            start = time.perf_counter()
            tasks.stats_from_moved_centers(
                chunk, after, "numpy", "new", "previous", moved, centers[moved]
            )
            seconds = time.perf_counter() - start
            tasks.LABELS.take(chunk, "new")
            return seconds

        seconds = best_seconds(among_moved, repeats)
        rows.append(
            f"| {n_rows} x {n_features} | {k} | {moved.size} ({moved.size / k:.1%}) | "
            f"{plain_seconds * 1e3:.1f} | {seconds * 1e3:.1f} | {seconds / plain_seconds:.2f} |"
        )
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shapes", default=SHAPES, help="rows x features x k, comma-separated")
    parser.add_argument("--shares", default="0,0.0625,0.25,0.5", help="shares of moved centres")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    shares = [float(value) for value in args.shares.split(",")]
    info = environment_info()
    print(f"{info['date']}, {info['cpu_model']}, component benchmark, one thread")
    print("| chunk | k | moved centres | full pass ms | among the moved ms | ratio |")
    print("|---|---:|---:|---:|---:|---:|")
    for shape in args.shapes.split(","):
        n_rows, n_features, k = (int(value) for value in shape.split("x"))
        for row in time_shape(n_rows, n_features, k, shares, args.repeats):
            print(row)


if __name__ == "__main__":
    main()
