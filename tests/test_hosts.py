"""Per-worker actors: results in chunk order, the tree of tree_reduce, errors as raised,
the final labels handed over from worker memory."""

from __future__ import annotations

import asyncio
import gc
import threading
import time

import dask.array as da
import numpy as np
import pytest
from distributed import Client, Future, LocalCluster
from numpy.testing import assert_array_equal

import kmeans_dask._worker.tasks as tasks_module
from kmeans_dask import KMeans
from kmeans_dask._engine.hosts import (
    ChunkHosts,
    HostLost,
    combine_in_tree,
    fits_hosts,
    reduction_tree,
)
from kmeans_dask._engine.mapreduce import (
    CLIENT_GATHER_BYTES,
    SPLIT_EVERY,
    tree_reduce,
    tree_reduce_future,
)
from kmeans_dask._worker.chunks import make_chunk
from kmeans_dask._worker.host_ops import host_ops
from kmeans_dask._worker.results import ClusterStats, combine_stats
from kmeans_dask._worker.tasks import chunk_labels, kept_labels, stats_keeping_labels

#: One value of this size is more than the client gathers: the hosts combine worker to worker.
LARGE = CLIENT_GATHER_BYTES + 1


def _first_value_and_worker(chunk):
    from distributed import get_worker

    return float(chunk[0]), get_worker().address


def _fail(chunk):
    raise ValueError(f"bad chunk starting with {chunk[0]}")


def test_hosts_map_over_every_chunk_in_order_on_the_worker_holding_it(client):
    chunks = [client.scatter(np.full(10, float(i))) for i in range(7)]
    holders = {key: sorted(addresses)[0] for key, addresses in client.who_has(chunks).items()}
    hosts = ChunkHosts(client, chunks)
    try:
        results = hosts.map(_first_value_and_worker)
    finally:
        hosts.close()
    assert [value for value, _ in results] == [float(i) for i in range(7)]
    assert [worker for _, worker in results] == [holders[c.key] for c in chunks]


def test_errors_inside_a_host_come_back_as_raised_without_waiting(client):
    chunks = [client.scatter(np.full(3, 5.0))]
    hosts = ChunkHosts(client, chunks)
    try:
        start = time.monotonic()
        with pytest.raises(ValueError, match=r"bad chunk starting with 5\.0"):
            hosts.map(_fail)
        assert time.monotonic() - start < 5  # not mistaken for a lost worker
    finally:
        hosts.close()


class _SilentHandle:
    """An ``Actor`` handle whose worker died: its calls never answer."""

    def __getattr__(self, method):
        return lambda *args: asyncio.get_running_loop().create_future()


class _FutureLostAfter:
    """A host's future that the scheduler reports lost ``seconds`` from now."""

    def __init__(self, seconds: float) -> None:
        self._lost_at = time.monotonic() + seconds

    @property
    def status(self) -> str:
        return "lost" if time.monotonic() >= self._lost_at else "finished"


@pytest.mark.parametrize("direct", [False, True])
def test_a_call_that_never_answers_ends_once_its_worker_is_reported_lost(
    client, monkeypatch, direct
):
    """A handle's call to a dead worker can wait for ever (and a direct call for the
    connect timeout): the client gives it up when the host's future is lost."""
    chunks = [client.scatter(np.full(3, 1.0))]
    hosts = ChunkHosts(client, chunks)
    futures = hosts._futures
    outcome = []

    def call():
        try:
            outcome.append(hosts.map(_first_value_and_worker))
        except Exception as exc:
            outcome.append(exc)

    try:
        hosts.direct = direct
        hosts._handles = [_SilentHandle()]
        monkeypatch.setattr(
            hosts, "_call_direct", lambda *args: asyncio.get_running_loop().create_future()
        )
        hosts._futures = [_FutureLostAfter(0.5)]
        waiting = threading.Thread(target=call, daemon=True)
        waiting.start()
        waiting.join(timeout=30)
        assert len(outcome) == 1, "the call still waits for the lost worker"
        assert isinstance(outcome[0], HostLost)
    finally:
        hosts._futures = futures
        hosts.close()


