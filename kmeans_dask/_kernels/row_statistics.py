"""A row's float64 statistics in whole vectors: its share of the sums, its exact distance.

After the search, every row of a pass is added into its cluster's float64
sums and its squared distance to its centre is computed exactly, as
``sum((x - c) ** 2)``. Numba's loop vectoriser compiles these short per-row
loops for 256-bit vectors and checks at run time, row by row, that the sums
do not overlap the row. The code generated here works on :data:`_LANES`
float64 lanes at a time (the rows' float32 values widened in the load):
eight, one 512-bit vector, where the compile target has AVX-512
(:mod:`~kmeans_dask._kernels.vector_target`), else four (one 256-bit
vector with AVX2, two 128-bit ones on older x86-64 and NEON, as LLVM
splits them). With AVX2, eight lanes in two registers were 1.3x slower
than four at d = 16 and 32 (``scripts/bench_statistics.py``, RESULTS.md,
"Statistics in four lanes with AVX2"); with AVX-512 four were no faster
and slower at small d. It ends each row with one masked step instead of a
scalar loop, and needs no check: the caller has made sure the arrays are
contiguous and distinct.
``scripts/bench_statistics.py`` compares it with that plain loop (one
thread, called block by block as the passes call it): faster for every d
measured on an Intel Xeon (AVX-512); on an AMD Zen 4 faster at small d and
even from d = 64, and even with it with AVX2 code (benchmarks/RESULTS.md).

The values are those of the plain loops up to the order in which a row's
squared differences are added (one sum per lane, then a fixed pairwise
tree), which is the same for every caller on one compile target: a row's
distance is the same number in a fit's passes, in Hamerly's bounds and in
``predict``. Targets of other vector widths (an AVX2 and an AVX-512 worker)
can differ in a distance's last bits. The sums get each row's values in row
order, whatever the target.
"""

from __future__ import annotations

import math

import numpy as np
from llvmlite import ir
from numba.core import cgutils, types
from numba.extending import intrinsic, overload
from numba.np.numpy_support import as_dtype

from kmeans_dask._kernels.vector_target import compile_target

#: Float64 lanes of a step: one register of the compile target, at least four.
_LANES = 8 if compile_target().vector_bits >= 512 else 4
#: Bytes per step: sums and centres starting at a multiple of it are read
#: and written without splitting cache lines, whatever the target's vector
#: width (faster than with them 16 bytes off with AVX-512:
#: ``scripts/bench_statistics.py --offset 16``, RESULTS.md).
VECTOR_BYTES = 64
_I1 = ir.IntType(1)
_I32 = ir.IntType(32)
_I64 = ir.IntType(64)
_DOUBLE = ir.DoubleType()
_WIDE = ir.VectorType(_DOUBLE, _LANES)
_MASK = ir.VectorType(_I1, _LANES)


