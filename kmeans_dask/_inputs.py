"""Input adapters: NumPy-like and Dask arrays become chunks on the workers.

NumPy input is validated with scikit-learn's rules (so ints and bools become
float64, strings and complex numbers are refused) and scattered to the
workers in row blocks. Dask input is checked from its metadata only (shape,
dtype), rechunked to a single column block, and computed into worker
memory, so its chunks can be recomputed from their source if a worker dies.
Zarr input (an array, or a path/URL to one) is read as a Dask array whose
row chunks are the store's; when it does not fit in the workers' memory it is
not persisted at all, and every pass streams the blocks from the store.
Finiteness and weights are checked in one pass over the chunks once they are
on the workers (:meth:`DistributedData.check`).
"""

from __future__ import annotations

import itertools
import logging
import math
import os
from collections.abc import Callable
from concurrent.futures import CancelledError
from dataclasses import dataclass, field
from functools import partial, reduce
from typing import Any

import dask
import dask.array as da
import numpy as np
from distributed import Client, Future, wait

from kmeans_dask._chunks import Chunk, ChunkSummary, ZarrBlock, make_chunk, settle, summarize
from kmeans_dask._client import worker_info
from kmeans_dask._hosts import ChunkHosts, fits_hosts
from kmeans_dask._mapreduce import map_chunks, send, task_keys, tree_reduce

logger = logging.getLogger(__name__)

#: Target size of one scattered block of NumPy input.
TARGET_CHUNK_BYTES = 64 * 2**20
#: Smallest block worth a task of its own.
MIN_CHUNK_ROWS = 1024
#: Blocks NumPy input is split into at least, when there are rows enough: a
#: worker's threads take the next block as they finish one, so several
#: blocks per thread keep a core that runs slower for a while (another
#: process, frequency changes) from holding up the iteration, and 16 keep 8
#: threads busy. A constant, not the cluster's thread count: the reduction
#: tree, and so the result bit for bit, depends on the number of blocks, so
#: it must be the same on any cluster (and a checkpoint resumes on any).
PARALLEL_BLOCKS = 16
#: ... halved (down to 2) while the blocks' partial statistics, which travel
#: each iteration, exceed this fraction of the data: at 200k x 128, k = 2048,
#: eight blocks sent 16 MiB of sums per iteration (63 ms, 9% of it) where two
#: send 4 MiB.
MAX_STATISTICS_SHARE = 1 / 16


#: Share of the workers' total memory limit that persisted data may use.
PERSIST_MEMORY_FRACTION = 0.5


def is_dask_array(X: Any) -> bool:
    return isinstance(X, da.Array)


def is_zarr_source(X: Any) -> bool:
    """A ``zarr.Array``, or a path or URL that names one."""
    if isinstance(X, str | os.PathLike):
        return True
    return type(X).__module__.startswith("zarr")  # an array, or a group to refuse


def as_local_array(X: Any) -> Any:
    """Bring a batch into client memory: Dask arrays are computed, CuPy moved to NumPy.

    Anything else (NumPy, lists, DataFrames, None) is returned unchanged.
    """
    if is_dask_array(X):
        X = X.compute()
    if type(X).__module__.split(".")[0] == "cupy":
        X = X.get()
    return X


def open_zarr(source: Any):
    """Open a Zarr array read-only from an array, a path or an fsspec URL.

    Raises
    ------
    FileNotFoundError
        If nothing exists at the path.
    ValueError
        If the path holds a Zarr group (the message lists its arrays) or is
        not a Zarr store.
    """
    try:
        import zarr
    except ImportError as exc:
        raise ImportError(
            "reading Zarr input needs the zarr package: pip install 'zarr>=3'"
        ) from exc
    if not isinstance(source, str | os.PathLike):
        if isinstance(source, zarr.Group):
            raise _group_error(source, "X")
        return source
    location = os.fspath(source)
    if "://" not in location and not os.path.exists(location):
        raise FileNotFoundError(f"Zarr input {location!r} does not exist")
    try:
        node = zarr.open(location, mode="r")
    except (FileNotFoundError, zarr.errors.NodeNotFoundError) as exc:
        raise FileNotFoundError(f"no Zarr array or group found at {location!r}") from exc
    except Exception as exc:
        raise ValueError(f"{location!r} could not be read as a Zarr store: {exc}") from exc
    if isinstance(node, zarr.Group):
        raise _group_error(node, repr(location), location)
    return node


