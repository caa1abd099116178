"""The demo on a fresh install: a cold first run against a warm second one.

Each source tree (this checkout, and e.g. ``git worktree add /tmp/before
<commit>`` for the code before a change) runs ``kmeans-dask demo`` twice
in fresh processes with a fresh, empty ``NUMBA_CACHE_DIR``: the first run
compiles every kernel (a fresh install), the second finds them in the cache.
The trees take turns, so they see the same machine load. Prints the demo's
fit time, its whole wall time and the CPU seconds of the run (with its
worker processes).

Usage::

    python scripts/bench_cold_start.py --tree before=/tmp/before --tree after=.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

_FIT = re.compile(r"fit time \(s, incl\. loading and k-means\|\|\)\s*│\s*([0-9.]+)")


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_demo(tree: Path, cache: str, demo_args: list[str]) -> tuple[float, float, float]:
    """(fit seconds as printed, wall seconds, CPU seconds) of one demo in a fresh process."""
    env = {**os.environ, "NUMBA_CACHE_DIR": cache, "PYTHONPATH": str(tree.resolve())}
    command = [sys.executable, "-c", "from kmeans_dask.cli import main; raise SystemExit(main())"]
    cpu, started = _children_cpu(), time.perf_counter()
    # Not from this checkout's folder: ``-c`` puts the working folder first on
    # sys.path, which would import this checkout whatever PYTHONPATH says.
    done = subprocess.run(
        [*command, "demo", *demo_args],
        env=env,
        cwd=cache,
        capture_output=True,
        text=True,
        check=True,
    )
    wall, cpu = time.perf_counter() - started, _children_cpu() - cpu
    found = _FIT.search(done.stdout)
    if found is None:
        raise RuntimeError(f"no fit time in the demo's output:\n{done.stdout}\n{done.stderr}")
    return float(found.group(1)), wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--tree", action="append", required=True, help="NAME=PATH of a source tree; repeat"
    )
    parser.add_argument("--repeats", type=int, default=1, help="cold+warm pairs per tree")
    parser.add_argument("demo_args", nargs="*", help="arguments for the demo (after --)")
    args = parser.parse_args()
    trees = [(name, Path(path)) for name, _, path in (t.partition("=") for t in args.tree)]
    print("| tree | run | fit (s) | demo wall (s) | CPU (s) |")
    print("| --- | --- | ---: | ---: | ---: |")
    for _ in range(args.repeats):
        caches = {name: tempfile.mkdtemp(prefix=f"numba-cache-{name}-") for name, _ in trees}
        for run in ("cold", "warm"):
            for name, tree in trees:
                fit, wall, cpu = run_demo(tree, caches[name], args.demo_args)
                print(f"| {name} | {run} | {fit:.2f} | {wall:.2f} | {cpu:.1f} |", flush=True)


if __name__ == "__main__":
    main()
