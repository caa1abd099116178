"""Segmenting a table: segment(), the summary, `kmeans-dask segment`, and its refusals."""

from __future__ import annotations

import json
import os
import re
import shlex
from pathlib import Path

import dask.dataframe as dd
import numpy as np
import pandas as pd
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from kmeans_dask import read_table
from kmeans_dask.cli import EXIT_BAD_INPUT, main
from kmeans_dask.datasets import penguins_csv
from kmeans_dask.preprocessing import TableEncoder, load_pipeline
from kmeans_dask.segmentation import segment, summarize_segments, summary_markdown

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()
PENGUIN_FEATURES = [
    "species",
    "island",
    "bill_length_mm",
    "bill_depth_mm",
    "flipper_length_mm",
    "body_mass_g",
    "sex",
]


@pytest.fixture
def on_cluster(cluster):
    return ["--scheduler", cluster.scheduler_address]


def test_segment_labels_every_row_in_order_and_describes_the_segments(client):
    pytest.importorskip("palmerpenguins")
    raw = pd.read_csv(penguins_csv())
    result = segment(penguins_csv(), "auto", columns=PENGUIN_FEATURES, ks=range(2, 8))
    assert result.n_clusters in range(2, 8) and result.elbow.suggested_k == result.n_clusters
    labelled = result.labelled.compute().reset_index(drop=True)
    assert list(labelled.columns) == [*raw.columns, "segment"]
    pd.testing.assert_frame_equal(labelled[raw.columns], raw, check_dtype=False)
    summary = result.summary
    assert summary["size"].sum() == len(raw) and summary["share"].sum() == pytest.approx(1)
    grouped = labelled.groupby("segment")
    assert_array_equal(summary["size"], grouped.size().loc[summary["segment"]])
    for feature in ("bill_length_mm", "body_mass_g"):  # in grams and millimetres, not scaled
        assert_allclose(summary[f"{feature} mean"], grouped[feature].mean())
        assert_allclose(summary[f"{feature} median"], grouped[feature].median())
    assert all(summary["distinguishing"].str.contains(r" [+-]\d+\.\d sd"))
    assert_array_equal(result.pipeline.predict(raw), labelled["segment"])


def test_the_summary_on_a_small_table():
    table = pd.DataFrame(
        {
            "x": [1.0, 2.0, 3.0, 10.0, 11.0, np.nan],
            "kind": ["a", "a", "b", "b", "b", "b"],
            "segment": [0, 0, 0, 1, 1, 1],
        }
    )
    encoder = TableEncoder().fit(table[["x", "kind"]])
    for labelled in (table, dd.from_pandas(table, npartitions=2)):
        summary = summarize_segments(labelled, encoder)
        assert summary.columns.tolist() == [
            "segment", "size", "share", "x mean", "x median", "distinguishing"
        ]  # fmt: skip
        assert_array_equal(summary["size"], [3, 3])
        assert_allclose(summary["x mean"], [2.0, 10.5])  # missing values left out
        assert_allclose(summary["x median"], [2.0, 10.5])
        std = np.nanstd(table["x"])
        assert summary["distinguishing"][1].startswith(f"x {(10.5 - 5.4) / std:+.1f} sd")
    markdown = summary_markdown(summary)
    assert markdown.splitlines()[0].startswith("| segment | size | share | x mean |")
    assert "| 1 | 3 | 50.0% | 10.5 | 10.5 |" in markdown


def _readme_segment_commands() -> list[str]:
    block = re.search(r"## Customer segmentation.*?```bash\n(.*?)```", README, flags=re.S)
    return [line for line in block.group(1).splitlines() if line.startswith("kmeans-dask ")]


