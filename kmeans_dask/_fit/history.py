"""What a Lloyd run reports: each iteration's record, the history table, the result."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from distributed import Future


@dataclass(frozen=True)
class IterationRecord:
    """What happened in one Lloyd iteration."""

    iteration: int
    """1-based iteration number."""
    inertia: float
    """Weighted inertia of the assignment to the centres entering the iteration."""
    center_shift: float
    """Sum over clusters of the squared distance each centre moved."""
    n_empty: int
    """Clusters that received no weight and were relocated."""
    seconds: float
    """Wall time of the iteration."""


class History(list):
    """The :class:`IterationRecord` of every iteration, shown as a table.

    A plain list otherwise; ``to_pandas()`` gives a DataFrame, and notebooks
    render it as an HTML table.
    """

    _COLUMNS = ("iteration", "inertia", "center_shift", "n_empty", "seconds")

    def to_pandas(self):
        """The history as a ``pandas.DataFrame`` indexed by iteration."""
        import pandas

        frame = pandas.DataFrame([asdict(record) for record in self], columns=self._COLUMNS)
        return frame.set_index("iteration")

    def _rows(self) -> list[tuple[str, ...]]:
        return [
            (
                str(r.iteration),
                f"{r.inertia:.6g}",
                f"{r.center_shift:.3g}",
                str(r.n_empty),
                f"{r.seconds:.4f}",
            )
            for r in self
        ]

    def __str__(self) -> str:
        rows = [self._COLUMNS, *self._rows()]
        widths = [max(len(row[i]) for row in rows) for i in range(len(self._COLUMNS))]
        return "\n".join(
            "  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) for row in rows
        )

    def _repr_html_(self) -> str:
        head = "".join(f"<th>{c}</th>" for c in self._COLUMNS)
        body = "".join(
            "<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in self._rows()
        )
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


@dataclass
class LloydResult:
    centers: np.ndarray
    inertia: float
    n_iter: int
    history: list[IterationRecord]
    cluster_weights: np.ndarray
    """(k,) total weight assigned to each final centre."""
    labels: list[Future] | list[Any] = field(default_factory=list)
    """Per-chunk labels of the final centres (distributed runs only): futures,
    or the arrays themselves where they go to the client
    (:func:`~kmeans_dask._fit.passes.labels_kept`)."""
    converged: bool = True
    """Whether the last centre shift was within the tolerance (else ``max_iter`` ended it)."""

    @property
    def n_nonempty(self) -> int:
        return int((self.cluster_weights > 0).sum())


def stopping_message(history: Sequence[IterationRecord], tol: float, max_iter: int) -> str:
    """Why a run stopped, worded as scikit-learn's verbose output."""
    if not history:
        return "No iteration run."
    last = history[-1]
    if last.center_shift == 0:
        return f"Converged at iteration {last.iteration}: strict convergence."
    if last.center_shift <= tol:
        return (
            f"Converged at iteration {last.iteration}: center shift {last.center_shift:.6g} "
            f"within tolerance {tol:.6g}."
        )
    return (
        f"Stopped at max_iter={max_iter} without converging: center shift "
        f"{last.center_shift:.6g} above tolerance {tol:.6g}."
    )
