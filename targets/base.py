"""The interface every target implements."""

from __future__ import annotations


class Target:
    """A device kind edgeopt compiles for."""

    name: str = "?"
    #: the runtime backend that runs this target's artifacts ("cpu" for TVM CPU libraries)
    runtime: str = "cpu"
    #: whether edgeopt's hand-written TIR kernels (CPU schedules, e.g. flash attention) may be used
    tir_kernels: bool = True
    #: IR dtype -> the dtype its tensors are stored as in device memory, where the kernel language lacks it
    storage_dtypes: dict[str, str] = {}
    #: passes that make the IR expressible on this target (e.g. dtypes it lacks): run first, at every opt level
    legalize_passes: tuple[str, ...] = ()
    #: "fp32", or "fp16" (targets that take a ``precision`` option: the pipeline converts the graph)
    precision: str = "fp32"
    #: every activation's offset in the planned arena is a multiple of this many bytes
    buffer_alignment: int = 64
    #: whether artifacts hold a kernel library (``kernels.so``); Vulkan's hold shaders instead
    has_library: bool = True
    #: whether each kernel compiles to its own object file, linked into the library (``edgeopt.lower.objects``):
    #: then ``lower`` caches kernels' object code on disk. Targets whose library carries device code keep one build
    object_code: bool = False

    @classmethod
    def pipeline(cls, names: list[str]) -> list[str]:
        """This target's edit of the generic pass pipeline (names, in order) for an opt level; CPUs keep it."""
        return names

    def tvm_target(self):
        raise NotImplementedError

    def vector_lanes(self, dtype_bits: int = 32) -> int:
        """SIMD lanes for one vector register of ``dtype_bits``-wide elements."""
        return 4

    def vector_registers(self) -> int:
        """Vector registers the schedules may plan register tiles for (half of them hold accumulators)."""
        from ..lower.schedule_cpu import DEFAULT_REGISTERS

        return DEFAULT_REGISTERS

    def int8_dots(self) -> list[tuple[str, int, int]]:
        """(intrinsic, lanes, group) of each int8 dot-product instruction of this CPU that integer kernels are built
        on (``edgeopt.lower.int8_dot``), best first; empty: integer kernels use plain vector code."""
        return []

    def amx(self) -> bool:
        """Whether this CPU has AMX int8 tiles, which ``vnni512`` convs and linear layers then run on
        (``edgeopt.lower.amx``)."""
        return False

    def int8_dot(self) -> tuple[str, int, int] | None:
        """The best of ``int8_dots()``, or None."""
        dots = self.int8_dots()
        return dots[0] if dots else None

    def schedule(self, func, op: str, lanes: int, attrs: dict | None = None):
        """Schedule one kernel's PrimFunc (anchor op ``op``); returns (func, description). CPUs: ``schedule_cpu``,
        with this target's ``vector_registers``, ``int8_dots`` and ``amx``."""
        from ..lower.schedule_cpu import schedule_kernel

        return schedule_kernel(func, op, lanes, attrs, self.vector_registers(), self.int8_dots(), self.amx())

    def build(self, funcs: dict):
        """Compile the scheduled kernels (name -> PrimFunc) into what ``export_library`` writes."""
        import tvm

        return tvm.compile(tvm.IRModule(funcs), target=self.tvm_target())

    def check_toolchain(self) -> None:
        """Raise ``TargetError`` naming what is missing to compile for this target."""

    def export_library(self, executable, path: str) -> dict[str, bytes] | None:
        """Write the kernel library to ``path`` (targets with no library write nothing); may return extra artifact
        members (e.g. device code)."""
        executable.export_library(path)

    def device_requirements(self) -> dict:
        """What the device must provide (recorded in the manifest, checked when loading)."""
        return {}

    def describe(self) -> dict:
        return {"name": self.name, "runtime": self.runtime, "precision": self.precision,
                **self.device_requirements()}


def check_precision(target: str, precision: str) -> str:
    """``precision`` if the pipeline knows it, else a ``TargetError`` listing the ones it does."""
    from ..errors import TargetError
    from ..pipeline import PRECISIONS

    if precision not in PRECISIONS:
        raise TargetError(f"target {target!r}: unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    return precision


class GpuTarget(Target):
    """A GPU: kernels are TE computes scheduled by TVM's dlight rules (``edgeopt.lower.schedule_gpu``), scalar per
    thread (no CPU vector lanes), and none of edgeopt's hand-written CPU TIR kernels. Subclasses set ``_target``."""

    tir_kernels = False
    _target = None

    @classmethod
    def pipeline(cls, names: list[str]) -> list[str]:
        """Without the CPU layout passes: GPU schedules take the plain layouts."""
        from ..pipeline import CPU_LAYOUT_PASSES

        return [p for p in names if p not in CPU_LAYOUT_PASSES]

    def tvm_target(self):
        return self._target

    def vector_lanes(self, dtype_bits: int = 32) -> int:
        return 1

    def schedule(self, func, op: str, lanes: int, attrs: dict | None = None):
        from ..lower.schedule_gpu import schedule_gpu

        return schedule_gpu(func, op, self._target, attrs)
