"""Tables in and out: read_table, DataFrames into KMeans, write_table, --columns."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import dask.dataframe as dd
import numpy as np
import pandas as pd
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from kmeans_dask import KMeans, read_table
from kmeans_dask._io.tables import table_format, write_table
from kmeans_dask.cli import EXIT_BAD_INPUT, main


@pytest.fixture
def frame():
    """120 rows in two clear groups, three numeric columns and a text column."""
    rng = np.random.default_rng(0)
    group = np.repeat([0, 1], 60)
    return pd.DataFrame(
        {
            "x": rng.normal(size=120) + 10 * group,
            "y": rng.normal(size=120) - 5 * group,
            "count": rng.integers(0, 5, size=120),
            "name": [f"n{i % 3}" for i in range(120)],
        }
    )


@pytest.fixture
def on_cluster(cluster):
    return ["--scheduler", cluster.scheduler_address]


def _spark_directory(frame: pd.DataFrame, directory) -> str:
    """The layout Spark writes: _SUCCESS, part-*.snappy.parquet, hidden .crc files."""
    directory.mkdir()
    (directory / "_SUCCESS").write_bytes(b"")
    for index, part in enumerate(np.array_split(np.arange(len(frame)), 3)):
        name = f"part-{index:05d}-3f1c.c000.snappy.parquet"
        frame.iloc[part].to_parquet(directory / name, index=False)
        (directory / f".{name}.crc").write_bytes(b"crc")
    return str(directory)


@pytest.mark.parametrize(
    "layout", ["csv", "csv.gz", "tsv", "parquet", "parquet-dir", "spark", "csv-glob", "url"]
)
def test_read_table_layouts(frame, tmp_path, layout):
    if layout in ("csv", "csv.gz", "url"):
        path = str(tmp_path / f"t.{layout.replace('url', 'csv')}")
        frame.to_csv(path, index=False)
        if layout == "url":
            path = "file://" + path
    elif layout == "tsv":
        path = str(tmp_path / "t.tsv")
        frame.to_csv(path, index=False, sep="\t")
    elif layout == "parquet":
        path = str(tmp_path / "t.parquet")
        frame.to_parquet(path, index=False)
    elif layout == "parquet-dir":
        path = str(tmp_path / "parts")
        dd.from_pandas(frame, npartitions=4).to_parquet(path, write_index=False)
    elif layout == "spark":
        path = _spark_directory(frame, tmp_path / "spark-output")
    else:
        for index, part in enumerate(np.array_split(np.arange(len(frame)), 3)):
            frame.iloc[part].to_csv(tmp_path / f"day-{index}.csv", index=False)
        path = str(tmp_path / "day-*.csv")
    table = read_table(path)
    assert isinstance(table, dd.DataFrame)
    read = table.compute().reset_index(drop=True)
    assert list(read.columns) == list(frame.columns)
    assert_allclose(read[["x", "y", "count"]].to_numpy(float), frame[["x", "y", "count"]])
    assert read["name"].tolist() == frame["name"].tolist()  # row order kept


def test_read_table_columns_in_the_given_order(frame, tmp_path):
    frame.to_parquet(tmp_path / "t.parquet", index=False)
    frame.to_csv(tmp_path / "t.csv", index=False)
    for name in ("t.parquet", "t.csv"):
        table = read_table(tmp_path / name, columns=["y", "x"])
        assert list(table.columns) == ["y", "x"]
        assert_allclose(table.compute().to_numpy(), frame[["y", "x"]].to_numpy())


def test_a_csv_integer_column_missing_a_value_in_a_later_part_reads_as_float(tmp_path):
    (tmp_path / "a.csv").write_text("n,v\n1,2\n3,4\n")
    (tmp_path / "b.csv").write_text("n,v\n,6\n7,8\n")
    table = read_table(str(tmp_path / "*.csv"))
    assert table.dtypes["n"] == np.float64
    assert_array_equal(table["n"].compute().isna().to_numpy(), [False, False, True, False])


@pytest.mark.parametrize(
    ("make", "error", "match"),
    [
        (lambda d: str(d / "absent.csv"), FileNotFoundError, "absent.csv' does not exist"),
        (lambda d: str(d / "none-*.csv"), FileNotFoundError, "no file matches"),
        (lambda d: str(d / "t.txt.zarr"), ValueError, "is not a CSV or Parquet table"),
        (lambda d: (str(d / "t.csv"), ["x", "nope"]), ValueError, r"\['nope'\] not in table"),
        (lambda d: (str(d / "t.csv"), []), ValueError, "non-empty list of column names"),
        (lambda d: (str(d / "t.csv"), ["x", "x"]), ValueError, r"names \['x'\] more than once"),
    ],
)
def test_read_table_refusals(frame, tmp_path, make, error, match):
    frame.to_csv(tmp_path / "t.csv", index=False)
    given = make(tmp_path)
    path, columns = given if isinstance(given, tuple) else (given, None)
    with pytest.raises(error, match=match):
        read_table(path, columns)


def test_csv_parts_with_text_in_a_numeric_column_name_the_column(tmp_path):
    (tmp_path / "a.csv").write_text("amount,id\n1.5,1\n2.5,2\n")
    (tmp_path / "b.csv").write_text("amount,id\nunknown,3\n4.5,4\n")
    table = read_table(str(tmp_path / "*.csv"))
    with pytest.raises(ValueError, match=r"column 'amount' .* text in another .*'unknown'"):
        table.compute()


def test_table_format_of_directories(tmp_path):
    (tmp_path / "zarr-like").mkdir()
    (tmp_path / "zarr-like" / "zarr.json").write_text("{}")
    (tmp_path / "csvs").mkdir()
    (tmp_path / "csvs" / "a.csv").write_text("x\n1\n")
    assert table_format(tmp_path / "zarr-like") is None
    assert table_format(tmp_path / "csvs") == "csv"
    assert read_table(tmp_path / "csvs").compute()["x"].tolist() == [1.0]


def test_kmeans_fits_tables_and_dataframes_like_arrays(frame, tmp_path, client):
    numbers = frame[["x", "y", "count"]]
    numbers.to_csv(tmp_path / "t.csv", index=False)
    numbers.to_parquet(tmp_path / "t.parquet", index=False)
    reference = KMeans(2, random_state=0).fit(numbers.to_numpy(np.float64))
    for X in (
        numbers,
        dd.from_pandas(numbers, npartitions=3),
        str(tmp_path / "t.csv"),
        tmp_path / "t.parquet",
    ):
        model = KMeans(2, random_state=0).fit(X)
        assert_allclose(model.cluster_centers_, reference.cluster_centers_)
        assert list(model.feature_names_in_) == ["x", "y", "count"]
        labels = model.predict(X)
        labels = labels.compute() if hasattr(labels, "compute") else labels
        assert_array_equal(labels, reference.labels_)


@pytest.mark.parametrize("kind", ["pandas", "dask"])
def test_a_text_column_is_refused_by_name(frame, kind, client):
    X = frame if kind == "pandas" else dd.from_pandas(frame, npartitions=2)
    model = KMeans(2)
    with pytest.raises(TypeError, match=r"non-numeric column\(s\) 'name' \((str|string)\)"):
        model.fit(X)
    assert not hasattr(model, "cluster_centers_")


@pytest.mark.parametrize(
    ("columns", "match"),
    [
        (["x", "y"], r"missing \['count'\], unexpected \[\]"),
        (["x", "y", "count", "name"], "non-numeric column"),
        (["count", "y", "x"], "in another order"),
    ],
)
def test_predict_refuses_a_table_with_other_columns(frame, columns, match, client):
    model = KMeans(2, random_state=0).fit(dd.from_pandas(frame[["x", "y", "count"]], 2))
    with pytest.raises((ValueError, TypeError), match=match):
        model.predict(dd.from_pandas(frame[columns], npartitions=2))


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_write_table_keeps_rows_and_columns_and_refuses_to_overwrite(frame, tmp_path, suffix):
    path = tmp_path / f"out{suffix}"
    table = dd.from_pandas(frame, npartitions=3)
    write_table(table, path)
    back = read_table(path).compute().reset_index(drop=True)
    assert back["name"].tolist() == frame["name"].tolist()
    assert_allclose(back["x"], frame["x"])
    with pytest.raises(FileExistsError, match=r"out.* exists; pass --overwrite"):
        write_table(table, path)
    write_table(table.head(5, npartitions=-1, compute=False), path, overwrite=True)
    assert len(read_table(path).compute()) == 5
    assert sorted(os.listdir(tmp_path)) == [path.name]  # no temporary sibling left


def test_write_table_leaves_nothing_when_the_table_fails(tmp_path):
    (tmp_path / "a.csv").write_text("amount\n1.5\n")
    (tmp_path / "b.csv").write_text("amount\noops\n")
    table = read_table(str(tmp_path / "*.csv"))
    for name in ("out.csv", "out.parquet"):
        with pytest.raises(ValueError, match="column 'amount'"):
            write_table(table, tmp_path / name)
    assert sorted(os.listdir(tmp_path)) == ["a.csv", "b.csv"]


@pytest.mark.parametrize("name", ["out.csv", "out.parquet"])
def test_a_failed_table_leaves_nothing_even_when_a_late_task_writes_there(
    tmp_path, monkeypatch, name
):
    """A task still running after the error can recreate its file while a half-written
    directory (the CSV's staging, the Parquet parts) is removed, which then stays: it is
    removed again."""
    (tmp_path / "a.csv").write_text("amount\n1.5\n")
    (tmp_path / "b.csv").write_text("amount\noops\n")
    table = read_table(str(tmp_path / "*.csv"))
    remove_tree, removals = shutil.rmtree, []

    def late_task_writes(path, ignore_errors=False):
        removals.append(path)
        remove_tree(path, ignore_errors=ignore_errors)
        if len(removals) == 1:  # a real late task may also have kept it: exist_ok
            os.makedirs(path, exist_ok=True)
            (Path(path) / "table.csv").write_text("amount\n1.5\n")

    monkeypatch.setattr(shutil, "rmtree", late_task_writes)
    with pytest.raises(ValueError, match="column 'amount'"):
        write_table(table, tmp_path / name)
    assert removals, "no half-written directory was removed"
    assert sorted(os.listdir(tmp_path)) == ["a.csv", "b.csv"]


def test_write_table_refuses_an_unknown_format(frame, tmp_path):
    with pytest.raises(ValueError, match=r"out.txt.zarr'.*ending in .csv or .parquet"):
        write_table(dd.from_pandas(frame, 1), tmp_path / "out.txt.zarr")


def test_cli_fit_predict_elbow_tune_on_tables(frame, tmp_path, on_cluster, capsys):
    frame.to_csv(tmp_path / "t.csv", index=False)
    data, model = str(tmp_path / "t.csv"), str(tmp_path / "model.safetensors")
    columns = ["--columns", "x,y"]
    assert main(["fit", data, "-k", "2", *columns, "-o", model, "--json", *on_cluster]) == 0
    assert json.loads(capsys.readouterr().out)["n_features"] == 2
    labelled = str(tmp_path / "labelled.parquet")
    assert main(["predict", model, data, "-o", labelled, *on_cluster]) == 0
    out = read_table(labelled).compute().reset_index(drop=True)
    assert list(out.columns) == [*frame.columns, "segment"]
    assert sorted(np.bincount(out["segment"])) == [60, 60]
    assert_array_equal(out["segment"].to_numpy()[::60] != out["segment"].to_numpy()[0], [0, 1])
    labels = str(tmp_path / "labels.npy")
    assert main(["predict", model, data, *columns, "-o", labels, *on_cluster]) == 0
    assert_array_equal(np.load(labels), out["segment"].to_numpy())
    capsys.readouterr()
    assert main(["elbow", data, *columns, "--ks", "1,2,3,4", "--json", *on_cluster]) == 0
    assert json.loads(capsys.readouterr().out)["suggested_k"] == 2
    tune = ["tune", data, *columns, "-k", "2", "--sample", "50", "--iterations", "1", "--json"]
    assert main(tune) == 0
    tuned = json.loads(capsys.readouterr().out)
    assert tuned["recommended"]["fit_command"][2] == data and len(tuned["results"]) > 1


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        (["fit", "{tmp}/t.csv", "-k", "2"], "non-numeric column.*'name'"),
        (["fit", "{tmp}/t.csv", "--columns", "x,zz"], r"\['zz'\] not in table"),
        (["fit", "{tmp}/data.zarr", "--columns", "x"], "not one"),
        (
            ["predict", "{tmp}/model.safetensors", "{tmp}/t.csv", "-o", "{tmp}/o.csv"],
            "non-numeric",
        ),
        (["predict", "{tmp}/model.safetensors", "{tmp}/t.csv", "-o", "{tmp}/t.csv"], "the input"),
    ],
)
def test_cli_table_refusals(frame, tmp_path, argv, match, on_cluster, capsys):
    frame.to_csv(tmp_path / "t.csv", index=False)
    KMeans(2, random_state=0).fit(np.random.default_rng(0).normal(size=(50, 4))).save(
        tmp_path / "model.safetensors"
    )
    before = sorted(os.listdir(tmp_path))
    assert main([a.format(tmp=tmp_path) for a in argv] + on_cluster) == EXIT_BAD_INPUT
    assert re.search(match, capsys.readouterr().err)
    assert sorted(os.listdir(tmp_path)) == before
