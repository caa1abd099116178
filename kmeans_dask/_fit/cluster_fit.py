"""Fitting on the cluster: from checked data and resolved parameters to a Lloyd result.

:func:`fit_on_cluster` opens (or finds) the client, places the rows on the
workers once, builds the plan of the runs (seeds, initialisation, tolerance,
checkpoint identity), runs them and brings back the best run and its labels.
The rows are checked (finiteness, weights, magnitudes) by the fit's first
pass over them, before anything uses its result. The estimator only resolves what it is given
(:class:`FitRequest`) and sets its attributes from :class:`FitOutcome`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from functools import partial
from typing import Any

import dask.array as da
import numpy as np
from array_api_compat import array_namespace
from distributed import Client, Future

from kmeans_dask._engine.client import active_client, client_for_fit
from kmeans_dask._engine.pauses import watched_gather, watched_wait
from kmeans_dask._engine.placement import DistributedData, distribute, fits_in_memory
from kmeans_dask._fit.history import LloydResult
from kmeans_dask._fit.hybrid_init import init_hybrid, resolve_sample_size
from kmeans_dask._fit.initialization import init_kmeans_parallel, init_kmeans_plusplus, init_random
from kmeans_dask._fit.progress import LloydProgress
from kmeans_dask._fit.runs import RunPlan, run_all, surviving_worker_loss
from kmeans_dask._fit.validation import raise_for_summary
from kmeans_dask._io.fingerprint import fit_fingerprint
from kmeans_dask._io.inputs import is_dask_array, is_in_memory
from kmeans_dask._io.output_paths import resume_hint
from kmeans_dask._worker.results import ChunkSummary, statistics_nbytes

#: Parameters that do not change a fit's result, so a checkpoint resumes
#: with other values of them: the engines are bit-identical, and max_iter
#: and tol only say where the runs stop (a checkpoint goes on to the new stop).
NOT_IN_IDENTITY = ("verbose", "engine", "max_iter", "tol")


@dataclass(frozen=True)
class FitRequest:
    """A fit as the estimator resolved it, before any work on the cluster."""

    X: Any
    """NumPy array, or Dask array with one column block (Zarr: over the store)."""
    zarr_array: Any | None
    """The Zarr array behind X, which the passes may stream from."""
    weights: Any | None
    params: dict[str, Any]
    """The estimator's validated parameters (``get_params``)."""
    init_centers: np.ndarray | None
    """The checked ``init`` array, or None for an initialisation method."""
    seeds: list[int]
    backend: str
    """The exact search the client runs (k-means|| candidates)."""
    search: str
    """The iterations' search."""
    final_search: str
    """The final pass's search (``backend`` unless the fit leaves it approximate)."""
    bounds: str
    """When the iterations keep Hamerly bounds (:mod:`kmeans_dask._fit.bounds_schedule`)."""
    checkpoint: Any | None


@dataclass(frozen=True)
class FitOutcome:
    result: LloydResult
    """The best run."""
    labels: Any | None
    """``labels_`` of persisted data (NumPy or Dask as X); None when it was streamed."""


def fit_on_cluster(request: FitRequest, report: Callable[[str], None]) -> FitOutcome:
    """Run the fit ``request`` describes on the active client or a local cluster."""
    params, X = request.params, request.X
    keep_lazy = active_client() is not None
    with client_for_fit(
        report,
        resume_hint=lambda: resume_hint(request.checkpoint),
        # Rows already in this process's memory stay there, fitted by worker threads.
        in_process=is_in_memory(X),
    ) as client:
        data = distribute(
            client,
            X,
            request.weights,
            stream_from=stream_source(client, X, request.zarr_array, params["persist"]),
            statistics_bytes=statistics_nbytes(params["n_clusters"], X.shape[1]),
            engine=params["engine"],
            backend=params["backend"],
            validate=partial(raise_for_summary, dtype=np.dtype(X.dtype)),
            # The digest identifies the data in checkpoints only.
            with_digest=request.checkpoint is not None,
            labels_to_client=not (is_dask_array(X) and keep_lazy),
        )
        try:
            plan = run_plan(client, data, request, report)
            progress = LloydProgress(params["max_iter"], params["init"])
            with progress if params["verbose"] else nullcontext() as bar:
                best = run_all(
                    client,
                    data,
                    plan,
                    report=report,
                    on_iteration=bar.update if params["verbose"] else None,
                )
            labels = labels_from(client, best, X, data, keep_lazy) if data.persisted else None
        finally:
            data.release()
    return FitOutcome(best, labels)


