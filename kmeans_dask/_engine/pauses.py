"""Waiting on the cluster without waiting for ever on workers paused by their memory.

A Dask worker whose process memory passes ``distributed.worker.memory.pause``
(80 % of its memory limit by default) pauses: it starts no new task until its
memory falls again. When what fills it is the worker's own baseline (the
interpreter, NumPy, compiled kernels: a ``memory_limit`` too small for it)
rather than data it could spill, the memory never falls, the worker never
resumes, and whatever waits on its tasks waits for ever, with nothing said.

So every wait of a fit on the cluster (scattering rows, gathering a pass's
results, waiting for chunks or actors to be placed) goes through this module.
A wait that has not finished after :data:`QUIET_WAIT` asks the scheduler,
every :data:`CHECK_INTERVAL`, whether every worker that could run the work is
paused; once they all have been for longer than the dask config value
``kmeans_dask.paused-timeout`` (:func:`paused_timeout`), the wait ends with
:class:`WorkersPausedError`, which names the workers, their memory and the
fixes. A wait that finishes within :data:`QUIET_WAIT` (every wait of a
healthy fit but the longest passes) costs nothing more than before, and a
worker paused for a moment, to spill to disk, resumes long before the limit.

Calls to the fit's actors are not watched: an actor runs its calls on a
paused worker too (the pause holds back tasks only).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Collection, Sequence
from typing import Any, TypeVar

import dask
from dask.utils import format_bytes, parse_timedelta
from distributed import Client, Future, wait

from kmeans_dask._engine.client import scheduler_identity

logger = logging.getLogger(__name__)
T = TypeVar("T")

#: The dask config key of the longest time every worker that could run a
#: fit's work may stay paused before the fit gives up.
PAUSED_TIMEOUT_KEY = "kmeans_dask.paused-timeout"
#: Its default, in seconds: long enough for a worker that spills to disk to resume.
DEFAULT_PAUSED_TIMEOUT = 60.0
#: How long a wait goes on before its first look at the workers.
QUIET_WAIT = 1.0
#: Seconds between two looks at the workers while a wait goes on.
CHECK_INTERVAL = 1.0
#: How long asking the workers for their pause threshold may take, for the message.
_THRESHOLD_ANSWER_TIMEOUT = 5.0


class WorkersPausedError(RuntimeError):
    """Every worker that could run the fit's work stayed paused by its memory limit."""


def paused_timeout() -> float | None:
    """Seconds every worker of a wait may stay paused before the wait fails; None: no limit.

    Read from the dask config key ``kmeans_dask.paused-timeout``, set as
    ``dask.config.set({"kmeans_dask.paused-timeout": "5 minutes"})``, in a
    dask YAML file or as the environment variable
    ``DASK_KMEANS_DASK__PAUSED_TIMEOUT``: a number of seconds or a duration
    (``"90s"``, ``"2 minutes"``); ``None`` waits for ever, as Dask itself
    does. Default :data:`DEFAULT_PAUSED_TIMEOUT`.

    Raises
    ------
    ValueError
        If the value is not a duration, or is negative.
    """
    value = dask.config.get(PAUSED_TIMEOUT_KEY, DEFAULT_PAUSED_TIMEOUT)
    if value is None:
        return None
    if isinstance(value, int | float) and not isinstance(value, bool) and value < 0:
        raise ValueError(f"dask config {PAUSED_TIMEOUT_KEY!r} should be >= 0; got {value!r}")
    try:
        return float(parse_timedelta(value, default="s"))
    except (TypeError, ValueError, KeyError, AttributeError) as exc:
        raise ValueError(
            f"dask config {PAUSED_TIMEOUT_KEY!r} should be a number of seconds, a duration "
            f"such as '90s', or None; got {value!r}"
        ) from exc