def aligned_empty(shape: tuple[int, ...]) -> np.ndarray:
    """An uninitialised C-contiguous float64 array at a multiple of :data:`VECTOR_BYTES`."""
    size = math.prod(shape)
    buffer = np.empty(size + VECTOR_BYTES // 8)
    start = (-buffer.ctypes.data % VECTOR_BYTES) // 8
    return buffer[start : start + size].reshape(shape)


def aligned_zeros(shape: tuple[int, ...]) -> np.ndarray:
    """Float64 zeros laid out as :func:`aligned_empty` lays them out."""
    zeros = aligned_empty(shape)
    zeros.fill(0.0)
    return zeros


def aligned_float64(array) -> np.ndarray:
    """A C-contiguous float64 copy of ``array`` starting at a multiple of :data:`VECTOR_BYTES`.

    ``array`` itself when it already is one.
    """
    array = np.asarray(array)
    if (
        array.dtype == np.float64
        and array.flags.c_contiguous
        and array.ctypes.data % VECTOR_BYTES == 0
    ):
        return array
    aligned = aligned_empty(array.shape)
    aligned[...] = array
    return aligned


class _RowCode:
    """IR helpers for one row: its values, widened to float64, :data:`_LANES` at a time."""

    def __init__(self, builder: ir.IRBuilder, source: ir.Type) -> None:
        self.builder = builder
        self.source = source
        self.narrow = ir.VectorType(source, _LANES)
        self.zero = ir.Constant(_WIDE, None)

    def function(self, name: str, result: ir.Type, arguments: list[ir.Type]):
        """The LLVM function (an intrinsic) ``name`` of this module."""
        return cgutils.get_or_insert_function(
            self.builder.module, ir.FunctionType(result, arguments), name
        )

    def splat(self, value, element: ir.Type):
        """Eight lanes of ``value``."""
        vector = ir.VectorType(element, _LANES)
        undefined = ir.Constant(vector, None)
        first = self.builder.insert_element(undefined, value, _I32(0))
        return self.builder.shuffle_vector(
            first, undefined, ir.Constant(ir.VectorType(_I32, _LANES), [0] * _LANES)
        )

    def pointer(self, address, element: ir.Type):
        return self.builder.inttoptr(address, element.as_pointer())

    def load(self, base, offset, mask=None, wide: bool = True):
        """Eight values from ``base[offset]`` on (float64 or the row's type, widened).

        With a ``mask``, only the lanes inside it are read.
        """
        builder = self.builder
        element = _DOUBLE if wide else self.source
        vector = _WIDE if wide else self.narrow
        address = builder.gep(base, [offset])
        if mask is None:
            values = builder.load(builder.bitcast(address, vector.as_pointer()), align=1)
        else:
            bits = "64" if element == _DOUBLE else "32"
            masked_load = self.function(
                f"llvm.masked.load.v{_LANES}f{bits}.p0",
                vector,
                [element.as_pointer(), _I32, _MASK, vector],
            )
            # Lanes outside the mask read nothing and hold zero.
            values = builder.call(masked_load, [address, _I32(1), mask, ir.Constant(vector, None)])
        return values if values.type == _WIDE else builder.fpext(values, _WIDE)

    def store(self, values, base, offset, mask=None) -> None:
        """Eight float64 ``values`` to ``base[offset]`` on (with a ``mask``, its lanes only)."""
        builder = self.builder
        address = builder.gep(base, [offset])
        if mask is None:
            builder.store(values, builder.bitcast(address, _WIDE.as_pointer()), align=1)
            return
        masked_store = self.function(
            f"llvm.masked.store.v{_LANES}f64.p0",
            ir.VoidType(),
            [_WIDE, _DOUBLE.as_pointer(), _I32, _MASK],
        )
        builder.call(masked_store, [values, address, _I32(1), mask])

    def total(self, values):
        """The sum of the lanes, halves added pairwise (a fixed order)."""
        builder = self.builder
        width = _LANES
        while width > 1:
            half = width // 2
            indices = [
                ir.Constant(ir.VectorType(_I32, half), list(range(start, start + half)))
                for start in (0, half)
            ]
            low, high = (builder.shuffle_vector(values, values, ids) for ids in indices)
            values = builder.fadd(low, high)
            width = half
        return builder.extract_element(values, _I32(0))


def _row_kernel(element_type, add_to_sums: bool, weighted: bool, n_centers: int = 1):
    """An intrinsic returning a row's squared distances to ``n_centers`` centres,
    optionally adding the row to sums (one centre only).

    Its arguments: the addresses of the row and of the sums' row (``intp``),
    a tuple of the ``n_centers`` centres' addresses, ``n_features`` and the
    row's weight (float64, used only if ``weighted``). It returns a float64,
    or a tuple of ``n_centers`` of them. The centres' distances are summed
    side by side, each in the order of a single one's (so the same values),
    the row's values widened once for all: their chains of additions
    overlap instead of waiting for each other.
    """
    if add_to_sums and n_centers != 1:
        raise ValueError("a row is added to the sums of one centre")
    source = ir.FloatType() if as_dtype(element_type) == np.float32 else _DOUBLE
    result = types.float64 if n_centers == 1 else types.UniTuple(types.float64, n_centers)

    @intrinsic
    def kernel(typingctx, row, sums_row, centers, n_features, weight):
        signature = result(
            types.intp,
            types.intp,
            types.UniTuple(types.intp, n_centers),
            types.intp,
            types.float64,
        )

        def codegen(context, builder, signature, args):
            row, sums_row, centers, n_features, weight = args
            code = _RowCode(builder, source)
            fmuladd = code.function(f"llvm.fmuladd.v{_LANES}f64", _WIDE, [_WIDE] * 3)
            row = code.pointer(row, source)
            sums_row = code.pointer(sums_row, _DOUBLE)
            centers = [code.pointer(c, _DOUBLE) for c in cgutils.unpack_tuple(builder, centers)]
            weights = code.splat(weight, _DOUBLE) if weighted else None

            def step(feature, distances, mask=None):
                values = code.load(row, feature, mask, wide=False)
                if add_to_sums:
                    share = builder.fmul(values, weights) if weighted else values
                    sums = code.load(sums_row, feature, mask)
                    code.store(builder.fadd(sums, share), sums_row, feature, mask)
                updated = []
                for center, distance in zip(centers, distances, strict=True):
                    difference = builder.fsub(values, code.load(center, feature, mask))
                    updated.append(builder.call(fmuladd, [difference, difference, distance]))
                return updated

            entry = builder.basic_block
            loop = builder.append_basic_block("whole_vectors")
            tail = builder.append_basic_block("last_vector")
            whole = builder.and_(n_features, _I64(-_LANES))
            builder.cbranch(builder.icmp_signed(">", whole, _I64(0)), loop, tail)

            builder.position_at_end(loop)
            feature = builder.phi(_I64)
            feature.add_incoming(_I64(0), entry)
            distances = [builder.phi(_WIDE) for _ in centers]
            for distance in distances:
                distance.add_incoming(code.zero, entry)
            updated = step(feature, distances)
            next_feature = builder.add(feature, _I64(_LANES))
            feature.add_incoming(next_feature, loop)
            for distance, value in zip(distances, updated, strict=True):
                distance.add_incoming(value, loop)
            builder.cbranch(builder.icmp_signed("<", next_feature, whole), loop, tail)

            # The last n_features % 8 values (possibly none), under a lane mask.
            builder.position_at_end(tail)
            so_far = []
            for value in updated:
                merged = builder.phi(_WIDE)
                merged.add_incoming(code.zero, entry)
                merged.add_incoming(value, loop)
                so_far.append(merged)
            remaining = code.splat(builder.sub(n_features, whole), _I64)
            lane_ids = ir.Constant(ir.VectorType(_I64, _LANES), list(range(_LANES)))
            mask = builder.icmp_signed("<", lane_ids, remaining)
            totals = [code.total(value) for value in step(whole, so_far, mask)]
            if n_centers == 1:
                return totals[0]
            return context.make_tuple(builder, signature.return_type, totals)

        return signature, codegen

    return kernel


#: Centres whose distances to one row :func:`row_distances` computes side by side.
DISTANCES_AT_ONCE = 4

_KERNELS = {
    (element_type, add_to_sums, weighted): _row_kernel(element_type, add_to_sums, weighted)
    for element_type in (types.float32, types.float64)
    for add_to_sums, weighted in ((False, False), (True, False), (True, True))
}
_SIDE_BY_SIDE_KERNELS = {
    element_type: _row_kernel(element_type, False, False, DISTANCES_AT_ONCE)
    for element_type in (types.float32, types.float64)
}


def statistics_buffers_ok(block, centers, sums) -> bool:
    """Whether the row kernels may read ``block`` and ``centers`` and write ``sums``.

    C-contiguous rows; C-contiguous float64 centres (and sums, unless None)
    of the rows' width.
    """
    raise NotImplementedError("only callable from compiled code")


@overload(statistics_buffers_ok, inline="always")
def _statistics_buffers_ok_for_types(block, centers, sums):
    no_sums = isinstance(sums, types.NoneType)
    if (
        block.dtype not in (types.float32, types.float64)
        or centers.dtype != types.float64
        or not (no_sums or sums.dtype == types.float64)
    ):
        return None
    item = as_dtype(block.dtype).itemsize

    def ok(block, centers, sums):
        n_rows, n_features = block.shape
        rows_ok = (n_features <= 1 or block.strides[1] == item) and (
            n_rows <= 1 or block.strides[0] == n_features * item
        )
        centers_ok = centers.shape[1] == n_features and centers.flags.c_contiguous
        sums_ok = no_sums or (sums.shape[1] == n_features and sums.flags.c_contiguous)
        return rows_ok and centers_ok and sums_ok

    return ok


def add_row(block, i, sums, centers, label, weight):
    """Add ``weight * block[i]`` to ``sums[label]``; return ``||block[i] - centers[label]||^2``.

    Unchecked: :func:`statistics_buffers_ok` must hold and ``label`` be a row
    of ``sums`` and ``centers``. ``weight`` None adds the row itself.
    """
    raise NotImplementedError("only callable from compiled code")


def _weight_value(weight):
    raise NotImplementedError("only callable from compiled code")


@overload(_weight_value, inline="always")
def _weight_value_for_type(weight):
    if isinstance(weight, types.NoneType):
        return lambda weight: 1.0
    return lambda weight: weight


@overload(add_row, inline="always")
def _add_row_for_types(block, i, sums, centers, label, weight):
    kernel = _KERNELS[block.dtype, True, not isinstance(weight, types.NoneType)]
    item = as_dtype(block.dtype).itemsize

    def implementation(block, i, sums, centers, label, weight):
        n_features = block.shape[1]
        return kernel(
            block.ctypes.data + i * n_features * item,
            sums.ctypes.data + label * n_features * 8,
            (centers.ctypes.data + label * n_features * 8,),
            n_features,
            _weight_value(weight),
        )

    return implementation


def row_distance(block, i, centers, label):
    """``||block[i] - centers[label]||^2`` in float64, as :func:`add_row` computes it.

    Unchecked, like :func:`add_row` (with ``sums`` None).
    """
    raise NotImplementedError("only callable from compiled code")


@overload(row_distance, inline="always")
def _row_distance_for_types(block, i, centers, label):
    kernel = _KERNELS[block.dtype, False, False]
    item = as_dtype(block.dtype).itemsize

    def implementation(block, i, centers, label):
        n_features = block.shape[1]
        address = block.ctypes.data + i * n_features * item
        center = centers.ctypes.data + label * n_features * 8
        return kernel(address, 0, (center,), n_features, 1.0)

    return implementation


def row_distances(block, i, centers, labels):
    """:func:`row_distance` to each of the :data:`DISTANCES_AT_ONCE` centres ``labels``
    (a tuple), as a tuple: the same values, their additions overlapping and the row
    widened once (at d = 128 on an Ice Lake Xeon, 31 cycles a distance against 61
    one by one, centres in cache).

    Unchecked, like :func:`row_distance`.
    """
    raise NotImplementedError("only callable from compiled code")


@overload(row_distances, inline="always")
def _row_distances_for_types(block, i, centers, labels):
    kernel = _SIDE_BY_SIDE_KERNELS[block.dtype]
    item = as_dtype(block.dtype).itemsize

    def implementation(block, i, centers, labels):
        n_features = block.shape[1]
        address = block.ctypes.data + i * n_features * item
        base = centers.ctypes.data
        row_bytes = n_features * 8
        first, second, third, fourth = labels
        addresses = (
            base + first * row_bytes,
            base + second * row_bytes,
            base + third * row_bytes,
            base + fourth * row_bytes,
        )
        return kernel(address, 0, addresses, n_features, 1.0)

    return implementation