def _group_error(group, what: str, location: str | None = None) -> ValueError:
    """The error for a Zarr group given where an array is expected; it lists the arrays."""
    names = sorted(name for name, _ in group.arrays())
    if location is None:
        example = f"group[{names[0]!r}]" if names else "group['<array>']"
    else:
        example = repr(os.path.join(location, names[0]) if names else location + "/<array>")
    return ValueError(
        f"{what} is a Zarr group, not an array; name one of its arrays, e.g. {example} "
        f"(arrays in the group: {names})"
    )


class NpyFile:
    """A ``.npy`` file as an array-like that reads only the rows asked for.

    Pickles as its absolute path, shape and dtype, so a Dask array made from
    it (``da.from_array(NpyFile(path), chunks=...)``) sends tasks that read
    their own rows from the file (workers in another directory included)
    instead of a graph that carries the data.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = os.path.abspath(path)
        array = self._open()
        self.shape, self.dtype, self.ndim = array.shape, array.dtype, array.ndim

    def _open(self) -> np.ndarray:
        return np.load(self.path, mmap_mode="r", allow_pickle=False)

    def __getitem__(self, index: Any) -> np.ndarray:
        return np.array(self._open()[index])


def zarr_as_dask(array) -> da.Array:
    """A Dask array over a Zarr array, with the store's row chunks and one column block."""
    return da.from_zarr(
        array, chunks=(array.chunks[0], array.shape[1]) if array.ndim == 2 else None
    )


def compute_dtype(dtype: np.dtype) -> np.dtype:
    """float32 stays float32; every other real dtype is computed in float64."""
    return np.dtype(np.float32) if np.dtype(dtype) == np.float32 else np.dtype(np.float64)


def check_dask_array(X: da.Array, name: str = "X") -> da.Array:
    """Validate a Dask array from its metadata and give it one column block."""
    if X.ndim != 2:
        raise ValueError(
            f"Expected a 2-D array for {name}, got a {X.ndim}-D Dask array of shape {X.shape}. "
            "Reshape your data, e.g. X.reshape(-1, 1) for a single feature."
        )
    if X.dtype.kind not in "biuf":
        raise TypeError(
            f"{name} has dtype {X.dtype}; expected a real numeric dtype "
            "(float32, float64, integer or boolean)"
        )
    if any(math.isnan(c) for c in X.chunks[0]):
        X = X.compute_chunk_sizes()
    n_samples, n_features = X.shape
    if n_samples == 0 or n_features == 0:
        raise ValueError(
            f"Found array with {n_samples} sample(s) and {n_features} feature(s) (shape="
            f"{X.shape}) while a minimum of 1 is required for each."
        )
    X = X.astype(compute_dtype(X.dtype))
    if len(X.chunks[1]) > 1:
        X = X.rechunk({1: -1})
    return X


def check_sample_weight(
    sample_weight: Any, n_samples: int, rows_of: str = "X", name: str = "sample_weight"
) -> np.ndarray | da.Array | None:
    """Shape and type of ``sample_weight``; values are checked with the data."""
    if sample_weight is None:
        return None
    if is_dask_array(sample_weight):
        weights = sample_weight
    else:
        weights = np.asarray(sample_weight)
        if weights.ndim == 0:
            weights = np.full(n_samples, weights)
    if weights.dtype.kind not in "biuf":
        raise TypeError(f"{name} must be numeric, got dtype {weights.dtype}")
    if weights.shape != (n_samples,):
        raise ValueError(
            f"{name} has shape {weights.shape}; expected ({n_samples},) to match the "
            f"{n_samples} rows of {rows_of}"
        )
    return weights.astype(np.float64)


