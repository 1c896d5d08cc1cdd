"""x86-64 CPUs other than this one: artifacts built here and shipped to other machines.

    edgeopt.compile(model, inputs, target="x86-64-v3")              # AVX2 + FMA: Haswell / Zen and later cores
    edgeopt.compile(model, inputs, target="x86-64-v4")              # AVX-512 (F, BW, CD, DQ, VL)
    edgeopt.compile(model, inputs, target="x86", cpu="znver4")      # one CPU by its LLVM name
    edgeopt.compile(model, inputs, target="x86-64", levels=["v3", "v4"])   # one artifact, one library per level

The CPU's LLVM name sets the instructions and the schedules (vector width from its features), never the build
machine's. The ISA features LLVM may use are recorded in the artifact under their LLVM names and checked at load
against the running CPU (``edgeopt.runtime.cpu_features``). A multi-level artifact holds one plan and kernel
library per level; the runtime loads the best one the CPU runs (``Model.info["level"]``).
"""

from __future__ import annotations

import os
import re
import shutil

from ..errors import TargetError
from ..runtime.cpu_features import X86_LINUX_NAMES, isa_features
from .base import Target

TRIPLE = "x86_64-linux-gnu"
#: microarchitecture levels (x86-64 psABI) by their short names
LEVELS = {"v2": "x86-64-v2", "v3": "x86-64-v3", "v4": "x86-64-v4"}


#: x86 instruction-set extensions LLVM knows that the feature table (``edgeopt.runtime.cpu_features``) does not
#: list: APX (extra registers that ordinary code uses), AVX10, newer VNNI/AMX forms, SHA512/SM3/SM4. A target
#: that implies one gets it switched off, so no artifact needs a feature the runtime does not check.
_UNRECORDED_ISA = re.compile(r"(avx|amx).*|egpr|ndd|nf|ccmp|cf|ppx|push2pop2|zu|sha512|sm3|sm4|movrs|cmpccxadd")


def unrecorded_isa(llvm_feature: str) -> bool:
    """Whether ``llvm_feature`` is an instruction-set extension that the feature table does not record."""
    return llvm_feature not in X86_LINUX_NAMES and bool(_UNRECORDED_ISA.fullmatch(llvm_feature))


class X86Target(Target):
    """An x86-64 CPU named by LLVM (``znver3``, ``sapphirerapids``, ``x86-64-v3``...); ``mattr`` adds or removes
    features (``["-avx512f"]``)."""

    name = "x86"
    runtime = "cpu"
    #: kernels compile to one object file each (cached on disk: ``edgeopt.lower.object_cache``), linked at the end
    object_code = True
    arch = "x86_64"

    def __init__(self, cpu: str | None = None, num_threads: int | None = None, mattr: tuple[str, ...] = ()):
        import tvm

        if not cpu:
            raise TargetError("target 'x86' needs cpu=<LLVM cpu name>, e.g. cpu='znver3', 'znver4', "
                              "'sapphirerapids', 'alderlake', or a level: target='x86-64-v3' / 'x86-64-v4'")
        codegen = tvm.target.codegen
        if not codegen.llvm_is_valid_cpu(cpu, TRIPLE):
            known = [c for c in codegen.llvm_get_cpu_archlist(tvm.target.Target({"kind": "llvm"})) if "_" not in c]
            raise TargetError(f"unknown x86 cpu {cpu!r} (LLVM {codegen.llvm_version_major()} does not know it); "
                              f"known cpus: {', '.join(known)}")
        self.mcpu = cpu
        self.num_cores = int(num_threads or len(os.sched_getaffinity(0)))  # for tuning here; the device picks its own
        spec = {"kind": "llvm", "mtriple": TRIPLE, "mcpu": cpu, "num-cores": self.num_cores}
        implied = codegen.llvm_get_cpu_features(tvm.target.Target({**spec, "mattr": list(mattr)} if mattr else spec))
        # ISA extensions the runtime cannot check are switched off, never silently required
        mattr = [*mattr, *sorted(f"-{f}" for f in implied if unrecorded_isa(f))]
        self._target = tvm.target.Target({**spec, "mattr": mattr} if mattr else spec)
        self.features = isa_features(codegen.llvm_get_cpu_features(self._target), self.arch)

    def tvm_target(self):
        return self._target

    def vector_lanes(self, dtype_bits: int = 32) -> int:
        bits = 512 if "avx512f" in self.features else 256 if "avx2" in self.features else 128
        return bits // dtype_bits

    def vector_registers(self) -> int:
        return 32 if "avx512f" in self.features else 16  # AVX-512: zmm0-31; AVX2 and SSE: 16

    def int8_dots(self) -> list[tuple[str, int, int]]:
        from ..lower.int8_dot import usable_int8_dots

        return usable_int8_dots(self.features)

    def amx(self) -> bool:
        from ..lower.amx import has_amx

        return has_amx(self.features)

    def check_toolchain(self) -> None:
        if not (shutil.which(os.environ.get("CXX", "g++")) or shutil.which("gcc") or shutil.which("cc")):
            raise TargetError(f"target {self.name!r} needs a C compiler to link kernels (gcc/g++/cc): "
                              "install one, e.g. `apt-get install g++`")

    def device_requirements(self) -> dict:
        return {"arch": self.arch, "mcpu": self.mcpu, "cpu_features": self.features}


class X86LevelTarget(X86Target):
    """``target="x86-64-v3"`` / ``"x86-64-v4"``: a microarchitecture level, not one CPU."""

    def __init__(self, level: str, num_threads: int | None = None):
        super().__init__(LEVELS[level], num_threads)
        self.name = LEVELS[level]


def x86_64_v3(num_threads: int | None = None) -> X86LevelTarget:
    return X86LevelTarget("v3", num_threads)


def x86_64_v4(num_threads: int | None = None) -> X86LevelTarget:
    return X86LevelTarget("v4", num_threads)


class MultiLevelTarget(Target):
    """``target="x86-64", levels=["v3", "v4"]``: one artifact with a plan and kernel library per level, compiled
    one after the other; the runtime picks the best level the CPU runs. ``levels`` are level names (``LEVELS``)
    or LLVM cpu names."""

    name = "x86-64"
    runtime = "cpu"

    def __init__(self, levels: list[str] | tuple[str, ...] = ("v3", "v4"), num_threads: int | None = None):
        if isinstance(levels, str) or not levels:
            raise TargetError("target 'x86-64' takes levels=[...], a list such as ['v3', 'v4']")
        if len(set(levels)) != len(levels):
            raise TargetError(f"target 'x86-64': levels {list(levels)} name one level twice")
        self.levels = [(lv, X86LevelTarget(lv, num_threads) if lv in LEVELS else X86Target(lv, num_threads))
                       for lv in levels]
        # least demanding first: a level's features must include the previous level's, so "best" is well defined
        self.levels.sort(key=lambda lt: len(lt[1].features))
        for (a, ta), (b, tb) in zip(self.levels, self.levels[1:]):
            if not set(ta.features) <= set(tb.features):
                raise TargetError(f"target 'x86-64': level {b!r} lacks features of {a!r} "
                                  f"({', '.join(sorted(set(ta.features) - set(tb.features)))}); levels must nest")
        self.features = self.levels[0][1].features

    def check_toolchain(self) -> None:
        self.levels[0][1].check_toolchain()

    def tvm_target(self):
        return self.levels[0][1].tvm_target()

    def device_requirements(self) -> dict:
        """The baseline level's requirements (the least a CPU needs); the compiler adds ``levels``."""
        return self.levels[0][1].device_requirements()
