"""Idle threads search blocks of the passes still under way: every block once, the same results."""

from __future__ import annotations

import contextvars
import logging
import threading
from contextlib import contextmanager

import dask.array as da
import numpy as np
import pytest
from distributed import Client, LocalCluster
from numpy.testing import assert_array_equal

import kmeans_dask._worker.host_ops as host_ops_module
from kmeans_dask import KMeans
from kmeans_dask._worker.shared_blocks import (
    SharedBlocks,
    help_open_searches,
    host_call,
    shared_blocks,
)


def test_the_owner_claims_from_the_front_in_runs_and_helpers_from_the_back():
    searched = []
    blocks = SharedBlocks(40, searched.append)
    assert blocks.claim(0, most=40) == 10  # a quarter of the unclaimed blocks
    assert blocks.help_once() and blocks.help_once()
    assert searched == [39, 38]
    assert blocks.claim(10, most=3) == 3
    assert blocks.claim(13, most=40) == 6  # (38 - 13) // 4
    while blocks.help_once():
        pass
    assert searched == list(range(39, 18, -1))
    assert blocks.claim(19, most=40) == 0  # a helper's, already searched
    assert blocks.unclaimed() == 0


def test_a_helpers_error_is_raised_by_the_owner_when_it_reaches_a_helped_block():
    def search(index: int) -> None:
        raise MemoryError(f"block {index}")

    blocks = SharedBlocks(8, search)
    assert blocks.claim(0, most=1) == 1
    assert blocks.help_once()  # block 7 fails
    assert not blocks.help_once() and blocks.unclaimed() == 0  # nobody helps a failed pass
    with pytest.raises(MemoryError, match="block 7"):
        for index in range(1, 8):
            blocks.claim(index, most=1)


def test_closing_waits_for_the_blocks_helpers_are_searching_and_stops_new_claims():
    started, release = threading.Event(), threading.Event()

    def search(index: int) -> None:
        started.set()
        release.wait(10)

    blocks = SharedBlocks(4, search)
    helper = threading.Thread(target=blocks.help_once)
    helper.start()
    assert started.wait(10)
    closer = threading.Thread(target=blocks.close)
    closer.start()
    closer.join(0.2)
    assert closer.is_alive()  # still waiting for the helper's block
    release.set()
    closer.join(10)
    helper.join(10)
    assert not closer.is_alive() and not blocks.help_once()


def test_idle_jobs_help_their_calls_pass_with_most_blocks_left_until_none_is_left():
    searched: list[tuple[str, int]] = []
    with (
        host_call(),
        shared_blocks(6, lambda index: searched.append(("small", index))) as small,
        shared_blocks(12, lambda index: searched.append(("large", index))),
    ):
        assert small.claim(0, most=1) == 1
        help_open_searches()
    assert sorted(searched) == sorted(
        [("small", index) for index in range(1, 6)] + [("large", index) for index in range(12)]
    )
    assert searched[0] == ("large", 11)
    with host_call():
        help_open_searches()  # nothing open: returns at once


def test_only_the_jobs_of_the_same_host_call_help_and_none_outside_one():
    searched = []
    with shared_blocks(4, searched.append) as outside:
        assert outside is None  # a task, a fit without Dask: nobody would help
    with host_call(), shared_blocks(1, searched.append) as one_block:
        assert one_block is None  # nothing to share
    with host_call(), shared_blocks(4, searched.append) as blocks:
        assert blocks is not None
        with host_call():  # another call's idle job
            help_open_searches()
        contextvars.Context().run(help_open_searches)  # outside any call
        assert searched == []
        help_open_searches()
    assert searched == [3, 2, 1, 0]


