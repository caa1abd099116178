"""The envelope of model files and checkpoints: one safetensors file, checked both ways.

A file holds named tensors and a string map, parsed by the safetensors
library, which refuses a header over 100 MB and any tensor whose bytes do not
lie within the file (no pickle exists in the format: a crafted file runs
nothing and allocates at most its own size). The string map holds exactly
``format``, ``format_version``, ``library_version``, ``content`` (JSON that
must convert, strictly, into the kind's msgspec Struct) and ``sha256`` (of
the content and the tensors, so flipped bits are refused). Each tensor's name, dtype and
shape are checked against what the content declares before its data is read;
then every value must be finite and the kind checks the rest. Writing runs
the same checks, then writes a temporary sibling, fsyncs it and renames it
over the target, so a crash leaves the old file or the new one, never a part.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, NamedTuple

import msgspec
import numpy as np
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save as encode_tensors

from kmeans_dask._version import __version__

_LARGEST = float(np.finfo(np.float64).max)
Finite = Annotated[float, msgspec.Meta(ge=-_LARGEST, le=_LARGEST)]
NonNegative = Annotated[float, msgspec.Meta(ge=0, le=_LARGEST)]
Count = Annotated[int, msgspec.Meta(ge=0)]
DTYPES = {"F32": np.float32, "F64": np.float64, "I32": np.int32, "I64": np.int64}
FLOATS = ("F32", "F64")
_CODES = {np.dtype(dtype): code for code, dtype in DTYPES.items()}
_FIELDS = ("format", "format_version", "library_version", "content", "sha256")
_KINDS = {"kmeans_dask.model": "model", "kmeans_dask.checkpoint": "checkpoint"}


class FileProblem(ValueError):
    """What is wrong with a file or what would be written; callers add the path."""


class Tensor(NamedTuple):
    """What a tensor must be: its shape (None: any length) and allowed dtypes."""

    shape: tuple[int | None, ...]
    dtypes: tuple[str, ...]
    required: bool = True


class Content(msgspec.Struct, forbid_unknown_fields=True):
    """A kind's content schema, which also declares the tensors that go with it."""

    def tensors(self) -> dict[str, Tensor]:
        """The tensors a file with this content holds."""
        raise NotImplementedError

    def check(self, tensors: dict[str, np.ndarray]) -> None:
        """Checks on the (finite) values beyond their dtypes and shapes, raising FileProblem."""


@dataclass(frozen=True)
class FileKind:
    """One kind of file: its marker, version and content schema."""

    format: str
    version: int
    schema: type[Content]
    older: str
    """What to do with a file of an older format_version."""
    legacy: str
    """What to do with a kmeans_dask 0.1.0 ``.npz`` file."""


def convert(fields: Any, schema: Any) -> Any:
    """``fields`` (plain Python values) as ``schema``, strictly: no str for int, no
    bool for float, no unknown field, every constraint met."""
    try:
        return msgspec.convert(fields, schema, strict=True)
    except msgspec.ValidationError as exc:
        raise FileProblem(str(exc)) from None


def plain(value: Any) -> Any:
    """``value`` as plain Python values: NumPy scalars and arrays, dataclasses too."""
    return msgspec.to_builtins(value, enc_hook=_numpy_to_builtins)


def _numpy_to_builtins(value: Any) -> Any:
    if isinstance(value, np.generic | np.ndarray):
        return value.tolist()
    raise FileProblem(f"{value!r} ({type(value).__name__}) cannot be stored")


def as_array(value: Any, what: str) -> np.ndarray:
    try:
        array = np.ascontiguousarray(value)
    except (TypeError, ValueError) as exc:
        raise FileProblem(f"{what} cannot be converted to an array: {exc}") from None
    if _CODES.get(array.dtype.newbyteorder("<")) is None:
        raise FileProblem(
            f"{what} has dtype {array.dtype}; only float32, float64, int32 and int64 arrays "
            "are stored (never object, string, bool or complex)"
        )
    return array


def write(path: str, kind: FileKind, fields: Any, tensors: dict[str, np.ndarray]) -> None:
    """Check ``fields`` (plain values) and ``tensors`` as reading them back would,
    then write the file atomically."""
    content = convert(fields, kind.schema)
    header = {name: (a.shape, _CODES[a.dtype.newbyteorder("<")]) for name, a in tensors.items()}
    _check(kind, content, header, tensors)
    text = msgspec.json.encode(content).decode()
    metadata = {
        "format": kind.format,
        "format_version": str(kind.version),
        "library_version": __version__,
        "content": text,
        "sha256": _digest(text, tensors),
    }
    write_atomically(path, encode_tensors(tensors, metadata=metadata))


