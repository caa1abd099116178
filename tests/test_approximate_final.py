"""The final pass of an approximate fit searches as the iterations do (``exact_final`` False,
the default), or exactly (``assign_options={"exact_final": True}``)."""

from __future__ import annotations

import types

import numpy as np
import pytest
from numpy.testing import assert_array_equal
from sklearn.datasets import make_blobs

import kmeans_dask._fit.lloyd as lloyd
import kmeans_dask._fit.passes as passes_module
from kmeans_dask import KMeans
from kmeans_dask._fit.searches import resolve_searches

APPROXIMATE_FINAL = {"exact_final": False}


@pytest.fixture(scope="module")
def clustered():
    X, _ = make_blobs(n_samples=20_000, n_features=16, centers=300, random_state=3)
    X = X.astype(np.float32)
    return X, X[np.random.default_rng(3).choice(len(X), 256, replace=False)]


def _passes(monkeypatch) -> list[str]:
    """The passes of the fits that follow, in order: ``search_statistics`` and
    ``final_pass`` (every row searched), or the task of a pass from kept labels."""
    calls = []
    for name in ("search_statistics", "final_pass"):
        original = getattr(passes_module, name)

        def recording(*args, name=name, original=original):
            calls.append(name)
            return original(*args)

        monkeypatch.setattr(passes_module, name, recording)
    from_kept_labels = passes_module.statistics_from_kept_labels

    def recording_task(client, data, task, *args, **options):
        calls.append(task.__name__)
        return from_kept_labels(client, data, task, *args, **options)

    monkeypatch.setattr(passes_module, "statistics_from_kept_labels", recording_task)
    return calls


def _inertia(X, centers, labels) -> float:
    difference = X.astype(np.float64) - centers.astype(np.float64)[labels]
    return float(np.einsum("ij,ij->", difference, difference))


def test_no_pass_searches_every_row_exactly_from_the_size_that_starts_with_ivf(
    client, clustered, monkeypatch, recounted
):
    """From EXACT_FIRST_BELOW centres: IVF while the centres move far, then
    candidates; once an update moves few enough centres (with the candidates' table
    at hand; a sixteenth here, where the last update moved about 5% of them), each
    row from its kept label among the moved centres alone (here the final pass):
    never a full exact pass."""
    X, init = clustered
    monkeypatch.setattr("kmeans_dask.backends.approximate.EXACT_FIRST_BELOW", 256)
    monkeypatch.setattr(lloyd, "APPROXIMATE_MOVED_MAX_SHARE_WITH_TABLE", 1 / 16)
    passes = _passes(monkeypatch)
    moved_shares = []
    decide = lloyd.approximate_moved_few

    def recording(bounds, moved, n_clusters, max_share):
        chosen = decide(bounds, moved, n_clusters, max_share)
        if chosen:
            moved_shares.append(moved.size / n_clusters)
        return chosen

    monkeypatch.setattr(lloyd, "approximate_moved_few", recording)
    fit = KMeans(
        256, init=init, max_iter=7, tol=0, assign="candidates", assign_options=APPROXIMATE_FINAL
    ).fit(X)
    assert passes[:2] == ["search_statistics"] * 2  # IVF: from random rows, then not settled
    assert passes[2:-1] == ["stats_from_candidates"] * 5
    assert passes[-1] == "changes_from_moved_centers"  # from approximate labels
    assert len(recounted) == 6  # candidate passes and that one: sent as changes
    recounted.assert_same()
    assert len(moved_shares) == 1
    assert all(0 <= share <= lloyd.APPROXIMATE_MOVED_MAX_SHARE for share in moved_shares)
    # labels_ and inertia_ are those of the approximate pass, consistent with each other
    assert fit.inertia_ == pytest.approx(_inertia(X, fit.cluster_centers_, fit.labels_), rel=1e-9)
    exact_labels = fit.predict(X)
    assert np.mean(fit.labels_ == exact_labels) > 0.99
    exact_inertia = -fit.score(X)
    assert (1 - 1e-12) * exact_inertia <= fit.inertia_ <= 1.001 * exact_inertia


