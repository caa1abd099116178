"""The table transformers: columns, missing values, outliers, scale, projection.

Each takes pandas or Dask DataFrames and gives back the same kind; see
:mod:`kmeans_dask.preprocessing`, which makes them public.
"""

from __future__ import annotations

from collections.abc import Sequence
from numbers import Real
from typing import Any

import dask
import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from kmeans_dask._io.tables import is_dask_dataframe, is_dataframe, table_as_array

__all__ = [
    "MissingValues",
    "OutlierFilter",
    "Projection",
    "Scaler",
    "TableEncoder",
]

IMPUTE_STRATEGIES = ("mean", "median", "constant", "drop")
SCALE_METHODS = ("standard", "robust", "minmax")
#: Tables with fewer rows never have a column taken for a row identifier.
IDENTIFIER_MIN_ROWS = 100
#: Share of distinct values that makes a Dask column's approximate count (HyperLogLog,
#: about 2% off) an identifier's.
IDENTIFIER_DISTINCT_SHARE = 0.97


def _frame(X: Any, step: str):
    """X as a pandas or Dask DataFrame, or a named error."""
    if is_dataframe(X):
        return X
    if isinstance(X, np.ndarray) and X.ndim == 2:
        return pd.DataFrame(X, columns=[f"x{i}" for i in range(X.shape[1])])
    raise TypeError(
        f"{step} takes a pandas or Dask DataFrame (or a 2-D NumPy array), got {type(X).__name__}"
    )


def _compute(*values: Any) -> tuple:
    """Compute Dask values together, in one pass; pandas values as they are."""
    return dask.compute(*values)


def _float_columns(X) -> list[str]:
    """Real-valued (not indicator) columns: the ones imputed, filtered and scaled."""
    return [str(c) for c, t in X.dtypes.items() if getattr(t, "kind", "O") in "iuf"]


def _map(X, function, *args: Any):
    """``function(part, *args)`` on a pandas DataFrame, or on every partition of a Dask one."""
    if is_dask_dataframe(X):
        return X.map_partitions(function, *args, meta=function(X._meta, *args))
    return function(X, *args)


def _check_choice(name: str, value: Any, options: tuple[str, ...]) -> None:
    if not isinstance(value, str) or value not in options:
        raise ValueError(f"{name}={value!r} is not supported; expected one of {list(options)}")


def _check_number(name: str, value: Any, minimum: float, *, integer: bool = False) -> None:
    kind = int if integer else Real
    if isinstance(value, bool) or not isinstance(value, kind) or not np.isfinite(value):
        expected = "an integer" if integer else "a finite number"
        raise TypeError(f"{name} must be {expected}, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {name}={value}")


# --- columns ---------------------------------------------------------------------------


