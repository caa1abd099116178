"""Preprocessing on Dask: transformers against pandas and scikit-learn, pipeline files."""

from __future__ import annotations

import json
import os

import dask.dataframe as dd
import numpy as np
import pandas as pd
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from safetensors import safe_open
from safetensors.numpy import save_file
from sklearn.decomposition import PCA
from sklearn.preprocessing import MinMaxScaler, StandardScaler

from kmeans_dask import KMeans
from kmeans_dask._tables.transformers import IDENTIFIER_MIN_ROWS
from kmeans_dask.preprocessing import (
    MissingValues,
    OutlierFilter,
    Projection,
    Scaler,
    TableEncoder,
    load_pipeline,
    make_segmentation_pipeline,
    save_pipeline,
)


@pytest.fixture
def table():
    """200 rows: three numeric columns (a few missing), a text and a categorical column."""
    rng = np.random.default_rng(1)
    frame = pd.DataFrame(
        {
            "a": rng.normal(size=200),
            "b": rng.normal(5, 2, size=200),
            "c": rng.integers(0, 100, size=200).astype(float),
            "colour": rng.choice(["red", "green", "blue"], size=200),
            "size": pd.Categorical(rng.choice(["S", "M"], size=200)),
        }
    )
    frame.loc[[3, 50, 120], "a"] = np.nan
    frame.loc[[7], "colour"] = None
    return frame


def _both(frame: pd.DataFrame):
    return [("pandas", frame), ("dask", dd.from_pandas(frame, npartitions=3))]


def _local(result):
    return result.compute() if hasattr(result, "compute") else result


def test_encoder_one_hot_encodes_text_and_categorical_columns(table):
    for _, X in _both(table):
        encoder = TableEncoder(max_categories=5).fit(X)
        out = _local(encoder.transform(X))
        expected = ["a", "b", "c", "colour=blue", "colour=green", "colour=red", "size=M", "size=S"]
        assert list(out.columns) == expected == list(encoder.get_feature_names_out())
        assert out["colour=red"].dtype == bool and out["a"].dtype == np.float64
        assert_array_equal(out["colour=red"].to_numpy(), (table["colour"] == "red").to_numpy())
        assert not out.loc[7, ["colour=blue", "colour=green", "colour=red"]].any()  # missing


def test_encoder_leaves_unknown_categories_unset_and_selects_columns(table):
    encoder = TableEncoder(columns=["colour", "b"]).fit(table)
    new = table.assign(colour=["purple"] * len(table))
    out = encoder.transform(new)
    assert list(out.columns) == ["b", "colour=blue", "colour=green", "colour=red"]
    assert not out[["colour=blue", "colour=green", "colour=red"]].to_numpy().any()


@pytest.mark.parametrize(
    ("change", "error", "match"),
    [
        (lambda t: t.assign(a=np.nan), ValueError, r"column 'a' has no values \(all 200 rows"),
        (lambda t: t.assign(b=4.0), ValueError, "column 'b' is constant .*4.0"),
        (lambda t: t.assign(colour="red"), ValueError, "column 'colour' is constant .*'red'"),
        (
            lambda t: t.assign(colour=[f"customer-{i}" for i in range(len(t))]),
            ValueError,
            r"column 'colour' is text with about \d+ distinct values, more than max_categories=20",
        ),
        (
            lambda t: t.assign(when=pd.Timestamp("2026-01-01")),
            TypeError,
            "column 'when' holds datetime64.*convert it to numbers",
        ),
        (
            lambda t: t.assign(
                when=(pd.Timestamp("2026-01-01") + pd.to_timedelta(range(len(t)), "D")).astype(str)
            ),
            TypeError,
            r"column 'when' holds dates as text \(e.g. \['2026-01-01', '2026-01-02', .*"
            "convert it to numbers",
        ),
        (
            lambda t: t.assign(row=np.arange(1, len(t) + 1)),
            ValueError,
            r"column 'row' numbers the rows \(the whole numbers 1 to 200, one per row\).*--col",
        ),
        (
            lambda t: t.assign(row=np.random.default_rng(0).permutation(len(t)) + 1000),
            ValueError,
            r"column 'row' numbers the rows \(the whole numbers 1,000 to 1,199",
        ),
        (
            lambda t: t.assign(row=np.arange(len(t), dtype=float)),  # as CSV tables hold them
            ValueError,
            r"column 'row' numbers the rows \(the whole numbers 0 to 199",
        ),
    ],
)
@pytest.mark.parametrize("kind", ["pandas", "dask"])
def test_encoder_refuses_columns_kmeans_cannot_use(table, change, error, match, kind):
    X = dict(_both(change(table)))[kind]
    with pytest.raises(error, match=match):
        TableEncoder().fit(X)


