"""TE compute rules: IR op -> tvm.te tensor. One file per op family, mirroring ``edgeopt/ir/ops``.

A rule is ``fn(inputs: list[te.Tensor], attrs: dict, out: TensorType) -> te.Tensor`` and must compute
exactly the op's reference semantics (tests compare every rule against the reference interpreter).
"""

from __future__ import annotations

from collections.abc import Callable

RULES: dict[str, Callable] = {}


def rule(*ops: str):
    def deco(fn):
        for op in ops:
            RULES[op] = fn
        return fn

    return deco


def get_rule(op: str) -> Callable:
    if not RULES:
        from . import attention, elementwise, linalg, nn, quant, reduce, shape, sort, winograd  # noqa: F401
    try:
        return RULES[op]
    except KeyError:
        raise NotImplementedError(f"no TVM lowering rule for IR op {op!r}") from None
