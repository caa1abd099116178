"""The cost model of scripts/scaling_model.py: tree and bytes accounting, predictions."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import pytest

from kmeans_dask._engine.hosts import MAX_GATHERED_BYTES, _first_level
from kmeans_dask._engine.mapreduce import SPLIT_EVERY

_PATH = Path(__file__).resolve().parents[1] / "scripts" / "scaling_model.py"
_SPEC = importlib.util.spec_from_file_location("scaling_model", _PATH)
model = importlib.util.module_from_spec(_SPEC)
sys.modules.setdefault("scaling_model", model)  # dataclasses look their module up
_SPEC.loader.exec_module(sys.modules["scaling_model"])
model = sys.modules["scaling_model"]

CONSTANTS = model.Constants(
    search_flops=80e9,
    statistics_seconds_per_value=0.3e-9,
    chunk_seconds=0.5e-3,
    prepare_seconds_per_value=2e-9,
    add_bytes_per_second=10e9,
    call_seconds=1e-3,
    call_seconds_per_worker=50e-6,
    worker_call_seconds=0.5e-3,
    serialize_bytes_per_second=5e9,
    update_seconds_per_value=5e-9,
    task_seconds=0.3e-3,
    graph_seconds=5e-3,
)


def test_the_model_follows_the_engine_constants_and_tree():
    assert model.SPLIT_EVERY == SPLIT_EVERY
    assert model.MAX_GATHERED_BYTES == MAX_GATHERED_BYTES
    for n_chunks in (1, 2, 7, 8, 9, 63, 64, 65, 1000):
        assert [list(g) for g in model.first_level(n_chunks)] == _first_level(
            n_chunks, SPLIT_EVERY
        )


@pytest.mark.parametrize(
    ("n_chunks", "depth"), [(1, 1), (8, 1), (9, 2), (64, 2), (65, 3), (4096, 4), (4097, 5)]
)
def test_tree_depth_is_ceil_log8(n_chunks, depth):
    assert model.tree_depth(n_chunks) == depth
    assert len(model.tree_levels([0] * n_chunks)) == depth


@pytest.mark.parametrize(
    ("n_chunks", "workers", "placement", "sets"),
    [
        (16, 1, "contiguous", 2),  # one set per first-level group, even on one worker
        (4, 1, "round-robin", 1),
        (4, 2, "contiguous", 4),  # the root group spans workers: every chunk's set
        (16, 2, "contiguous", 2),  # groups of 8 held whole
        (16, 2, "round-robin", 16),  # every group spans both workers
        (64, 4, "contiguous", 8),
        (20, 2, "contiguous", 10),  # 0-7 whole, 8-15 split (8-9 | 10-15), 16-19 whole
    ],
)
def test_sets_to_the_client_today(n_chunks, workers, placement, sets):
    assert model.sets_to_client(model.placement_of(n_chunks, workers, placement)) == sets


def test_tree_levels_cross_workers_only_above_their_own_chunks():
    levels = model.tree_levels(model.placement_of(64, 8, "contiguous"))
    assert [level.crossing for level in levels] == [False, True]
    assert levels[1].max_inbound == 7
    assert levels[0].max_adds == 7
    round_robin = model.tree_levels(model.placement_of(64, 8, "round-robin"))
    assert round_robin[0].crossing and round_robin[0].max_inbound == 7 * 8


def test_task_count_counts_maps_reduce_levels_and_the_centres():
    assert model.task_count(8) == 8 + 1
    assert model.task_count(64) == 64 + 8 + 1
    assert model.task_count(65) == 65 + 9 + 2 + 1


def _setup(**changes):
    base = dict(n=1e9, d=128, k=1024, workers=100, threads=8, chunks=8000, bandwidth=125e6)
    return model.Setup(**(base | changes))


def test_compute_scales_with_rows_and_centres_and_divides_over_workers():
    compute = model.compute_seconds
    one = compute(_setup(), CONSTANTS)
    assert compute(_setup(n=1e10), CONSTANTS) == pytest.approx(10 * one, rel=0.05)
    assert compute(_setup(workers=200), CONSTANTS) == pytest.approx(one / 2, rel=0.05)
    assert compute(_setup(k=65536), CONSTANTS) > 50 * one
    # Search flops dominate: 2 n k d over all cores.
    flops_only = 2 * 1e9 * 1024 * 128 / (CONSTANTS.search_flops * 800)
    assert flops_only < one < 1.2 * flops_only


def test_client_reduction_grows_with_the_workers_and_the_tree_does_not():
    def reduction(workers, mode):
        setup = _setup(k=65536, workers=workers, chunks=8 * 10 * workers, reduction=mode)
        return model.reduction_seconds(setup, CONSTANTS)

    assert reduction(1000, "client") > 8 * reduction(100, "client")
    assert reduction(1000, "tree") < 2 * reduction(100, "tree")
    assert reduction(1000, "tree") < reduction(1000, "client") / 50
    # Today the client receives one set per first-level group: 1000 groups of 64 MiB.
    set_bytes = 8 * 65536 * 129
    assert reduction(1000, "client") > 1000 * set_bytes / 125e6


def test_fan_out_sends_the_centres_to_every_worker():
    small, large = _setup(workers=100), _setup(workers=1000)
    extra = model.fan_out_seconds(large, CONSTANTS) - model.fan_out_seconds(small, CONSTANTS)
    per_worker = 4 * 1024 * 128 * (1 / 125e6 + 1 / 5e9) + CONSTANTS.call_seconds_per_worker
    assert extra == pytest.approx(900 * per_worker)


def test_centres_sent_down_a_tree_leave_the_client_eight_calls_per_level():
    flat = model.fan_out_seconds(_setup(workers=1000, k=65536), CONSTANTS)
    tree = model.fan_out_seconds(_setup(workers=1000, k=65536, broadcast="tree"), CONSTANTS)
    # 4 levels of 8 calls against 1000 calls from the client.
    assert tree < flat * 8 * 4 / 1000 * 1.1
    one_level = model.fan_out_seconds(_setup(workers=8, broadcast="tree"), CONSTANTS)
    assert one_level == pytest.approx(model.fan_out_seconds(_setup(workers=8), CONSTANTS))


def test_engine_choice_and_the_terms_sum_to_the_iteration():
    assert model.engine_for(_setup(k=65536, chunks=2)) == "tasks"
    assert model.engine_for(_setup(k=64, d=32, chunks=16)) == "actors"
    for engine in ("actors", "tasks"):
        setup = _setup(engine=engine, latency=1e-3)
        terms = model.iteration_terms(setup, CONSTANTS)
        assert sum(terms.values()) == pytest.approx(model.iteration_seconds(setup, CONSTANTS))
        assert all(value >= 0 for value in terms.values())
    assert model.iteration_terms(_setup(engine="tasks"), CONSTANTS)["scheduler"] > 0
    assert model.bottleneck(_setup(k=65536, workers=1000, chunks=8000), CONSTANTS) in (
        "fan-out",
        "reduction",
    )


def test_cores_shared_by_many_workers_slow_their_maps():
    dedicated = _setup(workers=32, threads=1, chunks=32)
    shared = _setup(workers=32, threads=1, chunks=32, cores=2)
    assert shared.sharing == 16
    assert model.compute_seconds(shared, CONSTANTS) == pytest.approx(
        16 * model.compute_seconds(dedicated, CONSTANTS)
    )


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: model.placement_of(4, 2, "random"), "placement must be"),
        (lambda: model.reduction_seconds(_setup(reduction="p2p"), CONSTANTS), "reduction must"),
        (lambda: model.fan_out_seconds(_setup(broadcast="gossip"), CONSTANTS), "broadcast must"),
    ],
)
def test_unknown_choices_are_refused(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_least_squares_recovers_a_line():
    rows = [[1, x] for x in range(5)]
    intercept, slope = model.least_squares(rows, [3 + 2 * x for x in range(5)])
    assert math.isclose(intercept, 3, abs_tol=1e-9) and math.isclose(slope, 2, abs_tol=1e-9)


def test_nonnegative_least_squares_keeps_costs_at_zero_or_above():
    rows = [[1, x] for x in range(5)]
    intercept, slope = model.least_squares(rows, [-1 + 2 * x for x in range(5)], nonnegative=True)
    assert intercept == 0 and slope > 0
