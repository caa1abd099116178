"""Using a fitted model: labels, distances and inertia of new rows, NumPy or Dask.

Dask input stays lazy: each function maps one block function over X's row
blocks, under a name that fixes the output keys (unique per input, readable
in the dashboard). CuPy blocks are worked on where they are.
"""

from __future__ import annotations

import math
from functools import reduce
from typing import Any

import dask
import dask.array as da
import numpy as np
from array_api_compat import array_namespace
from dask.base import tokenize
from sklearn.metrics import euclidean_distances

from kmeans_dask._fit.validation import check_finite, raise_for_summary
from kmeans_dask._io.inputs import is_dask_array
from kmeans_dask._worker.array_api_ops import ArrayAPIOps, center_distances, nearest_rows
from kmeans_dask._worker.chunks import make_chunk
from kmeans_dask._worker.host_ops import host_ops, nearest
from kmeans_dask._worker.results import ChunkSummary, nonfinite_positions
from kmeans_dask._worker.tasks import summarize


def predict_labels(X: Any, centers: np.ndarray, backend: str) -> Any:
    """Index (int32) of each row's nearest centre; lazy for Dask input."""
    if is_dask_array(X):
        return X.map_blocks(
            _predict_block,
            centers,
            backend,
            drop_axis=1,
            dtype=np.int32,
            name=f"kmeans-predict-{tokenize(X, centers, backend)}",
        )
    return nearest(X, centers, backend)[0]


def center_distances_of(X: Any, centers: np.ndarray) -> Any:
    """Euclidean distance of each row to every centre; lazy for Dask input.

    Computed in the wider of the rows' and the centres' dtypes, as
    scikit-learn's ``transform``: float32 rows and float64 centres give float64.
    """
    centers = centers.astype(np.result_type(X.dtype, centers.dtype), copy=False)
    if is_dask_array(X):
        return X.map_blocks(
            _transform_block,
            centers,
            chunks=(X.chunks[0], (centers.shape[0],)),
            dtype=centers.dtype,
            name=f"kmeans-transform-{tokenize(X, centers)}",
        )
    return euclidean_distances(X, centers)


def weighted_inertia(X: Any, weights: Any, centers: np.ndarray, backend: str) -> float:
    """``sum(w * ||x - nearest centre||^2)``, computed now; bad rows or weights refused."""
    if is_dask_array(X):
        if weights is None:
            weights = da.ones(X.shape[0], chunks=(X.chunks[0],))
        weight_blocks = da.asarray(weights).rechunk((X.chunks[0],)).to_delayed().ravel()
        offsets = np.cumsum((0, *X.chunks[0][:-1]))
        parts = dask.compute(
            *[
                dask.delayed(_score_block)(block, w, int(offset), centers, backend)
                for block, w, offset in zip(
                    X.to_delayed().ravel(), weight_blocks, offsets, strict=True
                )
            ]
        )
    else:
        if is_dask_array(weights):
            weights = weights.compute()
        weights = np.ones(X.shape[0]) if weights is None else weights
        parts = [_score_block(X, weights, 0, centers, backend)]
    raise_for_summary(reduce(ChunkSummary.merge, (part[1] for part in parts)))
    return math.fsum(part[0] for part in parts)


def raise_if_nonfinite(X: np.ndarray, offset: int = 0) -> None:
    """Refuse host rows with NaN or infinity, naming the first positions."""
    check_finite(*nonfinite_positions(X, offset))


def _score_block(block, weights, offset: int, centers, backend) -> tuple[float, ChunkSummary]:
    """Weighted inertia of a block, and what it found wrong with the block."""
    chunk = make_chunk(block, weights, offset, block.dtype, host_ops())
    summary = summarize(chunk, with_digest=False)
    if summary.nonfinite_count or summary.bad_weight_count:
        return 0.0, summary
    return float(np.dot(chunk.weights, nearest(chunk.data, centers, backend)[1])), summary


def _block_offset(block_info) -> int:
    return block_info[0]["array-location"][0][0] if block_info else 0


def _predict_block(block, centers, backend, block_info=None):
    if not isinstance(block, np.ndarray):  # CuPy rows are predicted on their device
        _raise_if_nonfinite_on_device(block, _block_offset(block_info))
        return nearest_rows(array_namespace(block), block, centers)[0]
    raise_if_nonfinite(block, _block_offset(block_info))
    return nearest(np.ascontiguousarray(block), centers, backend)[0]


def _transform_block(block, centers, block_info=None):
    if not isinstance(block, np.ndarray):  # CuPy rows: distances on their device
        _raise_if_nonfinite_on_device(block, _block_offset(block_info))
        xp = array_namespace(block)
        wide = getattr(xp, centers.dtype.name)  # the namespace's own float32/float64
        return center_distances(xp, xp.astype(block, wide, copy=False), centers)
    raise_if_nonfinite(block, _block_offset(block_info))
    if not len(block):  # scikit-learn refuses empty arrays
        return np.empty((0, len(centers)), dtype=centers.dtype)
    return euclidean_distances(block, centers)


def _raise_if_nonfinite_on_device(block, offset: int) -> None:
    xp = array_namespace(block)
    if not bool(xp.all(xp.isfinite(block))):
        raise_if_nonfinite(ArrayAPIOps.to_host(block), offset)
