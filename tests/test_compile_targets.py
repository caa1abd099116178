"""The generated kernels compiled for other CPUs than this one, through Numba's fixed target.

Each case runs a Python with ``NUMBA_CPU_NAME``/``NUMBA_CPU_FEATURES`` set
(and a cache of its own; the three start at once): it checks the vector
width the kernels were generated for, that the multiply-add loops of the
fused search keep their accumulators in registers (no stack access inside
them) and use the target's widest registers, and, where this CPU can run the code, compares
the results with brute force. A target this CPU cannot run (AVX-512 on an
AVX2 machine) is only compiled to machine code, never called.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from collections.abc import Iterator

import pytest
from llvmlite import binding

from kmeans_dask._kernels.vector_target import assembly, register_bits

_CHECK = r"""
import re
import sys

import numpy as np
from numba import types

from kmeans_dask._kernels.block_kernels import accumulate
from kmeans_dask._kernels.candidate_search import candidate_labels
from kmeans_dask._kernels.float32_screen import float32_screen
from kmeans_dask._kernels.fused_search import (
    MAX_VECTORS_PER_BLOCK, TILED_CENTERS_BYTES, fold_nearest, lanes_of, nearest_rows,
    pack_centers,
)
from kmeans_dask._kernels.vector_target import compile_target, register_bits

bits, registers, run = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "run"
target = compile_target()
assert (target.vector_bits, target.registers) == (bits, registers), target
assert lanes_of(np.float32) == bits // 32 and lanes_of(np.float64) == bits // 64


def multiply_add_loops(asm):
    # Innermost loops (a label, no other label, a jump back to it) with vector
    # multiply-adds: the fused kernels' feature loops.
    loops = []
    for label in re.finditer(r"^(\.?\w+):", asm, re.M):
        after = asm[label.end():]
        back = re.search(r"^\s+j\w+\s+" + re.escape(label[1]) + r"\b", after, re.M)
        body = after[: back.start()] if back else ""
        innermost = not re.search(r"^\.?\w+:", body, re.M)
        if innermost and re.search(r"\bv?fmadd\w*p[sd]|\bmulp[sd]\b", body):
            loops.append(body)
    return loops


# Every block width in float32 (labels only); the widest in float64, with runner-up scores.
widths = range(1, MAX_VECTORS_PER_BLOCK + 1)
variants = [(types.float32, vectors, types.none) for vectors in widths]
variants.append((types.float64, MAX_VECTORS_PER_BLOCK, types.float64[::1]))
for numba_type, vectors, second in variants:
    signature = (
        numba_type[:, ::1], numba_type[:, :, ::1], numba_type[:, ::1],
        types.UniTuple(types.int64, vectors), types.int32[::1], second,
    )
    nearest_rows.compile(signature)
    loops = multiply_add_loops(nearest_rows.inspect_asm(signature))
    assert loops, "no multiply-add loop found"
    for loop in loops:
        spilled = re.findall(r".*[xyz]mm\d+.*\(%rsp\).*|.*\(%rsp\).*[xyz]mm\d+.*", loop)
        assert not spilled, "vector registers spilled to the stack: " + str(spilled)
    assert max(register_bits(loop) for loop in loops) == bits

