"""Shared fixtures: one LocalCluster for the session, small deterministic data."""

from __future__ import annotations

import gc
import os

# scikit-learn's check_array_api_input runs only when SciPy's array API
# support is switched on, which must happen before SciPy is imported.
os.environ.setdefault("SCIPY_ARRAY_API", "1")

import dask
import numpy as np
import pytest
from distributed import Client, LocalCluster
from sklearn.datasets import make_blobs

# No statistical profiler in the tests' workers: it calls sys._current_frames
# every 10 ms, which on CPython 3.11.7 (as in CI) can deadlock with
# a thread of the same process starting or ending (CPython gh-106883); in-process
# clusters share their process with the client's thread pools. It hung a test once.
dask.config.set({"distributed.worker.profile.enabled": False})


def pytest_collection_finish(session: pytest.Session) -> None:
    """Exempt what the imports and the collection made from later garbage collections.

    Numba, LLVM, Dask, scikit-learn and the test modules leave a few hundred
    thousand long-lived objects; every full collection (automatic, or a
    test's own ``gc.collect()``) would traverse them all again. Frozen, they
    stay alive as they would anyway, and collections look at newer objects only.
    """
    gc.collect()
    gc.freeze()


@pytest.fixture(scope="session")
def cluster():
    """Two single-threaded worker processes bound to 127.0.0.1."""
    with LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=":0",
    ) as cluster:
        yield cluster


@pytest.fixture
def client(cluster):
    """A client on the session cluster, set as the default for the test."""
    with Client(cluster) as client:
        yield client


@pytest.fixture
def chunk_and_centers():
    """A host chunk of 2,000 float32 rows around 64 centres in 6 features, and the centres."""
    from kmeans_dask._worker.host_ops import host_ops

    rng = np.random.default_rng(5)
    centers = rng.standard_normal((64, 6)).astype(np.float32)
    rows = (centers[rng.integers(0, 64, 2000)] + 0.3 * rng.standard_normal((2000, 6))).astype(
        np.float32
    )
    return host_ops().place(rows, None, 0, np.float32), centers


@pytest.fixture
def blobs():
    """3,000 rows, 5 features, 6 well separated clusters (float64)."""
    X, y = make_blobs(n_samples=3000, n_features=5, centers=6, cluster_std=1.0, random_state=0)
    return X, y


@pytest.fixture
def memo_hits(monkeypatch):
    """``memo_hits(memo)``: from now on, record whether each ``memo.take`` found a value."""

    def record(memo):
        hits = []
        take = memo.take

        def counting_take(chunk, tag):
            found = take(chunk, tag)
            hits.append(found is not None)
            return found

        monkeypatch.setattr(memo, "take", counting_take)
        return hits

    return record


class Recounts(list):
    """(added up from changes, counted afresh) statistics of passes, in order."""

    def assert_same(self) -> None:
        """Sums equal up to float64 rounding; counts (sent whole) and inertia equal."""
        for added, fresh in self:
            np.testing.assert_allclose(added.sums, fresh.sums, rtol=1e-11, atol=1e-9)
            np.testing.assert_array_equal(added.counts, fresh.counts)
            assert added.inertia == pytest.approx(fresh.inertia, rel=1e-12)


@pytest.fixture
def recounted(monkeypatch) -> Recounts:
    """After every pass whose chunks send changes, its statistics counted afresh from
    the labels it kept."""
    import kmeans_dask._fit.passes as passes
    from kmeans_dask._worker.results import combine_stats
    from kmeans_dask._worker.tasks import stats_of_kept_labels

    pairs = Recounts()
    original = passes.statistics_from_changes

    def recounting(client, data, task, centers, search, tag, *rest):
        stats = original(client, data, task, centers, search, tag, *rest)
        fresh = data.map_reduce(
            client, stats_of_kept_labels, combine_stats, centers, search, tag, name="recount"
        )
        pairs.append((stats, fresh))
        return stats

    monkeypatch.setattr(passes, "statistics_from_changes", recounting)
    return pairs
