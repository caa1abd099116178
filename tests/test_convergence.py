"""Why a fit stopped: said with verbose, warned about when max_iter cut it short."""

from __future__ import annotations

import re
import warnings

import pytest
from sklearn.exceptions import ConvergenceWarning

from kmeans_dask import KMeans
from kmeans_dask._fit.history import IterationRecord, stopping_message


def _fit_recording_warnings(model, X):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.fit(X)
    return [w for w in caught if issubclass(w.category, ConvergenceWarning)]


@pytest.mark.parametrize(
    ("tol", "stop"), [(0.0, r"strict convergence"), (0.1, r"center shift .* within tolerance")]
)
def test_verbose_says_how_it_converged(client, blobs, capsys, tol, stop):
    """The lines scikit-learn's own verbose test looks for."""
    model = KMeans(6, init="random", random_state=0, tol=tol, verbose=1)
    assert not _fit_recording_warnings(model, blobs[0])
    out = capsys.readouterr().out
    assert re.search(r"Initialization complete", out)
    assert re.search(r"Iteration [0-9]+, inertia", out)
    assert re.search(rf"Converged at iteration {model.n_iter_}: {stop}", out)


def test_max_iter_before_convergence_warns_and_says_so(client, blobs, capsys):
    model = KMeans(6, init="random", random_state=0, max_iter=1, tol=0.0, verbose=1)
    caught = _fit_recording_warnings(model, blobs[0])
    assert [str(w.message) for w in caught] == [
        "KMeans stopped at max_iter=1 before converging: in the last iteration the centres "
        "moved more than tol=0.0 (times the data's mean variance) allows. Increase max_iter "
        "or tol; verbose=1 shows the shifts."
    ]
    assert re.search(
        r"Stopped at max_iter=1 without converging: center shift \S+ above tolerance 0\b",
        capsys.readouterr().out,
    )


def test_converging_in_the_last_allowed_iteration_is_converging(client, blobs):
    n_iter = KMeans(6, random_state=0).fit(blobs[0]).n_iter_
    model = KMeans(6, random_state=0, max_iter=n_iter)
    assert not _fit_recording_warnings(model, blobs[0])
    assert model.n_iter_ == n_iter


def _history(*shifts):
    return [IterationRecord(i + 1, 1.0, shift, 0, 0.0) for i, shift in enumerate(shifts)]


@pytest.mark.parametrize(
    ("history", "message"),
    [
        (_history(3.0, 0.0), "Converged at iteration 2: strict convergence."),
        (
            _history(3.0, 0.25),
            "Converged at iteration 2: center shift 0.25 within tolerance 0.5.",
        ),
        (
            _history(3.0, 2.0),
            "Stopped at max_iter=2 without converging: center shift 2 above tolerance 0.5.",
        ),
        ([], "No iteration run."),
    ],
)
def test_stopping_message(history, message):
    assert stopping_message(history, tol=0.5, max_iter=2) == message
