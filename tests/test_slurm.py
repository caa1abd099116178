"""KMeans on Dask workers submitted as Slurm batch jobs (cluster_specs/slurm.yaml).

Needs a running Slurm whose jobs run on this machine (the scheduler listens
on 127.0.0.1): ``sudo bash scripts/start_slurm.sh`` sets up a single-node one.
Skipped, with the reason, when Slurm does not answer.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
from distributed import Client
from numpy.testing import assert_allclose, assert_array_equal

from kmeans_dask import KMeans
from kmeans_dask.clusters import from_spec

pytest.importorskip("dask_jobqueue", reason="dask_jobqueue is not installed (kmeans_dask[hpc])")

SPEC = Path(__file__).resolve().parents[1] / "cluster_specs" / "slurm.yaml"
HINT = "run scripts/start_slurm.sh (as root) for a single-node Slurm"
WORKER_TIMEOUT = 180  # seconds for the worker jobs to start and connect
GONE_TIMEOUT = 60  # seconds for cancelled jobs to leave squeue


def _run(*command: str, timeout: float = 15) -> subprocess.CompletedProcess:
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout)


def _default_partition() -> str:
    """The partition to submit to, or pytest.skip with why Slurm is not usable."""
    for command in ("sinfo", "sbatch", "squeue", "scancel"):
        if shutil.which(command) is None:
            pytest.skip(f"slurm not running: {command} not found; {HINT}")
    try:
        result = _run("sinfo", "--noheader", "--format=%P %a %T")
    except subprocess.TimeoutExpired:
        pytest.skip(f"slurm not running: sinfo did not answer in 15 s; {HINT}")
    if result.returncode != 0:
        reason = (result.stderr or result.stdout).strip().splitlines()
        pytest.skip(
            f"slurm not running: sinfo failed ({reason[-1] if reason else 'no output'}); {HINT}"
        )
    rows = [line.split() for line in result.stdout.splitlines() if line.strip()]
    usable = [
        (name, name.endswith("*"))
        for name, avail, state in rows
        if avail == "up" and state.rstrip("*~#$@%!^-") in ("idle", "mixed")
    ]
    if not usable:
        pytest.skip(
            f"slurm not running: no partition up with an idle node (sinfo: {rows}); {HINT}"
        )
    default = [name for name, is_default in usable if is_default] or [usable[0][0]]
    return default[0].rstrip("*")


def _queued(job_name: str) -> list[str]:
    result = _run("squeue", "--noheader", f"--name={job_name}", "--format=%i %T")
    assert result.returncode == 0, result.stderr
    return [line.strip() for line in result.stdout.splitlines() if line.strip()]


def _diagnostics(job_name: str, log_directory: Path) -> str:
    logs = "\n".join(
        f"--- {path.name}\n{path.read_text()[-2000:]}" for path in sorted(log_directory.glob("*"))
    )
    return f"squeue: {_queued(job_name)}\n{logs}"


@pytest.mark.slow
def test_kmeans_on_slurm_jobs_matches_a_local_cluster(cluster, tmp_path):
    partition = _default_partition()
    job_name = f"kmeans-test-{uuid.uuid4().hex[:8]}"
    rng = np.random.default_rng(0)
    centres = rng.normal(scale=6.0, size=(4, 4))
    X = np.concatenate([c + rng.normal(size=(500, 4)) for c in centres])
    init = X[[0, 600, 1200, 1800]]

    started = time.perf_counter()
    handle = from_spec(
        SPEC,
        python=sys.executable,  # the worker jobs run this virtualenv's Python
        queue=partition,
        job_name=job_name,
        walltime="00:10:00",
        log_directory=str(tmp_path),
        dashboard_address="127.0.0.1:0",
    )
    try:
        with handle as client:
            expected = handle.expected_workers()
            assert expected == 2
            try:
                client.wait_for_workers(expected, timeout=WORKER_TIMEOUT)
            except TimeoutError:
                pytest.fail(
                    f"{expected} workers did not connect in {WORKER_TIMEOUT} s\n"
                    + _diagnostics(job_name, tmp_path)
                )
            workers_up = time.perf_counter() - started
            job_ids = sorted(job.job_id for job in handle.cluster.workers.values())
            assert len(job_ids) == 2 and all(job_ids), job_ids
            running = _queued(job_name)
            assert sorted(line.split()[0] for line in running) == job_ids, running
            assert all(line.endswith("RUNNING") for line in running), running
            slurm = KMeans(n_clusters=4, init=init, n_init=1).fit(X)
            fitted = time.perf_counter() - started
        deadline = time.monotonic() + GONE_TIMEOUT
        while _queued(job_name) and time.monotonic() < deadline:
            time.sleep(1)
        left = _queued(job_name)
        closed = time.perf_counter() - started
    finally:
        handle.close()
        if _queued(job_name):  # never leave jobs behind, even when the test fails
            _run("scancel", f"--name={job_name}")
    assert not left, f"jobs still queued {GONE_TIMEOUT} s after closing the cluster: {left}"

    with Client(cluster, set_as_default=False) as local_client, local_client.as_current():
        local = KMeans(n_clusters=4, init=init, n_init=1).fit(X)

    assert_allclose(slurm.cluster_centers_, local.cluster_centers_)
    assert_array_equal(slurm.labels_, local.labels_)
    assert slurm.n_iter_ == local.n_iter_
    assert slurm.inertia_ == pytest.approx(local.inertia_, rel=1e-12)
    print(
        f"\nslurm jobs {job_ids} on partition {partition}: workers up after {workers_up:.1f} s, "
        f"fit done at {fitted:.1f} s, jobs gone at {closed:.1f} s"
    )
