"""Out-of-core k-means: a Zarr dataset larger than the workers' memory, on Slurm.

Use case
--------
The data does not fit in the memory of the Dask workers (here: a Zarr array
larger than all the workers' memory limits together). ``KMeans(...,
persist=False)`` streams it: every pass reads each row block from the store,
uses it and drops it, so a worker holds only a few blocks at a time and only
k x d partial sums cross the network. The workers are Slurm batch jobs
started from ``cluster_specs/slurm.yaml`` (dask-jobqueue): ``--jobs`` jobs
of ``--memory`` each. The labels are then written next to the data with
``model.predict(path).to_zarr(...)``, again block by block.

Where Slurm is not available (no ``sinfo``, ``sinfo`` fails or shows no
usable partition, or dask-jobqueue is missing), or with ``--local``, the
script says so loudly and runs the same fit on a ``LocalCluster`` from
``cluster_specs/local.yaml`` with the same per-worker memory limit. The
line starting with ``cluster:`` says which path was taken.

``--small`` is a quick check of the whole path (< 1 minute on 2 cores): its
data is smaller than the workers' memory, since a Dask worker process alone
needs about 350 MiB, but it is streamed with ``persist=False`` exactly like
the default size, which is 1.2 x the workers' total memory.

Printed: the dashboard link, the data size against the workers' memory, the
timings (data prep, workers up, fit, predict + write) and the inertia.

Run it
------
::

    pip install -e ".[hpc]"      # dask-jobqueue; without it the LocalCluster fallback runs
    sudo bash scripts/start_slurm.sh          # optional: a single-node Slurm
    python scripts/examples/zarr_on_slurm.py             # 20M x 32 (2.4 GiB), 2 x 1 GiB
    python scripts/examples/zarr_on_slurm.py --small     # 1.6M x 16 (98 MiB), 2 x 768 MiB
    python scripts/examples/zarr_on_slurm.py --jobs 4 --memory 2GiB --n-samples 100000000

On a real multi-node cluster, the scheduler must listen on an interface the
compute nodes reach: set ``interface:`` in ``cluster_specs/slurm.yaml`` (see
the comments there), and put ``--output-dir`` on a shared file system.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SLURM_SPEC = ROOT / "cluster_specs" / "slurm.yaml"
LOCAL_SPEC = ROOT / "cluster_specs" / "local.yaml"
PARTITION_OK = ("idle", "mixed")


@contextmanager
def timed(timings: dict[str, float], name: str) -> Iterator[None]:
    """Record the wall-clock seconds of the block under ``name``."""
    start = time.perf_counter()
    yield
    timings[name] = time.perf_counter() - start


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Fit k-means on a Zarr store larger than the workers' memory, on Slurm.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--small", action="store_true", help="small sizes: runs in < 1 minute")
    parser.add_argument("--output-dir", type=Path, default=Path("example-output"))
    parser.add_argument("--n-samples", type=int, default=None, help="default 20M (1.6M small)")
    parser.add_argument("--n-features", type=int, default=None, help="default 32 (16 small)")
    parser.add_argument("-k", "--n-clusters", type=int, default=None, help="default 32 (8 small)")
    parser.add_argument("--chunk-rows", type=int, default=None, help="default 250k (100k small)")
    parser.add_argument("--max-iter", type=int, default=50)
    parser.add_argument("--jobs", type=int, default=2, help="Slurm jobs (= workers)")
    parser.add_argument(
        "--memory", default=None, help="per worker (job); default 1GiB (768MiB with --small)"
    )
    parser.add_argument("--walltime", default="00:30:00", help="per Slurm job")
    parser.add_argument("--worker-timeout", type=float, default=180, help="seconds")
    parser.add_argument("--local", action="store_true", help="skip Slurm: use a LocalCluster")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    small = args.small
    args.n_samples = args.n_samples or (1_600_000 if small else 20_000_000)
    args.n_features = args.n_features or (16 if small else 32)
    args.n_clusters = args.n_clusters or (8 if small else 32)
    args.chunk_rows = args.chunk_rows or (100_000 if small else 250_000)
    args.memory = args.memory or ("768MiB" if small else "1GiB")
    return args


def slurm_status() -> tuple[str | None, str]:
    """(partition, "") when Slurm can take jobs, else (None, why not)."""
    if shutil.which("sinfo") is None:
        return None, "sinfo not found"
    try:
        import dask_jobqueue  # noqa: F401
    except ImportError:
        return None, "dask-jobqueue is not installed (pip install 'kmeans_dask[hpc]')"
    try:
        result = subprocess.run(
            ["sinfo", "--noheader", "--format=%P %a %T"],
            capture_output=True,
            text=True,
            timeout=15,
        )
    except subprocess.TimeoutExpired:
        return None, "sinfo did not answer in 15 s"
    if result.returncode != 0:
        lines = (result.stderr or result.stdout).strip().splitlines()
        return None, f"sinfo failed: {lines[-1] if lines else 'no output'}"
    usable = []
    for line in result.stdout.splitlines():
        fields = line.split()
        if (
            len(fields) == 3
            and fields[1] == "up"
            and fields[2].rstrip("*~#$@%!^-") in PARTITION_OK
        ):
            usable.append(fields[0])
    if not usable:
        return None, f"no partition up with an idle node (sinfo: {result.stdout.strip()!r})"
    default = [name for name in usable if name.endswith("*")] or usable
    return default[0].rstrip("*"), ""


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import zarr
    from dask.utils import format_bytes, parse_bytes
    from distributed import progress

    from kmeans_dask import KMeans
    from kmeans_dask.clusters import from_spec
    from kmeans_dask.datasets import write_blobs_zarr

    args.output_dir.mkdir(parents=True, exist_ok=True)
    data_path = args.output_dir / "blobs.zarr"
    labels_path = args.output_dir / "blobs.labels.zarr"
    timings: dict[str, float] = {}

    with timed(timings, "data prep"):
        # Written block by block by the local threaded scheduler: bounded memory, any size.
        write_blobs_zarr(
            str(data_path),
            args.n_samples,
            args.n_features,
            args.n_clusters,
            chunk_rows=args.chunk_rows,
            cluster_std=1.0,
            random_state=args.seed,
            overwrite=True,
            compress=not args.small,
            progress=True,  # a bar on a terminal, a line per block in logs
        )
    nbytes = zarr.open_array(str(data_path), mode="r").nbytes
    print(
        f"data: {data_path} {args.n_samples:,} x {args.n_features} float32 "
        f"({format_bytes(nbytes)}), {args.n_clusters} blobs, {args.chunk_rows:,} rows per block"
    )

    partition, why_not = (None, "--local given") if args.local else slurm_status()
    job_name = f"kmeans-example-{uuid.uuid4().hex[:8]}"
    if partition is not None:
        print(
            f"cluster: slurm (partition {partition}): submitting {args.jobs} worker jobs "
            f"of {args.memory} from {SLURM_SPEC.relative_to(ROOT)} (job name {job_name})"
        )
        handle = from_spec(
            SLURM_SPEC,
            jobs=args.jobs,
            memory=args.memory,
            queue=partition,
            walltime=args.walltime,
            job_name=job_name,
            python=sys.executable,  # the jobs run this environment's Python
            log_directory=str(args.output_dir / "slurm-logs"),
            dashboard_address="127.0.0.1:0",
        )
    else:
        print(
            f"cluster: local (FALLBACK, Slurm not used: {why_not}): a LocalCluster from "
            f"{LOCAL_SPEC.relative_to(ROOT)} with {args.jobs} workers of {args.memory}"
        )
        handle = from_spec(
            LOCAL_SPEC,
            n_workers=args.jobs,
            memory_limit=parse_bytes(args.memory),
            dashboard_address="127.0.0.1:0",
        )

    try:
        with handle as client:
            print(f"dashboard: {client.dashboard_link}")
            with timed(timings, "workers up"):
                try:
                    handle.wait_for_workers(args.jobs, timeout=args.worker_timeout)
                except TimeoutError:
                    print(
                        f"error: {args.jobs} workers did not connect in {args.worker_timeout} s"
                        + (
                            f"; see squeue -n {job_name} and {args.output_dir}/slurm-logs"
                            if partition
                            else ""
                        ),
                        file=sys.stderr,
                    )
                    return 1
            limits = [w["memory_limit"] for w in client.scheduler_info()["workers"].values()]
            print(
                f"workers: {len(limits)} x {format_bytes(min(limits))} = "
                f"{format_bytes(sum(limits))}; the data is {nbytes / sum(limits):.2f} x the "
                f"workers' total memory: streamed from Zarr, never persisted"
                + (" (--small: smaller than memory, same streaming path)" if args.small else "")
            )

            model = KMeans(
                n_clusters=args.n_clusters,
                max_iter=args.max_iter,
                random_state=args.seed,
                persist=False,
                verbose=1,  # progress of the initialisation and of every iteration
            )
            with timed(timings, "fit"):
                model.fit(str(data_path))
            with timed(timings, "predict + write"):
                labels = client.persist(model.predict(str(data_path)))
                progress(labels)  # Dask's own progress bar while the blocks are labelled
                labels.to_zarr(str(labels_path), overwrite=True)
    finally:
        handle.close()
        if partition is not None:  # never leave jobs behind
            subprocess.run(["scancel", f"--name={job_name}"], capture_output=True, timeout=15)

    labels = zarr.open_array(str(labels_path), mode="r")
    print("timings: " + ", ".join(f"{name} {seconds:.2f} s" for name, seconds in timings.items()))
    print(
        f"fit: {model.n_iter_} Lloyd iterations, inertia {model.inertia_:.6g} "
        f"({model.inertia_ / args.n_samples:.4f} per row; blobs of std 1 in "
        f"{args.n_features} dimensions give about {args.n_features})"
    )
    print(f"wrote {labels_path}: {labels.shape[0]:,} labels ({labels.dtype})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