def test_combining_on_the_client_follows_the_tree_of_tree_reduce(client):
    rng = np.random.default_rng(0)
    parts = [
        ClusterStats(rng.normal(size=(4, 3)) * 10.0**p, rng.random(4), float(rng.random()))
        for p in rng.integers(-8, 8, size=21)
    ]
    local = combine_in_tree(combine_stats, parts)
    remote = tree_reduce(client, combine_stats, [client.scatter(p) for p in parts], name="t")
    np.testing.assert_array_equal(local.sums, remote.sums)
    np.testing.assert_array_equal(local.counts, remote.counts)
    assert local.inertia == remote.inertia
    scattered = client.scatter(parts, hash=False)  # held: scattered data has no recipe
    left = tree_reduce_future(client, combine_stats, scattered, name="t")
    assert isinstance(left, Future)
    np.testing.assert_array_equal(left.result().sums, remote.sums)
    assert left.result().inertia == remote.inertia


def test_hosts_only_when_the_gathered_statistics_stay_small():
    assert fits_hosts(8, 8 * 64 * 33)
    assert not fits_hosts(10_000, 8 * 1000 * 101)


def test_kept_labels_are_handed_over_once_then_computed_afresh():
    rng = np.random.default_rng(0)
    chunk = make_chunk(rng.normal(size=(500, 3)), None, 0, np.float64, host_ops())
    centers = rng.normal(size=(4, 3))
    expected_labels, expected_stats = chunk_labels(chunk, centers, "numpy")
    stats = stats_keeping_labels(chunk, centers, "numpy", None, "fit-1")
    assert_array_equal(stats.sums, expected_stats.sums)
    kept = tasks_module.LABELS.take(chunk, "fit-1")
    assert_array_equal(kept, expected_labels)
    tasks_module.LABELS.put(chunk, "fit-1", kept)
    assert kept_labels(chunk, centers, "numpy", "fit-1") is kept  # handed over, not recomputed
    # Nothing kept (or kept by another fit): the labels are computed afresh.
    assert_array_equal(kept_labels(chunk, centers, "numpy", "fit-1"), expected_labels)
    stats_keeping_labels(chunk, centers, "numpy", None, "fit-2")
    assert_array_equal(kept_labels(chunk, centers, "numpy", "fit-1"), expected_labels)
    assert len(tasks_module.LABELS) == 0


def test_final_pass_through_the_actors_keeps_the_labels_on_the_workers(blobs, memo_hits):
    handed_over = memo_hits(tasks_module.LABELS)
    X = da.from_array(blobs[0], chunks=600)
    with (
        LocalCluster(
            n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None
        ) as cluster,
        Client(cluster),
    ):
        fits = {
            # Stopped before converging, so the fit ends with its final pass.
            engine: KMeans(
                6, init="random", n_init=1, random_state=0, max_iter=1, engine=engine
            ).fit(X)
            for engine in ("actors", "tasks")
        }
        assert all(model.history_[-1].center_shift > 0 for model in fits.values())
        labels = {engine: model.labels_.compute() for engine, model in fits.items()}
        predicted = fits["actors"].predict(X).compute()
    assert handed_over == [True] * X.numblocks[0]  # the tasks path keeps nothing
    assert_array_equal(labels["actors"], labels["tasks"])
    assert_array_equal(labels["actors"], predicted)
    assert fits["actors"].inertia_ == fits["tasks"].inertia_
    gc.collect()
    assert len(tasks_module.LABELS) == 0


def _stats_of(chunk):
    """Statistics that depend on the chunk, with magnitudes that make the summation order show."""
    return ClusterStats(
        chunk[:12].reshape(4, 3) * 10.0 ** chunk[12], chunk[13:17].copy(), chunk[17]
    )


