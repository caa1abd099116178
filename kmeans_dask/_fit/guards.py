"""What every entry point of the estimator wraps its work in (validated
parameters, an estimator left exactly as it was when the work fails) and
the warnings about a finished fit."""

from __future__ import annotations

import copy
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
from sklearn.exceptions import ConvergenceWarning

from kmeans_dask._fit.history import LloydResult
from kmeans_dask._fit.validation import validate_params


@contextmanager
def validated_params(estimator: Any) -> Iterator[None]:
    """Validate the parameters and hold them as plain Python numbers meanwhile.

    A NumPy integer such as ``n_clusters=np.uint8(250)`` would overflow in
    size arithmetic; the values as given are put back afterwards, so
    ``get_params`` returns what was set.
    """
    given = estimator.get_params(deep=False)
    estimator.__dict__.update(validate_params(given))
    try:
        yield
    finally:
        estimator.__dict__.update(given)


@contextmanager
def unchanged_on_error(estimator: Any) -> Iterator[None]:
    """Restore every attribute if the work fails, so bad input loses nothing.

    Random generators the estimator holds are put back in their state, as a
    draw changes them in place.
    """
    saved = copy.copy(estimator.__dict__)
    generators = [
        (value, value.get_state())
        for value in saved.values()
        if isinstance(value, np.random.RandomState)
    ]
    try:
        yield
    except BaseException:
        estimator.__dict__.clear()
        estimator.__dict__.update(saved)
        for generator, state in generators:
            generator.set_state(state)
        raise


def warn_if_incomplete(result: LloydResult, n_clusters: int, max_iter: int, tol: float) -> None:
    """Warn (``ConvergenceWarning``, pointing at the caller of ``fit``) when the
    kept run did not converge, which scikit-learn's ``KMeans`` does not, or left
    clusters empty, in scikit-learn's words."""
    if not result.converged:
        warnings.warn(
            f"KMeans stopped at max_iter={max_iter} before converging: in the last "
            f"iteration the centres moved more than tol={tol} (times the data's mean "
            "variance) allows. Increase max_iter or tol; verbose=1 shows the shifts.",
            ConvergenceWarning,
            stacklevel=3,
        )
    if result.n_nonempty < n_clusters:
        warnings.warn(
            f"Number of distinct clusters ({result.n_nonempty}) found smaller than "
            f"n_clusters ({n_clusters}). Possibly due to duplicate points in X.",
            ConvergenceWarning,
            stacklevel=3,
        )
