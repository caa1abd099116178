"""Medians, ratios and inertia gaps over the repeats, as text and Markdown tables."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from kmeans_dask.benchmark.options import OURS
from kmeans_dask.benchmark.runs import RunResult

#: Inertia gaps are reported against this implementation when it ran.
REFERENCE = "sklearn"

TABLE_HEADER = (
    "implementation",
    "s/iter median",
    "s/iter min",
    "fit s/iter",
    "final inertia",
    "gap vs {ref}",
    "peer/ours s/iter",
    "paired peer/ours",
    "peer/ours fit",
    "% of SGEMM",
)


@dataclass
class Summary:
    """One implementation over all repeats."""

    name: str
    median_seconds_per_iter: float
    min_seconds_per_iter: float
    fit_seconds_per_iter: float
    inertia: float
    inertia_gap: float | None
    speed_ratio: float | None
    """This implementation's s/iter over kmeans_dask's (> 1: kmeans_dask is faster)."""
    paired_speed_ratio: float | None
    """The median over repeats of the same ratio taken within each repeat, where
    both ran minutes apart at most: robust to the machine's speed drifting."""
    fit_speed_ratio: float | None
    gflops: float
    sgemm_fraction: float | None
    timing: str
    n_iter: int | None
    repeats: int
    inertia_spread: float
    """Relative spread of the recomputed inertia over repeats (0 if deterministic)."""


def summarize(
    results: Sequence[RunResult],
    names: Sequence[str],
    flops_per_iter: float,
    sgemm_gflops: float,
    iterations: int,
) -> list[Summary]:
    """Aggregate runs per implementation: medians and minima over repeats.

    Parameters
    ----------
    results : sequence of RunResult
    names : sequence of str
        Implementations in the order to report.
    flops_per_iter : float
        ``2 * n * d * k``.
    sgemm_gflops : float
        Machine SGEMM throughput.
    iterations : int

    Returns
    -------
    list of Summary
    """
    rows: dict[str, dict[str, float]] = {}
    out: list[Summary] = []
    for name in names:
        runs = [r for r in results if r.name == name]
        if not runs:
            continue
        per_iter = [r.seconds_per_iter for r in runs]
        fit_per_iter = [r.fit_seconds / (r.n_iter or iterations) for r in runs]
        inertias = [r.inertia for r in runs]
        inertia = float(statistics.median(inertias))
        median = float(statistics.median(per_iter))
        rows[name] = {"median": median, "fit": float(statistics.median(fit_per_iter))}
        gflops = flops_per_iter / median / 1e9 if median > 0 else math.nan
        out.append(
            Summary(
                name=name,
                median_seconds_per_iter=median,
                min_seconds_per_iter=float(min(per_iter)),
                fit_seconds_per_iter=rows[name]["fit"],
                inertia=inertia,
                inertia_gap=None,
                speed_ratio=None,
                paired_speed_ratio=None,
                fit_speed_ratio=None,
                gflops=gflops,
                sgemm_fraction=gflops / sgemm_gflops if sgemm_gflops > 0 else None,
                timing="; ".join(dict.fromkeys(r.timing for r in runs)),
                n_iter=runs[0].n_iter,
                repeats=len(runs),
                inertia_spread=(max(inertias) - min(inertias)) / abs(inertia) if inertia else 0.0,
            )
        )
    reference = next((s for s in out if s.name == REFERENCE), None) or next(
        (s for s in out if s.name == OURS), None
    )
    ours = rows.get(OURS)
    ours_by_repeat = {r.repeat: r.seconds_per_iter for r in results if r.name == OURS}
    for summary in out:
        paired = [
            r.seconds_per_iter / ours_by_repeat[r.repeat]
            for r in results
            if r.name == summary.name and ours_by_repeat.get(r.repeat, 0) > 0
        ]
        if paired:
            summary.paired_speed_ratio = float(statistics.median(paired))
        if reference is not None and reference.inertia:
            summary.inertia_gap = (summary.inertia - reference.inertia) / reference.inertia
        if ours and ours["median"] > 0:
            summary.speed_ratio = summary.median_seconds_per_iter / ours["median"]
        if ours and ours["fit"] > 0:
            summary.fit_speed_ratio = summary.fit_seconds_per_iter / ours["fit"]
    return out