def numpy_row_chunks(
    n_samples: int, n_features: int, itemsize: int, statistics_bytes: int = 0
) -> tuple:
    """Row block sizes for NumPy input: at most ~64 MiB, and :data:`PARALLEL_BLOCKS`.

    ``statistics_bytes`` is the size of one block's partial statistics; the
    blocks are fewer (powers of two from :data:`PARALLEL_BLOCKS` down to 2)
    where those would travel more than :data:`MAX_STATISTICS_SHARE` of the
    data. Nothing here depends on the cluster, so NumPy input gives the same
    blocks, and the same result, on any cluster.
    """
    data_bytes = n_samples * n_features * itemsize
    by_size = math.ceil(data_bytes / TARGET_CHUNK_BYTES)
    fine = PARALLEL_BLOCKS
    while fine > 2 and fine * statistics_bytes > MAX_STATISTICS_SHARE * data_bytes:
        fine //= 2
    n_blocks = max(by_size, fine, 1)
    n_blocks = min(n_blocks, max(1, n_samples // MIN_CHUNK_ROWS))
    base, extra = divmod(n_samples, n_blocks)
    return tuple(base + (i < extra) for i in range(n_blocks))


@dataclass
class DistributedData:
    """Row chunks persisted on the workers (or Zarr blocks streamed by every pass)."""

    chunks: list[Future] | list[ZarrBlock]
    row_chunks: tuple[int, ...]
    n_features: int
    dtype: np.dtype
    client_copy: list[Chunk] | None = None
    """For NumPy input, the chunks as built on the client, to re-send lost ones."""
    use_hosts: bool = False
    """Whether passes go through one actor per worker (:mod:`kmeans_dask._hosts`)."""
    _hosts: ChunkHosts | None = field(default=None, init=False, repr=False)

    @property
    def n_samples(self) -> int:
        return sum(self.row_chunks)

    @property
    def persisted(self) -> bool:
        """Whether the rows live in worker memory (else they stream from Zarr)."""
        return not self.chunks or isinstance(self.chunks[0], Future)

    def hosts(self, client: Client) -> ChunkHosts | None:
        """The actors over the chunks, started on first use; None without ``use_hosts``."""
        if self.use_hosts and self._hosts is None:
            self._hosts = ChunkHosts(client, self.chunks)
        return self._hosts

    def map_reduce(
        self,
        client: Client,
        func: Callable,
        combine: Callable,
        *args: Any,
        name: str,
        leading: tuple = (),
    ) -> Any:
        """``func(chunk, *args)`` on every chunk, combined by ``combine(*leading, *parts)``.

        Through the actors when the data has them (which combine what they
        can before answering), else as tasks named ``name`` (array arguments
        sent as :func:`~kmeans_dask._mapreduce.send` sends them); either way
        in the tree of :func:`~kmeans_dask._mapreduce.tree_reduce`, so with
        the same result.
        """
        hosts = self.hosts(client)
        if hosts is not None:
            return hosts.map_reduce(func, partial(combine, *leading), *args)
        sent = [send(client, a, name) if isinstance(a, np.ndarray) else a for a in args]
        parts = map_chunks(client, func, self.chunks, *sent, name=name)
        return tree_reduce(client, combine, parts, name=f"{name}-merge", leading=leading)

    def check(self, client: Client) -> ChunkSummary:
        """One pass learning finiteness, column moments and weight sums of all rows."""
        hosts = self.hosts(client)
        if hosts is not None:
            parts = hosts.map(summarize)
        else:
            parts = client.gather(map_chunks(client, summarize, self.chunks, name="kmeans-check"))
        return reduce(ChunkSummary.merge, parts)

    def release(self) -> None:
        self._close_hosts()
        for chunk in self.chunks:
            if isinstance(chunk, Future):
                chunk.release()

    def _close_hosts(self) -> None:
        if self._hosts is not None:
            self._hosts.close()
            self._hosts = None

    def recover(self, client: Client) -> int:
        """Re-send the chunks that died with a worker; return how many.

        Chunks computed from a Dask graph (Dask and Zarr input) are recomputed
        by the scheduler itself and never need this. Chunks scattered from
        NumPy input have no graph to recompute them from, so they are sent
        again from the client's copy.

        Raises
        ------
        RuntimeError
            If a chunk was lost that cannot be re-sent.
        """
        # An actor may have died with its worker: they start again on next use.
        self._close_hosts()
        if self.client_copy is None:
            # The scheduler recomputes lost chunks from their graph; wait for them.
            try:
                with client.as_current():
                    wait([c for c in self.chunks if isinstance(c, Future)])
            except CancelledError as exc:
                raise RuntimeError(
                    "data chunk(s) were lost with a worker and cannot be recomputed"
                ) from exc
            return 0
        lost = [
            i
            for i, c in enumerate(self.chunks)
            if isinstance(c, Future) and c.status != "finished"
        ]
        if lost:
            scattered = client.scatter([self.client_copy[i] for i in lost], hash=False)
            for i, future in zip(
                lost, map_chunks(client, settle, scattered, name="kmeans-load"), strict=True
            ):
                self.chunks[i] = future
            logger.warning("re-sent %d chunk(s) of NumPy input lost with a worker", len(lost))
        return len(lost)


def _offsets(row_chunks: tuple[int, ...]) -> list[int]:
    return [int(o) for o in np.cumsum((0, *row_chunks[:-1]))]


def fits_in_memory(client: Client, nbytes: int) -> bool:
    """Whether ``nbytes`` of data can be persisted on the client's workers."""
    limits = [w.get("memory_limit") or 0 for w in (worker_info(client) or {}).values()]
    if not limits or min(limits) == 0:
        return True  # no limit set
    return nbytes <= PERSIST_MEMORY_FRACTION * sum(limits)


def distribute(
    client: Client,
    X: np.ndarray | da.Array,
    weights,
    *,
    stream_from=None,
    statistics_bytes: int = 0,
    engine: str = "auto",
) -> DistributedData:
    """Put validated ``X`` (and weights) on the workers as :class:`Chunk` futures.

    With ``stream_from`` (the Zarr array behind ``X``) nothing is persisted:
    the "chunks" are :class:`ZarrBlock` references that every task reads.
    NumPy input is split by :func:`numpy_row_chunks`, given the size of one
    block's partial statistics, ``statistics_bytes``. Persisted chunks are
    served by actors (``use_hosts``) with ``engine="actors"``, or with
    ``"auto"`` while gathering one result per chunk stays cheap.
    """
    dtype = np.dtype(X.dtype)
    client_copy = None
    if stream_from is not None:
        row_chunks = tuple(int(c) for c in X.chunks[0])
        bounds = np.cumsum((0, *row_chunks))
        if weights is not None and is_dask_array(weights):
            weights = weights.compute()
        chunks = [
            ZarrBlock(
                stream_from, int(a), int(b - a), dtype, None if weights is None else weights[a:b]
            )
            for a, b in itertools.pairwise(bounds)
        ]
    elif is_dask_array(X):
        all_row_chunks = tuple(int(c) for c in X.chunks[0])
        blocks = X.to_delayed().ravel()
        if weights is None:
            weight_blocks = [None] * len(blocks)
        elif is_dask_array(weights):
            weight_blocks = list(weights.rechunk((all_row_chunks,)).to_delayed().ravel())
        else:
            bounds = np.cumsum((0, *all_row_chunks))
            weight_blocks = [weights[a:b] for a, b in itertools.pairwise(bounds)]
        # Empty blocks (common after filtering) hold nothing to fit: leaving
        # them out spares every pass a task and gives the reduction the same
        # tree as the same rows without them.
        kept = [
            (block, w, offset, rows)
            for block, w, offset, rows in zip(
                blocks, weight_blocks, _offsets(all_row_chunks), all_row_chunks, strict=True
            )
            if rows
        ]
        row_chunks = tuple(rows for *_, rows in kept)
        keys = task_keys("kmeans-load", len(kept))
        tasks = [
            dask.delayed(make_chunk, pure=True)(block, w, offset, dtype, dask_key_name=key)
            for (block, w, offset, _), key in zip(kept, keys, strict=True)
        ]
        chunks = client.compute(tasks)
    else:
        row_chunks = numpy_row_chunks(X.shape[0], X.shape[1], dtype.itemsize, statistics_bytes)
        bounds = np.cumsum((0, *row_chunks))
        local = [
            make_chunk(X[a:b], None if weights is None else weights[a:b], a, dtype)
            for a, b in itertools.pairwise(bounds)
        ]
        client_copy = local
        scattered = client.scatter(local, hash=False)
        chunks = map_chunks(client, settle, scattered, name="kmeans-load")
        del scattered
    small_results = fits_hosts(len(chunks), statistics_bytes)
    return DistributedData(
        chunks=chunks,
        row_chunks=row_chunks,
        n_features=int(X.shape[1]),
        dtype=dtype,
        client_copy=client_copy,
        use_hosts=stream_from is None
        and (engine == "actors" or (engine == "auto" and small_results)),
    )
