"""Low-latency Lloyd iterations: one actor per worker runs the map over its chunks.

A Lloyd iteration made of tasks pays a scheduler round trip: the client
sends the graph to the scheduler, which sends the tasks to the workers,
which report back to the scheduler, which tells the client. Each hop batches
its messages for a few milliseconds, a good share of a whole iteration at
n=1M, d=32, k=64 (benchmarks/RESULTS.md, "Design measurements"). A call to a
Dask actor costs one client-to-worker round trip.

So for data held in worker memory, the passes of a fit (the data check,
the k-means|| rounds, the Lloyd iterations, the final labelling pass) go
through one :class:`ChunkHost` actor per worker, created next to the chunks
that worker holds (nothing is copied) and kept for the whole fit. Each pass
the client calls every host at once; a host runs the same task function as
the task path (e.g. :func:`~kmeans_dask._worker.tasks.chunk_stats`) over its
chunks on the worker's thread pool. The results are combined in the fixed tree of
:func:`~kmeans_dask._engine.mapreduce.tree_reduce`, whose shape depends only on
the number of chunks, never on which worker holds what, so the result is bit
for bit that of the task path for any placement. Two ways, chosen per call
by the bytes the client would receive:

* Small values: a host combines each group of the tree's first level whose
  chunks it holds (on one worker, the whole tree) and answers with those
  groups' values (and the values of chunks in groups split between
  workers); the client combines the rest. One round trip, no hop between
  workers, but at least one value per worker reaches the client.
* When those values would exceed
  :data:`~kmeans_dask._engine.mapreduce.CLIENT_GATHER_BYTES` (k x d
  statistics on many workers: k = 65536, d = 256 on 100 workers would be
  13 GB per iteration into one process), the hosts combine the whole tree
  worker to worker and the client receives one value whatever the number
  of workers. Still one call per host: the client sends each host its plan
  (:class:`TreePlan`: the inner nodes it combines, each living on the host
  of its first chunk); a host maps its chunks, then for each node it
  combines takes the children other hosts hold from their actors
  (:meth:`ChunkHost.take`, which waits until the value is ready and then
  forgets it) and combines them off the event loop; the root's host answers
  with the root, the others with None. Values kept for another host belong
  to one iteration (a token) and are dropped once taken, when the
  iteration fails (the hosts waiting for them get the error) and when the
  next one starts; the client tells the hosts when it gives an iteration
  up, so none waits for ever on a lost one.

The calls go straight to the workers' ``actor_execute`` handler, the one a
:class:`distributed.Actor` handle calls, without the handle's own future
and its extra hop to the event loop (benchmarks/RESULTS.md, "Actor calls").
That handler is internal to distributed: :class:`ChunkHosts` checks it once,
when its actors start, with one call per actor, and if it does not answer
as expected (a release that renamed or reshaped it) every call of that fit
goes through the public ``Actor`` handles instead, the hosts' calls to one
another included. Both paths run the same methods on the same actors, so the
results are the same bit for bit.

The price: these passes do not appear in the dashboard's task stream (the
workers' CPU and memory panels still show them), and a worker lost mid-call
surfaces as :class:`HostLost`, after which the caller restores the data and
repeats the step, exactly as when a task loses its data.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import threading
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import CancelledError
from typing import Any, NamedTuple

import numpy as np
from distributed import Actor, Client, Future, get_worker
from distributed.protocol import to_serialize

from kmeans_dask._engine.client import scheduler_lost, worker_info
from kmeans_dask._engine.mapreduce import CLIENT_GATHER_BYTES, SPLIT_EVERY, task_keys
from kmeans_dask._engine.pauses import watched_gather, watched_wait
from kmeans_dask._worker.chunks import ZarrBlock
from kmeans_dask._worker.reading import ReadAhead, read_ahead_for
from kmeans_dask._worker.shared_blocks import help_open_searches, host_call

logger = logging.getLogger(__name__)

#: Largest total size of the per-chunk statistics of one iteration that
#: ``engine="auto"`` sends through the actors; above it the iterations run as
#: tasks. The actors combine large statistics worker to worker, so the client
#: no longer gathers them, but with the largest statistics on several workers
#: the tasks were still faster (benchmarks/RESULTS.md, "Actors or tasks for
#: large statistics").
MAX_GATHERED_BYTES = 64 * 2**20

#: How long to wait for the scheduler to notice a worker that stopped answering.
_WORKER_GONE_TIMEOUT = 30.0
#: How long one question to the scheduler may take while telling a lost
#: worker from a lost scheduler (whose client would retry connecting for 30 s).
_SCHEDULER_ANSWER_TIMEOUT = 2.0
#: How long the client waits for the hosts to hear that it gave up an iteration.
_ABANDON_TIMEOUT = 2.0
#: How often the client, waiting for the hosts, looks whether one's worker was lost.
_LOSS_POLL_SECONDS = 0.1


class HostGroup(NamedTuple):
    """The chunks one host holds."""

    address: str
    """The worker it runs on."""
    chunk_indices: list[int]
    """Its chunks' positions in the data's chunk list, in the host's order."""


