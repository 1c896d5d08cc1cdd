"""The no-Python C++ runner: run a CPU artifact on a device that has only the TVM runtime libraries.

    edgeopt.cxx.export_flat("m.edgeopt", "m.flat")          # here: verify, then write kernels.so, weights.bin, plan.txt
    edgeopt.cxx.build_runner("edgeopt_run", target="arm")    # here: cross-compile it (aarch64-linux-gnu-g++)
    # on the board, beside libtvm_runtime.so and libtvm_ffi.so:
    #   ./edgeopt_run m.flat out_ x.bin [--repeat 50]        -> out_0.bin ... (raw, C order); median_ms with --repeat

The artifact is verified on the host (manifest, sha256 of every member, TVM version, the whole execution plan:
``edgeopt.runtime.plan_check``) and flattened into a format a few hundred lines of C++ can read without a zip,
JSON or safetensors library (see the header of ``runtime/cxx/edgeopt_run.cc``); the runner checks that plan again
on its own before it runs anything. It allocates the planned arena once, points every activation at its
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
#: the version of plan.txt export_flat writes and edgeopt_run reads (2: live ranges, outputs and in-place pairs)
FLAT_VERSION = 2
#: the runner's compiler per target, and the apt package that has it
COMPILERS = {"host": ("g++", "g++"), "arm": ("aarch64-linux-gnu-g++", "g++-aarch64-linux-gnu")}


def export_flat(artifact: str | os.PathLike, out_dir: str | os.PathLike, *, trusted_keys=None,
                sha256: str | None = None, level: str | None = None) -> Path:
    """Verify ``artifact`` and write its flat form (kernels.so, weights.bin, plan.txt) into ``out_dir``.

    The artifact's hashes and its whole plan are checked first (``read_cpu_artifact`` runs
    ``edgeopt.runtime.plan_check``): a damaged one is an ``ArtifactError`` and nothing is written. The runner
    checks plan.txt again on the device. ``trusted_keys``, ``sha256``: as for ``edgeopt.load``. ``level``: which
    level of a multi-level x86 artifact to export (default: its least demanding one, which runs wherever the
    artifact runs)."""
    from .runtime.model import read_cpu_artifact

    _, plan, weights, lib = read_cpu_artifact(str(artifact), f"artifact {str(artifact)!r}", "the C++ runner",
                                              trusted_keys=trusted_keys, sha256=sha256, level=level)
    lines, blob = flat_plan(plan, weights)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "kernels.so").write_bytes(lib)
    (out / "weights.bin").write_bytes(bytes(blob))
    (out / "plan.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return out


def flat_plan(plan: dict, weights: dict[str, np.ndarray]) -> tuple[list[str], bytearray]:
    """(plan.txt lines, weights.bin bytes) of a checked plan, in the format ``runtime/cxx/edgeopt_run.cc`` reads."""
    if any(info["kind"] == "state" for info in plan["values"].values()):
        raise ArtifactError("this artifact keeps state between calls (a language model's KV cache), which only the "
                            "Python runtime runs so far (edgeopt.llm.load)")
    lines = [f"edgeopt-flat {FLAT_VERSION}", f"arena {int(plan['arena_bytes'])}"]
    blob, views = bytearray(), []
    for name, info in plan["values"].items():
        dims = _dims(info)
        _check_name(name)
        if info["kind"] == "const":
            blob += bytes(-len(blob) % ALIGN)
            lines.append(f"value {name} const {info['dtype']} {len(blob)} {dims}")
            blob += np.ascontiguousarray(weights[name]).tobytes()
        elif info["kind"] in ("input", "buffer"):
            first, last = info["live"]
            lines.append(f"value {name} {info['kind']} {info['dtype']} {int(info['offset'])} {first} {last} {dims}")
        else:
            views.append(name)
    for name in sorted(views, key=lambda v: _view_depth(v, plan["values"])):  # each after its source
        info = plan["values"][name]
        lines.append(f"view {name} {info['of']} {info['dtype']} {_dims(info)}")
    for s in plan["steps"]:
        _check_name(s["kernel"])
        pairs = s.get("inplace", [])
        lines.append(" ".join(["step", s["kernel"], str(s["num_outputs"]), str(len(s["args"])), *s["args"],
                               str(len(pairs)), *(n for pair in pairs for n in pair)]))
    lines += [f"input {i['name']}" for i in plan["inputs"]] + [f"output {o['name']}" for o in plan["outputs"]]
    return lines, blob


def _dims(info: dict) -> str:
    """A value's rank and dims as plan.txt writes them."""
    return " ".join(str(int(d)) for d in [len(info["shape"]), *info["shape"]])


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


def copy_runtime(out_dir: str | os.PathLike, target: str = "host") -> list[Path]:
    """Copy ``libtvm_runtime.so`` and ``libtvm_ffi.so`` of ``target`` ("host" or "arm") into ``out_dir``: put them
    beside ``edgeopt_run`` on the device (its rpath is ``$ORIGIN``). Returns the copies."""
    import shutil

    if target not in COMPILERS:
        raise TargetError(f"the C++ runner runs on {sorted(COMPILERS)}, not {target!r}")
    _, libs = _runtime_files(target)
    out = []
    for name in ("libtvm_runtime.so", "libtvm_ffi.so"):
        src = next((p / name for p in libs if (p / name).exists()), None)
        if src is None:
            raise TargetError(f"{name} for {target!r} not found in {', '.join(map(str, libs))}")
        out.append(Path(shutil.copy(src, Path(out_dir) / name)))
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
        raise ArtifactError(f"name {name[:80]!r} cannot be written to a flat plan (empty, or with whitespace)")


def _view_depth(name: str, values: dict) -> int:
    """How many views lie between ``name`` and its base (the checked plan's chains are short and acyclic)."""
    depth = 0
    while values[name]["kind"] == "view":
        name, depth = values[name]["of"], depth + 1
    return depth
