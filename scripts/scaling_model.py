"""A cost model of one Lloyd iteration (and a fit's fixed part) on a Dask cluster.

Pure functions, no Dask: ``scripts/bench_scaling.py`` measures the
constants on this machine and compares the predictions with fits, and
``benchmarks/SCALING.md`` projects them to large clusters.

One iteration through the per-worker actors (``kmeans_dask/_engine/hosts.py``)
is, in order:

1. the client sends one call per worker, each carrying the centres
   (``k x d`` of the data's dtype): :func:`fan_out_seconds`;
2. each worker maps the chunk statistics over its chunks on its threads,
   ``ceil(chunks / threads)`` rounds of one chunk each (search ``2 k d``
   flops per row, float64 statistics ``d`` adds per row, and a fixed cost per
   chunk that includes zeroing its ``k x (d + 1)`` float64 set), then adds
   the sets it combines itself: :func:`worker_seconds`;
3. the partial sets travel and are added in the fixed tree of
   ``tree_reduce`` (groups of 8 chunks): today a worker combines a group of
   the first level only when it holds the whole group, and the client
   receives the rest (:func:`sets_to_client`); with worker-to-worker
   combining (issue #24 point 1) every level is combined where its first
   member lives and the client receives one set (:func:`tree_seconds`);
4. the client computes the new centres and their shift (``k x d``).

The task engine (used when the per-chunk sets of one iteration exceed
``MAX_GATHERED_BYTES``) replaces 1 by a graph of tasks that the scheduler
handles one by one (:func:`scheduler_seconds`) and 3 by the same tree run as
tasks on the workers; the client gathers the last group.

Units: seconds, bytes, bytes per second.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

#: Chunks combined per node of the reduction tree (``mapreduce.SPLIT_EVERY``).
SPLIT_EVERY = 8
#: Largest per-iteration total of per-chunk sets the actor engine gathers
#: (``hosts.MAX_GATHERED_BYTES``): above it ``engine="auto"`` runs tasks.
MAX_GATHERED_BYTES = 64 * 2**20


@dataclass(frozen=True)
class Constants:
    """Per-core and per-message costs, measured by ``scripts/bench_scaling.py``."""

    search_flops: float
    """Nearest-centre search rate of one core (flop/s, counting ``2 k d`` per row)."""
    statistics_seconds_per_value: float
    """Float64 statistics per row and feature, one core."""
    chunk_seconds: float
    """Fixed cost of one chunk's statistics call on a worker thread (Python, setup)."""
    prepare_seconds_per_value: float
    """Preparing the search over new centres, once per worker and iteration, per centre value."""
    add_bytes_per_second: float
    """Adding one float64 set into another (and zeroing a fresh one), bytes of the set."""
    call_seconds: float
    """Fixed part of one call to every actor (client event loop, one round trip)."""
    call_seconds_per_worker: float
    """The client's own time per worker called (send a request, read a reply)."""
    worker_call_seconds: float
    """A worker's own time per call (read it, start the map, reply): parallel
    over workers unless they share cores (:attr:`Setup.cores`)."""
    serialize_bytes_per_second: float
    """The client's rate of sending or receiving array bytes (serialisation, copies)."""
    update_seconds_per_value: float
    """The client's new centres and centre shift per centre value."""
    task_seconds: float
    """The scheduler's time per task (task engine only)."""
    graph_seconds: float
    """Fixed part of a task-engine iteration (graph submission, gather)."""


@dataclass(frozen=True)
class Setup:
    """One fit's shape and cluster."""

    n: float
    """Rows."""
    d: int
    k: int
    workers: int
    threads: int
    """Threads (cores) per worker."""
    chunks: int
    """Chunks over all workers (they decide the reduction tree)."""
    bandwidth: float = math.inf
    """Network bytes per second into or out of one machine (inf: loopback)."""
    latency: float = 0.0
    """One network hop, seconds (0: loopback, already in the measured call costs)."""
    itemsize: int = 4
    """Bytes per value of the rows and centres (float32)."""
    reduction: str = "client"
    """"client" (today: first-level groups combined on a worker, the rest on the
    client) or "tree" (worker to worker, the client receives one set)."""
    engine: str = "actors"
    """"actors" or "tasks"."""
    placement: str = "contiguous"
    """How chunks lie on workers: "contiguous" blocks or "round-robin"."""
    broadcast: str = "client"
    """"client": the client calls every worker, the centres in each call (today);
    "tree": the client calls 8 workers, each forwards to 8 more, and so on."""
    statistics_itemsize: int = 8
    """Bytes per value of the partial statistics (float64 today)."""
    cores: int = 0
    """Cores the workers share (0: each worker thread has its own core). On
    this 2-core machine many workers run their maps in turn."""

    @property
    def sharing(self) -> float:
        """How many worker threads take turns on one core (at least 1)."""
        return max(1.0, self.workers * self.threads / self.cores) if self.cores else 1.0

    @property
    def set_bytes(self) -> int:
        """One chunk's partial statistics: ``k x d`` sums and ``k`` counts."""
        return self.statistics_itemsize * self.k * (self.d + 1)

    @property
    def centres_bytes(self) -> int:
        return self.k * self.d * self.itemsize


