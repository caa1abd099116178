"""Fit checkpoints: every run of a fit, to resume it or take it further (see :mod:`.safe_files`).

One tensor, ``centers`` (float32 or float64, ``(runs, n_clusters,
n_features)``), and the content: the fit's fingerprint, the seeds, each run's
history and final inertia (null while it runs), and whether all finished.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Annotated, Any

import msgspec
import numpy as np

from kmeans_dask._io.safe_files import (
    FLOATS,
    Content,
    Count,
    FileKind,
    FileProblem,
    Finite,
    NonNegative,
    Tensor,
    as_array,
    plain,
    read,
    write,
)

CHECKPOINT_FORMAT_VERSION = 3
"""1 and 2 were the ``.npz`` layouts of kmeans_dask 0.1.0 (refused: a fit starts over)."""


class Iteration(msgspec.Struct, forbid_unknown_fields=True):
    iteration: int
    inertia: Finite
    center_shift: Finite
    n_empty: Count
    seconds: Finite


class Run(msgspec.Struct, forbid_unknown_fields=True):
    history: Annotated[list[Iteration], msgspec.Meta(min_length=1)]
    inertia: NonNegative | None


class CheckpointContent(Content):
    fingerprint: Annotated[str, msgspec.Meta(min_length=1)]
    seeds: list[int]
    runs: list[Run]
    completed: bool

    def __post_init__(self) -> None:
        if len(self.runs) > len(self.seeds):
            raise ValueError(f"there are {len(self.runs)} runs but only {len(self.seeds)} seeds")
        finished = len(self.runs) == len(self.seeds) and all(
            r.inertia is not None for r in self.runs
        )
        if self.completed and not finished:
            raise ValueError("completed is true, but not every run finished")

    def tensors(self) -> dict[str, Tensor]:
        return {"centers": Tensor((len(self.runs), None, None), FLOATS)}


CHECKPOINT = FileKind(
    "kmeans_dask.checkpoint",
    CHECKPOINT_FORMAT_VERSION,
    CheckpointContent,
    older="delete it to start the fit over",
    legacy="the layout of kmeans_dask 0.1.0 checkpoints, which this version cannot resume: "
    "delete it to start the fit over",
)


@dataclass
class RunProgress:
    """One run as a checkpoint keeps it: its centres after its last iteration, its
    history (dicts of IterationRecord's fields, at least one) and its final inertia
    (None while it runs)."""

    centers: np.ndarray
    history: list[dict[str, Any]]
    inertia: float | None = None


@dataclass
class CheckpointState:
    """Where a fit stands: its fingerprint (refuse another fit's), every run's seed,
    the runs started (finished ones kept, so a larger ``max_iter`` takes them
    further) and whether every run finished."""

    fingerprint: str
    seeds: list[int]
    runs: list[RunProgress] = field(default_factory=list)
    completed: bool = False


def write_checkpoint(path: str | os.PathLike, state: CheckpointState) -> None:
    """Write ``state`` atomically, checked as :func:`read_checkpoint` checks it.

    Raises
    ------
    TypeError
        If ``state`` is not a CheckpointState.
    ValueError
        If it cannot be stored faithfully; nothing is written then.
    """
    target = os.fspath(path)
    if not isinstance(state, CheckpointState):
        raise TypeError(f"state must be a CheckpointState, got {type(state).__name__}")
    try:
        if not isinstance(state.runs, list | tuple):
            raise FileProblem(f"runs must be a list, got {type(state.runs).__name__}")
        for position, run in enumerate(state.runs):
            if not isinstance(run, RunProgress):
                raise FileProblem(f"runs[{position}] must be a RunProgress, got {run!r}")
        centers = [as_array(run.centers, f"runs[{i}].centers") for i, run in enumerate(state.runs)]
        if len({(array.shape, array.dtype) for array in centers}) > 1:
            shapes = sorted({f"{array.shape} {array.dtype}" for array in centers})
            raise FileProblem(f"the runs' centres must share one shape and dtype, got {shapes}")
        fields = {
            "fingerprint": state.fingerprint,
            "seeds": plain(state.seeds),
            "runs": [
                {"history": plain(run.history), "inertia": plain(run.inertia)}
                for run in state.runs
            ],
            "completed": state.completed,
        }
        tensors = {"centers": np.stack(centers) if centers else np.zeros((0, 0, 0))}
        write(target, CHECKPOINT, fields, tensors)
    except FileProblem as exc:
        raise ValueError(f"cannot write checkpoint '{target}': {exc}") from None


def read_checkpoint(path: str | os.PathLike) -> CheckpointState | None:
    """The checkpoint at ``path``, or None if there is none.

    Raises
    ------
    ValueError
        If the file is not a valid checkpoint of this version; the message
        names the file and the problem.
    """
    target = os.fspath(path)
    if not os.path.exists(target):
        return None
    try:
        content, tensors, _, _ = read(target, CHECKPOINT)
    except FileProblem as exc:
        raise ValueError(f"cannot read checkpoint '{target}': {exc}") from None
    runs = [
        RunProgress(centers, msgspec.to_builtins(run.history), run.inertia)
        for centers, run in zip(tensors["centers"], content.runs, strict=True)
    ]
    return CheckpointState(content.fingerprint, content.seeds, runs, content.completed)
