"""Ahead-of-time CUDA device code: take the CUDA C++ that TVM generated and compile it with nvcc, so that the
device needs no compiler and does no JIT.

TVM 0.27 keeps CUDA *source* in the exported host library and compiles it when the library is loaded, through
the global function ``tvm_callback_cuda_compile``. The artifact therefore stores, next to ``kernels.so``:

    cuda/device_code.json    {"source_sha256", "arch", "cubin", "ptx", "ptx_version", "nvcc", "kernels"}
    cuda/<sha>/sm_XY.cubin   machine code for the arch (runs on the same major, minor >= XY)
    cuda/<sha>/compute_XY.ptx  PTX, which the driver JIT-compiles for newer GPUs

and the runtime registers a callback that returns the stored binary for that source (matched by sha256).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import tempfile
from functools import lru_cache

from ..errors import TargetError

DEVICE_CODE = "cuda/device_code.json"


def cuda_source(executable) -> str:
    """The CUDA C++ of a compiled executable; a ``TargetError`` unless its only device module is ``cuda``
    (an unscheduled kernel silently becomes host code that would read device pointers on the CPU)."""
    imports = list(executable.mod.imports)
    kinds = [m.kind for m in imports]
    if kinds != ["cuda"]:
        raise TargetError(f"the CUDA build produced device modules {kinds}, expected ['cuda']: some kernel got no "
                          "GPU schedule and was compiled as host code")
    source = imports[0].inspect_source("cuda")
    if "__global__" not in source:
        raise TargetError("the CUDA build produced no __global__ kernel")
    return source


def compiler_errors(log: str, limit: int = 2000) -> str:
    """The errors of a compiler's ``log`` (each with the source line and caret after it), not its warnings: a
    generated kernel file can print thousands of warnings before the error that matters. The log's tail when no
    line says error."""
    lines = log.splitlines()
    picked = []
    for i, line in enumerate(lines):
        if "error" in line and "warning" not in line:
            picked.extend(lines[i:i + 3])
    return "\n".join(picked)[:limit] if picked else log[-limit:]


def _nvcc(args: list[str], cwd: str) -> str:
    try:
        r = subprocess.run(["nvcc", *args], cwd=cwd, capture_output=True, text=True, timeout=600)
    except FileNotFoundError:
        raise TargetError("nvcc was not found: install the CUDA 13 toolkit (or nvidia-cuda-nvcc)") from None
    if r.returncode != 0:
        raise TargetError(f"nvcc {' '.join(args)} failed:\n{compiler_errors(r.stderr or r.stdout)}")
    return r.stdout


@lru_cache(maxsize=1)
def nvcc_version() -> str:
    m = re.search(r"release ([\d.]+)", _nvcc(["--version"], os.getcwd()))
    return m.group(1) if m else "?"


def compile_device_code(source: str, arch: str) -> dict[str, bytes]:
    """PTX and cubin of ``source`` for ``arch`` (``sm_XY``), as artifact members (see the module docstring)."""
    key = hashlib.sha256(source.encode()).hexdigest()
    cc = arch.split("_", 1)[1]
    with tempfile.TemporaryDirectory(prefix="edgeopt-cuda-") as d:
        with open(os.path.join(d, "k.cu"), "w") as f:
            f.write(source)
        _nvcc(["-O3", f"--gpu-architecture=compute_{cc}", "--ptx", "-o", "k.ptx", "k.cu"], d)
        _nvcc([f"--gpu-architecture=sm_{cc}", "--cubin", "-o", "k.cubin", "k.ptx"], d)  # ptxas only
        with open(os.path.join(d, "k.ptx"), "rb") as f:
            ptx = f.read()
        with open(os.path.join(d, "k.cubin"), "rb") as f:
            cubin = f.read()
    version = re.search(rb"^\.version\s+(\S+)", ptx, re.M)
    cubin_name, ptx_name = f"cuda/{key}/sm_{cc}.cubin", f"cuda/{key}/compute_{cc}.ptx"
    info = {"source_sha256": key, "arch": arch, "cubin": cubin_name, "ptx": ptx_name,
            "ptx_version": version.group(1).decode() if version else "?", "nvcc": nvcc_version(),
            "kernels": sorted(set(re.findall(r"__global__\s+void\s+(?:__launch_bounds__\(\d+\)\s+)?(\w+)", source)))}
    return {DEVICE_CODE: json.dumps(info, indent=1).encode(), cubin_name: cubin, ptx_name: ptx}
