"""Choose the number of clusters: fit several k on the same data, compare four criteria.

:func:`elbow` fits one :class:`~kmeans_dask.KMeans` per candidate ``k`` on the
same Dask client and scores each fit by four criteria, each of which picks a
``k``:

* **elbow** of the (k, inertia) curve by the *kneedle* rule (Satopää et al.,
  2011, "Finding a 'Kneedle' in a Haystack"), in its simplest,
  parameter-free form (:func:`knee_point`): the point of the curve farthest
  below the chord joining its first and last points, after both axes are
  scaled to [0, 1]. By default on log(inertia): on linear inertia the first
  few drops, which are large for any data, dominate the scaled curve and the
  rule tends to stop one or two clusters early (on 24 ``make_blobs`` data
  sets, linear inertia found the true k 8 times, log inertia 24 times).
  Why not the ``kneed`` package: its ``KneeLocator`` is the same kneedle
  rule, except that offline it takes the *first* local maximum of the
  difference curve after which the curve drops below a threshold, where
  :func:`knee_point` takes the global maximum; on the 51 data sets of
  ``scripts/bench_choose_k.py`` both picked the same k every time, so we
  keep :func:`knee_point` and add no dependency.
* **silhouette** (highest wins): :func:`sklearn.metrics.silhouette_score` of
  one seeded uniform sample of rows (the same rows for every ``k``; only
  they are computed from a Dask array), labelled by each model.
* **Calinski-Harabasz** (highest wins) and **Davies-Bouldin** (lowest wins),
  from per-cluster statistics that one map-reduce over the row chunks
  collects under each fit's centres, without gathering the data (see
  :mod:`kmeans_dask._fit.scores` for the formulas and the one documented
  difference from scikit-learn's Davies-Bouldin).

The suggested ``k`` is the one most criteria pick; a tie goes to the pick
of the criterion listed first in :data:`CRITERIA`, ordered by how often each
found the true k in ``scripts/bench_choose_k.py`` (benchmarks/RESULTS.md:
Calinski-Harabasz and the elbow 40 of 51 data sets, the silhouette 32,
Davies-Bouldin 28; the vote also 40, right on digits where
Calinski-Harabasz is not, wrong on iris where it is). The result says which
criteria agree.
"""

from __future__ import annotations

import logging
import math
import numbers
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from kmeans_dask._fit.progress import StepProgress

__all__ = ["CRITERIA", "ElbowResult", "elbow", "knee_point", "pick_by_criterion", "suggest_k"]

Scale = Literal["log", "linear"]
logger = logging.getLogger(__name__)

#: The criteria, most reliable first, and how each is named in messages. On
#: 51 data sets of known k (scripts/bench_choose_k.py, benchmarks/RESULTS.md)
#: Calinski-Harabasz and the elbow were right 40 times each, the silhouette
#: 32, Davies-Bouldin 28; the order breaks ties between picks.
CRITERIA: dict[str, str] = {
    "calinski_harabasz": "Calinski-Harabasz",
    "elbow": "elbow",
    "silhouette": "silhouette",
    "davies_bouldin": "Davies-Bouldin",
}


def _json_float(value: float) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