def read(path: str, kind: FileKind) -> tuple[Any, dict[str, np.ndarray], int, str]:
    """The content, tensors, format_version and library_version of a file of ``kind``,
    checked; every problem is a FileProblem."""
    if os.path.isdir(path):
        raise FileProblem("it is a directory, not a file")
    with open(path, "rb") as handle:
        if handle.read(4) in (b"PK\x03\x04", b"PK\x05\x06"):
            raise FileProblem(f"it is a ZIP (.npz) archive, {kind.legacy}")
    try:
        with safe_open(path, framework="numpy") as file:
            metadata = file.metadata() or {}
            version, content = _content(kind, metadata)
            header = {}
            for name in file.keys():  # noqa: SIM118 - a safe_open handle is not a dict
                view = file.get_slice(name)
                header[name] = (tuple(view.get_shape()), view.get_dtype())
            _check(kind, content, header)
            tensors = {name: file.get_tensor(name) for name in header}
    except (SafetensorError, OSError) as exc:
        raise FileProblem(
            f"not a readable safetensors file (truncated or corrupted?): {exc}"
        ) from None
    if _digest(metadata["content"], tensors) != metadata["sha256"]:
        raise FileProblem("the content and tensors do not match their sha256 (corrupted?)")
    _check(kind, content, header, tensors)
    return content, tensors, version, metadata["library_version"]


def _content(kind: FileKind, metadata: dict[str, str]) -> tuple[int, Any]:
    marker = metadata.get("format")
    if marker != kind.format:
        if marker in _KINDS:
            raise FileProblem(
                f"it is a kmeans_dask {_KINDS[marker]} file (format {marker!r}), not a "
                f"{_KINDS[kind.format]} file (format {kind.format!r})"
            )
        raise FileProblem(f"format marker is {marker!r}, expected {kind.format!r}")
    text = metadata.get("format_version", "")
    if not (text.isascii() and text.isdigit() and text[0] != "0"):
        raise FileProblem(f"format_version {text!r} is not a positive integer")
    version, writer = int(text), metadata.get("library_version")
    if version != kind.version:
        advice = "upgrade kmeans_dask to read it" if version > kind.version else kind.older
        raise FileProblem(
            f"it has format_version {version} (written by kmeans_dask {writer}), but this "
            f"kmeans_dask {__version__} reads format_version {kind.version}: {advice}"
        )
    if sorted(metadata) != sorted(_FIELDS):
        raise FileProblem(f"its metadata holds {sorted(metadata)}, expected {list(_FIELDS)}")
    try:
        fields = json.loads(
            metadata["content"], object_pairs_hook=_no_repeats, parse_constant=_no_constant
        )
    except FileProblem:
        raise
    except (ValueError, RecursionError) as exc:
        raise FileProblem(f"its content is not valid JSON: {exc}") from None
    return version, convert(fields, kind.schema)


def _check(
    kind: FileKind,
    content: Any,
    header: dict[str, tuple[tuple[int, ...], str]],
    tensors: dict[str, np.ndarray] | None = None,
) -> None:
    """The tensors' names, dtypes and shapes; with ``tensors``, their values too."""
    expected = content.tensors()
    missing = sorted(
        name for name, spec in expected.items() if spec.required and name not in header
    )
    extra = sorted(set(header) - set(expected))
    if missing or extra:
        raise FileProblem(
            f"missing tensors {missing}, unexpected tensors {extra} (a {kind.format} file with "
            f"this content holds {sorted(expected)})"
        )
    for name, (shape, dtype) in header.items():
        spec = expected[name]
        if dtype not in spec.dtypes:
            allowed = " or ".join(map(_dtype_name, spec.dtypes))
            raise FileProblem(f"{name} has dtype {_dtype_name(dtype)}, expected {allowed}")
        if len(shape) != len(spec.shape) or any(
            want is not None and want != got for want, got in zip(spec.shape, shape, strict=False)
        ):
            wanted = tuple("any" if n is None else n for n in spec.shape)
            raise FileProblem(f"{name} has shape {shape}, but the content makes it {wanted}")
    if tensors is None:
        return
    for name, array in tensors.items():
        bad = int(np.count_nonzero(~np.isfinite(array)))
        if bad:
            raise FileProblem(f"{name} contains {bad} non-finite value(s)")
    content.check(tensors)


def _dtype_name(code: str) -> str:
    return np.dtype(DTYPES[code]).name if code in DTYPES else code


def _digest(content: str, tensors: Mapping[str, np.ndarray]) -> str:
    digest = hashlib.sha256(content.encode())
    for name in sorted(tensors):
        array = tensors[name]
        array = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<"))
        digest.update(json.dumps([name, array.dtype.str, array.shape]).encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def _no_repeats(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [key for key, _ in pairs]
    repeated = sorted({key for key in keys if keys.count(key) > 1})
    if repeated:
        raise FileProblem(f"its content repeats the keys {repeated}")
    return dict(pairs)


def _no_constant(name: str) -> Any:
    raise FileProblem(f"its content holds the non-standard JSON constant {name}")


def write_atomically(path: str, data: bytes) -> None:
    """Write ``data`` to a temporary sibling, fsync it, rename it over ``path``."""
    directory = os.path.dirname(os.path.abspath(path))
    temporary = os.path.join(directory, f".{os.path.basename(path)}.{secrets.token_hex(8)}.tmp")
    # O_EXCL: never follow or reuse an existing name; 0o666: the umask decides, as for open().
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    descriptor = os.open(temporary, flags, 0o666)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    if os.name == "posix":  # make the rename durable
        with contextlib.suppress(OSError):
            descriptor = os.open(directory, os.O_RDONLY)
            try:
                os.fsync(descriptor)
            finally:
                os.close(descriptor)