class Part(NamedTuple):
    """Values a host answers with for one part of the tree's first level."""

    positions: list[int]
    """Positions of the part's chunks among the host's chunks."""
    combined: bool
    """Whether the host combines them (a whole group), else returns the one value."""


class Slot(NamedTuple):
    """Where a value is in the hosts' answers."""

    host: int
    part: int


class GroupPlan(NamedTuple):
    """How one group of the tree's first level is answered."""

    whole: bool
    """Whether one host holds all its chunks and combines them."""
    slots: list[Slot]
    """The group's value (whole) or its chunks' values, in chunk order."""


class Pull(NamedTuple):
    """Values a host takes from another host's actor."""

    address: str
    """The worker of the other host."""
    actor: Any
    """The other host's actor key."""
    nodes: list[int]
    """The tree nodes whose values it takes, in the order the combination wants them."""


class NodeStep(NamedTuple):
    """One inner node of the reduction tree that a host combines."""

    node: int
    children: list[int]
    """Its children, in the order they are combined."""
    pulls: list[Pull]
    """Where the children that other hosts hold come from."""


class TreePlan(NamedTuple):
    """One host's part of an iteration's reduction tree, worker to worker.

    Nodes are numbered as :func:`reduction_tree` numbers them: the chunks
    first, then the inner nodes bottom-up, the root last.
    """

    token: int
    """The iteration: values kept for other hosts belong to one iteration."""
    steps: list[NodeStep]
    """The inner nodes this host combines, children before parents."""
    shared: list[int]
    """Nodes whose parent another host combines: kept until that host takes them."""
    root: int | None
    """The root, if this host combines it (and returns its value), else None."""
    direct: bool
    """Whether to take values through the ``actor_execute`` handler (else ``Actor`` handles)."""


class HostLost(CancelledError):
    """A worker holding a :class:`ChunkHost` stopped answering."""


