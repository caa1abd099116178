"""Nearest-centroid assignment backends, looked up lazily by name.

A backend is a tiny object with one job: given the current centres, build a
*searcher* whose ``nearest(block)`` returns the index of the closest centre
for every row of a block. Sums, counts and inertia are accumulated by the
shared kernels in :mod:`kmeans_dask._kernels.block_kernels`, so every backend produces
statistics the same way. Backends are imported only when used, so a missing
optional dependency (faiss, cupy) fails at that point with the fix in the
message, never at ``import kmeans_dask``.
"""

from __future__ import annotations

import importlib
from typing import Protocol

import numpy as np

_REGISTRY: dict[str, tuple[str, str, str]] = {
    # name: (module, class, pip extra that provides it)
    "numpy": ("kmeans_dask.backends.numpy_blas", "NumpyBackend", ""),
    "faiss-cpu": ("kmeans_dask.backends.faiss_cpu", "FaissCPUBackend", "faiss-cpu"),
    # Approximate searches over the centres, for large k (assign="ivf"/"hnsw").
    "ivf": ("kmeans_dask.backends.approximate", "IVFBackend", "faiss-cpu"),
    "hnsw": ("kmeans_dask.backends.approximate", "HNSWBackend", "faiss-cpu"),
}

#: Order in which ``backend="auto"`` tries backends for NumPy chunks. The
#: BLAS backend comes first because it measured faster than Faiss's flat
#: search on every shape we benchmark (see benchmarks/RESULTS.md).
_AUTO_ORDER_CPU = ("numpy", "faiss-cpu")

#: Exact backends a user chooses with ``backend=``.
BACKEND_NAMES = ("auto", "numpy", "faiss-cpu")
#: Assignment modes a user chooses with ``assign=``.
ASSIGN_MODES = ("exact", "ivf", "hnsw", "auto")
#: Lloyd variants a user chooses with ``algorithm=``.
ALGORITHMS = ("auto", "lloyd", "hamerly")
#: How iterations reach the workers, chosen with ``engine=``.
ENGINES = ("auto", "tasks", "actors")
#: Search specs whose searchers give the runner-up bound Hamerly's test needs.
_BOUNDED_SEARCHES = ("numpy",)


class Searcher(Protocol):
    """Finds the nearest centre of each row, for one fixed set of centres.

    A searcher may also offer ``assign_and_accumulate`` (see
    :meth:`~kmeans_dask.backends.numpy_blas.RowSearcher.assign_and_accumulate`),
    which the Lloyd pass then uses instead of searching and accumulating
    block by block itself.
    """

    #: Rows per call of :meth:`nearest` that keep scratch memory cache-sized.
    block_rows: int

    def nearest(self, block: np.ndarray) -> np.ndarray:
        """Return the int32 index of the nearest centre of each row."""


class Backend(Protocol):
    """Builds searchers over a set of centres."""

    name: str

    def searcher(self, centers: np.ndarray) -> Searcher:
        """Prepare a searcher for ``centers`` (k, d), in the data's dtype."""


def search_spec(name: str, options: dict | None = None) -> str:
    """A backend name with options, as one picklable string: ``"ivf:nlist=64,nprobe=8"``."""
    if not options:
        return name
    return name + ":" + ",".join(f"{key}={value}" for key, value in sorted(options.items()))


def _parse_spec(spec: str) -> tuple[str, dict]:
    name, _, text = spec.partition(":")
    options = {}
    for item in filter(None, text.split(",")):
        key, _, value = item.partition("=")
        options[key] = int(value) if value.lstrip("-").isdigit() else value
    return name, options


def get_backend(spec: str) -> Backend:
    """Return the backend for ``spec``: a registered name, optionally with options.

    ``"auto"`` picks the fastest exact backend; ``"ivf:nprobe=16"`` passes
    ``nprobe=16`` to the IVF backend (see :func:`search_spec`).

    Raises
    ------
    ValueError
        If the name is not a known backend, or an option is not one it takes.
    ImportError
        If the backend's optional dependency is not installed.
    """
    name, options = _parse_spec(spec)
    if name == "auto":
        name = resolve_auto()
    try:
        module_name, class_name, extra = _REGISTRY[name]
    except KeyError:
        raise ValueError(
            f"backend={name!r} is not a known backend; expected one of {sorted(BACKEND_NAMES)}"
        ) from None
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ImportError(
            f"backend={name!r} needs the package {extra!r}, which could not be imported "
            f"({exc}); install it with `pip install {extra}` or choose backend='numpy'"
        ) from exc
    try:
        return getattr(module, class_name)(**options)
    except TypeError as exc:
        raise ValueError(f"{name!r} does not take the options {options}: {exc}") from None


def resolve_auto() -> str:
    """The name ``backend="auto"`` stands for on this machine."""
    for name in _AUTO_ORDER_CPU:
        module_name = _REGISTRY[name][0]
        try:
            importlib.import_module(module_name)
        except ImportError:
            continue
        return name
    raise ImportError("no assignment backend could be imported")  # numpy always can


def resolve_search(
    backend: str, assign: str, options: dict | None, n_clusters: int, n_features: int
) -> str:
    """The search spec the Lloyd iterations use for ``backend`` and ``assign``.

    ``assign="exact"`` is the exact ``backend``; "ivf" and "hnsw" are the
    approximate searches over the centres, with ``options``; "auto" takes IVF
    only where it measured faster (large k, see
    :func:`kmeans_dask.backends.approximate.choose_assign_mode`).
    """
    exact = resolve_auto() if backend == "auto" else backend
    if assign == "auto":
        from kmeans_dask.backends.approximate import choose_assign_mode

        assign = choose_assign_mode(n_clusters, n_features)
    if assign == "exact":
        return exact
    spec = search_spec(assign, options)
    get_backend(spec)  # unknown options fail here, before any work
    return spec


def resolve_algorithm(algorithm: str, search: str) -> str:
    """When the Lloyd iterations keep Hamerly bounds (see :mod:`kmeans_dask._worker.bounds`).

    Returns
    -------
    str
        "off" (plain Lloyd), "always" (``algorithm="hamerly"``) or "settled"
        (``algorithm="auto"`` with the exact BLAS search: bounds once the
        centres move little).

    Raises
    ------
    ValueError
        If ``algorithm="hamerly"`` is asked for with a search that cannot
        provide the bounds (Faiss or an approximate assignment).
    """
    if algorithm == "lloyd":
        return "off"
    if search in _BOUNDED_SEARCHES:
        return "always" if algorithm == "hamerly" else "settled"
    if algorithm == "hamerly":
        raise ValueError(
            f"algorithm='hamerly' needs the exact BLAS search (backend='numpy', "
            f"assign='exact'), but the iterations would use {search!r}; use "
            "algorithm='lloyd' or 'auto' with this backend and assign mode"
        )
    return "off"


def check_backend_name(name: object) -> str:
    """Validate a backend name without importing anything."""
    if not isinstance(name, str) or name not in BACKEND_NAMES:
        raise ValueError(
            f"backend={name!r} is not a known backend; expected one of {sorted(BACKEND_NAMES)}"
        )
    return name