@dataclass(frozen=True)
class ElbowResult:
    """The outcome of :func:`elbow`: one entry per ``k``, in increasing ``k``.

    Attributes
    ----------
    ks : list of int
        The numbers of clusters fitted, increasing.
    inertias : list of float
        ``inertia_`` of the fit for each ``k`` (sum of squared distances of
        the rows to their nearest final centre).
    seconds : list of float
        Wall time of each fit, including data loading and initialisation
        (not the scores).
    suggested_k : int or None
        The ``k`` most criteria pick (ties: see :data:`CRITERIA`); with
        ``scores=False``, the elbow. None when no criterion picks a ``k``
        (e.g. fewer than three ``k`` and no scores).
    n_iters : list of int
        Lloyd iterations of each fit.
    scale : {"log", "linear"}
        The inertia scale on which the elbow was sought.
    silhouettes, calinski_harabasz, davies_bouldin : list of float
        The scores for each ``k`` (NaN where undefined: ``k = 1``, or a
        sample in one cluster); empty with ``scores=False``.
    picks : dict of str to int or None
        The ``k`` each criterion picks, by the names in :data:`CRITERIA`;
        None where a criterion picks nothing.
    reason : str
        Why ``suggested_k``: which criteria agree on it, what the others pick.
    """

    ks: list[int]
    inertias: list[float]
    seconds: list[float]
    suggested_k: int | None
    n_iters: list[int] = field(default_factory=list)
    scale: Scale = "log"
    silhouettes: list[float] = field(default_factory=list)
    calinski_harabasz: list[float] = field(default_factory=list)
    davies_bouldin: list[float] = field(default_factory=list)
    picks: dict[str, int | None] = field(default_factory=dict)
    reason: str = ""

    def to_rows(self) -> list[dict[str, Any]]:
        """One JSON-ready dict per ``k``.

        Returns
        -------
        rows : list of dict
            Keys ``k``, ``inertia``, ``seconds``, ``n_iter``, ``silhouette``,
            ``calinski_harabasz``, ``davies_bouldin`` (None where undefined
            or not computed), ``picked_by`` (the criteria that pick this
            ``k``) and ``suggested`` (True for the row of ``suggested_k``);
            plain Python types only.

        Examples
        --------
        >>> import json
        >>> result = ElbowResult([1, 2, 3], [9.0, 2.0, 1.0], [0.1, 0.1, 0.1], 2, [2, 3, 3])
        >>> json.dumps(result.to_rows()[1])  # doctest: +NORMALIZE_WHITESPACE
        '{"k": 2, "inertia": 2.0, "seconds": 0.1, "n_iter": 3, "silhouette": null,
          "calinski_harabasz": null, "davies_bouldin": null, "picked_by": [],
          "suggested": true}'
        """
        missing = [None] * len(self.ks)
        n_iters = self.n_iters or missing
        return [
            {
                "k": int(k),
                "inertia": float(inertia),
                "seconds": round(float(seconds), 4),
                "n_iter": None if n_iter is None else int(n_iter),
                "silhouette": _json_float(silhouette),
                "calinski_harabasz": _json_float(ch),
                "davies_bouldin": _json_float(db),
                "picked_by": [name for name, pick in self.picks.items() if pick == k],
                "suggested": k == self.suggested_k,
            }
            for k, inertia, seconds, n_iter, silhouette, ch, db in zip(
                self.ks,
                self.inertias,
                self.seconds,
                n_iters,
                self.silhouettes or missing,
                self.calinski_harabasz or missing,
                self.davies_bouldin or missing,
                strict=True,
            )
        ]


def knee_point(ks: Iterable[float], inertias: Iterable[float], scale: Scale = "log") -> int | None:
    """Index of the elbow of a decreasing curve by the kneedle rule.

    With ``scale="log"`` the inertias are replaced by their logarithm (zeros
    by a value 1e-12 times the largest inertia). Both axes are then min-max
    scaled to [0, 1], so the result does not depend on the units of either.
     The chord from the first to the last scaled point is
    drawn and the point with the largest perpendicular distance *below* it
    (on the convex side of a decreasing curve) is the elbow: beyond it, each
    extra cluster buys much less inertia than before it.

    Parameters
    ----------
    ks : iterable of numbers
        Increasing x values (the numbers of clusters).
    inertias : iterable of numbers
        The y values (inertia for each k), non-negative for ``scale="log"``.
    scale : {"log", "linear"}, default="log"
        Seek the elbow on log(inertia) or on inertia itself.

    Returns
    -------
    index : int or None
        Position of the elbow in ``ks``; None with fewer than three points,
        a flat curve, or no point strictly below the chord.

    Examples
    --------
    >>> knee_point([1, 2, 3, 4, 5, 6], [100.0, 60.0, 25.0, 20.0, 17.0, 15.0], "linear")
    2
    >>> knee_point([1, 2, 3, 4, 5, 6], [100.0, 50.0, 25.0, 3.0, 2.9, 2.8])
    3
    """
    if scale not in ("log", "linear"):
        raise ValueError(f"scale must be 'log' or 'linear', got {scale!r}")
    x = np.asarray(list(ks), dtype=np.float64)
    y = np.asarray(list(inertias), dtype=np.float64)
    if x.shape != y.shape:
        raise ValueError(f"ks and inertias differ in length: {x.size} and {y.size}")
    if scale == "log" and y.size:
        if np.any(y < 0):
            raise ValueError("inertias must be non-negative for scale='log'")
        y = np.log(np.maximum(y, 1e-12 * y.max()) if y.max() > 0 else np.ones_like(y))
    if x.size < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return None
    x = (x - x.min()) / np.ptp(x)
    y = (y - y.min()) / np.ptp(y)
    # Signed distance to the chord (x0, y0) -> (x1, y1); positive below it for
    # a decreasing curve (the 2-D cross product of chord and point vectors).
    dx, dy = x[-1] - x[0], y[-1] - y[0]
    below = (dx * (y[0] - y) - dy * (x[0] - x)) / np.hypot(dx, dy)
    best = int(np.argmax(below))
    return best if below[best] > 1e-12 else None