class TableEncoder(TransformerMixin, BaseEstimator):
    """Select the columns to segment on, check them, one-hot encode text columns.

    Parameters
    ----------
    columns : list of str, optional
        Columns to use, in this order; default: all.
    max_categories : int, default=20
        Text or categorical columns with at most this many distinct values
        are one-hot encoded (a missing value sets no indicator); a text
        column with more is refused (an identifier or free text cannot
        make a segment).

    Attributes
    ----------
    feature_names_in_ : ndarray of str
        The columns used, as ``columns`` gave them.
    numeric_columns_ : list of str
        Numeric columns, passed on as float64.
    categories_ : dict of str to list of str
        Per text column, its values in sorted order: one indicator each.

    Raises
    ------
    ValueError
        From ``fit``: a column that is missing from the table, all missing,
        constant, or text with more than ``max_categories`` values; with the
        default ``columns``, a column that numbers the rows. From
        ``transform``: a table that lacks a fitted column, or has a column
        of another kind (text where numbers were fitted, or the reverse).
    TypeError
        From ``fit``: a column that is neither numbers nor text (dates), or
        text that is all ISO 8601 dates, with more than ``max_categories``
        values.

    Examples
    --------
    >>> import pandas as pd
    >>> table = pd.DataFrame({"size": [1.0, 2.0, 3.0], "colour": ["red", "blue", "red"]})
    >>> TableEncoder().fit_transform(table).columns.tolist()
    ['size', 'colour=blue', 'colour=red']
    """

    def __init__(self, columns: Sequence[str] | None = None, max_categories: int = 20) -> None:
        self.columns = columns
        self.max_categories = max_categories

    def _check_params(self) -> None:
        _check_number("max_categories", self.max_categories, 1, integer=True)

    def fit(self, X: Any, y: None = None) -> TableEncoder:
        self._check_params()
        X = _frame(X, "TableEncoder")
        names = [str(c) for c in X.columns]
        columns = names if self.columns is None else [str(c) for c in self.columns]
        missing = [c for c in columns if c not in names]
        if missing:
            raise ValueError(f"column(s) {missing} not in the table; its columns are {names}")
        if not columns:
            raise ValueError("columns is empty: name at least one column to segment on")
        X = X[columns]
        numeric, text = [], []
        for column, dtype in X.dtypes.items():
            kind = getattr(dtype, "kind", "O")
            if kind in "biuf":
                numeric.append(str(column))
            elif kind in "OUS" or isinstance(dtype, pd.CategoricalDtype | pd.StringDtype):
                text.append(str(column))
            else:
                raise TypeError(
                    f"column {column!r} holds {dtype} values, neither numbers nor text: convert "
                    "it to numbers (e.g. days since a date) or leave it out (columns=...)"
                )
        cap = self.max_categories
        n_rows, counts, lows, highs, *distinct = _compute(
            _n_rows(X),
            X.count(),
            X[numeric].min() if numeric else pd.Series(dtype=float),
            X[numeric].max() if numeric else pd.Series(dtype=float),
            *(_few_distinct(X[c], cap + 1) for c in text),
        )
        for column in columns:
            if counts[column] == 0:
                raise ValueError(
                    f"column {column!r} has no values (all {n_rows} rows are missing): leave it "
                    "out (columns=... / --columns)"
                )
        for column in numeric:
            if lows[column] == highs[column]:
                raise ValueError(
                    f"column {column!r} is constant (every value is {lows[column]}): it cannot "
                    "set segments apart; leave it out (columns=... / --columns)"
                )
        if self.columns is None:
            _refuse_row_numbers(X, numeric, n_rows, counts, lows, highs)
        categories = {}
        for column, found in zip(text, distinct, strict=True):
            values = _first_distinct(found, cap + 1).tolist()
            if len(values) > cap and _all_dates(values):
                raise TypeError(
                    f"column {column!r} holds dates as text (e.g. {values[:3]}): convert it to "
                    "numbers (e.g. days since a date) or leave it out (columns=... / --columns)"
                )
            if len(values) > cap:
                (about,) = _compute(
                    X[column].nunique_approx() if is_dask_dataframe(X) else X[column].nunique()
                )
                raise ValueError(
                    f"column {column!r} is text with about {int(about):,} distinct values, more "
                    f"than max_categories={cap} to one-hot encode (e.g. {values[:3]}): "
                    "leave it out (columns=... / --columns), or raise max_categories "
                    "(--max-categories)"
                )
            if len(values) == 1 and counts[column] == n_rows:
                raise ValueError(
                    f"column {column!r} is constant (every value is {values[0]!r}): it cannot "
                    "set segments apart; leave it out (columns=... / --columns)"
                )
            categories[column] = sorted(str(v) for v in values)
        self.feature_names_in_ = np.asarray(columns, dtype=object)
        self.n_features_in_ = len(columns)
        self.numeric_columns_ = numeric
        self.categories_ = categories
        return self

    def transform(self, X: Any):
        check_is_fitted(self, "categories_")
        X = _frame(X, "TableEncoder")
        names = [str(c) for c in X.columns]
        fitted = list(self.feature_names_in_)
        missing = [c for c in fitted if c not in names]
        if missing:
            raise ValueError(
                f"the table lacks column(s) {missing} that the pipeline was fitted on; "
                f"it needs {fitted}"
            )
        for column in fitted:
            kind = getattr(X.dtypes[column], "kind", "O")
            if column in self.numeric_columns_ and kind not in "biuf":
                raise ValueError(
                    f"column {column!r} holds {X.dtypes[column]} values but the pipeline was "
                    "fitted on numbers there: convert it to numbers"
                )
            if column in self.categories_ and kind in "biuf":
                raise ValueError(
                    f"column {column!r} holds numbers ({X.dtypes[column]}) but the pipeline was "
                    f"fitted on text there (values {self.categories_[column]}): convert it to text"
                )
        return _map(X, _encode_part, self.numeric_columns_, self.categories_, fitted)

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        check_is_fitted(self, "categories_")
        return np.asarray(_encoded_names(self.numeric_columns_, self.categories_), dtype=object)


