"""A float32 first look at a float32 row's candidate centres, with rigorous error bounds.

A candidate pass scores each row against a few dozen centres in float64
(:func:`~kmeans_dask._kernels.row_statistics.row_distance`, the distance
the statistics use), and fetching those float64 centres bounds its speed.
With float32 rows, the candidates are first scored against the centres
rounded to float32 (:func:`distance32`: half the bytes, twice the lanes),
and only the candidates whose float32 score leaves them a chance of being
the nearest are scored again in float64 (:func:`screen_limit`), usually one
per row. The bounds cover every rounding on the way, so the label chosen
among those is the one a float64 scan of all the candidates chooses, ties
included. Through ``own_candidate_labels`` at k = 16384, d = 128 (25,000
rows, 16 candidates each, one Ice Lake thread) the scan took 22.8 ms
instead of 46.5 with 16 centres every row scores, 26.7 instead of 65.8 with
32; through ``candidate_labels`` at k = 4096 (tables of 32), 18.7 instead
of 24.5 (RESULTS.md, "A float32 first look at the candidates").
"""

from __future__ import annotations

import math

import numpy as np

from kmeans_dask._kernels.center_updates import squared_moves
from kmeans_dask._kernels.shared_cache import cached_njit

#: float32's unit roundoff, and its smallest normal number: below it a
#: square loses relative accuracy, so every bound also allows that much per
#: term.
_UNIT = 2.0**-24
_TINY = 2.0**-126
#: Relative slack for the float64 roundings of the distances compared in the
#: end and of the bounds' own arithmetic (each below 1e-13 at any d).
_SLACK = 1e-9

# Reassociation lets LLVM sum the squares in vector lanes; the bound of
# :func:`screen_limit` holds for any order of the additions.
_REASSOC = {"reassoc", "contract", "nsz"}


def float32_screen(centers64: np.ndarray) -> tuple[np.ndarray, float]:
    """The centres rounded to float32, and how far the rounding moved the farthest one.

    Parameters
    ----------
    centers64 : ndarray of shape (k, d), float64

    Returns
    -------
    centers32 : ndarray of shape (k, d), float32, C-contiguous
    shift : float
        An upper bound on ``||centers64[c] - centers32[c]||`` over the centres.
    """
    centers32 = np.ascontiguousarray(centers64, dtype=np.float32)
    moves = np.empty(len(centers64))
    squared_moves(centers32, np.ascontiguousarray(centers64), moves)
    return centers32, math.sqrt(moves.max(initial=0.0)) * (1.0 + _SLACK)


@cached_njit(nogil=True, fastmath=_REASSOC)
def distance32(row, center):
    """``||row - center||^2`` of two float32 vectors, summed in float32 in any order."""
    total = np.float32(0.0)
    for j in range(row.shape[0]):
        difference = row[j] - center[j]
        total += difference * difference
    return total


@cached_njit(nogil=True)
def screen_limit(lowest, shift, n_features):
    """The largest float32 score a candidate may have and still be a row's nearest centre.

    ``lowest`` is the smallest :func:`distance32` score among the row's
    candidates (against the centres rounded to float32), ``shift`` the
    bound of :func:`float32_screen`. Each score is within a relative
    ``gamma = (d + 2) u / (1 - (d + 2) u)`` of the squared distance to the
    rounded centre (any summation order, ``u`` float32's unit roundoff),
    give or take ``(d + 2)`` times the smallest normal float32 for squares
    that underflow, and the rounded centre is within ``shift`` of the
    centre. So the candidate of score ``lowest`` is at most ``high`` from
    the row, and a candidate whose score exceeds the limit is farther than
    that, by more than the float64 distances' own rounding: it cannot be
    the nearest, nor tie with it. An infinite ``lowest`` (float32
    overflow) gives an infinite limit: every candidate is scored in
    float64.
    """
    terms = n_features + 2
    gamma = terms * _UNIT / (1.0 - terms * _UNIT)
    tiny = terms * _TINY
    high = math.sqrt((np.float64(lowest) + tiny) / (1.0 - gamma)) + shift
    return (1.0 + gamma) * (high * (1.0 + _SLACK) + shift) ** 2 + tiny