def test_below_that_size_only_the_first_pass_searches_every_row_exactly(
    client, clustered, monkeypatch
):
    """Below EXACT_FIRST_BELOW centres the first iteration is exact, and candidates
    from its labels follow at once: no IVF iteration, and a final inertia nearer
    exact Lloyd's than with the two IVF iterations. (The rule is for 128 or more
    features; here it is made to hold for 16.) On this data and three other seeds
    the exact first pass kept within -0.76% to +0.055% of exact Lloyd's inertia, the
    IVF one -0.82% to +1.37%: lower is not nearer."""
    X, init = clustered
    monkeypatch.setattr("kmeans_dask.backends.approximate.EXACT_FIRST_MIN_FEATURES", 16)
    # the final pass among the moved centres, as in the test above
    monkeypatch.setattr(lloyd, "APPROXIMATE_MOVED_MAX_SHARE_WITH_TABLE", 1 / 16)
    passes = _passes(monkeypatch)
    params = {"init": init, "max_iter": 7, "tol": 0, "assign": "candidates"}
    fit = KMeans(256, assign_options=APPROXIMATE_FINAL, **params).fit(X)
    assert passes[0] == "search_statistics"  # the exact first iteration
    assert set(passes[1:]) <= {"stats_from_candidates", "changes_from_moved_centers"}
    assert passes[1] == "stats_from_candidates"
    assert passes[-1] == "changes_from_moved_centers"  # from approximate labels
    exact_lloyd = KMeans(256, init=init, max_iter=7, tol=0).fit(X)
    monkeypatch.setattr("kmeans_dask.backends.approximate.EXACT_FIRST_BELOW", 256)
    from_ivf = KMeans(256, assign_options=APPROXIMATE_FINAL, **params).fit(X)
    gap = abs(fit.inertia_ / exact_lloyd.inertia_ - 1)
    assert gap <= abs(from_ivf.inertia_ / exact_lloyd.inertia_ - 1)
    assert fit.inertia_ <= 1.001 * exact_lloyd.inertia_
    assert fit.inertia_ == pytest.approx(_inertia(X, fit.cluster_centers_, fit.labels_), rel=1e-9)


def test_a_final_pass_among_the_moved_centres_mends_what_the_candidates_missed(
    client, clustered, monkeypatch
):
    """The same fit with the final pass from candidates instead (moved-centre passes
    switched off; the earlier passes are the same): with two candidates a row, the
    candidates leave rows that the moved centres' search puts nearer."""
    X, init = clustered
    params = {"init": init, "max_iter": 7, "tol": 0, "assign": "candidates"}
    options = {"m": 2, "exact_final": False}
    monkeypatch.setattr(lloyd, "APPROXIMATE_MOVED_MAX_SHARE_WITH_TABLE", 1 / 16)
    moved_final = KMeans(256, assign_options=options, **params).fit(X)
    monkeypatch.setattr(lloyd, "APPROXIMATE_MOVED_MAX_SHARE", 0.0)
    monkeypatch.setattr(lloyd, "APPROXIMATE_MOVED_MAX_SHARE_WITH_TABLE", 0.0)
    candidates_final = KMeans(256, assign_options=options, **params).fit(X)
    assert_array_equal(moved_final.cluster_centers_, candidates_final.cluster_centers_)
    assert np.any(moved_final.labels_ != candidates_final.labels_)
    assert moved_final.inertia_ < candidates_final.inertia_
    exact_inertia = -moved_final.score(X)
    assert (1 - 1e-12) * exact_inertia <= moved_final.inertia_


def test_with_a_neighbour_table_at_hand_fewer_moved_centres_make_a_moved_centre_pass():
    """A candidate pass costs less once its table is made: a tenth of the centres
    moved is then searched with candidates, not among the moved centres, and so is
    a twentieth (a sixty-fourth is the limit)."""
    moved = np.arange(100, dtype=np.int32)
    table = np.zeros((1000, 16), dtype=np.int32)
    with_table = lloyd._approximate_share(table, own=False)
    assert lloyd.approximate_moved_few("moved", moved, 1000, lloyd._approximate_share(None, False))
    assert not lloyd.approximate_moved_few("moved", moved, 1000, with_table)
    assert not lloyd.approximate_moved_few("moved", moved[:50], 1000, with_table)
    assert lloyd.approximate_moved_few("moved", moved[:15], 1000, with_table)
    assert not lloyd.approximate_moved_few("closing", moved[:15], 1000, with_table)
    # Where the rows keep their own candidates, as few (a sixty-fourth).
    own = lloyd._approximate_share(None, own=True)
    assert not lloyd.approximate_moved_few("moved", moved[:60], 1000, own)
    assert lloyd.approximate_moved_few("moved", moved[:15], 1000, own)


def test_an_approximate_pass_s_labels_never_count_as_exact():
    """With "moved" bounds the final search is approximate: no pass starts from its
    labels as from an exact pass's (among the moved centres with that search);
    :func:`lloyd.approximate_moved_few` passes search exactly instead."""
    data = types.SimpleNamespace(persisted=True)
    approximate = ("candidates", "candidates", "candidates")
    assert not lloyd._exact_labels_kept(data, "moved", None, *approximate)
    assert lloyd._exact_labels_kept(data, "closing", None, "numpy", "numpy", "numpy")
    assert not lloyd._exact_labels_kept(data, "off", None, "numpy", "numpy", "numpy")


