"""Soak test: many consecutive fits on one cluster leak neither tasks nor worker memory.

Opt-in (``python -m pytest -m soak tests/test_soak.py``); the default run
deselects it. On a dedicated two-worker ``LocalCluster`` (processes, one
thread each) it repeats rounds of work until a time budget or a round count
is reached, whichever comes first:

* ``fit`` on NumPy and Dask input, with every ``init`` method, weights,
  ``n_init > 1`` and an explicit ``init`` array, followed by a use of the
  model (``predict``, ``score`` or the labels);
* ``partial_fit`` on NumPy and Dask batches of one long-lived streaming
  model, and a ``partial_fit`` that carries on from a fitted model.

After each fit the model is dropped and the test waits (briefly) until the
scheduler holds as many tasks, and the workers as many keys, as before the
first fit: anything left is a leak. Worker memory (RSS) is sampled after
every round; after warm-up, the median of the last quarter of the rounds may
not exceed the median of the first quarter by more than 25 % + 50 MiB.

Environment variables ``KMEANS_DASK_SOAK_SECONDS`` (default 60) and
``KMEANS_DASK_SOAK_ROUNDS`` (default 200) set the bounds. A summary line for
the reliability report is printed (also without ``-s``).
"""

from __future__ import annotations

import gc
import os
import statistics
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import dask.array as da
import numpy as np
import pytest
from distributed import Client, LocalCluster
from sklearn.exceptions import ConvergenceWarning

from kmeans_dask import KMeans

pytestmark = pytest.mark.soak

SOAK_SECONDS = float(os.environ.get("KMEANS_DASK_SOAK_SECONDS", "60"))
SOAK_ROUNDS = int(os.environ.get("KMEANS_DASK_SOAK_ROUNDS", "200"))
#: Rounds run before the first memory sample (imports, Numba kernels, pools).
WARMUP_ROUNDS = 1
#: How long released keys may take to leave the scheduler and the workers.
SETTLE_SECONDS = 10.0
MEMORY_GROWTH_FACTOR = 1.25
MEMORY_GROWTH_SLACK = 50 * 2**20
MIB = 2**20


def _scheduler_tasks(dask_scheduler) -> int:
    return len(dask_scheduler.tasks)


def _worker_keys(dask_worker) -> int:
    return len(dask_worker.data)


def _worker_rss() -> int:
    """Resident set size of the calling process, in bytes."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    import psutil

    return psutil.Process().memory_info().rss


def _held(client: Client) -> tuple[int, int]:
    """Tasks known to the scheduler, and keys held in worker memory (all workers)."""
    return (
        client.run_on_scheduler(_scheduler_tasks),
        sum(client.run(_worker_keys).values()),
    )


def _settle(client: Client, baseline: tuple[int, int]) -> tuple[int, int]:
    """Wait until the cluster holds no more than ``baseline``; return what it holds."""
    deadline = time.monotonic() + SETTLE_SECONDS
    while True:
        gc.collect()  # futures in reference cycles are released only when collected
        held = _held(client)
        if held[0] <= baseline[0] and held[1] <= baseline[1]:
            return held
        if time.monotonic() > deadline:
            return held
        time.sleep(0.05)


@dataclass
class SoakLog:
    """What the soak saw, for the assertions and the printed summary."""

    rounds: int = 0
    fits: int = 0
    partial_fits: int = 0
    peak_tasks: int = 0
    """Most scheduler tasks seen while a fitted model was still alive."""
    settled_tasks_max: int = 0
    """Most scheduler tasks left after a model was dropped and the cluster settled."""
    settled_keys_max: int = 0
    leaks: list[str] = field(default_factory=list)
    rss: dict[str, list[int]] = field(default_factory=dict)
    """Per worker, RSS in bytes after each measured round."""


def _blobs(rng: np.random.Generator, n_samples: int, n_features: int, n_centers: int):
    centers = rng.uniform(-20, 20, size=(n_centers, n_features))
    return centers[rng.integers(0, n_centers, n_samples)] + rng.normal(
        size=(n_samples, n_features)
    )


def _fit_jobs(rng: np.random.Generator) -> list[tuple[str, Callable[[], KMeans]]]:
    """One round's fits, each a name and a function returning the fitted, used model."""
    n_samples = int(rng.integers(15_000, 25_000))
    X = _blobs(rng, n_samples, 8, 12)
    weights = rng.uniform(0.5, 2.0, n_samples)
    chunks = int(rng.integers(2_000, 6_000))
    X_dask = da.from_array(X, chunks=(chunks, 8))
    seed = int(rng.integers(2**31))
    init = X[rng.choice(n_samples, 12, replace=False)]

    def numpy_kmeans_parallel():
        model = KMeans(12, random_state=seed, max_iter=20).fit(X)
        model.predict(X[:1000])
        return model

    def dask_random_weighted():
        model = KMeans(12, init="random", random_state=seed, max_iter=20)
        model.fit(X_dask, sample_weight=weights)
        model.labels_.compute()
        return model

    def dask_kmeans_plusplus_n_init():
        model = KMeans(12, init="k-means++", n_init=2, random_state=seed, max_iter=10)
        model.fit(X_dask)
        model.predict(X_dask).compute()
        return model

    def numpy_init_array_float32():
        model = KMeans(12, init=init.astype(np.float32), max_iter=20).fit(X.astype(np.float32))
        model.score(X[:1000].astype(np.float32))
        return model

    def dask_kmeans_parallel_weighted():
        model = KMeans(12, random_state=seed, max_iter=20, init_rounds=3)
        model.fit(X_dask, sample_weight=da.from_array(weights, chunks=chunks))
        model.score(X_dask)
        return model

    return [
        ("numpy k-means||", numpy_kmeans_parallel),
        ("dask random weighted", dask_random_weighted),
        ("dask k-means++ n_init=2", dask_kmeans_plusplus_n_init),
        ("numpy init-array float32", numpy_init_array_float32),
        ("dask k-means|| dask-weights", dask_kmeans_parallel_weighted),
    ]


