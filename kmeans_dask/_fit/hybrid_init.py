"""``init="hybrid"``: exact k-means on a random sample; its centres start the full fit.

A known recipe (e.g. Bradley and Fayyad, 1998, "Refining initial points for
k-means clustering"): a uniform random sample of ``sample_size`` rows is
drawn on the workers (the same counter-based draw keyed on global row
indices as ``init="k-means++"``, so only the sample reaches the client and
the result depends on the seed and the data, not on chunking or worker
count); the sample's rows keep their ``sample_weight``. scikit-learn's
greedy k-means++ seeds a weighted Lloyd on the sample, run in the client
process until its centres move by at most ``SAMPLE_TOL`` times the sample's
mean per-feature variance (scikit-learn's ``tol`` rule) or for
``SAMPLE_MAX_ITER`` iterations.
"""

from __future__ import annotations

import math
from numbers import Integral, Real
from typing import Any

import numpy as np
from distributed import Client

from kmeans_dask._engine.placement import DistributedData
from kmeans_dask._fit.initialization import sample_rows, weighted_plusplus
from kmeans_dask._fit.lloyd import local_lloyd

#: Random stream of the hybrid sample (the other init streams are 1, 2, 3, 16+).
_STREAM_HYBRID = 4
#: Lloyd on the sample: scikit-learn's defaults.
SAMPLE_MAX_ITER = 300
SAMPLE_TOL = 1e-4
#: ``init_sample_size=None``: this many rows per cluster, at least ``MIN_SAMPLE_ROWS``.
SAMPLE_ROWS_PER_CLUSTER = 100
MIN_SAMPLE_ROWS = 20_000


def check_init_sample_size(value: Any) -> None:
    """Refuse an ``init_sample_size`` that is not None, an int >= 1 or a float in (0, 1]."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(
            "init_sample_size must be None, an integer >= 1 (rows) or a float in (0, 1] "
            f"(a fraction of the rows), got {value!r} of type {type(value).__name__}"
        )
    if isinstance(value, Integral):
        if value < 1:
            raise ValueError(
                f"init_sample_size must be >= 1 when it counts rows, got init_sample_size={value}"
            )
    elif not (math.isfinite(value) and 0 < value <= 1):
        raise ValueError(
            "init_sample_size as a float is a fraction of the rows and must be in (0, 1], "
            f"got init_sample_size={value}"
        )


def resolve_sample_size(init_sample_size: Any, n_samples: int, n_clusters: int) -> int:
    """The number of rows the hybrid initialisation samples.

    None: ``max(MIN_SAMPLE_ROWS, SAMPLE_ROWS_PER_CLUSTER * n_clusters)``; an
    integer: that many rows; a float: that fraction of ``n_samples``
    (rounded). Never more than ``n_samples``.

    Raises
    ------
    ValueError
        If the sample would hold fewer rows than ``n_clusters``.
    """
    check_init_sample_size(init_sample_size)
    if init_sample_size is None:
        size = max(MIN_SAMPLE_ROWS, SAMPLE_ROWS_PER_CLUSTER * n_clusters)
    elif isinstance(init_sample_size, Integral):
        size = int(init_sample_size)
    else:
        size = round(float(init_sample_size) * n_samples)
    size = min(size, n_samples)
    if size < n_clusters:
        raise ValueError(
            f"init_sample_size={init_sample_size!r} gives a sample of {size} rows (of "
            f"n_samples={n_samples}), fewer than n_clusters={n_clusters}; init='hybrid' "
            "needs at least one row per cluster: raise init_sample_size"
        )
    return size


def init_hybrid(
    client: Client,
    data: DistributedData,
    n_clusters: int,
    seed: int,
    *,
    sample_size: int,
    backend: str,
) -> np.ndarray:
    """Centres of an exact weighted k-means on ``sample_size`` uniformly drawn rows."""
    sample = sample_rows(client, data, sample_size, seed, _STREAM_HYBRID, weighted=False)
    points, weights = sample.rows, sample.weights
    centers = weighted_plusplus(points, weights, n_clusters, seed)
    return local_lloyd(
        points,
        weights,
        centers,
        max_iter=SAMPLE_MAX_ITER,
        tol=SAMPLE_TOL * _mean_variance(points, weights),
        backend=backend,
    )


def _mean_variance(points: np.ndarray, weights: np.ndarray) -> float:
    """Weighted mean per-feature variance of the sample (unit weights if all are 0)."""
    if not (weights > 0).any():
        weights = np.ones_like(weights)
    mean = np.average(points, axis=0, weights=weights)
    return float(np.mean(np.average((points - mean) ** 2, axis=0, weights=weights)))
