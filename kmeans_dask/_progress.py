"""Per-iteration progress of a fit: a rich progress bar on a terminal, lines elsewhere."""

from __future__ import annotations

from types import TracebackType

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from kmeans_dask._lloyd import IterationRecord


class LloydProgress:
    """Shows each Lloyd iteration's inertia, centre shift and time.

    On an interactive terminal this is a live ``rich`` progress bar over
    ``max_iter``; in notebooks' plain output, logs and CI it prints one line
    per iteration instead, so the progress survives in the record.
    """

    def __init__(self, max_iter: int, console: Console | None = None) -> None:
        self.max_iter = max_iter
        self.console = console or Console()
        self._progress: Progress | None = None
        self._task = None

    def __enter__(self) -> LloydProgress:
        if self.console.is_terminal:
            self._progress = Progress(
                TextColumn("[bold]Lloyd"),
                BarColumn(),
                TextColumn("{task.completed}/{task.total}"),
                TextColumn("inertia {task.fields[inertia]}"),
                TextColumn("shift {task.fields[shift]}"),
                TimeElapsedColumn(),
                console=self.console,
            )
            self._progress.start()
            self._task = self._progress.add_task(
                "fit", total=self.max_iter, inertia="-", shift="-"
            )
        return self

    def update(self, record: IterationRecord) -> None:
        """Show one finished iteration."""
        if self._progress is not None:
            self._progress.update(
                self._task,
                completed=record.iteration,
                inertia=f"{record.inertia:.6g}",
                shift=f"{record.center_shift:.3g}",
            )
            return
        self.console.print(
            f"[kmeans_dask] Iteration {record.iteration}, inertia {record.inertia:.6g}, "
            f"shift {record.center_shift:.3g}, empty {record.n_empty}, {record.seconds:.3f} s",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._progress is not None:
            self._progress.stop()