@contextmanager
def _helped_first(n_blocks, search):
    """shared_blocks, whose last third a helper has searched before the owner starts."""
    with host_call(), shared_blocks(n_blocks, search) as blocks:
        for _ in range(n_blocks // 3):
            blocks.help_once()
        yield blocks


@pytest.mark.parametrize(
    ("n_clusters", "n_features", "dtype"),
    [(40, 24, np.float32), (40, 24, np.float64), (3, 3, np.float32), (700, 24, np.float32)],
    ids=["fused-float32", "fused-float64", "columns-small", "columns-large"],
)
@pytest.mark.parametrize("with_sums", [True, False])
@pytest.mark.parametrize("weighted", [False, True])
def test_helped_passes_give_the_results_of_unhelped_ones_bit_for_bit(
    monkeypatch, n_clusters, n_features, dtype, with_sums, weighted
):
    rng = np.random.default_rng(3)
    data = rng.normal(size=(20_000, n_features)).astype(dtype)
    weights = rng.uniform(0.5, 2.0, len(data)) if weighted else None
    centers = data[:: len(data) // n_clusters][:n_clusters].astype(np.float64)

    def run(threshold, sharing):
        monkeypatch.setattr(host_ops_module, "MIN_SHARED_BLOCK_FLOPS", threshold)
        monkeypatch.setattr(host_ops_module, "shared_blocks", sharing)
        sums = np.zeros(centers.shape) if with_sums else None
        counts = np.zeros(n_clusters) if with_sums else None
        labels, sq_dist, inertia = host_ops_module._nearest_with_sq_dist(
            data, weights, centers, "numpy", sums, counts
        )
        return labels, sq_dist, inertia, sums, counts

    alone = run(1 << 62, shared_blocks)
    helped = run(1, _helped_first)
    for expected, actual in zip(alone, helped, strict=True):
        assert_array_equal(actual, expected)


def test_a_fit_whose_idle_worker_thread_helps_is_the_fit_nobody_helps(monkeypatch):
    """One worker, two threads, a long chunk and short ones: the thread done first helps.

    The long chunk's owner waits (at most 10 s) for a helper before its first
    claim, so that helping does not depend on how the threads happen to run.
    """
    rng = np.random.default_rng(8)
    X = rng.normal(size=(30_000, 64)).astype(np.float32)
    data = da.from_array(X, chunks=((24_000, 2_000, 2_000, 2_000), 64))
    init = X[:: len(X) // 400][:400]
    helped = []
    a_block_helped = threading.Event()
    real_help_once, real_claim = SharedBlocks.help_once, SharedBlocks.claim

    def counted_help_once(self):
        searched = real_help_once(self)
        helped.append(searched)
        if searched:
            a_block_helped.set()
        return searched

    def claim_once_helped(self, index, most):
        if index == 0 and self.unclaimed() >= 10:  # the long chunk's pass
            a_block_helped.wait(10)
        return real_claim(self, index, most)

    monkeypatch.setattr(SharedBlocks, "help_once", counted_help_once)
    monkeypatch.setattr(SharedBlocks, "claim", claim_once_helped)
    with (
        LocalCluster(
            n_workers=1,
            threads_per_worker=2,
            processes=False,
            dashboard_address=None,
            silence_logs=logging.ERROR,
        ) as cluster,
        Client(cluster) as client,
    ):
        data = client.persist(data)
        fits = {}
        for threshold in (1 << 62, 1):
            monkeypatch.setattr(host_ops_module, "MIN_SHARED_BLOCK_FLOPS", threshold)
            fit = KMeans(400, init=init, max_iter=3, tol=0, assign="exact").fit(data)
            fits[threshold] = fit.cluster_centers_, np.asarray(fit.labels_), fit.inertia_
    assert any(helped)  # the idle thread searched blocks of the long chunk
    (centers, labels, inertia), (helped_centers, helped_labels, helped_inertia) = fits.values()
    assert_array_equal(helped_centers, centers)
    assert_array_equal(helped_labels, labels)
    assert helped_inertia == inertia


def test_a_helped_ivf_pass_keeping_candidates_is_the_unhelped_one(monkeypatch):
    from kmeans_dask._worker.chunks import make_chunk
    from kmeans_dask._worker.host_ops import host_ops
    from kmeans_dask.backends import approximate

    monkeypatch.setattr(approximate, "_BLOCK_ROWS", 1000)  # 12 blocks in the chunk
    rng = np.random.default_rng(4)
    rows = rng.normal(size=(11_500, 12)).astype(np.float32)
    chunk = make_chunk(rows, None, 0, np.float32, host_ops())
    centers = rows[::23][:500].astype(np.float64)

    def run(sharing):
        monkeypatch.setattr(host_ops_module, "shared_blocks", sharing)
        result, candidates = host_ops().pass_keeping_candidates(chunk, centers, "ivf", 8)
        stats = result.stats
        return (
            result.labels,
            candidates.ids,
            candidates.order,
            stats.sums,
            stats.counts,
            stats.inertia,
        )

    alone, helped = run(shared_blocks), run(_helped_first)
    for expected, actual in zip(alone, helped, strict=True):
        assert_array_equal(actual, expected)