if run:
    rng = np.random.default_rng(0)
    for dtype in (np.float32, np.float64):
        for k in (1, 3, 40, 100, 250):
            X = rng.integers(-3, 4, size=(501, 5)).astype(dtype)
            centers = rng.integers(-3, 4, size=(k, 5)).astype(dtype)
            products = X.astype(np.float64) @ centers.T
            scores = (centers.astype(np.float64) ** 2).sum(1) - 2.0 * products
            labels = np.empty(len(X), dtype=np.int32)
            second = np.empty(len(X), dtype=dtype)
            nearest_rows(X, *pack_centers(centers), labels, second)
            assert (labels == scores.argmin(axis=1)).all()
            expected_second = np.sort(scores, axis=1)[:, 1] if k > 1 else np.full(len(X), np.inf)
            assert (second == expected_second.astype(dtype)).all()
            # The IVF list scan: groups folded in turn over listed rows.
            listed = np.arange(0, len(X), 3, dtype=np.int64)
            labels = np.full(len(X), -1, dtype=np.int32)
            best = np.full(len(X), np.inf, dtype=dtype)
            for first, last in ((0, k // 3), (k // 3, k)):
                if last > first:
                    group = pack_centers(centers[first:last])
                    fold_nearest(X, listed, *group, first, labels, best)
            assert (labels[listed] == scores[listed].argmin(axis=1)).all()
        # Centres beyond TILED_CENTERS_BYTES: labels searched tile by tile.
        X = rng.integers(-3, 4, size=(401, 64)).astype(dtype)
        centers = rng.integers(-3, 4, size=(TILED_CENTERS_BYTES // (64 * 4) + 37, 64))
        centers = centers.astype(dtype)
        products = X.astype(np.float64) @ centers.T
        scores = (centers.astype(np.float64) ** 2).sum(1) - 2.0 * products
        labels = np.empty(len(X), dtype=np.int32)
        nearest_rows(X, *pack_centers(centers), labels)
        assert (labels == scores.argmin(axis=1)).all()
        # The float64 statistics, in whole steps and a masked tail.
        for d in (3, 8, 13):
            rows = rng.integers(-9, 10, size=(200, d)).astype(dtype)
            sums, counts, sq_dist = np.zeros((2, d)), np.zeros(2), np.empty(200)
            accumulate(rows, np.ones(200, dtype=np.int32), None, np.zeros((2, d)), sums, counts,
                       sq_dist)
            assert (sums[0] == 0).all() and (sums[1] == rows.sum(0)).all()
            assert (sq_dist == (rows.astype(np.float64) ** 2).sum(1)).all()
            # The candidates' search: four distances side by side, then one by one.
            centers = rng.integers(-9, 10, size=(20, d)).astype(np.float64)
            table = np.array([[c] + [j for j in rng.permutation(20) if j != c][:8]
                              for c in range(20)], dtype=np.int32)
            labels = rng.integers(0, 20, size=200).astype(np.int32)
            found = labels.copy()
            candidate_labels(rows, centers, table, found, np.argsort(labels, kind="stable"))
            distances = ((rows.astype(np.float64)[:, None] - centers[None]) ** 2).sum(-1)
            for i in range(200):
                allowed = np.sort(table[labels[i]])  # ties go to the lowest label
                assert found[i] == allowed[np.argmin(distances[i, allowed])]
            if dtype == np.float32:  # float32 rows: the float32 first look, the same labels
                screened = labels.copy()
                candidate_labels(rows, centers, table, screened,
                                 np.argsort(labels, kind="stable"), float32_screen(centers))
                assert (screened == found).all()
"""


def _host_runs(cpu: str) -> bool:
    """Whether this machine can execute code compiled for ``cpu``."""
    if cpu == "generic":
        return True
    if platform.machine() not in ("x86_64", "AMD64"):
        return False
    host = binding.get_host_cpu_features()
    needed = {"haswell": ("avx2", "fma"), "skylake-avx512": ("avx512f", "avx512bw", "avx512vl")}
    return all(host.get(feature, False) for feature in needed[cpu])


#: The targets checked: CPU name, vector bits and vector registers the kernels get.
_TARGETS = [("generic", 128, 16), ("haswell", 256, 16), ("skylake-avx512", 512, 32)]


@pytest.fixture(scope="module")
def checks(tmp_path_factory) -> Iterator[dict[str, subprocess.Popen]]:
    """The check of every target, all started at once: each compiles in its own process."""
    processes = {}
    for cpu, bits, registers in _TARGETS:
        env = {
            **os.environ,
            "NUMBA_CPU_NAME": cpu,
            "NUMBA_CPU_FEATURES": "",  # the named CPU's own features, not this host's
            "NUMBA_CACHE_DIR": str(tmp_path_factory.mktemp(cpu)),
        }
        run = "run" if _host_runs(cpu) else "compile"
        processes[cpu] = subprocess.Popen(
            [sys.executable, "-c", _CHECK, str(bits), str(registers), run],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
    yield processes
    for process in processes.values():
        if process.poll() is None:
            process.kill()
            process.communicate()


@pytest.mark.skipif(
    platform.machine() not in ("x86_64", "AMD64"), reason="the targets named here are x86-64 CPUs"
)
@pytest.mark.parametrize("cpu", [cpu for cpu, _, _ in _TARGETS])
def test_kernels_compiled_for_a_fixed_target(checks, cpu):
    done = checks[cpu]
    _, stderr = done.communicate()
    assert done.returncode == 0, stderr[-4000:]


_ADD_VECTORS = """
define void @add(<8 x double>* %a) {
  %x = load <8 x double>, <8 x double>* %a
  %y = fadd <8 x double> %x, %x
  store <8 x double> %y, <8 x double>* %a
  ret void
}
"""


@pytest.mark.parametrize(
    ("asm", "bits"),
    [
        ("vaddps %zmm1, %zmm0, %zmm0", 512),
        ("vfmadd231ps %ymm2, %ymm1, %ymm0\n\tvmovss %xmm3, (%rax)", 256),
        ("addps %xmm1, %xmm0", 128),
        ("fmla v0.4s, v1.4s, v2.4s", 128),  # aarch64 NEON
        ("fadd d0, d0, d1", 0),  # scalar only
    ],
)
def test_register_width_is_read_from_the_assembly(asm, bits):
    assert register_bits(asm) == bits


def test_llvm_splits_wide_vectors_for_the_named_cpu():
    if platform.machine() not in ("x86_64", "AMD64"):
        pytest.skip("x86-64 CPU names")
    assert register_bits(assembly(_ADD_VECTORS, "skylake-avx512", "")) == 512
    assert register_bits(assembly(_ADD_VECTORS, "haswell", "")) == 256
    assert register_bits(assembly(_ADD_VECTORS, "x86-64", "")) == 128
    assert register_bits(assembly(_ADD_VECTORS, "haswell", "-avx2,-avx")) == 128
