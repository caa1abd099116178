"""The data check rides on the fit's first pass: no pass of its own, the same errors.

Whatever the first pass is (the sample of k-means||, k-means++, random and
hybrid, or the first Lloyd iteration from an array), it also checks the rows,
and the fit raises from the summaries before it uses any value of that pass.
A checkpoint, whose identity is needed before any pass, has the check made in
a pass of its own.
"""

from __future__ import annotations

import re

import dask.array as da
import numpy as np
import pytest
import zarr
from distributed import Client
from numpy.testing import assert_array_equal

from kmeans_dask import KMeans
from kmeans_dask._engine.placement import DistributedData, scatter_direct
from kmeans_dask._worker.chunks import make_chunk
from kmeans_dask._worker.host_ops import host_ops
from kmeans_dask._worker.tasks import checked_pass, chunk_stats

N_SAMPLES = 600


def _rows() -> np.ndarray:
    return np.random.default_rng(0).normal(size=(N_SAMPLES, 3)) + np.repeat(
        np.arange(3)[:, None] * 6.0, N_SAMPLES // 3, axis=0
    )


def _nan_at_(row: int, column: int) -> np.ndarray:
    X = _rows()
    X[row, column] = np.nan
    return X


NAN_MESSAGE = re.escape(
    "Input X contains 1 non-finite value(s) (NaN or infinity); first at (row 451, column 2)."
)
WEIGHT_MESSAGE = re.escape(
    "sample_weight contains 1 negative or non-finite value(s); first at rows 333. "
    "Weights must be finite and >= 0."
)
INITS = ["k-means||", "k-means++", "random", "hybrid", "array"]


@pytest.fixture
def own_check_passes(monkeypatch):
    """How many times a fit made the data check in a pass of its own."""
    passes = []
    check = DistributedData.check

    def counted(self, client):
        passes.append(True)
        return check(self, client)

    monkeypatch.setattr(DistributedData, "check", counted)
    return passes


def _model(init: str, engine: str, **params) -> KMeans:
    init_value = _rows()[[0, 250, 500]] if init == "array" else init
    return KMeans(3, init=init_value, n_init=1, random_state=0, engine=engine, **params)


@pytest.mark.parametrize("engine", ["actors", "tasks"])
@pytest.mark.parametrize("init", INITS)
@pytest.mark.parametrize(
    ("make_X", "weights", "match"),
    [
        pytest.param(lambda: _nan_at_(451, 2), None, NAN_MESSAGE, id="nan-numpy"),
        pytest.param(
            lambda: da.from_array(_nan_at_(451, 2), chunks=100), None, NAN_MESSAGE, id="nan-dask"
        ),
        pytest.param(
            _rows,
            np.where(np.arange(N_SAMPLES) == 333, -1.0, 1.0),
            WEIGHT_MESSAGE,
            id="negative-weight",
        ),
        pytest.param(
            _rows,
            np.zeros(N_SAMPLES),
            re.escape("sample_weight: every weight is zero (they sum to 0)"),
            id="zero-weights",
        ),
        pytest.param(
            lambda: _rows().astype(np.float32) * np.float32(1e19),
            None,
            r"X is float32 and its \|values\| <= .* give squared distances up to",
            id="float32-overflow",
        ),
    ],
)
def test_the_first_pass_refuses_bad_data_whatever_it_is(
    client, own_check_passes, engine, init, make_X, weights, match
):
    model = _model(init, engine)
    with pytest.raises(ValueError, match=match):
        model.fit(make_X(), sample_weight=weights)
    assert not any(name.endswith("_") and not name.startswith("_") for name in vars(model))
    assert own_check_passes == []


@pytest.mark.parametrize("engine", ["actors", "tasks"])
@pytest.mark.parametrize("init", INITS)
def test_a_fit_makes_no_pass_of_its_own_for_the_check(client, own_check_passes, engine, init):
    model = _model(init, engine, tol=1e-3).fit(_rows())
    assert own_check_passes == []
    # The tolerance still scales with the data's variance, as scikit-learn scales it.
    assert model.inertia_ > 0 and model.n_iter_ >= 1


