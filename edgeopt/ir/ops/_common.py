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


#: the int8 dot-product instructions an integer conv / linear can name in its ``int8_dot`` attribute (set by
#: ``int8_weight_layout``; the CPU schedule tensorizes with it, ``edgeopt.lower.int8_dot``): name -> (lanes, group)
#: of the [lanes, group] weight tiles it reads, the activation dtype it multiplies, and the largest |weight| it is
#: exact for (vpmaddubsw sums u8 x i8 pairs in int16: 7-bit weights only). The verifier checks constant
#: weights against it.
INT8_DOTS = {"vnni512": (16, 4, "u8", 128), "vnni256": (8, 4, "u8", 128), "avx512-ubsw": (16, 4, "u8", 64),
             "avx2-ubsw": (8, 4, "u8", 64), "avx2": (8, 2, "u8", 128), "sdot": (4, 4, "i8", 128),
             "vnni512-dw": (16, 4, "u8", 128), "sdot-dw": (4, 4, "i8", 128)}
#: the ones a depthwise conv names: ``lanes`` channels (the NCHW<lanes>c block), each summing ``group`` neighbouring
#: window taps along a row (the weight's width a multiple of ``group``: ``depthwise_int8_taps``)
DEPTHWISE_INT8_DOTS = {"vnni512-dw", "sdot-dw"}


def largest_magnitude(w) -> int:
    """max |w| of an integer weight, without the widened copy ``abs`` would need (|-128| does not fit in i8)."""
    return max(int(w.max(initial=0)), -int(w.min(initial=0)))


def check_int8_dot(op: str, attrs, x: TensorType, w: TensorType, tile: tuple[int, int]) -> None:
    """An ``int8_dot`` attribute (if set) names a known instruction whose tiles are the weight layout's ``tile``
    (lanes, group), on activations of its dtype and i8 weights."""
    name = attrs.get("int8_dot", "")
    if not name:
        return
    if name not in INT8_DOTS:
        raise OpError(f"{op}: unknown int8_dot {name!r}; known: {', '.join(INT8_DOTS)}")
    if name in DEPTHWISE_INT8_DOTS:
        raise OpError(f"{op}: int8_dot {name!r} is for depthwise convs")
    lanes, group, x_dtype, _ = INT8_DOTS[name]
    if tile != (lanes, group) or x.dtype != x_dtype or w.dtype != "i8":
        raise OpError(f"{op}: int8_dot {name!r} reads {x_dtype} activations and i8 weights in [{lanes}, {group}] "
                      f"tiles; got {x.dtype} x {w.dtype}, weight_layout {attrs.get('weight_layout')!r}")
