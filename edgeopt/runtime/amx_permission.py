"""AMX tile permission: Linux (5.16 and later) gives a process AMX's tile registers only after it asks.

The first tile instruction of a process that has not asked dies with SIGILL. Every CPU library asks when it is
loaded (``amx_tiles.c``), so any loader gets the tiles. An artifact whose int8 kernels run on tiles
(``edgeopt.lower.amx``) also says so in its manifest (``"amx_tiles": true`` on its target or on the level that has
them), and the CPU runtime asks first (``arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)``, once per process:
the permission covers every thread), so that a refusal is an error that says why: a multi-level artifact then runs
its best level without tiles, and any other is refused with what to do. The C++ runner warns when Linux refuses
on a CPU that has AMX.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform

from ..errors import ArtifactError

SYS_ARCH_PRCTL = 158  # x86-64
ARCH_REQ_XCOMP_PERM = 0x1023
XFEATURE_XTILEDATA = 18
_granted = False
_refused: str | None = None  # Linux's answer, once it said no


def needs_tiles(level: dict) -> bool:
    """Whether the kernels of a CPU artifact's ``level`` (its target, or one of its levels) run on AMX tiles."""
    return bool(level.get("amx_tiles"))


def tiles_granted() -> bool:
    """Whether this process has the AMX tile state (asking Linux for it on the first call that can)."""
    try:
        request_tiles()
    except ArtifactError:
        return False
    return True


def request_tiles() -> None:
    """Ask Linux for this process's AMX tile state (idempotent); ``ArtifactError`` if it refuses."""
    global _granted, _refused
    if _granted:
        return
    if _refused is not None:
        raise ArtifactError(_refused)
    if platform.machine() != "x86_64":
        raise ArtifactError("an artifact with AMX kernels runs on x86-64 only")
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.syscall(SYS_ARCH_PRCTL, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) != 0:
        err = ctypes.get_errno()
        why = {errno.EINVAL: "Linux 5.16 or later grants them", errno.EPERM: "a sandbox or seccomp filter forbids it",
               errno.ENOSPC: "a thread's alternate signal stack is too small for the tile state"}.get(err, "")
        _refused = (f"this artifact's int8 kernels run on AMX tiles, which Linux refused to this process "
                    f"({os.strerror(err)}{'; ' + why if why else ''}): recompile without them, e.g. "
                    "target='host', mattr=['-amx-tile', '-amx-int8']")
        raise ArtifactError(_refused)
    _granted = True