def _check_ks(ks: Iterable[int]) -> list[int]:
    try:
        values = list(ks)
    except TypeError:
        raise ValueError(
            f"ks must be an iterable of integers >= 1, got {type(ks).__name__}"
        ) from None
    if not values:
        raise ValueError("ks is empty: give at least one number of clusters, e.g. range(1, 9)")
    for k in values:
        if isinstance(k, bool) or not isinstance(k, numbers.Integral):
            raise ValueError(f"ks must hold integers >= 1, got {k!r} ({type(k).__name__})")
        if k < 1:
            raise ValueError(f"ks must hold integers >= 1, got k={k}")
    duplicates = sorted({int(k) for k in values if values.count(k) > 1})
    if duplicates:
        raise ValueError(f"ks holds duplicates: {duplicates}")
    return sorted(int(k) for k in values)


@contextmanager
def _shared_client(report: Callable[[str], None], X: Any) -> Iterator[None]:
    """Make sure every fit uses one client: the active one, or one LocalCluster.

    The LocalCluster's workers are threads of this process for rows already
    in its memory, as a fit's own (:func:`~kmeans_dask._engine.client.local_client`).
    """
    from kmeans_dask._engine.client import active_client, local_client
    from kmeans_dask._io.inputs import is_in_memory

    if active_client() is not None:
        yield
        return
    # The default client while the fits run, so every fit finds it.
    with local_client("elbow", report, set_as_default=True, in_process=is_in_memory(X)):
        yield


def _best(ks: list[int], values: Iterable[float], better: Callable) -> int | None:
    """The ``k`` whose finite value is ``better`` (max or min); None if none is finite."""
    finite = [(value, k) for k, value in zip(ks, values, strict=True) if math.isfinite(value)]
    if not finite:
        return None
    best = better(value for value, _ in finite)
    return next(k for value, k in finite if value == best)  # the smallest such k


def pick_by_criterion(
    ks: list[int],
    inertias: list[float],
    silhouettes: list[float] | None = None,
    calinski_harabasz: list[float] | None = None,
    davies_bouldin: list[float] | None = None,
    scale: Scale = "log",
) -> dict[str, int | None]:
    """The ``k`` each criterion picks: the highest Calinski-Harabasz, the elbow,
    the highest silhouette, the lowest Davies-Bouldin (ties to the smaller ``k``).

    Parameters
    ----------
    ks : list of int
        Increasing numbers of clusters.
    inertias : list of float
        Inertia of each ``k``.
    silhouettes, calinski_harabasz, davies_bouldin : list of float, optional
        The scores of each ``k`` (NaN where undefined); criteria left out
        pick nothing and are not in the result.
    scale : {"log", "linear"}, default="log"
        The inertia scale of the elbow (see :func:`knee_point`).

    Returns
    -------
    picks : dict of str to int or None
        By the names in :data:`CRITERIA`, in that order.

    Examples
    --------
    >>> pick_by_criterion([2, 3, 4], [9.0, 2.0, 1.5], [0.5, 0.7, 0.6], [10.0, 30.0, 20.0],
    ...                   [0.9, 0.4, 0.6])
    {'calinski_harabasz': 3, 'elbow': 3, 'silhouette': 3, 'davies_bouldin': 3}
    """
    knee = knee_point(ks, inertias, scale)
    picks: dict[str, int | None] = {}
    for name, values, better in (
        ("silhouette", silhouettes, max),
        ("calinski_harabasz", calinski_harabasz, max),
        ("davies_bouldin", davies_bouldin, min),
    ):
        if values is not None:
            picks[name] = _best(ks, values, better)
    picks["elbow"] = None if knee is None else ks[knee]
    return {name: picks[name] for name in CRITERIA if name in picks}