@pytest.mark.parametrize(
    "row",
    [
        pytest.param(np.arange(200) * 2, id="gaps"),
        pytest.param(np.r_[np.arange(199), 0], id="a repeated value"),
        pytest.param(np.r_[np.arange(199), 500], id="one far value"),
        pytest.param(np.arange(200) + 0.5, id="not whole"),
        pytest.param(np.r_[np.arange(198), 198.5, 199], id="one not whole"),
    ],
)
@pytest.mark.parametrize("kind", ["pandas", "dask"])
def test_encoder_keeps_integer_columns_that_do_not_number_the_rows(table, row, kind):
    X = dict(_both(table.assign(row=row)))[kind]
    assert "row" in TableEncoder().fit(X).numeric_columns_


@pytest.mark.parametrize("kind", ["pandas", "dask"])
def test_encoder_uses_row_numbers_named_in_columns_and_in_small_tables(table, kind):
    numbered = table.assign(row=np.arange(len(table)))
    X = dict(_both(numbered))[kind]
    assert TableEncoder(columns=["a", "row"]).fit(X).numeric_columns_ == ["a", "row"]
    small = dict(_both(numbered.iloc[: IDENTIFIER_MIN_ROWS - 1]))[kind]
    assert "row" in TableEncoder().fit(small).numeric_columns_


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda t: t.drop(columns=["b"]), r"lacks column\(s\) \['b'\]"),
        (lambda t: t.assign(b=t["b"].astype(str)), "column 'b' holds .* fitted on numbers"),
        (lambda t: t.assign(colour=1.0), "column 'colour' holds numbers .* fitted on text"),
    ],
)
@pytest.mark.parametrize("kind", ["pandas", "dask"])
def test_encoder_refuses_a_table_to_predict_on_with_other_columns(table, change, match, kind):
    encoder = TableEncoder().fit(table)
    with pytest.raises(ValueError, match=match):
        encoder.transform(dict(_both(change(table)))[kind])


@pytest.mark.parametrize("strategy", ["mean", "median", "constant"])
def test_missing_values_are_filled(table, strategy):
    numeric = table[["a", "b", "c"]]
    expected = {"mean": numeric.mean(), "median": numeric.median()}.get(
        strategy, pd.Series(7.0, index=numeric.columns)
    )
    for kind, X in _both(numeric):
        imputer = MissingValues(strategy, fill_value=7.0).fit(X)
        if kind == "dask" and strategy == "median":
            # Dask's median is approximate (from its quantiles): between the 35th and 65th.
            low, high = numeric.quantile(0.35), numeric.quantile(0.65)
            assert ((low <= imputer.statistics_) & (imputer.statistics_ <= high)).all()
        else:
            assert_allclose(imputer.statistics_, expected, rtol=1e-12)
        out = _local(imputer.transform(X))
        assert not out.isna().any().any()
        assert_allclose(out.loc[[3, 50, 120], "a"], imputer.statistics_[0])


def test_missing_values_drop_strategy_drops_rows_and_refuses_them_later(table):
    numeric = table[["a", "b"]]
    for _, X in _both(numeric):
        imputer = MissingValues("drop")
        out = _local(imputer.fit_transform(X))
        assert imputer.n_dropped_ == 3 and len(out) == 197
        with pytest.raises(ValueError, match=r"column 'a' has \d missing value.*strategy='drop'"):
            _local(imputer.transform(X))
    with pytest.raises(ValueError, match="no rows left after dropping those with missing values"):
        MissingValues("drop").fit_transform(numeric.assign(b=np.nan))