class ChunkHost:
    """Actor holding the chunks of one worker and mapping tasks over them."""

    def __init__(self, *chunks: Any) -> None:
        self._chunks = chunks
        #: The latest iteration of :meth:`reduce_tree` this host has heard of.
        self._token = -1
        #: That iteration's values kept for (or awaited by) other hosts, by node.
        self._kept: dict[int, asyncio.Future] = {}
        #: Why that iteration failed here, if it did.
        self._failure: BaseException | None = None
        #: Set (with an error) when the client gives that iteration up.
        self._abandoned: asyncio.Future | None = None

    async def n_chunks(self) -> int:
        """How many chunks this host holds: the probe of the direct calls."""
        return len(self._chunks)

    async def map(self, func: Callable, *args: Any) -> list[Any]:
        """``[func(chunk, *args) for chunk in chunks]``, on the worker's threads."""
        values: list[Any] = [None] * len(self._chunks)

        def keep(position: int, value: Any) -> None:
            values[position] = value

        await self._each(func, args, keep)
        return values

    async def map_combine(
        self, parts: list[Part], func: Callable, combine: Callable, *args: Any
    ) -> list[Any]:
        """``func`` over the chunks, returned as ``parts`` ask.

        Each part lists positions in this host's chunks and whether to
        return ``combine(*values)`` of them (True) or the one value itself.
        A part is combined as soon as its last value is in, by the thread
        that made it, so the worker holds the values of the parts under way
        rather than of all its chunks (a pass drawing 10,000 sample rows per
        chunk would otherwise hold them all).
        """
        results: list[Any] = [None] * len(parts)
        part_of = {position: index for index, part in enumerate(parts) for position in part[0]}
        members: list[dict[int, Any]] = [{} for _ in parts]
        lock = threading.Lock()

        def keep(position: int, value: Any) -> None:
            index = part_of[position]
            positions, combined = parts[index]
            with lock:
                members[index][position] = value
                complete = len(members[index]) == len(positions)
            if complete:  # in the order of the part's positions, whoever finishes it
                values = [members[index].pop(i) for i in positions]
                results[index] = combine(*values) if combined else values[0]

        await self._each(func, args, keep)
        return results

    async def _each(
        self, func: Callable, args: tuple[Any, ...], keep: Callable[[int, Any], None]
    ) -> None:
        """``keep(position, func(chunk, *args))`` for every chunk, on the worker's threads.

        One job per worker thread, each taking the next chunk until none is
        left: a slow thread does fewer chunks, and the event loop hears back
        once per thread instead of once per chunk (RESULTS.md, "Design
        measurements"). A job left without chunks searches blocks of the
        chunks still under way (:mod:`~kmeans_dask._worker.shared_blocks`).
        Blocks streamed from a store are read ahead of the jobs, within the
        worker's memory limit (:mod:`kmeans_dask._worker.reading`).
        """
        worker = get_worker()
        jobs = min(worker.state.nthreads, len(self._chunks))
        ahead = read_ahead_for(self._chunks, jobs, worker.memory_manager.memory_limit)

        def work(blocks: ReadAhead) -> None:
            try:
                while (taken := blocks.take()) is not None:
                    keep(taken.position, func(taken.block, *args))
                    del taken  # drop the block before taking the next
                help_open_searches()  # the other jobs' last chunks
            except BaseException:
                blocks.stop()  # the other jobs stop too
                raise

        loop = asyncio.get_running_loop()
        with ReadAhead(self._chunks, ahead=ahead, readers=jobs) as blocks, host_call():
            outcomes = await asyncio.gather(
                *[
                    # Each job carries the worker context, so get_worker() works inside.
                    loop.run_in_executor(
                        worker.executors["default"], contextvars.copy_context().run, work, blocks
                    )
                    for _ in range(jobs)
                ],
                return_exceptions=True,
            )
        failures = [outcome for outcome in outcomes if isinstance(outcome, BaseException)]
        if failures:  # the first that is not another job stopping because of it
            raise next((f for f in failures if not isinstance(f, CancelledError)), failures[0])

    async def reduce_tree(
        self,
        plan: TreePlan,
        chunk_nodes: list[int],
        func: Callable,
        combine: Callable,
        *args: Any,
    ) -> Any:
        """``func`` over the chunks, then the nodes of ``plan`` combined; the root's value or None.

        ``chunk_nodes`` are this host's chunks' node numbers. A child that
        another host holds is taken from it (:meth:`take`); a node whose
        parent another host combines is kept until that host takes it. On
        failure every value kept is dropped and every host waiting for one
        gets the error.
        """
        kept = self._iteration(plan.token)
        loop = asyncio.get_running_loop()
        executor = get_worker().executors["default"]
        # A group of this host's chunks is combined by the thread that makes its
        # last value, and every value is dropped once its parent has it, so a
        # worker holds the values under way, not one per chunk.
        position_of = {node: position for position, node in enumerate(chunk_nodes)}
        eager = [
            step
            for step in plan.steps
            if not step.pulls and all(child in position_of for child in step.children)
        ]
        group_of = {child: step for step in eager for child in step.children}
        members: dict[int, dict[int, Any]] = {step.node: {} for step in eager}
        lock = threading.Lock()
        delivered = [node for node in chunk_nodes if node not in group_of]
        slots = {node: loop.create_future() for node in [*delivered, *members]}
        values: dict[int, asyncio.Future] = dict(slots)

        def deliver(node: int, value: Any) -> None:  # from a worker thread
            def arrive() -> None:
                slot = slots.pop(node, None)
                if slot is not None and not slot.done():
                    slot.set_result(value)

            loop.call_soon_threadsafe(arrive)

        def keep(position: int, value: Any) -> None:  # on a worker thread
            node = chunk_nodes[position]
            step = group_of.get(node)
            if step is None:
                deliver(node, value)
                return
            with lock:
                members[step.node][node] = value
                complete = len(members[step.node]) == len(step.children)
            if complete:
                group = members[step.node]
                deliver(step.node, combine(*[group.pop(child) for child in step.children]))

        async def combined(step: NodeStep) -> Any:
            taken = await asyncio.gather(*[self._pull(pull, plan) for pull in step.pulls])
            children = {
                node: value
                for pull, pulled in zip(step.pulls, taken, strict=True)
                for node, value in zip(pull.nodes, pulled, strict=True)
            }
            for child in step.children:
                if child not in children:
                    children[child] = await values.pop(child)
            # Off the event loop: large statistics take a while to add.
            return await loop.run_in_executor(
                executor, combine, *[children.pop(child) for child in step.children]
            )

        async def share(node: int) -> None:
            value = await values.pop(node)
            slot = kept.get(node)
            if slot is None:
                slot = kept[node] = loop.create_future()
            slot.set_result(value)

        steps = []
        try:
            for step in plan.steps:  # children before parents: a parent finds its children
                if step.node not in members:
                    values[step.node] = asyncio.ensure_future(combined(step))
                    steps.append(values[step.node])
            root = None if plan.root is None else values[plan.root]
            await asyncio.gather(
                self._each(func, args, keep), *steps, *[share(node) for node in plan.shared]
            )
            result = None if root is None else await root
        except BaseException as exc:
            for pending in [*values.values(), *steps]:
                pending.cancel()
            self._fail(plan.token, exc)
            raise
        return result

    async def take(self, token: int, nodes: list[int]) -> list[Any]:
        """The values of ``nodes`` in iteration ``token``, once computed here; then forgotten."""
        kept = self._iteration(token)
        loop = asyncio.get_running_loop()
        slots = []
        for node in nodes:
            if node not in kept:
                kept[node] = loop.create_future()
            slots.append(kept[node])
        try:
            return list(await asyncio.gather(*slots))
        finally:
            for node in nodes:
                kept.pop(node, None)

    def _iteration(self, token: int) -> dict[int, asyncio.Future]:
        """The values kept for iteration ``token``; a newer one forgets the older ones.

        Raises why that iteration failed here, if it did (so a host asking
        later does not wait for a value that will never come).
        """
        if token > self._token:
            self._fail(self._token, RuntimeError("a newer iteration started"))
            self._token, self._failure = token, None
            self._abandoned = asyncio.get_running_loop().create_future()
        elif token < self._token:
            raise RuntimeError(f"iteration {token} is over (now {self._token})")
        elif self._failure is not None:
            raise self._failure
        return self._kept

    def _fail(self, token: int, exc: BaseException) -> None:
        """Drop iteration ``token``'s kept values; hosts waiting for one get ``exc``."""
        if token != self._token:
            return
        self._failure = exc
        for slot in self._kept.values():
            if not slot.done():
                slot.set_exception(exc)
                slot.exception()  # retrieved here, so asyncio does not log it if nobody waits
        self._kept = {}

    async def abandon(self, token: int) -> None:
        """The client gave iteration ``token`` up: stop waiting for other hosts' values.

        An iteration that has not begun here fails at once when its call arrives.
        """
        error = RuntimeError(f"the client gave iteration {token} up (a host failed)")
        if token > self._token:
            self._iteration(token)
            self._failure = error
        if token == self._token and self._abandoned is not None and not self._abandoned.done():
            self._abandoned.set_exception(error)
            self._abandoned.exception()  # retrieved here, so asyncio does not log it

    async def _pull(self, pull: Pull, plan: TreePlan) -> list[Any]:
        """:meth:`take` on another host, unless the client gives the iteration up first.

        A worker that dies while asked fails the call; but a call to one that
        died before it is reached may wait for the connect timeout, and one
        through an ``Actor`` handle can wait for ever (the handle then waits
        for its actor's future, which need not settle): the client, which
        learns of the loss from the scheduler, ends such waits (:meth:`abandon`).
        """
        call = asyncio.ensure_future(_take_from(pull, plan.token, plan.direct))
        abandoned = self._abandoned
        await asyncio.wait([call, abandoned], return_when=asyncio.FIRST_COMPLETED)
        if call.done():
            return call.result()
        call.cancel()
        raise abandoned.exception()


