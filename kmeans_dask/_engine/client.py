"""Find the Dask client to fit with, or start a LocalCluster for the work.

Starting a cluster says so through the ``kmeans_dask`` logger (and, with
``verbose``, through the caller's ``report``): a library prints nothing
unasked. A fit of rows already in memory gets an in-process cluster (worker
threads: nothing to copy, a start in milliseconds); Dask arrays and Zarr
stores get worker processes. Either way the process is left as it was
found: thread pools and environment variables. Two things a new user runs
into are handled here rather than left to a long traceback:

* a script that calls ``fit`` at module level, without ``if __name__ ==
  "__main__":``, cannot start worker processes (each would import the script
  again and start its own cluster); the cluster then runs its workers as
  threads of this process and a warning says what to add;
* a scheduler lost in the middle of the work shows as whatever the call in
  flight happened to raise (``KeyError: 'workers'``, a closed comm, a connect
  timeout); it is reported as :class:`SchedulerLostError` instead.
"""

from __future__ import annotations

import ast
import inspect
import logging
import os
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from functools import cache

import dask
from distributed import Client, LocalCluster, default_client

from kmeans_dask._worker.threads import in_process_native_limits

logger = logging.getLogger(__name__)


class SchedulerLostError(ConnectionError):
    """The Dask scheduler went away while work was running on it."""


def active_client() -> Client | None:
    """The current default ``distributed.Client``, or None if there is none."""
    try:
        return default_client()
    except ValueError:
        return None


def _is_main_test(test: ast.expr) -> bool:
    """Whether ``test`` is ``__name__ == "__main__"`` (either way round)."""
    if not (isinstance(test, ast.Compare) and len(test.ops) == 1):
        return False
    if not isinstance(test.ops[0], ast.Eq):
        return False
    sides = [test.left, test.comparators[0]]
    names = [s.id for s in sides if isinstance(s, ast.Name)]
    constants = [s.value for s in sides if isinstance(s, ast.Constant)]
    return names == ["__name__"] and constants == ["__main__"]


@cache
def _guarded_lines(path: str) -> tuple[tuple[int, int], ...]:
    """Line ranges of the ``if __name__ == "__main__":`` blocks of a script."""
    try:
        with open(path, encoding="utf-8") as handle:
            tree = ast.parse(handle.read(), filename=path)
    except (OSError, SyntaxError, UnicodeDecodeError):
        return ((1, sys.maxsize),)  # unreadable: assume it is guarded
    return tuple(
        (node.lineno, node.end_lineno or node.lineno)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and _is_main_test(node.test)
    )


def unguarded_script_line() -> tuple[str, int] | None:
    """``(script, line)`` when the running script calls us outside a main guard.

    Worker processes are started with ``spawn`` (or ``forkserver``), which
    imports the main script again in every new process: module-level code
    that starts a cluster then runs again in each of them. Returns None for
    interactive sessions, ``python -c``, notebooks, and calls made from
    inside ``if __name__ == "__main__":``.
    """
    method = dask.config.get("distributed.worker.multiprocessing-method", "spawn")
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    if method == "fork" or not path or not os.path.isfile(path):
        return None
    frame = inspect.currentframe()
    while frame is not None:
        if frame.f_code.co_name == "<module>" and frame.f_globals.get("__name__") == "__main__":
            break
        frame = frame.f_back
    if frame is None:
        return None
    line = frame.f_lineno
    if any(first <= line <= last for first, last in _guarded_lines(os.path.abspath(path))):
        return None
    return path, line