def test_the_readme_segment_example_runs(tmp_path, on_cluster, monkeypatch, capsys):
    pytest.importorskip("palmerpenguins")
    pytest.importorskip("matplotlib")
    monkeypatch.chdir(tmp_path)
    commands = _readme_segment_commands()
    assert [c.split()[1] for c in commands] == ["segment", "predict"]
    for command in commands:
        argv = shlex.split(command.replace('"$PENGUINS"', shlex.quote(penguins_csv())))
        assert main([*argv[1:], *on_cluster]) == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    assert re.search(r"344 rows in \d+ segments \(k chosen by the elbow\)", printed)
    written = pd.read_csv("penguins-segments.csv")
    assert len(written) == 344 and written.columns[-1] == "segment"
    again = read_table("penguins-again.parquet").compute()
    assert_array_equal(again["segment"], written["segment"])  # the saved pipeline, raw rows
    assert Path("penguins-segments.md").read_text().startswith("| segment | size | share |")
    assert Path("penguins-segments.png").read_bytes()[:4] == b"\x89PNG"
    assert load_pipeline("penguins.pipeline").named_steps["kmeans"].n_clusters > 1


def test_segment_json_and_a_summary_as_csv(tmp_path, on_cluster, capsys):
    table = _table()
    table.to_parquet(tmp_path / "t.parquet", index=False)
    argv = ["segment", str(tmp_path / "t.parquet"), "-k", "2", "-o", str(tmp_path / "o.parquet")]
    argv += ["--summary", str(tmp_path / "s.csv"), "--columns", "x,y,kind", "--json"]
    assert main([*argv, *on_cluster]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["n_segments"] == 2 and report["outliers_left_out_of_fit"] == 1
    summary = pd.read_csv(tmp_path / "s.csv")
    assert summary["size"].sum() == len(table) == report["n_rows"]
    assert sorted(summary["size"]) == [50, 51]  # the outlier is labelled too
    out = read_table(tmp_path / "o.parquet").compute().reset_index(drop=True)
    pd.testing.assert_frame_equal(out.drop(columns="segment"), table, check_dtype=False)


def _table(n: int = 101) -> pd.DataFrame:
    """Two groups of 50 rows, one far outlier, a text column and an identifier."""
    rng = np.random.default_rng(0)
    group = np.arange(n) % 2
    table = pd.DataFrame(
        {
            "x": rng.normal(size=n) + 8 * group,
            "y": rng.normal(size=n),
            "kind": np.where(group == 1, "big", "small"),
            "id": [f"c{i:05d}" for i in range(n)],
        }
    )
    table.loc[n - 1, "y"] = 500.0
    return table


def _write(table: pd.DataFrame, directory: Path) -> str:
    table.to_csv(directory / "t.csv", index=False)
    return str(directory / "t.csv")


def _mixed_parts(directory: Path) -> str:
    table = _table()
    table.iloc[:50].to_csv(directory / "part-0.csv", index=False)
    table.iloc[50:].assign(x="unknown").to_csv(directory / "part-1.csv", index=False)
    return str(directory / "part-*.csv")


def _fitted_pipeline(directory: Path, on_cluster: list[str]) -> str:
    source = _write(_table(), directory)
    pipeline = str(directory / "p.pipeline")
    argv = ["segment", source, "-k", "2", "-o", str(directory / "fit.csv"), "--columns", "x,y"]
    assert main([*argv, "--save-pipeline", pipeline, "--json", *on_cluster]) == 0
    os.unlink(source)
    os.unlink(directory / "fit.csv")
    return pipeline


#: (a table or a maker of the input, extra arguments, what the one-line error must say)
REFUSED = [
    (_table().assign(empty=np.nan), ["--columns", "x,empty"], "column 'empty' has no values"),
    (_table().assign(c=3), ["--columns", "x,c"], r"column 'c' is constant \(every value is 3"),
    (_table(), [], r"column 'id' is text with about [\d,]+ distinct values.*--max-categories"),
    (_table(), ["--columns", "x,id", "--max-categories", "5"], "column 'id' is text"),
    (
        _table().drop(columns="id").assign(customer=np.arange(101)),
        [],
        r"column 'customer' numbers the rows \(the whole numbers 0 to 100, one per row\).*--col",
    ),
    (_mixed_parts, ["--columns", "x,y"], r"column 'x' of table .*part-\*.csv.* text.*'unknown'"),
    (_table(), ["--columns", "x,y", "--outlier-z", "1e-9"], "no rows left after removing"),
    (_table(), ["--columns", "x,nope"], r"column\(s\) \['nope'\] not in the table"),
    (
        _table().assign(segment=1),
        ["--columns", "x,y"],
        "already has a column 'segment', where the labels go",
    ),
    (_table(), ["--columns", "x,y", "-o", "{tmp}/t.csv"], "is the input"),
    (_table(), ["--columns", "x,y", "-o", "{tmp}/exists.csv"], "exists.csv' exists; pass"),
    (_table(), ["--columns", "x,y", "--summary", "{tmp}/exists.csv"], "exists; pass --overw"),
    (_table(), ["--columns", "x,y", "-o", "{tmp}/out.xlsx"], "ending in .csv or .parquet"),
    (_table(), ["--columns", "x,y", "--summary", "{tmp}/s.html"], "ending in .csv or .md"),
    (_table(), ["--columns", "x,y", "-k", "0"], "expected an integer >= 1 or 'auto'"),
]


@pytest.mark.parametrize(("table", "extra", "match"), REFUSED)
def test_segment_refuses_bad_input_naming_it_and_writes_nothing(
    tmp_path, on_cluster, capsys, table, extra, match
):
    source = table(tmp_path) if callable(table) else _write(table, tmp_path)
    (tmp_path / "exists.csv").write_text("keep me\n")
    before = sorted(os.listdir(tmp_path))
    argv = ["segment", source, "-k", "2", "-o", str(tmp_path / "out.csv")]
    argv += ["--summary", str(tmp_path / "summary.md"), "--save-pipeline", str(tmp_path / "p")]
    argv += [a.format(tmp=tmp_path) for a in extra]
    assert main([*argv, *on_cluster]) == EXIT_BAD_INPUT
    lines = capsys.readouterr().err.strip().splitlines()
    error = [line for line in lines if not line.startswith("dashboard: ")]
    assert len(error) == 1 and error[0].startswith("kmeans-dask segment: error: "), lines
    assert re.search(match, error[0]), error
    assert sorted(os.listdir(tmp_path)) == before
    assert (tmp_path / "exists.csv").read_text() == "keep me\n"


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda t: t.drop(columns=["y"]), r"lacks column\(s\) \['y'\] that the pipeline"),
        (lambda t: t.assign(y="high"), "column 'y' holds .* fitted on numbers there"),
    ],
)
def test_predict_with_a_pipeline_refuses_a_table_with_other_columns(
    tmp_path, on_cluster, capsys, change, match
):
    pipeline = _fitted_pipeline(tmp_path, on_cluster)
    source = _write(change(_table()), tmp_path)
    before = sorted(os.listdir(tmp_path))
    argv = ["predict", pipeline, source, "-o", str(tmp_path / "labelled.parquet")]
    assert main([*argv, *on_cluster]) == EXIT_BAD_INPUT
    assert re.search(match, capsys.readouterr().err)
    assert sorted(os.listdir(tmp_path)) == before


