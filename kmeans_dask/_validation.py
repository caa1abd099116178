"""Parameter rules (declared once) and checks of user data.

Messages name the argument, what was expected and what was seen, e.g.
``n_samples=5 should be >= n_clusters=8``. Nothing here reads a whole
distributed dataset: finiteness of Dask inputs is checked in the first pass
over the chunks (see :mod:`kmeans_dask._inputs`).
"""

from __future__ import annotations

from numbers import Integral, Real
from typing import Any

import numpy as np
from dask.base import is_dask_collection

from kmeans_dask._chunks import ChunkSummary
from kmeans_dask.backends import ALGORITHMS, ASSIGN_MODES, ENGINES, check_backend_name

INIT_METHODS = ("k-means||", "k-means++", "random")


def _integer(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise TypeError(f"{name} must be an integer, got {value!r} of type {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {name}={value}")


def _real(name: str, value: Any, *, minimum: float, strict: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, Real) or not np.isfinite(value):
        raise TypeError(f"{name} must be a finite real number, got {value!r}")
    if value < minimum or (strict and value == minimum):
        relation = ">" if strict else ">="
        raise ValueError(f"{name} must be {relation} {minimum}, got {name}={value}")


def _choice(name: str, value: Any, options: tuple[str, ...]) -> None:
    if not isinstance(value, str) or value not in options:
        raise ValueError(f"{name}={value!r} is not supported; expected one of {list(options)}")


def validate_params(params: dict[str, Any]) -> None:
    """Check every constructor parameter of :class:`~kmeans_dask.KMeans`.

    Raises
    ------
    TypeError, ValueError
        Naming the parameter, the expected values and the value seen.
    """
    _integer("n_clusters", params["n_clusters"], 1)
    _integer("n_init", params["n_init"], 1)
    _integer("max_iter", params["max_iter"], 1)
    _integer("init_rounds", params["init_rounds"], 1)
    _integer("verbose", int(params["verbose"]), 0)
    _real("tol", params["tol"], minimum=0.0)
    _real("oversampling_factor", params["oversampling_factor"], minimum=0.0, strict=True)
    _integer("batch_size", params["batch_size"], 1)
    _real("decay", params["decay"], minimum=0.0, strict=True)
    if params["decay"] > 1:
        raise ValueError(f"decay must be <= 1 (1 never forgets), got decay={params['decay']}")
    _real("reassignment_ratio", params["reassignment_ratio"], minimum=0.0)
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


def check_init_array(init: Any, n_clusters: int, n_features: int, dtype) -> np.ndarray:
    """Validate user-given initial centres: shape (n_clusters, n_features), finite."""
    centers = np.asarray(init)
    if centers.dtype.kind not in "biuf":
        raise TypeError(f"init array must be numeric, got dtype {centers.dtype}")
    if centers.shape != (n_clusters, n_features):
        raise ValueError(
            f"init array has shape {centers.shape}; expected (n_clusters, n_features) = "
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


def raise_for_summary(summary: ChunkSummary, name: str = "X") -> None:
    """Raise if a pass over the data found non-finite values or bad weights."""
    check_finite(summary.nonfinite_count, summary.nonfinite_positions, name)
    check_weights_valid(summary.bad_weight_count, summary.bad_weight_rows)
    if summary.weight_sum <= 0:
        raise ValueError(
            "sample_weight: every weight is zero (they sum to 0); at least one must be positive."
        )
