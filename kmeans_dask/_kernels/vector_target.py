"""The vector registers of the CPU Numba compiles for: their width and their number.

The generated kernels (:mod:`kmeans_dask._kernels.fused_search`,
:mod:`kmeans_dask._kernels.row_statistics`) size their vectors and register
blocking by it: 32 registers of 512 bits with AVX-512, 16 of 256 bits with
AVX2, 16 of 128 bits on older x86-64 and 32 of 128 bits on aarch64 (NEON).

The target is Numba's: the CPU named by ``NUMBA_CPU_NAME`` with the features
of ``NUMBA_CPU_FEATURES`` (a fixed target, e.g. for portable caches), else
the host's. Rather than reading feature names (a CPU name alone implies its
features, which only LLVM knows), LLVM is asked to compile a 512-bit vector
addition for that target and the widest register its assembly uses is
taken: what LLVM emits is what the kernels get.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

import numba
from llvmlite import binding

#: Widest register name in x86-64 assembly -> its width in bits.
_X86_REGISTER_BITS = {"zmm": 512, "ymm": 256, "xmm": 128}

_PROBE_IR = """
define void @probe(<16 x float>* %a, <16 x float>* %b) {
  %x = load <16 x float>, <16 x float>* %a
  %y = load <16 x float>, <16 x float>* %b
  %z = fadd <16 x float> %x, %y
  store <16 x float> %z, <16 x float>* %a
  ret void
}
"""


@dataclass(frozen=True)
class VectorTarget:
    """What the kernels are generated for."""

    cpu: str
    """The CPU name Numba compiles for (``NUMBA_CPU_NAME`` or the host's)."""
    vector_bits: int
    """Width of one vector register: 512, 256, 128 (or 0: no vector registers known)."""
    registers: int
    """Vector registers the kernels may fill (32 with AVX-512 or NEON, else 16)."""

    def lanes(self, itemsize: int) -> int:
        """Elements of ``itemsize`` bytes in one register.

        Where no vector registers are known, 128-bit vectors, which LLVM
        lowers to whatever the target has (scalars at worst).
        """
        return max(self.vector_bits, 128) // (8 * itemsize)


def _target_machine(cpu: str, features: str) -> binding.TargetMachine:
    binding.initialize_native_target()
    binding.initialize_native_asmprinter()
    target = binding.Target.from_default_triple()
    return target.create_target_machine(cpu=cpu, features=features, opt=2)


def numba_cpu() -> tuple[str, str]:
    """The CPU name and feature string Numba compiles for (as its JIT does)."""
    from numba.core.codegen import get_host_cpu_features

    cpu = numba.config.CPU_NAME or binding.get_host_cpu_name()
    features = numba.config.CPU_FEATURES
    if features is None:
        features = get_host_cpu_features()
    return cpu, features


def assembly(module_ir: str, cpu: str, features: str) -> str:
    """The assembly LLVM emits for ``module_ir`` (LLVM IR text) for ``cpu`` with ``features``."""
    module = binding.parse_assembly(module_ir)
    module.triple = binding.get_default_triple()
    module.verify()
    return _target_machine(cpu, features).emit_assembly(module)


def register_bits(asm: str) -> int:
    """Widest vector register ``asm`` (x86-64 or aarch64 assembly) names, in bits."""
    found = set(re.findall(r"%?\b(zmm|ymm|xmm)\d+\b", asm))
    if found:
        return max(_X86_REGISTER_BITS[name] for name in found)
    # aarch64: NEON registers are written v0.4s, q0 ...
    if re.search(r"\b(v\d+\.(16b|8h|4s|2d)|q\d+)\b", asm):
        return 128
    return 0


@functools.cache
def compile_target() -> VectorTarget:
    """The vector registers of Numba's compile target (found once per process)."""
    cpu, features = numba_cpu()
    bits = register_bits(assembly(_PROBE_IR, cpu, features))
    arch = binding.get_default_triple().split("-")[0]
    wide_register_file = bits == 512 or arch in ("aarch64", "arm64")
    return VectorTarget(cpu=cpu, vector_bits=bits, registers=32 if wide_register_file else 16)
