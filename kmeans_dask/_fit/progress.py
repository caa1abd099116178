"""Progress of long work: a rich progress bar on a terminal, a line per step elsewhere.

:class:`LloydProgress` follows a fit (initialisation, then each Lloyd
iteration); :class:`StepProgress` any other counted work (blocks written or
labelled, candidate searches, values of k); :func:`persist_with_progress`
computes a Dask collection while counting its finished blocks.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from types import TracebackType
from typing import TYPE_CHECKING, Any

import dask
from dask.callbacks import Callback
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from kmeans_dask._fit.interrupts import interrupt_point

if TYPE_CHECKING:
    from kmeans_dask._fit.history import IterationRecord


class _Display:
    """A rich progress display on a terminal, plain ``[kmeans_dask]`` lines elsewhere."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self._progress: Progress | None = None
        self._task: TaskID | None = None

    def _line(self, text: str) -> None:
        self.console.print(f"[kmeans_dask] {text}", markup=False, highlight=False, soft_wrap=True)

    def _finish(self) -> None:
        """Last update of the live display when the work completed."""

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._progress is None:
            return
        if kind is None:
            self._finish()
        self._progress.stop()


class LloydProgress(_Display):
    """Shows a fit: its initialisation, then each iteration's inertia, centre shift and time.

    On an interactive terminal this is a live ``rich`` progress bar over
    ``max_iter`` that fills up when the fit ends, also when it converged
    early; in notebooks' plain output, logs and CI it prints one line when
    the initialisation starts and one per iteration instead, so the
    progress survives in the record.
    """

    def __init__(self, max_iter: int, init: str = "", console: Console | None = None) -> None:
        super().__init__(console or Console())
        self.max_iter = max_iter
        self.init = init if isinstance(init, str) else "given centres"
        self._last = 0

    def __enter__(self) -> LloydProgress:
        if self.console.is_terminal:
            self._progress = Progress(
                SpinnerColumn(),
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                TextColumn("{task.completed}/{task.total}"),
                TextColumn("inertia {task.fields[inertia]}"),
                TextColumn("shift {task.fields[shift]}"),
                TimeElapsedColumn(),
                console=self.console,
            )
            self._progress.start()
            self._task = self._progress.add_task(
                f"init {self.init}", total=self.max_iter, inertia="-", shift="-"
            )
        else:
            self._line(f"initialisation: {self.init}")
        return self

    def update(self, record: IterationRecord) -> None:
        """Show one finished iteration."""
        self._last = record.iteration
        if self._progress is not None:
            self._progress.update(
                self._task,
                description="Lloyd",
                total=self.max_iter,
                completed=record.iteration,
                inertia=f"{record.inertia:.6g}",
                shift=f"{record.center_shift:.3g}",
            )
            return
        self._line(
            f"Iteration {record.iteration}, inertia {record.inertia:.6g}, "
            f"shift {record.center_shift:.3g}, empty {record.n_empty}, {record.seconds:.3f} s"
        )

    def _finish(self) -> None:
        if self._last:  # converged before max_iter: the work is done, the bar full
            done = "converged" if self._last < self.max_iter else "max_iter"
            self._progress.update(
                self._task, description=f"Lloyd ({done})", total=self._last, completed=self._last
            )


class StepProgress(_Display):
    """Counted steps of some long work, e.g. ``StepProgress("labelling", 40, "blocks")``.

    On a terminal a rich bar with the count, elapsed and remaining time; in
    logs one line per step (at most one per ``min_interval`` seconds, and
    always the last), so long work is never silent. ``enabled=False`` shows
    nothing. The total may be set later (:meth:`set_total`).
    """

    def __init__(
        self,
        description: str,
        total: int | None,
        unit: str = "steps",
        *,
        console: Console | None = None,
        enabled: bool = True,
        min_interval: float = 0.0,
    ) -> None:
        super().__init__(console or Console(stderr=True))
        self.description = description
        self.total = total
        self.unit = unit
        self.enabled = enabled
        self.min_interval = min_interval
        self.completed = 0
        self._last_line = -float("inf")

    def __enter__(self) -> StepProgress:
        if self.enabled and self.console.is_terminal:
            self._progress = Progress(
                SpinnerColumn(),
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn(self.unit),
                TextColumn("{task.fields[detail]}"),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=self.console,
            )
            self._progress.start()
            self._task = self._progress.add_task(self.description, total=self.total, detail="")
        return self

    def set_total(self, total: int) -> None:
        """The number of steps, once known."""
        self.total = total
        if self._progress is not None:
            self._progress.update(self._task, total=total)

    def advance(self, detail: str = "", steps: int = 1) -> None:
        """Count ``steps`` finished steps; ``detail`` says what the last one did.

        A step done is also where a Ctrl-C (under the command line) stops the work.
        """
        self._show(detail, steps)
        interrupt_point()

    def _show(self, detail: str, steps: int) -> None:
        self.completed += steps
        if not self.enabled:
            return
        if self._progress is not None:
            self._progress.update(self._task, advance=steps, detail=detail)
            return
        now = time.monotonic()
        if now - self._last_line < self.min_interval and self.completed != self.total:
            return
        self._last_line = now
        of = f"/{self.total}" if self.total is not None else ""
        self._line(
            f"{self.description}: {self.completed}{of} {self.unit}"
            + (f"  {detail}" if detail else "")
        )


class _CountTasks(Callback):
    """Counts the tasks of a local-scheduler computation into a :class:`StepProgress`."""

    def __init__(self, progress: StepProgress) -> None:
        super().__init__()
        self.progress = progress

    def _start_state(self, dsk: Any, state: dict) -> None:
        self.progress.set_total(len(dsk))

    def _posttask(self, key: Any, result: Any, dsk: Any, state: dict, worker_id: Any) -> None:
        self.progress.advance()


def persist_with_progress(collection: Any, progress: StepProgress) -> Any:
    """``collection.persist()``, counting finished work into ``progress``.

    ``collection`` is a Dask collection or a list of them. With a distributed
    client the steps are its blocks; with the local threaded scheduler (no
    client) they are its tasks.
    """
    from distributed import as_completed, futures_of

    from kmeans_dask._engine.client import active_client, wait_until_idle

    client = active_client()
    if client is None:
        with ThreadPoolExecutor(os.cpu_count()) as pool, _CountTasks(progress):
            try:
                (persisted,) = dask.persist(collection, scheduler="threads", pool=pool)
            except BaseException:
                # Stopped: what has not started never will, what runs ends
                # before the caller cleans up after it.
                pool.shutdown(wait=True, cancel_futures=True)
                raise
        return persisted
    persisted = client.persist(collection)
    futures = futures_of(persisted)
    progress.set_total(len(futures))
    try:
        for future in as_completed(futures):
            progress.advance()
            if future.status == "error":
                future.result()  # raises the block's error
    except BaseException:
        # Stopped (Ctrl-C, an error): drop what has not run, let what runs end,
        # so that a cluster closed next finds its workers idle.
        client.cancel(futures)
        wait_until_idle(client)
        raise
    return persisted
