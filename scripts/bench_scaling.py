"""Calibrate the cost model of a Lloyd iteration (``scripts/scaling_model.py``).

Two kinds of measurements, labelled as such in the output:

* ``component``: one cost alone, without a fit. The statistics of one
  chunk on one thread at several ``k, d`` and row counts (search rate,
  statistics per value, fixed cost per chunk); adding ``k x d`` float64 sets
  (memory bandwidth); the client's new centres and shift; one call to every
  per-worker actor (``ChunkHosts``) at 1 to 32 workers with payloads of 0 to
  4 MiB, wall time and the client process's CPU time; where the chunks of a
  fit's Dask input land, and so how many sets the client receives.
* ``fit``: ``KMeans(...).fit(X)`` on a LocalCluster of W worker processes
  of one thread each, as a user calls it, with Dask-array input of C chunks
  (``algorithm="lloyd"``, centres given, ``tol=0``): "empty" iterations
  (16 rows per chunk, k = 8, d = 4) for the fixed part, compute-bound ones
  for the compute terms, ``k = 4096, d = 128`` for the reduction, and
  ``engine="tasks"`` for the scheduler. Per-iteration times are the fit's
  own history (iteration 1, which loads the kernels in fresh workers, left
  out); the fit's fixed part is its wall time less its iterations.

It fits the model's constants (per-term estimates from the components,
least squares for the fixed parts from the empty fits), prints measured
against predicted for every fit configuration, and projects large clusters.
This machine has 2 cores: beyond 2 workers the workers share them, so those
runs measure the fixed parts, not compute scaling (the predictions for them
divide the cores among the workers, ``Setup.cores``).

Usage::

    python scripts/bench_scaling.py [--quick] [--json out.json] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import dask.array as da
import numpy as np
import psutil
from distributed import Client, LocalCluster

sys.path.insert(0, str(Path(__file__).resolve().parent))

from scaling_model import (
    Constants,
    Setup,
    compute_seconds,
    engine_for,
    iteration_seconds,
    iteration_terms,
    least_squares,
    sets_to_client,
    task_count,
    tree_depth,
)

from kmeans_dask import KMeans
from kmeans_dask._engine.hosts import ChunkHosts
from kmeans_dask._engine.placement import distribute
from kmeans_dask._fit.update import center_shift, new_centers
from kmeans_dask._worker.chunks import make_chunk
from kmeans_dask._worker.host_ops import host_ops
from kmeans_dask._worker.results import ClusterStats, combine_stats
from kmeans_dask._worker.tasks import chunk_stats
from kmeans_dask.backends import get_backend

CORES = 2
MiB = 2**20


def median_seconds(call, repeats: int) -> float:
    """Median CPU time of this thread over ``repeats`` calls: other processes on
    the shared cores do not count, so this is the per-core figure."""
    call()  # warm up
    times = []
    for _ in range(repeats):
        start = time.thread_time()
        call()
        times.append(time.thread_time() - start)
    return statistics.median(times)


# --- components -------------------------------------------------------------------------------


def component_chunk(shapes, flops: float, repeats: int) -> list[dict]:
    """One chunk's statistics on this thread: at 1 row (fixed cost) and at about
    ``flops`` of search (at least k rows); preparing the searcher for new centres."""
    rng = np.random.default_rng(0)
    found = []
    for k, d in shapes:
        centers = rng.standard_normal((k, d)).astype(np.float32)
        big_rows = max(k, int(flops / (2 * k * d)))
        row = {"k": k, "d": d}
        for label, rows in (("one_row", 1), ("big", big_rows)):
            chunk = make_chunk(
                rng.standard_normal((rows, d)).astype(np.float32), None, 0, np.float32, host_ops()
            )
            row[label] = median_seconds(
                lambda c=chunk, z=centers: chunk_stats(c, z, "numpy"), repeats
            )
        row["prepare"] = median_seconds(
            lambda z=centers: get_backend("numpy").searcher(z), repeats
        )
        row["rows"] = big_rows
        row["per_row"] = (row["big"] - row["one_row"]) / (big_rows - 1)
        row["gflops"] = 2 * k * d / row["per_row"] / 1e9
        found.append(row)
    return found


def component_combine(shapes, repeats: int) -> list[dict]:
    """Adding eight k x d float64 sets (``combine_stats``), bytes per second of added sets."""
    found = []
    for k, d in shapes:
        sets = [ClusterStats(np.ones((k, d)), np.ones(k), 1.0) for _ in range(8)]
        seconds = median_seconds(lambda s=sets: combine_stats(*s), repeats)
        set_bytes = 8 * k * (d + 1)
        found.append({"k": k, "d": d, "seconds": seconds, "bytes_per_s": 8 * set_bytes / seconds})
    return found


def component_update(shapes, repeats: int) -> list[dict]:
    """The client's new centres and centre shift from combined statistics."""
    found = []
    for k, d in shapes:
        stats = ClusterStats(np.ones((k, d)), np.ones(k), 1.0)
        old = np.zeros((k, d), np.float32)

        def update(stats=stats, old=old):
            center_shift(old, new_centers(stats, old, None, np.empty(0, int)))

        seconds = median_seconds(update, repeats)
        found.append({"k": k, "d": d, "seconds": seconds, "per_value": seconds / (k * d)})
    return found