@contextmanager
def local_client(
    purpose: str,
    report: Callable[[str], None],
    *,
    set_as_default: bool = False,
    in_process: bool = False,
) -> Iterator[Client]:
    """A LocalCluster on 127.0.0.1 for ``purpose`` ("this fit", "elbow"), closed afterwards.

    Its dashboard link goes to the ``kmeans_dask`` logger and to ``report``
    (the caller's ``verbose`` output). ``in_process``: its workers are
    threads of this process (for data already in its memory: nothing to
    copy, and a start in milliseconds rather than seconds), with native
    thread pools capped until it closes (:func:`in_process_native_limits`);
    else worker processes, whose nannies' changes to this process's
    environment are undone when it closes (:func:`environment_kept`).
    """
    unguarded = None if in_process else unguarded_script_line()
    if unguarded is not None:
        script, line = unguarded
        warnings.warn_explicit(
            "this line starts a Dask cluster at module level, outside "
            '`if __name__ == "__main__":`; worker processes would run the script again, so '
            "the workers run as threads of this process instead. Put the script's work under "
            '`if __name__ == "__main__":` to use worker processes.',
            RuntimeWarning,
            filename=script,
            lineno=line,
        )
    threads = in_process or unguarded is not None
    # Threads talk in-process (no network at all); processes over 127.0.0.1.
    where = {"processes": False} if threads else {"host": "127.0.0.1"}
    with (
        in_process_native_limits() if threads else environment_kept(),
        LocalCluster(dashboard_address="127.0.0.1:0", **where) as cluster,
        Client(cluster, set_as_default=set_as_default) as client,
    ):
        # The dashboard listens on 127.0.0.1 (the link of an in-process cluster would
        # name the host's address).
        dashboard = f"http://127.0.0.1:{cluster.scheduler.http_server.port}/status"
        message = f"started a LocalCluster for {purpose}; dashboard: {dashboard}"
        logger.info(message)
        report(message)
        yield client


def nanny_variables() -> set[str]:
    """The environment variables distributed's nannies set in this process to spawn workers."""
    return {*dask.config.get("distributed.nanny.pre-spawn-environ", {}), "PYTHONHASHSEED"}


@contextmanager
def environment_kept() -> Iterator[None]:
    """Give this process back the environment variables that starting worker processes set.

    Before spawning a worker, a nanny sets ``distributed.nanny.pre-spawn-environ``
    (``OMP_NUM_THREADS=1``, ``MALLOC_TRIM_THRESHOLD_``...) and ``PYTHONHASHSEED``
    in its own process's ``os.environ``, and leaves them there: programs run
    from this process after the fit would inherit one-thread BLAS and OpenMP.
    """
    before = {name: os.environ.get(name) for name in nanny_variables()}
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def scheduler_lost(client: Client) -> bool:
    """Whether ``client`` has lost its scheduler (reconnecting, closing or closed)."""
    return client.status != "running"


@contextmanager
def client_for_fit(
    report: Callable[[str], None] = logger.debug,
    *,
    resume_hint: Callable[[], str] = str,
    in_process: bool = False,
) -> Iterator[Client]:
    """Yield the active client, or a LocalCluster's client that is closed afterwards.

    The temporary cluster binds to 127.0.0.1 only; its dashboard link is
    logged and passed to ``report``; ``in_process`` makes its workers
    threads of this process (:func:`local_client`). An error raised after
    the scheduler went away becomes a :class:`SchedulerLostError` ending
    with ``resume_hint()`` (what was saved, how to go on).
    """
    client = active_client()
    with (
        local_client("this fit", report, in_process=in_process)
        if client is None
        else nullcontext(client) as client
    ):
        try:
            yield client
        except Exception as exc:
            if not scheduler_lost(client):
                raise
            raise SchedulerLostError(
                f"scheduler lost: the Dask scheduler at {client.scheduler.address} stopped "
                f"answering during the work ({type(exc).__name__}: {exc}). {resume_hint()}"
            ) from exc


def worker_info(client: Client, timeout: float | None = None) -> dict[str, dict] | None:
    """What the scheduler knows of every worker (memory limit, threads...), by address.

    Asks the scheduler for all of them: ``Client.scheduler_info()`` lists at
    most five by default in the distributed releases of 2025 to mid-2026.
    None when the answer has no workers part (a scheduler shutting down).

    Raises
    ------
    OSError
        If the scheduler does not answer within ``timeout`` seconds (None:
        distributed's connection timeouts).
    """

    return client.sync(scheduler_identity, client, callback_timeout=timeout).get("workers")


async def scheduler_identity(client: Client) -> dict:
    """The scheduler's account of itself and of every worker (on the client's event loop)."""
    try:
        return await client.scheduler.identity(n_workers=-1)
    except TypeError:  # distributed before 2025.4 lists every worker, unasked
        return await client.scheduler.identity()


def wait_until_idle(client: Client, timeout: float = 10.0) -> bool:
    """Wait until no worker thread runs a task (at most ``timeout`` s); whether none does.

    After work was cancelled: the scheduler forgets cancelled tasks at once,
    but a worker's thread finishes the one it runs, and a cluster closed
    meanwhile logs a warning for each.
    """
    deadline = time.monotonic() + timeout
    while sum(client.run(_executing).values()):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


def _executing(dask_worker) -> int:
    return dask_worker.state.executing_count
