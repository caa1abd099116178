"""Row blocks read straight from a Zarr array's chunk files: zarr's values, or zarr itself."""

from __future__ import annotations

import os
import pickle

import numcodecs
import numpy as np
import pytest
import zarr
from numpy.testing import assert_array_equal
from zarr.codecs import BloscCodec, BytesCodec, GzipCodec, TransposeCodec, ZstdCodec

from kmeans_dask._io.chunk_files import (
    FileRows,
    chunk_files_of,
    decoded_size,
    zarr_rows,
    zstd_content_size,
)
from kmeans_dask._io.inputs import zarr_as_dask
from kmeans_dask._worker.chunks import BlockReadError, ZarrBlock
from kmeans_dask._worker.host_ops import host_ops

SHAPE = (1_030, 6)
CHUNK_ROWS = 100

#: Layouts read from the files: Zarr format, compressor(s), dtype, extra arguments.
DIRECT_LAYOUTS = {
    "v3 zstd": (3, ZstdCodec(level=3), "float32", {}),
    "v3 zstd with checksum": (3, ZstdCodec(level=1, checksum=True), "float64", {}),
    "v3 blosc": (3, BloscCodec(cname="lz4", shuffle="shuffle"), "float32", {}),
    "v3 gzip": (3, GzipCodec(level=1), "int32", {}),
    "v3 raw bytes": (3, None, "float64", {}),
    "v3 v2 keys": (3, ZstdCodec(), "float32", {"chunk_key_encoding": {"name": "v2"}}),
    "v3 dotted keys": (
        3,
        ZstdCodec(),
        "float32",
        {"chunk_key_encoding": {"name": "default", "separator": "."}},
    ),
    "v2 zstd": (2, numcodecs.Zstd(level=2), "float32", {}),
    "v2 blosc": (2, numcodecs.Blosc(cname="zstd", shuffle=2), "float64", {}),
    "v2 zlib": (2, numcodecs.Zlib(level=1), "float32", {}),
    "v2 raw": (2, None, "uint8", {}),
    "v2 slashed keys": (
        2,
        numcodecs.LZ4(),
        "float32",
        {"chunk_key_encoding": {"name": "v2", "separator": "/"}},
    ),
}

#: (offset, n_rows) of blocks: one chunk, several, unaligned, the ragged end, all.
BLOCKS = [(0, 100), (200, 300), (150, 20), (150, 200), (1_000, 30), (990, 40), (0, 1_030)]


def _write(path, zarr_format, compressors, dtype, fill_value=0, **extra):
    rng = np.random.default_rng(0)
    values = (rng.standard_normal(SHAPE) * 50).astype(dtype)
    array = zarr.create_array(
        store=str(path),
        shape=SHAPE,
        chunks=(CHUNK_ROWS, SHAPE[1]),
        dtype=dtype,
        zarr_format=zarr_format,
        compressors=compressors,
        fill_value=fill_value,
        **extra,
    )
    array[:] = values
    return zarr.open_array(str(path), mode="r")


@pytest.mark.parametrize("layout", DIRECT_LAYOUTS)
def test_blocks_read_from_the_files_hold_what_zarr_reads(tmp_path, layout):
    zarr_format, compressor, dtype, extra = DIRECT_LAYOUTS[layout]
    array = _write(tmp_path / "a.zarr", zarr_format, compressor, dtype, **extra)
    files = chunk_files_of(array)
    assert files is not None
    for offset, n_rows in BLOCKS:
        block = files.read(offset, n_rows)
        expected = array[offset : offset + n_rows]
        assert block.dtype == expected.dtype
        assert block.flags.c_contiguous and block.flags.writeable
        assert_array_equal(block, expected)


def test_chunk_paths_are_the_keys_zarr_writes(tmp_path):
    for layout, (zarr_format, compressor, dtype, extra) in DIRECT_LAYOUTS.items():
        array = _write(tmp_path / f"{layout}.zarr", zarr_format, compressor, dtype, **extra)
        files = chunk_files_of(array)
        for index in (0, 3, 10):
            key = array.metadata.encode_chunk_key((index, 0))
            assert files.chunk_path(index) == os.path.join(str(tmp_path / f"{layout}.zarr"), key)
            assert os.path.exists(files.chunk_path(index))


def test_a_store_opened_by_a_relative_path_is_read_from_anywhere(tmp_path, monkeypatch):
    written = _write(tmp_path / "a.zarr", 3, ZstdCodec(), "float32")
    monkeypatch.chdir(tmp_path)
    files = chunk_files_of(zarr.open_array("a.zarr", mode="r"))
    monkeypatch.chdir("/")
    assert files.directory == str(tmp_path / "a.zarr")
    assert_array_equal(files.read(0, 300), written[0:300])


