"""The update step: new centres from a pass's statistics, empty clusters relocated."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

import numpy as np

from kmeans_dask._fit.history import IterationRecord
from kmeans_dask._kernels.center_updates import cluster_means, squared_moves
from kmeans_dask._worker.results import ClusterStats, RankedRows

#: A row closer to its centre than this share of their norms sits on the
#: centre up to rounding: the float64 mean of ``n`` equal rows can differ
#: from them by about ``n * 2**-53`` of their size (typically ``sqrt(n)``
#: times that), so up to 2**21 equal rows summed in one chunk stay within it.
#: (Float32 rows are summed exactly, so their mean is exact.)
ON_CENTER_RELATIVE_DISTANCE = 2.0**-32


def off_center(far: RankedRows, centers: np.ndarray) -> RankedRows:
    """The leading rows of ``far`` that are farther than rounding from their centre.

    ``far`` is ranked farthest first, so the rows kept are a prefix. When the
    farthest row sits on its centre, every row does (more clusters than
    distinct rows), and relocating an empty cluster would only swap equal
    points back and forth: scikit-learn skips it then too (its #28055).
    """
    rows = far.rows.astype(np.float64)
    assigned = centers[np.maximum(far.labels, 0)].astype(np.float64)
    squared_norms = np.einsum("ij,ij->i", rows, rows) + np.einsum("ij,ij->i", assigned, assigned)
    on_center = far.score <= ON_CENTER_RELATIVE_DISTANCE**2 * squared_norms
    return far.head(int(np.argmax(on_center)) if on_center.any() else len(on_center))


def relocation_pays(history: Sequence[IterationRecord], inertia: float) -> bool:
    """Whether empty clusters may still be relocated in this iteration.

    Moving an empty cluster onto a row at distance ``d > 0`` lowers the
    inertia by at least that row's ``w * d``, and a Lloyd step never raises
    it, so after an iteration that relocated, the next inertia is strictly
    lower. Once it is not (rounding, rows of weight 0, an approximate
    search), relocating makes no progress and could cycle until
    ``max_iter``: from then on the run leaves empty clusters where they are.
    Derived from the history alone, so a resumed run decides the same.
    """
    inertias = [record.inertia for record in history] + [inertia]
    return not any(
        record.n_empty and later >= record.inertia
        for record, later in zip(history, inertias[1:], strict=True)
    )


def relocate_empty_clusters(stats: ClusterStats, far: RankedRows, empty: np.ndarray) -> None:
    """Move each empty cluster onto one of the rows farthest from its centre.

    As in scikit-learn, the row leaves its old cluster (its weighted sum and
    weight are subtracted) and becomes the sole member of the empty one.
    Modifies ``stats`` in place.
    """
    for cluster, row, weight, old in zip(empty, far.rows, far.weights, far.labels, strict=False):
        stats.sums[old] -= weight * row
        stats.counts[old] -= weight
        stats.sums[cluster] = weight * row
        stats.counts[cluster] = weight


def new_centers(
    stats: ClusterStats, old_centers: np.ndarray, far: RankedRows | None, empty: np.ndarray
) -> np.ndarray:
    """Weighted means of the clusters; a cluster left with no weight keeps its centre.

    A relocated cluster whose farthest row has weight 0 is placed on that row.
    """
    centers = np.empty(old_centers.shape, dtype=old_centers.dtype)
    cluster_means(
        np.ascontiguousarray(stats.sums, dtype=np.float64),
        np.ascontiguousarray(stats.counts, dtype=np.float64),
        np.ascontiguousarray(old_centers),
        centers,
    )
    if far is not None:
        for cluster, row, weight in zip(empty, far.rows, far.weights, strict=False):
            if weight == 0:
                centers[cluster] = row
    return centers


def update_centers(
    stats: ClusterStats,
    centers: np.ndarray,
    find_far: Callable[[int], RankedRows],
    relocate: bool = True,
) -> tuple[np.ndarray, int]:
    """New centres from an iteration's statistics; also how many clusters were relocated.

    ``stats`` is left as it was (the relocation works on a copy): a later pass
    may add what it changed to them.
    """
    empty = np.flatnonzero(stats.counts <= 0)
    far = None
    if empty.size and relocate:
        far = off_center(find_far(empty.size), centers)
        empty = empty[: len(far.rows)]
        stats = replace(stats, sums=stats.sums.copy(), counts=stats.counts.copy())
        relocate_empty_clusters(stats, far, empty)
    else:
        empty = empty[:0]
    return new_centers(stats, centers, far, empty), int(empty.size)


def center_moves(old: np.ndarray, new: np.ndarray) -> np.ndarray:
    """(k,) float64: the squared distance each centre moved from ``old`` to ``new``."""
    moves = np.empty(len(new), dtype=np.float64)
    squared_moves(np.ascontiguousarray(old), np.ascontiguousarray(new), moves)
    return moves


def center_shift(old: np.ndarray, new: np.ndarray) -> float:
    """Sum over the centres of the squared distance each moved from ``old`` to ``new``,
    in float64 (scikit-learn's ``center_shift_tot``, compared with ``tol``)."""
    return float(center_moves(old, new).sum())