def test_outlier_filter_drops_rows_beyond_three_standard_deviations():
    rng = np.random.default_rng(2)
    frame = pd.DataFrame({"x": rng.normal(size=500), "y": rng.normal(size=500), "on": True})
    frame.loc[[10, 20], "x"] = [40.0, -50.0]
    frame.loc[[30], "y"] = 60.0
    z = (frame[["x", "y"]] - frame[["x", "y"]].mean()) / frame[["x", "y"]].std(ddof=0)
    outliers = (z.abs() > 3).any(axis=1)
    for _, X in _both(frame):
        step = OutlierFilter()
        kept = _local(step.fit_transform(X))
        assert step.n_dropped_ == int(outliers.sum()) >= 3
        assert_array_equal(kept.index, frame.index[~outliers])
        assert len(_local(step.transform(X))) == 500  # predicting labels every row
    with pytest.raises(ValueError, match=r"no rows left after removing outliers.*--outlier-z"):
        OutlierFilter(threshold=0.0).fit_transform(frame)


@pytest.mark.parametrize("method", ["standard", "minmax", "robust"])
def test_scalers_match_scikit_learn(table, method):
    numeric = table[["b", "c"]].assign(flag=table["a"] > 0)
    reference = {
        "standard": StandardScaler().fit_transform(numeric[["b", "c"]]),
        "minmax": MinMaxScaler().fit_transform(numeric[["b", "c"]]),
        "robust": (numeric[["b", "c"]] - numeric[["b", "c"]].median())
        / (numeric[["b", "c"]].quantile(0.75) - numeric[["b", "c"]].quantile(0.25)),
    }[method]
    for kind, X in _both(numeric):
        step = Scaler(method).fit(X)
        out = _local(step.transform(X))
        if kind == "dask" and method == "robust":  # Dask's quantiles are approximate
            reference = (numeric[["b", "c"]] - step.center_) / step.scale_
            low, high = numeric[["b", "c"]].quantile(0.35), numeric[["b", "c"]].quantile(0.65)
            assert ((low <= step.center_) & (step.center_ <= high)).all()
        assert_allclose(out[["b", "c"]], reference, rtol=1e-10, atol=1e-12)
        assert_array_equal(out["flag"], numeric["flag"])  # indicators pass through


def test_projection_matches_scikit_learn_pca(table):
    numeric = table[["b", "c"]].assign(d=table["b"] * 2 + np.arange(200) % 7)
    reference = PCA(2, svd_solver="full").fit(numeric)
    for _, X in _both(numeric):
        step = Projection(2).fit(X)
        signs = np.sign(np.sum(step.components_ * reference.components_, axis=1))
        assert_allclose(step.components_ * signs[:, None], reference.components_, atol=1e-8)
        out = _local(step.transform(X))
        assert list(out.columns) == ["pc0", "pc1"]
        assert_allclose(out.to_numpy() * signs, reference.transform(numeric), atol=1e-8)


@pytest.mark.parametrize(
    ("step", "match"),
    [
        (MissingValues("mode"), r"strategy='mode' is not supported"),
        (Scaler("zscore"), r"method='zscore' is not supported"),
        (OutlierFilter(threshold=-1), "threshold must be >= 0"),
        (TableEncoder(max_categories=0), "max_categories must be >= 1"),
        (Projection(n_components=9), "n_components=9 but the table has only 3 columns"),
    ],
)
def test_parameters_are_checked(table, step, match):
    with pytest.raises(ValueError, match=match):
        step.fit(table[["a", "b", "c"]].fillna(0))


def test_pipeline_on_pandas_and_dask_and_saved_without_pickle(table, tmp_path, client):
    pipeline = make_segmentation_pipeline(3, random_state=0, pca=3, scale="robust")
    assert [name for name, _ in pipeline.steps] == [
        "encode", "impute", "outliers", "scale", "pca", "kmeans"
    ]  # fmt: skip
    pipeline.fit(dd.from_pandas(table, npartitions=4))
    labels = _local(pipeline.predict(table))  # raw rows, pandas
    assert_array_equal(_local(pipeline.predict(dd.from_pandas(table, 2))), labels)
    path = tmp_path / "pipeline.safetensors"
    save_pipeline(pipeline, path)
    with open(path, "rb") as handle:
        assert b"pickle" not in handle.read().lower()
    loaded = load_pipeline(path)
    assert [type(s) for _, s in loaded.steps] == [type(s) for _, s in pipeline.steps]
    new_rows = table.sample(50, random_state=3)
    assert_array_equal(loaded.predict(new_rows), pipeline.predict(new_rows))
    kmeans = loaded.named_steps["kmeans"]
    assert_allclose(kmeans.cluster_centers_, pipeline.named_steps["kmeans"].cluster_centers_)
    with pytest.raises(FileExistsError, match="exists"):
        save_pipeline(pipeline, path)
    assert os.listdir(tmp_path) == ["pipeline.safetensors"]


