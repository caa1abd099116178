"""Component benchmark: the cost of one call to the per-worker actors, by path.

The actor engine (``kmeans_dask/_hosts.py``) calls every worker's
``ChunkHost`` at once, once per pass. It times, on the same actors of a
LocalCluster (worker processes on this machine, one thread each), in
interleaved rounds:

* ``direct``: the requests sent straight to the workers' ``actor_execute``
  handler, awaited together on the client's event loop (the fast path);
* ``handles``: the same methods called through the public
  ``distributed.Actor`` handles, awaited together on the client's event
  loop (the fallback, taken when the handler does not answer as expected);
* ``handles, one by one``: each handle's call, then ``.result()`` of each,
  from the calling thread, as user code calls an actor.

Two methods: ``n_chunks`` (does nothing: the call itself) and a ``map`` of
a do-nothing function over the chunks (what a pass adds: one executor job
per worker thread). It prints milliseconds per call (a call reaches every
worker), medians over the rounds, and each path's time minus ``direct``'s.

Usage::

    python scripts/bench_actor_calls.py [--workers 2] [--rounds 7] [--calls 300]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np
from distributed import Client, LocalCluster

from kmeans_dask._engine.hosts import ChunkHosts

PATHS = ("direct", "handles", "handles, one by one")


def _nothing(chunk: np.ndarray) -> None:
    return None


def _calls(client: Client, hosts: ChunkHosts, path: str, method: str) -> Callable[[], object]:
    """One call of ``method`` to every host, by ``path``."""
    args = (_nothing,) if method == "map" else ()
    if path == "handles, one by one":
        handles = hosts._handles
        return lambda: [f.result() for f in [getattr(h, method)(*args) for h in handles]]

    def call() -> object:
        hosts.direct = path == "direct"
        return hosts._call(method, *args)

    return call


def _per_call_ms(call: Callable[[], object], calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        call()
    return (time.perf_counter() - start) / calls * 1e3


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2, help="worker processes")
    parser.add_argument("--chunks", type=int, default=8, help="chunks spread over the workers")
    parser.add_argument("--rounds", type=int, default=7, help="interleaved rounds")
    parser.add_argument("--calls", type=int, default=300, help="calls per path per round")
    args = parser.parse_args(argv)

    with (
        LocalCluster(
            n_workers=args.workers,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=":0",
        ) as cluster,
        Client(cluster) as client,
    ):
        chunks = client.scatter([np.zeros(1000) for _ in range(args.chunks)])
        hosts = ChunkHosts(client, chunks)
        assert hosts.direct, "the installed distributed's handler does not answer as expected"
        times: dict[tuple[str, str], list[float]] = {}
        for method in ("n_chunks", "map"):
            calls = {path: _calls(client, hosts, path, method) for path in PATHS}
            for call in calls.values():  # warm up: connections, imports
                _per_call_ms(call, 20)
            for round_ in range(args.rounds):
                order = PATHS[round_ % 3 :] + PATHS[: round_ % 3]
                for path in order:
                    times.setdefault((method, path), []).append(
                        _per_call_ms(calls[path], args.calls)
                    )
        hosts.close()

    print(
        f"{args.workers} worker process(es) x 1 thread, {args.chunks} chunks, "
        f"{args.rounds} rounds x {args.calls} calls per path; ms per call (median of rounds)"
    )
    print("| method | path | ms/call | min | minus direct |")
    print("|---|---|---:|---:|---:|")
    for method in ("n_chunks", "map"):
        base = statistics.median(times[method, "direct"])
        for path in PATHS:
            values = times[method, path]
            median = statistics.median(values)
            print(
                f"| {method} | {path} | {median:.3f} | {min(values):.3f} | {median - base:+.3f} |"
            )


if __name__ == "__main__":
    main()
