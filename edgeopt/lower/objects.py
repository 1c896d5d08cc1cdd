"""CPU kernels compiled one object file each, so that each can be cached on disk and reused by later compiles.

``compile_objects(target, funcs)`` builds every kernel (name -> scheduled PrimFunc) into its own ELF object, in
parallel (TVM's LLVM code generation releases the GIL); ``KernelObjects.export_library`` links them into the one
shared library an artifact ships (``kernels.so``), as ``tvm``'s own ``export_library`` links its one object. Each
object defines its kernel's symbol only (plus weak helpers such as ``__tvm_ffi_main``), so objects built by
different compiles link together.
"""

from __future__ import annotations

import os
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from ..progress import advance, expect


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
            tvm_cc.create_shared(path, paths, **({"cc": cc} if cc else {}))


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
