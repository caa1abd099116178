"""Nearest-centre search with the scores kept in vector registers.

For a row ``x`` the nearest centre minimises ``||c_j||^2 - 2 c_j . x``. A
BLAS GEMM writes these scores to memory and a second loop reads them back
for the argmin; for the tens to thousands of centres and tens of features
of a typical k-means, that round trip through the cache and the argmin cost
nearly as much as the GEMM itself. Here one compiled kernel does both: a few
rows at a time, the scores against a block of centres are accumulated with
vector multiply-adds in registers, and reduced to the row's smallest score,
its centre and (on request) the runner-up score before anything is stored.
On the benchmark's chunks (125k x 32, 64 centres) search took 3.8 ms instead
of 5.9 for a tiled SGEMM and an argmin, at about 80% of the machine's
one-thread SGEMM rate (``scripts/bench_search.py`` compares it with the
BLAS path, Faiss and scikit-learn over many shapes).

The kernels are LLVM code generated here (Numba's own loops cannot keep an
array of accumulators in registers) and called from Numba through
:func:`search_rows`. Centres are packed by :func:`pack_centers` into blocks of
``Q`` vectors (64 float32 or 32 float64 centres at most); missing centres
have score ``+inf`` and are never chosen. Ties go to the lowest centre index,
as with ``argmin``.
"""

from __future__ import annotations

import math

import numba
import numpy as np
from llvmlite import binding, ir
from numba.core import cgutils, types
from numba.extending import intrinsic, overload
from numba.np.numpy_support import as_dtype

#: Vector lanes per element type: one 512-bit register's worth.
_LANES = {np.dtype(np.float32): 16, np.dtype(np.float64): 8}
_I1 = ir.IntType(1)
_I32 = ir.IntType(32)
_I64 = ir.IntType(64)


def _target_has_avx512() -> bool:
    """Whether Numba compiles for AVX-512 (32 vector registers of 512 bits)."""
    if numba.config.CPU_NAME:  # a fixed target, e.g. for portable caches
        return "+avx512f" in (numba.config.CPU_FEATURES or "")
    return bool(binding.get_host_cpu_features().get("avx512f", False))


_AVX512 = _target_has_avx512()
#: Vectors of 512 bits of centres scored together (per row: that many
#: accumulators); half as many for 256-bit registers, which hold half a vector.
MAX_VECTORS_PER_BLOCK = 4 if _AVX512 else 2


