"""Randomness that does not depend on how the data is chunked or scheduled.

Sampling decisions for a row are drawn from a counter-based generator keyed
on ``(seed, stream, global row index)``, so the same rows are sampled
whatever the chunking, the worker count or the order tasks run in.
"""

from __future__ import annotations

import numpy as np

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


def _splitmix64(values: np.ndarray) -> np.ndarray:
    z = values + _GOLDEN
    z = (z ^ (z >> np.uint64(30))) * _MIX1
    z = (z ^ (z >> np.uint64(27))) * _MIX2
    return z ^ (z >> np.uint64(31))


def row_uniforms(seed: int, stream: int, start: int, stop: int) -> np.ndarray:
    """Uniform [0, 1) floats for global rows ``start..stop-1`` of one stream."""
    with np.errstate(over="ignore"):
        key = _splitmix64(np.array([seed, stream], dtype=np.uint64)).sum(dtype=np.uint64)
        rows = np.arange(start, stop, dtype=np.uint64)
        bits = _splitmix64(rows ^ key)
    return (bits >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def init_seeds(random_state, n_init: int) -> list[int]:
    """One independent 31-bit seed per initialisation, from ``random_state``."""
    from sklearn.utils import check_random_state  # not needed on the workers

    rng = check_random_state(random_state)
    return [int(s) for s in rng.randint(np.iinfo(np.int32).max, size=n_init)]
