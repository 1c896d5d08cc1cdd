"""The no-Python C++ runner: run a CPU artifact on a device that has only the TVM runtime libraries.

    edgeopt.cxx.export_flat("m.edgeopt", "m.flat")          # here: verify, then write kernels.so, weights.bin, plan.txt
    edgeopt.cxx.build_runner("edgeopt_run", target="arm")    # here: cross-compile it (aarch64-linux-gnu-g++)
    # on the board, beside libtvm_runtime.so and libtvm_ffi.so:
    #   ./edgeopt_run m.flat out_ x.bin [--repeat 50]        -> out_0.bin ... (raw, C order); median_ms with --repeat

The artifact is verified on the host (manifest, sha256 of every member, TVM version) and flattened into a
format a hundred lines of C++ can read without a zip, JSON or safetensors library (see the header of
``runtime/cxx/edgeopt_run.cc``). The runner allocates the planned arena once, points every activation at its
offset and calls the kernels in the plan's order, exactly as the Python runtime does. Inputs and outputs
are raw little-endian arrays: ``x.astype(np.float32).tofile("x.bin")``, ``np.fromfile("out_0.bin", np.float32)``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np

from .errors import ArtifactError, TargetError

SOURCE = Path(__file__).parent / "runtime" / "cxx" / "edgeopt_run.cc"
ALIGN = 64
#: the runner's compiler per target, and the apt package that has it
COMPILERS = {"host": ("g++", "g++"), "arm": ("aarch64-linux-gnu-g++", "g++-aarch64-linux-gnu")}


def export_flat(artifact: str | os.PathLike, out_dir: str | os.PathLike) -> Path:
    """Verify ``artifact`` and write its flat form (kernels.so, weights.bin, plan.txt) into ``out_dir``."""
    from .runtime.model import read_cpu_artifact

    _, plan, weights, lib = read_cpu_artifact(str(artifact), f"artifact {str(artifact)!r}", "the C++ runner")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "kernels.so").write_bytes(lib)
    lines = ["edgeopt-flat 1", f"arena {int(plan.get('arena_bytes', 0))}"]
    blob, views = bytearray(), []
    for name, info in plan["values"].items():
        dims = f"{len(info['shape'])} {' '.join(str(d) for d in info['shape'])}".rstrip()
        _check_name(name)
        if info["kind"] == "const":
            blob += bytes(-len(blob) % ALIGN)
            lines.append(f"value {name} const {info['dtype']} {len(blob)} {dims}")
            blob += np.ascontiguousarray(weights[name]).tobytes()
        elif info["kind"] in ("input", "buffer"):
            lines.append(f"value {name} {info['kind']} {info['dtype']} {int(info['offset'])} {dims}")
        else:
            views.append(f"view {name} {info['of']} {info['dtype']} {dims}")
    lines += _in_dependency_order(views)
    lines += [f"step {s['kernel']} {len(s['args'])} {' '.join(s['args'])}" for s in plan["steps"]]
    lines += [f"input {i['name']}" for i in plan["inputs"]] + [f"output {o['name']}" for o in plan["outputs"]]
    (out / "weights.bin").write_bytes(bytes(blob))
    (out / "plan.txt").write_text("\n".join(lines) + "\n")
    return out


def build_runner(out_path: str | os.PathLike, target: str = "host") -> Path:
    """Compile ``edgeopt_run`` for ``target`` ("host" or "arm") against the tvm-ffi headers and runtime libraries
    (for "arm": those of the aarch64 wheels in the sysroot ``scripts/arm_sysroot.sh`` builds)."""
    if target not in COMPILERS:
        raise TargetError(f"the C++ runner builds for {sorted(COMPILERS)}, not {target!r}")
    cxx, package = COMPILERS[target]
    if shutil.which(cxx) is None:
        raise TargetError(f"{cxx} is not installed: apt-get install {package}")
    include, libs = _runtime_files(target)
    out = Path(out_path)
    cmd = [cxx, "-std=c++17", "-O2", str(SOURCE), f"-I{include}", *[f"-L{d}" for d in libs], "-Wl,--no-as-needed",
           "-ltvm_runtime", "-ltvm_ffi", "-Wl,-rpath,$ORIGIN", "-o", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode:
        raise TargetError(f"building the C++ runner failed:\n{proc.stderr[-2000:]}")
    return out


def _runtime_files(target: str) -> tuple[Path, list[Path]]:
    """(tvm-ffi include folder, [folders of libtvm_runtime.so and libtvm_ffi.so]) for the target."""
    if target == "arm":
        from .emulate import check_emulator

        b = check_emulator()
        return b / "dev-site" / "tvm_ffi" / "include", [b / "dev-tvmrt", b / "dev-site" / "tvm_ffi" / "lib"]
    import tvm
    import tvm_ffi

    ffi_dir = Path(tvm_ffi.__file__).parent
    return ffi_dir / "include", [Path(tvm.__file__).parent / "lib", ffi_dir / "lib"]


def _check_name(name: str) -> None:
    if not name or any(c.isspace() for c in name):
        raise ArtifactError(f"value name {name!r} cannot be written to a flat plan (whitespace)")


def _in_dependency_order(views: list[str]) -> list[str]:
    """View records sorted so each one's source (a value or an earlier view) comes first."""
    pending, done, out = list(views), set(), []
    while pending:
        ready = [v for v in pending if v.split()[2] not in {p.split()[1] for p in pending}]
        if not ready:
            raise ArtifactError("the plan's views form a cycle")
        out += ready
        pending = [v for v in pending if v not in ready]
        done.update(v.split()[1] for v in ready)
    return out
