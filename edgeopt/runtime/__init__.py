"""The edgeopt runtime: runs an artifact with numpy and the TVM runtime only (no torch, no compiler)."""

from .model import Model, load

__all__ = ["Model", "load"]
