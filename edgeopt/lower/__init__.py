"""Lowering: IR graph -> TE computes -> scheduled PrimFuncs -> one TVM library + execution plan."""

from .build import Lowered, lower

__all__ = ["Lowered", "lower"]
