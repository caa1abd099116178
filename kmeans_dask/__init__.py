"""kmeans_dask: k-means that scales from a laptop to an HPC cluster on Dask."""

from kmeans_dask._persistence import load
from kmeans_dask._version import __version__
from kmeans_dask.estimator import KMeans

__all__ = ["KMeans", "__version__", "load"]
