"""The on-disk cache of CPU kernels' object code, as ``lower`` uses it.

A kernel's entry is keyed by everything that decides its machine code: the kernel's IR (``kernel_key``: its op or
fused body, attributes and argument types), the tuning record that schedules it (if any), the target (the whole
TVM target: triple, CPU, features, cores; and the edgeopt target class), and the versions of edgeopt, TVM, tvm-ffi,
LLVM and edgeopt's code (``edgeopt.cache.fingerprint``). A hit skips building, scheduling and compiling the kernel;
its schedule's description comes back with it, so the report reads the same.
"""

from __future__ import annotations

from ..cache.fingerprint import versions
from ..cache.store import DiskCache, digest
from .objects import KernelObjects, compile_objects

KIND = "kernels"


class ObjectCache:
    """One lowering's view of the cache: objects found, kernels to compile and store."""

    def __init__(self, target, store: DiskCache):
        self.target, self.store = target, store
        self.found: dict[str, bytes] = {}
        self._pending: dict[str, tuple[str, dict]] = {}
        self._tkey = [type(target).__module__, type(target).__qualname__, str(target.tvm_target())]

    @classmethod
    def for_target(cls, target, store: DiskCache | None) -> ObjectCache | None:
        """A cache for a target whose kernels are object files (CPU targets), or None."""
        if store is None or not getattr(target, "object_code", False):
            return None
        return cls(target, store)

    def key(self, kernel_key: str, record_id: str | None) -> str:
        return digest("kernel-object", self._tkey, kernel_key, record_id, versions())

    def lookup(self, key: str) -> dict | None:
        """The kernel's {"schedule", "tuned"} when its object is cached (and remembered for ``build``), else None."""
        hit = self.store.get(KIND, key)
        if hit is None or not {"name", "schedule", "tuned"} <= hit[1].keys():
            return None
        data, meta = hit
        self.found[meta["name"]] = data
        return meta

    def pending(self, name: str, key: str, meta: dict) -> None:
        """``name`` is compiled in this lowering; ``build`` stores it under ``key``."""
        self._pending[name] = (key, meta)

    def build(self, funcs: dict) -> KernelObjects | None:
        """Compile ``funcs``, store the kernels registered with ``pending``, and return every object."""
        new = compile_objects(self.target.tvm_target(), funcs)
        for name, (key, meta) in self._pending.items():
            self.store.put(KIND, key, new[name], {**meta, "name": name}, evict=False)
        if self._pending:
            self.store.evict()  # once for the whole build
        objects = {**self.found, **new}
        return KernelObjects(objects) if objects else None

    def stats(self) -> dict:
        return {"hits": len(self.found), "compiled": len(self._pending)}