def suggest_k(picks: dict[str, int | None]) -> tuple[int | None, str]:
    """The ``k`` most criteria pick, and why.

    A tie between several ``k`` goes to the one picked by the criterion
    listed first in :data:`CRITERIA` (the most reliable in our measurements).

    Parameters
    ----------
    picks : dict of str to int or None
        What :func:`pick_by_criterion` returns.

    Returns
    -------
    k : int or None
        None when no criterion picks a ``k``.
    reason : str
        Which criteria agree on ``k`` and what the others pick.

    Examples
    --------
    >>> suggest_k({"silhouette": 3, "calinski_harabasz": 8, "davies_bouldin": 3, "elbow": 4})
    (3, 'silhouette and Davies-Bouldin pick k=3; Calinski-Harabasz picks 8, elbow 4')
    >>> suggest_k({"elbow": 4, "calinski_harabasz": 5})[0]
    5
    """
    chosen = [(name, k) for name, k in picks.items() if k is not None]
    if not chosen:
        return None, "no criterion picks a k (try more or wider ks)"
    votes = Counter(k for _, k in chosen)
    most = max(votes.values())
    # CRITERIA order: the first criterion whose pick has the most votes decides a tie.
    order = sorted(chosen, key=lambda item: list(CRITERIA).index(item[0]))
    k = next(pick for _, pick in order if votes[pick] == most)
    agree = [CRITERIA[name] for name, pick in order if pick == k]
    others = [(CRITERIA[name], pick) for name, pick in order if pick != k]
    if len(agree) == 1:
        reason = f"{agree[0]} picks k={k}"
    elif len(agree) == len(CRITERIA) == len(picks):
        reason = f"all four criteria pick k={k}"
    else:
        reason = f"{', '.join(agree[:-1])} and {agree[-1]} pick k={k}"
    if others:
        first, *rest = others
        said = [f"{first[0]} picks {first[1]}", *(f"{name} {pick}" for name, pick in rest)]
        reason += "; " + ", ".join(said)
    rivals = sorted(pick for pick, count in votes.items() if count == most and pick != k)
    if rivals:
        reason += (
            f" (a tie with k={', '.join(map(str, rivals))}: {agree[0]}, the most reliable "
            "criterion in our measurements, decides)"
        )
    missing = [CRITERIA[name] for name, pick in picks.items() if pick is None]
    if missing:
        reason += f" ({' and '.join(missing)}: no pick)"
    return k, reason


