"""NVIDIA GPUs through CUDA: TVM's ``cuda`` codegen, kernels scheduled with dlight, device code compiled ahead of
time with nvcc.

    edgeopt.compile(model, inputs, target="cuda")                        # sm_80 (A100)
    edgeopt.compile(model, inputs, target="cuda", arch="jetson-orin")    # sm_87, aarch64 host CPU

The arch names one row of ``ARCHS`` (or an alias in ``ALIASES``); an unknown name is a ``TargetError``. TVM's
plain ``"cuda"`` target would fall back to sm_50, which CUDA 13 rejects, so the arch is always set. The host side
(argument checks and kernel launches) is an LLVM library for the device's CPU: x86-64, or aarch64 on Jetson
(linked with the ARM cross compiler). The device needs no CUDA compiler: ``targets/cuda_aot.py`` stores PTX and
a cubin for the arch in the artifact, and the runtime hands them to TVM's CUDA module (``edgeopt/runtime/tvm_cuda.py``).
"""

from __future__ import annotations

import shutil

from ..errors import TargetError
from .base import GpuTarget, check_precision

#: arch -> (compute capability, host CPU of the boards that have it). CUDA 13 supports Turing (sm_75) and newer.
ARCHS = {
    "sm_75": ((7, 5), "x86_64"), "sm_80": ((8, 0), "x86_64"), "sm_86": ((8, 6), "x86_64"),
    "sm_87": ((8, 7), "aarch64"), "sm_89": ((8, 9), "x86_64"), "sm_90": ((9, 0), "x86_64"),
}
ALIASES = {"jetson-orin": "sm_87"}
DEFAULT_ARCH = "sm_80"
NVCC = "nvcc"
ARM_CC = "aarch64-linux-gnu-gcc"
#: the TVM wheel's CUDA runtime (libtvm_runtime_cuda.so) is built against CUDA 13
DEVICE_LIBS = ["libcudart.so.13", "libcuda.so.1 (a driver supporting CUDA 13)", "libtvm_runtime_cuda.so"]


class CudaTarget(GpuTarget):
    """An NVIDIA GPU of one compute capability (see ``ARCHS``)."""

    name = "cuda"
    runtime = "cuda"

    def __init__(self, arch: str = DEFAULT_ARCH, precision: str = "fp32"):
        """``precision="fp16"``: f16 weights and activations, f32 accumulation (``to_fp16``)."""
        self.precision = check_precision(self.name, precision)
        arch = ALIASES.get(arch, arch)
        if arch not in ARCHS:
            known = ", ".join([*sorted(ARCHS), *(f"{a} (= {b})" for a, b in ALIASES.items())])
            raise TargetError(f"unknown CUDA arch {arch!r}; known archs: {known}")
        import tvm

        self.arch = arch
        self.compute_capability, self.host_arch = ARCHS[arch]
        host = ({"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mcpu": "cortex-a78ae"}
                if self.host_arch == "aarch64" else {"kind": "llvm", "mtriple": "x86_64-linux-gnu"})
        # 48 KiB: the static shared memory every arch gives a block (dlight's default; said here to keep TVM quiet)
        self._target = tvm.target.Target({"kind": "cuda", "arch": arch, "max_shared_memory_per_block": 49152},
                                         host=host)

    def check_toolchain(self) -> None:
        if not shutil.which(NVCC):
            raise TargetError("target 'cuda' needs nvcc (CUDA 13) to compile the kernels ahead of time: install the "
                              "CUDA toolkit, or `pip install nvidia-cuda-nvcc` and put its nvidia/cu13/bin on PATH")
        if self.host_arch == "aarch64" and not shutil.which(ARM_CC):
            raise TargetError(f"target 'cuda' with arch {self.arch} (Jetson, aarch64 host) needs {ARM_CC} to link "
                              "the host library: `apt-get install gcc-aarch64-linux-gnu libc6-dev-arm64-cross`")

    def export_library(self, executable, path: str) -> dict[str, bytes]:
        """Write the host library to ``path``; returns the device-code members for the artifact."""
        from .cuda_aot import compile_device_code, cuda_source

        source = cuda_source(executable)  # raises if some kernel became host code
        try:
            executable.export_library(path, **({"cc": ARM_CC} if self.host_arch == "aarch64" else {}))
        except RuntimeError as e:
            raise TargetError(f"linking the {self.host_arch} host library of the CUDA kernels failed: {e}") from None
        return compile_device_code(source, self.arch)

    def device_requirements(self) -> dict:
        return {"arch": self.host_arch, "cuda_arch": self.arch, "compute_capability": list(self.compute_capability),
                "device_libs": DEVICE_LIBS}
