"""The CPU backend of the runtime: loads a TVM kernel library with ``tvm_ffi`` and ``libtvm_runtime.so``.

It needs neither torch nor TVM's compiler: on a device, install ``apache-tvm-ffi`` and put
``libtvm_runtime.so`` next to it (or point ``EDGEOPT_TVM_RUNTIME`` at it). On a machine with the full
``apache-tvm`` wheel the library is found inside that package without importing it.
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
import platform
import tempfile

import numpy as np

from ..errors import ArtifactError

ALIGN = 64  # TVM kernels require 64-byte aligned buffers
_runtime_loaded = False


def _find_runtime_lib() -> str:
    env = os.environ.get("EDGEOPT_TVM_RUNTIME")
    if env:
        return env
    spec = importlib.util.find_spec("tvm")
    if spec and spec.submodule_search_locations:
        path = os.path.join(spec.submodule_search_locations[0], "lib", "libtvm_runtime.so")
        if os.path.exists(path):
            return path
    raise ArtifactError("the TVM runtime library (libtvm_runtime.so) was not found: install apache-tvm, or set "
                        "EDGEOPT_TVM_RUNTIME to the path of libtvm_runtime.so")


def default_threads() -> int:
    """Kernel threads when ``TVM_NUM_THREADS`` is not set: every core this process may run on. (TVM's own
    default is half the logical CPUs, which on a 2-vCPU machine is 1 thread: half the speed.)"""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def ensure_runtime():
    """Load libtvm_runtime.so once, BEFORE any module (its initializers register the CPU backend); size the
    kernel thread pool (``TVM_NUM_THREADS``, else ``default_threads()``) before its first use."""
    global _runtime_loaded
    import tvm_ffi  # loads libtvm_ffi.so, which libtvm_runtime.so links against

    os.environ.setdefault("TVM_NUM_THREADS", str(default_threads()))
    if not _runtime_loaded:
        ctypes.CDLL(_find_runtime_lib(), ctypes.RTLD_GLOBAL)
        _runtime_loaded = True
    return tvm_ffi


def load_library(data: bytes):
    """Load a compiled kernel library from its bytes."""
    tvm_ffi = ensure_runtime()
    with tempfile.TemporaryDirectory(prefix="edgeopt-") as d:
        path = os.path.join(d, "kernels.so")
        with open(path, "wb") as f:
            f.write(data)
        return tvm_ffi.load_module(path)  # dlopen'ed: the file may go away now


def aligned_empty(shape, dtype) -> np.ndarray:
    """An uninitialized C-contiguous array whose data starts on a 64-byte boundary."""
    dtype = np.dtype(dtype)
    count = int(np.prod(shape, dtype=np.int64))
    nbytes = max(1, count) * dtype.itemsize  # a zero-size tensor still gets one aligned element
    raw = np.empty(nbytes + ALIGN, np.uint8)
    off = (-raw.ctypes.data) % ALIGN
    return raw[off : off + nbytes].view(dtype)[:count].reshape(shape)


def as_tensor(arr: np.ndarray):
    tvm_ffi = ensure_runtime()
    return tvm_ffi.from_dlpack(arr, require_alignment=ALIGN, require_contiguous=True)


def check_device(target: dict) -> None:
    """Refuse an artifact built for another machine kind, or for CPU features this CPU lacks."""
    if target.get("runtime") != "cpu":
        raise ArtifactError(f"this artifact targets {target.get('name')!r} (runtime {target.get('runtime')!r}); "
                            "the CPU runtime cannot run it")
    arch = platform.machine()
    if target.get("arch") and target["arch"] != arch:
        raise ArtifactError(f"this artifact was compiled for {target['arch']} ({target.get('name')}), "
                            f"but this machine is {arch}: recompile for this device")
    missing = sorted(set(target.get("cpu_features", [])) - cpu_features())
    if missing:
        raise ArtifactError(f"this artifact was compiled for a CPU with {', '.join(missing)} "
                            f"(mcpu={target.get('mcpu')}), which this CPU lacks: running it would crash "
                            "(illegal instruction). Recompile on or for this CPU.")


def cpu_features() -> set[str]:
    """ISA feature flags of this CPU. x86: the /proc/cpuinfo names ('sse4.2' as LLVM spells it). aarch64: the
    kernel's hwcap bits (getauxval), named as in /proc/cpuinfo; /proc/cpuinfo itself is not read there
    because under qemu-user it shows the host's CPU, not the emulated one."""
    if platform.machine() == "aarch64":
        return _aarch64_hwcaps()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    flags = set(line.split(":", 1)[1].split())
                    return flags | ({"sse4.2"} if "sse4_2" in flags else set())
    except OSError:
        pass
    return set()


_AT_HWCAP, _AT_HWCAP2 = 16, 26
#: (auxv entry, bit) of the aarch64 features an artifact may need (linux/arch/arm64/include/uapi/asm/hwcap.h)
_AARCH64_HWCAPS = {"fp": (_AT_HWCAP, 0), "asimd": (_AT_HWCAP, 1), "fphp": (_AT_HWCAP, 9), "asimdhp": (_AT_HWCAP, 10),
                   "asimddp": (_AT_HWCAP, 20), "sve": (_AT_HWCAP, 22), "i8mm": (_AT_HWCAP2, 13)}


def _aarch64_hwcaps() -> set[str]:
    libc = ctypes.CDLL(None)
    libc.getauxval.restype = ctypes.c_ulong
    libc.getauxval.argtypes = [ctypes.c_ulong]
    words = {a: libc.getauxval(a) for a in (_AT_HWCAP, _AT_HWCAP2)}
    return {name for name, (a, bit) in _AARCH64_HWCAPS.items() if words[a] >> bit & 1}
