"""``KMeans.save`` and ``kmeans_dask.load``: estimators to model files and back."""

from __future__ import annotations

import os
from numbers import Integral
from typing import TYPE_CHECKING

import numpy as np

from kmeans_dask._model_io import load_model, save_model
from kmeans_dask._output_paths import check_readable_file
from kmeans_dask._validation import validate_params

if TYPE_CHECKING:
    from kmeans_dask.estimator import KMeans

#: Fitted arrays stored besides the centres, when the model has them.
_OPTIONAL_ARRAYS = ("cluster_weights_",)


def save_estimator(model: KMeans, path: str | os.PathLike) -> None:
    """Write a fitted :class:`~kmeans_dask.KMeans` to a model file.

    A ``random_state`` that is a ``RandomState`` instance is stored as None:
    only integer seeds can be written faithfully.
    """
    params = model.get_params()
    if not isinstance(params["random_state"], Integral | type(None)):
        params["random_state"] = None
    arrays = {"cluster_centers_": model.cluster_centers_}
    arrays.update(
        {name: getattr(model, name) for name in _OPTIONAL_ARRAYS if hasattr(model, name)}
    )
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

    The file is validated strictly (format, version, keys, shapes and
    dtypes) and never unpickled, so a crafted file cannot run code.

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
        If the file is not a valid model file; the message names the file
        and the problem.

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
    for name, value in stored.arrays.items():
        setattr(model, name, value)
    attributes = dict(stored.attributes)
    names = attributes.pop("feature_names_in_", None)
    if names is not None:
        model.feature_names_in_ = np.asarray(names, dtype=object)
    for name, value in attributes.items():
        setattr(model, name, value)
    model.n_steps_ = 0
    return model