def placement_of(chunks: int, workers: int, kind: str) -> list[int]:
    """The worker of each chunk: contiguous blocks of chunks, or dealt round-robin."""
    if kind == "round-robin":
        return [i % workers for i in range(chunks)]
    if kind == "contiguous":
        return [i * workers // chunks for i in range(chunks)]
    raise ValueError(f"placement must be 'contiguous' or 'round-robin', got {kind!r}")


def first_level(n_chunks: int, split_every: int = SPLIT_EVERY) -> list[range]:
    """The chunk groups the tree combines first (all chunks when at most ``split_every``)."""
    width = split_every if n_chunks > split_every else max(n_chunks, 1)
    return [range(start, min(start + width, n_chunks)) for start in range(0, n_chunks, width)]


def tree_depth(n_chunks: int, split_every: int = SPLIT_EVERY) -> int:
    """Levels of the reduction tree: ``ceil(log_8(chunks))``, at least 1."""
    depth, level = 1, max(n_chunks, 1)
    while level > split_every:
        level = math.ceil(level / split_every)
        depth += 1
    return depth


def sets_to_client(placement: Sequence[int], split_every: int = SPLIT_EVERY) -> int:
    """Sets the client receives per iteration today (``ChunkHosts.map_reduce``).

    One per first-level group whose chunks one worker holds (it combines
    them), else one per chunk of the group.
    """
    return sum(
        1 if len({placement[i] for i in group}) == 1 else len(group)
        for group in first_level(len(placement), split_every)
    )


@dataclass(frozen=True)
class TreeLevel:
    """One level of the worker-to-worker tree."""

    crossing: bool
    """Whether some group's members live on more than one worker."""
    max_inbound: int
    """Most sets one worker receives from others at this level."""
    max_adds: int
    """Most additions one worker makes at this level."""


def tree_levels(placement: Sequence[int], split_every: int = SPLIT_EVERY) -> list[TreeLevel]:
    """The tree of ``tree_reduce`` with each node combined where its first member lives."""
    homes = list(placement)
    levels = []
    while True:
        groups = [homes[i : i + split_every] for i in range(0, len(homes), split_every)]
        if len(homes) <= split_every:
            groups = [homes]
        inbound: dict[int, int] = {}
        adds: dict[int, int] = {}
        for group in groups:
            home = group[0]
            inbound[home] = inbound.get(home, 0) + sum(member != home for member in group)
            adds[home] = adds.get(home, 0) + len(group) - 1
        levels.append(
            TreeLevel(
                crossing=any(len(set(group)) > 1 for group in groups),
                max_inbound=max(inbound.values()),
                max_adds=max(adds.values()),
            )
        )
        homes = [group[0] for group in groups]
        if len(homes) == 1:
            return levels


def engine_for(setup: Setup) -> str:
    """The engine ``engine="auto"`` picks: actors while the per-chunk sets stay small."""
    return "actors" if setup.chunks * setup.set_bytes <= MAX_GATHERED_BYTES else "tasks"


def transfer_seconds(nbytes: float, setup: Setup, c: Constants) -> float:
    """Moving ``nbytes`` through one process: its serialisation, then the network."""
    return nbytes / c.serialize_bytes_per_second + nbytes / setup.bandwidth


def compute_seconds(setup: Setup, c: Constants) -> float:
    """The busiest worker thread's search and statistics, chunk overheads included."""
    chunks_per_worker = math.ceil(setup.chunks / setup.workers)
    rounds = math.ceil(chunks_per_worker / setup.threads)
    rows_per_chunk = setup.n / setup.chunks
    per_row = 2 * setup.k * setup.d / c.search_flops + setup.d * c.statistics_seconds_per_value
    per_chunk = c.chunk_seconds + setup.set_bytes / c.add_bytes_per_second
    prepare = setup.k * setup.d * c.prepare_seconds_per_value
    return (rounds * (rows_per_chunk * per_row + per_chunk) + prepare) * setup.sharing


def fan_out_seconds(setup: Setup, c: Constants) -> float:
    """The calls that start an iteration on every worker, the centres in each.

    From the client to every worker (today), or down a tree of fan-out 8
    whose every node (the client, then workers) calls 8 others.
    """
    if setup.broadcast == "client":
        callers, levels = setup.workers, 1
    elif setup.broadcast == "tree":
        callers, levels = min(setup.workers, SPLIT_EVERY), tree_depth(setup.workers)
    else:
        raise ValueError(f"broadcast must be 'client' or 'tree', got {setup.broadcast!r}")
    per_level = (
        c.call_seconds
        + callers * c.call_seconds_per_worker
        + transfer_seconds(callers * setup.centres_bytes, setup, c)
        + 2 * setup.latency
    )
    return levels * per_level + c.worker_call_seconds * setup.sharing


def worker_adds_today(placement: Sequence[int], split_every: int = SPLIT_EVERY) -> int:
    """Most additions one worker makes today: those of the first-level groups it holds whole."""
    adds: dict[int, int] = {}
    for group in first_level(len(placement), split_every):
        holders = {placement[i] for i in group}
        if len(holders) == 1:
            (home,) = holders
            adds[home] = adds.get(home, 0) + len(group) - 1
    return max(adds.values(), default=0)


def reduction_seconds(setup: Setup, c: Constants) -> float:
    """Combining the per-chunk sets into one on the client, after the workers' maps."""
    placement = placement_of(setup.chunks, setup.workers, setup.placement)
    add = setup.set_bytes / c.add_bytes_per_second
    if setup.reduction == "client":
        received = sets_to_client(placement)
        return (
            worker_adds_today(placement) * add
            + transfer_seconds(received * setup.set_bytes, setup, c)
            + (received - 1) * add
        )
    if setup.reduction == "tree":
        return tree_seconds(placement, setup, c) + transfer_seconds(setup.set_bytes, setup, c)
    raise ValueError(f"reduction must be 'client' or 'tree', got {setup.reduction!r}")


def tree_seconds(placement: Sequence[int], setup: Setup, c: Constants) -> float:
    """The worker-to-worker tree: per level, a hop and the busiest worker's traffic and adds."""
    add = setup.set_bytes / c.add_bytes_per_second
    total = 0.0
    for level in tree_levels(placement):
        total += level.max_adds * add
        if level.crossing:
            total += setup.latency + transfer_seconds(
                level.max_inbound * setup.set_bytes, setup, c
            )
    return total


def last_group(n_chunks: int, split_every: int = SPLIT_EVERY) -> int:
    """Values the task engine's client gathers: what is left after the levels run as tasks."""
    level = n_chunks
    while level > split_every:
        level = math.ceil(level / split_every)
    return level


def task_count(n_chunks: int, split_every: int = SPLIT_EVERY) -> int:
    """Tasks of a task-engine iteration: the maps, the reduce levels run as tasks, the centres."""
    tasks, level = n_chunks, n_chunks
    while level > split_every:
        level = math.ceil(level / split_every)
        tasks += level
    return tasks + 1


def scheduler_seconds(setup: Setup, c: Constants) -> float:
    """Task engine: the scheduler's time for the tasks of an iteration."""
    return c.graph_seconds + task_count(setup.chunks) * c.task_seconds


def iteration_terms(setup: Setup, c: Constants) -> dict[str, float]:
    """Each term of one iteration, seconds; their sum is :func:`iteration_seconds`."""
    update = setup.k * setup.d * c.update_seconds_per_value
    if setup.engine == "tasks":
        # The centres go out once, as a task's result that the workers fetch
        # from the workers that have it (about a doubling per round); the
        # tree runs as tasks on the workers; the client gathers the last group.
        placement = placement_of(setup.chunks, setup.workers, setup.placement)
        rounds = math.ceil(math.log2(setup.workers)) + 1
        return {
            "fan-out": transfer_seconds(setup.centres_bytes, setup, c)
            + rounds * (setup.latency + setup.centres_bytes / setup.bandwidth),
            "scheduler": scheduler_seconds(setup, c) + 2 * setup.latency,
            "compute": compute_seconds(setup, c),
            "reduction": tree_seconds(placement, setup, c)
            + transfer_seconds(last_group(setup.chunks) * setup.set_bytes, setup, c),
            "update": update,
        }
    return {
        "fan-out": fan_out_seconds(setup, c),
        "scheduler": 0.0,
        "compute": compute_seconds(setup, c),
        "reduction": reduction_seconds(setup, c),
        "update": update,
    }


def iteration_seconds(setup: Setup, c: Constants) -> float:
    """Predicted wall time of one Lloyd iteration."""
    return sum(iteration_terms(setup, c).values())


def bottleneck(setup: Setup, c: Constants) -> str:
    """The largest term of :func:`iteration_terms`."""
    terms = iteration_terms(setup, c)
    return max(terms, key=terms.__getitem__)


def least_squares(
    rows: Sequence[Sequence[float]], targets: Sequence[float], *, nonnegative: bool = False
) -> list[float]:
    """Coefficients ``x`` minimising ``|rows @ x - targets|`` (NumPy's lstsq; SciPy's
    nnls with ``nonnegative``, for costs that cannot be below zero)."""
    import numpy as np

    matrix, vector = np.asarray(rows, float), np.asarray(targets, float)
    if nonnegative:
        from scipy.optimize import nnls

        return [float(v) for v in nnls(matrix, vector)[0]]
    solution, *_ = np.linalg.lstsq(matrix, vector, rcond=None)
    return [float(v) for v in solution]
