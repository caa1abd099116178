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
bit for bit, and the loop continues where it stopped.
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

from kmeans_dask._inputs import DistributedData
from kmeans_dask._lloyd import IterationRecord, LloydResult, lloyd, stopping_message
from kmeans_dask._model_io import CheckpointState, read_checkpoint, write_checkpoint

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
    tol: float
    """Absolute tolerance on the summed squared centre shift."""
    backend: str
    """Exact search: the final pass (labels, inertia)."""
    search: str
    """Search of the Lloyd iterations (exact, or approximate for large k)."""
    fingerprint: str
    """Identifies the fit, so a checkpoint of another fit is refused."""
    checkpoint: str | os.PathLike | None = None
    bounds: str = "off"
    """When to keep Hamerly bounds with the chunks: "off", "always", "settled"."""


def _resume_state(plan: RunPlan) -> CheckpointState | None:
    if plan.checkpoint is None:
        return None
    state = read_checkpoint(plan.checkpoint)
    if state is None:
        return None
    if state.fingerprint != plan.fingerprint or state.seeds != plan.seeds:
        raise ValueError(
            f"checkpoint {os.fspath(plan.checkpoint)!r} belongs to a different fit (other "
            "parameters, random_state or data); delete it or choose another checkpoint path"
        )
    return state


def run_all(
    client: Client,
    data: DistributedData,
    plan: RunPlan,
    *,
    report: Callable[[str], None],
    on_iteration: Callable[[IterationRecord], None] | None = None,
) -> LloydResult:
    """Run (or resume) every initialisation and return the best result.

    The returned result always comes from a final assignment pass over the
    data with its centres, so its inertia and labels are those of the
    centres, also when the best run finished before a resume.
    """
    state = _resume_state(plan)
    best: LloydResult | None = None
    best_from_checkpoint = None
    first_run = 0
    if state is not None:
        first_run = state.run
        if state.best_centers is not None:
            best_from_checkpoint = (state.best_centers, state.best_inertia, state.best_n_iter)
        report(
            f"resuming from checkpoint {os.fspath(plan.checkpoint)!r}: run "
            f"{state.run + 1}, iteration {state.iteration}"
        )

    def best_so_far() -> tuple[np.ndarray | None, float | None, int | None]:
        if best is not None and (
            best_from_checkpoint is None or best.inertia < best_from_checkpoint[1]
        ):
            return best.centers, best.inertia, best.n_iter
        return best_from_checkpoint or (None, None, None)

    def save(run: int, centers: np.ndarray, history: list[IterationRecord], done: bool) -> None:
        if plan.checkpoint is None:
            return
        best_centers, best_inertia, best_n_iter = best_so_far()
        write_checkpoint(
            plan.checkpoint,
            CheckpointState(
                fingerprint=plan.fingerprint,
                run=run,
                iteration=len(history),
                centers=centers,
                best_centers=best_centers,
                best_inertia=best_inertia,
                best_n_iter=best_n_iter,
                history=[asdict(record) for record in history],
                seeds=plan.seeds,
                completed=done,
            ),
        )

    n_runs = len(plan.seeds)
    for run in range(first_run, n_runs):
        if state is not None and run == state.run and state.iteration > 0:
            progress = {"centers": state.centers}
            progress["history"] = [IterationRecord(**record) for record in state.history]
        else:
            seed = plan.seeds[run]
            centers = surviving_worker_loss(
                client, data, lambda seed=seed: plan.initialize(seed), report
            )
            progress = {"centers": centers, "history": []}

        def after_iteration(
            centers: np.ndarray,
            history: list[IterationRecord],
            run: int = run,
            progress: dict = progress,
        ) -> None:
            progress.update(centers=centers, history=list(history))
            save(run, centers, history, done=False)
            if on_iteration is not None:
                on_iteration(history[-1])

        def iterate(progress: dict = progress) -> LloydResult:
            return lloyd(
                client,
                data,
                progress["centers"],
                max_iter=plan.max_iter,
                tol=plan.tol,
                backend=plan.search,
                final_backend=plan.backend,
                bounds=plan.bounds,
                history=progress["history"],
                on_iteration=after_iteration,
            )

        result = surviving_worker_loss(client, data, iterate, report)
        report(stopping_message(result.history, plan.tol, plan.max_iter))
        report(
            f"run {run + 1}/{n_runs}: inertia {result.inertia:.6g} after "
            f"{result.n_iter} iteration(s)"
        )
        if best is None or result.inertia < best.inertia:
            best = result
        save(run + 1, best_so_far()[0], [], done=run + 1 == n_runs)

    best_centers, _, best_n_iter = best_so_far()
    if best is not None and best_centers is best.centers:
        return best
    # The best run finished before the resume: one pass gives its labels.
    final = surviving_worker_loss(
        client,
        data,
        lambda: lloyd(
            client,
            data,
            best_centers,
            max_iter=0,
            tol=plan.tol,
            backend=plan.backend,
        ),
        report,
    )
    final.n_iter = best_n_iter
    # A run ends early only by converging; one that ran to max_iter is taken as not.
    final.converged = best_n_iter < plan.max_iter
    return final
