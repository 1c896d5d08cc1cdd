"""Errors a user can act on. Each names what is wrong and what to change."""

from __future__ import annotations

from dataclasses import dataclass, field


class EdgeoptError(Exception):
    """Base class of every error edgeopt raises on purpose."""


@dataclass
class UnsupportedOp:
    op: str
    count: int = 0
    sources: list[str] = field(default_factory=list)


class UnsupportedModelError(EdgeoptError):
    """The model uses ops or features edgeopt cannot compile. ``ops`` lists every unsupported op."""

    def __init__(self, message: str, ops: list[UnsupportedOp] | None = None):
        self.ops = ops or []
        super().__init__(message)

    @classmethod
    def from_ops(cls, ops: list[UnsupportedOp]) -> UnsupportedModelError:
        lines = [f"the model uses {len(ops)} op(s) edgeopt does not support yet; nothing was compiled:"]
        for u in sorted(ops, key=lambda u: u.op):
            lines.append(f"  {u.op}  (x{u.count})")
            lines += [f"      at {s}" for s in u.sources[:5]]
            if len(u.sources) > 5:
                lines.append(f"      ... and {len(u.sources) - 5} more places")
        lines.append("Rewrite those lines with supported ops, or open an issue naming the op.")
        return cls("\n".join(lines), ops)


class InputError(EdgeoptError, ValueError):
    """Inputs given to a compiled model do not match what it was compiled for."""


class ArtifactError(EdgeoptError):
    """An artifact file is damaged, from an incompatible version, or fails a check the loader asked for (not signed
    by a trusted key, not the pinned sha256)."""


class TargetError(EdgeoptError):
    """An unknown target, or a target whose toolchain or device is not available here."""


class PassError(EdgeoptError):
    """A pass failed or left the IR invalid; the message names the pass."""


class DeviceError(EdgeoptError):
    """Running an artifact on a device (real or emulated) failed outside the runtime's checks: the process
    crashed (e.g. an illegal instruction) or timed out. The message carries its exit status and stderr."""


class TuningError(EdgeoptError):
    """A tuning database is unreadable or damaged, or tuning cannot run here (a missing package, a target this
    machine cannot measure). The message names the file or the package to install."""
