"""Which searches a fit uses, resolved from the estimator's parameters before any work."""

from __future__ import annotations

from typing import Any, NamedTuple

from kmeans_dask._engine.placement import device_ops
from kmeans_dask.backends import (
    get_backend,
    holds_rows,
    host_search,
    resolve_algorithm,
    resolve_auto,
    resolve_search,
)


class Searches(NamedTuple):
    backend: str
    """The exact search the client runs (the host's for a device backend)."""
    search: str
    """The Lloyd iterations' search."""
    bounds: str
    """When the iterations keep Hamerly bounds: "off", "always" or "settled"."""


def client_backend(backend: str) -> str:
    """The exact search the client runs for the ``backend`` parameter."""
    search = host_search(backend)
    return resolve_auto() if search == "auto" else search


def resolve_searches(params: dict[str, Any], n_features: int) -> Searches:
    """The searches of a fit with ``params`` on ``n_features`` columns.

    Raises
    ------
    ValueError
        Where the parameters contradict each other.
    ImportError
        Where the backend's library is missing (naming the extra to install).
    """
    backend = client_backend(params["backend"])
    get_backend(backend)
    search = resolve_search(
        backend, params["assign"], params["assign_options"], params["n_clusters"], n_features
    )
    if not holds_rows(params["backend"]):
        return Searches(
            backend, search, resolve_algorithm(params["algorithm"], search, exact=backend)
        )
    device_ops(params["backend"])  # its library is there
    if params["algorithm"] == "hamerly":
        raise ValueError(
            f"algorithm='hamerly' keeps bounds in host memory, but backend="
            f"{params['backend']!r} holds the rows on a device; use algorithm='auto' or "
            "'lloyd' with this backend"
        )
    return Searches(backend, search, "off")