def _refuse_row_numbers(X, numeric: list[str], n_rows: int, counts, lows, highs) -> None:
    """Raise for a column whose values number the rows (see :class:`TableEncoder`).

    CSV tables hold whole numbers as float64 (:func:`~kmeans_dask.read_table`),
    so a float column counts when all its values are whole.
    """
    if n_rows < IDENTIFIER_MIN_ROWS:
        return
    candidates = [
        column
        for column in numeric
        if X.dtypes[column].kind in "iuf"
        and counts[column] == n_rows
        and float(lows[column]).is_integer()
        and float(highs[column]) - float(lows[column]) + 1 == n_rows
    ]
    if not candidates:
        return
    fractions = [(X[c] % 1 != 0).sum() for c in candidates]
    if is_dask_dataframe(X):
        distinct = [X[c].nunique_approx() for c in candidates]
        least = IDENTIFIER_DISTINCT_SHARE * n_rows
    else:
        distinct = [X[c].nunique() for c in candidates]
        least = n_rows
    found = _compute(*distinct, *fractions)
    for column, n_distinct, fractional in zip(
        candidates, found[: len(candidates)], found[len(candidates) :], strict=True
    ):
        if n_distinct >= least and fractional == 0:
            raise ValueError(
                f"column {column!r} numbers the rows (the whole numbers {int(lows[column]):,} "
                f"to {int(highs[column]):,}, one per row): segments would follow the rows' "
                "order, not what they hold; leave it out (columns=... / --columns), or name "
                "it in columns to use it anyway"
            )


def _all_dates(values: list) -> bool:
    """Whether every value is an ISO 8601 date or time written as text (as CSV holds them)."""
    if not all(isinstance(value, str) for value in values):
        return False
    parsed = pd.to_datetime(pd.Series(values), errors="coerce", format="ISO8601")
    return bool(parsed.notna().all())


def _n_rows(X):
    return X.shape[0] if is_dask_dataframe(X) else len(X)


def _few_distinct(values, limit: int):
    """Up to ``limit`` distinct non-missing values of each part (to merge after computing)."""
    if isinstance(values, pd.Series):
        return _first_distinct(values, limit)
    return values.map_partitions(_first_distinct, limit, meta=values._meta)


def _first_distinct(values: pd.Series, limit: int) -> pd.Series:
    return pd.Series(values.dropna().unique()[:limit], dtype=values.dtype)


def _encoded_names(numeric: list[str], categories: dict[str, list[str]]) -> list[str]:
    return numeric + [f"{c}={v}" for c, values in categories.items() for v in values]


def _encode_part(
    part: pd.DataFrame, numeric: list[str], categories: dict[str, list[str]], order: list[str]
) -> pd.DataFrame:
    """Numeric columns as float64, then one boolean indicator per category."""
    columns = {c: part[c].astype(np.float64) for c in numeric}
    for column, values in categories.items():
        text = part[column].astype("string")
        for value in values:
            columns[f"{column}={value}"] = (text == value).fillna(False).astype(bool)
    return pd.DataFrame(columns, index=part.index)


# --- missing values --------------------------------------------------------------------