def stream_source(client: Client, X: Any, zarr_array: Any | None, persist: bool | None):
    """The Zarr array to stream from, or None to persist the data."""
    if persist is False and zarr_array is None:
        raise ValueError(
            "persist=False streams the data from its store, so X must be a Zarr array "
            f"or a path to one; got {type(X).__name__}"
        )
    if zarr_array is None or persist:
        return None
    if persist is None and fits_in_memory(client, X.nbytes):
        return None
    return zarr_array


def run_plan(
    client: Client,
    data: DistributedData,
    request: FitRequest,
    report: Callable[[str], None],
) -> RunPlan:
    """The runs to make: seeds, initialisation, tolerance, and the fit's identity.

    The data check is made by the fit's first pass; only a checkpoint, whose
    identity must be known before that pass, has it made in a pass of its own.
    """
    params = request.params

    def initialize(seed: int) -> np.ndarray:
        if request.init_centers is not None:
            return request.init_centers
        start = time.perf_counter()
        centers = initial_centers(client, data, seed, request.backend, params)
        report(f"Initialization complete: {params['init']} in {time.perf_counter() - start:.3f} s")
        return centers

    fingerprint = None
    if request.checkpoint is not None:
        summary = surviving_worker_loss(client, data, lambda: data.summary(client), report)
        fingerprint = fit_identity(params, summary, data)
    return RunPlan(
        seeds=request.seeds,
        initialize=initialize,
        max_iter=params["max_iter"],
        tol=partial(absolute_tol, client, data, params["tol"]),
        backend=request.backend,
        search=request.search,
        final_search=request.final_search,
        bounds=request.bounds if data.persisted else "off",
        fingerprint=fingerprint,
        checkpoint=request.checkpoint,
    )


def absolute_tol(client: Client, data: DistributedData, tol: float) -> float:
    """``tol`` times the data's mean column variance (as scikit-learn scales it)."""
    summary = data.summary(client)
    return float(np.mean(summary.column_m2 / summary.n_rows)) * tol


def fit_identity(params: dict[str, Any], summary: ChunkSummary, data: DistributedData) -> str:
    """The fingerprint a checkpoint must carry to be resumed by this fit."""
    identity = {k: v for k, v in params.items() if k not in NOT_IN_IDENTITY}
    if not isinstance(identity["random_state"], int | type(None)):
        identity["random_state"] = "seeded"  # the seeds themselves are compared
    return fit_fingerprint(
        {**identity, "data_digest": f"{summary.digest:016x}"},
        summary.n_rows,
        data.n_features,
        data.dtype,
    )


def initial_centers(
    client: Client, data: DistributedData, seed: int, backend: str, params: dict[str, Any]
) -> np.ndarray:
    """The centres ``params["init"]`` names, drawn from the distributed data."""
    init, n_clusters = params["init"], params["n_clusters"]
    if init == "k-means||":
        return init_kmeans_parallel(
            client,
            data,
            n_clusters,
            seed,
            oversampling_factor=params["oversampling_factor"],
            rounds=params["init_rounds"],
            backend=backend,
        )
    if init == "k-means++":
        return init_kmeans_plusplus(client, data, n_clusters, seed)
    if init == "hybrid":
        size = resolve_sample_size(params["init_sample_size"], data.n_samples, n_clusters)
        return init_hybrid(client, data, n_clusters, seed, sample_size=size, backend=backend)
    return init_random(client, data, n_clusters, seed)


def labels_from(
    client: Client, result: LloydResult, X: Any, data: DistributedData, keep_lazy: bool
) -> Any:
    """``labels_``: NumPy for NumPy input, else a Dask array chunked as X's rows."""
    if is_dask_array(X) and keep_lazy:
        # The labels stay on the workers, but no task of the fit may still
        # run when it returns: a client closed right after would be sent
        # their results (and the scheduler would log that it could not).
        watched_wait(client, result.labels)
        # CuPy rows keep their labels on the GPU: the blocks are of X's library.
        meta = array_namespace(X._meta).empty((0,), dtype=np.int32)
        labels = da.concatenate(
            [
                da.from_delayed(future, shape=(rows,), dtype=np.int32, meta=meta)
                for future, rows in zip(result.labels, data.row_chunks, strict=True)
            ]
        )
        # The fit left out X's empty blocks; give them back.
        return labels if labels.chunks == X.chunks[:1] else labels.rechunk(X.chunks[:1])
    parts = result.labels
    if parts and isinstance(parts[0], Future):
        parts = watched_gather(client, parts)
    labels = array_namespace(*parts).concat(parts) if parts else np.empty(0, np.int32)
    if is_dask_array(X):
        return da.from_array(labels, chunks=X.chunks[:1])
    return labels
