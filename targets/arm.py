"""ARM CPUs (aarch64 Linux), cross-compiled on this machine: LLVM for the named CPU, linked with
``aarch64-linux-gnu-gcc``.

    edgeopt.compile(model, inputs, target="arm")                     # cortex-a72 (Raspberry Pi 4)
    edgeopt.compile(model, inputs, target="arm", cpu="cortex-a76")   # Raspberry Pi 5

The CPU names one row of ``CPUS``; an unknown name is a ``TargetError`` (LLVM itself would silently fall
back to a generic CPU). Only the named CPU's features are used: ``+dotprod`` is never added to a
Cortex-A72, and the A76 / A55 / Neoverse-N1 rows get dot-product and fp16 from their ``mcpu``. The
features LLVM will use are recorded in the artifact under their LLVM names (``neon``, ``dotprod``,
``fullfp16``), and the runtime refuses the artifact on a CPU whose hwcaps (``asimd``, ``asimddp``, ``fphp`` +
``asimdhp``: ``edgeopt.runtime.cpu_features``) lack one.
"""

from __future__ import annotations

import shutil

from ..errors import TargetError
from ..runtime.cpu_features import isa_features
from .base import Target

TRIPLE = "aarch64-linux-gnu"
CROSS_CC = f"{TRIPLE}-gcc"
#: edgeopt cpu option -> LLVM options ("mattr" must be a list; the mcpu implies dotprod/fp16 where the CPU has them)
CPUS = {
    "cortex-a72": {"mcpu": "cortex-a72", "mattr": ["+neon"]},  # Raspberry Pi 4: ARMv8.0, no dotprod, no fp16
    "cortex-a76": {"mcpu": "cortex-a76", "mattr": ["+neon"]},  # Raspberry Pi 5: ARMv8.2 + dotprod + fp16
    "cortex-a55": {"mcpu": "cortex-a55", "mattr": ["+neon"]},
    "neoverse-n1": {"mcpu": "neoverse-n1", "mattr": ["+neon"]},
}
DEFAULT_CPU = "cortex-a72"


class ArmTarget(Target):
    """An aarch64 Linux CPU, by name (see ``CPUS``)."""

    name = "arm"
    runtime = "cpu"
    #: kernels compile to one object file each (cached on disk: ``edgeopt.lower.object_cache``), linked at the end
    object_code = True

    def __init__(self, cpu: str = DEFAULT_CPU):
        if cpu not in CPUS:
            raise TargetError(f"unknown ARM cpu {cpu!r}; known cpus: {', '.join(sorted(CPUS))}")
        import tvm

        self.cpu = cpu
        self._target = tvm.target.Target({"kind": "llvm", "mtriple": TRIPLE, **CPUS[cpu]})
        self.features = isa_features(tvm.target.codegen.llvm_get_cpu_features(self._target), "aarch64")

    def tvm_target(self):
        return self._target

    def vector_lanes(self, dtype_bits: int = 32) -> int:
        return 128 // dtype_bits  # NEON: 128-bit registers (no SVE in the table)

    def check_toolchain(self) -> None:
        if not shutil.which(CROSS_CC):
            raise TargetError(f"target 'arm' needs the cross compiler {CROSS_CC} to link kernels: install it with "
                              "`apt-get install gcc-aarch64-linux-gnu libc6-dev-arm64-cross`")

    def export_library(self, executable, path: str) -> None:
        try:
            executable.export_library(path, cc=CROSS_CC)
        except RuntimeError as e:
            hint = " (install libc6-dev-arm64-cross)" if "crti.o" in str(e) else ""
            raise TargetError(f"linking the aarch64 kernel library with {CROSS_CC} failed{hint}: {e}") from None

    def int8_dots(self) -> list[tuple[str, int, int]]:
        from ..lower.int8_dot import usable_int8_dots

        return usable_int8_dots(self.features)  # SDOT where the CPU has dotprod (A76, A55, N1); none on an A72

    def device_requirements(self) -> dict:
        return {"arch": "aarch64", "mcpu": self.cpu, "cpu_features": self.features}
