"""AMX tile permission: Linux (5.16 and later) gives a process AMX's tile registers only after it asks.

An artifact built for a CPU with AMX (``cpu_features`` holding "amx-tile") may run its int8 convs on tiles
(``edgeopt.lower.amx_conv``); the first tile instruction of a process that has not asked dies with SIGILL. So the
CPU runtime asks (``arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)``, once per process: the permission covers
every thread) before it loads such an artifact's library, and refuses the artifact with what to do if Linux says
no. The C++ runner asks at start the same way.
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


def needs_tiles(cpu_features) -> bool:
    """Whether code built with the LLVM features ``cpu_features`` may use AMX tiles."""
    return "amx-tile" in cpu_features


def request_tiles() -> None:
    """Ask Linux for this process's AMX tile state (idempotent); ``ArtifactError`` if it refuses."""
    global _granted
    if _granted:
        return
    if platform.machine() != "x86_64":
        raise ArtifactError("an artifact with AMX kernels runs on x86-64 only")
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.syscall(SYS_ARCH_PRCTL, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) != 0:
        err = ctypes.get_errno()
        why = {errno.EINVAL: "Linux 5.16 or later grants them", errno.EPERM: "a sandbox or seccomp filter forbids it",
               errno.ENOSPC: "a thread's alternate signal stack is too small for the tile state"}.get(err, "")
        raise ArtifactError(f"this artifact was built for a CPU with AMX tiles, which Linux refused to this process "
                            f"({os.strerror(err)}{'; ' + why if why else ''}): recompile without them, e.g. "
                            "target='x86', cpu=<this CPU>, mattr=['-amx-tile', '-amx-int8']")
    _granted = True
