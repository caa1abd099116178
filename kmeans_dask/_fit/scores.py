"""Calinski-Harabasz and Davies-Bouldin scores from one pass over the chunks.

Neither score needs the rows in one place: both follow from per-cluster
statistics of the rows under the fitted centres ``c_j``, which one Dask
map-reduce over the row chunks collects (each chunk labels its rows by the
nearest centre, as ``labels_`` does, and adds up, per cluster ``j``, the row
count ``n_j``, the row sum, the squared distances and the distances to
``c_j``). With ``m_j`` the mean of cluster ``j``'s rows and ``m`` the mean
of all ``n`` rows, over the ``k`` non-empty clusters:

* Calinski-Harabasz (exactly scikit-learn's
  ``calinski_harabasz_score``): ``B / W * (n - k) / (k - 1)`` with between
  dispersion ``B = sum_j n_j |m_j - m|^2`` and within dispersion ``W =
  sum_j sum_{x in j} |x - m_j|^2 = inertia - sum_j n_j |m_j - c_j|^2`` (the
  second term vanishes when the centres are the cluster means, i.e. a
  converged fit). 1.0 when ``W = 0``, as scikit-learn.
* Davies-Bouldin: ``mean_i max_{j != i} (s_i + s_j) / |c_i - c_j|`` with
  ``s_i`` the mean distance (not squared) of cluster ``i``'s rows to its
  centre. One variant, said precisely: the centroids are the fitted centres
  ``c_j``, where scikit-learn's ``davies_bouldin_score`` takes the cluster
  means ``m_j``; the two agree wherever the centres are the means of their
  clusters (a Lloyd fit run to convergence), and differ by the last
  iteration's centre shift otherwise. 0.0 when every ``s_i`` or every
  centre distance is 0, as scikit-learn.

Rows are unweighted (the scores of scikit-learn take no weights).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from kmeans_dask._fit.searches import client_backend
from kmeans_dask._io.inputs import is_dask_array
from kmeans_dask._worker.host_ops import statistics_and_labels


class ClusterStatistics(NamedTuple):
    """Per-cluster sums over the rows labelled by their nearest centre."""

    counts: np.ndarray
    """(k,) rows per cluster."""
    row_sums: np.ndarray
    """(k, d) sum of each cluster's rows."""
    sq_distances: np.ndarray
    """(k,) sum of squared distances of each cluster's rows to its centre."""
    distances: np.ndarray
    """(k,) sum of distances of each cluster's rows to its centre."""


def block_statistics(block: np.ndarray, centers: np.ndarray, backend: str) -> np.ndarray:
    """One chunk's per-cluster statistics, packed as one row of ``k * (d + 3)`` float64.

    Layout: counts (k), squared distances (k), distances (k), row sums (k * d).
    """
    n_clusters, n_features = centers.shape
    block = np.ascontiguousarray(block)
    packed = np.zeros((1, n_clusters * (n_features + 3)), dtype=np.float64)
    if len(block):
        stats, labels, sq_dist = statistics_and_labels(
            block, None, centers.astype(block.dtype), backend
        )
        packed[0, :n_clusters] = stats.counts
        packed[0, n_clusters : 2 * n_clusters] = np.bincount(
            labels, weights=sq_dist, minlength=n_clusters
        )
        packed[0, 2 * n_clusters : 3 * n_clusters] = np.bincount(
            labels, weights=np.sqrt(sq_dist), minlength=n_clusters
        )
        packed[0, 3 * n_clusters :] = stats.sums.ravel()
    return packed


def _unpack(packed: np.ndarray, n_clusters: int, n_features: int) -> ClusterStatistics:
    k = n_clusters
    return ClusterStatistics(
        counts=packed[:k],
        sq_distances=packed[k : 2 * k],
        distances=packed[2 * k : 3 * k],
        row_sums=packed[3 * k :].reshape(k, n_features),
    )


def cluster_statistics(X: Any, centers: np.ndarray, backend: str) -> ClusterStatistics:
    """Per-cluster statistics of X under ``centers``: one map-reduce over X's row chunks.

    Parameters
    ----------
    X : ndarray or dask.array of shape (n_samples, n_features)
        Validated data (one column block for a Dask array). A Dask array is
        reduced on the active client (a tree sum of one small row per
        chunk); only the ``k * (d + 3)`` sums reach the client.
    centers : ndarray of shape (n_clusters, n_features)
    backend : str
        The nearest-centre search (a resolved backend name).
    """
    n_clusters, n_features = centers.shape
    if is_dask_array(X):
        parts = X.map_blocks(
            block_statistics,
            centers,
            backend,
            chunks=((1,) * X.numblocks[0], (n_clusters * (n_features + 3),)),
            dtype=np.float64,
        )
        packed = parts.sum(axis=0).compute()
    else:
        packed = block_statistics(X, centers, backend)[0]
    return _unpack(np.asarray(packed), n_clusters, n_features)


def calinski_harabasz(stats: ClusterStatistics, centers: np.ndarray) -> float:
    """Calinski-Harabasz score (see the module docstring); NaN for fewer than 2 clusters."""
    present = stats.counts > 0
    counts = stats.counts[present]
    n_samples, n_labels = float(counts.sum()), int(present.sum())
    if n_labels < 2 or n_labels >= n_samples:
        return float("nan")
    means = stats.row_sums[present] / counts[:, None]
    overall = stats.row_sums[present].sum(axis=0) / n_samples
    between = float(np.sum(counts * np.sum((means - overall) ** 2, axis=1)))
    offsets = np.sum((means - centers[present].astype(np.float64)) ** 2, axis=1)
    within = float(np.sum(stats.sq_distances[present] - counts * offsets))
    if within <= 0:
        return 1.0
    return between * (n_samples - n_labels) / (within * (n_labels - 1))


def davies_bouldin(stats: ClusterStatistics, centers: np.ndarray) -> float:
    """Davies-Bouldin score (see the module docstring); NaN for fewer than 2 clusters."""
    present = stats.counts > 0
    if int(present.sum()) < 2:
        return float("nan")
    spread = stats.distances[present] / stats.counts[present]
    points = centers[present].astype(np.float64)
    gaps = np.sqrt(np.sum((points[:, None, :] - points[None, :, :]) ** 2, axis=2))
    if np.allclose(spread, 0) or np.allclose(gaps, 0):
        return 0.0
    gaps[gaps == 0] = np.inf
    ratios = (spread[:, None] + spread[None, :]) / gaps
    np.fill_diagonal(ratios, -np.inf)  # a cluster is not compared with itself
    return float(np.mean(np.max(ratios, axis=1)))


def fitted_scores(model: Any, X: Any) -> tuple[float, float]:
    """Calinski-Harabasz and Davies-Bouldin scores of a fitted model on X (one pass).

    X is anything ``model.predict`` takes; a Dask array or Zarr source is
    read chunk by chunk on the workers, never gathered.
    """
    data = model._check_predict_data(X)
    centers = np.asarray(model.cluster_centers_)
    stats = cluster_statistics(data, centers, client_backend(model.backend))
    return calinski_harabasz(stats, centers), davies_bouldin(stats, centers)