async def _take_from(pull: Pull, token: int, direct: bool) -> list[Any]:
    """:meth:`ChunkHost.take` on another host, through its worker's handler or a handle."""
    worker = get_worker()
    if not direct:
        return await Actor(ChunkHost, pull.address, pull.actor, worker=worker).take(
            token, pull.nodes
        )
    reply = await worker.rpc(pull.address).actor_execute(
        actor=pull.actor,
        function="take",
        args=[to_serialize(token), to_serialize(pull.nodes)],
        kwargs={},
    )
    if reply["status"] != "OK":
        raise reply["exception"]
    return reply["result"]


class ChunkHosts:
    """One :class:`ChunkHost` per worker, over chunk futures or the blocks of a store.

    A host holds the chunks its worker holds; blocks streamed from a store
    (:class:`~kmeans_dask._worker.chunks.ZarrBlock`) are spread over the
    workers in runs of consecutive blocks, in proportion to their threads,
    so most groups of the reduction tree are combined on one worker.
    """

    def __init__(self, client: Client, chunks: Sequence[Future] | Sequence[ZarrBlock]) -> None:
        if chunks and isinstance(chunks[0], Future):
            by_worker = _where_held(client, chunks)
        else:
            by_worker = _spread(len(chunks), worker_info(client) or {})
        self._client = client
        self._n_chunks = len(chunks)
        self._groups = [HostGroup(address, indices) for address, indices in by_worker.items()]
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
        # Waits for the actors to start (raising what a constructor raised).
        # Each actor starts as a task on its worker, which a paused worker holds back.
        self._handles: list[Actor] = watched_gather(
            client, self._futures, workers=[address for address, _ in self._groups]
        )
        #: Whether calls go straight to the workers' handler (else through the handles).
        self.direct = client.sync(self._direct_calls_answer)
        #: The last iteration reduced worker to worker (:meth:`ChunkHost.reduce_tree`).
        self._token = -1

    def map(self, func: Callable, *args: Any) -> list[Any]:
        """``func(chunk, *args)`` for every chunk, in chunk order.

        Raises
        ------
        HostLost
            If a worker died (after the scheduler has noticed it).
        """
        per_host = self._call("map", func, *args)
        results: list[Any] = [None] * self._n_chunks
        for (_, indices), values in zip(self._groups, per_host, strict=True):
            for index, value in zip(indices, values, strict=True):
                results[index] = value
        return results

    def map_reduce(
        self,
        func: Callable,
        combine: Callable,
        *args: Any,
        split_every: int = SPLIT_EVERY,
        result_bytes: int = 0,
    ) -> Any:
        """``func(chunk, *args)`` for every chunk, combined in the tree of ``tree_reduce``.

        A group of the tree's first level whose chunks all live on one worker
        is combined there, and the client gathers the groups' values (or the
        chunks', for a group split between workers) and combines the rest,
        which saves the hops between workers. When those values (of
        ``result_bytes`` each, when known) exceed
        :data:`~kmeans_dask._engine.mapreduce.CLIENT_GATHER_BYTES`, the hosts
        combine the whole tree worker to worker instead, and the client
        receives one value whatever the number of workers. Either way the
        result is bit for bit :func:`combine_in_tree` of the per-chunk values.

        Raises
        ------
        HostLost
            If a worker died (after the scheduler has noticed it).
        """
        requests, plans = self._first_level_plan(split_every)
        if sum(len(parts) for parts in requests) * result_bytes > CLIENT_GATHER_BYTES:
            return self._reduce_on_workers(func, combine, args, split_every)
        per_host = self._call("map_combine", func, combine, *args, first=[(r,) for r in requests])
        level = []
        for plan in plans:
            values = [per_host[slot.host][slot.part] for slot in plan.slots]
            level.append(values[0] if plan.whole else combine(*values))
        if len(level) == 1:  # the first level was the root
            return level[0]
        return combine_in_tree(combine, level, split_every)

    def _reduce_on_workers(
        self, func: Callable, combine: Callable, args: tuple[Any, ...], split_every: int
    ) -> Any:
        """The whole tree combined by the hosts; the root's host answers with the result.

        An inner node is combined by the host that holds its first chunk, so
        most of a subtree whose chunks one worker holds stays there.
        """
        owner = [0] * self._n_chunks
        for host, (_, indices) in enumerate(self._groups):
            for index in indices:
                owner[index] = host
        self._token += 1
        steps: list[list[NodeStep]] = [[] for _ in self._groups]
        shared: list[list[int]] = [[] for _ in self._groups]
        for node, children in enumerate(reduction_tree(self._n_chunks, split_every), len(owner)):
            host = owner[children[0]]
            owner.append(host)
            remote: dict[int, list[int]] = defaultdict(list)
            for child in children:
                if owner[child] != host:
                    remote[owner[child]].append(child)
                    shared[owner[child]].append(child)
            pulls = [
                Pull(self._groups[other].address, self._futures[other].key, nodes)
                for other, nodes in remote.items()
            ]
            steps[host].append(NodeStep(node, children, pulls))
        root = len(owner) - 1
        plans = [
            (
                TreePlan(
                    self._token,
                    steps[host],
                    shared[host],
                    root if owner[root] == host else None,
                    self.direct,
                ),
                indices,
            )
            for host, (_, indices) in enumerate(self._groups)
        ]
        try:
            answers = self._call("reduce_tree", func, combine, *args, first=plans)
        except BaseException:
            self._client.sync(self._abandon, self._token)
            raise
        return answers[owner[root]]

    def _first_level_plan(self, split_every: int) -> tuple[list[list[Part]], list[GroupPlan]]:
        """What each host answers for the tree's first level, and where each group's values are.

        A group whose chunks one host holds is combined there; a group split
        between hosts is answered chunk by chunk.
        """
        located = {
            index: (host, position)
            for host, (_, indices) in enumerate(self._groups)
            for position, index in enumerate(indices)
        }
        requests: list[list[Part]] = [[] for _ in self._groups]
        plans: list[GroupPlan] = []
        for group in _first_level(self._n_chunks, split_every):
            whole = len({located[index][0] for index in group}) == 1
            slots = []
            for members in [group] if whole else [[index] for index in group]:
                host = located[members[0]][0]
                slots.append(Slot(host, len(requests[host])))
                requests[host].append(Part([located[index][1] for index in members], whole))
            plans.append(GroupPlan(whole, slots))
        return requests, plans

    def _call(
        self, method: str, *args: Any, first: Sequence[tuple[Any, ...]] | None = None
    ) -> list[Any]:
        """Call ``method`` on every host at once; their answers, in host order.

        With ``first``, host ``i`` gets the arguments ``first[i]`` before ``args``.
        """
        own = [()] * len(self._futures) if first is None else first
        try:
            return self._client.sync(self._call_hosts, method, args, own)
        except Exception as exc:
            # Errors raised by ``func`` come back as themselves; a dead worker
            # shows as an OSError.
            unreachable = isinstance(exc, OSError)
            if not self._lost_a_worker(_WORKER_GONE_TIMEOUT if unreachable else 0.0):
                raise
            raise HostLost(f"a worker holding chunks was lost: {exc!r}") from exc

    async def _call_hosts(
        self, method: str, args: tuple[Any, ...], own: Sequence[tuple[Any, ...]]
    ) -> list[Any]:
        """The calls of :meth:`_call`, made on the client's event loop, given up with an
        ``OSError`` once the scheduler has dropped the worker of a host.

        A call through an ``Actor`` handle to a worker that died can wait for ever
        (the handle then waits for its actor's future, which a restarted worker
        never settles), and a direct call to one that died before it was reached
        waits for the connect timeout: the loss shows first in the status of the
        host's future.
        """
        answers = asyncio.ensure_future(self._answers(method, args, own))
        lost = asyncio.ensure_future(self._until_a_host_is_lost())
        try:
            await asyncio.wait([answers, lost], return_when=asyncio.FIRST_COMPLETED)
        finally:
            lost.cancel()
        if answers.done():
            return answers.result()
        answers.cancel()
        raise OSError(f"the worker of a host was lost while the client waited for {method!r}")

    async def _until_a_host_is_lost(self) -> None:
        """Return once the future of a host is no longer finished (its worker was lost)."""
        while not self._a_future_lost():
            await asyncio.sleep(_LOSS_POLL_SECONDS)

    def _a_future_lost(self) -> bool:
        """Whether the scheduler reports a host's future no longer finished (its worker died)."""
        return any(future.status != "finished" for future in self._futures)

    async def _answers(
        self, method: str, args: tuple[Any, ...], own: Sequence[tuple[Any, ...]]
    ) -> list[Any]:
        """Every host's answer to ``method``, in host order."""
        calls = [(*mine, *args) for mine in own]
        if not self.direct:
            return list(
                await asyncio.gather(
                    *[
                        getattr(handle, method)(*call)
                        for handle, call in zip(self._handles, calls, strict=True)
                    ]
                )
            )
        replies = await asyncio.gather(
            *[self._call_direct(host, method, call) for host, call in enumerate(calls)]
        )
        for reply in replies:
            if reply["status"] != "OK":
                raise reply["exception"]
        return [reply["result"] for reply in replies]

    async def _abandon(self, token: int) -> None:
        """Tell every host still reachable that iteration ``token`` is given up."""
        calls = [self._tell_abandoned(host, token) for host in range(len(self._handles))]
        try:
            await asyncio.wait_for(
                asyncio.gather(*calls, return_exceptions=True), _ABANDON_TIMEOUT
            )
        except TimeoutError:
            logger.info("some hosts did not hear that iteration %d was given up", token)

    async def _tell_abandoned(self, host: int, token: int) -> None:
        if self.direct:
            await self._call_direct(host, "abandon", (token,))
        else:  # a handle whose worker is gone may raise at once
            await self._handles[host].abandon(token)

    def _call_direct(self, host: int, method: str, args: Sequence[Any]) -> Awaitable[Any]:
        """The request an ``Actor`` handle sends to the ``actor_execute`` handler, made here.

        With one round trip to the event loop for all hosts, and without the
        handle's own future (see benchmarks/RESULTS.md, "Actor calls").
        """
        address, _ = self._groups[host]
        return self._client.rpc(address).actor_execute(
            actor=self._futures[host].key,
            function=method,
            args=[to_serialize(value) for value in args],
            kwargs={},
        )

    async def _direct_calls_answer(self) -> bool:
        """Whether every worker's ``actor_execute`` handler answers as :meth:`_call_hosts` expects.

        One call per host of :meth:`ChunkHost.n_chunks`. A handler that
        distributed renamed, whose arguments changed, or whose reply has
        another shape fails here in some way of its own, hence the broad
        ``except``: the fit then calls through the public handles.
        """
        expected = [len(indices) for _, indices in self._groups]
        try:
            replies = await asyncio.gather(
                *[self._call_direct(host, "n_chunks", ()) for host in range(len(expected))]
            )
            answered = [
                reply.get("result") if reply.get("status") == "OK" else reply.get("exception")
                for reply in replies
            ]
        except Exception as exc:
            answered, reason = [], repr(exc)
        else:
            reason = f"answers {answered}, expected {expected}"
        if answered == expected:
            return True
        logger.info(
            "the workers' actor_execute handler does not answer as expected (%s); "
            "calling the actors through distributed.Actor handles",
            reason,
        )
        return False

    def _lost_a_worker(self, timeout: float) -> bool:
        """Whether the scheduler has dropped a host's worker (waiting up to ``timeout``).

        False when the client has lost the scheduler itself: that is no
        worker loss to recover from.
        """
        addresses = {address for address, _ in self._groups}
        deadline = time.monotonic() + timeout
        while True:
            if scheduler_lost(self._client):
                return False  # the scheduler is gone, not (only) a worker
            try:
                alive = worker_info(self._client, timeout=_SCHEDULER_ANSWER_TIMEOUT)
            except OSError:  # the scheduler does not answer: its loss shows in a moment
                alive = None
            if alive is not None and (not addresses <= set(alive) or self._a_future_lost()):
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.1)

    def close(self) -> None:
        """Release the actors."""
        for future in self._futures:
            future.release()
        self._futures = []
        self._handles = []  # each holds a reference to its actor too


