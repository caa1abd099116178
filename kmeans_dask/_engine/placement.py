"""Placing rows on the workers: NumPy blocks scattered, Dask blocks computed, Zarr streamed.

NumPy input is scattered to the workers in row blocks; Dask input is
computed into worker memory, so its chunks can be recomputed from their
source if a worker dies. Zarr input that does not fit in the workers' memory
is not persisted at all: every pass streams the blocks from the store.
Finiteness and weights are checked in the fit's first pass over the chunks,
whatever that pass is (:meth:`DistributedData.map_reduce`), or in a pass of
their own when the summary is wanted before any other
(:meth:`DistributedData.summary`).
"""

from __future__ import annotations

import importlib
import itertools
import logging
import math
from collections.abc import Callable
from concurrent.futures import CancelledError
from dataclasses import dataclass, field
from functools import partial, reduce
from typing import Any

import dask
import dask.array as da
import numpy as np
from array_api_compat import array_namespace
from distributed import Client, Future

from kmeans_dask._engine.client import worker_info
from kmeans_dask._engine.hosts import ChunkHosts, fits_hosts
from kmeans_dask._engine.mapreduce import map_chunks, send, task_keys, tree_reduce
from kmeans_dask._engine.pauses import watched_gather, watched_scatter, watched_wait
from kmeans_dask._io.chunk_files import chunk_files_of
from kmeans_dask._io.inputs import is_dask_array
from kmeans_dask._worker.array_api_ops import ArrayAPIOps
from kmeans_dask._worker.chunks import Chunk, ZarrBlock, make_chunk
from kmeans_dask._worker.host_ops import host_ops
from kmeans_dask._worker.ops import ChunkOps
from kmeans_dask._worker.results import ChunkSummary, combine_checked
from kmeans_dask._worker.tasks import checked_pass, summarize
from kmeans_dask.backends import backend_info, holds_rows

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
#: each iteration, exceed this fraction of the data (at 200k x 128, k = 2048,
#: eight blocks sent 16 MiB of sums per iteration where two send 4 MiB;
#: RESULTS.md, "Design measurements").
MAX_STATISTICS_SHARE = 1 / 16


#: How long a fit that lost a worker waits for one to join when none is left.
WORKER_RETURN_TIMEOUT = 60.0

#: Share of the workers' total memory limit that persisted data may use.
PERSIST_MEMORY_FRACTION = 0.5


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