@pytest.mark.parametrize("placement", ["one worker", "alternating"])
@pytest.mark.parametrize("n_chunks", [1, 5, 8, 9, 21])
def test_hosts_combine_on_the_workers_in_the_tree_of_tree_reduce(client, n_chunks, placement):
    rng = np.random.default_rng(n_chunks)
    workers = sorted(client.scheduler_info()["workers"])
    arrays = [
        np.concatenate([rng.normal(size=12), [rng.integers(-8, 8)], rng.random(5)])
        for _ in range(n_chunks)
    ]
    chunks = [
        client.scatter(a, workers=[workers[0 if placement == "one worker" else i % 2]])
        for i, a in enumerate(arrays)
    ]
    hosts = ChunkHosts(client, chunks)
    answers = []
    call = hosts._call
    hosts._call = lambda *args, **kwargs: answers.append(call(*args, **kwargs)) or answers[-1]
    try:
        combined = hosts.map_reduce(_stats_of, combine_stats)
    finally:
        hosts.close()
    parts = [client.submit(_stats_of, chunk) for chunk in chunks]
    expected = tree_reduce(client, combine_stats, parts, name="t")
    assert_array_equal(combined.sums, expected.sums)
    assert_array_equal(combined.counts, expected.counts)
    assert combined.inertia == expected.inertia
    n_values = sum(len(per_host) for per_host in answers[0])
    if placement == "one worker":  # one value per group of the tree's first level
        assert n_values == (1 if n_chunks <= 8 else -(-n_chunks // 8))
    else:  # no group lives on one worker: every chunk's value crosses
        assert n_values == n_chunks


# --- the whole tree worker to worker: the client receives the root only ----------------


@pytest.fixture(scope="module")
def four_workers():
    """Four single-threaded workers in this process (cheap to start, real actor calls)."""
    with (
        LocalCluster(
            n_workers=4, threads_per_worker=1, processes=False, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        yield client


def _stats_arrays(n_chunks):
    rng = np.random.default_rng(n_chunks)
    return [
        np.concatenate([rng.normal(size=12), [rng.integers(-8, 8)], rng.random(5)])
        for _ in range(n_chunks)
    ]


def _scatter_irregularly(client, arrays, n_workers):
    """Chunk ``i`` on worker ``(7 i // 3) mod n_workers``: runs of one, two and three."""
    workers = sorted(client.scheduler_info()["workers"])[:n_workers]
    return [
        client.scatter(a, workers=[workers[(7 * i // 3) % n_workers]], hash=False)
        for i, a in enumerate(arrays)
    ]


def _recording_answers(hosts):
    """Record every list of per-host answers that reaches the client."""
    answers = []
    call = hosts._call
    hosts._call = lambda *args, **kwargs: answers.append(call(*args, **kwargs)) or answers[-1]
    return answers


def _kept_by_the_hosts(client, hosts):
    """Per worker: how many values each of ``hosts`` keeps for others, and why it last failed."""
    keys = [future.key for future in hosts._futures]

    def kept(dask_worker):
        actors = [dask_worker.state.actors.get(key) for key in keys]
        return [(len(a._kept), repr(a._failure)) for a in actors if a is not None]

    return client.run(kept)


def test_the_reduction_tree_is_the_tree_of_combine_in_tree():
    assert reduction_tree(1, 8) == [[0]]
    assert reduction_tree(8, 8) == [list(range(8))]
    assert reduction_tree(9, 8) == [list(range(8)), [8], [9, 10]]
    assert reduction_tree(10, 3) == [
        [0, 1, 2],
        [3, 4, 5],
        [6, 7, 8],
        [9],
        [10, 11, 12],
        [13],
        [14, 15],
    ]
    # combine_in_tree over the numbered chunks names the same nodes in the same order.
    tree = reduction_tree(70, 3)
    numbered = combine_in_tree(lambda *kids: tree.index(list(kids)) + 70, range(70), 3)
    assert numbered == 70 + len(tree) - 1


@pytest.mark.parametrize("n_workers", [1, 2, 3, 4])
@pytest.mark.parametrize("n_chunks", [1, 5, 9, 17, 70])
def test_hosts_combine_the_whole_tree_worker_to_worker_bit_for_bit(
    four_workers, n_chunks, n_workers
):
    arrays = _stats_arrays(n_chunks)
    chunks = _scatter_irregularly(four_workers, arrays, n_workers)
    hosts = ChunkHosts(four_workers, chunks)
    answers = _recording_answers(hosts)
    try:
        combined = hosts.map_reduce(_stats_of, combine_stats, split_every=3, result_bytes=LARGE)
        kept = _kept_by_the_hosts(four_workers, hosts)
    finally:
        hosts.close()
    expected = combine_in_tree(combine_stats, [_stats_of(a) for a in arrays], 3)
    parts = [four_workers.submit(_stats_of, chunk) for chunk in chunks]
    on_tasks = {
        size: tree_reduce(
            four_workers, combine_stats, parts, name="t", split_every=3, result_bytes=size
        )
        for size in (0, LARGE)  # the last group on the client, or the root a task
    }
    for result in (combined, *on_tasks.values()):
        assert_array_equal(result.sums, expected.sums)
        assert_array_equal(result.counts, expected.counts)
        assert result.inertia == expected.inertia
    # One value reaches the client, from the host of chunk 0 (which combines the root).
    assert len(hosts._groups) == min(n_workers, n_chunks)
    (per_host,) = answers
    assert [value is not None for value in per_host] == [True] + [False] * (len(per_host) - 1)
    # Every value kept for another host was taken: nothing stays for the next iteration.
    assert all(n_kept == 0 for state in kept.values() for n_kept, _ in state)


def test_the_client_receives_one_set_per_iteration_whatever_the_workers(four_workers, monkeypatch):
    k, d = 512, 32
    arrays = [np.full(4, float(i)) for i in range(16)]
    received = {}
    for reduction, result_bytes in [("client", 0), ("workers", LARGE)]:
        for n_workers in (1, 2, 4):
            chunks = _scatter_irregularly(four_workers, arrays, n_workers)
            hosts = ChunkHosts(four_workers, chunks)
            answers = _recording_answers(hosts)
            try:
                result = hosts.map_reduce(
                    _large_stats, combine_stats, k, d, result_bytes=result_bytes
                )
            finally:
                hosts.close()
            assert result.counts.sum() == k * sum(range(16))
            (per_host,) = answers
            received[reduction, n_workers] = sum(
                values.sums.nbytes
                if reduction == "workers"
                else sum(v.sums.nbytes for v in values)
                for values in per_host
                if values is not None
            )
    one_set = 8 * k * d
    assert [received["workers", w] for w in (1, 2, 4)] == [one_set] * 3
    # Before: one set per group of the tree's first level at least, and per worker.
    assert all(received["client", w] >= max(2, w) * one_set for w in (1, 2, 4))
    # The task path: the root is a task too, and the client gathers one value.
    gathered = []
    gather = four_workers.gather
    monkeypatch.setattr(
        four_workers,
        "gather",
        lambda futures, **kwargs: gathered.append(futures) or gather(futures, **kwargs),
    )
    parts = [four_workers.submit(_large_stats, four_workers.scatter(a), k, d) for a in arrays]
    tree_reduce(four_workers, combine_stats, parts, name="t", result_bytes=LARGE)
    assert [isinstance(futures, Future) for futures in gathered] == [True]


def test_the_hosts_reduce_worker_to_worker_when_the_client_would_gather_too_much(four_workers):
    arrays = _stats_arrays(16)
    chunks = _scatter_irregularly(four_workers, arrays, 2)  # every first-level group split
    hosts = ChunkHosts(four_workers, chunks)
    methods = []
    call = hosts._call
    hosts._call = lambda method, *args, **kwargs: (
        methods.append(method) or call(method, *args, **kwargs)
    )
    try:
        for result_bytes in (CLIENT_GATHER_BYTES // 16, CLIENT_GATHER_BYTES // 16 + 1):
            hosts.map_reduce(_stats_of, combine_stats, result_bytes=result_bytes)
    finally:
        hosts.close()
    # 16 values of 1/16 of the budget are gathered; one byte more each, and they are not.
    assert methods == ["map_combine", "reduce_tree"]


def _large_stats(chunk, k, d):
    return ClusterStats(np.full((k, d), chunk[0]), np.full(k, chunk[0]), float(chunk[0]))


@pytest.mark.parametrize("direct", [True, False])
def test_errors_between_workers_come_back_as_raised_and_nothing_is_kept(
    client, direct, monkeypatch
):
    if not direct:
        monkeypatch.setattr(ChunkHosts, "_direct_calls_answer", _answer_false)
    workers = sorted(client.scheduler_info()["workers"])
    chunks = [client.scatter(np.full(18, float(i)), workers=[workers[i % 2]]) for i in range(5)]
    hosts = ChunkHosts(client, chunks)
    try:
        assert hosts.direct == direct
        start = time.monotonic()
        # Chunk 3 fails on the second worker, while the first waits for its values.
        with pytest.raises(ValueError, match=r"bad chunk starting with 3\.0"):
            hosts.map_reduce(_fail_on_three, combine_stats, result_bytes=LARGE)
        assert time.monotonic() - start < 5  # not mistaken for a lost worker
        # The first worker, waiting for the second's values, gets the error too and
        # stops waiting; neither keeps a value.
        failed = [[(0, "ValueError('bad chunk starting with 3.0')")]] * 2
        deadline = time.monotonic() + 10
        while list(_kept_by_the_hosts(client, hosts).values()) != failed:
            assert time.monotonic() < deadline, _kept_by_the_hosts(client, hosts)
            time.sleep(0.05)
        # The next iteration runs as if nothing happened.
        combined = hosts.map_reduce(_stats_of, combine_stats, split_every=2, result_bytes=LARGE)
    finally:
        hosts.close()
    parts = [np.full(18, float(i)) for i in range(5)]
    expected = combine_in_tree(combine_stats, [_stats_of(p) for p in parts], 2)
    assert_array_equal(combined.sums, expected.sums)


def _fail_on_three(chunk):
    if chunk[0] == 3:
        _fail(chunk)
    return _stats_of(chunk)


async def _answer_false(hosts):
    return False


# --- the direct calls and their fallback ----------------------------------------------


async def _handler_gone(hosts, host, method, args):
    raise ValueError("No handler actor_execute found in Worker")  # as a release without it


def _handler_reshaped(direct):
    async def call(hosts, host, method, args):
        reply = await direct(hosts, host, method, args)
        return {"status": reply["status"], "value": reply.get("result")}  # another shape

    return call


def _recording(calls, direct):
    async def call(hosts, host, method, args):
        calls.append(method)
        return await direct(hosts, host, method, args)

    return call


def test_direct_calls_are_checked_once_when_the_actors_start(client, monkeypatch):
    calls = []
    monkeypatch.setattr(ChunkHosts, "_call_direct", _recording(calls, ChunkHosts._call_direct))
    chunks = [client.scatter(np.full(10, float(i))) for i in range(5)]
    hosts = ChunkHosts(client, chunks)
    try:
        assert hosts.direct  # the installed distributed's handler answers as expected
        n_hosts = len(calls)
        assert calls == ["n_chunks"] * n_hosts and 1 <= n_hosts <= 2
        for _ in range(3):
            hosts.map(_first_value_and_worker)
    finally:
        hosts.close()
    assert calls == ["n_chunks"] * n_hosts + ["map"] * 3 * n_hosts  # no probe per call


@pytest.mark.parametrize("change", ["gone", "reshaped"])
def test_a_changed_handler_falls_back_to_actor_handles_bit_for_bit(
    client, blobs, monkeypatch, caplog, change
):
    X = da.from_array(blobs[0], chunks=500)
    params = {"n_clusters": 6, "random_state": 0, "max_iter": 6, "tol": 0.0, "engine": "actors"}
    fast = KMeans(**params).fit(X)
    direct = ChunkHosts._call_direct
    changed = _handler_gone if change == "gone" else _handler_reshaped(direct)
    calls = []
    monkeypatch.setattr(ChunkHosts, "_call_direct", _recording(calls, changed))
    with caplog.at_level("INFO", logger="kmeans_dask._engine.hosts"):
        fallback = KMeans(**params).fit(X)
    assert "calling the actors through distributed.Actor handles" in caplog.text
    assert calls and set(calls) == {"n_chunks"}  # after the probe, only the handles
    assert_array_equal(fallback.cluster_centers_, fast.cluster_centers_)
    assert_array_equal(fallback.labels_.compute(), fast.labels_.compute())
    assert fallback.inertia_ == fast.inertia_ and fallback.n_iter_ == fast.n_iter_

    chunks = [client.scatter(np.full(18, float(i))) for i in range(11)]
    hosts = ChunkHosts(client, chunks)
    try:
        assert not hosts.direct
        assert [value for value, _ in hosts.map(_first_value_and_worker)] == list(range(11))
        with pytest.raises(ValueError, match=r"bad chunk starting with \d+\.0"):
            hosts.map(_fail)  # errors come back as raised through the handles too
    finally:
        hosts.close()


#: Values of ``_tracked_value`` alive in this process: now, and the most at once.
_ALIVE = {"now": 0, "most": 0}


class _TrackedValue:
    def __init__(self) -> None:
        _ALIVE["now"] += 1
        _ALIVE["most"] = max(_ALIVE["most"], _ALIVE["now"])

    def __del__(self) -> None:
        _ALIVE["now"] -= 1


def _tracked_value(chunk):
    return _TrackedValue()


def _count_values(*values):
    return sum(value if isinstance(value, int) else 1 for value in values)


def _most_values_alive():
    return _ALIVE["most"]


def test_a_host_combines_each_group_once_complete_holding_only_groups_under_way(client):
    worker = sorted(client.scheduler_info()["workers"])[0]
    chunks = [client.scatter(np.full(2, float(i)), workers=[worker]) for i in range(40)]
    hosts = ChunkHosts(client, chunks)
    try:
        assert hosts.map_reduce(_tracked_value, _count_values) == 40
    finally:
        hosts.close()
    # One thread: the values of one group of the tree at a time, not all 40.
    assert client.run(_most_values_alive, workers=[worker])[worker] <= SPLIT_EVERY


def _reset_values_alive():
    _ALIVE.update(now=0, most=0)


def test_a_host_reducing_worker_to_worker_holds_only_the_groups_under_way(client):
    worker = sorted(client.scheduler_info()["workers"])[0]
    chunks = [client.scatter(np.full(2, float(i)), workers=[worker]) for i in range(40)]
    client.run(_reset_values_alive, workers=[worker])
    hosts = ChunkHosts(client, chunks)
    try:  # values this large go worker to worker
        total = hosts.map_reduce(_tracked_value, _count_values, result_bytes=CLIENT_GATHER_BYTES)
    finally:
        hosts.close()
    assert total == 40
    assert client.run(_most_values_alive, workers=[worker])[worker] <= SPLIT_EVERY


def test_an_iteration_given_up_before_it_reaches_a_host_fails_there_at_once():
    """A call that arrives after the client gave its iteration up must not wait on its pulls."""
    import asyncio

    from kmeans_dask._engine.hosts import ChunkHost

    async def scenario():
        host = ChunkHost()
        await host.abandon(3)
        with pytest.raises(RuntimeError, match="gave iteration 3 up"):
            host._iteration(3)
        assert host._iteration(4) == {}  # the next iteration starts clean

    asyncio.run(scenario())