def rows_per_kernel(vectors: int) -> int:
    """Rows scored together: enough independent accumulators to fill the FMA pipes.

    Eight or more independent multiply-add chains hide the latency. With
    AVX-512 each of a row's ``vectors`` accumulators is one of 32 registers:
    16 of them (4 rows of 4 vectors, 8 rows of one) leave room for the
    centres and the row values. With 256-bit registers (16 of them) each
    accumulator takes two, so about 12 registers' worth of rows.
    """
    if _AVX512:
        return 8 if vectors == 1 else 4
    return max(1, 12 // (2 * vectors))


def pack_centers(centers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``-2 C^T`` and ``||c||^2`` in the blocks the kernels read.

    Parameters
    ----------
    centers : ndarray of shape (k, d), float32 or float64

    Returns
    -------
    weights : ndarray of shape (n_blocks, d, block_width)
        ``weights[b, f, j] = -2 * centers[b * block_width + j, f]``, zero past ``k``.
    bias : ndarray of shape (n_blocks, block_width)
        The centres' squared norms (computed in float64, then rounded), ``+inf``
        past ``k``.
    """
    dtype = centers.dtype
    n_centers, n_features = centers.shape
    lanes = _LANES[dtype]
    vectors = min(MAX_VECTORS_PER_BLOCK, max(1, math.ceil(n_centers / lanes)))
    width = vectors * lanes
    n_blocks = max(1, math.ceil(n_centers / width))
    padded = np.zeros((n_blocks * width, n_features), dtype=dtype)
    padded[:n_centers] = -2.0 * centers
    weights = np.ascontiguousarray(padded.reshape(n_blocks, width, n_features).transpose(0, 2, 1))
    centers64 = centers.astype(np.float64)
    bias = np.full(n_blocks * width, np.inf, dtype=dtype)
    bias[:n_centers] = np.einsum("ij,ij->i", centers64, centers64)
    return weights, bias.reshape(n_blocks, width)


class _KernelCode:
    """IR helpers for one kernel: vectors of ``lanes`` elements, built with ``builder``."""

    def __init__(self, builder: ir.IRBuilder, element: ir.Type, lanes: int) -> None:
        self.builder = builder
        self.lanes = lanes
        self.vector = ir.VectorType(element, lanes)
        self.lane_ids = ir.VectorType(_I32, lanes)
        self.infinity = ir.Constant(element, math.inf)

    def load_vector(self, base, offset):
        """The ``lanes`` elements from ``base[offset]`` on."""
        address = self.builder.gep(base, [offset])
        return self.builder.load(self.builder.bitcast(address, self.vector.as_pointer()), align=1)

    def splat(self, value, vector_type=None):
        """A vector with ``value`` in every lane."""
        vector_type = vector_type or self.vector
        undefined = ir.Constant(vector_type, None)
        first = self.builder.insert_element(undefined, value, _I32(0))
        return self.builder.shuffle_vector(first, undefined, self.lane_ids([0] * self.lanes))

    def minimum(self, a, b):
        """``a if a < b else b``, lane by lane (``vminps`` on vectors)."""
        return self.builder.select(self.builder.fcmp_ordered("<", a, b), a, b)

    def smallest(self, vectors):
        """The smallest element of a list of vectors."""
        low = vectors[0]
        for vector in vectors[1:]:
            low = self.minimum(low, vector)
        width = self.lanes
        while width > 1:
            width //= 2
            upper_half = [width + i if i < width else i for i in range(self.lanes)]
            shifted = self.builder.shuffle_vector(
                low, ir.Constant(self.vector, None), self.lane_ids(upper_half)
            )
            low = self.minimum(low, shifted)
        return self.builder.extract_element(low, _I32(0))

    def first_equal(self, vectors, value):
        """Index (over all lanes of ``vectors``) of the first element equal to ``value``."""
        builder = self.builder
        target = self.splat(value)
        bits = _I64(0)
        for q, vector in enumerate(vectors):
            equal = builder.fcmp_ordered("==", vector, target)
            word = builder.zext(builder.bitcast(equal, ir.IntType(self.lanes)), _I64)
            bits = builder.or_(bits, builder.shl(word, _I64(q * self.lanes)))
        count_zeros = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(_I64, [_I64, _I1]), "llvm.cttz.i64"
        )
        # No lane equal (a NaN score): 64, a defined value the caller never selects.
        return builder.call(count_zeros, [bits, _I1(0)])

    def without(self, vectors, index):
        """``vectors`` with the element at ``index`` replaced by ``+inf``."""
        builder = self.builder
        position = self.splat(builder.trunc(index, _I32), self.lane_ids)
        infinity = self.splat(self.infinity)
        result = []
        for q, vector in enumerate(vectors):
            ids = self.lane_ids([q * self.lanes + i for i in range(self.lanes)])
            result.append(
                builder.select(builder.icmp_signed("==", ids, position), infinity, vector)
            )
        return result


def _search_kernel(element_type, n_rows: int, vectors: int, runner_up: bool):
    """An intrinsic scoring ``n_rows`` rows against every block of centres.

    Its arguments (all ``intp``): the rows' address and the index of the
    first row, ``n_features``, the packed weights' and bias' addresses,
    ``n_blocks``, and the addresses of the labels (int32) and runner-up
    scores (element type) of the first row.
    """
    dtype = as_dtype(element_type)
    element = ir.FloatType() if dtype == np.float32 else ir.DoubleType()
    lanes = _LANES[dtype]
    width = vectors * lanes
    fmuladd_name = f"llvm.fmuladd.v{lanes}f{dtype.itemsize * 8}"

    @intrinsic
    def kernel(typingctx, rows, first_row, n_features, weights, bias, n_blocks, labels, second):
        signature = types.void(*([types.intp] * 8))

        def codegen(context, builder, signature, args):
            rows, first_row, n_features, weights, bias, n_blocks, labels, second = args
            code = _KernelCode(builder, element, lanes)
            fmuladd = cgutils.get_or_insert_function(
                builder.module,
                ir.FunctionType(code.vector, [code.vector] * 3),
                fmuladd_name,
            )
            row_base = builder.mul(first_row, n_features)
            rows = builder.inttoptr(rows, element.as_pointer())
            weights = builder.inttoptr(weights, element.as_pointer())
            bias = builder.inttoptr(bias, element.as_pointer())
            entry = builder.basic_block
            block_loop = builder.append_basic_block("block")
            feature_loop = builder.append_basic_block("feature")
            reduce = builder.append_basic_block("reduce")
            done = builder.append_basic_block("done")
            builder.branch(block_loop)

            # Loop over blocks of centres, carrying each row's best so far.
            builder.position_at_end(block_loop)
            block = builder.phi(_I64)
            block.add_incoming(_I64(0), entry)
            best = [builder.phi(element) for _ in range(n_rows)]
            label = [builder.phi(_I64) for _ in range(n_rows)]
            runner = [builder.phi(element) for _ in range(n_rows)]
            for r in range(n_rows):
                best[r].add_incoming(code.infinity, entry)
                label[r].add_incoming(_I64(0), entry)
                runner[r].add_incoming(code.infinity, entry)
            block_weights = builder.mul(builder.mul(block, n_features), _I64(width))
            builder.branch(feature_loop)

            # Accumulate x_f * (-2 c_jf) over the features, in registers.
            builder.position_at_end(feature_loop)
            feature = builder.phi(_I64)
            feature.add_incoming(_I64(0), block_loop)
            zero = ir.Constant(code.vector, None)
            accumulators = [
                [builder.phi(code.vector) for _ in range(vectors)] for _ in range(n_rows)
            ]
            for row in accumulators:
                for accumulator in row:
                    accumulator.add_incoming(zero, block_loop)
            offset = builder.add(block_weights, builder.mul(feature, _I64(width)))
            centre_values = [
                code.load_vector(weights, builder.add(offset, _I64(q * lanes)))
                for q in range(vectors)
            ]
            updated = []
            for r in range(n_rows):
                row_start = builder.add(row_base, builder.mul(_I64(r), n_features))
                position = builder.add(row_start, feature)
                value = code.splat(builder.load(builder.gep(rows, [position])))
                updated.append(
                    [
                        builder.call(fmuladd, [value, centre_values[q], accumulators[r][q]])
                        for q in range(vectors)
                    ]
                )
            next_feature = builder.add(feature, _I64(1))
            feature.add_incoming(next_feature, feature_loop)
            for r in range(n_rows):
                for q in range(vectors):
                    accumulators[r][q].add_incoming(updated[r][q], feature_loop)
            more_features = builder.icmp_signed("<", next_feature, n_features)
            builder.cbranch(more_features, feature_loop, reduce)

            # Each row's smallest score in this block, merged with its best so far.
            builder.position_at_end(reduce)
            bias_offset = builder.mul(block, _I64(width))
            block_bias = [
                code.load_vector(bias, builder.add(bias_offset, _I64(q * lanes)))
                for q in range(vectors)
            ]
            new_best, new_label, new_runner = [], [], []
            for r in range(n_rows):
                scores = [builder.fadd(updated[r][q], block_bias[q]) for q in range(vectors)]
                low = code.smallest(scores)
                index = code.first_equal(scores, low)
                better = builder.fcmp_ordered("<", low, best[r])
                new_best.append(builder.select(better, low, best[r]))
                new_label.append(builder.select(better, builder.add(bias_offset, index), label[r]))
                if runner_up:
                    second_low = code.smallest(code.without(scores, index))
                    new_runner.append(
                        builder.select(
                            better,
                            code.minimum(best[r], second_low),
                            code.minimum(runner[r], low),
                        )
                    )
                else:
                    new_runner.append(runner[r])
            next_block = builder.add(block, _I64(1))
            block.add_incoming(next_block, reduce)
            for r in range(n_rows):
                best[r].add_incoming(new_best[r], reduce)
                label[r].add_incoming(new_label[r], reduce)
                runner[r].add_incoming(new_runner[r], reduce)
            builder.cbranch(builder.icmp_signed("<", next_block, n_blocks), block_loop, done)

            builder.position_at_end(done)
            labels = builder.inttoptr(labels, _I32.as_pointer())
            seconds = builder.inttoptr(second, element.as_pointer())
            for r in range(n_rows):
                at = builder.add(first_row, _I64(r))
                builder.store(builder.trunc(new_label[r], _I32), builder.gep(labels, [at]))
                if runner_up:
                    builder.store(new_runner[r], builder.gep(seconds, [at]))
            return context.get_dummy_value()

        return signature, codegen

    return kernel


def _variant_name(function, element_type, *details) -> None:
    """Give a generated function a name of its own.

    Numba names compiled functions by qualified name and a per-process
    counter, and its on-disk cache links them by that name: variants sharing
    one closure's name could be linked in each other's place.
    """
    function.__qualname__ = "_".join([function.__name__, str(element_type), *map(str, details)])


def _sweep(element_type, vectors: int, runner_up: bool):
    """A compiled loop over all rows: many rows per kernel call, then the rest one by one."""
    step = rows_per_kernel(vectors)
    many = _search_kernel(element_type, step, vectors, runner_up)
    one = _search_kernel(element_type, 1, vectors, runner_up)

    def sweep(arguments):
        rows, n_rows, n_features, weights, bias, n_blocks, labels, second = arguments
        whole = n_rows - n_rows % step
        for start in range(0, whole, step):
            many(rows, start, n_features, weights, bias, n_blocks, labels, second)
        for start in range(whole, n_rows):
            one(rows, start, n_features, weights, bias, n_blocks, labels, second)

    _variant_name(sweep, element_type, vectors, runner_up)
    return numba.njit(nogil=True)(sweep)


def _fits(second, n_rows):
    """Whether the runner-up output (an array or None) can take ``n_rows`` scores."""
    raise NotImplementedError("only callable from compiled code")


@overload(_fits, inline="always")
def _fits_for_type(second, n_rows):
    if isinstance(second, types.NoneType):
        return lambda second, n_rows: True
    item = as_dtype(second.dtype).itemsize
    return lambda second, n_rows: second.shape[0] == n_rows and second.strides[0] == item


def _address(second, labels):
    """Where the kernels write runner-up scores (never, without ``second``)."""
    raise NotImplementedError("only callable from compiled code")


@overload(_address, inline="always")
def _address_for_type(second, labels):
    if isinstance(second, types.NoneType):
        return lambda second, labels: labels.ctypes.data
    return lambda second, labels: second.ctypes.data


def search_rows(block, weights, bias, labels, second):
    """Nearest centre (and optionally runner-up score) of every row, from compiled code.

    Parameters
    ----------
    block : (n, d) float32 or float64, C-contiguous
    weights, bias : arrays from :func:`pack_centers` for centres of ``block``'s dtype
    labels : (n,) int32, C-contiguous; receives ``argmin_j(||c_j||^2 - 2 c_j . x_i)``
        (ties: the lowest ``j``)
    second : (n,) array of ``block``'s dtype, or None
        If given, receives each row's runner-up score
        ``min_{j != labels[i]}(||c_j||^2 - 2 c_j . x_i)`` (``inf`` for one centre).
    """
    raise NotImplementedError("only callable from compiled code")


@overload(search_rows)
def _search_rows_for_types(block, weights, bias, labels, second):
    element_type = block.dtype
    runner_up = not isinstance(second, types.NoneType)
    if (
        as_dtype(element_type) not in _LANES
        or weights.dtype != element_type
        or bias.dtype != element_type
        or labels.dtype != types.int32
        or (runner_up and second.dtype != element_type)
    ):
        return None
    # One sweep per block width pack_centers can choose (up to 4 vectors).
    sweep1, sweep2, sweep3, sweep4 = (
        _sweep(element_type, vectors, runner_up) for vectors in (1, 2, 3, 4)
    )
    lanes = _LANES[as_dtype(element_type)]
    item = as_dtype(element_type).itemsize

    def implementation(block, weights, bias, labels, second):
        n_rows, n_features = block.shape
        n_blocks, _, width = weights.shape
        if (
            block.strides[1] != item
            or block.strides[0] != n_features * item
            or labels.strides[0] != 4
            or labels.shape[0] != n_rows
            or weights.shape[1] != n_features
            or not _fits(second, n_rows)
        ):
            raise ValueError("search_rows needs C-contiguous rows and matching labels")
        arguments = (
            block.ctypes.data,
            n_rows,
            n_features,
            weights.ctypes.data,
            bias.ctypes.data,
            n_blocks,
            labels.ctypes.data,
            _address(second, labels),
        )
        vectors = width // lanes
        if vectors == 1:
            sweep1(arguments)
        elif vectors == 2:
            sweep2(arguments)
        elif vectors == 3:
            sweep3(arguments)
        else:
            sweep4(arguments)

    _variant_name(implementation, element_type, runner_up)
    return implementation


@numba.njit(nogil=True, cache=True)
def nearest_rows(block, weights, bias, labels, second=None):
    """:func:`search_rows`, callable from Python."""
    search_rows(block, weights, bias, labels, second)
