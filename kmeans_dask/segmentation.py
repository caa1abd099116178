"""Segment a table: preprocess, choose k, fit, label every row, describe the segments.

:func:`segment` runs the whole recipe on a table (a path or a DataFrame):
:func:`~kmeans_dask.preprocessing.make_segmentation_pipeline`'s steps, the
elbow when ``n_clusters="auto"``, ``KMeans``, and labels for every row of
the table (the rows dropped as outliers included: they are left out of the
fit, not out of the result). :func:`summarize_segments` describes each
segment in the table's own units; :func:`summary_markdown`,
:func:`summary_table` and :func:`write_summary` show it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from kmeans_dask._fit.progress import StepProgress
from kmeans_dask._io.tables import is_table_source, read_table, table_as_array

__all__ = [
    "SegmentationResult",
    "choose_k",
    "label_table",
    "segment",
    "summarize_segments",
    "summary_markdown",
    "summary_table",
    "write_summary",
]

logger = logging.getLogger(__name__)

#: The column the labels are written to.
SEGMENT_COLUMN = "segment"
#: The k tried by ``n_clusters="auto"`` unless told otherwise.
DEFAULT_KS = tuple(range(2, 11))
#: Features named per segment in the summary's ``distinguishing`` column.
N_DISTINGUISHING = 3


@dataclass
class SegmentationResult:
    """What :func:`segment` found.

    Attributes
    ----------
    pipeline : sklearn.pipeline.Pipeline
        The fitted preprocessing steps and ``KMeans``; ``pipeline.predict``
        labels the raw rows of a new table.
    labelled : dask.dataframe.DataFrame
        The input table, every column and row in order, plus ``segment``
        (lazy).
    summary : pandas.DataFrame
        :func:`summarize_segments` of ``labelled``.
    n_clusters : int
        The k fitted.
    n_outliers : int
        Rows left out of the fit as outliers (they are labelled all the same).
    elbow : ElbowResult or None
        The k sweep, when ``n_clusters="auto"``.
    """

    pipeline: Any
    labelled: Any
    summary: pd.DataFrame
    n_clusters: int
    n_outliers: int
    elbow: Any = None


def choose_k(X: Any, ks: Iterable[int], random_state: int | None = 0, **kmeans_params: Any):
    """The suggested k of the elbow over ``ks`` (:func:`kmeans_dask.elbow.elbow`).

    Returns
    -------
    k : int
    result : ElbowResult

    Raises
    ------
    ValueError
        If the sweep suggests no k (no elbow in ``ks``).
    """
    from kmeans_dask.elbow import elbow

    result = elbow(X, ks, random_state=random_state, **kmeans_params)
    if result.suggested_k is None:
        raise ValueError(
            f"no elbow found among k = {result.ks}; give the number of segments (-k N) or "
            "other k to try (--ks)"
        )
    return result.suggested_k, result


def segment(
    table: Any,
    n_clusters: int | str = "auto",
    *,
    columns: Sequence[str] | None = None,
    ks: Iterable[int] = DEFAULT_KS,
    impute: str = "median",
    fill_value: float = 0.0,
    outlier_threshold: float | None = 3.0,
    scale: str | None = "standard",
    max_categories: int = 20,
    pca: int | None = None,
    random_state: int | None = 0,
    progress: bool = False,
    **kmeans_params: Any,
) -> SegmentationResult:
    """Segment the rows of a table with k-means, after the classic preparation.

    Parameters
    ----------
    table : str, os.PathLike, pandas or Dask DataFrame
        The table, or its path (see :func:`kmeans_dask.read_table`).
    n_clusters : int or "auto", default="auto"
        "auto" fits every k in ``ks`` and takes the elbow's (see
        :func:`choose_k`).
    columns : list of str, optional
        Columns to segment on; default: all. The result keeps every column.
    ks : iterable of int, default=range(2, 11)
        The k tried by "auto".
    impute, fill_value, outlier_threshold, scale, max_categories, pca
        Of :func:`~kmeans_dask.preprocessing.make_segmentation_pipeline`.
    random_state : int or None, default=0
    progress : bool, default=False
        Show the steps (and the elbow's fits) as they run.
    **kmeans_params
        Other :class:`~kmeans_dask.KMeans` parameters.

    Returns
    -------
    SegmentationResult

    Raises
    ------
    ValueError, TypeError
        For a column k-means cannot use (named), no rows left after the
        outliers are removed, fewer rows than segments, or no elbow.

    Examples
    --------
    >>> from kmeans_dask.segmentation import segment
    >>> result = segment("customers.parquet", "auto")  # doctest: +SKIP
    >>> result.labelled.to_parquet("segments.parquet")  # doctest: +SKIP
    """
    from kmeans_dask.preprocessing import make_segmentation_pipeline

    auto = isinstance(n_clusters, str)
    if auto and n_clusters != "auto":
        raise ValueError(f"n_clusters must be an integer >= 1 or 'auto', got {n_clusters!r}")
    if is_table_source(table):
        table = read_table(table)
    elif isinstance(table, pd.DataFrame):
        import dask.dataframe as dd

        table = dd.from_pandas(table, npartitions=1)
    if SEGMENT_COLUMN in table.columns:
        raise ValueError(
            f"the table already has a column {SEGMENT_COLUMN!r}, where the labels go: rename it"
        )
    pipeline = make_segmentation_pipeline(
        2 if auto else n_clusters,
        columns=columns,
        max_categories=max_categories,
        impute=impute,
        fill_value=fill_value,
        outlier_threshold=outlier_threshold,
        scale=scale,
        pca=pca,
        random_state=random_state,
        **kmeans_params,
    )
    steps = StepProgress("segment", 4, "steps", enabled=progress)
    with steps:
        prepared = table
        for _, step in pipeline.steps[:-1]:
            # Each step reads the one before from memory, not from the whole chain again.
            prepared = step.fit_transform(prepared).persist()
        X = table_as_array(prepared).persist()
        outliers = pipeline.named_steps.get("outliers")
        n_outliers = 0 if outliers is None else outliers.n_dropped_
        steps.advance(f"prepared {X.shape[0]:,} rows x {X.shape[1]} features")
        elbow = None
        if auto:
            usable = [k for k in ks if k <= X.shape[0]]
            k, elbow = choose_k(X, usable or ks, random_state, **kmeans_params)
            pipeline.named_steps["kmeans"].set_params(n_clusters=k)
        steps.advance(f"k = {pipeline.named_steps['kmeans'].n_clusters}")
        pipeline.named_steps["kmeans"].fit(prepared)
        steps.advance("fitted")
        labelled = label_table(table, pipeline)
        summary = summarize_segments(labelled, pipeline.named_steps["encode"])
        steps.advance(f"{len(summary)} segments described")
    return SegmentationResult(
        pipeline=pipeline,
        labelled=labelled,
        summary=summary,
        n_clusters=int(pipeline.named_steps["kmeans"].n_clusters),
        n_outliers=int(n_outliers),
        elbow=elbow,
    )


def label_table(
    table: Any,
    model: Any,
    column: str = SEGMENT_COLUMN,
    features: Sequence[str] | None = None,
):
    """The table with every column and row in order, plus the model's label of each row.

    ``model`` is a fitted pipeline (raw rows in) or a ``KMeans``, given the
    columns ``features`` (default: all). Each partition is labelled where
    it is, so rows keep their order and no index is needed to align them.

    Raises
    ------
    ValueError
        If the table already has a column named ``column``.
    """
    if column in table.columns:
        raise ValueError(f"the table already has a column {column!r}; rename it before labelling")
    if features is not None:
        missing = [c for c in features if c not in table.columns]
        if missing:
            raise ValueError(f"the table lacks column(s) {missing} that the model needs")
        features = list(features)
    meta = table._meta.assign(**{column: np.zeros(0, dtype=np.int32)})
    return table.map_partitions(_label_part, model, column, features, meta=meta)


def _label_part(
    part: pd.DataFrame, model: Any, column: str, features: list[str] | None
) -> pd.DataFrame:
    rows = part if features is None else part[features]
    labels = model.predict(rows) if len(part) else np.zeros(0, dtype=np.int32)
    return part.assign(**{column: np.asarray(labels, dtype=np.int32)})


def summarize_segments(labelled: Any, encoder: Any, column: str = SEGMENT_COLUMN) -> pd.DataFrame:
    """Per segment, in the table's own units: size, share, mean and median of each feature.

    Parameters
    ----------
    labelled : pandas or Dask DataFrame
        A table with a ``segment`` column (:func:`label_table`).
    encoder : TableEncoder
        The fitted encoder: its numeric columns are described by mean and
        median, and the ``distinguishing`` column names the features
        (numeric, or a text value's share) whose segment mean lies furthest
        from the whole table's, in standard deviations of the whole table
        (the standardised mean difference), e.g. ``"body_mass_g +1.6 sd"``.

    Returns
    -------
    pandas.DataFrame
        One row per segment, by segment number: ``segment``, ``size``,
        ``share``, ``<feature> mean``, ``<feature> median`` per numeric
        feature, and ``distinguishing``. Missing values are left out of the
        means and medians.
    """
    import dask

    from kmeans_dask._io.tables import is_dask_dataframe

    numeric = list(encoder.numeric_columns_)
    lazy = is_dask_dataframe(labelled)
    if lazy:
        meta = _profile_part(labelled._meta, encoder, column)
        profile = labelled.map_partitions(_profile_part, encoder, column, meta=meta)
    else:
        profile = _profile_part(labelled, encoder, column)
    features = [c for c in profile.columns if c != column]
    grouped = profile.groupby(column)
    sizes, means, medians, overall_mean, overall_std = dask.compute(
        grouped.size(),
        grouped[features].mean(),
        # Dask's exact groupby median shuffles; by tasks, as the cluster may lack P2P.
        grouped[numeric].median(**({"shuffle_method": "tasks"} if lazy else {})),
        profile[features].mean(),
        profile[features].std(ddof=0),
    )
    sizes = sizes.sort_index()
    summary = pd.DataFrame(
        {
            "segment": sizes.index.astype(int),
            "size": sizes.to_numpy(),
            "share": sizes.to_numpy() / sizes.sum(),
        }
    )
    means, medians = means.loc[sizes.index], medians.loc[sizes.index]
    for feature in numeric:
        summary[f"{feature} mean"] = means[feature].to_numpy()
        summary[f"{feature} median"] = medians[feature].to_numpy()
    std = overall_std.replace(0.0, np.nan)
    difference = (means[features] - overall_mean[features]) / std[features]
    summary["distinguishing"] = [_strongest(difference.loc[segment]) for segment in sizes.index]
    return summary


def _profile_part(part: pd.DataFrame, encoder: Any, column: str) -> pd.DataFrame:
    """The encoded features of a labelled part as float64 (indicators 0/1), and its labels."""
    encoded = encoder.transform(part.drop(columns=column)).astype(np.float64)
    return encoded.assign(**{column: part[column].to_numpy()})


def _strongest(differences: pd.Series) -> str:
    ranked = differences.dropna().abs().sort_values(ascending=False).index[:N_DISTINGUISHING]
    return ", ".join(f"{name} {differences[name]:+.1f} sd" for name in ranked)


def _formatted(summary: pd.DataFrame) -> pd.DataFrame:
    """The summary as text: sizes with thousands separators, shares in %, 4 significant digits."""
    shown = pd.DataFrame(index=summary.index)
    for name in summary.columns:
        values = summary[name]
        if name == "share":
            shown[name] = [f"{v:.1%}" for v in values]
        elif name in ("segment", "size"):
            shown[name] = [f"{int(v):,}" for v in values]
        elif values.dtype.kind == "f":
            shown[name] = [f"{v:.4g}" for v in values]
        else:
            shown[name] = values.astype(str)
    return shown


def summary_markdown(summary: pd.DataFrame) -> str:
    """The summary as a Markdown table."""
    shown = _formatted(summary)
    lines = ["| " + " | ".join(shown.columns) + " |"]
    lines.append("| " + " | ".join("---" for _ in shown.columns) + " |")
    lines += ["| " + " | ".join(row) + " |" for row in shown.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def summary_table(summary: pd.DataFrame, title: str = "segments"):
    """The summary for a terminal: sizes and what sets each segment apart, then the features.

    Returns
    -------
    rich.console.Group
        Two ``rich.table.Table``: one row per segment (size, share,
        distinguishing features), then one row per feature with each
        segment's mean and median (features as rows keep it narrow).
    """
    from rich.console import Group
    from rich.table import Table

    shown = _formatted(summary)
    segments = Table(title=title)
    for name in ("segment", "size", "share", "distinguishing"):
        segments.add_column(name, justify="left" if name == "distinguishing" else "right")
    for _, row in shown.iterrows():
        segments.add_row(row["segment"], row["size"], row["share"], row["distinguishing"])
    features = Table(title="mean (median) per segment, in the table's units")
    features.add_column("feature")
    for label in shown["segment"]:
        features.add_column(f"segment {label}", justify="right")
    for name in summary.columns:
        if name.endswith(" mean"):
            feature = name[: -len(" mean")]
            features.add_row(
                feature,
                *(
                    f"{mean} ({median})"
                    for mean, median in zip(shown[name], shown[f"{feature} median"], strict=True)
                ),
            )
    return Group(segments, features)


def write_summary(summary: pd.DataFrame, path: str | os.PathLike, *, overwrite: bool = False):
    """Write the summary as CSV (``.csv``) or Markdown (``.md``), whole or not at all.

    Raises
    ------
    ValueError
        If ``path`` ends in neither.
    FileExistsError
        If ``path`` exists and ``overwrite`` is false.
    """
    from kmeans_dask._io.output_paths import written_whole

    location = os.fspath(path)
    if not location.lower().endswith((".csv", ".md")):
        raise ValueError(
            f"--summary {location!r}: expected a name ending in .csv or .md (the format is "
            "taken from it)"
        )
    with written_whole(location, "--summary", overwrite=overwrite, store=False) as partial:
        if location.lower().endswith(".csv"):
            summary.to_csv(partial, index=False)
        else:
            with open(partial, "w", encoding="utf-8") as handle:
                handle.write(summary_markdown(summary))
