"""Preparing a table for k-means, on Dask: columns, missing values, outliers, scale.

Transformers in scikit-learn's shape (``fit``, ``transform``,
``fit_transform``, ``get_params``) that take pandas or Dask DataFrames and
give back the same kind, so they chain with :class:`~kmeans_dask.KMeans` in a
``Pipeline`` and a fitted pipeline labels the raw rows of a new table:

* :class:`TableEncoder` picks the columns, refuses those k-means cannot use
  (all missing, constant, text with too many distinct values) and one-hot
  encodes low-cardinality text or categorical columns into boolean
  indicator columns named ``column=value``;
* :class:`MissingValues` fills missing values (mean, median or a constant,
  by dask-ml's ``SimpleImputer``) or drops the rows that have any;
* :class:`OutlierFilter` drops, when fitting, the rows with ``|z| > 3`` in
  any column (the classic z-score recipe) and reports how many;
* :class:`Scaler` standardises (dask-ml's ``StandardScaler``), min-max
  scales (dask-ml's ``MinMaxScaler``) or robustly scales (median and
  interquartile range);
* :class:`Projection` projects onto principal components (dask-ml's ``PCA``).

Missing values, outliers and scaling apply to the real-valued columns;
the indicator columns of the encoder pass through them unchanged (a rare
category is not an outlier, and 0/1 needs no scaling).
:func:`make_segmentation_pipeline` chains them with ``KMeans``;
:func:`save_pipeline` and :func:`load_pipeline` write and read a fitted
pipeline without pickle. (The transformers live in
:mod:`kmeans_dask._tables.transformers`, the file format in
:mod:`kmeans_dask._tables.pipeline_files`.)
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from sklearn.pipeline import Pipeline

from kmeans_dask._tables.pipeline_files import read_pipeline, write_pipeline
from kmeans_dask._tables.transformers import (
    IMPUTE_STRATEGIES,
    SCALE_METHODS,
    MissingValues,
    OutlierFilter,
    Projection,
    Scaler,
    TableEncoder,
)

__all__ = [
    "IMPUTE_STRATEGIES",
    "SCALE_METHODS",
    "MissingValues",
    "OutlierFilter",
    "Projection",
    "Scaler",
    "TableEncoder",
    "load_pipeline",
    "make_segmentation_pipeline",
    "save_pipeline",
]


def make_segmentation_pipeline(
    n_clusters: int = 8,
    *,
    columns: Sequence[str] | None = None,
    max_categories: int = 20,
    impute: str = "median",
    fill_value: float = 0.0,
    outlier_threshold: float | None = 3.0,
    scale: str | None = "standard",
    pca: int | None = None,
    **kmeans_params: Any,
) -> Pipeline:
    """The classic segmentation recipe as a scikit-learn ``Pipeline`` ending in ``KMeans``.

    Steps: ``encode`` (:class:`TableEncoder`), ``impute``
    (:class:`MissingValues`), ``outliers`` (:class:`OutlierFilter`, left out
    when ``outlier_threshold`` is None or 0), ``scale`` (:class:`Scaler`,
    left out when ``scale`` is None), ``pca`` (:class:`Projection`, only
    with ``pca``) and ``kmeans``.

    Parameters
    ----------
    n_clusters : int, default=8
    columns, max_categories
        Of :class:`TableEncoder`.
    impute, fill_value
        :class:`MissingValues`'s ``strategy`` and ``fill_value``.
    outlier_threshold : float or None, default=3.0
    scale : {"standard", "robust", "minmax"} or None, default="standard"
    pca : int, optional
        Number of principal components to cluster on.
    **kmeans_params
        Other :class:`~kmeans_dask.KMeans` parameters.

    Returns
    -------
    sklearn.pipeline.Pipeline

    Examples
    --------
    >>> from kmeans_dask.preprocessing import make_segmentation_pipeline
    >>> pipeline = make_segmentation_pipeline(4, columns=["age", "income", "region"])
    >>> [name for name, _ in pipeline.steps]
    ['encode', 'impute', 'outliers', 'scale', 'kmeans']
    """
    from kmeans_dask import KMeans

    steps: list[tuple[str, Any]] = [
        ("encode", TableEncoder(columns=columns, max_categories=max_categories)),
        ("impute", MissingValues(strategy=impute, fill_value=fill_value)),
    ]
    if outlier_threshold:
        steps.append(("outliers", OutlierFilter(threshold=outlier_threshold)))
    if scale is not None:
        steps.append(("scale", Scaler(method=scale)))
    if pca is not None:
        steps.append(("pca", Projection(n_components=pca)))
    steps.append(("kmeans", KMeans(n_clusters, **kmeans_params)))
    return Pipeline(steps)


def save_pipeline(pipeline: Pipeline, path: str | os.PathLike, *, overwrite: bool = False) -> None:
    """Write a fitted pipeline of this module's steps and ``KMeans`` to a file, without pickle.

    The file is a safetensors file: the fitted arrays as tensors, the steps,
    their parameters and column names as JSON in its header, and the
    ``KMeans`` step as its own model file (:meth:`KMeans.save`) inside. It
    is written to a temporary sibling and moved into place when complete.

    Raises
    ------
    TypeError
        If a step is not one of this module's transformers or ``KMeans``.
    FileExistsError
        If ``path`` exists and ``overwrite`` is false.
    """
    write_pipeline(pipeline, path, overwrite=overwrite)


def load_pipeline(path: str | os.PathLike) -> Pipeline:
    """Read a pipeline written by :func:`save_pipeline`.

    Nothing in the file is executed or unpickled: the step kinds come from a
    fixed list, parameters and fitted arrays are checked (names, types,
    shapes) before they are set, and a file that fails a check is refused.

    Raises
    ------
    FileNotFoundError
        If there is no file at ``path``.
    ValueError
        If the file is not a valid pipeline file (the message says what is wrong).
    """
    return read_pipeline(path)