async def _awaited(awaitable: Awaitable[Any]) -> Any:
    return await awaitable


def reduction_tree(n_chunks: int, split_every: int) -> list[list[int]]:
    """The inner nodes of the tree of ``tree_reduce``, each as the list of its children.

    Nodes are numbered: the chunks ``0 .. n_chunks - 1``, then the inner
    nodes bottom-up, so the ``i``-th entry is node ``n_chunks + i`` and the
    last is the root. Each node combines at most ``split_every`` children,
    in order, as :func:`combine_in_tree` does.
    """
    level = list(range(n_chunks))
    tree: list[list[int]] = []
    while len(level) > split_every:
        groups = [level[i : i + split_every] for i in range(0, len(level), split_every)]
        level = list(range(n_chunks + len(tree), n_chunks + len(tree) + len(groups)))
        tree.extend(groups)
    tree.append(level)
    return tree


def _where_held(client: Client, chunks: Sequence[Future]) -> dict[str, list[int]]:
    """The positions of the chunks each worker holds (the first, if several hold one)."""
    watched_wait(client, chunks)
    who_has = client.who_has(chunks)
    by_worker: dict[str, list[int]] = defaultdict(list)
    for index, chunk in enumerate(chunks):
        by_worker[sorted(who_has[chunk.key])[0]].append(index)
    return by_worker


