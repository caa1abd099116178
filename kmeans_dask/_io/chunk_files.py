"""Reading row blocks of a Zarr array straight from its chunk files.

``zarr.Array.__getitem__`` takes every chunk through zarr's asynchronous
codec pipeline, which decodes each chunk into a buffer of its own and copies
it once more into the array it returns. A streamed pass is mostly reading,
and decoding each chunk's file straight into the block's array costs 14-60%
less CPU than those fresh buffers and copies (1.24 against 1.44 CPU seconds
per GiB of a Zstandard store, 0.41 against 0.67 with Blosc-LZ4:
``scripts/bench_store_codecs.py``).

:func:`chunk_files_of` says whether an array is laid out so that its blocks
can be read that way: in a local store (``zarr.storage.LocalStore``), on a
regular grid whose chunks span every column, items little-endian in C
order, and at most one compressor behind the bytes (Zarr v3: the ``bytes``
codec, then ``zstd``, ``blosc`` or ``gzip``; Zarr v2: any numcodecs
compressor and no filters). :class:`ChunkFiles` then reads a block with the
values zarr gives: chunks never written hold the fill value, and a chunk
file that does not decode to a whole chunk is an error, never rows left
unwritten. Any other array is read through zarr. :func:`zarr_rows` wraps an
array so that its row slices are read this way wherever it is indexed (the
Dask array over a store, batches of ``fit_stream``); a streamed pass's
blocks carry their :class:`ChunkFiles` to the workers.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import Any

import numpy as np

#: Magic number opening a Zstandard frame (RFC 8878, section 3.1.1).
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
#: Size of a Blosc (version 1 format) header, which holds the decoded size.
BLOSC_HEADER_BYTES = 16


@dataclass(frozen=True)
class ChunkFiles:
    """Where and how the chunks of a 2-D Zarr array lie in a directory.

    Built by :func:`chunk_files_of`; small and picklable, so a task carries
    it to the worker that reads.
    """

    directory: str
    """The array's directory, absolute."""
    key_prefix: str
    """What precedes the chunk's row index in its key (``"c/"`` in Zarr v3)."""
    separator: str
    """What separates the row index from the column index (always 0) in a key."""
    shape: tuple[int, int]
    chunk_rows: int
    dtype: np.dtype
    """The items as stored (little-endian)."""
    codec: Any
    """The numcodecs compressor, or None for raw bytes."""
    fill_value: Any
    """The value of rows whose chunk was never written."""

    def chunk_path(self, index: int) -> str:
        """The file of the ``index``-th chunk of rows."""
        return os.path.join(self.directory, f"{self.key_prefix}{index}{self.separator}0")

    def read(self, offset: int, n_rows: int) -> np.ndarray:
        """Rows ``offset:offset + n_rows``, as ``array[offset:offset + n_rows]`` gives them.

        Raises
        ------
        ValueError
            If a chunk file does not decode to a whole chunk, naming the file.
        OSError
            If a chunk file exists but cannot be read.
        """
        end = min(offset + n_rows, self.shape[0])
        block = np.empty((max(end - offset, 0), self.shape[1]), self.dtype)
        for index in range(offset // self.chunk_rows, -(-end // self.chunk_rows)):
            start = index * self.chunk_rows
            first, last = max(offset, start), min(end, start + self.chunk_rows)
            target = block[first - offset : last - offset]
            if first == start and last == start + self.chunk_rows:
                self._read_chunk(index, target)
            else:
                whole = np.empty((self.chunk_rows, self.shape[1]), self.dtype)
                self._read_chunk(index, whole)
                target[...] = whole[first - start : last - start]
        return block

    def _read_chunk(self, index: int, chunk: np.ndarray) -> None:
        """Decode the ``index``-th chunk into ``chunk`` (a whole chunk's C-ordered rows)."""
        path = self.chunk_path(index)
        try:
            with open(path, "rb") as file:
                if self.codec is None:
                    self._read_raw(file, chunk, path)
                    return
                encoded = file.read()
        except FileNotFoundError:
            chunk[...] = self.fill_value
            return
        size = decoded_size(self.codec, encoded)
        if size is None:  # A frame that does not say: decode apart, then check.
            decoded = np.frombuffer(self.codec.decode(encoded), np.uint8)
            _check_size(decoded.size, chunk.nbytes, path)
            chunk.reshape(-1).view(np.uint8)[...] = decoded
            return
        _check_size(size, chunk.nbytes, path)
        self.codec.decode(encoded, out=chunk)

    @staticmethod
    def _read_raw(file: Any, chunk: np.ndarray, path: str) -> None:
        """Read an uncompressed chunk's bytes straight into ``chunk``."""
        _check_size(os.fstat(file.fileno()).st_size, chunk.nbytes, path)
        file.readinto(memoryview(chunk.reshape(-1).view(np.uint8)))


def _check_size(size: int, expected: int, path: str) -> None:
    if size != expected:
        raise ValueError(
            f"the chunk file {path} decodes to {size} bytes, but a chunk of the array "
            f"holds {expected}: the file is corrupted or belongs to another array"
        )


def decoded_size(codec: Any, encoded: bytes) -> int | None:
    """Bytes that ``encoded`` decodes to, as its header says; None where it does not say."""
    codec_id = getattr(codec, "codec_id", None)
    if codec_id == "zstd":
        return zstd_content_size(encoded)
    if codec_id == "blosc" and len(encoded) >= BLOSC_HEADER_BYTES:
        return int.from_bytes(encoded[4:8], "little")
    return None


def zstd_content_size(frame: bytes) -> int | None:
    """The content size in the header of the Zstandard frame opening ``frame``.

    None if ``frame`` does not open with a Zstandard frame or its header
    leaves the size out (RFC 8878, section 3.1.1.1).
    """
    if len(frame) < 6 or frame[:4] != ZSTD_MAGIC:
        return None
    descriptor = frame[4]
    single_segment = (descriptor >> 5) & 1
    size_bytes = (single_segment, 2, 4, 8)[descriptor >> 6]
    if size_bytes == 0:
        return None
    start = 5 + (1 - single_segment) + (0, 1, 2, 4)[descriptor & 3]
    if len(frame) < start + size_bytes:
        return None
    size = int.from_bytes(frame[start : start + size_bytes], "little")
    return size + 256 if size_bytes == 2 else size


class FileRows:
    """A 2-D Zarr array whose row slices are read from its chunk files.

    Indexed as the array is: a slice of rows with step 1 (and any index of
    columns) is read by :class:`ChunkFiles`, any other index by zarr.
    Picklable: it travels as the array and its :class:`ChunkFiles` do.
    """

    def __init__(self, array: Any, files: ChunkFiles) -> None:
        self.array = array
        self.files = files
        self.shape = tuple(array.shape)
        self.dtype = array.dtype
        self.ndim = array.ndim
        self.chunks = array.chunks

    def __getitem__(self, index: Any) -> Any:
        rows, columns = index if isinstance(index, tuple) and len(index) == 2 else (index, None)
        if not isinstance(rows, slice) or isinstance(columns, tuple):
            return self.array[index]
        start, stop, step = rows.indices(self.shape[0])
        if step != 1:
            return self.array[index]
        block = self.files.read(start, max(stop - start, 0))
        return block if columns is None else block[:, columns]


def zarr_rows(array: Any) -> Any:
    """``array``, its row slices read from the chunk files where :func:`chunk_files_of` can."""
    files = chunk_files_of(array)
    return array if files is None else FileRows(array, files)


def chunk_files_of(array: Any) -> ChunkFiles | None:
    """How to read ``array``'s chunks from their files; None where zarr must read them.

    See the module's docstring for the layouts read directly.
    """
    from zarr.storage import LocalStore

    metadata = array.metadata
    if (
        sys.byteorder != "little"
        or not isinstance(array.store, LocalStore)
        or len(array.shape) != 2
        or array.chunks[1] != array.shape[1]
        or array.fill_value is None
    ):
        return None
    layout = _v3_layout(metadata) if metadata.zarr_format == 3 else _v2_layout(metadata)
    if layout is None:
        return None
    key_prefix, separator, dtype, codec = layout
    if dtype.kind not in "biuf":
        return None
    return ChunkFiles(
        # Absolute: a worker may run in another directory than the client.
        directory=os.path.abspath(os.path.join(str(array.store.root), array.path)),
        key_prefix=key_prefix,
        separator=separator,
        shape=(int(array.shape[0]), int(array.shape[1])),
        chunk_rows=int(array.chunks[0]),
        dtype=dtype,
        codec=codec,
        fill_value=array.fill_value,
    )


def _v3_layout(metadata: Any) -> tuple[str, str, np.dtype, Any] | None:
    """Key prefix, separator, stored dtype and compressor of a Zarr v3 array we read."""
    import numcodecs
    from zarr.codecs import BloscCodec, BytesCodec, GzipCodec, ZstdCodec
    from zarr.core.chunk_grids import RegularChunkGrid

    encoding = metadata.chunk_key_encoding
    prefixes = {"default": "c" + encoding.separator, "v2": ""}
    if encoding.name not in prefixes or not isinstance(metadata.chunk_grid, RegularChunkGrid):
        return None
    serializer, *compressors = metadata.codecs
    if not isinstance(serializer, BytesCodec) or len(compressors) > 1:
        return None
    if serializer.endian is not None and serializer.endian.value != "little":
        return None
    codec = None
    if compressors:
        (compressor,) = compressors
        if isinstance(compressor, ZstdCodec):
            codec = numcodecs.Zstd(level=compressor.level, checksum=compressor.checksum)
        elif isinstance(compressor, BloscCodec):
            codec = numcodecs.Blosc()  # Blosc frames say how to decode themselves.
        elif isinstance(compressor, GzipCodec):
            codec = numcodecs.GZip(level=compressor.level)
        else:
            return None
    dtype = np.dtype(metadata.dtype.to_native_dtype()).newbyteorder("<")
    return prefixes[encoding.name], encoding.separator, dtype, codec


def _v2_layout(metadata: Any) -> tuple[str, str, np.dtype, Any] | None:
    """Key prefix, separator, stored dtype and compressor of a Zarr v2 array we read."""
    dtype = np.dtype(metadata.dtype.to_native_dtype())
    if metadata.order != "C" or metadata.filters or dtype.byteorder == ">":
        return None
    return "", metadata.dimension_separator, dtype.newbyteorder("<"), metadata.compressor
