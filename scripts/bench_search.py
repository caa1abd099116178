"""Nearest-centre search alone, on one thread: kmeans_dask's kernels against the peers'.

For a grid of centre counts ``k`` and feature counts ``d`` it times, on the
same float32 rows and centres, in interleaved repeats:

* ``fused``: kmeans_dask's register kernels (``RowSearcher``), which score a
  few rows at a time in vector registers with no score matrix in memory;
* ``column``: kmeans_dask's BLAS path (``ColumnSearcher``), a GEMM into a
  centres-by-rows buffer and a vectorised argmin;
* ``faiss``: ``faiss.IndexFlatL2.search(x, 1)`` (exact, one OpenMP thread);
* ``sklearn``: ``sklearn.metrics.pairwise_distances_argmin`` (one BLAS thread).

It prints milliseconds per million rows, each peer's time over ``fused``,
the fused kernels' GFLOP/s (``2 n k d / s``) and which searcher
``exact_searcher`` picks for the shape (the thresholds in
``kmeans_dask/backends/numpy_blas.py`` come from this table).

Usage::

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python scripts/bench_search.py
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np
from threadpoolctl import threadpool_limits

from kmeans_dask.backends.numpy_blas import ColumnSearcher, RowSearcher, exact_searcher
from kmeans_dask.benchmark.schedule import run_order

#: Multiply-adds per timed call: rows are scaled to keep each call near this size.
MULTIPLY_ADDS_PER_CALL = 2e9


def searchers(X: np.ndarray, centers: np.ndarray) -> dict[str, Callable[[], np.ndarray]]:
    """The implementations to time, each a no-argument call returning labels."""
    import faiss
    from sklearn.metrics import pairwise_distances_argmin

    fused, column = RowSearcher(centers), ColumnSearcher(centers)
    index = faiss.IndexFlatL2(centers.shape[1])
    index.add(centers)
    return {
        "fused": lambda: fused.nearest(X),
        "column": lambda: column.nearest(X),
        "faiss": lambda: index.search(X, 1)[1].ravel(),
        "sklearn": lambda: pairwise_distances_argmin(X, centers),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--centers", default="4,16,64,256,1024,2048", help="k values, comma-separated"
    )
    parser.add_argument("--features", default="8,32,64,128", help="d values, comma-separated")
    parser.add_argument("--max-rows", type=int, default=125_000, help="rows per call at most")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    import faiss

    from kmeans_dask.benchmark.machine import environment_info, machine_line

    faiss.omp_set_num_threads(1)
    print(machine_line(environment_info()))
    rng = np.random.default_rng(0)
    print("| k | d | rows | fused ms/1M rows | GFLOP/s | column | faiss | sklearn | auto picks |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    with threadpool_limits(limits=1):
        for d in (int(v) for v in args.features.split(",")):
            for k in (int(v) for v in args.centers.split(",")):
                n = max(k, int(min(args.max_rows, max(1000, MULTIPLY_ADDS_PER_CALL // (k * d)))))
                X = rng.standard_normal((n, d), dtype=np.float32)
                centers = X[rng.choice(n, size=k, replace=False)].copy()
                calls = searchers(X, centers)
                expected = calls["fused"]()
                agree = {name: float(np.mean(call() == expected)) for name, call in calls.items()}
                seconds: dict[str, list[float]] = {name: [] for name in calls}
                for repeat in range(args.repeats):
                    for name in run_order(list(calls), repeat):
                        start = time.perf_counter()
                        calls[name]()
                        seconds[name].append(time.perf_counter() - start)
                median = {name: statistics.median(values) for name, values in seconds.items()}
                ours = median["fused"]
                ratios = " | ".join(
                    f"{median[name] / ours:.2f}x" + ("" if agree[name] > 0.999 else " (!)")
                    for name in ("column", "faiss", "sklearn")
                )
                picked = type(exact_searcher(centers)).__name__.removesuffix("Searcher").lower()
                print(
                    f"| {k} | {d} | {n} | {ours / n * 1e9:.1f} | {2 * n * k * d / ours / 1e9:.0f}"
                    f" | {ratios} | {'fused' if picked == 'row' else picked} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