def _spread(n_chunks: int, workers: dict[str, dict]) -> dict[str, list[int]]:
    """Runs of consecutive positions for each worker, in proportion to its threads.

    Raises
    ------
    RuntimeError
        If the cluster has no workers.
    """
    if not workers:
        raise RuntimeError("the cluster has no workers to stream the data to")
    addresses = sorted(workers)
    threads = np.array([max(int(workers[a].get("nthreads") or 1), 1) for a in addresses])
    ends = np.round(np.cumsum(threads) / threads.sum() * n_chunks).astype(int)
    starts = np.concatenate(([0], ends[:-1]))
    return {
        address: list(range(start, end))
        for address, start, end in zip(addresses, starts, ends, strict=True)
        if end > start
    }


def _first_level(n_chunks: int, split_every: int) -> list[list[int]]:
    """The groups of chunks that the tree of ``tree_reduce`` combines first.

    All chunks at once when there are at most ``split_every`` (the root).
    """
    tree = reduction_tree(n_chunks, split_every)
    return [children for children in tree if children and children[0] < n_chunks]


def combine_in_tree(
    combine: Callable[..., Any], parts: Sequence[Any], split_every: int = SPLIT_EVERY
) -> Any:
    """Combine ``parts`` in the same tree, hence the same order, as ``tree_reduce``."""
    level = list(parts)
    while len(level) > split_every:
        level = [combine(*level[i : i + split_every]) for i in range(0, len(level), split_every)]
    return combine(*level)


def fits_hosts(n_chunks: int, result_bytes: int) -> bool:
    """Whether one iteration's per-chunk results stay within :data:`MAX_GATHERED_BYTES`."""
    return n_chunks * result_bytes <= MAX_GATHERED_BYTES