class PauseWatch:
    """Tells, look after look, how long every worker of a wait has been paused.

    ``workers`` are the addresses that can run the awaited work (tasks
    restricted to them); None means any worker of the cluster.
    """

    def __init__(self, client: Client, workers: Collection[str] | None = None) -> None:
        self._client = client
        self._workers = None if workers is None else frozenset(workers)
        self._timeout = paused_timeout()
        #: When the looks first found every worker paused (None: not all are now).
        self._since: float | None = None

    @property
    def active(self) -> bool:
        """Whether the watch can end a wait at all (False with no timeout)."""
        return self._timeout is not None

    async def look(self) -> WorkersPausedError | None:
        """Ask the scheduler once: the error to end the wait with, or None to go on.

        The error when every worker that could run the work has been paused
        in every look for longer than :func:`paused_timeout`. A scheduler
        that does not answer is no reason to end the wait: the wait meets
        that itself, and says so.
        """
        try:
            paused = await self.paused_workers()
        except Exception as exc:
            logger.debug("could not look at the workers' status: %r", exc)
            return None
        now = time.monotonic()
        if not paused:
            self._since = None
        elif self._since is None:
            self._since = now
        elif self._timeout is not None and now - self._since > self._timeout:
            return await self.error(paused, now - self._since)
        return None

    async def paused_workers(self) -> dict[str, dict]:
        """The scheduler's account of the workers of the wait, if every one is paused; else {}."""
        workers = (await scheduler_identity(self._client)).get("workers") or {}
        relevant = {
            address: info
            for address, info in workers.items()
            if self._workers is None or address in self._workers
        }
        if relevant and all(info.get("status") == "paused" for info in relevant.values()):
            return relevant
        return {}

    async def error(self, paused: dict[str, dict], seconds: float) -> WorkersPausedError:
        """The error for ``paused`` workers, paused for ``seconds``: which, why, what to do."""
        thresholds = await self._pause_thresholds(list(paused))
        described = "; ".join(
            _describe(address, info, thresholds.get(address)) for address, info in paused.items()
        )
        return WorkersPausedError(
            f"every worker that could run the fit's work has been paused for {seconds:.0f} s: "
            f"{described}. Dask pauses a worker whose memory passes its pause threshold, and a "
            "paused worker runs no task, so when the memory is the worker's own (interpreter, "
            "libraries, threads' buffers) rather than data it can spill, it never resumes and "
            "the fit would wait for ever. Give each worker more memory (a larger "
            "memory_limit, e.g. LocalCluster(memory_limit='4GiB')), use fewer threads per "
            "worker or smaller chunks, or raise the threshold with the dask config "
            "'distributed.worker.memory.pause' (read when the workers start). The model is "
            "as it was before this fit; with a checkpoint, the same fit on a larger cluster "
            f"resumes from its last iteration. The dask config {PAUSED_TIMEOUT_KEY!r} "
            f"(now {self._timeout:g} s) says how long a pause may last."
        )

    async def _pause_thresholds(self, addresses: list[str]) -> dict[str, Any]:
        """Each worker's pause fraction (False: never pauses); the client's config if they
        do not answer."""
        try:
            return await asyncio.wait_for(
                self._client.run(_pause_fraction, workers=addresses, asynchronous=True),
                _THRESHOLD_ANSWER_TIMEOUT,
            )
        except Exception:  # a worker that cannot run functions: say what the config says
            fraction = dask.config.get("distributed.worker.memory.pause", None)
            return dict.fromkeys(addresses, fraction)


def _pause_fraction(dask_worker: Any) -> Any:
    return dask_worker.memory_manager.memory_pause_fraction


def _describe(address: str, info: dict, fraction: Any) -> str:
    """``address`` with its memory in use, its limit and its pause threshold."""
    limit = info.get("memory_limit") or 0
    in_use = (info.get("metrics") or {}).get("memory")
    used = "memory in use unknown" if in_use is None else f"{format_bytes(in_use)} in use"
    if not limit:
        return f"{address} ({used}, no memory limit)"
    if isinstance(fraction, int | float) and not isinstance(fraction, bool):
        threshold = f"pause threshold {fraction:.0%} = {format_bytes(int(fraction * limit))}"
    else:
        threshold = "pause threshold unknown"
    return f"{address} ({used} of its memory_limit {format_bytes(limit)}, {threshold})"


