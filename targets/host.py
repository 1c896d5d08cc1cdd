"""The host CPU: LLVM for the CPU this process runs on, with exactly the features it reports, and its core count.

The CPU is detected (``llvm_get_system_cpu``), never hard-coded: a ``znver4`` build dies with SIGILL on a
Zen 3. LLVM names the CPU from its family and model; a virtual machine may hide some of that CPU's features
(AVX-512 masked by the hypervisor), so on x86-64 the features the CPU's name implies but ``/proc/cpuinfo`` lacks
are switched off (``mattr``), and ones it reports beyond the name are switched on. The artifact records the ISA
features the code was built with (``edgeopt.runtime.cpu_features``); the runtime refuses it on a CPU that lacks
any of them. To ship an artifact to other machines, compile for ``x86-64-v3`` / ``x86-64-v4`` or a named CPU
(``targets/x86.py``).
"""

from __future__ import annotations

import os
import platform

from ..runtime.cpu_features import AARCH64_LINUX_NAMES, X86_LINUX_NAMES, host_flags, isa_features, missing_features
from .x86 import X86Target


def host_mattr(mcpu: str, flags: set[str], arch: str = "x86_64") -> list[str]:
    """LLVM ``mattr`` that makes ``mcpu``'s features in the table exactly those a CPU reporting Linux ``flags`` has
    (x86: ``/proc/cpuinfo`` flags; aarch64: hwcaps, where a kernel or VM may hide SVE)."""
    import tvm

    spec = {"kind": "llvm", "mcpu": mcpu, **({} if arch == "x86_64" else {"mtriple": f"{arch}-linux-gnu"})}
    implied = set(tvm.target.codegen.llvm_get_cpu_features(tvm.target.Target(spec)))
    table = set(X86_LINUX_NAMES if arch == "x86_64" else AARCH64_LINUX_NAMES)
    has = {f for f in table if not missing_features([f], arch, flags)}
    return sorted([f"-{f}" for f in implied & table - has] + [f"+{f}" for f in has - implied])


class HostTarget(X86Target):
    """``target="host"``; ``mattr=["-amx-tile", "-amx-int8"]`` (LLVM feature switches, applied after the host's own)
    builds for this CPU without some of its features, e.g. without AMX tiles where Linux refuses them. A feature
    switched on that this CPU lacks ("+avx512f" on a Zen 3) makes an artifact this machine refuses to load."""

    name = "host"

    def __init__(self, num_threads: int | None = None, mcpu: str | None = None, mattr: list | tuple = ()):
        import tvm

        self.arch = platform.machine()
        cpu = mcpu or tvm.target.codegen.llvm_get_system_cpu()
        extra = _feature_switches(mattr)
        if self.arch == "x86_64":
            super().__init__(cpu, num_threads, mattr=(*host_mattr(cpu, host_flags()), *extra))
        else:  # e.g. compiling on an aarch64 board for itself: LLVM's reading of the CPU, its hwcaps switched on/off
            self.mcpu = cpu
            self.num_cores = int(num_threads or len(os.sched_getaffinity(0)))
            mattr = [*host_mattr(cpu, host_flags(), self.arch), *extra]
            self._target = tvm.target.Target({"kind": "llvm", "mcpu": cpu, "num-cores": self.num_cores,
                                              **({"mattr": mattr} if mattr else {})})
            self.features = isa_features(tvm.target.codegen.llvm_get_cpu_features(self._target), self.arch)

    def vector_lanes(self, dtype_bits: int = 32) -> int:
        return super().vector_lanes(dtype_bits) if self.arch == "x86_64" else 128 // dtype_bits

    def device_requirements(self) -> dict:
        return {**super().device_requirements(), "num_threads": self.num_cores}


def _feature_switches(mattr) -> list[str]:
    """``mattr`` checked: LLVM feature names, each switched on ("+avx512f") or off ("-amx-tile")."""
    from ..errors import TargetError

    if isinstance(mattr, str):
        mattr = [mattr]
    bad = [m for m in mattr if not (isinstance(m, str) and len(m) > 1 and m[0] in "+-")]
    if bad:
        raise TargetError(f"target 'host': mattr takes LLVM features switched on or off, e.g. ['-amx-tile', "
                          f"'-amx-int8'], got {bad}")
    return list(mattr)
