"""The benchmark harness runs end to end and reports consistent figures."""

from __future__ import annotations

import json
import re
import runpy
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kmeans_dask._kernels.vector_target import compile_target
from kmeans_dask.benchmark import main
from kmeans_dask.benchmark.machine import kernel_target, vector_extensions
from kmeans_dask.benchmark.options import parse_variants
from kmeans_dask.benchmark.schedule import run_order, wait_until_idle


def test_small_benchmark_reports_ratios_overheads_and_equal_inertias(
    tmp_path, capsys, monkeypatch
):
    # Timings are not checked here: no waiting for an idle machine before each run.
    monkeypatch.setattr("kmeans_dask.benchmark.driver.wait_until_idle", lambda: 0.0)
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


def test_the_machine_is_described_by_its_vector_extensions_and_the_kernels_target(monkeypatch):
    assert vector_extensions({"sse2", "avx", "avx2", "fma"}) == "AVX2"
    assert vector_extensions({"avx2", "avx512f", "avx512bw", "avx512vl"}) == "AVX-512"
    assert vector_extensions({"fp", "asimd"}) == "NEON"
    assert vector_extensions(set()) == "unknown"
    target = compile_target()
    monkeypatch.setattr("numba.config.CPU_NAME", None)  # the host's CPU, whatever this run set
    described = kernel_target()
    assert described == f"{target.cpu}, {target.vector_bits}-bit vectors x {target.registers}"
    # A fixed compile target is an emulation, and the line says so.
    monkeypatch.setattr("numba.config.CPU_NAME", "haswell")
    assert kernel_target() == described + " (NUMBA_CPU_NAME=haswell: emulating another CPU)"


def test_variants_are_checked():
    assert parse_variants("lloyd/tasks, hamerly/actors") == [
        ("lloyd", "tasks"),
        ("hamerly", "actors"),
    ]
    assert parse_variants("none") == []
    with pytest.raises(ValueError, match="variant 'elkan/tasks' is not ALGORITHM/ENGINE"):
        parse_variants("elkan/tasks")


def test_run_order_varies_position_and_predecessor():
    names = ["kmeans_dask", "faiss", "sklearn", "dask-ml", "spark"]
    orders = [run_order(names, repeat) for repeat in range(4)]
    assert all(sorted(order) == sorted(names) for order in orders)
    for name in names:
        predecessors = {order[order.index(name) - 1] for order in orders if order[0] != name}
        assert len(predecessors) >= 2, (name, orders)


def test_wait_until_idle_gives_up_after_its_timeout():
    start = time.monotonic()
    busy = wait_until_idle(threshold=-1.0, sample_seconds=0.05, timeout=0.2)
    assert busy >= 0.0
    assert 0.2 <= time.monotonic() - start < 2.0


