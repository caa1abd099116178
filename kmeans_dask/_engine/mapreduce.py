"""Map a task over worker-resident chunks and tree-reduce the results.

The reduction tree depends only on the number of chunks and ``split_every``,
never on which worker holds what, so floating-point sums are identical for
any number of workers. Keys carry readable prefixes (``kmeans-assign``,
``kmeans-reduce``, ...) so the dashboard's task stream says what is running.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from distributed import Client, Future

from kmeans_dask._engine.pauses import watched_gather

#: Partial results combined per reduce task.
SPLIT_EVERY = 8
#: Arrays up to this size are sent inline with every task that uses them.
INLINE_BYTES = 256 * 2**10
#: Most bytes of values that the client gathers to combine the top of a
#: reduction tree itself, which saves a hop; beyond, the tree is combined on
#: the cluster up to its root and the client receives only the result
#: (benchmarks/RESULTS.md, "One set of statistics per iteration").
CLIENT_GATHER_BYTES = 16 * 2**20


def task_keys(prefix: str, count: int) -> list[tuple[str, int]]:
    """``count`` fresh keys whose dashboard name is ``prefix``."""
    token = uuid.uuid4().hex
    return [(f"{prefix}-{token}", i) for i in range(count)]


def _identity(value: Any) -> Any:
    return value


def send(client: Client, value: np.ndarray, name: str) -> np.ndarray | Future:
    """Ship an array (the centres) to the cluster without waiting for it.

    Small arrays travel inline in each task's arguments; larger ones become
    one task of their own whose result the tasks fetch from the worker that
    holds it. Neither needs a round trip of its own, unlike
    ``client.scatter``.
    """
    if value.nbytes <= INLINE_BYTES:
        return value
    return client.submit(_identity, value, key=task_keys(name, 1)[0], pure=False)


def map_chunks(
    client: Client, func: Callable, chunks: Sequence[Any], *args: Any, name: str, **kwargs: Any
) -> list[Future]:
    """Run ``func(chunk, *args, **kwargs)`` on every chunk, where the chunk lives.

    A chunk is a future of a worker-resident :class:`~kmeans_dask._worker.chunks.Chunk`
    or a small :class:`~kmeans_dask._worker.chunks.ZarrBlock` reference.
    """
    return _one_task_per_chunk(client, func, name, (chunks,), args, **kwargs)


def map_pairs(
    client: Client,
    func: Callable,
    chunks: Sequence[Any],
    per_chunk: Sequence[Any],
    *args: Any,
    name: str,
) -> list[Future]:
    """Run ``func(chunk, per_chunk[i], *args)`` on every chunk."""
    return _one_task_per_chunk(client, func, name, (chunks, per_chunk), args)


def _one_task_per_chunk(
    client: Client,
    func: Callable,
    name: str,
    columns: Sequence[Sequence[Any]],
    args: Sequence[Any],
    **kwargs: Any,
) -> list[Future]:
    """``func(*row, *args, **kwargs)`` for each row of ``columns`` (the first, the chunks).

    One ``Client.map`` call: one graph for the scheduler, not one per task,
    which took 16 tasks from 6.5 to 0.9 ms to submit and from 51 to 42 ms to
    finish on a 2-core machine (benchmarks/RESULTS.md, "Session 27").
    """
    count = len(columns[0])
    if count == 0:
        return []
    return client.map(
        func,
        *(list(column) for column in columns),
        *([arg] * count for arg in args),
        key=task_keys(name, count),
        pure=False,
        **kwargs,
    )


def tree_reduce(
    client: Client,
    combine: Callable[..., Any],
    parts: Sequence[Future],
    *,
    name: str,
    split_every: int = SPLIT_EVERY,
    leading: tuple = (),
    result_bytes: int = 0,
) -> Any:
    """Combine ``parts`` with ``combine(*leading, *group)`` in a fixed-shape tree.

    Levels run as cluster tasks while more than ``split_every`` parts remain.
    The last group is gathered and combined by the client, which saves a
    scheduler round trip, unless its values (of ``result_bytes`` each, when
    known) exceed :data:`CLIENT_GATHER_BYTES`: then the root is a task too
    and the client receives one value. The shape of the tree depends only on
    ``len(parts)``, so results are identical for any number of workers.

    Returns
    -------
    The combined value (not a future).

    Raises
    ------
    WorkersPausedError
        If every worker stays paused by its memory limit while the client
        waits (:mod:`kmeans_dask._engine.pauses`).
    """
    level = _reduce_to_last_group(client, combine, parts, name, split_every, leading)
    if len(level) * result_bytes > CLIENT_GATHER_BYTES:
        root = client.submit(combine, *leading, *level, key=task_keys(name, 1)[0], pure=False)
        return watched_gather(client, root)
    return combine(*leading, *watched_gather(client, level))


def tree_reduce_future(
    client: Client,
    combine: Callable[..., Any],
    parts: Sequence[Future],
    *,
    name: str,
    split_every: int = SPLIT_EVERY,
) -> Future:
    """:func:`tree_reduce` left on the cluster: the same tree, its root a task.

    For a value that only further tasks need, so the client does not wait
    for it.
    """
    level = _reduce_to_last_group(client, combine, parts, name, split_every, ())
    return client.submit(combine, *level, key=task_keys(name, 1)[0], pure=False)


def _reduce_to_last_group(
    client: Client,
    combine: Callable[..., Any],
    parts: Sequence[Future],
    name: str,
    split_every: int,
    leading: tuple,
) -> list[Future]:
    """Combine ``parts`` in tasks, ``split_every`` at a time, until one group is left."""
    level = list(parts)
    depth = 0
    while len(level) > split_every:
        groups = [level[i : i + split_every] for i in range(0, len(level), split_every)]
        keys = task_keys(f"{name}-{depth}", len(groups))
        level = [
            client.submit(combine, *leading, *group, key=key, pure=False)
            for group, key in zip(groups, keys, strict=True)
        ]
        depth += 1
    return level
