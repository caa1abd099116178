"""The estimator's streaming entry points as functions: one ``partial_fit``
step on a checked batch, and the batches (with their weights) of ``fit_stream``."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, NamedTuple

import numpy as np
from dask.base import get_scheduler
from sklearn.utils import check_random_state

from kmeans_dask._engine.client import active_client
from kmeans_dask._engine.pauses import watched_gather
from kmeans_dask._fit.batch_rows import DeviceRows, HostRows
from kmeans_dask._fit.searches import resolve_searches
from kmeans_dask._fit.streaming import StreamState, init_stream_state, minibatch_update
from kmeans_dask._io.chunk_files import zarr_rows
from kmeans_dask._io.inputs import (
    as_local_array,
    check_dask_array,
    is_dask_array,
    is_device_array,
    is_zarr_source,
    open_zarr,
    zarr_as_dask,
)

#: Inits that a stream replaces by k-means++ on its first batch.
_DISTRIBUTED_INITS = ("k-means||", "hybrid")


class StreamStep(NamedTuple):
    """The stream after one batch, and the batch under the updated centres."""

    stream: StreamState
    random_state: np.random.RandomState
    """The generator the next batch continues with."""
    labels: np.ndarray
    inertia: float


def stream_step(
    stream: StreamState | None,
    batch: np.ndarray,
    weights: np.ndarray | None,
    params: dict[str, Any],
    random_state: np.random.RandomState | None,
    first_row: int,
) -> StreamStep:
    """Apply one checked batch: initialise the stream on it (``stream`` None) or update it.

    ``random_state`` is the generator of the previous batches (None: a new
    one from ``params["random_state"]``); the first batch always starts a
    new one. ``first_row`` is the batch's first row in its stream, as
    messages name rows.
    """
    backend = resolve_searches(params, batch.shape[1]).backend
    if stream is None or random_state is None:
        random_state = check_random_state(params["random_state"])
    if stream is None:
        init = params["init"]
        if isinstance(init, str) and init in _DISTRIBUTED_INITS:
            init = "k-means++"
        stream, _ = init_stream_state(
            batch,
            weights,
            params["n_clusters"],
            random_state=random_state,
            init=init,
            backend=backend,
            first_row=first_row,
        )
    else:
        stream, _ = minibatch_update(
            stream,
            batch,
            weights,
            decay=params["decay"],
            reassignment_ratio=params["reassignment_ratio"],
            random_state=random_state,
            backend=backend,
            first_row=first_row,
        )
    rows = DeviceRows(batch) if is_device_array(batch) else HostRows(batch)
    labels, sq_dist = rows.nearest(stream.centers, backend)
    inertia = float(sq_dist.sum() if weights is None else np.dot(weights, sq_dist))
    return StreamStep(stream, random_state, labels, inertia)


def local_batch(X: Any) -> Any:
    """``as_local_array(X)``: a Dask batch computed, on the active client through
    :func:`~kmeans_dask._engine.pauses.watched_gather`, so a batch whose workers
    stay paused by their memory limit raises ``WorkersPausedError`` instead of hanging."""
    client = active_client()
    if not is_dask_array(X) or client is None or get_scheduler(collections=[X]) != client.get:
        return as_local_array(X)
    return watched_gather(client, client.compute(X))


def resumed_stream(centers: np.ndarray, counts: np.ndarray | None) -> StreamState:
    """A stream that carries on from fitted centres and their weights (zeros if unknown)."""
    counts = np.zeros(centers.shape[0]) if counts is None else counts
    return StreamState(centers, counts, n_seen=float(counts.sum()))


def stream_batches(
    batches: Any, sample_weights: Iterable | None, batch_size: int
) -> Iterator[tuple[Any, Any]]:
    """The ``(batch, weights)`` pairs of ``fit_stream``, weights None when not given.

    A Zarr array (or its path) is read ``batch_size`` rows at a time, its
    shape and dtype checked before any batch.

    Raises
    ------
    ValueError
        When ``sample_weights`` gives fewer or more arrays than there are
        batches (raised when the mismatch is reached).
    """
    if is_zarr_source(batches):
        array = open_zarr(batches)
        check_dask_array(zarr_as_dask(array))
        rows = zarr_rows(array)
        batches = (
            rows[start : start + batch_size] for start in range(0, array.shape[0], batch_size)
        )
    if sample_weights is None:
        yield from ((batch, None) for batch in batches)
        return
    weights = iter(sample_weights)
    missing = object()
    for position, batch in enumerate(batches):
        weight = next(weights, missing)
        if weight is missing:
            raise ValueError(
                f"sample_weights gave {position} arrays but batches more; give one "
                "weight array per batch"
            )
        yield batch, weight
    if next(weights, missing) is not missing:
        raise ValueError(
            "sample_weights gave more arrays than batches; give one weight array per batch"
        )