async def _watching(
    operation: Awaitable[T],
    watch: PauseWatch,
    stop: Callable[[], Awaitable[Any]] | None = None,
) -> T:
    """Await ``operation``; once it has taken :data:`QUIET_WAIT`, look at the workers.

    When a look says so, ``operation`` is ended by ``stop()``, or cancelled
    without one, and :class:`WorkersPausedError` raised. A wait that ends
    within :data:`QUIET_WAIT` costs one timer.
    """
    task = asyncio.ensure_future(operation)
    stopped: list[WorkersPausedError] = []

    async def keep_looking() -> None:
        while (error := await watch.look()) is None:
            await asyncio.sleep(CHECK_INTERVAL)
        stopped.append(error)
        try:
            if stop is not None:
                await stop()
                return
        except Exception as exc:
            logger.debug("could not stop the wait gently: %r", exc)
        task.cancel()

    looking: list[asyncio.Task] = []
    timer = asyncio.get_running_loop().call_later(
        QUIET_WAIT, lambda: looking.append(asyncio.ensure_future(keep_looking()))
    )
    try:
        return await task
    except BaseException:  # cancelled by the look, or failed while it cancelled it
        if stopped:
            raise stopped[0] from None
        raise
    finally:
        timer.cancel()
        for watcher in looking:
            watcher.cancel()


def watched(
    client: Client,
    operation: Callable[[], Awaitable[T]],
    workers: Collection[str] | None = None,
    stop: Callable[[], Awaitable[Any]] | None = None,
) -> T:
    """``operation()`` run on the client's event loop, ended if its workers stay paused.

    ``operation`` makes the awaitable on the loop (``client.gather(...,
    asynchronous=True)`` and the like); ``stop`` ends it (else it is cancelled).

    Raises
    ------
    WorkersPausedError
        If every worker in ``workers`` (None: of the cluster) stays paused
        longer than :func:`paused_timeout` while the operation waits.
    """
    watch = PauseWatch(client, workers)

    async def run() -> T:
        if not watch.active:
            return await operation()
        return await _watching(operation(), watch, stop)

    return client.sync(run)


def watched_gather(
    client: Client, futures: Future | list[Future], workers: Collection[str] | None = None
) -> Any:
    """``client.gather(futures)``, ended by :class:`WorkersPausedError` (see :func:`watched`).

    Ended by cancelling ``futures``: a gather cancelled itself would leave
    distributed's tasks that wait on each future to log their errors later.
    """
    return watched(
        client,
        lambda: client.gather(futures, asynchronous=True),
        workers,
        stop=lambda: client.cancel(futures, asynchronous=True, reason="workers paused"),
    )


def watched_scatter(client: Client, data: list[Any], **kwargs: Any) -> list[Future]:
    """``client.scatter(data, **kwargs)``, ended by :class:`WorkersPausedError`.

    Scattering waits for a worker that is not paused; it gives up on its own
    with a ``TimeoutError`` after distributed's connect timeout, which is
    reported as :class:`WorkersPausedError` when every worker is paused.
    """
    watch = PauseWatch(client)

    async def scatter() -> list[Future]:
        started = time.monotonic()
        operation = client.scatter(data, asynchronous=True, **kwargs)
        if not watch.active:
            return await operation
        try:
            return await _watching(operation, watch)
        except TimeoutError as exc:
            paused = await watch.paused_workers()
            if paused:
                raise await watch.error(paused, time.monotonic() - started) from exc
            raise

    return client.sync(scatter)


def watched_wait(
    client: Client, futures: Sequence[Future], workers: Collection[str] | None = None
) -> None:
    """``distributed.wait(futures)``, ended by :class:`WorkersPausedError` (see :func:`watched`).

    Raises what ``wait`` raises (``CancelledError`` for a future lost with a worker).
    """
    watch = PauseWatch(client, workers)
    timeout: float | None = QUIET_WAIT if watch.active else None
    with client.as_current():
        while True:
            try:
                wait(futures, timeout=timeout)
                return
            except (TimeoutError, asyncio.TimeoutError):
                error = client.sync(watch.look)
                if error is not None:
                    raise error from None
                timeout = CHECK_INTERVAL
