"""Tables in and out: CSV and Parquet files, directories and globs, DataFrames.

:func:`read_table` gives a Dask DataFrame from a path; :func:`table_as_array`
turns a pandas or Dask DataFrame into the numbers ``KMeans`` fits, refusing
text columns by name; :func:`write_table` writes a Dask DataFrame whole or
not at all.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Sequence
from functools import partial
from typing import Any

import numpy as np
import pandas as pd

#: File name endings read as CSV or Parquet (a compression suffix may follow a CSV's).
CSV_SUFFIXES = (".csv", ".tsv", ".txt")
PARQUET_SUFFIXES = (".parquet", ".pq", ".parq")
COMPRESSION_SUFFIXES = (".gz", ".bz2", ".xz", ".zst", ".zip")


def _strip_compression(name: str) -> str:
    for suffix in COMPRESSION_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def table_format(path: str | os.PathLike) -> str | None:
    """``"csv"``, ``"parquet"`` or None (not a table) for a path, glob or URL.

    A local directory is a Parquet table when it holds Parquet part files
    (Spark's ``part-*`` layout, with ``_SUCCESS`` and ``.crc`` files beside
    them, included), and a CSV table when it holds CSV files.
    """
    location = os.fspath(path).rstrip("/")
    name = _strip_compression(location.lower())
    if name.endswith(CSV_SUFFIXES):
        return "csv"
    if name.endswith(PARQUET_SUFFIXES):
        return "parquet"
    if "://" not in location and os.path.isdir(location):
        return _directory_format(location)
    return None


def _directory_format(directory: str) -> str | None:
    names = [n for n in os.listdir(directory) if not n.startswith((".", "_"))]
    if any(n in ("zarr.json", ".zarray", ".zgroup") for n in os.listdir(directory)):
        return None
    lowered = [_strip_compression(n.lower()) for n in names]
    if any(n.endswith(PARQUET_SUFFIXES) for n in lowered):
        return "parquet"
    if any(n.endswith(CSV_SUFFIXES) for n in lowered):
        return "csv"
    if any(n.startswith("part-") for n in lowered):
        return "parquet"  # Spark writes part-00000 without a suffix too
    return None


def is_table_source(X: Any) -> bool:
    """Whether ``X`` is a path, glob or URL of a CSV or Parquet table."""
    return isinstance(X, str | os.PathLike) and table_format(X) is not None


def is_dask_dataframe(X: Any) -> bool:
    import dask.dataframe as dd

    return isinstance(X, dd.DataFrame)


def is_dataframe(X: Any) -> bool:
    """A pandas or Dask DataFrame."""
    return isinstance(X, pd.DataFrame) or is_dask_dataframe(X)


def read_table(path: str | os.PathLike, columns: Sequence[str] | None = None):
    """Read a CSV or Parquet table as a Dask DataFrame.

    Parameters
    ----------
    path : str or os.PathLike
        A file (``.csv``, ``.tsv``, optionally compressed, or ``.parquet``),
        a directory of part files (as Dask and Spark write them: ``_SUCCESS``,
        ``_metadata`` and hidden files are skipped), a glob
        (``"sales/2026-*.csv"``) or an fsspec URL (``s3://bucket/t.parquet``).
    columns : sequence of str, optional
        Read only these columns, in this order. Default: all.

    Returns
    -------
    dask.dataframe.DataFrame
        Lazy: nothing but a sample (CSV) or the metadata (Parquet) is read.
        Integer columns of a CSV table are read as float64, so a missing
        value in a later part does not change the column's type.

    Raises
    ------
    FileNotFoundError
        If nothing exists at ``path`` (or the glob matches nothing).
    ValueError
        If ``path`` is not a CSV or Parquet table, or a column in
        ``columns`` is not in it (the message lists the table's columns).
        When computed, a part of a CSV table whose column holds text where
        the first part holds numbers raises a ``ValueError`` naming the
        column and the value.

    Examples
    --------
    >>> from kmeans_dask import read_table
    >>> table = read_table("customers/", columns=["age", "income"])  # doctest: +SKIP
    """
    import dask.dataframe as dd

    location = os.fspath(path)
    kind = table_format(location)
    if kind is None:
        raise ValueError(
            f"{location!r} is not a CSV or Parquet table: expected a file ending in "
            f"{', '.join(CSV_SUFFIXES + PARQUET_SUFFIXES)}, a directory of such part files, "
            "or a glob of them"
        )
    _check_exists(location)
    columns = None if columns is None else _column_list(columns)
    if kind == "parquet":
        if "://" not in location and os.path.isdir(location):
            location = location.rstrip("/") + "/"
        table = dd.read_parquet(location)
        _check_columns(table.columns, columns, location)
        return table if columns is None else table[columns]
    return _read_csv(location, columns)


def _column_list(columns: Sequence[str]) -> list[str]:
    if isinstance(columns, str):
        columns = [part.strip() for part in columns.split(",") if part.strip()]
    values = list(columns)
    if not values or not all(isinstance(c, str) for c in values):
        raise ValueError(f"columns must be a non-empty list of column names, got {columns!r}")
    repeated = sorted({c for c in values if values.count(c) > 1})
    if repeated:
        raise ValueError(f"columns names {repeated} more than once")
    return values


def _check_exists(location: str) -> None:
    if "://" in location:
        return
    if glob.has_magic(location):
        if not glob.glob(location):
            raise FileNotFoundError(f"no file matches the table pattern {location!r}")
    elif not os.path.exists(location):
        raise FileNotFoundError(f"table {location!r} does not exist")


def _check_columns(available: Sequence[str], wanted: list[str] | None, location: str) -> None:
    if wanted is None:
        return
    missing = [c for c in wanted if c not in list(available)]
    if missing:
        raise ValueError(
            f"column(s) {missing} not in table {location!r}; its columns are {list(available)}"
        )


def _read_csv(location: str, columns: list[str] | None):
    """CSV through Dask's reader, each part checked against the first part's types."""
    import dask.dataframe as dd
    from dask.dataframe.io.csv import read_pandas

    if "://" not in location and os.path.isdir(location):
        location = os.path.join(location, "*")
    options: dict[str, Any] = {"sep": "\t"} if ".tsv" in location.lower() else {}
    if location.lower().endswith(COMPRESSION_SUFFIXES):
        options["blocksize"] = None  # a compressed file is read whole
    first = dd.read_csv(location, **options)
    _check_columns(first.columns, columns, location)
    if columns is not None:
        options["usecols"] = columns
    numeric = tuple(c for c, t in first.dtypes.items() if t.kind in "biuf" and t.kind != "b")
    reader = partial(_read_csv_part, numeric=numeric, source=location)
    reader.__name__ = "read_csv"  # Dask names the tasks after it
    table = read_pandas(reader, location, **options)
    return table if columns is None else table[columns]


def _read_csv_part(*args: Any, numeric: tuple[str, ...], source: str, **kwargs: Any):
    """``pd.read_csv``; the first part's numeric columns as float64, or a named error."""
    part = pd.read_csv(*args, **kwargs)
    for column in numeric:
        if column not in part.columns or part[column].dtype.kind == "f":
            continue
        values = part[column]
        if values.dtype.kind in "iub":
            part[column] = values.astype(np.float64)
            continue
        converted = pd.to_numeric(values, errors="coerce")
        bad = values[converted.isna() & values.notna()]
        if len(bad):
            raise ValueError(
                f"column {column!r} of table {source!r} holds numbers in its first part but "
                f"text in another (e.g. {bad.iloc[0]!r}): fix those values, or leave the column "
                "out (columns=... / --columns)"
            )
        part[column] = converted.astype(np.float64)
    return part


def numeric_columns(X) -> list[str]:
    """Names of the real-valued (and boolean) columns of a DataFrame."""
    return [str(c) for c, t in X.dtypes.items() if _is_numeric(t)]


def _is_numeric(dtype: Any) -> bool:
    return getattr(dtype, "kind", "O") in "biuf"


def table_as_array(X, name: str = "X"):
    """The numbers of a pandas or Dask DataFrame: NumPy or a Dask array with known chunks.

    Raises
    ------
    TypeError
        If a column is not numeric (text, dates, categories): the message
        names the columns and how to encode them or leave them out.
    ValueError
        If the DataFrame has no columns.
    """
    if len(X.columns) == 0:
        raise ValueError(f"{name} is a DataFrame with no columns")
    refused = [(str(c), str(t)) for c, t in X.dtypes.items() if not _is_numeric(t)]
    if refused:
        described = ", ".join(f"{c!r} ({t})" for c, t in refused)
        raise TypeError(
            f"{name} has non-numeric column(s) {described}; k-means needs numbers: leave them "
            "out (columns=...), or encode them with kmeans_dask.preprocessing.TableEncoder "
            "(one-hot, in a Pipeline before KMeans)"
        )
    if is_dask_dataframe(X):
        floats = X.astype(np.float64) if any(t.kind in "biu" for t in X.dtypes) else X
        return floats.to_dask_array(lengths=True)
    return X


def output_format(path: str | os.PathLike, what: str = "output") -> str:
    """``"csv"`` or ``"parquet"`` from an output path's ending, or a named error."""
    name = _strip_compression(os.fspath(path).lower().rstrip("/"))
    if name.endswith(CSV_SUFFIXES):
        return "csv"
    if name.endswith(PARQUET_SUFFIXES):
        return "parquet"
    raise ValueError(
        f"{what} {os.fspath(path)!r}: expected a name ending in .csv or .parquet "
        "(the format is taken from it)"
    )


def write_table(table, path: str | os.PathLike, *, overwrite: bool = False) -> str:
    """Write a Dask DataFrame as CSV (one file) or Parquet (a directory of parts).

    The format follows ``path``'s ending. Rows keep their order (Parquet
    parts are numbered in it: ``part.0.parquet``, ``part.1.parquet``...).
    The table is written to a temporary sibling that takes ``path``'s place
    only when complete, so a failure or Ctrl-C leaves nothing half-written.

    Returns
    -------
    str
        The format written.

    Raises
    ------
    FileExistsError
        If ``path`` exists and ``overwrite`` is false.
    """
    from kmeans_dask._io.output_paths import written_whole

    kind = output_format(path)
    with written_whole(
        path, "output", overwrite=overwrite, store=kind == "parquet", store_check=_is_parquet_dir
    ) as partial_path:
        if kind == "csv":
            _write_csv(table, partial_path)
        else:
            table.to_parquet(partial_path, write_index=False)
    return kind


def _write_csv(table, path: str) -> None:
    """The table as one CSV file at ``path``, written in a staging directory first.

    When a partition fails, tasks already running may still append to the
    file after the error has reached us; inside a directory that is removed
    then, they can no longer create it again
    (:func:`~kmeans_dask._io.output_paths.remove_partial`).
    """
    from kmeans_dask._io.output_paths import remove_partial

    staging = f"{path}.parts"
    os.makedirs(staging)
    try:
        written = os.path.join(staging, "table.csv")
        table.to_csv(written, single_file=True, index=False)
        os.replace(written, path)
    finally:
        remove_partial(staging)


def _is_parquet_dir(path: str) -> bool:
    return os.path.isdir(path) and _directory_format(path) == "parquet"


def check_column_names(seen: Sequence[str], fitted: Sequence[str], name: str = "X") -> None:
    """Refuse a table whose columns are not those fitted on, in the same order.

    Raises
    ------
    ValueError
        Naming the missing and the unexpected columns.
    """
    if list(seen) == list(fitted):
        return
    missing = [c for c in fitted if c not in seen]
    unexpected = [c for c in seen if c not in fitted]
    if missing or unexpected:
        raise ValueError(
            f"{name} has other columns than the model was fitted on: missing {missing}, "
            f"unexpected {unexpected}; select the fitted columns {list(fitted)}"
        )
    raise ValueError(
        f"{name} has the fitted columns in another order: {list(seen)}; expected {list(fitted)}"
    )
