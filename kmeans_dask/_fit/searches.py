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

#: The ``assign_options`` key that makes an approximate fit's final pass exact
#: (default False: it searches as the iterations do).
EXACT_FINAL = "exact_final"


class Searches(NamedTuple):
    backend: str
    """The exact search the client runs (the host's for a device backend)."""
    search: str
    """The Lloyd iterations' search."""
    bounds: str
    """When the iterations keep Hamerly bounds: "off", "always", "settled", "closing" or
    "moved" (:func:`~kmeans_dask.backends.resolve_algorithm`)."""
    final_search: str
    """The final pass's search: ``backend``, or ``search`` without an exact final pass."""


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
    options = dict(params["assign_options"] or {})
    exact_final = options.pop(EXACT_FINAL, False)
    if not isinstance(exact_final, bool):
        raise TypeError(
            f"assign_options[{EXACT_FINAL!r}] must be True or False, got {exact_final!r}"
        )
    search = resolve_search(backend, params["assign"], options, params["n_clusters"], n_features)
    final_search = backend if exact_final else search
    if not holds_rows(params["backend"]):
        exact = None if search == backend else backend
        bounds = resolve_algorithm(params["algorithm"], search, exact, exact_final=exact_final)
        return Searches(backend, search, bounds, final_search)
    device_ops(params["backend"])  # its library is there
    if params["algorithm"] == "hamerly":
        raise ValueError(
            f"algorithm='hamerly' keeps bounds in host memory, but backend="
            f"{params['backend']!r} holds the rows on a device; use algorithm='auto' or "
            "'lloyd' with this backend"
        )
    return Searches(backend, search, "off", final_search)
