"""The ``.npz`` model files of kmeans_dask 0.1.0, read only to convert them."""

from __future__ import annotations

import json
import os
import zipfile

import numpy as np

from kmeans_dask._io.model_files import CENTERS, WEIGHTS, save_model
from kmeans_dask._io.output_paths import check_readable_file

_ENTRIES = {"__metadata__", CENTERS, WEIGHTS, "params.init"}


def convert_legacy_model(source: str | os.PathLike, target: str | os.PathLike) -> None:
    """Write the 0.1.0 model file ``source`` as a model file of this version at ``target``.

    ``source`` is read without pickle: at most its four declared entries,
    stored uncompressed within the file; what it holds is then checked as
    :func:`~kmeans_dask._io.model_files.save_model` checks any model.

    Raises
    ------
    ValueError
        If ``source`` is not a valid kmeans_dask 0.1.0 ``.npz`` model file.
    """
    path = os.fspath(source)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no model file at '{path}'")
    check_readable_file(path, "cannot convert")
    try:
        with zipfile.ZipFile(path) as archive:
            infos = archive.infolist()
        unexpected = sorted({info.filename.removesuffix(".npy") for info in infos} - _ENTRIES)
        if unexpected or len(infos) > len(_ENTRIES):
            raise ValueError(f"unexpected entries {unexpected or infos}")
        if any(info.compress_type != zipfile.ZIP_STORED for info in infos) or sum(
            info.file_size for info in infos
        ) > os.path.getsize(path):
            raise ValueError("its entries are compressed or larger than the file")
        with np.load(path, allow_pickle=False) as archive:
            entries = {name: archive[name] for name in archive.files}
        metadata = json.loads(entries.pop("__metadata__").tobytes().decode("utf-8"))
        marker = (metadata["format"], metadata["format_version"])
        if marker != ("kmeans_dask.model", 1):
            raise ValueError(f"format {marker[0]!r}, format_version {marker[1]!r}")
        params = dict(metadata["params"])
        params.update({name: entries.pop(f"params.{name}") for name in metadata["array_params"]})
        attributes = metadata["attributes"]
    except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile) as exc:
        raise ValueError(
            f"cannot convert '{path}': not a kmeans_dask 0.1.0 .npz model file "
            f"({type(exc).__name__}: {exc})"
        ) from None
    save_model(target, params=params, arrays=entries, attributes=attributes)
