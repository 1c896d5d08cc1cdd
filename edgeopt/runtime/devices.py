"""Whether this machine can run an artifact: its runtime backend (``edgeopt.runtime.backends``) checks the device."""

from __future__ import annotations


def check_device(target: dict) -> None:
    """Refuse an artifact this machine cannot run (``ArtifactError`` saying why)."""
    from .backends import get_backend

    get_backend(target.get("runtime"), f"this artifact (target {target.get('name')!r})").check_device(target)