def _nothing(chunk, payload):
    return None


def component_calls(client: Client, workers: int, payloads, calls: int) -> list[dict]:
    """One ``map`` call to every actor (one chunk each) with a payload: wall and client CPU."""
    addresses = sorted(client.scheduler_info()["workers"])
    chunks = [client.scatter(np.zeros(8), workers=[a]) for a in addresses]
    hosts = ChunkHosts(client, chunks)
    found = []
    for nbytes in payloads:
        payload = np.zeros(nbytes // 4, np.float32)
        for _ in range(5):
            hosts._call("map", _nothing, payload)
        walls, cpus = [], []
        for _ in range(calls):
            cpu, start = time.process_time(), time.perf_counter()
            hosts._call("map", _nothing, payload)
            walls.append(time.perf_counter() - start)
            cpus.append(time.process_time() - cpu)
        found.append(
            {
                "workers": workers,
                "payload": nbytes,
                "wall": statistics.median(walls),
                "wall_min": min(walls),
                "client_cpu": statistics.median(cpus),
            }
        )
    hosts.close()
    return found


def component_placement(client: Client, chunk_counts) -> list[dict]:
    """Where a fit's Dask-array chunks land, and the sets the client would receive."""
    addresses = sorted(client.scheduler_info()["workers"])
    found = []
    for chunks in chunk_counts:
        X = da.zeros((16 * chunks, 4), chunks=(16, 4), dtype=np.float32)
        data = distribute(client, X, None, statistics_bytes=8 * 8 * 5)
        hosts = data.hosts(client)
        placement = [0] * chunks
        for address, indices in hosts._groups:
            for index in indices:
                placement[index] = addresses.index(address)
        data.release()
        found.append(
            {
                "workers": len(addresses),
                "chunks": chunks,
                "sets_to_client": sets_to_client(placement),
                "contiguous": sets_to_client(
                    [i * len(addresses) // chunks for i in range(chunks)]
                ),
                "round_robin": sets_to_client([i % len(addresses) for i in range(chunks)]),
            }
        )
    return found


# --- fits -------------------------------------------------------------------------------------


def _process_cpu() -> float:
    times = psutil.Process().cpu_times()
    return times.user + times.system


def workers_cpu(client: Client) -> float:
    """CPU seconds the worker processes have used so far, summed."""
    return sum(client.run(_process_cpu).values())


def fit_once(client: Client, n: int, d: int, k: int, chunks: int, engine: str, max_iter: int):
    """One ``KMeans.fit``: per-iteration seconds, whole fit, client and workers' CPU."""
    rng = np.random.default_rng(n + d + k + chunks)
    data = rng.standard_normal((n, d)).astype(np.float32)
    X = da.from_array(data, chunks=(math.ceil(n / chunks), d))
    model = KMeans(
        k, init=data[:k], n_init=1, max_iter=max_iter, tol=0.0, algorithm="lloyd", engine=engine
    )
    on_workers = workers_cpu(client)
    cpu, start = time.process_time(), time.perf_counter()
    model.fit(X)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    iterations = [record.seconds for record in model.history_]
    return {
        "iterations": iterations,
        "wall": wall,
        "client_cpu": cpu,
        "workers_cpu": workers_cpu(client) - on_workers,
    }


def fit_config(client, workers, n, d, k, chunks, engine, max_iter, repeats, kind) -> dict:
    fit_once(client, n, d, k, chunks, engine, max_iter)  # warm: kernels loaded in the workers
    runs = [fit_once(client, n, d, k, chunks, engine, max_iter) for _ in range(repeats)]
    later = [s for run in runs for s in run["iterations"][1:]] or [
        s for run in runs for s in run["iterations"]
    ]
    fixed = [run["wall"] - sum(run["iterations"]) for run in runs]
    # The workers' CPU per iteration: fits of max_iter iterations less fits of one.
    # (Compute and reduction fits only: they are the ones with work to count.)
    ones = (
        [fit_once(client, n, d, k, chunks, engine, 1) for _ in range(repeats)]
        if kind in ("compute", "reduction")
        else []
    )
    extra = statistics.median(len(run["iterations"]) for run in runs) - 1
    cpu_per_iteration = (
        (
            statistics.median(run["workers_cpu"] for run in runs)
            - statistics.median(run["workers_cpu"] for run in ones)
        )
        / extra
        if extra and ones
        else math.nan
    )
    return {
        "kind": kind,
        "workers": workers,
        "n": n,
        "d": d,
        "k": k,
        "chunks": chunks,
        "engine": engine,
        "iterations": len(later),
        "iteration": statistics.median(later),
        "iteration_min": min(later),
        "iteration_max": max(later),
        "fixed": statistics.median(fixed),
        "fixed_min": min(fixed),
        "fixed_max": max(fixed),
        "wall": statistics.median(run["wall"] for run in runs),
        "workers_cpu_per_iteration": cpu_per_iteration,
    }


def sweep_plan(quick: bool) -> dict[int, list[tuple]]:
    """Per worker count: (kind, n, d, k, chunks, engine, max_iter) of the fits to run."""
    workers = (1, 2, 4) if quick else (1, 2, 4, 8, 16, 32)
    plan: dict[int, list[tuple]] = {}
    for w in workers:
        plan[w] = [("empty", 16 * c, 4, 8, c, "actors", 12) for c in sorted({w, 4 * w, 16})]
    compute_shapes = (
        [(100_000, 32, 64), (20_000, 128, 1024)]
        if quick
        else [
            (400_000, 32, 64),
            (50_000, 128, 1024),
        ]
    )
    for w in (1, 2):
        for n, d, k in compute_shapes:
            plan[w] += [("compute", n, d, k, c, "actors", 3) for c in (2, 8, 32)]
    for w in (1, 2, 4) if quick else (1, 2, 4, 8):
        plan[w] += [("reduction", 8192, 128, 4096, c, "actors", 3) for c in (8, 16)]
    for w in (2,) if quick else (2, 8):
        plan[w] += [("scheduler", 16 * c, 4, 8, c, "tasks", 6) for c in (8, 32, 128)]
    return plan


# --- the model's constants ---------------------------------------------------------------------


def calibrate(components: dict, fits: list[dict], held_out: int) -> tuple[Constants, dict]:
    """The model's constants: per-term estimates from the components, the rest fitted.

    Fits on ``held_out`` workers are left out, to check the predictions on them.
    """
    fits = [f for f in fits if f["workers"] != held_out]
    chunk = components["chunk"]
    # per row = 2 k d / F + d * s: least squares over the shapes.
    inverse_flops, per_value = least_squares(
        [[2 * r["k"] * r["d"], r["d"]] for r in chunk], [r["per_row"] for r in chunk]
    )
    add_rate = statistics.median(r["bytes_per_s"] for r in components["combine"])
    calls = components["calls"]
    # client CPU = a + W * (b + payload / B): least squares over workers and payloads.
    cpu_fixed, cpu_per_worker, cpu_per_byte = least_squares(
        [[1, r["workers"], r["workers"] * r["payload"]] for r in calls],
        [r["client_cpu"] for r in calls],
    )
    scheduler = [f for f in fits if f["kind"] == "scheduler"]
    graph, per_task = least_squares(
        [[1, task_count(f["chunks"])] for f in scheduler],
        [f["iteration"] for f in scheduler],
        nonnegative=True,
    )
    # The empty fits' quickest iterations (the least disturbed by the other
    # processes on the shared cores): wall - W * (client CPU per worker) =
    # call + worker_call * sharing + chunk * rounds * sharing (Setup's terms).
    empty = [f for f in fits if f["kind"] == "empty"]
    call, worker_call, per_chunk = least_squares(
        [
            [
                1,
                sharing(f["workers"]),
                math.ceil(f["chunks"] / f["workers"]) * sharing(f["workers"]),
            ]
            for f in empty
        ],
        [f["iteration_min"] - f["workers"] * max(cpu_per_worker, 0.0) for f in empty],
        nonnegative=True,
    )
    constants = Constants(
        search_flops=1 / inverse_flops,
        statistics_seconds_per_value=max(per_value, 0.0),
        chunk_seconds=per_chunk,
        prepare_seconds_per_value=statistics.median(
            r["prepare"] / (r["k"] * r["d"]) for r in chunk
        ),
        add_bytes_per_second=add_rate,
        call_seconds=call,
        call_seconds_per_worker=max(cpu_per_worker, 0.0),
        worker_call_seconds=worker_call,
        serialize_bytes_per_second=1 / cpu_per_byte if cpu_per_byte > 0 else math.inf,
        update_seconds_per_value=statistics.median(r["per_value"] for r in components["update"]),
        task_seconds=per_task,
        graph_seconds=graph,
    )
    fixed_terms = least_squares(
        [[1, f["workers"], f["chunks"]] for f in empty],
        [f["fixed_min"] for f in empty],
        nonnegative=True,
    )
    fitted = {
        "client_cpu_per_call": {"fixed": cpu_fixed, "per_worker": cpu_per_worker},
        "chunk_one_row_component": {"median": statistics.median(r["one_row"] for r in chunk)},
        "fit_fixed_part": dict(
            zip(("fixed", "per_worker", "per_chunk"), fixed_terms, strict=True)
        ),
    }
    return constants, fitted


def sharing(workers: int) -> float:
    """Worker processes of one thread per core of this machine (at least 1)."""
    return max(1.0, workers / CORES)


def predicted(fit: dict, constants: Constants, placement: str) -> dict[str, float]:
    setup = Setup(
        n=fit["n"],
        d=fit["d"],
        k=fit["k"],
        workers=fit["workers"],
        threads=1,
        chunks=fit["chunks"],
        engine=fit["engine"],
        placement=placement,
        cores=CORES,
    )
    dedicated = replace(setup, cores=0)
    return iteration_terms(setup, constants) | {
        "total": iteration_seconds(setup, constants),
        "workers_cpu": fit["workers"] * compute_seconds(dedicated, constants),
    }


#: Projected clusters: workers of 8 cores each at this machine's per-core rates.
PROJECTED_THREADS = 8
#: Rows of 128 float32 values in blocks of 64 MiB (``numpy_row_chunks``'s target).
PROJECTED_CHUNK_BYTES = 64 * MiB


def scenarios(n: float, workers: int, k: int, bandwidth: float, latency: float) -> list:
    """The configurations projected for one cluster: today's, then each change in turn."""
    d = 128
    chunks = math.ceil(n * d * 4 / PROJECTED_CHUNK_BYTES)
    base = Setup(
        n=n,
        d=d,
        k=k,
        workers=workers,
        threads=PROJECTED_THREADS,
        chunks=chunks,
        bandwidth=bandwidth,
        latency=latency,
    )
    today = replace(base, engine=engine_for(base))
    tree = replace(base, reduction="tree")
    broadcast = replace(tree, broadcast="tree")
    fewer = replace(broadcast, chunks=workers * PROJECTED_THREADS)
    return [
        ("today, engine='auto'", today),
        ("actors, client combines", base),
        ("worker-to-worker tree (point 1)", tree),
        ("+ centres sent down a tree", broadcast),
        ("+ one chunk per worker thread", fewer),
        ("+ float32 statistics", replace(fewer, statistics_itemsize=4)),
    ]


def print_projection(constants: Constants) -> None:
    print("\n## projection: seconds per iteration, d = 128, workers of 8 cores")
    print(
        "| n | W | k | network | scenario | engine | chunks | s/iter at 0.1 ms | s/iter at 1 ms "
        "| fan-out | scheduler | compute | reduction | update | bottleneck |"
    )
    print("|---:|---:|---:|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for n in (1e9, 1e10):
        for workers in (100, 1000):
            for k in (1024, 65536):
                for gbits in (1, 25):
                    bandwidth = gbits * 1e9 / 8
                    near = scenarios(n, workers, k, bandwidth, 1e-4)
                    far = scenarios(n, workers, k, bandwidth, 1e-3)
                    for (name, setup), (_, slow) in zip(near, far, strict=True):
                        terms = iteration_terms(slow, constants)
                        print(
                            f"| {n:.0e} | {workers} | {k} | {gbits} Gbit/s | {name} | "
                            f"{setup.engine} | {setup.chunks} | "
                            f"{iteration_seconds(setup, constants):.3g} | "
                            f"{iteration_seconds(slow, constants):.3g} | "
                            + " | ".join(f"{terms[t]:.3g}" for t in TERMS)
                            + f" | {max(terms, key=terms.__getitem__)} |"
                        )


TERMS = ("fan-out", "scheduler", "compute", "reduction", "update")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer workers, shapes and repeats")
    parser.add_argument("--repeats", type=int, default=3, help="fits per configuration")
    parser.add_argument("--json", type=Path, help="write every measurement here")
    parser.add_argument(
        "--from-json",
        type=Path,
        help="measure nothing: calibrate, report and project from an earlier run's --json",
    )
    parser.add_argument(
        "--workers",
        help="only these worker counts of the sweep, comma-separated (the report then "
        "needs --from-json with the rest)",
    )
    parser.add_argument(
        "--held-out",
        type=int,
        help="worker count left out of the calibration, to check the model on "
        "(default: the largest, 32; 4 with --quick)",
    )
    args = parser.parse_args(argv)
    repeats = 1 if args.quick else args.repeats
    if args.from_json:
        saved = json.loads(args.from_json.read_text())
        report(
            saved["components"],
            saved["fits"],
            args.held_out or max(f["workers"] for f in saved["fits"]),
        )
        return

    shapes = [(64, 32), (256, 32), (64, 128), (1024, 128), (4096, 128)]
    components = {
        "chunk": component_chunk(shapes, 2e8 if args.quick else 1e9, 3 if args.quick else 7),
        "combine": component_combine([(64, 32), (1024, 128), (4096, 128), (16384, 128)], 7),
        "update": component_update([(1024, 128), (16384, 128)], 7),
        "calls": [],
        "placement": [],
    }
    fits = []
    plan = sweep_plan(args.quick)
    if args.workers:
        plan = {w: plan[w] for w in map(int, args.workers.split(","))}
    for workers, configs in plan.items():
        with (
            LocalCluster(
                n_workers=workers,
                threads_per_worker=1,
                processes=True,
                host="127.0.0.1",
                dashboard_address=":0",
            ) as cluster,
            Client(cluster) as client,
        ):
            components["calls"] += component_calls(
                client, workers, (0, MiB, 4 * MiB), 20 if args.quick else 60
            )
            components["placement"] += component_placement(client, sorted({workers, 4 * workers}))
            for kind, n, d, k, chunks, engine, max_iter in configs:
                fit = fit_config(client, workers, n, d, k, chunks, engine, max_iter, repeats, kind)
                print(json.dumps(fit), file=sys.stderr, flush=True)
                fits.append(fit)

    if args.json:
        args.json.write_text(
            json.dumps(
                {"components": components, "fits": fits},
                indent=1,
            )
        )
    if not args.workers:
        report(components, fits, args.held_out or max(plan))


def report(components: dict, fits: list[dict], held_out: int) -> tuple[Constants, dict]:
    """Calibrate, print the measurements against the predictions, and project."""
    constants, fitted = calibrate(components, fits, held_out)
    fitted["held_out_workers"] = held_out
    fixed = fitted["fit_fixed_part"]
    for fit in fits:
        fit["predicted"] = predicted(fit, constants, "round-robin")
        fit["predicted_fixed"] = (
            fixed["fixed"]
            + fixed["per_worker"] * fit["workers"]
            + fixed["per_chunk"] * fit["chunks"]
        )
    print_report(components, fits, constants, fitted)
    print_projection(constants)
    return constants, fitted


def print_report(components, fits, constants: Constants, fitted: dict) -> None:
    print("## component: one chunk's statistics, one thread")
    print("| k | d | 1 row (ms) | rows | per row (ns) | GFLOP/s (2kd per row) |")
    print("|---:|---:|---:|---:|---:|---:|")
    for r in components["chunk"]:
        print(
            f"| {r['k']} | {r['d']} | {r['one_row'] * 1e3:.3f} | {r['rows']} | "
            f"{r['per_row'] * 1e9:.1f} | {r['gflops']:.1f} |"
        )
    print("\n## component: adding eight k x (d+1) float64 sets")
    print("| k | d | ms | GB/s |")
    print("|---:|---:|---:|---:|")
    for r in components["combine"]:
        print(f"| {r['k']} | {r['d']} | {r['seconds'] * 1e3:.3f} | {r['bytes_per_s'] / 1e9:.2f} |")
    print("\n## component: new centres and shift on the client")
    for r in components["update"]:
        print(f"- k = {r['k']}, d = {r['d']}: {r['seconds'] * 1e3:.3f} ms")
    print("\n## component: one call to every actor (map of a do-nothing function)")
    print("| workers | payload (MiB) | wall median (ms) | wall min (ms) | client CPU (ms) |")
    print("|---:|---:|---:|---:|---:|")
    for r in components["calls"]:
        print(
            f"| {r['workers']} | {r['payload'] / MiB:g} | {r['wall'] * 1e3:.3f} | "
            f"{r['wall_min'] * 1e3:.3f} | {r['client_cpu'] * 1e3:.3f} |"
        )
    print("\n## component: sets the client receives per iteration (fit's Dask-array input)")
    print("| workers | chunks | measured placement | contiguous | round-robin | tree depth |")
    print("|---:|---:|---:|---:|---:|---:|")
    for r in components["placement"]:
        print(
            f"| {r['workers']} | {r['chunks']} | {r['sets_to_client']} | {r['contiguous']} | "
            f"{r['round_robin']} | {tree_depth(r['chunks'])} |"
        )
    print("\n## constants")
    for name, value in asdict(constants).items():
        print(f"- {name}: {value:.4g}")
    for name, terms in fitted.items():
        if isinstance(terms, dict):
            print(f"- {name}: " + ", ".join(f"{t} {v * 1e3:.3f} ms" for t, v in terms.items()))
    print(f"- fits on {fitted['held_out_workers']} workers are not in the calibration")
    print("\n## fit: measured against predicted per iteration (ms)")
    print(
        "| kind | W | n | d | k | chunks | engine | iterations | measured median "
        "| min-max | predicted | pred/median | pred/min | largest term "
        "| fit fixed part (ms) | its min-max | predicted (empty fits' line) "
        "| workers' CPU per iteration (ms) | predicted compute CPU |"
    )
    print(
        "|---|---:|---:|---:|---:|---:|---|---:|---:|---|---:|---:|---:|---|---:|---|---:|---:|---:|"
    )
    for f in fits:
        p = f["predicted"]
        largest = max(TERMS, key=p.__getitem__)
        print(
            f"| {f['kind']} | {f['workers']} | {f['n']} | {f['d']} | {f['k']} | {f['chunks']} | "
            f"{f['engine']} | {f['iterations']} | {f['iteration'] * 1e3:.2f} | "
            f"{f['iteration_min'] * 1e3:.2f}-{f['iteration_max'] * 1e3:.2f} | "
            f"{p['total'] * 1e3:.2f} | {p['total'] / f['iteration']:.2f} | "
            f"{p['total'] / f['iteration_min']:.2f} | {largest} | "
            f"{f['fixed'] * 1e3:.0f} | {f['fixed_min'] * 1e3:.0f}-{f['fixed_max'] * 1e3:.0f} | "
            f"{f['predicted_fixed'] * 1e3:.0f} | {f['workers_cpu_per_iteration'] * 1e3:.1f} | "
            f"{p['workers_cpu'] * 1e3:.1f} |"
        )


if __name__ == "__main__":
    main()
