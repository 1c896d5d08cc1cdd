"""Vulkan GPUs, through WGSL: TVM's WebGPU codegen, kernels scheduled with dlight, run by ``wgpu`` on Vulkan.

    edgeopt.compile(model, inputs, target="vulkan")

The TVM wheel has no SPIR-V codegen, but it emits WGSL, which wgpu (wgpu-native; its naga compiler turns WGSL
into SPIR-V) runs on any Vulkan driver, including Mesa's software one (lavapipe) where there is no GPU. Each
kernel is built into one WGSL shader per launch (``edgeopt/lower/webgpu.py``), the artifact stores the shaders
and their calling convention instead of a library, and the device runtime (``edgeopt/runtime/vulkan.py``)
needs numpy and ``wgpu``, not TVM.

WGSL has 32-bit integers only, so the pipeline starts with ``wgsl_int_types`` (i64 narrowed, i8/u8/i16 widened
to i32) and ``bool`` tensors are stored as 32-bit words (``storage_dtypes``). ``f16`` kernels need a device
with the ``shader-f16`` feature; the artifact records the features it needs and the runtime checks them.
"""

from __future__ import annotations

from ..errors import TargetError
from ..runtime.vulkan import SOFTWARE_VULKAN, WGPU_PIN
from .base import GpuTarget, check_precision

#: what the device needs (the README's per-target table says the same)
DEVICE_NEEDS = f"a Vulkan driver (a GPU's, or Mesa's lavapipe: {SOFTWARE_VULKAN}), numpy and {WGPU_PIN}"


class VulkanTarget(GpuTarget):
    """Any Vulkan device wgpu can open; kernels are WGSL compute shaders."""

    name = "vulkan"
    runtime = "vulkan"
    storage_dtypes = {"bool": "i32"}  # WGSL storage buffers hold no bool
    legalize_passes = ("wgsl_int_types",)
    has_library = False
    buffer_alignment = 256  # WebGPU's largest minStorageBufferOffsetAlignment: the arena binds on any device

    def __init__(self, precision: str = "fp32"):
        """``precision="fp16"``: f16 weights and activations (``to_fp16``); the device needs ``shader-f16``."""
        import tvm

        self.precision = check_precision(self.name, precision)

        # 256 invocations and 16 KiB of workgroup memory per workgroup: what WebGPU guarantees every device (its
        # default limits), so the shaders need no device limit checked at load
        self._target = tvm.target.Target({"kind": "webgpu", "max_num_threads": 256,
                                          "max_shared_memory_per_block": 16384}, host="llvm")

    def check_toolchain(self) -> None:
        import tvm

        if tvm.get_global_func("target.build.webgpu", allow_missing=True) is None:
            raise TargetError("target 'vulkan' needs TVM's WebGPU codegen (target.build.webgpu), which this TVM "
                              "build lacks: install apache-tvm==0.27.0.post1")

    def build(self, funcs: dict):
        from ..lower.webgpu import build_webgpu

        return build_webgpu(funcs, self._target)

    def export_library(self, library, path: str) -> dict[str, bytes]:
        """No host library: the artifact stores the WGSL shaders and their calling convention."""
        return library.members()

    def device_requirements(self) -> dict:
        return {"backend": "Vulkan", "device_needs": DEVICE_NEEDS}