def test_iterations_and_centres_are_those_of_the_exact_final_fit_without_exact_steps(
    client, clustered
):
    """With algorithm="lloyd" both fits make the same approximate iterations: only the
    final pass differs."""
    X, init = clustered
    params = {"init": init, "max_iter": 5, "tol": 0, "assign": "candidates", "algorithm": "lloyd"}
    exact_final = KMeans(256, **params).fit(X)
    approximate = KMeans(256, assign_options=APPROXIMATE_FINAL, **params).fit(X)
    assert_array_equal(approximate.cluster_centers_, exact_final.cluster_centers_)
    assert [r.inertia for r in approximate.history_] == [r.inertia for r in exact_final.history_]
    assert_array_equal(exact_final.labels_, exact_final.predict(X))
    assert approximate.inertia_ >= (1 - 1e-12) * exact_final.inertia_


@pytest.mark.parametrize("engine", ["tasks", "actors"])
def test_approximate_final_fits_agree_across_engines_and_chunkings(client, clustered, engine):
    import dask.array as da

    X, init = clustered
    params = {"init": init, "max_iter": 5, "tol": 0, "assign": "candidates"}
    reference = KMeans(256, assign_options=APPROXIMATE_FINAL, **params).fit(X)
    fit = KMeans(256, assign_options=APPROXIMATE_FINAL, engine=engine, **params).fit(
        da.from_array(X, chunks=(5000, 16))
    )
    assert_array_equal(fit.cluster_centers_, reference.cluster_centers_)
    assert_array_equal(fit.labels_, reference.labels_)
    assert fit.inertia_ == pytest.approx(reference.inertia_, rel=1e-12)


@pytest.mark.parametrize(
    ("rule", "passes_made", "within"),
    [
        # From EXACT_FIRST_BELOW centres, after one iteration from random rows the
        # centres have not settled: no candidates, every row searched with IVF.
        (("EXACT_FIRST_BELOW", 256), ["search_statistics", "final_pass"], 1.02),
        # Below it (the rule made to hold for 16 features), the exact first
        # iteration's labels let the final pass scan candidates.
        (("EXACT_FIRST_MIN_FEATURES", 16), ["search_statistics", "stats_from_candidates"], 1.001),
    ],
)
def test_a_fit_of_one_iteration_ends_with_ivf_or_after_an_exact_one_with_candidates(
    client, clustered, monkeypatch, rule, passes_made, within
):
    X, init = clustered
    monkeypatch.setattr(f"kmeans_dask.backends.approximate.{rule[0]}", rule[1])
    passes = _passes(monkeypatch)
    fit = KMeans(
        256, init=init, max_iter=1, tol=0, assign="candidates", assign_options=APPROXIMATE_FINAL
    ).fit(X)
    assert passes == passes_made
    assert fit.inertia_ == pytest.approx(_inertia(X, fit.cluster_centers_, fit.labels_), rel=1e-9)
    exact_inertia = -fit.score(X)
    assert (1 - 1e-12) * exact_inertia <= fit.inertia_ <= within * exact_inertia


@pytest.mark.parametrize(
    ("assign", "options", "final"),
    [
        ("candidates", APPROXIMATE_FINAL, "candidates"),
        ("ivf", {"nprobe": 4, "exact_final": False}, "ivf:nprobe=4"),
        ("candidates", {"exact_final": True}, "numpy"),
        ("candidates", None, "candidates"),  # approximate labels by default
        ("ivf", None, "ivf"),
        ("exact", APPROXIMATE_FINAL, "numpy"),  # an exact fit stays exact
        ("auto", APPROXIMATE_FINAL, "numpy"),  # k < 4096: "auto" is exact
    ],
)
def test_the_final_search_and_bounds(assign, options, final):
    params = {
        "backend": "numpy",
        "assign": assign,
        "assign_options": options,
        "n_clusters": 256,
        "algorithm": "auto",
    }
    searches = resolve_searches(params, 16)
    assert searches.final_search == final
    approximate = searches.search != "numpy"
    expected = "moved" if final != "numpy" else ("closing" if approximate else "settled")
    assert searches.bounds == expected


def test_a_fit_resumed_after_its_runs_finished_labels_its_rows_exactly(
    client, clustered, tmp_path
):
    """No labels are kept to start candidates from: the one pass searches exactly."""
    X, init = clustered
    params = {"init": init, "max_iter": 5, "tol": 0, "assign": "candidates"}
    checkpoint = tmp_path / "fit.ckpt"
    first = KMeans(256, assign_options=APPROXIMATE_FINAL, **params).fit(X, checkpoint=checkpoint)
    resumed = KMeans(256, assign_options=APPROXIMATE_FINAL, **params).fit(X, checkpoint=checkpoint)
    assert_array_equal(resumed.cluster_centers_, first.cluster_centers_)
    assert_array_equal(resumed.labels_, resumed.predict(X))
    assert resumed.inertia_ == pytest.approx(-resumed.score(X), rel=1e-9)
    assert resumed.inertia_ <= first.inertia_ * (1 + 1e-12)
