"""Randomness that does not depend on how the data is chunked or scheduled.

Sampling decisions for a row are drawn from a counter-based generator keyed
on ``(seed, stream, global row index)``, so the same rows are sampled
whatever the chunking, the worker count or the order tasks run in.
"""

from __future__ import annotations

import numba
import numpy as np

from kmeans_dask._kernels.shared_cache import cached_njit

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
# uint64 shift amounts: Numba turns uint64 mixed with int64 into float64.
_S11, _S27, _S30, _S31 = (np.uint64(n) for n in (11, 27, 30, 31))
_UNIT = 1.0 / (1 << 53)


@numba.njit(inline="always")
def _splitmix64(value):
    z = value + _GOLDEN
    z = (z ^ (z >> _S30)) * _MIX1
    z = (z ^ (z >> _S27)) * _MIX2
    return z ^ (z >> _S31)


def _stream_key(seed: int, stream: int) -> np.uint64:
    mixed = _splitmix64(np.uint64(seed)) + _splitmix64(np.uint64(stream))
    return np.uint64(mixed % (1 << 64))


@numba.njit(inline="always")
def _uniform(key, row):
    """The uniform [0, 1) float of global row ``row`` in the stream ``key``."""
    return np.float64(_splitmix64(np.uint64(row) ^ key) >> _S11) * _UNIT


@cached_njit(nogil=True)
def _fill_uniforms(key, start, out):
    for i in range(out.shape[0]):
        out[i] = _uniform(key, start + i)


def row_uniforms(seed: int, stream: int, start: int, stop: int) -> np.ndarray:
    """Uniform [0, 1) floats for global rows ``start..stop-1`` of one stream."""
    out = np.empty(stop - start)
    _fill_uniforms(_stream_key(seed, stream), np.uint64(start), out)
    return out


@cached_njit(nogil=True)
def _keep_with_probability(scale, weights, sq_dist, key, start, kept):
    n_kept = 0
    for i in range(sq_dist.shape[0]):
        weight = 1.0 if weights is None else weights[i]
        if _uniform(key, start + i) < scale * weight * sq_dist[i]:
            kept[n_kept] = i
            n_kept += 1
    return n_kept


def rows_kept_with_probability(
    scale: float,
    weights: np.ndarray | None,
    sq_dist: np.ndarray,
    seed: int,
    stream: int,
    start: int,
) -> np.ndarray:
    """Local indices of the rows kept independently with probability ``scale * w * d^2``.

    Row ``i`` is global row ``start + i``; it is kept when its uniform of
    :func:`row_uniforms` (same seed and stream) is below that probability,
    so a probability of 1 or more always keeps it. ``weights`` None means 1.
    """
    kept = np.empty(sq_dist.shape[0], dtype=np.int64)
    n_kept = _keep_with_probability(
        float(scale), weights, sq_dist, _stream_key(seed, stream), np.uint64(start), kept
    )
    return kept[:n_kept]
