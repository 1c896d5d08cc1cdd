"""Compilation targets, one file each. ``get_target("host")`` returns a ready ``Target``.

A target knows its TVM target, its vector width, how to export the compiled library, what the device
must have to run it (recorded in the artifact and checked at load), and how to check its toolchain.
"""

from __future__ import annotations

from ..errors import TargetError
from .base import Target

_TARGETS = {"host": "edgeopt.targets.host:HostTarget", "x86": "edgeopt.targets.x86:X86Target",
            "x86-64-v3": "edgeopt.targets.x86:x86_64_v3", "x86-64-v4": "edgeopt.targets.x86:x86_64_v4",
            "x86-64": "edgeopt.targets.x86:MultiLevelTarget", "arm": "edgeopt.targets.arm:ArmTarget",
            "cuda": "edgeopt.targets.cuda:CudaTarget", "vulkan": "edgeopt.targets.vulkan:VulkanTarget"}


def available_targets() -> list[str]:
    return sorted(_TARGETS)


def target_class(name: str) -> type[Target]:
    """The class (or factory's class) of the target named ``name``, without building it or checking its toolchain."""
    if name not in _TARGETS:
        raise TargetError(f"unknown target {name!r}; available targets: {', '.join(available_targets())}")
    import importlib
    import inspect
    import typing

    mod, attr = _TARGETS[name].split(":")
    obj = getattr(importlib.import_module(mod), attr)
    return obj if inspect.isclass(obj) else typing.get_type_hints(obj)["return"]


def get_target(target: str | Target, *, check_toolchain: bool = True, **options) -> Target:
    """The target named ``target`` built with ``options`` (e.g. ``get_target("arm", cpu="cortex-a76")``), its
    toolchain checked (``check_toolchain=False``: only its description is needed, e.g. which int8 instructions it
    has); a ``Target`` instance is returned as it is."""
    if isinstance(target, Target):
        if options:
            raise TargetError(f"target options {sorted(options)} were given with a ready Target: pass them to "
                              "get_target(name, ...) instead")
        return target
    name = str(target)
    if name not in _TARGETS:
        raise TargetError(f"unknown target {name!r}; available targets: {', '.join(available_targets())}")
    import importlib
    import inspect

    mod, cls = _TARGETS[name].split(":")
    factory = getattr(importlib.import_module(mod), cls)
    try:
        inspect.signature(factory).bind(**options)
    except TypeError:
        takes = ", ".join(inspect.signature(factory).parameters) or "none"
        raise TargetError(f"target {name!r} got unknown options {sorted(options)}; its options: {takes}") from None
    t = factory(**options)
    if check_toolchain:
        t.check_toolchain()
    return t


__all__ = ["Target", "available_targets", "get_target", "target_class"]