def test_plot_without_matplotlib_names_the_extra(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(__import__("sys").modules, "matplotlib", None)
    source = _write(_table(), tmp_path)
    argv = ["segment", source, "-o", str(tmp_path / "o.csv"), "--plot", str(tmp_path / "p.png")]
    assert main(argv) == 1
    assert capsys.readouterr().err.strip().endswith("pip install 'kmeans_dask[plot]'")
    assert sorted(os.listdir(tmp_path)) == ["t.csv"]


def test_plot_segments_draws_every_segment_and_feature():
    pytest.importorskip("matplotlib")
    from kmeans_dask.plotting import plot_segments

    summary = pd.DataFrame(
        {
            "segment": [0, 1],
            "size": [3, 1],
            "share": [0.75, 0.25],
            "x mean": [1.0, 5.0],
            "x median": [1.0, 5.0],
            "y mean": [2.0, 2.0],
            "y median": [2.0, 2.0],
            "distinguishing": ["x -1.0 sd", "x +1.7 sd"],
        }
    )
    ax = plot_segments(summary)
    assert [t.get_text() for t in ax.get_xticklabels()] == ["x", "y"]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["0 (75%)", "1 (25%)"]
    ratio = ax.images[0].get_array()
    assert_allclose(ratio, [[0.5, 1.0], [2.5, 1.0]])  # means over the size-weighted mean (2, 2)
    with pytest.raises(ValueError, match="no numeric features"):
        plot_segments(summary[["segment", "size", "share", "distinguishing"]])
