"""Resolve a fit before any work: the estimator's parameters and checked data
as the :class:`~kmeans_dask._fit.cluster_fit.FitRequest` the cluster runs."""

from __future__ import annotations

import os
from typing import Any

from kmeans_dask._fit.cluster_fit import FitRequest
from kmeans_dask._fit.hybrid_init import resolve_sample_size
from kmeans_dask._fit.searches import resolve_searches
from kmeans_dask._fit.seeds import fit_seeds
from kmeans_dask._fit.validation import check_init_array, check_n_samples
from kmeans_dask._io.inputs import check_sample_weight
from kmeans_dask._io.output_paths import check_writable


def resolve_fit(
    X: Any,
    zarr_array: Any | None,
    sample_weight: Any,
    params: dict[str, Any],
    checkpoint: str | os.PathLike | None,
) -> FitRequest:
    """Everything :func:`~kmeans_dask._fit.cluster_fit.fit_on_cluster` needs.

    ``X`` has passed :func:`~kmeans_dask._io.inputs.check_input` and
    ``params`` :func:`~kmeans_dask._fit.validation.validate_params`; the rest
    (rows against ``n_clusters``, the ``init`` array, the weights, the
    hybrid sample size, the checkpoint path) is checked here.

    Raises
    ------
    ValueError, TypeError
        Naming the argument at fault, before any work.
    """
    n_samples, n_features = X.shape
    n_clusters, init = params["n_clusters"], params["init"]
    check_n_samples(n_samples, n_clusters)
    if isinstance(init, str) and init == "hybrid":
        resolve_sample_size(params["init_sample_size"], n_samples, n_clusters)
    init_centers = None
    if not isinstance(init, str):
        init_centers = check_init_array(init, n_clusters, n_features, X.dtype)
    searches = resolve_searches(params, n_features)
    if checkpoint is not None:
        check_writable(checkpoint, "checkpoint")
    return FitRequest(
        X=X,
        zarr_array=zarr_array,
        weights=check_sample_weight(sample_weight, n_samples),
        params=params,
        init_centers=init_centers,
        seeds=fit_seeds(params["random_state"], params["n_init"], checkpoint),
        backend=searches.backend,
        search=searches.search,
        final_search=searches.final_search,
        bounds=searches.bounds,
        checkpoint=checkpoint,
    )
