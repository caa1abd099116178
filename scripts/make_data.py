"""Write synthetic Gaussian blobs to a Zarr array, chunk by chunk (any size).

Same as ``kmeans-dask make-data``::

    python scripts/make_data.py data.zarr -n 10_000_000 -d 32 -k 64
"""

import sys

from kmeans_dask.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["make-data", *sys.argv[1:]]))
