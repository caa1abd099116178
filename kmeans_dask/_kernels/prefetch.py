"""Software prefetch for compiled loops that visit rows out of memory order.

A loop over rows in another order than they lie in memory (the rows of one
IVF list, the rows of one previous centre) pays a cache miss at each row's
start that the hardware prefetchers, which follow addresses in sequence,
cannot foresee. Asking for a row a few visits ahead hides most of it.
"""

from __future__ import annotations

from llvmlite import ir
from numba.core import cgutils, types
from numba.extending import intrinsic

from kmeans_dask._kernels.shared_cache import cached_njit

#: Bytes per cache line, the step of the prefetches.
CACHE_LINE = 64

_I32 = ir.IntType(32)


@intrinsic
def prefetch(typingctx, address):
    """Ask the CPU to bring the cache line at ``address`` in (no fault if invalid)."""

    def codegen(context, builder, signature, args):
        pointer_type = ir.IntType(8).as_pointer()
        function = cgutils.get_or_insert_function(
            builder.module,
            ir.FunctionType(ir.VoidType(), [pointer_type, _I32, _I32, _I32]),
            "llvm.prefetch.p0",
        )
        # Read, keep in all cache levels, data cache.
        builder.call(
            function, [builder.inttoptr(args[0], pointer_type), _I32(0), _I32(3), _I32(1)]
        )
        return context.get_dummy_value()

    return types.void(types.intp), codegen


@cached_njit(nogil=True, inline="always")
def prefetch_bytes(address, n_bytes):
    """Prefetch every cache line of the ``n_bytes`` from ``address`` on."""
    for offset in range(0, n_bytes, CACHE_LINE):
        prefetch(address + offset)


@cached_njit(nogil=True, inline="always")
def prefetch_row(rows, i):
    """Prefetch every cache line of row ``i`` of the C-contiguous 2-D array ``rows``."""
    row_bytes = rows.shape[1] * rows.itemsize
    prefetch_bytes(rows.ctypes.data + i * row_bytes, row_bytes)
