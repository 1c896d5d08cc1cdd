"""Runtime backends: how one kind of artifact loads its kernels and runs its plan on the device.

``Model`` (``edgeopt.runtime.model``) reads the manifest's ``target["runtime"]`` and does everything device-specific
through the backend registered under that name, never by testing the name itself:

    backend = get_backend(manifest["target"]["runtime"], what)
    level = backend.pick_level(target, level, what)      # CPU: the best level this CPU runs; others: device check
    lib = backend.load(members, manifest, level, plan, what)   # lib[kernel] is callable
    ctx = backend.context(model)                         # one per calling thread
    outputs = ctx.run(arrays)

A new device kind is a ``Backend`` subclass registered with ``register_backend``; ``Model`` does not change.
"""

from __future__ import annotations

from ..errors import ArtifactError


class Backend:
    """One device kind's loader and executor (see the module docstring)."""

    name = ""
    #: whether the kernels are TVM-built (the artifact's TVM version must be the runtime's)
    uses_tvm = True
    #: members it reads besides the plan, weights and IR: names, or folders ending in "/"
    members: tuple[str, ...] = ()
    #: whether ``Model.profile`` can time its plan step by step (synchronous kernels)
    profiles = False

    #: the module with this backend's loader and ``check_device(target)``
    module = ""

    def check_device(self, target: dict) -> None:
        """``ArtifactError`` saying why this machine cannot run ``target``'s artifacts (a missing GPU, CPU features)."""
        import importlib

        importlib.import_module(f"{__package__}.{self.module}").check_device(target)

    def pick_level(self, target: dict, level: str | None, what: str) -> dict:
        """The part of the manifest's target that runs here (a CPU level, or the target itself); checks the device."""
        if level is not None:
            raise ArtifactError(f"level={level!r} picks a CPU level; {what} is for {target.get('name')!r}")
        self.check_device(target)
        return target

    def reads(self, name: str) -> bool:
        return any(name == m or (m.endswith("/") and name.startswith(m)) for m in self.members)

    def load(self, members: dict, manifest: dict, level: dict, plan: dict, what: str):
        """The kernel library of a checked plan that has steps: ``lib[kernel]`` is callable."""
        raise NotImplementedError

    def start_threads(self, lib) -> dict:
        """Set up how a just-loaded library runs its parallel loops (before its first kernel); what to add to
        ``Model.info`` about it (CPU libraries only)."""
        return {}

    def context(self, model):
        raise NotImplementedError


class CpuBackend(Backend):
    """TVM CPU libraries (``host``, ``x86*``, ``arm``): kernels called from Python over views into one arena."""

    name, module, profiles = "cpu", "tvm_cpu", True

    def pick_level(self, target, level, what):
        from . import tvm_cpu

        return tvm_cpu.chosen_level(target, level)  # the device check, and the level it picks

    def load(self, members, manifest, level, plan, what):
        from . import tvm_cpu

        library = level.get("library", "kernels.so")
        if library not in members:
            raise ArtifactError(f"{what} has no kernel library {library!r} (damaged)")
        return tvm_cpu.load_library(members[library])

    def start_threads(self, lib) -> dict:
        from . import tvm_cpu

        n = tvm_cpu.install_thread_pool(lib)
        return {"thread_pool": "edgeopt", "threads": n} if n else {"thread_pool": "tvm"}

    def context(self, model):
        from .cpu_context import CpuContext

        return CpuContext(model)


class CudaBackend(Backend):
    """A TVM host library with stored device code (PTX/cubin); buffers on the GPU."""

    name, module, members = "cuda", "tvm_cuda", ("kernels.so", "cuda/")

    def load(self, members, manifest, level, plan, what):
        from . import tvm_cuda

        return tvm_cuda.load_library(members["kernels.so"], members, manifest["target"])

    def context(self, model):
        from . import tvm_cuda

        return tvm_cuda.CudaContext(model)


class VulkanBackend(Backend):
    """WGSL shaders run by wgpu on a Vulkan device; no TVM on the device."""

    name, module, uses_tvm, members = "vulkan", "vulkan", False, ("webgpu/",)

    def load(self, members, manifest, level, plan, what):
        from . import vulkan

        lib = vulkan.load_library(members, what)
        lib.check_steps(plan["steps"])
        return lib

    def context(self, model):
        from . import vulkan

        return vulkan.VulkanContext(model)


_BACKENDS: dict[str, Backend] = {}


def register_backend(backend: Backend) -> Backend:
    if not backend.name or backend.name in _BACKENDS:
        raise ValueError(f"backend {backend.name!r}: no name, or registered twice")
    _BACKENDS[backend.name] = backend
    return backend


for _b in (CpuBackend(), CudaBackend(), VulkanBackend()):
    register_backend(_b)


def get_backend(runtime, what: str = "artifact") -> Backend:
    """The backend for a manifest's ``target["runtime"]``, or an ``ArtifactError`` naming the ones this runtime has."""
    try:
        return _BACKENDS[runtime]
    except (KeyError, TypeError):
        raise ArtifactError(f"{what} needs the runtime backend {runtime!r}, which this edgeopt runtime cannot run (it "
                            f"runs: {', '.join(sorted(_BACKENDS))})") from None


def backends() -> list[str]:
    return sorted(_BACKENDS)
