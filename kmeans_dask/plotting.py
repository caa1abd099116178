"""Diagnostic plots of a fitted :class:`~kmeans_dask.KMeans` (matplotlib).

matplotlib is imported only when a function here is called (``pip install
matplotlib`` if it is missing). Without a display (Linux with neither
``DISPLAY`` nor ``WAYLAND_DISPLAY``) and with no backend chosen by the user
(``MPLBACKEND`` or an imported ``matplotlib.pyplot``), the non-interactive Agg
backend is selected, so the functions work on cluster nodes and in CI; save
the figures with ``ax.figure.savefig(...)``.

Functions that look at the data (:func:`silhouette_on_sample`,
:func:`plot_silhouette`, :func:`plot_clusters_2d`) work on a uniform random
sample of rows: for a Dask array only the sampled rows are computed.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Any

import numpy as np
from sklearn.utils.validation import check_is_fitted

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from kmeans_dask.elbow import ElbowResult

__all__ = [
    "plot_clusters_2d",
    "plot_convergence",
    "plot_elbow",
    "plot_k_selection",
    "plot_segments",
    "plot_silhouette",
    "silhouette_on_sample",
]

RandomState = int | np.random.Generator | None


def _pyplot() -> Any:
    """``matplotlib.pyplot``, with the Agg backend when there is no display."""
    try:
        import matplotlib
    except ImportError as exc:
        raise ImportError(
            "kmeans_dask.plotting needs matplotlib, which is not installed: pip install matplotlib"
        ) from exc
    no_display = sys.platform.startswith("linux") and not (
        os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
    )
    if no_display and "MPLBACKEND" not in os.environ and "matplotlib.pyplot" not in sys.modules:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _axes(ax: Axes | None, figsize: tuple[float, float] = (6.4, 4.8)) -> Axes:
    if ax is not None:
        return ax
    _, ax = _pyplot().subplots(figsize=figsize, layout="constrained")
    return ax


def random_row_sample(X: Any, n_samples: int, random_state: RandomState) -> np.ndarray:
    """Up to ``n_samples`` distinct random rows of X (in row order) as a NumPy array.

    X is a NumPy-like array or a Dask array; of a Dask array only the chunks
    holding sampled rows are computed.
    """
    if isinstance(n_samples, bool) or not isinstance(n_samples, int | np.integer):
        raise ValueError(f"n_samples must be an integer >= 2, got {n_samples!r}")
    if n_samples < 2:
        raise ValueError(f"n_samples must be an integer >= 2, got {n_samples}")
    if not hasattr(X, "shape") or not hasattr(X, "__getitem__"):
        X = np.asarray(X)
    if len(X.shape) != 2:
        raise ValueError(f"X must be 2-D (n_samples, n_features), got shape {X.shape}")
    n_rows = X.shape[0]
    if isinstance(n_rows, float) and np.isnan(n_rows):
        raise ValueError("X has unknown chunk sizes: call X.compute_chunk_sizes() first")
    if n_rows > n_samples:
        rng = np.random.default_rng(random_state)
        rows = np.sort(rng.choice(n_rows, size=n_samples, replace=False))
        X = X[rows]
    if hasattr(X, "compute"):
        X = X.compute()
    return np.asarray(X)


def _sample_and_labels(
    model: Any, X: Any, n_samples: int, random_state: RandomState
) -> tuple[np.ndarray, np.ndarray]:
    check_is_fitted(model)
    sample = random_row_sample(X, n_samples, random_state)
    labels = np.asarray(model.predict(sample))
    return sample, labels


def _check_two_labels(labels: np.ndarray, n_rows: int) -> None:
    n_labels = np.unique(labels).size
    if not 2 <= n_labels <= n_rows - 1:
        raise ValueError(
            f"the silhouette needs 2 to n_samples - 1 distinct clusters in the sample; the "
            f"{n_rows} sampled rows fall in {n_labels} cluster(s)"
        )


def plot_convergence(model: Any, ax: Axes | None = None) -> Axes:
    """Inertia and centre shift per Lloyd iteration, from ``model.history_``.

    The inertia (of the assignment to the centres entering each iteration)
    is drawn on a log y axis with the final ``inertia_`` as a dashed line;
    the centre shift (sum of squared centre moves) on a second, log-scaled
    y axis sharing x (``ax.get_shared_x_axes().get_siblings(ax)``).
    Iterations whose shift is exactly 0 have no point on the log axis.

    Parameters
    ----------
    model : KMeans
        A model fitted with :meth:`KMeans.fit` (models from ``partial_fit``
        or loaded from a file keep no history).
    ax : matplotlib.axes.Axes, optional
        Where to draw; a new figure is made when None.

    Returns
    -------
    ax : matplotlib.axes.Axes
        The inertia axes.

    Raises
    ------
    sklearn.exceptions.NotFittedError
        If the model is not fitted.
    ValueError
        If the model has no iteration history.

    Examples
    --------
    >>> from kmeans_dask import KMeans
    >>> from kmeans_dask.plotting import plot_convergence
    >>> model = KMeans(8, random_state=0).fit(X)  # doctest: +SKIP
    >>> plot_convergence(model).figure.savefig("convergence.png")  # doctest: +SKIP
    """
    check_is_fitted(model)
    history = list(getattr(model, "history_", None) or [])
    if not history:
        raise ValueError(
            "the model has no iteration history (history_): plot_convergence needs a model "
            "fitted with KMeans.fit; partial_fit and loaded models keep none"
        )
    iterations = [r.iteration for r in history]
    ax = _axes(ax)
    (inertia_line,) = ax.plot(
        iterations, [r.inertia for r in history], "o-", color="C0", label="inertia"
    )
    final = ax.axhline(
        model.inertia_, color="C0", linestyle="--", linewidth=1, label="final inertia"
    )
    ax.set_yscale("log")
    ax.set_xlabel("iteration")
    ax.set_ylabel("inertia")
    shift_ax = ax.twinx()
    shifts = np.array([r.center_shift for r in history], dtype=np.float64)
    (shift_line,) = shift_ax.plot(
        iterations, np.where(shifts > 0, shifts, np.nan), "s-", color="C1", label="centre shift"
    )
    if np.any(shifts > 0):
        shift_ax.set_yscale("log")
    shift_ax.set_ylabel("centre shift (sum of squared moves)")
    ax.legend(handles=[inertia_line, final, shift_line], loc="upper right")
    ax.set_title(f"k={model.n_clusters}: {len(history)} iteration(s)")
    return ax


def plot_elbow(result: ElbowResult, ax: Axes | None = None) -> Axes:
    """Inertia against k, with the elbow marked.

    Draws the (k, inertia) curve, the chord from its first to its last point
    (the kneedle rule picks the point farthest below it) and, when there is
    one, the elbow (``result.picks["elbow"]``) as a red marker and a
    vertical line. The y axis
    is logarithmic when the elbow was sought on log(inertia)
    (``result.scale == "log"``, the default), so the chord drawn is the one
    the rule used.

    Parameters
    ----------
    result : ElbowResult
        What :func:`kmeans_dask.elbow.elbow` returned.
    ax : matplotlib.axes.Axes, optional
        Where to draw; a new figure is made when None.

    Returns
    -------
    ax : matplotlib.axes.Axes

    Examples
    --------
    >>> from kmeans_dask.elbow import elbow
    >>> from kmeans_dask.plotting import plot_elbow
    >>> result = elbow(X, range(1, 11))  # doctest: +SKIP
    >>> plot_elbow(result).figure.savefig("elbow.png")  # doctest: +SKIP
    """
    if not result.ks:
        raise ValueError("the ElbowResult is empty: nothing to plot")
    ax = _axes(ax)
    ax.plot(result.ks, result.inertias, "o-", color="C0", label="inertia")
    if len(result.ks) >= 2:
        ax.plot(
            [result.ks[0], result.ks[-1]],
            [result.inertias[0], result.inertias[-1]],
            linestyle=":",
            color="0.5",
            label="chord",
        )
    # The elbow's own pick (a result with scores may suggest another k).
    knee = result.picks.get("elbow") if result.picks else result.suggested_k
    if knee is not None:
        k = knee
        inertia = result.inertias[result.ks.index(k)]
        ax.axvline(k, color="C3", linestyle="--", linewidth=1)
        ax.plot([k], [inertia], "o", color="C3", markersize=12, label=f"elbow: k={k}")
        ax.set_title(f"elbow at k={k}")
    else:
        ax.set_title("no elbow found")
    log_inertia = getattr(result, "scale", "linear") == "log" and min(result.inertias) > 0
    if log_inertia:
        ax.set_yscale("log")
    if min(result.ks) >= 1 and max(result.ks) >= 8 * min(result.ks):
        # k spread over octaves (2, 4, 8, ... 1024): equal room for each doubling
        from matplotlib.ticker import FixedLocator, NullLocator, ScalarFormatter

        ax.set_xscale("log", base=2)
        ax.xaxis.set_major_locator(FixedLocator(result.ks))
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xlabel("number of clusters k (log scale)")
    else:
        ax.set_xlabel("number of clusters k")
    ax.set_ylabel("inertia (log scale)" if log_inertia else "inertia")
    ax.legend()
    return ax


#: The score panels of :func:`plot_k_selection`: attribute, criterion, axis label.
_SCORE_PANELS = (
    ("silhouettes", "silhouette", "silhouette (higher is better)"),
    ("calinski_harabasz", "calinski_harabasz", "Calinski-Harabasz (higher is better)"),
    ("davies_bouldin", "davies_bouldin", "Davies-Bouldin (lower is better)"),
)


def plot_k_selection(result: ElbowResult, figure: Figure | None = None) -> Figure:
    """Every criterion of :func:`kmeans_dask.elbow.elbow` against k, in one figure.

    Four panels: the inertia with its elbow (as :func:`plot_elbow` draws
    it), the silhouette, the Calinski-Harabasz and the Davies-Bouldin
    scores, each with the ``k`` its criterion picks as a red marker; a
    dashed grey line marks the suggested ``k`` in every panel, and the
    figure's title gives the reason. A result without scores
    (``elbow(..., scores=False)``) gets the inertia panel only.

    Parameters
    ----------
    result : ElbowResult
        What :func:`kmeans_dask.elbow.elbow` returned.
    figure : matplotlib.figure.Figure, optional
        An empty figure to draw in; a new one is made when None.

    Returns
    -------
    figure : matplotlib.figure.Figure
        ``figure.axes[0]`` is the inertia panel, then one per score.

    Examples
    --------
    >>> from kmeans_dask.elbow import elbow
    >>> from kmeans_dask.plotting import plot_k_selection
    >>> result = elbow(X, range(1, 11))  # doctest: +SKIP
    >>> plot_k_selection(result).savefig("choose_k.png")  # doctest: +SKIP
    """
    if not result.ks:
        raise ValueError("the ElbowResult is empty: nothing to plot")
    panels = [p for p in _SCORE_PANELS if getattr(result, p[0])]
    if figure is None:
        width = 6.4 if not panels else 11.0
        figure = _pyplot().figure(
            figsize=(width, 4.8 if not panels else 8.0), layout="constrained"
        )
    grid = (1, 1) if not panels else (2, 2)
    axes = [figure.add_subplot(*grid, index + 1) for index in range(1 + len(panels))]
    plot_elbow(result, ax=axes[0])
    for ax, (attribute, criterion, label) in zip(axes[1:], panels, strict=True):
        ax.plot(result.ks, getattr(result, attribute), "o-", color="C0")
        pick = result.picks.get(criterion)
        if pick is not None:
            value = getattr(result, attribute)[result.ks.index(pick)]
            ax.plot([pick], [value], "o", color="C3", markersize=12, label=f"pick: k={pick}")
            ax.legend()
        ax.set_xlabel("number of clusters k")
        ax.set_ylabel(label)
    if result.suggested_k is not None:
        for ax in axes:
            ax.axvline(result.suggested_k, color="0.4", linestyle="--", linewidth=1)
        figure.suptitle(f"suggested k={result.suggested_k}: {result.reason}")
    else:
        figure.suptitle(result.reason or "no k suggested")
    return figure


def _cluster_colours(n_clusters: int):
    """A colormap of ``n_clusters`` distinct colours, one per cluster label.

    ``tab10``/``tab20`` up to 20 clusters; beyond, evenly spaced hues of
    ``turbo`` in a fixed shuffled order, so neighbouring labels contrast and
    no two clusters share a colour.
    """
    import matplotlib
    from matplotlib.colors import ListedColormap

    if n_clusters <= 20:
        name = "tab10" if n_clusters <= 10 else "tab20"
        return ListedColormap(matplotlib.colormaps[name].colors[:n_clusters])
    hues = matplotlib.colormaps["turbo"](np.linspace(0.05, 0.95, n_clusters))
    order = np.random.default_rng(0).permutation(n_clusters)
    return ListedColormap(hues[order])


def silhouette_on_sample(
    model: Any, X: Any, n_samples: int = 10_000, random_state: RandomState = 0
) -> float:
    """Mean silhouette coefficient of a random sample of rows.

    The silhouette costs O(n²) in the number of rows, so it is computed
    (with :func:`sklearn.metrics.silhouette_score`) on up to ``n_samples``
    rows drawn uniformly without replacement, labelled by ``model.predict``.

    Parameters
    ----------
    model : KMeans
        A fitted model.
    X : array-like or dask.array of shape (n_samples, n_features)
        The data; of a Dask array only the sampled rows are computed.
    n_samples : int, default=10000
        Rows in the sample (all rows if X has fewer).
    random_state : int, numpy.random.Generator or None, default=0
        Seed of the sample.

    Returns
    -------
    score : float
        In [-1, 1]; near 1 for compact, well-separated clusters.

    Raises
    ------
    sklearn.exceptions.NotFittedError
        If the model is not fitted.
    ValueError
        If the sample falls in fewer than two clusters.

    Examples
    --------
    >>> from kmeans_dask.plotting import silhouette_on_sample
    >>> silhouette_on_sample(model, X, n_samples=5_000)  # doctest: +SKIP
    0.79...
    """
    from sklearn.metrics import silhouette_score

    sample, labels = _sample_and_labels(model, X, n_samples, random_state)
    _check_two_labels(labels, sample.shape[0])
    return float(silhouette_score(sample, labels))


def plot_silhouette(
    model: Any,
    X: Any,
    n_samples: int = 10_000,
    ax: Axes | None = None,
    random_state: RandomState = 0,
) -> Axes:
    """Per-cluster silhouette profile of a random sample of rows.

    For each cluster present in the sample, its rows' silhouette values are
    sorted and drawn as one filled band, labelled with the cluster index; a
    dashed vertical line marks the mean (:func:`silhouette_on_sample` with
    the same arguments gives the same value).

    Parameters
    ----------
    model : KMeans
        A fitted model.
    X : array-like or dask.array of shape (n_samples, n_features)
        The data; of a Dask array only the sampled rows are computed.
    n_samples : int, default=10000
        Rows in the sample (all rows if X has fewer).
    ax : matplotlib.axes.Axes, optional
        Where to draw; a new figure is made when None.
    random_state : int, numpy.random.Generator or None, default=0
        Seed of the sample.

    Returns
    -------
    ax : matplotlib.axes.Axes

    Examples
    --------
    >>> from kmeans_dask.plotting import plot_silhouette
    >>> plot_silhouette(model, X).figure.savefig("silhouette.png")  # doctest: +SKIP
    """
    from sklearn.metrics import silhouette_samples

    sample, labels = _sample_and_labels(model, X, n_samples, random_state)
    _check_two_labels(labels, sample.shape[0])
    values = silhouette_samples(sample, labels)
    mean = float(values.mean())
    ax = _axes(ax, figsize=(6.4, max(4.8, 0.25 * np.unique(labels).size)))
    cmap = _pyplot().get_cmap("tab20" if model.n_clusters > 10 else "tab10")
    gap = max(1, sample.shape[0] // 100)
    bottom = gap
    for cluster in np.unique(labels):
        band = np.sort(values[labels == cluster])
        rows = np.arange(bottom, bottom + band.size)
        ax.fill_betweenx(rows, 0, band, color=cmap(int(cluster) % cmap.N), alpha=0.8)
        ax.text(-0.05, bottom + band.size / 2, str(cluster), ha="right", va="center")
        bottom += band.size + gap
    ax.axvline(mean, color="C3", linestyle="--", label=f"mean {mean:.3f}")
    ax.set_xlim(min(-0.1, float(values.min()) - 0.05), 1.0)
    ax.set_ylim(0, bottom)
    ax.set_yticks([])
    ax.set_xlabel("silhouette coefficient")
    ax.set_ylabel("cluster")
    ax.set_title(f"silhouette of {sample.shape[0]:,} sampled rows")
    ax.legend(loc="lower right")
    return ax


def plot_clusters_2d(
    model: Any,
    X: Any,
    n_samples: int = 5_000,
    ax: Axes | None = None,
    random_state: RandomState = 0,
) -> Axes:
    """Scatter of a row sample on its first two principal components.

    A PCA (:class:`sklearn.decomposition.PCA`) is fitted on up to
    ``n_samples`` random rows; the rows are coloured by ``model.predict``
    and the projected ``cluster_centers_`` drawn as black crosses. With a
    single feature the second coordinate is 0.

    Parameters
    ----------
    model : KMeans
        A fitted model.
    X : array-like or dask.array of shape (n_samples, n_features)
        The data; of a Dask array only the sampled rows are computed.
    n_samples : int, default=5000
        Rows in the sample (all rows if X has fewer).
    ax : matplotlib.axes.Axes, optional
        Where to draw; a new figure is made when None.
    random_state : int, numpy.random.Generator or None, default=0
        Seed of the sample.

    Returns
    -------
    ax : matplotlib.axes.Axes
        ``ax.collections[0]`` holds the rows, ``ax.collections[1]`` the centres.

    Examples
    --------
    >>> from kmeans_dask.plotting import plot_clusters_2d
    >>> plot_clusters_2d(model, X).figure.savefig("clusters.png")  # doctest: +SKIP
    """
    from sklearn.decomposition import PCA

    sample, labels = _sample_and_labels(model, X, n_samples, random_state)
    centers = np.asarray(model.cluster_centers_, dtype=np.float64)
    sample = sample.astype(np.float64, copy=False)
    n_components = min(2, sample.shape[1])
    pca = PCA(n_components=n_components).fit(sample)
    points, projected = pca.transform(sample), pca.transform(centers)
    if n_components == 1:
        points = np.column_stack([points, np.zeros(len(points))])
        projected = np.column_stack([projected, np.zeros(len(projected))])
    ax = _axes(ax)
    ax.scatter(
        points[:, 0],
        points[:, 1],
        c=labels,
        cmap=_cluster_colours(model.n_clusters),
        vmin=0,
        vmax=model.n_clusters - 1,
        s=4,
        alpha=0.6,
        linewidths=0,
        label="rows",
    )
    ax.scatter(
        projected[:, 0],
        projected[:, 1],
        marker="X",
        s=120,
        c="black",
        edgecolors="white",
        label="centres",
    )
    ratios = [*pca.explained_variance_ratio_, 0.0]
    ax.set_xlabel(f"PC1 ({ratios[0]:.0%} of variance)")
    ax.set_ylabel(f"PC2 ({ratios[1]:.0%} of variance)" if n_components == 2 else "(1 feature)")
    ax.set_title(f"{sample.shape[0]:,} sampled rows, k={model.n_clusters}")
    ax.legend(loc="best")
    return ax


def plot_segments(summary: Any, ax: Axes | None = None) -> Axes:
    """Each segment's mean of each feature, relative to the whole table's (a heatmap).

    Parameters
    ----------
    summary : pandas.DataFrame
        From :func:`kmeans_dask.segmentation.summarize_segments`.
    ax : matplotlib Axes, optional

    Returns
    -------
    ax : matplotlib Axes
        Rows: segments (with their share); columns: features; colour: the
        segment's mean over the table's (size-weighted) mean, annotated with
        the mean in the feature's own units.
    """
    features = [c[: -len(" mean")] for c in summary.columns if c.endswith(" mean")]
    if not features:
        raise ValueError("the summary has no numeric features to plot (no '<feature> mean')")
    means = summary[[f"{f} mean" for f in features]].to_numpy(dtype=np.float64)
    weights = summary["size"].to_numpy(dtype=np.float64)
    overall = np.average(np.nan_to_num(means), axis=0, weights=weights)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(overall != 0, means / overall, np.nan)
    ax = _axes(ax, (2.4 + 1.3 * len(features), 2.0 + 0.5 * len(summary)))
    image = ax.imshow(ratio, cmap="RdBu_r", vmin=0.5, vmax=1.5, aspect="auto")
    for (row, column), value in np.ndenumerate(means):
        ax.text(column, row, f"{value:.4g}", ha="center", va="center", fontsize=8)
    ax.set_xticks(range(len(features)), features, rotation=30, ha="right")
    ax.set_yticks(
        range(len(summary)),
        [
            f"{int(s)} ({share:.0%})"
            for s, share in zip(summary["segment"], summary["share"], strict=True)
        ],
    )
    ax.set_ylabel("segment (share)")
    ax.set_title("segment means (colour: relative to the whole table)")
    ax.figure.colorbar(image, ax=ax, label="segment mean / table mean")
    return ax