def _check_sample_size(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 2:
        raise ValueError(f"silhouette_sample_size must be an integer >= 2, got {value!r}")
    return int(value)


def _silhouette(model: Any, sample: np.ndarray) -> float:
    """Mean silhouette of ``sample`` under ``model``; NaN unless it has 2..n-1 clusters."""
    from sklearn.metrics import silhouette_score

    labels = np.asarray(model.predict(sample))
    if not 2 <= np.unique(labels).size <= len(sample) - 1:
        return float("nan")
    return float(silhouette_score(sample, labels))


def elbow(
    X: Any,
    ks: Iterable[int],
    *,
    random_state: int | None = 0,
    scale: Scale = "log",
    progress: bool = False,
    scores: bool = True,
    silhouette_sample_size: int = 10_000,
    **kmeans_params: Any,
) -> ElbowResult:
    """Fit k-means for each ``k`` in ``ks`` on the same data, score each, suggest one.

    Each fit is ``KMeans(k, random_state=random_state, **kmeans_params).fit(X)``
    on the active Dask client (as :meth:`KMeans.fit` finds it); without one, a
    single ``LocalCluster`` is started for all the fits and closed afterwards.
    After each fit, one more pass over X's chunks on the workers gives its
    Calinski-Harabasz and Davies-Bouldin scores, and the fitted model labels
    one sample of rows for the silhouette (see the module docstring). The
    suggested ``k`` is the one most of the four criteria pick.

    Parameters
    ----------
    X : array-like, dask.array, zarr.Array or str of shape (n_samples, n_features)
        Data, as :meth:`KMeans.fit` takes it. Every fit, and every score
        pass, reads it again: a Dask array that is expensive to compute is
        best persisted first.
    ks : iterable of int
        Numbers of clusters to try, each >= 1, no duplicates (fitted in
        increasing order). The elbow needs three or more; the scores are
        undefined for ``k = 1``.
    random_state : int or None, default=0
        Seed of every fit and of the silhouette's sample.
    scale : {"log", "linear"}, default="log"
        Seek the elbow on log(inertia) (the default: it found the true
        number of blobs far more often, see the module docstring) or on
        inertia itself (the textbook kneedle rule).
    progress : bool, default=False
        Show a progress bar over the values of ``k`` (one line per fit
        outside a terminal).
    scores : bool, default=True
        Compute the silhouette, Calinski-Harabasz and Davies-Bouldin scores;
        False fits only, and suggests the elbow.
    silhouette_sample_size : int, default=10000
        Rows in the silhouette's sample (all rows if X has fewer); the
        silhouette costs O(size²).
    **kmeans_params
        Other :class:`KMeans` parameters (``init``, ``n_init``, ``max_iter``,
        ``tol``, ``backend``...), the same for every fit.

    Returns
    -------
    result : ElbowResult

    Raises
    ------
    ValueError
        If ``ks`` is empty or holds a non-integer, a ``k < 1``, a duplicate
        or a ``k`` larger than the number of rows, if ``n_clusters`` is
        passed in ``kmeans_params``, if ``scale`` is unknown or if
        ``silhouette_sample_size`` is not an integer >= 2.

    Examples
    --------
    >>> from sklearn.datasets import make_blobs
    >>> from kmeans_dask.elbow import elbow
    >>> X, _ = make_blobs(2000, n_features=4, centers=4, random_state=0)
    >>> result = elbow(X, range(1, 9))  # doctest: +SKIP
    >>> result.suggested_k, result.reason  # doctest: +SKIP
    (4, 'all four criteria pick k=4')
    """
    from kmeans_dask import KMeans
    from kmeans_dask._fit.scores import fitted_scores
    from kmeans_dask.plotting import random_row_sample

    if "n_clusters" in kmeans_params:
        raise ValueError("pass the numbers of clusters as ks, not n_clusters")
    ks = _check_ks(ks)
    if scale not in ("log", "linear"):
        raise ValueError(f"scale must be 'log' or 'linear', got {scale!r}")
    sample_size = _check_sample_size(silhouette_sample_size)
    shape = getattr(X, "shape", None)
    if shape is not None and len(shape) == 2 and not np.isnan(shape[0]) and ks[-1] > shape[0]:
        raise ValueError(f"ks goes up to k={ks[-1]} but X has only {shape[0]} rows")
    inertias: list[float] = []
    seconds: list[float] = []
    n_iters: list[int] = []
    silhouettes: list[float] = []
    ch_scores: list[float] = []
    db_scores: list[float] = []
    sample = None
    verbose = kmeans_params.get("verbose", 0)
    report = print if verbose else logger.debug
    steps = StepProgress("elbow", len(ks), "fits", enabled=progress)
    with _shared_client(report, X), steps:
        for k in ks:
            model = KMeans(k, random_state=random_state, **kmeans_params)
            started = time.perf_counter()
            model.fit(X)
            seconds.append(time.perf_counter() - started)
            inertias.append(float(model.inertia_))
            n_iters.append(int(model.n_iter_))
            message = f"k={k}: inertia {model.inertia_:.6g}, {seconds[-1]:.2f} s"
            if scores:
                if sample is None:  # the same rows for every k
                    data = model._check_predict_data(X)
                    sample = random_row_sample(data, sample_size, random_state)
                silhouettes.append(_silhouette(model, sample))
                ch, db = fitted_scores(model, X)
                ch_scores.append(ch)
                db_scores.append(db)
                message += f", silhouette {silhouettes[-1]:.3f}"
            steps.advance(message)
            del model  # its labels may live on the cluster: release them now
    picks = pick_by_criterion(
        ks,
        inertias,
        *((silhouettes, ch_scores, db_scores) if scores else (None, None, None)),
        scale=scale,
    )
    suggested, reason = suggest_k(picks)
    return ElbowResult(
        ks=ks,
        inertias=inertias,
        seconds=seconds,
        suggested_k=suggested,
        n_iters=n_iters,
        scale=scale,
        silhouettes=silhouettes,
        calinski_harabasz=ch_scores,
        davies_bouldin=db_scores,
        picks=picks,
        reason=reason,
    )
