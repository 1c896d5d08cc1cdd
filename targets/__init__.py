"""Compilation targets, one file each. ``get_target("host")`` returns a ready ``Target``.

A target knows its TVM target, its vector width, how to export the compiled library, what the device
must have to run it (recorded in the artifact and checked at load), and how to check its toolchain.
"""

from __future__ import annotations

from ..errors import TargetError
from .base import Target

_TARGETS = {"host": "edgeopt.targets.host:HostTarget"}


def available_targets() -> list[str]:
    return sorted(_TARGETS)


def get_target(target: str | Target, **options) -> Target:
    if isinstance(target, Target):
        return target
    name = str(target)
    if name not in _TARGETS:
        raise TargetError(f"unknown target {name!r}; available targets: {', '.join(available_targets())}")
    import importlib

    mod, cls = _TARGETS[name].split(":")
    t = getattr(importlib.import_module(mod), cls)(**options)
    t.check_toolchain()
    return t


__all__ = ["Target", "available_targets", "get_target"]