def test_streamed_zarr_is_checked_by_its_first_pass(client, tmp_path, own_check_passes):
    path = str(tmp_path / "rows.zarr")
    store = zarr.create_array(path, shape=(N_SAMPLES, 3), chunks=(100, 3), dtype="f8")
    store[:] = _nan_at_(451, 2)
    with pytest.raises(ValueError, match=NAN_MESSAGE):
        KMeans(3, persist=False, random_state=0).fit(path)
    store[:] = _rows()
    streamed = KMeans(3, persist=False, random_state=0).fit(path)
    in_memory = KMeans(3, random_state=0).fit(_rows())
    assert own_check_passes == []
    assert streamed.inertia_ == pytest.approx(in_memory.inertia_, rel=1e-12)


def test_a_checkpoint_has_its_own_check_pass_with_the_digest(client, tmp_path, own_check_passes):
    checkpoint = tmp_path / "fit.ckpt"
    first = KMeans(3, random_state=0).fit(_rows(), checkpoint=checkpoint)
    assert own_check_passes == [True]
    again = KMeans(3, random_state=0).fit(_rows(), checkpoint=checkpoint)
    assert_array_equal(again.cluster_centers_, first.cluster_centers_)
    changed = _rows()
    changed[7, 1] += 1.0
    with pytest.raises(ValueError, match="belongs to a different fit"):
        KMeans(3, random_state=0).fit(changed, checkpoint=checkpoint)


def test_the_tolerance_is_scaled_by_the_variance_learned_in_the_first_pass(client):
    """tol * mean column variance: the same stopping point as a check pass of its own."""
    X = _rows()
    model = KMeans(3, init="random", random_state=0, tol=0.05).fit(X)
    absolute = 0.05 * float(np.mean(X.var(axis=0)))
    shifts = [record.center_shift for record in model.history_]
    assert shifts[-1] <= absolute * (1 + 1e-9)
    assert all(shift > absolute * (1 - 1e-9) for shift in shifts[:-1])


def test_a_refused_chunk_is_only_summarised():
    calls = []
    bad = make_chunk(_nan_at_(5, 1)[:100], None, 400, np.float64, host_ops())
    good = make_chunk(_rows()[:100], None, 0, np.float64, host_ops())
    centers = _rows()[[0, 250, 500]]

    def recording(chunk, *args):
        calls.append(chunk.offset)
        return chunk_stats(chunk, *args)

    refused = checked_pass(recording, False, bad, centers, "numpy")
    accepted = checked_pass(recording, True, good, centers, "numpy")
    assert calls == [0]  # never over the refused rows
    assert refused.value is None and refused.summary().nonfinite_positions == [(405, 1)]
    assert accepted.summary().digest != 0 and refused.summary().digest == 0
    assert_array_equal(accepted.value.sums, chunk_stats(good, centers, "numpy").sums)


@pytest.mark.parametrize(
    ("direct_to_workers", "use_hosts", "direct"),
    [(None, True, True), (None, False, False), (True, False, True), (False, True, False)],
)
def test_rows_go_straight_to_the_workers_when_the_client_reaches_them(
    cluster, direct_to_workers, use_hosts, direct
):
    with Client(cluster, direct_to_workers=direct_to_workers) as client:
        assert scatter_direct(client, use_hosts) is direct


@pytest.mark.parametrize(("engine", "direct"), [("actors", True), ("tasks", False)])
def test_the_fit_scatters_numpy_rows_as_scatter_direct_says(client, monkeypatch, engine, direct):
    seen = []
    scatter = Client.scatter

    def recording(self, data, *args, **kwargs):
        seen.append(kwargs.get("direct"))
        return scatter(self, data, *args, **kwargs)

    monkeypatch.setattr(Client, "scatter", recording)
    KMeans(3, random_state=0, engine=engine).fit(_rows())
    assert seen == [direct]