def test_arrays_inside_a_group_are_found_at_their_path(tmp_path):
    group = zarr.open_group(str(tmp_path / "g.zarr"), mode="w")
    written = group.create_array("inner/x", shape=SHAPE, chunks=(CHUNK_ROWS, 6), dtype="f4")
    written[:] = np.arange(np.prod(SHAPE), dtype="f4").reshape(SHAPE)
    array = zarr.open_group(str(tmp_path / "g.zarr"), mode="r")["inner/x"]
    assert_array_equal(chunk_files_of(array).read(120, 200), array[120:320])


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_chunks_never_written_hold_the_fill_value(tmp_path, zarr_format):
    array = zarr.create_array(
        store=str(tmp_path / "a.zarr"),
        shape=SHAPE,
        chunks=(CHUNK_ROWS, 6),
        dtype="f4",
        zarr_format=zarr_format,
        fill_value=-7.5,
    )
    array[250:330] = 1.0  # chunks 2 and 3 only
    array = zarr.open_array(str(tmp_path / "a.zarr"), mode="r")
    block = chunk_files_of(array).read(150, 400)
    assert_array_equal(block, array[150:550])
    assert (block[:100] == -7.5).all() and (block[100:180] == 1.0).all()


#: Layouts zarr reads: (zarr_format, create_array arguments, why).
ZARR_LAYOUTS = {
    "sharded": (3, {"shards": (200, 6)}),
    "transposed": (3, {"serializer": BytesCodec(), "filters": [TransposeCodec(order=(1, 0))]}),
    "big-endian v3": (3, {"serializer": BytesCodec(endian="big")}),
    "two compressors": (3, {"compressors": [GzipCodec(level=1), ZstdCodec()]}),
    "columns chunked": (3, {"chunks": (CHUNK_ROWS, 4)}),
    "v2 filters": (2, {"filters": [numcodecs.Delta(dtype="f4")]}),
    "v2 Fortran order": (2, {"order": "F"}),
    "v2 big-endian": (2, {"dtype": ">f4"}),
    "v2 no fill value": (2, {"fill_value": None}),
}


@pytest.mark.parametrize("layout", ZARR_LAYOUTS)
def test_other_layouts_are_left_to_zarr(tmp_path, layout):
    zarr_format, extra = ZARR_LAYOUTS[layout]
    arguments = {"chunks": (CHUNK_ROWS, 6), "dtype": "f4", **extra}
    array = zarr.create_array(
        store=str(tmp_path / "a.zarr"), shape=SHAPE, zarr_format=zarr_format, **arguments
    )
    array[:] = np.ones(SHAPE, "f4")
    assert chunk_files_of(zarr.open_array(str(tmp_path / "a.zarr"), mode="r")) is None


def test_arrays_outside_a_local_directory_are_left_to_zarr():
    array = zarr.create_array(store={}, shape=SHAPE, chunks=(CHUNK_ROWS, 6), dtype="f4")
    assert chunk_files_of(array) is None


def _corrupt(path, index, content):
    with open(path / "c" / str(index) / "0", "wb") as chunk_file:
        chunk_file.write(content)


