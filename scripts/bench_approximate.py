"""Benchmark approximate nearest-centre assignment (IVF, HNSW) against exact search.

For every (k, d) configuration the script generates one data set, draws k
random rows as the initial centres, and runs the same fixed number of Lloyd
iterations with each assignment searcher, in one process and without Dask:

* ``exact``: the package's ``numpy`` backend (fused kernels or BLAS GEMM + argmin),
  the reference for speed-up, inertia gap and recall;
* ``faiss-cpu``: the package's exact Faiss ``IndexFlatL2`` backend (its labels
  are the exact ones, so by default only its first iteration is timed);
* ``ivf``: :class:`~kmeans_dask.backends.approximate.IVFSearcher` with its
  default ``nlist``/``nprobe`` and the fused list scan (plus any
  ``--ivf-params``);
* ``ivf-faiss-scan``: the same index searched by ``IndexIVFFlat.search``
  (same lists, so only its first iteration is timed by default);
* ``hnsw``: :class:`~kmeans_dask.backends.approximate.HNSWSearcher`.

Every iteration rebuilds the searcher from the current centres (as a Dask
task does), assigns the rows block by block, accumulates sums, counts and
inertia with :func:`kmeans_dask._kernels.block_kernels.accumulate`, and updates the centres
(an empty cluster keeps its centre). Reported per variant: median seconds per
iteration (build included, with the build's share), speed-up over exact,
relative gap between the exact inertia of its final centres and that of the
exact run's final centres, and recall (share of rows given their true
nearest centre) in the last iteration. At the ``--faiss-kmeans`` shapes,
``faiss.Kmeans`` is timed from the same initial centres without subsampling,
and ``faiss.SuperKmeans`` (which cannot take initial centres) for reference.

All variants run with the same thread limit, ``--threads`` (default 1, as
in a Dask worker, see ``kmeans_dask/_threads.py``), applied with
``threadpoolctl.threadpool_limits`` (BLAS and OpenMP) and
``faiss.omp_set_num_threads``.

Usage::

    python scripts/bench_approximate.py                      # full table (~5 min)
    python scripts/bench_approximate.py --ks 4096 --ds 128   # one shape
    python scripts/bench_approximate.py --ivf-params 128:4,128:8 --data separated
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import faiss
import numpy as np
from threadpoolctl import threadpool_limits

from kmeans_dask._kernels.block_kernels import accumulate
from kmeans_dask.backends.approximate import (
    HNSWSearcher,
    IVFSearcher,
    choose_assign_mode,
    default_nlist,
    default_nprobe,
)
from kmeans_dask.backends.faiss_cpu import FaissSearcher
from kmeans_dask.backends.numpy_blas import exact_searcher
from kmeans_dask.benchmark.data import initial_centers, make_blobs

SearcherFactory = Callable[[np.ndarray], object]


# --- data ----------------------------------------------------------------------------------


def make_separated(n_samples: int, n_features: int, seed: int) -> np.ndarray:
    """Well separated, two-level clustered data (float32).

    32 super-clusters (centres N(0, 3^2)), each with 64 blobs (offsets
    N(0, 1)); rows are a blob centre plus N(0, s^2) noise with s uniform in
    [0.3, 0.8] per blob, and blob sizes drawn from a Dirichlet(2) law.

    Parameters
    ----------
    n_samples, n_features : int
    seed : int

    Returns
    -------
    ndarray of shape (n_samples, n_features), float32
    """
    rng = np.random.default_rng(seed)
    n_super, per_super = 32, 64
    supers = rng.normal(scale=3.0, size=(n_super, n_features))
    blobs = np.repeat(supers, per_super, axis=0) + rng.normal(
        size=(n_super * per_super, n_features)
    )
    spread = rng.uniform(0.3, 0.8, size=blobs.shape[0])
    sizes = rng.dirichlet(np.full(blobs.shape[0], 2.0))
    labels = rng.choice(blobs.shape[0], size=n_samples, p=sizes)
    noise = rng.standard_normal((n_samples, n_features))
    return (blobs[labels] + noise * spread[labels, None]).astype(np.float32)


def make_data(kind: str, n_samples: int, n_features: int, seed: int) -> np.ndarray:
    """The benchmark data set: ``"blobs"`` (overlapping) or ``"separated"``."""
    if kind == "blobs":
        # The package's benchmark blobs (centres uniform in [-2, 2]^d, unit
        # noise): heavily overlapping, the hard case for a partition.
        return make_blobs(n_samples, n_features, 1024, seed)
    return make_separated(n_samples, n_features, seed)


# --- Lloyd loop ----------------------------------------------------------------------------


@dataclass
class LloydRun:
    """Timings and outcome of a fixed number of Lloyd iterations."""

    seconds: list[float]
    build_seconds: list[float]
    centers: np.ndarray
    last_centers_used: np.ndarray
    last_labels: np.ndarray


def lloyd(
    X: np.ndarray, init: np.ndarray, make_searcher: SearcherFactory, n_iter: int
) -> LloydRun:
    """Run ``n_iter`` Lloyd iterations, building a searcher in each one.

    Parameters
    ----------
    X : ndarray of shape (n, d)
    init : ndarray of shape (k, d)
    make_searcher : callable
        Builds a searcher from centres in X's dtype.
    n_iter : int

    Returns
    -------
    LloydRun
    """
    n_samples = X.shape[0]
    centers = np.asarray(init, dtype=np.float64)
    labels = np.empty(n_samples, dtype=np.int32)
    sq_dist = np.empty(n_samples, dtype=np.float64)
    seconds: list[float] = []
    build_seconds: list[float] = []
    used = centers
    for _ in range(n_iter):
        start = time.perf_counter()
        used = centers
        searcher = make_searcher(np.ascontiguousarray(centers, dtype=X.dtype))
        built = time.perf_counter()
        sums = np.zeros_like(centers)
        counts = np.zeros(centers.shape[0])
        step = searcher.block_rows
        for first in range(0, n_samples, step):
            last = min(first + step, n_samples)
            block = X[first:last]
            labels[first:last] = searcher.nearest(block)
            accumulate(block, labels[first:last], None, used, sums, counts, sq_dist[first:last])
        nonempty = counts > 0
        centers = used.copy()
        centers[nonempty] = sums[nonempty] / counts[nonempty, None]
        seconds.append(time.perf_counter() - start)
        build_seconds.append(built - start)
    return LloydRun(seconds, build_seconds, centers, used, labels.copy())


def _warm_up(X: np.ndarray, init: np.ndarray, make_searcher: SearcherFactory) -> None:
    """Compile and load the kernels a variant uses, outside the timings."""
    rows = X[:2048]
    centers = np.ascontiguousarray(init[: max(2, min(256, init.shape[0]))], dtype=X.dtype)
    labels = make_searcher(centers).nearest(rows)
    sums = np.zeros(centers.shape, dtype=np.float64)
    accumulate(
        rows,
        labels,
        None,
        centers.astype(np.float64),
        sums,
        np.zeros(len(centers)),
        np.empty(len(rows)),
    )


def exact_labels(X: np.ndarray, centers: np.ndarray) -> np.ndarray:
    """True nearest centre of every row (the ``numpy`` backend)."""
    searcher = exact_searcher(np.ascontiguousarray(centers, dtype=X.dtype))
    labels = np.empty(X.shape[0], dtype=np.int32)
    for first in range(0, X.shape[0], searcher.block_rows):
        labels[first : first + searcher.block_rows] = searcher.nearest(
            X[first : first + searcher.block_rows]
        )
    return labels


def exact_inertia(X: np.ndarray, centers: np.ndarray) -> float:
    """Sum of squared distances to the nearest centre, accumulated in float64."""
    centers = np.asarray(centers, dtype=np.float64)
    labels = exact_labels(X, centers)
    sums = np.zeros_like(centers)
    counts = np.zeros(centers.shape[0])
    sq_dist = np.empty(X.shape[0])
    return float(accumulate(X, labels, None, centers, sums, counts, sq_dist))


# --- results -------------------------------------------------------------------------------


@dataclass
class Row:
    """One line of the results table."""

    k: int
    d: int
    variant: str
    params: str
    seconds_per_iter: float
    build_share: float | None = None
    timed_iterations: int = 0
    speedup: float | None = None
    inertia_gap: float | None = None
    recall: float | None = None
    note: str = ""
    extra: dict = field(default_factory=dict)


def _median(values: list[float]) -> float:
    return float(statistics.median(values))


def _summarize(
    run: LloydRun,
    X: np.ndarray,
    reference: LloydRun | None,
    reference_inertia: float | None,
    full: bool,
) -> tuple[float | None, float | None]:
    """Inertia gap and last-iteration recall of a run (None if not comparable)."""
    if not full or reference is None or reference_inertia is None:
        return None, None
    gap = (exact_inertia(X, run.centers) - reference_inertia) / reference_inertia
    truth = exact_labels(X, run.last_centers_used)
    return gap, float(np.mean(run.last_labels == truth))


def bench_shape(args: argparse.Namespace, k: int, d: int, log: Callable[[str], None]) -> list[Row]:
    """All variants at one (k, d)."""
    X = make_data(args.data, args.n_samples, d, args.seed)
    init = initial_centers(X, k, args.seed)
    n_iter = args.iterations
    nlist, nprobe = default_nlist(k), default_nprobe(default_nlist(k))
    ivf_params = [(nlist, nprobe)] + [
        p for p in args.ivf_params if p != (nlist, nprobe) and p[0] <= k
    ]

    variants: list[tuple[str, str, SearcherFactory, int]] = [
        ("exact (numpy)", "", exact_searcher, n_iter),
        ("exact (faiss-cpu)", "", FaissSearcher, min(n_iter, args.slow_iterations)),
    ]
    twins = {
        "exact (faiss-cpu)": "exact labels (float32)",
        "ivf (faiss scan)": "same lists and probes as the first ivf row",
    }
    for list_count, probe_count in ivf_params:
        variants.append(
            (
                "ivf",
                f"nlist={list_count} nprobe={probe_count}",
                lambda c, a=list_count, b=probe_count: IVFSearcher(c, a, b),
                n_iter,
            )
        )
    if not args.skip_ivf_faiss_scan:
        variants.append(
            (
                "ivf (faiss scan)",
                f"nlist={nlist} nprobe={nprobe}",
                lambda c: IVFSearcher(c, nlist, nprobe, scan="faiss"),
                min(n_iter, args.slow_iterations),
            )
        )
    if not args.skip_hnsw:
        for ef in args.hnsw_ef:
            variants.append(
                (
                    "hnsw",
                    f"m={args.hnsw_m} ef_search={ef}",
                    lambda c, ef=ef: HNSWSearcher(c, args.hnsw_m, ef),
                    n_iter,
                )
            )

    rows: list[Row] = []
    reference: LloydRun | None = None
    reference_inertia: float | None = None
    exact_seconds = math.nan
    for name, params, factory, iterations in variants:
        if iterations < 1:
            continue
        _warm_up(X, init, factory)
        run = lloyd(X, init, factory, iterations)
        full = iterations == n_iter
        if reference is None:
            reference = run
            reference_inertia = exact_inertia(X, run.centers)
            exact_seconds = _median(run.seconds)
        gap, recall = _summarize(run, X, reference, reference_inertia, full)
        twin = twins.get(name, "")
        scanned = ""
        if name == "ivf":
            searcher_params = tuple(int(p.split("=")[1]) for p in params.split())
            scanned = _scanned_note(X, (init, run.last_centers_used), *searcher_params)
        seconds = _median(run.seconds)
        row = Row(
            k,
            d,
            name,
            params,
            seconds,
            build_share=_median(run.build_seconds) / seconds,
            timed_iterations=iterations,
            speedup=exact_seconds / seconds,
            inertia_gap=gap,
            recall=recall,
            note=scanned if full else f"{iterations} timed iteration(s); {twin}",
        )
        rows.append(row)
        log(_format_row(row))

    if f"{k}x{d}" in args.faiss_kmeans:
        for row in _faiss_kmeans_rows(X, init, n_iter, reference_inertia, exact_seconds, k, d):
            rows.append(row)
            log(_format_row(row))
    return rows


def scanned_per_row(X: np.ndarray, centers: np.ndarray, nlist: int, nprobe: int) -> float:
    """Mean number of centres the IVF lists a row probes hold (its coarse step aside)."""
    searcher = IVFSearcher(np.asarray(centers, dtype=X.dtype), nlist, nprobe)
    sizes = np.diff(searcher._list_bounds)
    return float(sizes[searcher._probes(X)].sum(axis=1).mean())


def _scanned_note(
    X: np.ndarray, centers: tuple[np.ndarray, np.ndarray], nlist: int, nprobe: int
) -> str:
    """What a row scans with the first and the last iteration's centres: centres, share
    of k, and times ``nprobe`` mean-sized lists (the lists near dense regions are larger)."""
    k = len(centers[0])
    parts = []
    for when, these in zip(("first", "last"), centers, strict=True):
        scanned = scanned_per_row(X, these, nlist, nprobe)
        parts.append(
            f"{when} iteration {scanned:.0f} ({scanned / k:.1%}, "
            f"{scanned / (nprobe * k / nlist):.2f}x {nprobe} mean lists)"
        )
    return "centres scanned per row: " + "; ".join(parts)


def _faiss_kmeans_rows(
    X: np.ndarray,
    init: np.ndarray,
    n_iter: int,
    reference_inertia: float | None,
    exact_seconds: float,
    k: int,
    d: int,
) -> list[Row]:
    """``faiss.Kmeans`` from the same initial centres, and ``faiss.SuperKmeans``."""
    rows = []
    n_samples = X.shape[0]
    km = faiss.Kmeans(
        d, k, niter=n_iter, max_points_per_centroid=n_samples, min_points_per_centroid=1, seed=0
    )
    km.train(X, init_centroids=np.ascontiguousarray(init, dtype=np.float32))
    times = np.diff([0.0, *[float(s["time"]) for s in km.iteration_stats]])
    seconds = _median(list(times))
    gap = None
    if reference_inertia is not None:
        gap = (exact_inertia(X, km.centroids) - reference_inertia) / reference_inertia
    rows.append(
        Row(
            k,
            d,
            "faiss.Kmeans",
            "same init, no subsampling",
            seconds,
            timed_iterations=n_iter,
            speedup=exact_seconds / seconds,
            inertia_gap=gap,
        )
    )
    if hasattr(faiss, "SuperKmeans"):
        skm = faiss.SuperKmeans(d, k, niter=n_iter, max_points_per_centroid=n_samples, seed=0)
        start = time.perf_counter()
        skm.train(X)
        total = time.perf_counter() - start
        seconds = total / n_iter
        gap = None
        if reference_inertia is not None:
            gap = (exact_inertia(X, skm.centroids) - reference_inertia) / reference_inertia
        rows.append(
            Row(
                k,
                d,
                "faiss.SuperKmeans",
                "own random init (init_centroids unsupported)",
                seconds,
                timed_iterations=n_iter,
                speedup=exact_seconds / seconds,
                inertia_gap=gap,
                note="total fit time / iterations; gap not from the same init",
            )
        )
    return rows


# --- output --------------------------------------------------------------------------------


def _fmt(value: float | None, spec: str) -> str:
    return "—" if value is None or not math.isfinite(value) else format(value, spec)


def _format_row(row: Row) -> str:
    return (
        f"k={row.k} d={row.d} {row.variant} {row.params}: {row.seconds_per_iter:.3f} s/iter "
        f"(build {_fmt(row.build_share, '.0%')}), x{_fmt(row.speedup, '.2f')}, "
        f"gap {_fmt(row.inertia_gap, '+.4%')}, recall {_fmt(row.recall, '.4f')}"
    )


def markdown(rows: list[Row]) -> str:
    """The results as a Markdown table."""
    lines = [
        "| k | d | variant | parameters | s/iter | build share | speed-up vs exact "
        "| final inertia gap | recall (last iter) | note |",
        "|---:|---:|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r.k} | {r.d} | {r.variant} | {r.params} | {r.seconds_per_iter:.3f} "
            f"| {_fmt(r.build_share, '.0%')} | {_fmt(r.speedup, '.2f')}x "
            f"| {_fmt(r.inertia_gap, '+.3%')} | {_fmt(r.recall, '.4f')} | {r.note} |"
        )
    return "\n".join(lines)


# --- command line --------------------------------------------------------------------------


def _int_list(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part]


def _pairs(text: str) -> list[tuple[int, int]]:
    pairs = []
    for part in text.split(","):
        if part:
            nlist, nprobe = part.split(":")
            pairs.append((int(nlist), int(nprobe)))
    return pairs


def build_parser() -> argparse.ArgumentParser:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-samples", type=int, default=100_000, help="rows (default 100000)")
    parser.add_argument("--ks", type=_int_list, default=[1024, 4096, 16384])
    parser.add_argument("--ds", type=_int_list, default=[64, 128])
    parser.add_argument("--iterations", type=int, default=5, help="Lloyd iterations (5)")
    parser.add_argument(
        "--slow-iterations",
        type=int,
        default=1,
        help="iterations timed for faiss-cpu exact and the faiss IVF scan; 0 skips them (1)",
    )
    parser.add_argument("--threads", type=int, default=1, help="threads for every variant (1)")
    parser.add_argument("--data", choices=("blobs", "separated"), default="blobs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--ivf-params",
        type=_pairs,
        default=[],
        help="extra IVF settings to time, as nlist:nprobe,nlist:nprobe",
    )
    parser.add_argument("--hnsw-m", type=int, default=32)
    parser.add_argument("--hnsw-ef", type=_int_list, default=[64])
    parser.add_argument("--skip-hnsw", action="store_true")
    parser.add_argument("--skip-ivf-faiss-scan", action="store_true")
    parser.add_argument(
        "--faiss-kmeans",
        default="4096x128",
        help="comma-separated KxD shapes at which faiss.Kmeans is timed (4096x128)",
    )
    parser.add_argument("--json", help="also write the rows to this JSON file")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print a Markdown table."""
    args = build_parser().parse_args(argv)
    args.faiss_kmeans = set(args.faiss_kmeans.split(","))
    threadpool_limits(limits=args.threads)
    faiss.omp_set_num_threads(args.threads)
    print(
        f"data={args.data} n={args.n_samples} iterations={args.iterations} "
        f"threads={args.threads} (threadpoolctl + faiss.omp_set_num_threads), "
        f"faiss {faiss.__version__}",
        flush=True,
    )
    rows: list[Row] = []
    for d in args.ds:
        for k in args.ks:
            rows.extend(bench_shape(args, k, d, lambda line: print(line, flush=True)))
    print()
    print(markdown(rows))
    print()
    print(
        "choose_assign_mode: "
        + ", ".join(f"k={k} d={d} -> {choose_assign_mode(k, d)}" for d in args.ds for k in args.ks)
    )
    if args.json:
        with open(args.json, "w") as handle:
            json.dump([asdict(r) for r in rows], handle, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
