"""Lloyd iterations on a GPU through ``KMeans.fit``, against a plain CuPy loop, side by side.

    python scripts/bench_gpu.py                 # on a machine with an NVIDIA GPU
    python scripts/bench_gpu.py --dry-run       # anywhere: tiny shapes, NumPy, same wiring

For each shape, the data is made on the workers as CuPy blocks (never on
the host), ``KMeans(backend="cupy")`` runs a fixed number of iterations from
the same centres on a LocalCluster of one worker per GPU (``--workers``
sharing it), and the per-iteration time is the median of ``history_`` after
the first. The peer is the loop a CuPy user writes: per block of rows a
cuBLAS GEMM for the scores, ``argmin``, ``bincount`` and a scatter-add for
the sums, on one GPU from the same centres. Prints a Markdown table with the
GPU's name and the ratio plain / ours (> 1: ours faster).
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning

SHAPES = [
    # n_samples, n_features, n_clusters
    (10_000_000, 128, 1024),
    (10_000_000, 32, 64),
]
DRY_SHAPES = [(20_000, 16, 32), (20_000, 8, 8)]
ROW_BLOCK = 1_000_000


def _plain_cupy_iteration(xp, X, centers, row_block: int) -> tuple[float, object]:
    """One Lloyd iteration as a plain CuPy loop; seconds and the new centres."""
    import cupyx

    k, d = centers.shape
    start = time.perf_counter()
    sums = xp.zeros((k, d), dtype=xp.float64)
    counts = xp.zeros(k, dtype=xp.float64)
    norms = (centers * centers).sum(axis=1)
    for first in range(0, X.shape[0], row_block):
        block = X[first : first + row_block]
        labels = xp.argmin(norms[None, :] - 2.0 * (block @ centers.T), axis=1)
        counts += xp.bincount(labels, minlength=k)
        cupyx.scatter_add(sums, labels, block.astype(xp.float64))
    new = (sums / xp.maximum(counts, 1.0)[:, None]).astype(centers.dtype)
    xp.cuda.Stream.null.synchronize()
    return time.perf_counter() - start, new


def _data(n: int, d: int, k: int, chunk_rows: int, gpu: bool):
    import dask.array as da

    if gpu:
        import cupy

        state = da.random.RandomState(seed=0, RandomState=cupy.random.RandomState)
    else:
        state = da.random.RandomState(seed=0)
    X = state.standard_normal((n, d), chunks=(chunk_rows, d)).astype(np.float32)
    init = np.random.default_rng(0).standard_normal((k, d)).astype(np.float32)
    return X, init


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="tiny shapes on the CPU")
    parser.add_argument("--iterations", type=int, default=6)
    parser.add_argument("--workers", type=int, default=1, help="workers (sharing the GPUs)")
    args = parser.parse_args()
    warnings.filterwarnings("ignore", category=ConvergenceWarning)  # tol=0: a fixed count
    from distributed import Client, LocalCluster

    from kmeans_dask import KMeans

    gpu = not args.dry_run
    shapes = DRY_SHAPES if args.dry_run else SHAPES
    device = "CPU (dry run)"
    if gpu:
        import cupy

        device = cupy.cuda.runtime.getDeviceProperties(0)["name"].decode()
    print(f"device: {device}")
    print("| n x d, k | ours per iteration (s) | plain CuPy per iteration (s) | plain / ours |")
    print("|---|---|---|---|")
    with (
        LocalCluster(n_workers=args.workers, threads_per_worker=1, dashboard_address=":0") as c,
        Client(c) as client,
    ):
        for n, d, k in shapes:
            chunk_rows = max(n // (4 * args.workers), 1)
            X, init = _data(n, d, k, chunk_rows, gpu)
            X = client.persist(X)
            model = KMeans(
                k,
                init=init,
                max_iter=args.iterations,
                tol=0,
                backend="cupy" if gpu else "auto",
            ).fit(X)
            ours = statistics.median(r.seconds for r in model.history_[1:])
            plain = float("nan")
            if gpu:
                import cupy

                local = cupy.asarray(X.compute())  # one GPU holds it all for the plain loop
                centers = cupy.asarray(init)
                times = []
                for _ in range(args.iterations):
                    seconds, centers = _plain_cupy_iteration(cupy, local, centers, ROW_BLOCK)
                    times.append(seconds)
                plain = statistics.median(times[1:])
                del local
            print(f"| {n:,} x {d}, k = {k} | {ours:.4f} | {plain:.4f} | {plain / ours:.2f} |")
            del X


if __name__ == "__main__":
    main()
