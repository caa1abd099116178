"""The IVF lists over the centres: coarse centroids, balanced lists, their means."""

from __future__ import annotations

import numpy as np
import pytest

from kmeans_dask.backends.ivf_lists import (
    LIST_CHOICES,
    balanced_lists,
    coarse_centroids,
    list_means,
    squared_distances,
)


def _lloyd_by_hand(centers: np.ndarray, coarse: np.ndarray, iterations: int) -> np.ndarray:
    """Plain Lloyd steps over the centres (float64 brute force; no group empties here)."""
    for _ in range(iterations):
        distances = ((centers[:, None, :] - coarse[None].astype(np.float64)) ** 2).sum(-1)
        lists = distances.argmin(axis=1)
        assert np.bincount(lists, minlength=len(coarse)).min() > 0
        coarse = np.stack([centers[lists == j].mean(axis=0) for j in range(len(coarse))])
    return coarse


def test_coarse_centroids_are_lloyd_steps_from_centres_drawn_with_the_seed():
    rng = np.random.default_rng(0)
    groups = 10.0 * rng.normal(size=(12, 8))
    centers = (groups[rng.integers(0, 12, 600)] + rng.normal(size=(600, 8))).astype(np.float32)
    coarse = coarse_centroids(centers, 12, iterations=4, seed=7)
    assert coarse.dtype == np.float32 and coarse.shape == (12, 8)
    drawn = centers[np.sort(np.random.default_rng(7).choice(600, size=12, replace=False))]
    expected = _lloyd_by_hand(centers.astype(np.float64), drawn, 4)
    np.testing.assert_allclose(coarse, expected, rtol=1e-5, atol=1e-4)
    np.testing.assert_array_equal(coarse, coarse_centroids(centers, 12, iterations=4, seed=7))
    assert not np.array_equal(coarse, coarse_centroids(centers, 12, iterations=4, seed=8))


def test_an_emptied_group_restarts_at_the_farthest_centre():
    """Duplicated centres draw duplicated centroids: all but the first of each value are
    left empty and restart at the centres farthest from their group's centroid."""
    rng = np.random.default_rng(1)
    values = rng.normal(size=(3, 4))
    centers = np.vstack([np.repeat(values, 30, axis=0), 50.0 + rng.normal(size=(4, 4))])
    coarse = coarse_centroids(centers.astype(np.float32), 8, iterations=1, seed=0)
    assert len({tuple(row) for row in coarse}) == 8  # no two centroids alike
    far = coarse[np.linalg.norm(coarse - 50.0, axis=1) < 10.0]
    assert len(far) >= 1  # the far centres got a centroid of their own


@pytest.mark.parametrize(
    ("nlist", "iterations", "message"),
    [(0, 5, "nlist must be in \\[1, 20\\]"), (21, 5, "got 21"), (4, 0, "iterations must be")],
)
def test_coarse_centroids_reject_bad_parameters(nlist, iterations, message):
    centers = np.random.default_rng(0).normal(size=(20, 3))
    with pytest.raises(ValueError, match=message):
        coarse_centroids(centers, nlist, iterations)


def test_lists_are_capped_when_one_coarse_centroid_is_nearest_to_all():
    """Centres on a sphere and a coarse centroid at its middle: no list takes them all."""
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(400, 32))
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)
    coarse = np.vstack([np.zeros(32), centers[:15] * 1.5])  # the middle one is nearest to all
    lists = balanced_lists(centers, coarse, 2.0)
    sizes = np.bincount(lists, minlength=16)
    assert sizes.max() <= np.ceil(2.0 * 400 / 16) and sizes.sum() == 400
    assert sizes[0] == sizes.max()  # the middle list is filled first, up to its cap


def test_squared_distances_are_the_expanded_expression_bit_for_bit():
    """Scored in place in the GEMM's output: the same values, without temporaries."""
    rng = np.random.default_rng(4)
    rows, others = rng.normal(size=(300, 37)), 3.0 * rng.normal(size=(500, 37))
    expanded = (
        np.einsum("ij,ij->i", rows, rows)[:, None]
        - 2.0 * rows @ others.T
        + np.einsum("ij,ij->i", others, others)
    )
    assert np.array_equal(squared_distances(rows, others), expanded)
    brute = ((rows[:, None, :] - others[None]) ** 2).sum(-1)
    np.testing.assert_allclose(expanded, brute, rtol=1e-9, atol=1e-9)


def test_list_means_are_each_lists_mean_and_keep_an_empty_lists_centroid():
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(50, 8)).astype(np.float32)
    lists = rng.choice([0, 1, 3, 4], size=50)  # list 2 is empty
    lists[-1] = 4  # the last list ends at the last centre
    coarse = rng.normal(size=(5, 8)).astype(np.float32)
    expected = coarse.copy()
    for list_no in (0, 1, 3, 4):
        expected[list_no] = centers[lists == list_no].astype(np.float64).mean(axis=0)
    means = list_means(centers, lists, coarse)
    assert means.dtype == np.float32
    np.testing.assert_allclose(means, expected, rtol=1e-6)
    np.testing.assert_array_equal(means[2], coarse[2])


def test_every_centre_goes_to_one_of_its_nearest_lists_even_when_they_are_full():
    """A centre sent beyond its nearest lists is found by few of its rows (they
    probe the lists nearest to them): with nlist = 2 sqrt(k) at k = 4096 such
    centres had been left without rows by the search and relocated, and the
    final centres' inertia was 0.57-0.87% above exact Lloyd's, not 0.04-0.05%."""
    rng = np.random.default_rng(3)
    centers = rng.normal(size=(600, 16))
    coarse = np.vstack([np.zeros((1, 16)), 4.0 * rng.normal(size=(31, 16))])
    ratio = 1.0  # room for 19 centres per list: the middle lists overflow
    lists = balanced_lists(centers, coarse, ratio)
    distances = ((centers[:, None, :] - coarse[None]) ** 2).sum(-1)
    nearest_lists = np.argsort(distances, axis=1, kind="stable")[:, :LIST_CHOICES]
    assert all(lists[i] in nearest_lists[i] for i in range(len(centers)))
    sizes = np.bincount(lists, minlength=len(coarse))
    assert sizes.max() > np.ceil(ratio * 600 / 32)  # some centres went over the cap
    overflowed = np.flatnonzero(lists == nearest_lists[:, 0])
    assert overflowed.size  # those to their nearest list