def refuse_unusable(summary: ChunkSummary) -> None:
    """The least a data check's summary must be judged by: refused rows are an error."""
    if summary.refused:
        raise ValueError(
            f"the data holds {summary.nonfinite_count} non-finite value(s) and "
            f"{summary.bad_weight_count} negative or non-finite weight(s)"
        )


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
    """Whether passes go through one actor per worker (:mod:`kmeans_dask._engine.hosts`).

    For streamed blocks too: every pass then reads the blocks ahead of the
    work on them.
    """
    validate: Callable[[ChunkSummary], None] = field(default=refuse_unusable, repr=False)
    """Judges the data check's summary; raises for data the fit refuses (at least
    for a :attr:`~kmeans_dask._worker.results.ChunkSummary.refused` summary)."""
    with_digest: bool = True
    """Whether the data check computes the rows' content digest (checkpoints need it)."""
    labels_to_client: bool = False
    """Whether the fit's labels go to the client (a NumPy ``labels_``) rather than
    staying on the workers: the actors then hand them over in one call."""
    scans_candidates: bool = True
    """Whether the chunks' ops search rows among candidates
    (:attr:`~kmeans_dask._worker.ops.ChunkOps.scans_candidates`): else the fit's
    candidate passes would all be plain passes."""
    _hosts: ChunkHosts | None = field(default=None, init=False, repr=False)
    _summary: ChunkSummary | None = field(default=None, init=False, repr=False)

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
        result_bytes: int = 0,
    ) -> Any:
        """``func(chunk, *args)`` on every chunk, combined by ``combine(*leading, *parts)``.

        Through the actors when the data has them (which combine what they
        can before answering), else as tasks named ``name`` (array arguments
        sent as :func:`~kmeans_dask._engine.mapreduce.send` sends them); either way
        in the tree of :func:`~kmeans_dask._engine.mapreduce.tree_reduce`, so with
        the same result. ``result_bytes``, the size of one value when known,
        lets large values be combined on the cluster up to the root.

        The first such pass also makes the data check
        (:func:`~kmeans_dask._worker.tasks.checked_pass`): its summary is
        judged by :attr:`validate` before the pass's value is returned.
        """
        merge = partial(combine, *leading)
        checking = self._summary is None
        if checking:
            func = partial(checked_pass, func, self.with_digest)
            merge = partial(combine_checked, merge)
        hosts = self.hosts(client)
        if hosts is not None:
            value = hosts.map_reduce(func, merge, *args, result_bytes=result_bytes)
        else:
            sent = [send(client, a, name) if isinstance(a, np.ndarray) else a for a in args]
            parts = map_chunks(client, func, self.chunks, *sent, name=name)
            value = tree_reduce(
                client, merge, parts, name=f"{name}-merge", result_bytes=result_bytes
            )
        if not checking:
            return value
        self._accept(value.summary())
        return value.value

    def summary(self, client: Client) -> ChunkSummary:
        """The data check's summary: that of the first pass, else of a pass of its own now.

        Raises what :attr:`validate` raises for it.
        """
        if self._summary is None:
            self._accept(self.check(client))
        return self._summary

    def check(self, client: Client) -> ChunkSummary:
        """One pass learning finiteness, column moments and weight sums of all rows."""
        hosts = self.hosts(client)
        if hosts is not None:
            parts = hosts.map(summarize, self.with_digest)
        else:
            parts = watched_gather(
                client,
                map_chunks(client, summarize, self.chunks, self.with_digest, name="kmeans-check"),
            )
        return reduce(ChunkSummary.merge, parts)

    def _accept(self, summary: ChunkSummary) -> None:
        self.validate(summary)
        self._summary = summary

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
            If a chunk was lost that cannot be re-sent, or no worker is left
            nor joins within :data:`WORKER_RETURN_TIMEOUT`.
        """
        # An actor may have died with its worker: they start again on next use.
        self._close_hosts()
        # The step needs a worker to run on: a nanny restarts a killed one in
        # seconds, even the only one.
        try:
            client.wait_for_workers(1, timeout=WORKER_RETURN_TIMEOUT)
        except TimeoutError as exc:
            raise RuntimeError(
                f"a worker was lost and none is left: waited {WORKER_RETURN_TIMEOUT:.0f} s for "
                "one to join the cluster (a nanny restarts a killed worker; without one, "
                "start new workers)"
            ) from exc
        if self.client_copy is None:
            # The scheduler recomputes lost chunks from their graph; wait for them.
            try:
                watched_wait(client, [c for c in self.chunks if isinstance(c, Future)])
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
            # Placed by the worker as it unpickles them (Chunk.__reduce__).
            scattered = watched_scatter(client, [self.client_copy[i] for i in lost], hash=False)
            for i, future in zip(lost, scattered, strict=True):
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


def chunk_ops_for(X: Any, backend: str = "auto") -> ChunkOps:
    """The operations that hold and work on ``X``'s rows.

    A device ``backend`` (``"cupy"``) holds them in its memory whatever X
    is. Otherwise the rows' own library decides: host NumPy memory for NumPy,
    Zarr and Dask arrays of NumPy blocks; the GPU for CuPy blocks; the
    array-API operations of any other library.

    Raises
    ------
    ImportError
        If a device backend's array library is missing (naming the extra).
    """
    meta = getattr(X, "_meta", X)
    on_host = isinstance(meta, np.ndarray) or not hasattr(meta, "__array_namespace__")
    namespace = None if on_host else array_namespace(meta).__name__.split(".")[-1]
    if holds_rows(backend) or namespace == "cupy":
        ops = device_ops(backend if holds_rows(backend) else "cupy")
        ops.labels_on_device = namespace == "cupy"  # CuPy input: labels_ stays on the GPU
        return ops
    return host_ops() if on_host else ArrayAPIOps(namespace)


def device_ops(backend: str) -> ChunkOps:
    """The chunk operations of a device ``backend``; ImportError naming the extra if missing."""
    from kmeans_dask._worker.cupy_ops import require_cupy

    require_cupy(backend)
    info = backend_info(backend)
    return getattr(importlib.import_module(info.module), info.cls)()


def distribute(
    client: Client,
    X: np.ndarray | da.Array,
    weights,
    *,
    stream_from=None,
    statistics_bytes: int = 0,
    engine: str = "auto",
    backend: str = "auto",
    ops: ChunkOps | None = None,
    validate: Callable[[ChunkSummary], None] = refuse_unusable,
    with_digest: bool = True,
    labels_to_client: bool = False,
) -> DistributedData:
    """Put validated ``X`` (and weights) on the workers as :class:`Chunk` futures.

    With ``stream_from`` (the Zarr array behind ``X``) nothing is persisted:
    the "chunks" are :class:`ZarrBlock` references that every task reads.
    NumPy input is split by :func:`numpy_row_chunks`, given the size of one
    block's partial statistics, ``statistics_bytes``. Chunks, persisted or
    streamed, are served by actors (``use_hosts``) with ``engine="actors"``,
    or with ``"auto"`` while gathering one result per chunk stays cheap;
    streamed blocks are then read ahead of the work on them. The chunks
    are held and worked on by ``ops`` (default: :func:`chunk_ops_for` ``X``
    and ``backend``). ``validate`` and ``with_digest`` say how the data
    check is judged and whether it digests the rows, ``labels_to_client``
    where the labels go (:class:`DistributedData`).
    """
    ops = chunk_ops_for(X, backend) if ops is None else ops
    dtype = np.dtype(X.dtype)
    client_copy = None
    if stream_from is not None:
        row_chunks = tuple(int(c) for c in X.chunks[0])
        bounds = np.cumsum((0, *row_chunks))
        if weights is not None and is_dask_array(weights):
            weights = weights.compute()
        files = chunk_files_of(stream_from)
        chunks = [
            ZarrBlock(
                stream_from,
                int(a),
                int(b - a),
                dtype,
                None if weights is None else weights[a:b],
                ops,
                files,
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
            dask.delayed(make_chunk, pure=True)(block, w, offset, dtype, ops, dask_key_name=key)
            for (block, w, offset, _), key in zip(kept, keys, strict=True)
        ]
        chunks = client.compute(tasks)
    else:
        row_chunks = numpy_row_chunks(X.shape[0], X.shape[1], dtype.itemsize, statistics_bytes)
        bounds = np.cumsum((0, *row_chunks))
        local = [
            make_chunk(X[a:b], None if weights is None else weights[a:b], a, dtype, ops)
            for a, b in itertools.pairwise(bounds)
        ]
        client_copy = local
        # Each worker places its chunks as it unpickles them (Chunk.__reduce__):
        # no load task, no round trip.
        direct = scatter_direct(client, uses_hosts(engine, len(local), statistics_bytes))
        chunks = watched_scatter(client, local, hash=False, direct=direct)
    return DistributedData(
        chunks=chunks,
        row_chunks=row_chunks,
        n_features=int(X.shape[1]),
        dtype=dtype,
        client_copy=client_copy,
        use_hosts=uses_hosts(engine, len(chunks), statistics_bytes),
        validate=validate,
        with_digest=with_digest,
        labels_to_client=labels_to_client,
        scans_candidates=ops.scans_candidates,
    )


def uses_hosts(engine: str, n_chunks: int, statistics_bytes: int) -> bool:
    """Whether the passes go through actors: ``engine="actors"``, or ``"auto"`` while one
    iteration's per-chunk statistics stay small (:func:`~kmeans_dask._engine.hosts.fits_hosts`)."""
    return engine == "actors" or (engine == "auto" and fits_hosts(n_chunks, statistics_bytes))


def scatter_direct(client: Client, use_hosts: bool) -> bool:
    """Whether to scatter rows straight to the workers rather than through the scheduler.

    Through the scheduler every byte crosses the network twice (client to
    scheduler, scheduler to worker; benchmarks/RESULTS.md, "Whole-fit fixed
    cost"). Straight to the workers
    needs the client to reach them, which the actors' calls need too; so
    direct when the fit uses actors, or when the client was made with
    ``direct_to_workers=True``. A client made with ``direct_to_workers=False``
    always goes through the scheduler.
    """
    chosen = client.direct_to_workers
    return use_hosts if chosen is None else bool(chosen)
