"""Frontends: model formats -> edgeopt IR. ``from_torch`` is the torch.export frontend."""

from .torch_export import from_torch

__all__ = ["from_torch"]
