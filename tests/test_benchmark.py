"""The benchmark harness runs end to end and reports consistent figures."""

from __future__ import annotations

import json

import pytest

from kmeans_dask.benchmark import main, parse_variants


def test_small_benchmark_reports_ratios_overheads_and_equal_inertias(tmp_path, capsys):
    out = tmp_path / "bench.json"
    argv = [
        "--n-samples", "6000", "--n-features", "4", "--n-clusters", "5", "--iterations", "4",
        "--repeats", "1", "--peers", "sklearn", "--variants", "lloyd/tasks", "--spread", "10",
        "--no-warmup", "--json", str(out),
    ]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "Dask part of an iteration" in printed
    result = json.loads(out.read_text())
    summaries = {s["name"]: s for s in result["summaries"]}
    assert set(summaries) == {"kmeans_dask", "kmeans_dask[lloyd,tasks]", "sklearn"}
    # Same data, same initial centres, same iterations: the same model.
    inertias = [s["inertia"] for s in summaries.values()]
    assert max(inertias) == pytest.approx(min(inertias), rel=1e-6)
    assert summaries["kmeans_dask"]["speed_ratio"] == 1.0
    assert summaries["kmeans_dask"]["paired_speed_ratio"] == 1.0
    # One repeat: the paired ratio is the ratio of that repeat's figures.
    sklearn = summaries["sklearn"]
    assert sklearn["paired_speed_ratio"] == pytest.approx(sklearn["speed_ratio"])
    for engine in ("tasks", "actors"):
        assert all(seconds > 0 for seconds in result["empty_iteration_seconds"][engine])
    assert result["parameters"]["spread"] == 10.0


def test_variants_are_checked():
    assert parse_variants("lloyd/tasks, hamerly/actors") == [
        ("lloyd", "tasks"),
        ("hamerly", "actors"),
    ]
    assert parse_variants("none") == []
    with pytest.raises(ValueError, match="variant 'elkan/tasks' is not ALGORITHM/ENGINE"):
        parse_variants("elkan/tasks")
