"""Nearest-centroid assignment backends, looked up lazily by name.

A backend is a tiny object with one job: given the current centres, build a
*searcher* whose ``nearest(block)`` returns the index of the closest centre
for every row of a block. Sums, counts and inertia are accumulated by the
shared kernels in :mod:`kmeans_dask._kernels`, so every backend produces
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
}

#: Order in which ``backend="auto"`` tries backends for NumPy chunks. The
#: BLAS backend comes first because it measured faster than Faiss's flat
#: search on every shape we benchmark (see benchmarks/RESULTS.md).
_AUTO_ORDER_CPU = ("numpy", "faiss-cpu")

BACKEND_NAMES = ("auto", *_REGISTRY)


class Searcher(Protocol):
    """Finds the nearest centre of each row, for one fixed set of centres."""

    #: Rows per call of :meth:`nearest` that keep scratch memory cache-sized.
    block_rows: int

    def nearest(self, block: np.ndarray) -> np.ndarray:
        """Return the int32 index of the nearest centre of each row."""


class Backend(Protocol):
    """Builds searchers over a set of centres."""

    name: str

    def searcher(self, centers: np.ndarray) -> Searcher:
        """Prepare a searcher for ``centers`` (k, d), in the data's dtype."""


def get_backend(name: str) -> Backend:
    """Return the backend registered as ``name`` ("auto" picks one).

    Raises
    ------
    ValueError
        If ``name`` is not a known backend.
    ImportError
        If the backend's optional dependency is not installed.
    """
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
    return getattr(module, class_name)()


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


def check_backend_name(name: object) -> str:
    """Validate a backend name without importing anything."""
    if not isinstance(name, str) or name not in BACKEND_NAMES:
        raise ValueError(
            f"backend={name!r} is not a known backend; expected one of {sorted(BACKEND_NAMES)}"
        )
    return name
