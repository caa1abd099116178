"""The ``n_init`` runs of a fit, with optional checkpoints to resume from.

Each run is an initialisation followed by Lloyd iterations; the run with the
lowest final inertia wins. When a worker dies and takes data with it, the
lost chunks are recomputed (Dask and Zarr input) or re-sent from the client
(NumPy input), and the interrupted step is repeated from the last completed
iteration, so the result is exactly that of an undisturbed fit.

With a checkpoint path, the state is written atomically after every
iteration and every finished run, so a fit killed at any moment (walltime, a
lost scheduler, a crashed client) can be started again with the same
arguments and reaches exactly the result of an uninterrupted fit:
initialisations are deterministic given their seed, the centres are stored
bit for bit, and the loop continues where it stopped. ``max_iter`` and
``tol`` only say where runs stop, so the checkpoint keeps every run with its
history, and a fit with a larger ``max_iter`` or a smaller ``tol`` takes the
kept runs on to exactly the result of an uninterrupted fit with those.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from concurrent.futures import CancelledError
from dataclasses import asdict, dataclass
from typing import TypeVar

import numpy as np
from distributed import Client

from kmeans_dask._engine.placement import DistributedData
from kmeans_dask._fit.history import IterationRecord, LloydResult, stopping_message
from kmeans_dask._fit.lloyd import lloyd
from kmeans_dask._io.checkpoints import (
    CheckpointState,
    RunProgress,
    read_checkpoint,
    write_checkpoint,
)

logger = logging.getLogger(__name__)
T = TypeVar("T")

#: How many times one step may be repeated after losing data with a worker.
MAX_RECOVERIES = 5


def surviving_worker_loss(
    client: Client, data: DistributedData, step: Callable[[], T], report: Callable[[str], None]
) -> T:
    """Run ``step``; if a worker died with data it needed, restore the data and rerun it."""
    for attempt in range(MAX_RECOVERIES + 1):
        try:
            return step()
        except CancelledError as exc:
            if attempt == MAX_RECOVERIES:
                raise RuntimeError(
                    f"gave up after losing data with a worker {MAX_RECOVERIES} times in a row"
                ) from exc
            resent = data.recover(client)
            report(f"a worker was lost ({exc}); re-sent {resent} chunk(s), repeating the step")
    raise AssertionError("unreachable")


@dataclass(frozen=True)
class RunPlan:
    """Everything the runs need besides the data."""

    seeds: list[int]
    initialize: Callable[[int], np.ndarray]
    """Initial centres for a seed."""
    max_iter: int
    tol: Callable[[], float]
    """Absolute tolerance on the summed squared centre shift, known once the
    data check has run (it scales with the data's variance)."""
    backend: str
    """Exact search (initialisation)."""
    search: str
    """Search of the Lloyd iterations (exact, or approximate for large k)."""
    final_search: str
    """Search of the final pass (labels, inertia): ``search`` (approximate or not),
    or ``backend`` where an approximate fit asks for exact labels
    (``assign_options={"exact_final": True}``)."""
    fingerprint: str | None
    """Identifies the fit, so a checkpoint of another fit is refused (None without one)."""
    checkpoint: str | os.PathLike | None = None
    bounds: str = "off"
    """When to keep Hamerly bounds with the chunks: "off", "always", "settled", "closing"
    or "moved" (:func:`~kmeans_dask.backends.resolve_algorithm`)."""


def _stop(history: list[IterationRecord], plan: RunPlan) -> int:
    """The iteration at which the plan's ``max_iter`` and ``tol`` stop a run with this
    history, or 0 if they let it go on after its last iteration."""
    for iteration, record in enumerate(history, start=1):
        if iteration >= plan.max_iter or record.center_shift <= plan.tol():
            return iteration
    return 0


def _resume_state(plan: RunPlan) -> list[RunProgress]:
    """The runs kept in the plan's checkpoint (none without one).

    Raises
    ------
    ValueError
        If the checkpoint belongs to another fit, or holds a run that went
        on past where this fit's ``max_iter`` and ``tol`` stop it.
    """
    if plan.checkpoint is None:
        return []
    state = read_checkpoint(plan.checkpoint)
    if state is None:
        return []
    path = os.fspath(plan.checkpoint)
    if state.fingerprint != plan.fingerprint or state.seeds != plan.seeds:
        raise ValueError(
            f"checkpoint {path!r} belongs to a different fit (other parameters, random_state "
            "or data); delete it or choose another checkpoint path"
        )
    for run, progress in enumerate(state.runs):
        stop = _stop(_records(progress), plan)
        if 0 < stop < len(progress.history):
            raise ValueError(
                f"checkpoint {path!r} holds run {run + 1} after {len(progress.history)} "
                f"iterations, but this fit's max_iter={plan.max_iter} and tol stop it at "
                f"iteration {stop}, and a run cannot be taken back; delete the checkpoint, or "
                "fit with a larger max_iter or a smaller tol"
            )
    return state.runs


def _records(progress: RunProgress) -> list[IterationRecord]:
    return [IterationRecord(**record) for record in progress.history]


def run_all(
    client: Client,
    data: DistributedData,
    plan: RunPlan,
    *,
    report: Callable[[str], None],
    on_iteration: Callable[[IterationRecord], None] | None = None,
) -> LloydResult:
    """Run (or resume) every initialisation and return the best result.

    A run kept in the checkpoint goes on from its last iteration unless the
    plan's ``max_iter`` and ``tol`` stop it there; a finished run that they
    stop there is taken as it is. The returned result always comes from a
    final assignment pass over the data with its centres, so its inertia and
    labels are those of the centres, also when the best run finished before
    a resume.
    """
    runs = _resume_state(plan)
    if runs:
        report(
            f"resuming from checkpoint {os.fspath(plan.checkpoint)!r}: "
            + ", ".join(
                f"run {run + 1} at iteration {len(progress.history)}"
                + (" (finished)" if progress.inertia is not None else "")
                for run, progress in enumerate(runs)
            )
        )
    n_runs = len(plan.seeds)

    def save() -> None:
        if plan.checkpoint is None:
            return
        completed = len(runs) == n_runs and all(run.inertia is not None for run in runs)
        write_checkpoint(
            plan.checkpoint, CheckpointState(plan.fingerprint, plan.seeds, runs, completed)
        )

    def keep(run: int, progress: RunProgress) -> None:
        if run < len(runs):
            runs[run] = progress
        else:
            runs.append(progress)

    # A run computed in this call (with labels), or a kept one that needs no iteration.
    best: LloydResult | RunProgress | None = None
    for run in range(n_runs):
        kept = runs[run] if run < len(runs) else None
        if kept is not None and kept.inertia is not None and _stop(_records(kept), plan):
            if best is None or kept.inertia < best.inertia:
                best = kept
            continue
        if kept is not None:
            start = kept.centers, _records(kept)
        else:
            seed = plan.seeds[run]
            centers = surviving_worker_loss(
                client, data, lambda seed=seed: plan.initialize(seed), report
            )
            start = centers, []

        def after_iteration(
            centers: np.ndarray, history: list[IterationRecord], run: int = run
        ) -> None:
            keep(run, RunProgress(centers, [asdict(record) for record in history]))
            save()
            if on_iteration is not None:
                on_iteration(history[-1])

        def iterate(run: int = run, start: tuple = start) -> LloydResult:
            # After a lost worker, the step goes on from the last iteration kept.
            centers, history = (
                (runs[run].centers, _records(runs[run])) if run < len(runs) else start
            )
            return lloyd(
                client,
                data,
                centers,
                max_iter=plan.max_iter,
                tol=plan.tol,
                backend=plan.search,
                final_backend=plan.final_search,
                bounds=plan.bounds,
                exact_backend=plan.backend,
                history=history,
                on_iteration=after_iteration,
            )

        result = surviving_worker_loss(client, data, iterate, report)
        report(stopping_message(result.history, plan.tol(), plan.max_iter))
        report(
            f"run {run + 1}/{n_runs}: inertia {result.inertia:.6g} after "
            f"{result.n_iter} iteration(s)"
        )
        keep(
            run,
            RunProgress(
                result.centers, [asdict(record) for record in result.history], result.inertia
            ),
        )
        save()
        if best is None or result.inertia < best.inertia:
            best = result

    if isinstance(best, LloydResult):
        return best
    # The best run finished before this call: one pass gives its labels. It is
    # exact even without an exact final pass: no labels are kept to start the
    # candidates from, and an IVF pass would undo their precision.
    final = surviving_worker_loss(
        client,
        data,
        lambda: lloyd(client, data, best.centers, max_iter=0, tol=plan.tol, backend=plan.backend),
        report,
    )
    final.history = _records(best)
    final.n_iter = len(final.history)
    final.converged = bool(final.history) and final.history[-1].center_shift <= plan.tol()
    return final
