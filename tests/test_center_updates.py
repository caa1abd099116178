"""The update step's kernels: means as NumPy rounds them, exact squared moves."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from kmeans_dask._fit.update import center_moves, center_shift, new_centers
from kmeans_dask._worker.results import ClusterStats


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_new_centres_are_the_float64_means_rounded_once(dtype):
    rng = np.random.default_rng(0)
    old = rng.standard_normal((50, 7)).astype(dtype)
    counts = rng.integers(0, 4, 50).astype(np.float64) * 0.75
    sums = rng.standard_normal((50, 7)) * counts[:, None] * 3.0
    stats = ClusterStats(sums, counts, 0.0)

    centers = new_centers(stats, old, None, np.empty(0, np.int64))

    expected = old.astype(np.float64)
    filled = counts > 0
    expected[filled] = sums[filled] / counts[filled, None]
    assert centers.dtype == dtype
    assert_array_equal(centers, expected.astype(dtype))
    assert_array_equal(centers[~filled], old[~filled])  # a cluster without weight stays
    assert (~filled).any() and filled.any()


def test_center_moves_are_exact_float64_squared_distances():
    rng = np.random.default_rng(1)
    old = rng.standard_normal((40, 9)).astype(np.float32)
    new = (old + rng.standard_normal((40, 9)) * 1e-3).astype(np.float32)
    new[3] = old[3]

    moves = center_moves(old, new)

    difference = new.astype(np.float64) - old.astype(np.float64)  # exact for float32
    assert_allclose(moves, (difference**2).sum(axis=1), rtol=1e-14)
    assert moves[3] == 0.0
    assert center_shift(old, new) == pytest.approx(moves.sum(), rel=1e-15)
    assert center_shift(new, new) == 0.0
