"""The seeds of a fit's initialisations: from ``random_state``, or a checkpoint's."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.utils import check_random_state

from kmeans_dask._io.checkpoints import read_checkpoint
from kmeans_dask._io.output_paths import PathLike


def init_seeds(random_state, n_init: int) -> list[int]:
    """One independent 31-bit seed per initialisation, from ``random_state``."""
    rng = check_random_state(random_state)
    return [int(s) for s in rng.randint(np.iinfo(np.int32).max, size=n_init)]


def fit_seeds(random_state: Any, n_init: int, checkpoint: PathLike | None) -> list[int]:
    """The seeds of a fit's initialisations.

    With ``random_state=None`` the seeds are drawn at random, so a rerun
    could never resume its checkpoint; it takes the seeds stored in the
    checkpoint instead (the fingerprint still refuses another fit's).
    """
    if random_state is None and checkpoint is not None:
        try:
            state = read_checkpoint(checkpoint)
        except (OSError, ValueError):
            state = None  # the fit itself reports an unreadable checkpoint
        if state is not None and len(state.seeds) == n_init:
            return list(state.seeds)
    return init_seeds(random_state, n_init)
