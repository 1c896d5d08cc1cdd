"""CPU kernels compiled one object file each, so that each can be cached on disk and reused by later compiles.

``compile_objects(target, funcs)`` builds every kernel (name -> scheduled PrimFunc) into its own ELF object, in
parallel (TVM's LLVM code generation releases the GIL); ``KernelObjects.export_library`` links them into the one
shared library an artifact ships (``kernels.so``), as ``tvm``'s own ``export_library`` links its one object. Each
object defines its kernel's symbol only (plus weak helpers such as ``__tvm_ffi_main``), so objects built by
different compiles link together. The library also carries edgeopt's thread pool (``edgeopt/runtime/thread_pool.c``,
compiled here by the same compiler driver), which the runtime installs for the kernels' parallel loops, and the
request for AMX tiles made when it is loaded (``edgeopt/runtime/amx_tiles.c``).
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from ..progress import advance, expect

THREAD_POOL_SOURCE = os.path.join(os.path.dirname(os.path.dirname(__file__)), "runtime", "thread_pool.c")
#: the C files every CPU library links: the thread pool, and the AMX tile permission asked for when it is loaded
RUNTIME_SOURCES = (THREAD_POOL_SOURCE,
                   os.path.join(os.path.dirname(os.path.dirname(__file__)), "runtime", "amx_tiles.c"))


@dataclass
class KernelObjects:
    """The compiled kernels of one library: kernel name -> object file bytes."""

    objects: dict[str, bytes]

    def export_library(self, path: str, cc: str | None = None) -> None:
        """Link the objects (sorted by name: the same kernels give the same library) into the shared library
        ``path``; ``cc`` is the linker driver (a cross compiler for another architecture)."""
        from tvm.support import cc as tvm_cc

        with tempfile.TemporaryDirectory(prefix="edgeopt-objects-") as d:
            paths = []
            for i, name in enumerate(sorted(self.objects)):
                paths.append(os.path.join(d, f"k{i}.o"))
                with open(paths[-1], "wb") as f:
                    f.write(self.objects[name])
            paths.extend(compile_runtime_source(d, source, cc) for source in RUNTIME_SOURCES)
            tvm_cc.create_shared(path, paths, options=["-pthread"], **({"cc": cc} if cc else {}))


_RUNTIME_OBJECTS: dict[tuple[str, bytes], bytes] = {}  # (compiler, source) -> object: compiled once per process


def compile_runtime_source(folder: str, source: str, cc: str | None = None) -> str:
    """One of ``RUNTIME_SOURCES`` compiled into an object file in ``folder`` with ``cc``, the driver that links the
    library (default: TVM's, which honours ``$CXX``; ``-x c`` compiles it as C with a C++ driver); returns its path."""
    from tvm.support import cc as tvm_cc

    out = os.path.join(folder, os.path.basename(source)[:-2] + ".o")
    with open(source, "rb") as f:
        key = (cc or tvm_cc.get_cc() or "gcc", f.read())
    if key not in _RUNTIME_OBJECTS:
        cmd = [key[0], "-x", "c", "-std=gnu11", "-O2", "-fPIC", "-c", source, "-o", out]
        what = f"compiling {os.path.basename(source)} failed: {' '.join(cmd)}"
        try:
            done = subprocess.run(cmd, capture_output=True, text=True)
        except OSError as e:
            raise RuntimeError(f"{what}: {e}") from None
        if done.returncode != 0:
            raise RuntimeError(f"{what}\n{done.stderr}")
        with open(out, "rb") as f:
            _RUNTIME_OBJECTS[key] = f.read()
    with open(out, "wb") as f:
        f.write(_RUNTIME_OBJECTS[key])
    return out


def compile_objects(tvm_target, funcs: dict) -> dict[str, bytes]:
    """Each PrimFunc (name -> func, ``global_symbol`` set) compiled for ``tvm_target`` into an object file."""
    if not funcs:
        return {}
    workers = max(1, min(len(funcs), len(os.sched_getaffinity(0))))
    with tempfile.TemporaryDirectory(prefix="edgeopt-objects-") as d:
        def one(item):
            import tvm

            name, func = item
            path = os.path.join(d, f"{name}.o")
            tvm.compile(tvm.IRModule({name: func}), target=tvm_target).mod.write_to_file(path)
            with open(path, "rb") as f:
                return name, f.read()

        expect(len(funcs), "kernels")
        out = {}
        with ThreadPoolExecutor(workers) as pool:
            for name, data in pool.map(one, funcs.items()):
                out[name] = data
                advance(name)
        return out