class MissingValues(TransformerMixin, BaseEstimator):
    """Fill missing values of the real-valued columns, or drop the rows that have any.

    Parameters
    ----------
    strategy : {"mean", "median", "constant", "drop"}, default="median"
        "mean", "median" (approximate on Dask, from its quantiles) and
        "constant" fill with dask-ml's ``SimpleImputer``; "drop" removes the
        rows with a missing value when fitting. A pipeline fitted with
        "drop" refuses rows with missing values in ``transform`` (it has no
        value to give them).
    fill_value : float, default=0.0
        The value of "constant".

    Attributes
    ----------
    columns_ : list of str
        The columns filled (or checked).
    statistics_ : ndarray of shape (len(columns_),)
        The fill value of each column (NaN for "drop").
    n_dropped_ : int
        Rows dropped by ``fit_transform`` ("drop" only; else 0).
    """

    def __init__(self, strategy: str = "median", fill_value: float = 0.0) -> None:
        self.strategy = strategy
        self.fill_value = fill_value

    def _check_params(self) -> None:
        _check_choice("strategy", self.strategy, IMPUTE_STRATEGIES)
        _check_number("fill_value", self.fill_value, -np.inf)

    def fit(self, X: Any, y: None = None) -> MissingValues:
        self._check_params()
        X = _frame(X, "MissingValues")
        self.columns_ = _float_columns(X)
        self.n_dropped_ = 0
        if self.strategy == "drop" or not self.columns_:
            self.statistics_ = np.full(len(self.columns_), np.nan)
            return self
        from dask_ml.impute import SimpleImputer

        imputer = SimpleImputer(strategy=self.strategy, fill_value=float(self.fill_value))
        imputer.fit(X[self.columns_].astype(np.float64))
        self.statistics_ = np.asarray(imputer.statistics_, dtype=np.float64)
        if np.isnan(self.statistics_).any():
            column = self.columns_[int(np.flatnonzero(np.isnan(self.statistics_))[0])]
            raise ValueError(
                f"column {column!r} has no values to take a {self.strategy} of (all missing): "
                "leave it out (columns=... / --columns)"
            )
        return self

    def fit_transform(self, X: Any, y: None = None, **params: Any):
        self.fit(X)
        X = _frame(X, "MissingValues")
        if self.strategy != "drop":
            return self.transform(X)
        complete = ~X[self.columns_].isna().any(axis=1)
        kept = X[complete]
        n_rows, n_complete = _compute(_n_rows(X), complete.sum())
        self.n_dropped_ = int(n_rows - n_complete)
        if n_complete == 0:
            raise ValueError(
                "no rows left after dropping those with missing values (strategy='drop'): every "
                "row misses a value; fill them instead (strategy='median' / --impute median)"
            )
        return kept

    def transform(self, X: Any):
        check_is_fitted(self, "statistics_")
        X = _frame(X, "MissingValues")
        if self.strategy == "drop":
            return _map(X, _refuse_missing, self.columns_)
        return X.fillna(dict(zip(self.columns_, self.statistics_.tolist(), strict=True)))