def _run_round(client, rng, stream: KMeans, baseline, log: SoakLog) -> None:
    for name, job in _fit_jobs(rng):
        model = job()
        log.fits += 1
        log.peak_tasks = max(log.peak_tasks, _held(client)[0])
        if name.startswith("numpy init-array"):
            # carry a fitted model on with partial_fit (a Dask batch is computed on the cluster)
            batch = _blobs(rng, 2_000, 8, 12).astype(np.float32)
            model.set_params(reassignment_ratio=0.0).partial_fit(da.from_array(batch, chunks=500))
            log.partial_fits += 1
        del model
        held = _settle(client, baseline)
        log.settled_tasks_max = max(log.settled_tasks_max, held[0])
        log.settled_keys_max = max(log.settled_keys_max, held[1])
        if held[0] > baseline[0] or held[1] > baseline[1]:
            log.leaks.append(
                f"round {log.rounds + 1}, {name}: scheduler tasks {held[0]} (baseline "
                f"{baseline[0]}), worker keys {held[1]} (baseline {baseline[1]})"
            )

    for i in range(3):
        batch = _blobs(rng, 3_000, 8, 12)
        stream.partial_fit(da.from_array(batch, chunks=1_000) if i == 0 else batch)
        log.partial_fits += 1
    held = _settle(client, baseline)
    if held[0] > baseline[0] or held[1] > baseline[1]:
        log.leaks.append(f"round {log.rounds + 1}, partial_fit: {held} (baseline {baseline})")


def _median_mib(values: list[int]) -> float:
    return statistics.median(values) / MIB


def test_many_fits_leak_neither_tasks_nor_worker_memory(capsys):
    log = SoakLog()
    rng = np.random.default_rng(2024)
    with (
        LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=":0",
        ) as cluster,
        Client(cluster) as client,
        warnings.catch_warnings(),
    ):
        warnings.simplefilter("ignore", ConvergenceWarning)
        baseline = _held(client)
        stream = KMeans(12, random_state=0, decay=0.9)
        start = time.monotonic()
        while log.rounds < SOAK_ROUNDS and (
            time.monotonic() - start < SOAK_SECONDS or log.rounds < WARMUP_ROUNDS + 4
        ):
            _run_round(client, rng, stream, baseline, log)
            log.rounds += 1
            if log.rounds > WARMUP_ROUNDS:
                for worker, rss in client.run(_worker_rss).items():
                    log.rss.setdefault(worker, []).append(rss)
        elapsed = time.monotonic() - start
        final = _settle(client, baseline)

    quarter = max(1, (log.rounds - WARMUP_ROUNDS) // 4)
    memory = {
        worker: (_median_mib(values[:quarter]), _median_mib(values[-quarter:]), max(values) / MIB)
        for worker, values in log.rss.items()
    }
    summary = (
        f"soak: {log.rounds} rounds in {elapsed:.1f} s, {log.fits} fits, "
        f"{log.partial_fits} partial_fit calls; scheduler tasks baseline {baseline[0]}, "
        f"peak with a live model {log.peak_tasks}, max after settling {log.settled_tasks_max}, "
        f"final {final[0]}; worker keys baseline {baseline[1]}, max after settling "
        f"{log.settled_keys_max}; worker RSS MiB (first-quarter median -> last-quarter "
        "median, max): "
        + ", ".join(
            f"{worker.rsplit(':', 1)[-1]}: {first:.0f} -> {last:.0f} ({peak:.0f})"
            for worker, (first, last, peak) in memory.items()
        )
    )
    with capsys.disabled():
        print(f"\n{summary}")

    assert not log.leaks, "\n".join(log.leaks[:10])
    assert final == baseline
    for worker, (first, last, _) in memory.items():
        bound = first * MEMORY_GROWTH_FACTOR + MEMORY_GROWTH_SLACK / MIB
        assert last <= bound, f"worker {worker}: RSS grew from {first:.0f} to {last:.0f} MiB"
