"""The CUDA backend of the runtime: runs a ``target="cuda"`` artifact with the TVM runtime and the stored device
code, with no CUDA compiler and no JIT (``edgeopt/targets/cuda_aot.py`` explains the members).

The device needs an NVIDIA GPU whose compute capability fits the artifact's arch, a driver for CUDA 13
(``libcuda.so.1``), ``libcudart.so.13`` (the CUDA runtime, e.g. ``pip install nvidia-cuda-runtime``) and the TVM
wheel's ``libtvm_runtime_cuda.so`` next to ``libtvm_runtime.so`` (or ``EDGEOPT_TVM_RUNTIME_CUDA``). Loading:

1. ``check_device`` finds the GPU through the driver API (ctypes on ``libcuda.so.1``) and picks the cubin (same
   major version, minor >= the arch's) or the PTX (a newer GPU: the driver JIT-compiles it);
2. ``libtvm_runtime_cuda.so`` is loaded, which registers TVM's CUDA module loader;
3. ``tvm_callback_cuda_compile`` is registered: TVM calls it with the kernels' CUDA source when the host library
   loads, and it returns the stored binary whose sha256 key matches that source;
4. the host library ``kernels.so`` is loaded as on a CPU.

Activations get one device buffer each (not yet the planned arena: see ``CudaContext``); weights are copied to the
device once per calling thread; inputs are copied in and outputs out on every call.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform

import numpy as np

from ..errors import ArtifactError
from ..ir_dtypes import NP_DTYPES
from . import strict_json, tvm_cpu

DEVICE_CODE = "cuda/device_code.json"
_CU_CC_MAJOR, _CU_CC_MINOR = 75, 76  # CUdevice_attribute: compute capability
_cuda_runtime_loaded = False


def gpu_compute_capability(index: int = 0) -> tuple[int, int] | None:
    """The compute capability of CUDA device ``index`` through the driver, or None without a driver or a GPU."""
    try:
        cu = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return None
    n, dev, major, minor = ctypes.c_int(0), ctypes.c_int(0), ctypes.c_int(0), ctypes.c_int(0)
    if cu.cuInit(0) != 0 or cu.cuDeviceGetCount(ctypes.byref(n)) != 0 or n.value <= index:
        return None
    if cu.cuDeviceGet(ctypes.byref(dev), index) != 0:
        return None
    cu.cuDeviceGetAttribute(ctypes.byref(major), _CU_CC_MAJOR, dev)
    cu.cuDeviceGetAttribute(ctypes.byref(minor), _CU_CC_MINOR, dev)
    return major.value, minor.value


def _device_index() -> int:
    return int(os.environ.get("EDGEOPT_CUDA_DEVICE", "0"))


def check_device(target: dict) -> str:
    """Refuse the artifact unless this machine has a fitting GPU; returns "cubin" or "ptx" (what it will load)."""
    if target.get("arch") and target["arch"] != platform.machine():
        raise ArtifactError(f"this artifact's host library was compiled for {target['arch']} "
                            f"({target.get('cuda_arch')}), but this machine is {platform.machine()}")
    want = tuple(target.get("compute_capability", (0, 0)))
    have = gpu_compute_capability(_device_index())
    if have is None:
        raise ArtifactError(f"no CUDA device found (no libcuda.so.1 driver, or no GPU): this artifact needs an NVIDIA "
                            f"GPU of compute capability {want[0]}.{want[1]} or newer ({target.get('cuda_arch')}) "
                            "with a CUDA 13 driver")
    if have[0] == want[0] and have[1] >= want[1]:
        return "cubin"
    if have >= want:
        return "ptx"
    raise ArtifactError(f"this GPU has compute capability {have[0]}.{have[1]}; the artifact was compiled for "
                        f"{target.get('cuda_arch')} ({want[0]}.{want[1]}): recompile with target='cuda', "
                        f"arch='sm_{have[0]}{have[1]}'")


def _ensure_cuda_runtime():
    """Load libtvm_runtime.so, then libtvm_runtime_cuda.so (which registers TVM's CUDA module loader)."""
    global _cuda_runtime_loaded
    tvm_ffi = tvm_cpu.ensure_runtime()
    if not _cuda_runtime_loaded:
        path = os.environ.get("EDGEOPT_TVM_RUNTIME_CUDA") or os.path.join(
            os.path.dirname(tvm_cpu._find_runtime_lib()), "libtvm_runtime_cuda.so")
        try:
            ctypes.CDLL(path, ctypes.RTLD_GLOBAL)
        except OSError as e:
            raise ArtifactError(f"the TVM CUDA runtime could not be loaded ({e}): it needs libtvm_runtime_cuda.so "
                                "from the apache-tvm wheel (or EDGEOPT_TVM_RUNTIME_CUDA), libcudart.so.13 "
                                "(pip install nvidia-cuda-runtime, or the CUDA 13 toolkit) and libcuda.so.1") from None
        _cuda_runtime_loaded = True
    return tvm_ffi


def load_library(lib: bytes, members: dict, target: dict):
    """Load the host library with the stored device code for this GPU (see the module docstring)."""
    kind = check_device(target)
    try:
        info = strict_json.loads(members[DEVICE_CODE])
        binary = members[info[kind]]
        if not isinstance(binary, bytes) or not isinstance(info.get("source_sha256"), str):
            raise ValueError("device code entries of the wrong type")
    except (KeyError, ValueError, TypeError) as e:
        raise ArtifactError(f"the artifact's CUDA device code is missing or unreadable ({e})") from None
    tvm_ffi = _ensure_cuda_runtime()

    def compile_callback(code, *_rest):  # TVM calls it with (source) or (source, target)
        text = code if isinstance(code, str) else bytes(code).decode()
        if hashlib.sha256(text.encode()).hexdigest() != info["source_sha256"]:
            raise ArtifactError("TVM asked for device code of a CUDA source this artifact does not hold")
        return bytes(binary) + (b"\0" if kind == "ptx" else b"")

    tvm_ffi.register_global_func("tvm_callback_cuda_compile", compile_callback, override=True)
    return tvm_cpu.load_library(lib)


def _alloc(shape, dtype, device):
    import tvm_ffi

    alloc = tvm_ffi.get_global_func("runtime.TVMTensorAllocWithScope")
    return alloc(tvm_ffi.Shape([int(d) for d in shape]), tvm_ffi.dtype(str(np.dtype(dtype))), device, None)


def _copy_in(tensor, arr: np.ndarray, copy_from_bytes) -> None:
    arr = np.ascontiguousarray(arr)
    copy_from_bytes(tensor, arr.ctypes.data_as(ctypes.c_void_p), arr.nbytes)


def _copy_out(tensor, arr: np.ndarray, copy_to_bytes) -> None:
    copy_to_bytes(tensor, arr.ctypes.data_as(ctypes.c_void_p), arr.nbytes)


class CudaContext:
    """One thread's device buffers, device weights and prebuilt calls; ``run`` copies inputs in and outputs out.

    Every input and kernel output gets its own device allocation (views share their source's): TVM kernels refuse
    a tensor with a nonzero ``byte_offset``, which is what a view into one arena is, so the planned arena
    (``plan["values"][v]["offset"]``) is not used on the GPU yet. Memory is the plan's naive bytes, not its arena.

    ``device`` defaults to the CUDA device; tests pass a CPU device to check this logic on a machine without a GPU."""

    def __init__(self, model, device=None):
        import tvm_ffi

        plan = model.plan
        dev = device if device is not None else tvm_ffi.device("cuda", _device_index())
        view = tvm_ffi.get_global_func("runtime.TVMTensorCreateView")
        # looked up once: ``run`` copies on every call
        self._to_device = tvm_ffi.get_global_func("runtime.TVMTensorCopyFromBytes")
        self._to_host = tvm_ffi.get_global_func("runtime.TVMTensorCopyToBytes")
        tensors = {}
        for name, arr in model._consts.items():
            tensors[name] = _alloc(arr.shape, arr.dtype, dev)
            _copy_in(tensors[name], arr, self._to_device)
        dtypes = {}
        for name, info in plan["values"].items():
            dt = np.dtype(NP_DTYPES[info["dtype"]])
            dtypes[name] = dt
            if info["kind"] in ("input", "buffer"):  # one allocation each: see the class docstring
                tensors[name] = _alloc(info["shape"], dt, dev)
        for name in plan["values"]:
            self._resolve(name, plan["values"], tensors, view)
        self.calls = [(model._funcs[s["kernel"]], [tensors[a] for a in s["args"]]) for s in plan["steps"]]
        self.inputs = [tensors[i["name"]] for i in plan["inputs"]]
        self.outputs = [(tensors[o["name"]], o["shape"], dtypes[o["name"]]) for o in plan["outputs"]]
        self._keep = tensors

    @staticmethod
    def _resolve(name, values, tensors, view):
        import tvm_ffi

        if name in tensors:
            return tensors[name]
        info = values[name]
        base = CudaContext._resolve(info["of"], values, tensors, view)
        tensors[name] = view(base, tvm_ffi.Shape(info["shape"]), base.dtype, 0)
        return tensors[name]

    def run(self, arrays: list[np.ndarray]) -> tuple[np.ndarray, ...]:
        for t, a in zip(self.inputs, arrays):
            _copy_in(t, a, self._to_device)
        for fn, args in self.calls:
            fn(*args)
        outs = []
        for t, shape, dt in self.outputs:  # a device-to-host copy waits for the kernels before it
            out = np.empty(shape, dt)
            _copy_out(t, out, self._to_host)
            outs.append(out)
        return tuple(outs)

