"""Nearest-centroid assignment backends, looked up lazily by name.

A backend is a tiny object with one job: given the current centres, build a
*searcher* whose ``nearest(block)`` returns the index of the closest centre
for every row of a block. Sums, counts and inertia are accumulated by the
shared kernels in :mod:`kmeans_dask._kernels.block_kernels`, so every backend produces
statistics the same way. Backends are imported only when used, so a missing
optional dependency (faiss, faiss with GPU support, cupy) fails at that point with the fix in the
message, never at ``import kmeans_dask``.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Protocol

import numpy as np


@dataclass(frozen=True)
class BackendInfo:
    """Where a search lives and what its searchers can do besides ``nearest``."""

    module: str
    cls: str
    extra: str
    """The pip extra (or package) that provides it; empty when always installed."""
    exact: bool
    """Exact search (chosen with ``backend=``) or approximate (``assign=``)."""
    runner_up: bool = False
    """Its searchers offer ``nearest_two``, the runner-up bound Hamerly's test needs."""
    on_gpu: bool = False
    """It searches on a GPU: chosen by name only, never by ``"auto"``."""
    holds_rows: bool = False
    """A device backend: ``cls`` is the :class:`~kmeans_dask._worker.ops.ChunkOps`
    that hold the chunks' rows in the device's memory and search them there;
    what the client itself searches (k-means|| candidates, ``predict`` of
    NumPy rows) uses the host's ``"auto"``."""


#: Every search, by name: the one place backend names are kept.
REGISTRY: dict[str, BackendInfo] = {
    "numpy": BackendInfo(
        "kmeans_dask.backends.numpy_blas",
        "NumpyBackend",
        "",
        exact=True,
        runner_up=True,
    ),
    "faiss-cpu": BackendInfo(
        "kmeans_dask.backends.faiss_cpu", "FaissCPUBackend", "faiss-cpu", exact=True
    ),
    "faiss-gpu": BackendInfo(
        "kmeans_dask.backends.faiss_gpu",
        "FaissGPUBackend",
        "faiss-gpu-cu12",
        exact=True,
        on_gpu=True,
    ),
    "cupy": BackendInfo(
        "kmeans_dask._worker.cupy_ops",
        "CuPyOps",
        "kmeans_dask[gpu]",
        exact=True,
        holds_rows=True,
    ),
    # Approximate searches over the centres, for large k (assign="ivf"/"hnsw").
    "ivf": BackendInfo("kmeans_dask.backends.approximate", "IVFBackend", "faiss-cpu", exact=False),
    "hnsw": BackendInfo(
        "kmeans_dask.backends.approximate", "HNSWBackend", "faiss-cpu", exact=False
    ),
    # IVF, then each row among the centres nearest to its previous one (assign="auto").
    "candidates": BackendInfo(
        "kmeans_dask.backends.approximate", "CandidateBackend", "faiss-cpu", exact=False
    ),
}

#: Order in which ``backend="auto"`` tries backends for NumPy chunks. The
#: BLAS backend comes first because it measured faster than Faiss's flat
#: search on every shape we benchmark (see benchmarks/RESULTS.md).
_AUTO_ORDER_CPU = tuple(
    name for name, info in REGISTRY.items() if info.exact and not (info.holds_rows or info.on_gpu)
)

#: Exact backends a user chooses with ``backend=``.
BACKEND_NAMES = ("auto", *(name for name, info in REGISTRY.items() if info.exact))
#: Assignment modes a user chooses with ``assign=``.
ASSIGN_MODES = ("exact", *(name for name, info in REGISTRY.items() if not info.exact), "auto")
#: Lloyd variants a user chooses with ``algorithm=``.
ALGORITHMS = ("auto", "lloyd", "hamerly")
#: How iterations reach the workers, chosen with ``engine=``.
ENGINES = ("auto", "tasks", "actors")


class Searcher(Protocol):
    """Finds the nearest centre of each row, for one fixed set of centres.

    A searcher may also offer ``nearest_two`` for Hamerly bounds (its
    :class:`BackendInfo` declares ``runner_up``) and whole-chunk passes
    (``assign_and_accumulate``, ``bounded_pass``, see
    :class:`~kmeans_dask.backends.numpy_blas.RowSearcher`) where it declares
    ``fused_passes``: the Lloyd pass then uses those instead of searching and
    accumulating block by block itself.

    A prepared searcher is shared by every thread of its process
    (:mod:`kmeans_dask._worker.searchers`): its methods must be safe to call
    from several threads at once (no shared scratch buffers).
    """

    #: Whether whole-chunk compiled passes are offered (declared, never probed).
    fused_passes: bool

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
    info = _info(name)
    try:
        module = importlib.import_module(info.module)
    except ImportError as exc:
        raise ImportError(
            f"backend={name!r} needs the package {info.extra!r}, which could not be imported "
            f"({exc}); install it with `pip install {info.extra}` or choose backend='numpy'"
        ) from exc
    try:
        return getattr(module, info.cls)(**options)
    except TypeError as exc:
        raise ValueError(f"{name!r} does not take the options {options}: {exc}") from None


def _info(name: str) -> BackendInfo:
    try:
        return REGISTRY[name]
    except KeyError:
        raise ValueError(
            f"backend={name!r} is not a known backend; expected one of {sorted(BACKEND_NAMES)}"
        ) from None


