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
    """sha256 over the source files of edgeopt, edgeopt.passes and edgeopt.targets (computed once a process): the
    Python and the C that ships in artifacts (the thread pool) or builds the runner."""
    import edgeopt
    import edgeopt.passes
    import edgeopt.targets

    h = hashlib.sha256()
    roots = {os.path.dirname(os.path.abspath(m.__file__)) for m in (edgeopt, edgeopt.passes, edgeopt.targets)}
    for root in sorted(roots):
        for dirpath, dirnames, files in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith((".", "__pycache__")))
            for f in sorted(files):
                if f.endswith((".py", ".c", ".cc")):
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
    cannot be pinned down (no source file, or a setting that is not plain data: numbers, strings, arrays and lists
    or dicts of them)."""
    cls = type(p)
    source = _source_hash(cls)
    if source is None:
        return None
    settings = {}
    for k, v in sorted(vars(p).items()):
        if k == "target":  # set by the pass manager for each run: not a setting
            continue
        settings[k] = _plain(v)
        if settings[k] is _UNKNOWN:
            return None
    return [cls.__module__, cls.__qualname__, p.name, source, settings]


def pass_name_fingerprint(name: str) -> list | None:
    """A pass given by its registered name: the name alone for edgeopt's own passes (``code_fingerprint`` covers
    them), else also its class's source hash (a user's pass, edited between compiles); None for an unknown name."""
    from ..pipeline import _PASSES, _load_builtin_passes

    _load_builtin_passes()
    cls = _PASSES.get(name)
    if cls is None:
        return None
    if cls.__module__.split(".")[0] == "edgeopt":
        return [name]
    source = _source_hash(cls)
    return None if source is None else [name, cls.__module__, cls.__qualname__, source]


def _source_hash(cls) -> str | None:
    try:
        path = inspect.getsourcefile(cls)
        with open(path, "rb") as f:
            return hashlib.sha256(f.read()).hexdigest()
    except (OSError, TypeError, KeyError):  # no file (a class made in exec or a notebook cell)
        return None


_UNKNOWN = object()


def _plain(v):
    """``v`` as JSON-able data with array contents hashed, or ``_UNKNOWN`` for anything else."""
    import numpy as np

    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    if isinstance(v, np.ndarray):
        return ["ndarray", v.dtype.str, list(v.shape), hashlib.sha256(np.ascontiguousarray(v).tobytes()).hexdigest()]
    if type(v).__module__.split(".")[0] == "torch" and hasattr(v, "detach"):
        return _plain(v.detach().cpu().contiguous().numpy())
    if isinstance(v, (list, tuple)):
        items = [_plain(x) for x in v]
        return _UNKNOWN if any(x is _UNKNOWN for x in items) else items
    if isinstance(v, dict) and all(isinstance(k, str) for k in v):
        items = {k: _plain(x) for k, x in v.items()}
        return _UNKNOWN if any(x is _UNKNOWN for x in items.values()) else items
    return _UNKNOWN


@functools.cache
def toolchain(tool: str) -> str | None:
    """The first line of ``tool --version`` (a compiler whose output the artifact holds), or None."""
    import shutil
    import subprocess

    path = shutil.which(tool)
    if path is None:
        return None
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return " ".join(out.split())[-200:]
