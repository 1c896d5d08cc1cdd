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
from .amx_permission import needs_tiles, request_tiles, tiles_granted
from .cpu_features import host_flags, missing_features

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
        try:
            return tvm_ffi.load_module(path)  # dlopen'ed: the file may go away now
        except Exception as e:  # noqa: BLE001 - dlopen's refusal arrives as a tvm-ffi error of any type
            raise ArtifactError(f"the artifact's kernel library does not load here: {str(e)[:300]}") from None


def install_thread_pool(lib) -> int:
    """Run the library's parallel loops on edgeopt's thread pool (``thread_pool.c``, linked into each CPU
    ``kernels.so``): dynamic tasks, and waiting threads that keep their core, so a busy process beside the model
    costs it a share of the CPU instead of many times its latency. Returns the pool's thread count; 0 where TVM's
    own pool stays (a library without the pool, or without parallel loops, or ``EDGEOPT_THREAD_POOL=tvm``: the
    way back, for comparison). Call it before the library's first kernel; calling it again changes nothing."""
    if os.environ.get("EDGEOPT_THREAD_POOL") == "tvm":
        return 0
    try:
        install = lib.get_function("edgeopt_thread_pool")
    except AttributeError:
        return 0
    return int(install())


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
    if arr.size == 0 and arr.ndim:  # numpy strides a zero-size axis as if it were 1; TVM wants the products of the
        compact = [int(np.prod(arr.shape[i + 1:], dtype=np.int64)) * arr.itemsize for i in range(arr.ndim)]
        arr = np.lib.stride_tricks.as_strided(arr, arr.shape, compact)  # sizes after each axis (0 before a 0)
    return tvm_ffi.from_dlpack(arr, require_alignment=ALIGN, require_contiguous=True)


def check_device(target: dict) -> dict:
    """Refuse an artifact built for another machine kind, or for CPU features this CPU lacks; returns the level this
    CPU runs (the best of a multi-level artifact: ``select_level``)."""
    if target.get("runtime") != "cpu":
        raise ArtifactError(f"this artifact targets {target.get('name')!r} (runtime {target.get('runtime')!r}); "
                            "the CPU runtime cannot run it")
    arch = platform.machine()
    if target.get("arch") and target["arch"] != arch:
        raise ArtifactError(f"this artifact was compiled for {target['arch']} ({target.get('name')}), "
                            f"but this machine is {arch}: recompile for this device")
    level = select_level(target, arch, host_flags())
    if needs_tiles(level) and not tiles_granted():  # Linux refused the tile state: a level without tiles, if any
        rest = [lv for lv in target.get("levels", []) if not needs_tiles(lv)]
        if not rest:
            request_tiles()  # the refusal, with what to do
        return select_level({**target, "levels": rest}, arch, host_flags())
    return level


def chosen_level(target: dict, name: str | None = None) -> dict:
    """The level of a CPU artifact that this CPU runs (``check_device``), or the level ``name`` of a multi-level
    artifact if this CPU runs it."""
    best = check_device(target)
    if name is None:
        return best
    level = select_level({"levels": [named_level(target, name)]}, platform.machine(), host_flags())
    if needs_tiles(level):
        request_tiles()
    return level


def named_level(target: dict, name: str | None) -> dict:
    """The level ``name`` of a CPU artifact (``None``: its least demanding one, which every CPU that runs the
    artifact runs), without checking this CPU; ``ArtifactError`` if there is no such level. (The manifest's schema,
    ``manifest_check``, has checked the levels' fields.)"""
    levels = target.get("levels", [target])
    if name is None:
        return levels[-1]
    named = [lv for lv in levels if "levels" in target and lv["level"] == name]
    if not named:
        have = [lv["level"] for lv in levels if "levels" in target]
        why = f"its levels: {have}" if have else "it has one level: load it without level="
        raise ArtifactError(f"this artifact has no CPU level {name!r} ({why})")
    return named[0]


def select_level(target: dict, arch: str, cpu_flags: set[str]) -> dict:
    """The best CPU level of ``target`` that a CPU with the Linux feature ``cpu_flags`` runs: the first entry of
    ``target["levels"]`` (best first) whose features it has, or the target itself for a single-level artifact.
    ``ArtifactError`` naming the missing features (of the least demanding level) when it runs none."""
    levels = target.get("levels", [target])
    for level in levels:
        if not missing_features(level.get("cpu_features", []), arch, cpu_flags):
            return level
    last = levels[-1]
    missing = missing_features(last.get("cpu_features", []), arch, cpu_flags)
    raise ArtifactError(f"this artifact was compiled for a CPU with {', '.join(missing)} (mcpu={last.get('mcpu')}), "
                        "which this CPU lacks: running it would crash (illegal instruction). Recompile on or for "
                        "this CPU (target='host'), or for a level it has (target='x86-64-v3').")
