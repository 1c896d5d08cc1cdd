"""Which runtime backend runs an artifact: its manifest's ``target["runtime"]`` ("cpu", "cuda", "vulkan")."""

from __future__ import annotations

from ..errors import ArtifactError
from . import tvm_cpu, tvm_cuda, vulkan

BACKENDS = {"cpu": tvm_cpu, "cuda": tvm_cuda, "vulkan": vulkan}


def backend(target: dict):
    """The backend module (``tvm_cpu``, ``tvm_cuda``, ``vulkan``) for ``target``; ``ArtifactError`` if unknown."""
    runtime = target.get("runtime")
    if runtime not in BACKENDS:
        raise ArtifactError(f"this artifact targets {target.get('name')!r} (runtime {runtime!r}), which this edgeopt "
                            f"runtime cannot run (it runs: {', '.join(sorted(BACKENDS))})")
    return BACKENDS[runtime]


def check_device(target: dict) -> None:
    """Refuse an artifact this machine cannot run (``ArtifactError`` saying why)."""
    backend(target).check_device(target)
