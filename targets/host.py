"""The host CPU (x86-64 here): LLVM for the CPU this process runs on, its real features and core count.

The CPU is detected (``llvm_get_system_cpu``), never hard-coded: a ``znver4`` build dies with SIGILL on a
Zen 3. The artifact records the ISA features the code was built with; the runtime refuses to load it on a
CPU that lacks any of them.
"""

from __future__ import annotations

import os
import platform
import shutil

from ..errors import TargetError
from .base import Target

#: features that change code generation (and so must exist on the machine that runs the artifact)
_X86_FEATURES = ("avx512f", "avx512bw", "avx512vnni", "avx2", "fma", "f16c", "sse4.2")


class HostTarget(Target):
    name = "host"
    runtime = "cpu"

    def __init__(self, num_threads: int | None = None, mcpu: str | None = None):
        import tvm

        self._tvm = tvm
        self.mcpu = mcpu or tvm.target.codegen.llvm_get_system_cpu()
        self.num_cores = int(num_threads or len(os.sched_getaffinity(0)))
        self._target = tvm.target.Target({"kind": "llvm", "mcpu": self.mcpu, "num-cores": self.num_cores})
        self.features = [f for f in _X86_FEATURES if self._has(f)] if platform.machine() == "x86_64" else []

    def _has(self, feature: str) -> bool:
        with self._target:
            return bool(self._tvm.target.codegen.target_has_features(feature, self._target))

    def tvm_target(self):
        return self._target

    def vector_lanes(self, dtype_bits: int = 32) -> int:
        bits = 512 if "avx512f" in self.features else 256 if "avx2" in self.features else 128
        return bits // dtype_bits

    def check_toolchain(self) -> None:
        if not (shutil.which(os.environ.get("CXX", "g++")) or shutil.which("gcc") or shutil.which("cc")):
            raise TargetError("target 'host' needs a C compiler to link kernels (gcc/g++/cc): "
                              "install one, e.g. `apt-get install g++`")

    def device_requirements(self) -> dict:
        return {"arch": platform.machine(), "mcpu": self.mcpu, "cpu_features": self.features,
                "num_threads": self.num_cores}
