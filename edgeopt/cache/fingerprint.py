"""What a cached result depends on besides its own input: the versions of edgeopt, TVM and tvm-ffi, and the code.

``code_fingerprint()`` hashes the source of every module of edgeopt, its passes (``edgeopt.passes``) and targets
(``edgeopt.targets``), so an edited pass, lowering rule or schedule gives new keys even when the version number did
not move (a development checkout). ``pass_fingerprint`` does the same for a pass object from outside edgeopt.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import os


@functools.cache
def code_fingerprint() -> str:
    """sha256 over the source files of edgeopt, edgeopt.passes and edgeopt.targets (computed once a process)."""
    import edgeopt
    import edgeopt.passes
    import edgeopt.targets

    h = hashlib.sha256()
    roots = {os.path.dirname(os.path.abspath(m.__file__)) for m in (edgeopt, edgeopt.passes, edgeopt.targets)}
    for root in sorted(roots):
        for dirpath, dirnames, files in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith((".", "__pycache__")))
            for f in sorted(files):
                if f.endswith(".py"):
                    path = os.path.join(dirpath, f)
                    h.update(os.path.relpath(path, root).encode() + b"\0")
                    with open(path, "rb") as fh:
                        h.update(hashlib.sha256(fh.read()).digest())
    return h.hexdigest()


@functools.cache
def versions() -> dict:
    import tvm
    import tvm_ffi

    from .. import __version__

    return {"edgeopt": __version__, "tvm": tvm.__version__, "tvm_ffi": tvm_ffi.__version__,
            "llvm": int(tvm.target.codegen.llvm_version_major()), "code": code_fingerprint()}


def pass_fingerprint(p) -> list | None:
    """A pass object's identity for a cache key: its class, its source file's hash and its settings; None when it
    cannot be pinned down (no source file, or settings whose text names a memory address)."""
    cls = type(p)
    try:
        path = inspect.getsourcefile(cls)
        with open(path, "rb") as f:
            source = hashlib.sha256(f.read()).hexdigest()
    except (OSError, TypeError):
        return None
    settings = repr(sorted((k, v) for k, v in vars(p).items() if k != "target"))  # target: set per run
    if " at 0x" in settings or " object at " in settings:
        return None
    return [cls.__module__, cls.__qualname__, p.name, source, settings]
