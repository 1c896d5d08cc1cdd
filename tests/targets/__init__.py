"""Target tests. A test that needs a device tool (cross compiler, emulator) is skipped with the reason when the
tool is missing, except where ``EDGEOPT_REQUIRE_TARGETS`` names the target (CI sets it): there a missing tool
is an error, so that a broken CI setup cannot pass by skipping."""

from __future__ import annotations

import os

import pytest


def required(target: str) -> bool:
    return target in os.environ.get("EDGEOPT_REQUIRE_TARGETS", "").replace(",", " ").split()


def needs(target: str, ok: bool, reason: str):
    """A skip mark for a test whose tool is missing (``ok`` false), or an error where the target is required."""
    if not ok and required(target):
        raise RuntimeError(f"EDGEOPT_REQUIRE_TARGETS includes {target!r}, but {reason}")
    return pytest.mark.skipif(not ok, reason=reason)


def vulkan_probe() -> tuple[bool, str]:
    """(whether wgpu finds a Vulkan device here, its description or why not)."""
    from edgeopt.errors import ArtifactError
    from edgeopt.runtime import vulkan

    try:
        return True, vulkan.adapter_description()
    except ArtifactError as e:
        return False, str(e)
