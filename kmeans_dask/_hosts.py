"""Low-latency Lloyd iterations: one actor per worker runs the map over its chunks.

A Lloyd iteration made of tasks pays a scheduler round trip: the client
sends the graph to the scheduler, which sends the tasks to the workers,
which report back to the scheduler, which tells the client. Each hop batches
its messages for a few milliseconds; on the 2-core benchmark machine a
do-nothing iteration of two tasks measured 18 ms, a quarter of a whole
iteration at n=1M, d=32, k=64. A direct call to a Dask actor costs one
client-to-worker round trip (3 ms there).

So for data held in worker memory, the passes of a fit (the data check,
the Lloyd iterations, the final labelling pass) go through one
:class:`ChunkHost` actor per worker, created next to the chunks that worker
holds (nothing is copied) and kept for the whole fit. Each pass the client
calls every host at once; a host runs the same task function as the task
path (e.g. :func:`~kmeans_dask._chunks.chunk_stats`) over its chunks on the
worker's thread pool and returns one result per chunk; the client then
combines them in the fixed tree of :func:`~kmeans_dask._mapreduce.tree_reduce`.
The result is therefore bit for bit that of the task path, for any placement.

The price: these passes do not appear in the dashboard's task stream (the
workers' CPU and memory panels still show them), and a worker lost mid-call
surfaces as :class:`HostLost`, after which the caller restores the data and
repeats the step, exactly as when a task loses its data.
"""

from __future__ import annotations

import asyncio
import contextvars
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from concurrent.futures import CancelledError
from typing import Any

from distributed import Client, Future, get_worker, wait

from kmeans_dask._mapreduce import SPLIT_EVERY, task_keys

#: Largest total size of the per-chunk results gathered by the client in one
#: iteration; above it the iterations run as tasks and reduce on the cluster.
MAX_GATHERED_BYTES = 64 * 2**20

#: How long to wait for the scheduler to notice a worker that stopped answering.
_WORKER_GONE_TIMEOUT = 30.0


class HostLost(CancelledError):
    """A worker holding a :class:`ChunkHost` stopped answering."""


class ChunkHost:
    """Actor holding the chunks of one worker and mapping tasks over them."""

    def __init__(self, *chunks: Any) -> None:
        self._chunks = chunks

    async def map(self, func: Callable, *args: Any) -> list[Any]:
        """``[func(chunk, *args) for chunk in chunks]``, on the worker's threads."""
        loop = asyncio.get_running_loop()
        executor = get_worker().executors["default"]
        calls = [
            # Each call carries the worker context, so get_worker() works inside.
            loop.run_in_executor(executor, contextvars.copy_context().run, func, chunk, *args)
            for chunk in self._chunks
        ]
        return await asyncio.gather(*calls)


class ChunkHosts:
    """One :class:`ChunkHost` per worker, over a list of chunk futures."""

    def __init__(self, client: Client, chunks: Sequence[Future]) -> None:
        with client.as_current():
            wait(chunks)
        who_has = client.who_has(chunks)
        by_worker: dict[str, list[int]] = defaultdict(list)
        for index, chunk in enumerate(chunks):
            by_worker[sorted(who_has[chunk.key])[0]].append(index)
        self._client = client
        self._n_chunks = len(chunks)
        self._groups = list(by_worker.items())
        keys = task_keys("kmeans-hosts", len(self._groups))
        # The futures keep the actors alive.
        self._futures = [
            client.submit(
                ChunkHost,
                *[chunks[i] for i in indices],
                actor=True,
                workers=[address],
                key=key,
                pure=False,
            )
            for (address, indices), key in zip(self._groups, keys, strict=True)
        ]
        # Actor handles talk through the current client, which a fit's own
        # cluster does not set as the default.
        with client.as_current():
            self._actors = [future.result() for future in self._futures]

    def map(self, func: Callable, *args: Any) -> list[Any]:
        """``func(chunk, *args)`` for every chunk, in chunk order.

        Raises
        ------
        HostLost
            If a worker died (after the scheduler has noticed it).
        """
        try:
            with self._client.as_current():
                calls = [actor.map(func, *args) for actor in self._actors]
                per_host = [call.result() for call in calls]
        except Exception as exc:
            # Errors raised by ``func`` come back as themselves; a dead worker
            # shows as an OSError (or a RuntimeError from the actor proxy).
            unreachable = isinstance(exc, OSError) or "Actor was lost" in str(exc)
            if not self._lost_a_worker(_WORKER_GONE_TIMEOUT if unreachable else 0.0):
                raise
            raise HostLost(f"a worker holding chunks was lost: {exc!r}") from exc
        results: list[Any] = [None] * self._n_chunks
        for (_, indices), values in zip(self._groups, per_host, strict=True):
            for index, value in zip(indices, values, strict=True):
                results[index] = value
        return results

    def _lost_a_worker(self, timeout: float) -> bool:
        """Whether the scheduler has dropped a host's worker (waiting up to ``timeout``)."""
        addresses = {address for address, _ in self._groups}
        deadline = time.monotonic() + timeout
        while True:
            alive = set(self._client.scheduler_info(n_workers=-1)["workers"])
            if not addresses <= alive or any(f.status != "finished" for f in self._futures):
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.1)

    def close(self) -> None:
        """Release the actors."""
        for future in self._futures:
            future.release()
        self._actors = []


def combine_in_tree(
    combine: Callable[..., Any], parts: Sequence[Any], split_every: int = SPLIT_EVERY
) -> Any:
    """Combine ``parts`` in the same tree, hence the same order, as ``tree_reduce``."""
    level = list(parts)
    while len(level) > split_every:
        level = [combine(*level[i : i + split_every]) for i in range(0, len(level), split_every)]
    return combine(*level)


def fits_hosts(n_chunks: int, result_bytes: int) -> bool:
    """Whether gathering one result per chunk every iteration stays cheap."""
    return n_chunks * result_bytes <= MAX_GATHERED_BYTES
