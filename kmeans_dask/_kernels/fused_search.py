"""Nearest-centre search with the scores kept in vector registers.

For a row ``x`` the nearest centre minimises ``||c_j||^2 - 2 c_j . x``. A
BLAS GEMM writes these scores to memory and a second loop reads them back
for the argmin; for the tens to thousands of centres and tens of features
of a typical k-means, that round trip through the cache and the argmin cost
nearly as much as the GEMM itself. Here one compiled kernel does both: a few
rows at a time, the scores against a block of centres are accumulated with
vector multiply-adds in registers, and reduced to the row's smallest score,
its centre and (on request) the runner-up score before anything is stored.
``scripts/bench_search.py`` compares it with the BLAS path, Faiss and
scikit-learn over many shapes (benchmarks/RESULTS.md).

The kernels are LLVM code generated here (Numba's own loops cannot keep an
array of accumulators in registers) and called from Numba through
:func:`search_rows` (every row of a block) and :func:`fold_rows` (listed
rows, folding a group of centres into each row's best so far: the IVF list
scan). Centres are packed by :func:`pack_centers` into blocks of up to
:data:`MAX_VECTORS_PER_BLOCK` vector registers of the compile target
(:mod:`kmeans_dask._kernels.vector_target`): 64 float32 or 32 float64 centres
with AVX-512, 16 or 8 with AVX2, 16 or 8 with NEON, 8 or 4 with SSE; missing
centres have score ``+inf`` and are never chosen. Ties go to the lowest
centre index, as with ``argmin``.
"""

from __future__ import annotations

import math

import numba
import numpy as np
from llvmlite import ir
from numba.core import cgutils, types
from numba.extending import intrinsic, overload
from numba.np.numpy_support import as_dtype

from kmeans_dask._kernels.prefetch import prefetch_bytes
from kmeans_dask._kernels.shared_cache import cached_njit
from kmeans_dask._kernels.vector_target import compile_target

_I1 = ir.IntType(1)
_I32 = ir.IntType(32)
_I64 = ir.IntType(64)

_TARGET = compile_target()
#: Vectors of centres scored together (per row: that many accumulator
#: registers): up to 4 with 32 vector registers, 2 with 16.
MAX_VECTORS_PER_BLOCK = 4 if _TARGET.registers >= 32 else 2


def lanes_of(dtype) -> int:
    """Elements of ``dtype`` in one vector register of the compile target."""
    return _TARGET.lanes(np.dtype(dtype).itemsize)


#: Rows scored together at most: more rows made no measurable difference for
#: blocks of 1 to 3 vectors (at most 48 float32 centres with AVX-512), and
#: every row more makes each generated kernel larger and slower to compile.
MAX_ROWS_PER_KERNEL = 8


