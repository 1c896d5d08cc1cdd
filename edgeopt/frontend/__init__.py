"""Frontends: model formats -> edgeopt IR. ``from_torch`` is the torch.export frontend."""

from .torch_export import from_exported, from_torch, trace

__all__ = ["from_exported", "from_torch", "trace"]
