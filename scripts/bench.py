"""Benchmark kmeans_dask against faiss, scikit-learn, dask-ml and (optionally) Spark MLlib.

All implementations cluster the same generated blobs from the same initial
centres for a fixed number of Lloyd iterations, in interleaved repeats; the
script prints seconds per iteration, final inertia, the speed ratio to each
peer, and the machine's SGEMM throughput with our assignment step as a
fraction of it. The same benchmark is ``kmeans-dask bench``.

Usage::

    python scripts/bench.py --help
    python scripts/bench.py --n-samples 100000 --iterations 3 --repeats 1   # quick check
    python scripts/bench.py --with-spark --json results.json --markdown     # needs pyspark

For figures to publish (benchmarks/RESULTS.md), run it without OpenBLAS
core-type overrides, and say so next to the figures::

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python scripts/bench.py --markdown
"""

from kmeans_dask.benchmark import main

# The guard matters: LocalCluster starts its workers with "spawn", which
# re-imports this file in every worker process.
if __name__ == "__main__":
    raise SystemExit(main())
