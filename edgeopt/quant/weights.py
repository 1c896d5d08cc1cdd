"""Weight quantization shared by the passes: which axis of a weight holds its output channels, and the
symmetric int8 / group-wise int4 encodings (numpy, at compile time).

Every encoder returns the stored arrays and the scale (and zero point) already shaped to broadcast against
the weight, as the ``dequantize`` op reads them (see ``edgeopt/ir/ops/quant.py``).
"""

from __future__ import annotations

import numpy as np

from ..ir import Graph, Node
from ..ir.ops.linalg import linear_weight_block
from ..ir.ops.quant import pack_int4

#: a scale this small means an all-zero channel: store zeros with scale 1 (never divide by 0)
_TINY = 1e-30


def weight_input(g: Graph, n: Node) -> int | None:
    """The index of ``n``'s constant weight input that quantization may convert, or None."""
    if n.op in ("conv2d", "linear", "matmul") and len(n.inputs) > 1 and g.is_const(n.inputs[1]):
        return 1 if g.const(n.inputs[1]).dtype == np.float32 else None
    if n.op == "take" and n.attrs["axis"] == 0 and g.is_const(n.inputs[0]) and g.const(n.inputs[0]).ndim == 2:
        return 0 if g.const(n.inputs[0]).dtype == np.float32 else None
    return None


def reduce_axes(n: Node, w: np.ndarray) -> tuple[int, ...]:
    """Axes of ``n``'s weight ``w`` that one per-output-channel scale covers (all but the output-channel axes)."""
    if n.op == "conv2d":  # OIHW or packed OIHW<v>o: output channels on axis 0 (and the last, packed)
        return (1, 2, 3)
    if n.op == "linear":
        if linear_weight_block(n.attrs):  # [out/v, in, v]
            return (1,)
        return (1,) if n.attrs["weight_layout"] == "oi" else (0,)
    if n.op == "matmul":  # [..., K, N]: one scale per column
        return (w.ndim - 2,)
    return (1,)  # take: an embedding table [V, D], one scale per row


def symmetric_int8(w: np.ndarray, axes: tuple[int, ...] | None) -> tuple[np.ndarray, np.ndarray]:
    """(q int8, scale f32) with ``|w|``'s max over ``axes`` (None: the whole tensor) mapped to 127."""
    amax = np.abs(w).max(axis=axes, keepdims=axes is not None)
    scale = np.where(amax > _TINY, amax / 127.0, 1.0).astype(np.float32)
    q = np.clip(np.rint(w / scale), -127, 127).astype(np.int8)
    return q, scale if axes is not None else scale.reshape(())


def int4_groups(w: np.ndarray, group_axis: int, group_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Asymmetric int4 with one (scale, zero point) per ``group_size`` elements along ``group_axis``.

    Returns (nibbles packed two per byte along ``group_axis``, scale f32, zero point u8), the last two shaped
    like ``w`` with ``group_axis`` divided by ``group_size``."""
    ax = group_axis % w.ndim
    shape = w.shape[:ax] + (w.shape[ax] // group_size, group_size) + w.shape[ax + 1:]
    grouped = w.reshape(shape)
    lo = np.minimum(grouped.min(axis=ax + 1), 0.0)
    hi = np.maximum(grouped.max(axis=ax + 1), 0.0)
    scale = np.where(hi - lo > _TINY, (hi - lo) / 15.0, 1.0).astype(np.float32)
    zp = np.clip(np.rint(-lo / scale), 0, 15).astype(np.uint8)
    full_scale = np.repeat(scale, group_size, axis=ax)
    full_zp = np.repeat(zp, group_size, axis=ax).astype(np.float32)
    nibbles = np.clip(np.rint(w / full_scale) + full_zp, 0, 15).astype(np.uint8)
    return pack_int4(nibbles, ax), scale, zp


def int4_group_axis(n: Node, w: np.ndarray) -> int:
    """The axis int4 groups run along: the weight's reduction (input) axis, so one scale serves a few
    consecutive terms of each dot product."""
    return reduce_axes(n, w)[0]
