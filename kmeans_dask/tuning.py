"""Pick the nearest-centre search for a dataset: speed against accuracy, measured.

:func:`tune` runs a few Lloyd iterations on a sample of the user's rows with
each candidate search (exact, IVF with several ``nprobe``, HNSW) from the
same initial centres, in this process, and reports per candidate the seconds
per iteration, the speed-up over exact search, the final inertia gap to the
exact run and the recall (the share of rows whose assigned centre is their
true nearest). It recommends the fastest candidate whose inertia gap stays
within ``max_inertia_gap``, in the spirit of an nlist/nprobe sweep.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from numbers import Integral

import numpy as np
from sklearn.cluster import kmeans_plusplus

from kmeans_dask._fit.lloyd import local_lloyd
from kmeans_dask._fit.progress import StepProgress
from kmeans_dask._worker.host_ops import nearest
from kmeans_dask.backends import get_backend, search_spec
from kmeans_dask.backends.approximate import default_nlist


@dataclass(frozen=True)
class TuneResult:
    """One candidate search, measured on the sample."""

    assign: str
    assign_options: dict
    seconds_per_iteration: float
    speedup: float
    """Exact search's seconds per iteration over this one's."""
    inertia_gap: float
    """Relative excess of the final inertia over the exact run's."""
    recall: float
    """Share of rows whose assigned centre is their true nearest (final centres)."""


def candidate_searches(n_clusters: int) -> list[tuple[str, dict]]:
    """Exact, IVF with 4 to 32 probes (of :func:`default_nlist` lists), and HNSW."""
    nlist = default_nlist(n_clusters)
    candidates = [("exact", {})]
    candidates += [("ivf", {"nprobe": p}) for p in (4, 8, 16, 32) if p < nlist]
    candidates += [("hnsw", {"ef_search": e}) for e in (32, 64)]
    return candidates


def tune(
    sample: np.ndarray,
    n_clusters: int,
    *,
    iterations: int = 5,
    max_inertia_gap: float = 0.001,
    random_state: int = 0,
    candidates: list[tuple[str, dict]] | None = None,
    progress: bool = False,
) -> tuple[list[TuneResult], TuneResult]:
    """Measure every candidate search on ``sample`` and recommend one.

    Parameters
    ----------
    sample : ndarray of shape (n_rows, n_features)
        Rows of the user's data (a few hundred thousand are plenty).
    n_clusters : int
    iterations : int, default=5
        Lloyd iterations per candidate, all from the same k-means++ centres.
    max_inertia_gap : float, default=0.001
        Largest acceptable relative inertia excess over exact search.
    random_state : int, default=0
    candidates : list of (assign, options), optional
        Default: :func:`candidate_searches`.
    progress : bool, default=False
        Show a progress bar over the candidates (a line per candidate
        outside a terminal).

    Returns
    -------
    results : list of TuneResult
        One per candidate, exact first.
    recommended : TuneResult
        The fastest candidate within ``max_inertia_gap`` (exact if none is).
    """
    sample = np.ascontiguousarray(sample)
    for name, value in (("n_clusters", n_clusters), ("iterations", iterations)):
        if isinstance(value, bool) or not isinstance(value, Integral) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {name}={value!r}")
    if not np.isfinite(max_inertia_gap) or max_inertia_gap < 0:
        raise ValueError(f"max_inertia_gap must be finite and >= 0, got {max_inertia_gap!r}")
    if sample.ndim != 2 or len(sample) < n_clusters:
        raise ValueError(
            f"sample must be 2-D with at least n_clusters={n_clusters} rows, got shape "
            f"{sample.shape}"
        )
    candidates = candidates or candidate_searches(n_clusters)
    measured = []
    steps = StepProgress(f"tune k={n_clusters}", len(candidates) + 1, "steps", enabled=progress)
    with steps:
        init, _ = kmeans_plusplus(sample, n_clusters, random_state=random_state)
        init = init.astype(sample.dtype)
        weights = np.ones(len(sample))
        steps.advance("k-means++ centres")
        for assign, options in candidates:
            measured.append(_measure(sample, weights, init, iterations, assign, options))
            steps.advance(f"{assign} {options or ''}: {measured[-1][2]:.4f} s/iteration")
    exact_seconds, exact_inertia = measured[0][2], measured[0][3]
    results = [
        TuneResult(
            assign=assign,
            assign_options=options,
            seconds_per_iteration=seconds,
            speedup=exact_seconds / seconds,
            inertia_gap=inertia / exact_inertia - 1.0,
            recall=recall,
        )
        for assign, options, seconds, inertia, recall in measured
    ]
    eligible = [r for r in results if r.inertia_gap <= max_inertia_gap]
    recommended = min(eligible, key=lambda r: r.seconds_per_iteration)
    return results, recommended


def _measure(
    sample: np.ndarray,
    weights: np.ndarray,
    init: np.ndarray,
    iterations: int,
    assign: str,
    options: dict,
) -> tuple[str, dict, float, float, float]:
    """One candidate's (assign, options, seconds per iteration, inertia, recall)."""
    spec = "numpy" if assign == "exact" else search_spec(assign, options)
    get_backend(spec)
    started = time.perf_counter()
    centers = local_lloyd(sample, weights, init, max_iter=iterations, tol=-1.0, backend=spec)
    seconds = (time.perf_counter() - started) / iterations
    true_labels, sq_dist = nearest(sample, centers, "numpy")
    found = nearest(sample, centers, spec)[0] if assign != "exact" else true_labels
    return assign, options, seconds, float(sq_dist.sum()), float((found == true_labels).mean())


def as_rows(results: list[TuneResult]) -> list[dict]:
    """Results as plain dicts (for JSON)."""
    return [asdict(result) for result in results]