@pytest.mark.parametrize(
    ("compressor", "content"),
    [
        (ZstdCodec(), numcodecs.Zstd().encode(np.ones((CHUNK_ROWS - 1, 6), "f4"))),
        (ZstdCodec(), numcodecs.Zstd().encode(np.ones((CHUNK_ROWS + 1, 6), "f4"))),
        (BloscCodec(), numcodecs.Blosc().encode(np.ones((CHUNK_ROWS // 2, 6), "f4"))),
        (GzipCodec(), numcodecs.GZip().encode(np.ones((CHUNK_ROWS * 2, 6), "f4"))),
        (None, np.ones((CHUNK_ROWS, 5), "f4").tobytes()),
    ],
    ids=["zstd short", "zstd long", "blosc short", "gzip long", "raw short"],
)
def test_a_chunk_of_another_size_is_an_error_naming_its_file(tmp_path, compressor, content):
    array = _write(tmp_path / "a.zarr", 3, compressor, "float32")
    _corrupt(tmp_path / "a.zarr", 4, content)
    files = chunk_files_of(array)
    with pytest.raises(ValueError, match=r"chunk file .*a\.zarr/c/4/0 decodes to \d+ bytes.*2400"):
        files.read(350, 200)
    assert_array_equal(files.read(0, 400), array[0:400])  # the other chunks still read


def test_a_corrupted_chunk_fails_the_block_naming_its_rows_and_store(tmp_path):
    array = _write(tmp_path / "a.zarr", 3, ZstdCodec(), "float32")
    _corrupt(tmp_path / "a.zarr", 2, b"not zstd" * 50)
    block = ZarrBlock(array, 200, 100, np.dtype("f4"), None, host_ops(), chunk_files_of(array))
    with pytest.raises(BlockReadError, match=r"rows 200 to 300 of the Zarr array at .*a\.zarr"):
        block.load()


def test_a_block_read_from_files_is_the_block_zarr_reads_and_travels_small(tmp_path):
    array = _write(tmp_path / "a.zarr", 3, ZstdCodec(), "float64")
    files = chunk_files_of(array)
    direct = ZarrBlock(array, 100, 250, np.dtype("f4"), None, host_ops(), files)
    through_zarr = ZarrBlock(array, 100, 250, np.dtype("f4"), None, host_ops())
    assert_array_equal(direct.load().data, through_zarr.load().data)
    assert direct.load().data.dtype == np.float32
    assert len(pickle.dumps(files)) < 1_000
    assert pickle.loads(pickle.dumps(files)) == files


@pytest.mark.parametrize("n_bytes", [0, 1, 255, 256, 257, 65_791, 65_792, 2_400_000])
@pytest.mark.parametrize("level", [-1, 3, 19])
def test_the_zstd_header_gives_the_decoded_size(n_bytes, level):
    frame = numcodecs.Zstd(level=level).encode(np.zeros(n_bytes, np.uint8))
    assert zstd_content_size(frame) == n_bytes
    assert decoded_size(numcodecs.Zstd(), frame) == n_bytes


def test_headers_that_do_not_say_give_no_size():
    # A frame without its content size: descriptor 0 (no size, window byte follows).
    assert zstd_content_size(b"\x28\xb5\x2f\xfd\x00\x48\x00\x00\x00\x00") is None
    assert zstd_content_size(b"not a zstd frame") is None
    assert zstd_content_size(b"\x28\xb5\x2f\xfd") is None
    assert decoded_size(numcodecs.GZip(), numcodecs.GZip().encode(b"x" * 99)) is None
    assert decoded_size(numcodecs.Blosc(), b"short") is None


@pytest.mark.parametrize("n_bytes", [0, 16, 4_000, 2_400_000])
def test_the_blosc_header_gives_the_decoded_size(n_bytes):
    encoded = numcodecs.Blosc(cname="lz4").encode(np.ones(n_bytes, np.uint8))
    assert decoded_size(numcodecs.Blosc(), encoded) == n_bytes


#: Indexes of an array: row slices (read from the files), and others (read by zarr).
INDEXES = [
    slice(None),
    slice(130, 470),
    slice(-40, None),
    slice(1_000, 5_000),
    slice(300, 200),
    (slice(10, 250), slice(None)),
    (slice(10, 250), slice(1, 4)),
    (slice(10, 250), 2),
    (slice(0, 400, 3), slice(None)),
    7,
    (5, slice(None)),
    ([3, 1, 900], slice(None)),
]


@pytest.mark.parametrize("index", INDEXES, ids=repr)
def test_file_rows_are_indexed_as_the_array_is(tmp_path, index):
    array = _write(tmp_path / "a.zarr", 3, ZstdCodec(), "float32")
    rows = zarr_rows(array)
    assert isinstance(rows, FileRows)
    assert (rows.shape, rows.dtype, rows.ndim, rows.chunks) == (
        array.shape,
        array.dtype,
        array.ndim,
        array.chunks,
    )
    assert_array_equal(rows[index], array[index])


def test_zarr_rows_leaves_other_layouts_as_they_are(tmp_path):
    array = zarr.create_array(
        store=str(tmp_path / "a.zarr"),
        shape=SHAPE,
        chunks=(CHUNK_ROWS, 6),
        dtype="f4",
        shards=(200, 6),
    )
    assert zarr_rows(array) is array


def test_the_dask_array_over_a_store_reads_its_chunk_files(tmp_path, monkeypatch):
    array = _write(tmp_path / "a.zarr", 3, ZstdCodec(), "float64")
    X = zarr_as_dask(array)
    assert X.chunks == ((CHUNK_ROWS,) * 10 + (30,), (6,))
    assert X.name == zarr_as_dask(zarr.open_array(str(tmp_path / "a.zarr"), mode="r")).name
    reads = []
    real_read = type(chunk_files_of(array)).read
    monkeypatch.setattr(
        type(chunk_files_of(array)),
        "read",
        lambda files, offset, n_rows: reads.append(offset) or real_read(files, offset, n_rows),
    )
    assert_array_equal(X.compute(scheduler="sync"), array[:])
    assert sorted(reads) == list(range(0, SHAPE[0], CHUNK_ROWS))
