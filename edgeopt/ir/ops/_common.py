"""Shared helpers for op schemas: broadcasting, axis normalization, dtype checks."""

from __future__ import annotations

from ..registry import OpError
from ..types import FLOAT_DTYPES, TensorType


def broadcast_shapes(*shapes: tuple[int, ...]) -> tuple[int, ...]:
    """numpy broadcasting of static shapes; raises OpError when they do not broadcast."""
    rank = max(len(s) for s in shapes)
    out = []
    for i in range(rank):
        dims = {s[i - rank + len(s)] for s in shapes if i - rank + len(s) >= 0} - {1}
        if len(dims) > 1:
            raise OpError(f"shapes {list(shapes)} do not broadcast")
        out.append(dims.pop() if dims else 1)
    return tuple(out)


def norm_axis(axis: int, rank: int) -> int:
    if not -rank <= axis < max(rank, 1):
        raise OpError(f"axis {axis} out of range for rank {rank}")
    return axis % rank if rank else 0


def same_dtype(op: str, types: list[TensorType]) -> str:
    dts = {t.dtype for t in types}
    if len(dts) != 1:
        raise OpError(f"{op}: inputs must have one dtype, got {sorted(dts)} (insert a cast)")
    return dts.pop()


def need_float(op: str, t: TensorType) -> None:
    if t.dtype not in FLOAT_DTYPES:
        raise OpError(f"{op}: needs a floating-point input, got {t.dtype}")


#: integer contractions: u8 or i8 activations times i8 weights, summed exactly in i32 (quantized kernels)
INT8_INPUTS = ("u8", "i8")


def contraction_dtype(op: str, types: list[TensorType]) -> str:
    """The result dtype of a conv / matmul / linear: its inputs' float dtype, or i32 for an integer one (u8 or i8
    activations times i8 weights; a bias is then added after, in float, by the dequantize that follows)."""
    x, w = types[0], types[1]
    if x.dtype in INT8_INPUTS and w.dtype == "i8":
        if len(types) > 2:
            raise OpError(f"{op}: an integer {op} takes no bias (add it after dequantizing the i32 result)")
        return "i32"
    return same_dtype(op, types)