def rows_per_kernel(vectors: int) -> int:
    """Rows scored together, so that their accumulators fit the register file.

    A step holds ``rows * vectors`` accumulators, the ``vectors`` centre
    vectors of the current feature and one broadcast row value in registers;
    eight or more independent multiply-add chains hide the FMA latency, and
    each centre vector loaded feeds ``rows`` multiply-adds, so the more rows
    the less cache traffic per multiply-add. As many rows as fit, at most
    :data:`MAX_ROWS_PER_KERNEL`: with 32 registers (AVX-512, NEON) 6 rows of
    4 vectors (29 registers), 8 of fewer; with 16 (AVX2, SSE) 6 rows of 2
    vectors (15 registers, the classic 6 x 16 SGEMM micro-kernel of AVX2),
    8 of one.
    Measured with ``scripts/bench_search.py`` (RESULTS.md, "Six rows per
    kernel with AVX-512"): on an Intel Xeon (Ice Lake) 6 rows of 4 vectors
    were 1.1-2x faster than the 4 rows used before, most at large ``k * d``.
    """
    return min(MAX_ROWS_PER_KERNEL, (_TARGET.registers - vectors - 1) // vectors)


def pack_centers(
    centers: np.ndarray, sq_norms: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, tuple[int, ...]]:
    """``-2 C^T`` and ``||c||^2`` in the blocks the kernels read.

    Parameters
    ----------
    centers : ndarray of shape (k, d), float32 or float64
    sq_norms : ndarray of shape (k,), float64, optional
        The centres' squared norms computed in float64, when the caller has
        them already (else computed here).

    Returns
    -------
    weights : ndarray of shape (n_blocks, d, block_width)
        ``weights[b, f, j] = -2 * centers[b * block_width + j, f]``, zero past ``k``.
    bias : ndarray of shape (n_blocks, block_width)
        The centres' squared norms (computed in float64, then rounded), ``+inf``
        past ``k``.
    vectors : tuple of int
        One zero per vector of a block: its length, part of its Numba type,
        makes Numba compile only the kernels for this block width.
    """
    dtype = centers.dtype
    n_centers, n_features = centers.shape
    lanes = lanes_of(dtype)
    vectors = min(MAX_VECTORS_PER_BLOCK, max(1, math.ceil(n_centers / lanes)))
    width = vectors * lanes
    n_blocks = max(1, math.ceil(n_centers / width))
    # Written in place, block by block, with no padded or float64 copy of the
    # centres (at k = 16384, d = 128: 4.6 ms instead of 12.9).
    weights = np.empty((n_blocks, n_features, width), dtype=dtype)
    full = n_centers // width
    whole_blocks = centers[: full * width].reshape(full, width, n_features)
    np.multiply(whole_blocks.transpose(0, 2, 1), -2.0, out=weights[:full])
    if full < n_blocks:
        last = np.zeros((width, n_features), dtype=dtype)
        last[: n_centers - full * width] = centers[full * width :]
        np.multiply(last.T, -2.0, out=weights[full])
    bias = np.full(n_blocks * width, np.inf, dtype=dtype)
    if sq_norms is None:
        sq_norms = np.einsum("ij,ij->i", centers, centers, dtype=np.float64)
    bias[:n_centers] = sq_norms
    return weights, bias.reshape(n_blocks, width), (0,) * vectors


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


def _search_kernel(
    element_type, n_rows: int, vectors: int, runner_up: bool, folded: bool, carried: bool = False
):
    """An intrinsic scoring ``n_rows`` rows against every block of centres.

    Its arguments (all ``intp``): the rows' address, the position of the
    first row, ``n_features``, the packed weights' and bias' addresses,
    ``n_blocks``, the addresses of the labels (int32) and of the runner-up
    (``runner_up``) or best (``folded``, ``carried``) scores, of the row ids
    and the label offset. Rows are ``first, first + 1, ...``, their results
    written at those positions; ``folded``, the rows are
    ``row_ids[first + r]``. ``folded`` or ``carried``, each row's label and
    best score so far are read at its position and replaced where a centre
    of this call (label ``label_base + j``) scores strictly lower; with
    ``runner_up`` too (``carried`` only), the best scores are at the address
    passed for the row ids and each row's runner-up so far is read from the
    runner-up scores and merged.
    """
    carried = carried or folded
    dtype = as_dtype(element_type)
    element = ir.FloatType() if dtype == np.float32 else ir.DoubleType()
    lanes = lanes_of(dtype)
    width = vectors * lanes
    fmuladd_name = f"llvm.fmuladd.v{lanes}f{dtype.itemsize * 8}"

    @intrinsic
    def kernel(
        typingctx,
        rows,
        first_row,
        n_features,
        weights,
        bias,
        n_blocks,
        labels,
        scores_out,
        row_ids,
        label_base,
    ):
        signature = types.void(*([types.intp] * 10))

        def codegen(context, builder, signature, args):
            (rows, first_row, n_features, weights, bias, n_blocks) = args[:6]
            labels, scores_out, row_ids, label_base = args[6:]
            code = _KernelCode(builder, element, lanes)
            fmuladd = cgutils.get_or_insert_function(
                builder.module,
                ir.FunctionType(code.vector, [code.vector] * 3),
                fmuladd_name,
            )
            rows = builder.inttoptr(rows, element.as_pointer())
            weights = builder.inttoptr(weights, element.as_pointer())
            bias = builder.inttoptr(bias, element.as_pointer())
            labels = builder.inttoptr(labels, _I32.as_pointer())
            scores_out = builder.inttoptr(scores_out, element.as_pointer())
            # Where each row's values are read from and its results written to.
            positions = [builder.add(first_row, _I64(r)) for r in range(n_rows)]
            if folded:
                ids = builder.inttoptr(row_ids, _I64.as_pointer())
                positions = [builder.load(builder.gep(ids, [at])) for at in positions]
            best_out = scores_out
            start_runner = [code.infinity] * n_rows
            if carried and runner_up:
                best_out = builder.inttoptr(row_ids, element.as_pointer())
                start_runner = [builder.load(builder.gep(scores_out, [at])) for at in positions]
            if carried:
                start_best = [builder.load(builder.gep(best_out, [at])) for at in positions]
                start_label = [
                    builder.sext(builder.load(builder.gep(labels, [at])), _I64) for at in positions
                ]
            else:
                start_best = [code.infinity] * n_rows
                start_label = [_I64(0)] * n_rows
            row_starts = [builder.mul(at, n_features) for at in positions]
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
                best[r].add_incoming(start_best[r], entry)
                label[r].add_incoming(start_label[r], entry)
                runner[r].add_incoming(start_runner[r], entry)
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
                position = builder.add(row_starts[r], feature)
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
                found = builder.add(bias_offset, index)
                if carried:
                    found = builder.add(label_base, found)
                new_label.append(builder.select(better, found, label[r]))
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
            for r, at in enumerate(positions):
                builder.store(builder.trunc(new_label[r], _I32), builder.gep(labels, [at]))
                if runner_up:
                    builder.store(new_runner[r], builder.gep(scores_out, [at]))
                if carried:
                    builder.store(new_best[r], builder.gep(best_out, [at]))
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


def _row_walk(many, one, step: int, element_type, *, folded: bool, overlap: bool):
    """A compiled walk over rows ``first:stop``: ``many`` scores ``step`` rows a call,
    then the rows left over are scored as one last group of ``step`` rows (``overlap``,
    over rows already scored) or one by one (``one``), as are fewer than ``step`` rows.

    Its arguments: the rows' address, ``first``, ``stop``, the row ids and the
    tuple of the kernels' other arguments (``n_features`` first). Listed rows
    (``folded``) lie anywhere in the block: the next group's rows are
    prefetched while ``many`` scores the current one.
    """
    item = as_dtype(element_type).itemsize

    def walk(rows, first, stop, row_ids, group):
        whole = stop - (stop - first) % step
        row_bytes = group[0] * item
        for start in range(first, whole, step):
            if folded:
                for position in range(start + step, min(start + 2 * step, stop)):
                    prefetch_bytes(rows + row_ids[position] * row_bytes, row_bytes)
            many(rows, start, *group)
        if overlap and first < whole < stop:
            many(rows, stop - step, *group)
        else:
            for start in range(whole, stop):
                one(rows, start, *group)

    _variant_name(walk, element_type, step, folded, overlap)
    return numba.njit(nogil=True, inline="always")(walk)


#: Rows scored against one group of centres (:data:`TILED_CENTERS_BYTES`)
#: before the next group, where the centres outgrow it: the group stays in
#: the L1 cache while the tile's rows pass, instead of every few rows
#: streaming all the centres from L2 or beyond.
TILE_ROWS = 192
#: Centres (``k * d * itemsize`` bytes) above which a search of every row
#: goes tile by tile (Intel Xeon, Ice Lake: 1.2-1.5x faster at k = 256 to
#: 16384, d = 64 and 128; RESULTS.md, "Six rows per kernel with AVX-512").
TILED_CENTERS_BYTES = 32 * 1024


def _sweep(element_type, vectors: int, runner_up: bool, folded: bool):
    """A compiled loop over all rows, :func:`rows_per_kernel` rows per kernel call
    (:func:`_row_walk`).

    The rows left over after the last whole group are scored with the last
    group of that many rows, overlapping rows already scored: scoring a row
    again writes the same label and score (a row's best so far can only be
    replaced by a strictly lower score), and one call for a whole group is
    cheaper than one per row (with 6 rows per call, the 4 rows left of a
    block of 256 took 6% of the block's time one by one). A search of every
    row over centres beyond :data:`TILED_CENTERS_BYTES` goes
    :data:`TILE_ROWS` rows at a time, each tile against 32 KiB of centres
    after another, carrying each row's label, best and runner-up scores in
    memory in between (:func:`_tiled_sweep`).
    """
    step = rows_per_kernel(vectors)
    many = _search_kernel(element_type, step, vectors, runner_up, folded)
    one = _search_kernel(element_type, 1, vectors, runner_up, folded)
    walk = _row_walk(many, one, step, element_type, folded=folded, overlap=True)

    def sweep(arguments, row_ids):
        walk(arguments[0], 0, arguments[1], row_ids, arguments[2:])

    _variant_name(sweep, element_type, vectors, runner_up, folded)
    whole_rows = numba.njit(nogil=True)(sweep)
    if folded or vectors < MAX_VECTORS_PER_BLOCK:
        # Narrower blocks hold every centre in one block: nothing to tile
        # (and no tiled kernels to compile for them).
        return whole_rows
    return _tiled_sweep(element_type, vectors, runner_up, whole_rows)


def _tiled_sweep(element_type, vectors: int, runner_up: bool, whole_rows):
    """The sweep over all rows, tile by tile where the centres outgrow :data:`TILED_CENTERS_BYTES`.

    Each tile of :data:`TILE_ROWS` rows is scored against one group of
    blocks of centres (at most :data:`TILED_CENTERS_BYTES`, at least one
    block) after another, each row's label, best score and (``runner_up``)
    runner-up score carried in memory between groups, so the results are
    those of ``whole_rows`` (:func:`_sweep`), which scores the rows where the
    centres are fewer.
    """
    step = rows_per_kernel(vectors)
    many = _search_kernel(element_type, step, vectors, runner_up, False, carried=True)
    one = _search_kernel(element_type, 1, vectors, runner_up, False, carried=True)
    # A runner-up merged twice would become the best: no overlapping last group.
    walk = _row_walk(many, one, step, element_type, folded=False, overlap=not runner_up)
    scalar = as_dtype(element_type).type
    item = as_dtype(element_type).itemsize
    width = vectors * lanes_of(as_dtype(element_type))

    def tiled_sweep(arguments, row_ids):
        rows, n_rows, n_features, weights, bias, n_blocks, labels, scores, _, _ = arguments
        block_bytes = n_features * width * item
        if n_blocks == 1 or n_blocks * block_bytes <= TILED_CENTERS_BYTES:
            whole_rows(arguments, row_ids)
            return
        per_group = max(1, TILED_CENTERS_BYTES // block_bytes)
        best = np.empty(n_rows, dtype=scalar)
        # The best scores go where the kernels read them: the runner-up
        # kernels take their address in place of row ids.
        best_address = best.ctypes.data
        scores_address = scores if runner_up else best_address
        ids_address = best_address if runner_up else 0
        # A row whose every score is NaN keeps its first label, as without tiles.
        numba.carray(_pointer_to(labels, np.int32), n_rows)[:] = 0
        runner_up_scores = numba.carray(_pointer_to(scores, scalar), n_rows) if runner_up else best
        for tile in range(0, n_rows, TILE_ROWS):
            stop = min(tile + TILE_ROWS, n_rows)
            best[tile:stop] = np.inf
            if runner_up:
                runner_up_scores[tile:stop] = np.inf
            for first in range(0, n_blocks, per_group):
                group = (
                    n_features,
                    weights + first * block_bytes,
                    bias + first * width * item,
                    min(per_group, n_blocks - first),
                    labels,
                    scores_address,
                    ids_address,
                    first * width,
                )
                walk(rows, tile, stop, row_ids, group)

    _variant_name(tiled_sweep, element_type, vectors, runner_up, "tiled")
    return numba.njit(nogil=True)(tiled_sweep)


@intrinsic
def _pointer_to(typingctx, address, element):
    """``address`` as a pointer to ``element`` values (a NumPy scalar type such as
    ``np.int32``), for :func:`numba.carray`."""
    element_type = element.instance_type

    def codegen(context, builder, signature, args):
        return builder.inttoptr(args[0], context.get_data_type(element_type).as_pointer())

    return types.CPointer(element_type)(types.intp, element), codegen


def _types_match(block, weights, bias, vectors, labels, scores) -> bool:
    """Whether the arguments' Numba types suit the kernels (``scores`` may be None)."""
    element_type = block.dtype
    return (
        isinstance(vectors, types.UniTuple)
        and 1 <= vectors.count <= MAX_VECTORS_PER_BLOCK
        and as_dtype(element_type) in (np.float32, np.float64)
        and weights.dtype == element_type
        and bias.dtype == element_type
        and labels.dtype == types.int32
        and (isinstance(scores, types.NoneType) or scores.dtype == element_type)
    )


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


def _readable(block, weights, labels, n_labels) -> bool:
    """C-contiguous rows, centres packed for the rows' width, ``n_labels`` contiguous labels."""
    raise NotImplementedError("only callable from compiled code")


@overload(_readable, inline="always")
def _readable_for_types(block, weights, labels, n_labels):
    item = as_dtype(block.dtype).itemsize

    def readable(block, weights, labels, n_labels):
        n_features = block.shape[1]
        return (
            block.strides[1] == item
            and block.strides[0] == n_features * item
            and labels.strides[0] == 4
            and labels.shape[0] == n_labels
            and weights.shape[1] == n_features
        )

    return readable


def search_rows(block, weights, bias, vectors, labels, second):
    """Nearest centre (and optionally runner-up score) of every row, from compiled code.

    Parameters
    ----------
    block : (n, d) float32 or float64, C-contiguous
    weights, bias, vectors : :func:`pack_centers` of centres of ``block``'s dtype
    labels : (n,) int32, C-contiguous; receives ``argmin_j(||c_j||^2 - 2 c_j . x_i)``
        (ties: the lowest ``j``)
    second : (n,) array of ``block``'s dtype, or None
        If given, receives each row's runner-up score
        ``min_{j != labels[i]}(||c_j||^2 - 2 c_j . x_i)`` (``inf`` for one centre).
    """
    raise NotImplementedError("only callable from compiled code")


@overload(search_rows)
def _search_rows_for_types(block, weights, bias, vectors, labels, second):
    if not _types_match(block, weights, bias, vectors, labels, second):
        return None
    runner_up = not isinstance(second, types.NoneType)
    sweep = _sweep(block.dtype, vectors.count, runner_up, folded=False)
    width = vectors.count * lanes_of(as_dtype(block.dtype))

    def implementation(block, weights, bias, vectors, labels, second):
        n_rows, n_features = block.shape
        if (
            not _readable(block, weights, labels, n_rows)
            or weights.shape[2] != width
            or not _fits(second, n_rows)
        ):
            raise ValueError("search_rows needs C-contiguous rows and matching labels")
        arguments = (
            block.ctypes.data,
            n_rows,
            n_features,
            weights.ctypes.data,
            bias.ctypes.data,
            weights.shape[0],
            labels.ctypes.data,
            _address(second, labels),
            0,
            0,
        )
        sweep(arguments, None)

    _variant_name(implementation, block.dtype, vectors.count, runner_up)
    return implementation


@cached_njit(nogil=True)
def nearest_rows(block, weights, bias, vectors, labels, second=None):
    """:func:`search_rows`, callable from Python."""
    search_rows(block, weights, bias, vectors, labels, second)


def fold_rows(block, row_ids, weights, bias, vectors, label_base, labels, best):
    """Fold some centres into the nearest centre found so far of some rows.

    For each ``i`` in ``row_ids``, where one of the packed centres scores
    strictly below ``best[i]``, ``best[i]`` becomes that score and
    ``labels[i]`` becomes ``label_base + j`` for the first such best centre
    ``j``. Calling it for successive groups of centres (with increasing
    ``label_base``) therefore leaves every row's nearest centre among all
    groups it was searched against, ties to the earliest group.

    Parameters
    ----------
    block : (n, d) float32 or float64, C-contiguous
    row_ids : (m,) int64, C-contiguous, each in ``[0, n)``
    weights, bias, vectors : :func:`pack_centers` of the group's centres
    label_base : int
    labels : (n,) int32, C-contiguous
    best : (n,) array of ``block``'s dtype (``inf`` for a row not searched yet)
    """
    raise NotImplementedError("only callable from compiled code")


@overload(fold_rows)
def _fold_rows_for_types(block, row_ids, weights, bias, vectors, label_base, labels, best):
    if (
        not _types_match(block, weights, bias, vectors, labels, best)
        or row_ids.dtype != types.int64
    ):
        return None
    sweep = _sweep(block.dtype, vectors.count, runner_up=False, folded=True)
    width = vectors.count * lanes_of(as_dtype(block.dtype))

    def implementation(block, row_ids, weights, bias, vectors, label_base, labels, best):
        n_rows, n_features = block.shape
        in_range = row_ids.size == 0 or (row_ids.min() >= 0 and row_ids.max() < n_rows)
        if (
            not _readable(block, weights, labels, n_rows)
            or weights.shape[2] != width
            or not _fits(best, n_rows)
            or row_ids.strides[0] != 8
            or not in_range
        ):
            raise ValueError("fold_rows needs C-contiguous rows, labels, scores and row ids")
        arguments = (
            block.ctypes.data,
            row_ids.shape[0],
            n_features,
            weights.ctypes.data,
            bias.ctypes.data,
            weights.shape[0],
            labels.ctypes.data,
            best.ctypes.data,
            row_ids.ctypes.data,
            label_base,
        )
        sweep(arguments, row_ids)

    _variant_name(implementation, block.dtype, vectors.count, "fold")
    return implementation


@cached_njit(nogil=True)
def fold_nearest(block, row_ids, weights, bias, vectors, label_base, labels, best):
    """:func:`fold_rows`, callable from Python."""
    fold_rows(block, row_ids, weights, bias, vectors, label_base, labels, best)
