"""The client's update step in one pass over the centres: the new means, and how far each moved.

The update runs between two passes while every worker waits for the new
centres. Written with NumPy it made float64 copies of the ``k x d`` centres
(16 MiB each at k = 16384, d = 128, every page of them faulted in afresh)
and a mixed-dtype ``einsum``: 30-40 ms per iteration on an Intel Xeon at
that size, against 6 ms for these loops (RESULTS.md, "Less waiting
between passes").
"""

from __future__ import annotations

import numpy as np

from kmeans_dask._kernels.shared_cache import cached_njit


@cached_njit(nogil=True)
def cluster_means(sums, counts, old_centers, out):
    """``out[c] = sums[c] / counts[c]`` where ``counts[c] > 0``, else ``old_centers[c]``.

    The quotient is taken in float64 and rounded once to ``out``'s dtype, as
    ``(sums / counts[:, None]).astype(out.dtype)`` would give it.
    """
    for c in range(sums.shape[0]):
        count = counts[c]
        if count > 0:
            for j in range(sums.shape[1]):
                out[c, j] = sums[c, j] / count
        else:
            for j in range(sums.shape[1]):
                out[c, j] = old_centers[c, j]


@cached_njit(nogil=True)
def squared_moves(previous, centers, out):
    """``out[c]``: the squared distance from ``previous[c]`` to ``centers[c]``, in float64.

    Each difference is taken after widening both values to float64 (exact
    for float32 centres).
    """
    for c in range(centers.shape[0]):
        total = 0.0
        for j in range(centers.shape[1]):
            difference = np.float64(centers[c, j]) - np.float64(previous[c, j])
            total += difference * difference
        out[c] = total