@pytest.fixture
def saved(table, tmp_path, client):
    """A fitted pipeline's file, its JSON header and its tensors, to craft bad files from."""
    pipeline = make_segmentation_pipeline(2, random_state=0).fit(table[["a", "b", "colour"]])
    path = tmp_path / "good.safetensors"
    save_pipeline(pipeline, path)
    with safe_open(path, framework="numpy") as handle:
        header = json.loads(handle.metadata()["pipeline"])
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118
    return header, tensors


def _steps(header, index, **changes):
    header = json.loads(json.dumps(header))
    header["steps"][index].update(changes)
    return header


CRAFTED = [
    (lambda h, t: ({**h, "format": "pickle"}, t), "Invalid enum value 'pickle'"),
    (lambda h, t: ({**h, "version": 9}, t), "Invalid enum value 9"),
    (lambda h, t: ({**h, "extra": 1}, t), "unknown field `extra`"),
    (lambda h, t: (_steps(h, 0, kind="os.system"), t), "Invalid value 'os.system'"),
    (lambda h, t: (_steps(h, 1, strategy="__import__"), t), "strategy='__import__'"),
    (lambda h, t: (_steps(h, 1, columns_=["zz"]), t), r"names columns \['zz'\] that no step"),
    (lambda h, t: (_steps(h, 0, numeric_columns_=["a"]), t), "not its columns"),
    (lambda h, t: (h, {**t, "scale/center_": np.zeros(5)}), r"scale/center_ has shape \(5,\)"),
    (lambda h, t: (h, {**t, "scale/scale_": np.full(2, np.inf)}), "non-finite"),
    (lambda h, t: (h, {**t, "scale/scale_": np.ones(2, np.float32)}), "float32, not float64"),
    (lambda h, t: (h, {**t, "evil/payload": np.zeros(1)}), r"arrays \['evil/payload'\] are"),
    (
        lambda h, t: (h, {**t, "kmeans/model_file": np.frombuffer(b"PK not a zip", np.uint8)}),
        "its KMeans step",
    ),
    (
        lambda h, t: ({**h, "steps": h["steps"][:-1]}, t),
        "does not end in a KMeans step",
    ),
]


@pytest.mark.parametrize(("craft", "match"), CRAFTED)
def test_crafted_pipeline_files_are_refused(saved, tmp_path, craft, match):
    header, tensors = craft(*saved)
    path = tmp_path / "crafted.safetensors"
    save_file(tensors, path, metadata={"pipeline": json.dumps(header)})
    with pytest.raises(ValueError, match=f"cannot load pipeline .*crafted.*: .*{match}"):
        load_pipeline(path)


@pytest.mark.parametrize(
    ("content", "error", "match"),
    [
        (None, FileNotFoundError, "does not exist"),
        (b"", ValueError, "not a readable safetensors file"),
        (b"\xff" * 64, ValueError, "not a readable safetensors file"),
    ],
)
def test_files_that_are_no_pipeline_are_refused(tmp_path, content, error, match):
    path = tmp_path / "p.safetensors"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(error, match=match):
        load_pipeline(path)


def test_only_this_modules_steps_can_be_saved(table, tmp_path, client):
    from sklearn.pipeline import Pipeline

    pipeline = Pipeline([("scale", StandardScaler()), ("kmeans", KMeans(2, random_state=0))])
    pipeline.fit(table[["b", "c"]].to_numpy())
    with pytest.raises(TypeError, match="step 'scale' is a StandardScaler"):
        save_pipeline(pipeline, tmp_path / "p.safetensors")
    assert not os.listdir(tmp_path)