#: ``python SCRIPT ARGS...`` without :func:`wait_until_idle`'s waits for an idle machine.
_WITHOUT_IDLE_WAITS = """
import os, runpy, sys
import kmeans_dask.benchmark.schedule as schedule
schedule.wait_until_idle = lambda: 0.0
sys.argv = sys.argv[1:]
sys.path[0] = os.path.dirname(sys.argv[0])
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def _table_rows(script_name: str, argv: list[str]) -> list[list[str]]:
    """Run a benchmark script; the cells of its Markdown table rows (header included)."""
    return _rows_of(_script_output(script_name, argv))


def _script_output(script_name: str, argv: list[str]) -> str:
    """What a benchmark script printed (:func:`_table_rows`).

    Its timed runs start at once, not on an idle machine: the tests check what
    it reports, not its timings (and the suite's other process keeps the
    machine busy, so each wait would last its whole timeout).
    """
    script = Path(__file__).resolve().parents[1] / "scripts" / script_name
    done = subprocess.run(
        [sys.executable, "-c", _WITHOUT_IDLE_WAITS, str(script), *argv],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def _rows_of(output: str) -> list[list[str]]:
    return [line.split(" | ") for line in output.splitlines() if line.startswith("| ")]


def test_initialisation_benchmark_runs_and_reports_all_three():
    pytest.importorskip("dask_ml", reason="dask-ml is not installed")
    argv = ["--n-samples", "4000", "--n-features", "3", "--n-clusters", "4", "--repeats", "1"]
    body = _table_rows("bench_init.py", argv)[1:]
    assert [row[0] for row in body] == ["| kmeans_dask", "| dask-ml", "| sklearn"]
    assert body[0][2] == "1.00x"


def test_statistics_benchmark_times_both_settings_with_equal_sums():
    argv = ["--features", "3,16", "--rows", "600", "--block-rows", "256", "--calls", "1",
            "--repeats", "1", "--offset", "8"]  # fmt: skip
    body = _table_rows("bench_statistics.py", argv)[1:]
    assert [row[0] for row in body] == ["| 3", "| 16"]
    assert all(cell.endswith("x") for row in body for cell in (row[2], row[3], row[5], row[6]))
    assert all(row[7] == "ours, loop, numpy |" for row in body)  # the same sums, bit for bit


def test_moved_centres_benchmark_times_each_share_of_each_shape():
    argv = ["--shapes", "2000x4x8,1000x3x16", "--shares", "0,0.5", "--repeats", "1"]
    body = _table_rows("bench_moved_centers.py", argv)[1:]
    assert [(row[1], row[2]) for row in body] == [
        ("8", "1 (12.5%)"),
        ("8", "4 (50.0%)"),
        ("16", "1 (6.2%)"),
        ("16", "8 (50.0%)"),
    ]
    assert all(float(row[3]) > 0 and float(row[4]) > 0 for row in body)  # milliseconds


def test_fit_phases_benchmark_times_numpy_and_dask_rows_to_the_same_fit():
    """``scripts/bench_fit_phases.py``: every phase, the labels' included, for NumPy rows
    and for a persisted Dask array in the same blocks, which fit to the same inertia."""
    argv = ["--tree", "here=.", "--repeats", "1", "--n-samples", "3000", "--n-features", "3",
            "-k", "4", "--max-iter", "3"]  # fmt: skip
    inertias = []
    for rows in ("numpy", "dask"):
        output = _script_output("bench_fit_phases.py", [*argv, "--input", rows])
        header, _, body = _rows_of(output)
        assert "labels (ms)" in header
        assert body[0] == "| here" and len(body) == len(header)
        assert float(body[header.index("fit (ms)")]) > 0
        inertias.append(re.search(r"here: inertia (\S+), n_iter 3", output)[1])
    assert inertias[0] == inertias[1]


def test_no_client_benchmark_times_every_implementation_on_each_shape():
    pytest.importorskip("faiss", reason="faiss is not installed")
    argv = ["--shapes", "2000x3:4,3000x2:2", "--iterations", "2", "--repeats", "2"]
    body = _table_rows("bench_no_client.py", argv)[1:]
    shapes = ["| 2,000 x 3, k = 4"] * 4 + ["| 3,000 x 2, k = 2"] * 4
    assert [row[0] for row in body] == shapes
    assert [row[1] for row in body[:4]] == [
        "kmeans_dask, NumPy rows (in-process threads)",
        "kmeans_dask, Dask array (worker processes)",
        "scikit-learn",
        "faiss.Kmeans",
    ]
    assert [row[4] for row in body[::4]] == ["1.00x |", "1.00x |"]
    assert all(float(row[2]) >= 0 and float(row[3]) >= 0 for row in body)
    assert all(float(row[3]) > 0 for row in body[::4])  # ours starts a cluster each time


@pytest.mark.parametrize(
    ("script_name", "argv", "message"),
    [
        (
            "bench_statistics.py",
            ["--offset", "4"],
            "--offset must be a multiple of 8 bytes, got 4",
        ),
        (
            "bench_no_client.py",
            ["--shapes", "3000:4"],
            "expected ROWSxFEATURES:K, e.g. 3000x5:3; got '3000:4'",
        ),
    ],
)
def test_benchmarks_refuse_bad_arguments_naming_them(script_name, argv, message):
    script = Path(__file__).parents[1] / "scripts" / script_name
    done = subprocess.run([sys.executable, str(script), *argv], capture_output=True, text=True)
    assert done.returncode == 2
    assert message in done.stderr


def test_search_benchmark_times_every_searcher_on_each_shape():
    pytest.importorskip("faiss", reason="faiss is not installed")
    argv = ["--centers", "3,64", "--features", "2,8", "--max-rows", "3000", "--repeats", "1"]
    body = _table_rows("bench_search.py", argv)[1:]
    assert [(row[0], row[1]) for row in body] == [
        ("| 3", "2"),
        ("| 64", "2"),
        ("| 3", "8"),
        ("| 64", "8"),
    ]
    assert all(cell.endswith("x") for row in body for cell in row[5:8])  # all agree, no "(!)"
    assert [row[8] for row in body] == ["column |", "fused |", "fused |", "fused |"]


def test_assign_fit_benchmark_fits_each_variant_and_prints_the_issue_lines():
    variants = [
        "exact",
        "auto",
        "faiss.Kmeans",
        "auto+exact-final",
        "candidates/lloyd+approximate-final+nlist=4",
    ]
    argv = ["--rows", "3000", "--features", "8", "--ks", "64", "--repeats", "1",
            "--iterations", "3", "--chunks", "2", "--histories",
            "--also", ",".join(variants[3:])]  # fmt: skip
    output = _script_output("bench_assign_fit.py", argv)
    body = _rows_of(output)[1:]
    assert [row[1] for row in body] == variants
    assert body[1][4] == "1.00x"  # auto's speed-up over itself
    histories = re.findall(
        r"^k = 64: (\S+) fit [\d.]+ s: iterations ([\d., ]+) s; the rest -?[\d.]+ s$",
        output,
        re.MULTILINE,
    )
    assert [name for name, _ in histories] == variants
    assert all(len(iterations.split(", ")) == 3 for _, iterations in histories)  # tol=0


def test_assign_fit_variants_name_their_parameters_and_bad_ones_are_refused():
    script = Path(__file__).resolve().parents[1] / "scripts" / "bench_assign_fit.py"
    variant_parameters = runpy.run_path(str(script))["variant_parameters"]
    assert variant_parameters("exact") == {
        "assign": "exact",
        "algorithm": "auto",
        "assign_options": None,
    }
    assert variant_parameters("auto/lloyd+approximate-final+nlist=256") == {
        "assign": "auto",
        "algorithm": "lloyd",
        "assign_options": {"exact_final": False, "nlist": 256},
    }
    assert variant_parameters("auto+exact-final")["assign_options"] == {"exact_final": True}
    with pytest.raises(ValueError, match=r"'nlist=many' is neither 'exact-final', "):
        variant_parameters("auto+nlist=many")
    done = subprocess.run(
        [sys.executable, str(script), "--also", "auto+approximate"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and "'approximate' is neither" in done.stderr  # before any fit


def test_approximate_benchmark_reports_what_an_ivf_row_scans():
    """``scripts/bench_approximate.py`` on a tiny shape: exact and IVF rows, and the
    centres an IVF row scans in the first and the last iteration."""
    rows = _table_rows(
        "bench_approximate.py",
        [
            *("--n-samples", "3000", "--ks", "64", "--ds", "8", "--iterations", "2"),
            *("--skip-hnsw", "--skip-ivf-faiss-scan", "--slow-iterations", "0"),
            *("--faiss-kmeans", "none"),
        ],
    )
    by_variant = {cells[2]: cells for cells in rows[1:]}
    assert set(by_variant) == {"exact (numpy)", "ivf"}
    assert re.search(
        r"first iteration \d+ \([\d.]+%, [\d.]+x 8 mean lists\); last iteration \d+",
        by_variant["ivf"][-1],
    )
