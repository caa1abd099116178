"""Parameter rules (declared once) and checks of user data.

Messages name the argument, what was expected and what was seen, e.g.
``n_samples=5 should be >= n_clusters=8``. Nothing here reads a whole
distributed dataset: finiteness of Dask inputs is checked in the first pass
over the chunks (see :mod:`kmeans_dask._io.inputs`).
"""

from __future__ import annotations

import math
from numbers import Integral, Real
from typing import Any

import numpy as np
from dask.base import is_dask_collection

from kmeans_dask._fit.hybrid_init import check_init_sample_size
from kmeans_dask._worker.results import ChunkSummary
from kmeans_dask.backends import ALGORITHMS, ASSIGN_MODES, ENGINES, check_backend_name

INIT_METHODS = ("k-means||", "k-means++", "hybrid", "random")
#: Runs ``n_init="auto"`` makes, as scikit-learn: 10 for ``init="random"``, else 1.
AUTO_N_INIT_RANDOM = 10


class InvalidParameterError(ValueError, TypeError):
    """A constructor parameter breaks its rule.

    Both a ``ValueError`` and a ``TypeError``, as scikit-learn's own
    ``InvalidParameterError``, so code written for scikit-learn's ``KMeans``
    catches it with either.
    """


def _integer(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise TypeError(f"{name} must be an integer, got {value!r} of type {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {name}={value}")
    return int(value)


def _real(name: str, value: Any, *, minimum: float, strict: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, Real) or not np.isfinite(value):
        raise TypeError(f"{name} must be a finite real number, got {value!r}")
    if value < minimum or (strict and value == minimum):
        relation = ">" if strict else ">="
        raise ValueError(f"{name} must be {relation} {minimum}, got {name}={value}")
    return float(value)


def _choice(name: str, value: Any, options: tuple[str, ...]) -> None:
    if not isinstance(value, str) or value not in options:
        raise ValueError(f"{name}={value!r} is not supported; expected one of {list(options)}")


def validate_params(params: dict[str, Any]) -> dict[str, Any]:
    """Check every constructor parameter of :class:`~kmeans_dask.KMeans`.

    Returns
    -------
    dict
        The parameters with the numbers as plain Python ``int`` and ``float``
        (a NumPy ``uint8`` ``n_clusters`` would overflow in size arithmetic)
        and ``n_init="auto"`` as its number of runs; everything else as given.

    Raises
    ------
    InvalidParameterError
        Naming the parameter, the expected values and the value seen.
    """
    try:
        return _validated(params)
    except (TypeError, ValueError) as error:
        raise InvalidParameterError(str(error)) from None


def _validated(params: dict[str, Any]) -> dict[str, Any]:
    plain = dict(params)
    for name in ("n_clusters", "max_iter", "init_rounds", "batch_size"):
        plain[name] = _integer(name, params[name], 1)
    plain["n_init"] = _n_init(params["n_init"], params["init"])
    _integer("verbose", int(params["verbose"]), 0)
    plain["tol"] = _real("tol", params["tol"], minimum=0.0)
    plain["oversampling_factor"] = _real(
        "oversampling_factor", params["oversampling_factor"], minimum=0.0, strict=True
    )
    plain["decay"] = _real("decay", params["decay"], minimum=0.0, strict=True)
    if params["decay"] > 1:
        raise ValueError(f"decay must be <= 1 (1 never forgets), got decay={params['decay']}")
    plain["reassignment_ratio"] = _real(
        "reassignment_ratio", params["reassignment_ratio"], minimum=0.0
    )
    if isinstance(params["random_state"], np.integer):
        plain["random_state"] = int(params["random_state"])
    check_init_sample_size(params["init_sample_size"])
    init = params["init"]
    if isinstance(init, str):
        _choice("init", init, INIT_METHODS)
    elif is_dask_collection(init):
        raise TypeError(
            "init must be an in-memory array of centres (NumPy, list), got a Dask "
            f"{type(init).__name__}; pass init.compute()"
        )
    elif not hasattr(init, "__array__") and not isinstance(init, list | tuple):
        raise TypeError(
            f"init must be one of {list(INIT_METHODS)} or an array of shape "
            f"(n_clusters, n_features), got {type(init).__name__}"
        )
    elif plain["n_init"] != 1:
        raise ValueError(
            f"n_init={params['n_init']} but init is an array of centres: with explicit "
            "initial centres only n_init=1 (or 'auto') makes sense"
        )
    if params["persist"] not in (None, True, False):
        raise TypeError(f"persist must be True, False or None, got {params['persist']!r}")
    check_backend_name(params["backend"])
    _choice("assign", params["assign"], ASSIGN_MODES)
    _choice("algorithm", params["algorithm"], ALGORITHMS)
    _choice("engine", params["engine"], ENGINES)
    _random_state(params["random_state"])
    options = params["assign_options"]
    if options is not None and not isinstance(options, dict):
        raise TypeError(f"assign_options must be a dict or None, got {type(options).__name__}")
    return plain


def _n_init(value: Any, init: Any) -> int:
    """``n_init`` as a number of runs; ``"auto"`` as scikit-learn resolves it."""
    if isinstance(value, str) and value == "auto":
        return AUTO_N_INIT_RANDOM if isinstance(init, str) and init == "random" else 1
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise TypeError(
            f"n_init must be 'auto' or an integer, got {value!r} of type {type(value).__name__}"
        )
    return _integer("n_init", value, 1)


def _random_state(value: Any) -> None:
    """None, a seed NumPy's ``RandomState`` takes, or a ``RandomState`` (as scikit-learn)."""
    if value is None or isinstance(value, np.random.RandomState):
        return
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise TypeError(
            "random_state must be None, an integer in [0, 2**32 - 1] or a "
            f"numpy.random.RandomState, got {value!r} of type {type(value).__name__}"
        )
    if not 0 <= value < 2**32:
        raise ValueError(
            f"random_state must be an integer in [0, 2**32 - 1], got random_state={value}"
        )


def _init_shape_mismatch(shape: tuple[int, ...], n_clusters: int, n_features: int) -> str:
    """What is wrong with the shape of an ``init`` array, in scikit-learn's words."""
    if len(shape) != 2:
        return f"The initial centers must be a 2D array, got {len(shape)} dimension(s)"
    if shape[0] != n_clusters:
        return (
            f"The shape of the initial centers {shape} does not match the number of "
            f"clusters {n_clusters}"
        )
    return (
        f"The shape of the initial centers {shape} does not match the number of features "
        f"of the data {n_features}"
    )


def check_init_array(init: Any, n_clusters: int, n_features: int, dtype) -> np.ndarray:
    """Validate user-given initial centres: shape (n_clusters, n_features), finite."""
    centers = np.asarray(init)
    if centers.dtype.kind not in "biuf":
        raise TypeError(f"init array must be numeric, got dtype {centers.dtype}")
    if centers.shape != (n_clusters, n_features):
        raise ValueError(
            f"{_init_shape_mismatch(centers.shape, n_clusters, n_features)}: init array has "
            f"shape {centers.shape}; expected (n_clusters, n_features) = "
            f"({n_clusters}, {n_features})"
        )
    if not np.isfinite(centers).all():
        raise ValueError(
            f"init array contains {int((~np.isfinite(centers)).sum())} non-finite values"
        )
    return np.array(centers, dtype=dtype)


def check_n_samples(n_samples: int, n_clusters: int) -> None:
    if n_samples < n_clusters:
        raise ValueError(f"n_samples={n_samples} should be >= n_clusters={n_clusters}.")


def check_finite(count: int, positions: list[tuple[int, int]], name: str = "X") -> None:
    """Raise if ``count`` non-finite values were found; quote their positions."""
    if count:
        where = ", ".join(f"(row {r}, column {c})" for r, c in positions)
        raise ValueError(
            f"Input {name} contains {count} non-finite value(s) (NaN or infinity); first at "
            f"{where}. Remove or impute them first."
        )


def check_weights_valid(count: int, rows: list[int], name: str = "sample_weight") -> None:
    """Raise if ``count`` weights were negative or non-finite; quote their rows."""
    if count:
        raise ValueError(
            f"{name} contains {count} negative or non-finite value(s); first at rows "
            f"{', '.join(str(r) for r in rows)}. Weights must be finite and >= 0."
        )


def raise_for_summary(summary: ChunkSummary, name: str = "X", dtype: Any = None) -> None:
    """Raise if a pass over the data found non-finite values or bad weights.

    With the data's ``dtype``, also if its values and weights are too large
    for the fit's sums (see :func:`check_magnitudes`).
    """
    check_finite(summary.nonfinite_count, summary.nonfinite_positions, name)
    check_weights_valid(summary.bad_weight_count, summary.bad_weight_rows)
    if summary.weight_sum <= 0:
        raise ValueError(
            "sample_weight: every weight is zero (they sum to 0); at least one must be positive."
        )
    if dtype is not None:
        # No value lies further from its column's mean than the root of the column's M2.
        with np.errstate(over="ignore", invalid="ignore"):
            largest = np.abs(summary.column_mean) + np.sqrt(summary.column_m2)
        check_magnitudes(
            largest, summary.weight_sum, dtype, name, "a bound from the column means and variances"
        )


def check_magnitudes(
    largest: np.ndarray, total_weight: float, dtype: Any, name: str, bound_from: str
) -> None:
    """Refuse finite data or weights whose sums in the fit would overflow.

    A centre lies within the range of the rows, so no squared distance
    between a row and a centre exceeds ``4 * sum(largest ** 2)``, and no
    weighted sum of them ``total_weight`` times that.

    Parameters
    ----------
    largest : ndarray of shape (n_features,)
        Per column, a bound of the absolute values (of rows and centres).
    total_weight : float
        The sum of the weights (the number of rows when unweighted).
    dtype : dtype-like
        The data's dtype: distances are computed in it.
    name : str
        The data's name in messages.
    bound_from : str
        Where ``largest`` comes from, for messages.

    Raises
    ------
    ValueError
        Naming what is too large, what was seen and the limit.
    """
    if not math.isfinite(total_weight):
        raise ValueError(
            f"sample_weight: the weights sum to {total_weight}, beyond float64's largest "
            f"value {np.finfo(np.float64).max:.3g}; rescale them"
        )
    with np.errstate(over="ignore", invalid="ignore"):
        reach = 4.0 * float(np.sum(np.square(largest, dtype=np.float64)))
        bound = total_weight * reach
    top = float(np.max(largest, initial=0.0))
    if not math.isfinite(top):  # the moments overflowed (inf, or nan from inf - inf)
        raise ValueError(
            f"{name} is too large for float64 sums: it holds |values| beyond "
            f"{math.sqrt(np.finfo(np.float64).max):.3g}, whose squares exceed float64's "
            f"largest value {np.finfo(np.float64).max:.3g} ({bound_from}); rescale {name}"
        )
    seen = f"|values| <= {top:.3g} ({bound_from})"
    limit = float(np.finfo(np.float32).max)
    if np.dtype(dtype) == np.float32 and not reach <= limit:
        raise ValueError(
            f"{name} is float32 and its {seen} give squared distances up to {reach:.3g}, "
            f"beyond float32's largest value {limit:.3g}; convert {name} to float64 or "
            "rescale it"
        )
    if not math.isfinite(bound):
        raise ValueError(
            f"{name} and sample_weight are too large for float64 sums: {seen} and a total "
            f"weight of {total_weight:.3g} give weighted sums of squared distances up to "
            f"{bound:.3g}, beyond float64's largest value {np.finfo(np.float64).max:.3g}; "
            f"rescale {name} or the weights"
        )
