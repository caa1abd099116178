"""Row chunks as the workers hold them, and the Zarr blocks that stand in for them.

A :class:`Chunk` is a block of rows with its weights and global position,
held in the memory its :class:`~kmeans_dask._worker.ops.ChunkOps` manage
(host NumPy memory by default). A :class:`ZarrBlock` names rows of a store
that every task reads again, for data larger than the cluster's memory.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

if TYPE_CHECKING:
    from kmeans_dask._worker.ops import ChunkOps


class RowReader(Protocol):
    """Reads rows of a store without zarr (:class:`kmeans_dask._io.chunk_files.ChunkFiles`)."""

    def read(self, offset: int, n_rows: int) -> np.ndarray:
        """Rows ``offset:offset + n_rows``, as the Zarr array gives them."""


@dataclass(frozen=True)
class Chunk:
    """A block of rows held by one worker, with its weights, position and operations."""

    data: Any
    """(n, d) rows, float32 or float64, in the memory ``ops`` manage."""
    weights: Any | None
    """(n,) float64 sample weights, or None for unit weights."""
    offset: int
    """Global index of the first row."""
    ops: ChunkOps
    """The operations over these rows (:mod:`kmeans_dask._worker.ops`)."""

    @property
    def n_rows(self) -> int:
        return int(self.data.shape[0])

    def load(self) -> Chunk:
        """The chunk itself: it is already in memory."""
        return self

    def __reduce__(self):
        # Placed again where it is unpickled, as the worker should keep it:
        # rows sent over the network arrive in buffers that can start at odd
        # addresses (which slows BLAS and the kernels). So a chunk scattered
        # to a worker is ready there, without a task of its own to settle it.
        return make_chunk, (self.data, self.weights, self.offset, self.data.dtype, self.ops)


@dataclass(frozen=True)
class ZarrBlock:
    """Rows ``offset:offset + n_rows`` of a Zarr array, read when a task needs them.

    Used when the data is larger than the cluster's memory: each pass reads,
    uses and drops the block, so a worker holds at most one block per thread
    plus those it reads ahead (:mod:`kmeans_dask._worker.reading`).
    """

    array: Any
    """The ``zarr.Array``, opened read-only (pickles as a small reference)."""
    offset: int
    n_rows: int
    dtype: np.dtype
    weights: np.ndarray | None
    ops: ChunkOps
    files: RowReader | None = None
    """How to read the rows straight from the chunk files, where the array's
    layout allows (:func:`~kmeans_dask._io.chunk_files.chunk_files_of`);
    None: through zarr."""

    @property
    def nbytes(self) -> int:
        """Size of the rows once read."""
        return self.n_rows * int(self.array.shape[1]) * self.dtype.itemsize

    def load(self) -> Chunk:
        """Read the rows from the store into a :class:`Chunk` (from its files if ``files``).

        Raises
        ------
        BlockReadError
            If the store cannot give the rows (a corrupted chunk, a file that
            cannot be read), naming the rows and the store.
        """
        end = self.offset + self.n_rows
        try:
            if self.files is None:
                block = self.array[self.offset : end]
            else:
                block = self.files.read(self.offset, self.n_rows)
        except Exception as exc:
            raise BlockReadError(
                f"could not read rows {self.offset} to {end} of the Zarr array at "
                f"{self.array.store_path}: {type(exc).__name__}: {exc}"
            ) from exc
        return self.ops.place(block, self.weights, self.offset, self.dtype)


class BlockReadError(RuntimeError):
    """Rows of a Zarr store could not be read while streaming them."""


#: Where a task finds its rows: in worker memory, or in a Zarr store.
RowSource = Chunk | ZarrBlock


def make_chunk(block: Any, weights: Any, offset: int, dtype: Any, ops: ChunkOps) -> Chunk:
    """A :class:`Chunk` of a raw block (NumPy-like) and its weights, placed by ``ops``."""
    return ops.place(block, weights, offset, dtype)
