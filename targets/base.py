"""The interface every target implements."""

from __future__ import annotations


class Target:
    """A device kind edgeopt compiles for."""

    name: str = "?"
    #: the runtime backend that runs this target's artifacts ("cpu" for TVM CPU libraries)
    runtime: str = "cpu"

    def tvm_target(self):
        raise NotImplementedError

    def vector_lanes(self, dtype_bits: int = 32) -> int:
        """SIMD lanes for one vector register of ``dtype_bits``-wide elements."""
        return 4

    def check_toolchain(self) -> None:
        """Raise ``TargetError`` naming what is missing to compile for this target."""

    def export_library(self, executable, path: str) -> None:
        executable.export_library(path)

    def device_requirements(self) -> dict:
        """What the device must provide (recorded in the manifest, checked when loading)."""
        return {}

    def describe(self) -> dict:
        return {"name": self.name, "runtime": self.runtime, **self.device_requirements()}
