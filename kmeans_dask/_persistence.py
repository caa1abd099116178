"""``KMeans.save`` and ``kmeans_dask.load``: estimators to model files and back."""

from __future__ import annotations

import os
from numbers import Integral
from typing import TYPE_CHECKING

import numpy as np

from kmeans_dask._fit.validation import validate_params
from kmeans_dask._io.output_paths import check_readable_file
from kmeans_dask._model_io import CENTERS_KEY, WEIGHTS_KEY, load_model, save_model

if TYPE_CHECKING:
    from kmeans_dask.estimator import KMeans


def save_estimator(model: KMeans, path: str | os.PathLike) -> None:
    """Write a fitted :class:`~kmeans_dask.KMeans` to a model file.

    A ``random_state`` that is a ``RandomState`` instance is stored as None:
    only integer seeds can be written faithfully.
    """
    params = model.get_params()
    if not isinstance(params["random_state"], Integral | type(None)):
        params["random_state"] = None
    arrays = {CENTERS_KEY: model.cluster_centers_}
    if hasattr(model, WEIGHTS_KEY):
        arrays[WEIGHTS_KEY] = model.cluster_weights_
    attributes = {
        "inertia_": float(model.inertia_),
        "n_iter_": int(model.n_iter_),
        "n_features_in_": int(model.n_features_in_),
    }
    if hasattr(model, "feature_names_in_"):
        attributes["feature_names_in_"] = [str(name) for name in model.feature_names_in_]
    save_model(path, params=params, arrays=arrays, attributes=attributes)


def load(path: str | os.PathLike) -> KMeans:
    """Read a model written by :meth:`KMeans.save <kmeans_dask.KMeans.save>`.

    The file is validated strictly (format, version, keys, shapes, dtypes,
    values and the parameters) and never unpickled, so a crafted file cannot
    run code; only the attributes the format declares are set.

    Parameters
    ----------
    path : str or os.PathLike

    Returns
    -------
    KMeans
        A fitted estimator: ``predict``, ``transform``, ``score`` and
        ``partial_fit`` work; ``labels_`` and ``history_`` are not stored.

    Raises
    ------
    FileNotFoundError
        If there is no file at ``path``.
    ValueError
        If the file is not a valid model file (including parameters that
        ``fit`` would refuse); the message names the file and the problem.

    Examples
    --------
    >>> import kmeans_dask
    >>> model = kmeans_dask.load("model.npz")  # doctest: +SKIP
    """
    from kmeans_dask.estimator import KMeans

    check_readable_file(path, "cannot load model")
    stored = load_model(path)
    known = KMeans().get_params()
    unknown = sorted(set(stored.params) - set(known))
    if unknown:
        raise ValueError(
            f"cannot load model '{os.fspath(path)}': unknown parameters {unknown} (written by "
            f"kmeans_dask {stored.library_version or 'unknown version'}?)"
        )
    model = KMeans(**stored.params)
    try:
        validate_params(model.get_params())
    except (TypeError, ValueError) as exc:
        raise ValueError(f"cannot load model '{os.fspath(path)}': {exc}") from None
    model.cluster_centers_ = stored.arrays[CENTERS_KEY]
    if WEIGHTS_KEY in stored.arrays:
        model.cluster_weights_ = stored.arrays[WEIGHTS_KEY]
    attributes = stored.attributes
    model.inertia_ = attributes["inertia_"]
    model.n_iter_ = attributes["n_iter_"]
    model.n_features_in_ = attributes["n_features_in_"]
    if "feature_names_in_" in attributes:
        model.feature_names_in_ = np.asarray(attributes["feature_names_in_"], dtype=object)
    model.n_steps_ = 0
    return model