def search_capabilities(spec: str) -> BackendInfo:
    """What the searchers of ``spec`` (a name with options, or "auto") can do."""
    name = _parse_spec(spec)[0]
    return _info(resolve_auto() if name == "auto" else name)


def resolve_auto() -> str:
    """The name ``backend="auto"`` stands for on this machine."""
    for name in _AUTO_ORDER_CPU:
        try:
            importlib.import_module(REGISTRY[name].module)
        except ImportError:
            continue
        return name
    raise ImportError("no assignment backend could be imported")  # numpy always can


def resolve_search(
    backend: str, assign: str, options: dict | None, n_clusters: int, n_features: int
) -> str:
    """The search spec the Lloyd iterations use for ``backend`` and ``assign``.

    ``assign="exact"`` is the exact ``backend``; "ivf" and "hnsw" are the
    approximate searches over the centres, with ``options`` ("candidates": IVF,
    then each row among its previous centre's neighbours); "auto" takes "candidates"
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


def closing_search(search: str, n_clusters: int) -> str:
    """The search of a run's last Lloyd iteration (the one ``max_iter`` ends).

    An IVF search whose ``nprobe`` was left to the default probes more lists
    there (12 instead of 8,
    :func:`~kmeans_dask.backends.approximate.default_nprobe` with
    ``closing=True``): the final centres are the means of that iteration's
    assignment. So do the IVF searches of a "candidates" search (its rows
    without previous labels, or whose centre moved too far). Every other
    search, and an IVF search with an ``nprobe`` of the user's, is returned
    unchanged.

    Parameters
    ----------
    search : str
        The iterations' search spec (see :func:`search_spec`).
    n_clusters : int
        Number of centres ``k`` (for the default ``nlist``).
    """
    name, options = _parse_spec(search)
    if name not in ("ivf", "candidates") or "nprobe" in options:
        return search
    from kmeans_dask.backends.approximate import default_nlist, default_nprobe

    nlist = options.get("nlist", default_nlist(n_clusters))
    return search_spec(name, {**options, "nprobe": default_nprobe(nlist, closing=True)})


def candidate_search(search: str):
    """The :class:`~kmeans_dask.backends.approximate.CandidateBackend` of a "candidates"
    search spec, else None."""
    if _parse_spec(search)[0] != "candidates":
        return None
    return get_backend(search)


def resolve_algorithm(
    algorithm: str, search: str, exact: str | None = None, *, exact_final: bool = False
) -> str:
    """When the Lloyd iterations keep Hamerly bounds (see :mod:`kmeans_dask._worker.bounds`).

    Parameters
    ----------
    algorithm : {"auto", "lloyd", "hamerly"}
        The estimator's parameter.
    search : str
        The iterations' search spec.
    exact : str, optional
        The fit's exact search, when ``search`` is approximate.
    exact_final : bool, default=False
        Whether the final pass searches with ``exact`` (else as ``search``).

    Returns
    -------
    str
        "off" (plain Lloyd), "always" (``algorithm="hamerly"``), "settled"
        (``algorithm="auto"`` with the exact BLAS search: bounds once the
        centres move little), "closing" (``algorithm="auto"`` with an
        approximate ``search``, an ``exact`` search that provides bounds and
        ``exact_final``: no bounds are kept, but the iteration ``max_iter``
        ends and those after an update that moved few centres search with
        ``exact``, so the final pass searches each row whose centre did not
        move among the moved centres alone) or "moved" (the same without
        ``exact_final``: no pass is made exact, but once an update moves
        very few centres, a pass searches each row whose centre did not move
        among the moved centres alone, with ``exact``, from the label the
        last, approximate pass kept).

    Raises
    ------
    ValueError
        If ``algorithm="hamerly"`` is asked for with a search that cannot
        provide the bounds (Faiss or an approximate assignment).
    """
    if algorithm == "lloyd":
        return "off"
    if search_capabilities(search).runner_up:
        return "always" if algorithm == "hamerly" else "settled"
    if algorithm == "hamerly":
        raise ValueError(
            f"algorithm='hamerly' needs the exact BLAS search (backend='numpy', "
            f"assign='exact'), but the iterations would use {search!r}; use "
            "algorithm='lloyd' or 'auto' with this backend and assign mode"
        )
    if exact is not None and search_capabilities(exact).runner_up:
        return "closing" if exact_final else "moved"
    return "off"


def backend_info(backend: str) -> BackendInfo:
    """The registry entry of ``backend`` (a name, with options or not; not "auto")."""
    return _info(_parse_spec(backend)[0])


def holds_rows(backend: str) -> bool:
    """Whether ``backend`` names a device that holds the chunks' rows (:class:`BackendInfo`)."""
    return backend != "auto" and backend_info(backend).holds_rows


def host_search(backend: str) -> str:
    """The exact search the client runs itself for ``backend``."""
    return "auto" if holds_rows(backend) else backend


def check_backend_name(name: object) -> str:
    """Validate a backend name without importing anything."""
    if not isinstance(name, str) or name not in BACKEND_NAMES:
        raise ValueError(
            f"backend={name!r} is not a known backend; expected one of {sorted(BACKEND_NAMES)}"
        )
    return name
