"""kmeans_dask: k-means that scales from a laptop to an HPC cluster on Dask.

The public names are imported on first use, so Dask workers that only
unpickle the per-chunk tasks never import scikit-learn, rich or the CLI
(which keeps each worker process about 80 MiB smaller).
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

from kmeans_dask._version import __version__

if TYPE_CHECKING:
    from kmeans_dask._engine.pauses import WorkersPausedError
    from kmeans_dask._io.tables import read_table
    from kmeans_dask.estimator import KMeans, load

__all__ = ["KMeans", "WorkersPausedError", "__version__", "load", "read_table"]

_LAZY = {
    "KMeans": "kmeans_dask.estimator",
    "WorkersPausedError": "kmeans_dask._engine.pauses",
    "load": "kmeans_dask.estimator",
    "read_table": "kmeans_dask._io.tables",
}


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'kmeans_dask' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