def format_seconds(value: float) -> str:
    if not math.isfinite(value):
        return "n/a"
    return f"{value:.4f}" if value >= 0.01 else f"{value:.2e}"


def format_ratio(value: float | None) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.2f}x"


def format_gap(value: float | None) -> str:
    if value is None:
        return "n/a"
    return "0" if value == 0 else f"{value:+.2e}"


def format_fraction(value: float | None) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{100 * value:.1f}%"


def table_rows(summaries: Sequence[Summary]) -> tuple[list[str], list[list[str]]]:
    """Header and formatted cells of the results table.

    Parameters
    ----------
    summaries : sequence of Summary

    Returns
    -------
    header : list of str
    rows : list of list of str
    """
    ref = REFERENCE if any(s.name == REFERENCE for s in summaries) else OURS
    header = [h.format(ref=ref) for h in TABLE_HEADER]
    rows = [
        [
            s.name,
            format_seconds(s.median_seconds_per_iter),
            format_seconds(s.min_seconds_per_iter),
            format_seconds(s.fit_seconds_per_iter),
            f"{s.inertia:.8e}",
            format_gap(s.inertia_gap),
            format_ratio(s.speed_ratio),
            format_ratio(s.paired_speed_ratio),
            format_ratio(s.fit_speed_ratio),
            format_fraction(s.sgemm_fraction),
        ]
        for s in summaries
    ]
    return header, rows


def format_table(summaries: Sequence[Summary]) -> str:
    """Plain-text results table, one line per implementation.

    Parameters
    ----------
    summaries : sequence of Summary

    Returns
    -------
    str
    """
    header, rows = table_rows(summaries)
    widths = [max(len(c) for c in col) for col in zip(header, *rows, strict=True)]
    lines = [
        "  ".join(
            cell.rjust(width) if i else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        )
        for row in (header, *rows)
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def format_markdown(
    summaries: Sequence[Summary], env: dict[str, Any], params: dict[str, Any], extra: list[str]
) -> str:
    """A Markdown section for ``benchmarks/RESULTS.md``.

    Parameters
    ----------
    summaries : sequence of Summary
    env : dict
        From :func:`environment_info`.
    params : dict
        The benchmark's parameters.
    extra : list of str
        Further bullet lines (SGEMM, overhead).

    Returns
    -------
    str
    """
    header, rows = table_rows(summaries)
    versions = ", ".join(f"{k} {v}" for k, v in env["versions"].items() if v)
    overrides = env["openblas_overrides"]
    lines = [
        f"### {env['date']} — {env['host']}",
        "",
        f"- CPU: {env['cpu_model']} ({env['vector_extensions']}); {env['cpus_usable']} usable "
        f"cores ({env['cpu_count']} logical); {env['memory_gib']} GiB; Python {env['python']}; "
        f"BLAS: {env['blas']}; kernels for {env['kernels']}"
        + (f"; faiss SIMD level {env['faiss_simd']}" if env["faiss_simd"] else ""),
        f"- Versions: {versions}",
        f"- Data: {params['n_samples']} x {params['n_features']} {params['dtype']} blobs "
        f"(centres in [-{params['spread']:g}, {params['spread']:g}]^d), "
        f"k = {params['n_clusters']}, {params['iterations']} iterations, "
        f"{params['repeats']} interleaved repeats, seed {params['seed']}; LocalCluster "
        f"{params['workers']} worker(s) x {params['threads_per_worker']} thread(s), "
        f"kmeans_dask backend {params['backend']}",
        "- Command: `env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python scripts/bench.py "
        f"{params['argv']}`"
        + (
            ""
            if not overrides
            else f" — WARNING: this run had {', '.join(overrides)} set, so figures may not "
            "reflect the real CPU"
        ),
        *(f"- {line}" for line in extra),
        "",
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|",
        *("| " + " | ".join(r) + " |" for r in rows),
    ]
    return "\n".join(lines)
