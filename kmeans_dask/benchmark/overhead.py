"""The Dask part of a Lloyd iteration: an empty iteration over the same chunks, timed."""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from typing import Any

import numpy as np


def _empty_statistics(chunk: Any, centers: np.ndarray) -> Any:
    """A chunk task that does no work but returns statistics of the real size."""
    from kmeans_dask._worker.results import ClusterStats

    return ClusterStats(np.zeros(centers.shape), np.zeros(centers.shape[0]), 0.0)


def iteration_overhead_seconds(
    client: Any, chunks: Sequence[Any], centers: np.ndarray, engine: str, iterations: int = 20
) -> float:
    """Median wall time of an empty Lloyd iteration: the Dask part of an iteration.

    Sends ``centers`` and maps a do-nothing task over the chunk futures
    (through tasks or through per-worker actors, as ``engine`` says), then
    combines the per-chunk statistics the way the Lloyd loop does.

    Parameters
    ----------
    client : distributed.Client
    chunks : sequence of Future
        The data's chunks on the workers.
    centers : ndarray
        Centres of the real size, shipped every iteration as the loop does.
    engine : {"tasks", "actors"}
    iterations : int, default=20

    Returns
    -------
    float
        Seconds.
    """
    from kmeans_dask._engine.hosts import ChunkHosts
    from kmeans_dask._engine.mapreduce import map_chunks, send, tree_reduce
    from kmeans_dask._worker.results import combine_stats, statistics_nbytes

    seconds = []
    result_bytes = statistics_nbytes(*centers.shape)
    if engine == "actors":
        hosts = ChunkHosts(client, chunks)
        try:
            for _ in range(iterations):
                start = time.perf_counter()
                hosts.map_reduce(
                    _empty_statistics, combine_stats, centers, result_bytes=result_bytes
                )
                seconds.append(time.perf_counter() - start)
        finally:
            hosts.close()
    else:
        for _ in range(iterations):
            start = time.perf_counter()
            sent = send(client, centers, "bench-centers")
            parts = map_chunks(client, _empty_statistics, chunks, sent, name="bench-empty")
            tree_reduce(
                client, combine_stats, parts, name="bench-reduce", result_bytes=result_bytes
            )
            seconds.append(time.perf_counter() - start)
    return float(statistics.median(seconds))