def _refuse_missing(part: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    counts = part[columns].isna().sum()
    if counts.any():
        column = str(counts.index[int(np.argmax(counts.to_numpy() > 0))])
        raise ValueError(
            f"column {column!r} has {int(counts[column])} missing value(s) in a part of the "
            "table, and the pipeline was fitted with strategy='drop', which gives such rows no "
            "value: drop them first, or refit with strategy='median'"
        )
    return part


# --- outliers --------------------------------------------------------------------------


class OutlierFilter(TransformerMixin, BaseEstimator):
    """Drop, when fitting, the rows whose z-score exceeds ``threshold`` in any column.

    The z-scores are those of the real-valued columns, from their mean and
    standard deviation over all rows. Only ``fit_transform`` drops rows (the
    fit that follows is not pulled by them); ``transform`` passes every row
    through, so a fitted pipeline labels every row of a table.

    Parameters
    ----------
    threshold : float, default=3.0

    Attributes
    ----------
    columns_ : list of str
    mean_, scale_ : ndarray of shape (len(columns_),)
        Mean and standard deviation (1 where a column is constant).
    n_dropped_ : int
        Rows dropped by ``fit_transform``.

    Raises
    ------
    ValueError
        If no row is left (every row has ``|z| > threshold`` somewhere).
    """

    def __init__(self, threshold: float = 3.0) -> None:
        self.threshold = threshold

    def _check_params(self) -> None:
        _check_number("threshold", self.threshold, 0.0)

    def fit(self, X: Any, y: None = None) -> OutlierFilter:
        self._check_params()
        X = _frame(X, "OutlierFilter")
        self.columns_ = _float_columns(X)
        values = X[self.columns_].astype(np.float64)
        mean, std = _compute(values.mean(), values.std(ddof=0))
        self.mean_ = np.asarray(mean, dtype=np.float64)
        self.scale_ = _nonzero(np.asarray(std, dtype=np.float64))
        self.n_dropped_ = 0
        return self

    def fit_transform(self, X: Any, y: None = None, **params: Any):
        self.fit(X)
        X = _frame(X, "OutlierFilter")
        if not self.columns_:
            return X
        z = (X[self.columns_].astype(np.float64) - self.mean_) / self.scale_
        outlier = (z.abs() > self.threshold).any(axis=1)
        n_rows, n_outliers = _compute(_n_rows(X), outlier.sum())
        self.n_dropped_ = int(n_outliers)
        if n_outliers == n_rows:
            raise ValueError(
                f"no rows left after removing outliers: each of the {n_rows} rows has |z| > "
                f"{self.threshold} in one of the columns {self.columns_}; raise the threshold "
                "(--outlier-z) or turn the filter off (--outlier-z 0)"
            )
        return X[~outlier]

    def transform(self, X: Any):
        check_is_fitted(self, "mean_")
        return _frame(X, "OutlierFilter")


def _nonzero(scale: np.ndarray) -> np.ndarray:
    """Scales of constant columns become 1, as in scikit-learn's scalers."""
    return np.where(np.isfinite(scale) & (scale > 0), scale, 1.0)


# --- scaling ---------------------------------------------------------------------------


class Scaler(TransformerMixin, BaseEstimator):
    """Scale the real-valued columns: ``(x - center_) / scale_``.

    Parameters
    ----------
    method : {"standard", "robust", "minmax"}, default="standard"
        "standard": mean and standard deviation (dask-ml's
        ``StandardScaler``); "minmax": to [0, 1] by the minimum and range
        (dask-ml's ``MinMaxScaler``); "robust": median and interquartile
        range (approximate on Dask, from its quantiles; dask-ml's
        ``RobustScaler`` fails on NumPy 2).

    Attributes
    ----------
    columns_ : list of str
    center_, scale_ : ndarray of shape (len(columns_),)
    """

    def __init__(self, method: str = "standard") -> None:
        self.method = method

    def _check_params(self) -> None:
        _check_choice("method", self.method, SCALE_METHODS)

    def fit(self, X: Any, y: None = None) -> Scaler:
        self._check_params()
        X = _frame(X, "Scaler")
        self.columns_ = _float_columns(X)
        values = X[self.columns_].astype(np.float64)
        if not self.columns_:
            self.center_ = self.scale_ = np.empty(0)
        elif self.method == "standard":
            from dask_ml.preprocessing import StandardScaler

            fitted = StandardScaler().fit(values)
            self.center_, self.scale_ = fitted.mean_, fitted.scale_
        elif self.method == "minmax":
            from dask_ml.preprocessing import MinMaxScaler

            fitted = MinMaxScaler().fit(values)
            self.center_, self.scale_ = fitted.data_min_, fitted.data_range_
        else:
            (quantiles,) = _compute(values.quantile([0.25, 0.5, 0.75]))
            quartiles = np.asarray(quantiles, dtype=np.float64)
            self.center_, self.scale_ = quartiles[1], quartiles[2] - quartiles[0]
        self.center_ = np.asarray(self.center_, dtype=np.float64)
        self.scale_ = _nonzero(np.asarray(self.scale_, dtype=np.float64))
        return self

    def transform(self, X: Any):
        check_is_fitted(self, "center_")
        X = _frame(X, "Scaler")
        return X.assign(
            **{
                c: (X[c].astype(np.float64) - m) / s
                for c, m, s in zip(self.columns_, self.center_, self.scale_, strict=True)
            }
        )


# --- projection ------------------------------------------------------------------------


class Projection(TransformerMixin, BaseEstimator):
    """Project every column (indicators as 0/1) onto the first principal components.

    Parameters
    ----------
    n_components : int, default=2

    Attributes
    ----------
    mean_ : ndarray of shape (n_features,)
    components_ : ndarray of shape (n_components, n_features)
    explained_variance_ratio_ : ndarray of shape (n_components,)
    """

    def __init__(self, n_components: int = 2) -> None:
        self.n_components = n_components

    def _check_params(self) -> None:
        _check_number("n_components", self.n_components, 1, integer=True)

    def fit(self, X: Any, y: None = None) -> Projection:
        self._check_params()
        X = _frame(X, "Projection")
        if self.n_components > len(X.columns):
            raise ValueError(
                f"n_components={self.n_components} but the table has only {len(X.columns)} "
                "columns to project"
            )
        values = table_as_array(X.astype(np.float64))
        if is_dask_dataframe(X):
            from dask_ml.decomposition import PCA
        else:
            from sklearn.decomposition import PCA
        fitted = PCA(n_components=self.n_components, svd_solver="full").fit(values)
        self.mean_ = np.asarray(fitted.mean_, dtype=np.float64)
        self.components_ = np.asarray(fitted.components_, dtype=np.float64)
        self.explained_variance_ratio_ = np.asarray(
            fitted.explained_variance_ratio_, dtype=np.float64
        )
        return self

    def transform(self, X: Any):
        check_is_fitted(self, "components_")
        X = _frame(X, "Projection")
        return _map(X, _project_part, self.mean_, self.components_)


def _project_part(part: pd.DataFrame, mean: np.ndarray, components: np.ndarray) -> pd.DataFrame:
    values = (part.to_numpy(dtype=np.float64) - mean) @ components.T
    return pd.DataFrame(
        values, columns=[f"pc{i}" for i in range(len(components))], index=part.index
    )


# --- the pipeline ----------------------------------------------------------------------
