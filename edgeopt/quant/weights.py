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
#: the largest level of 7-bit weights (``QuantConfig.reduce_range``): AVX2's ``vpmaddubsw`` sums two u8 x level
#: products in int16 without saturating (255 * 64 * 2 = 32 640 < 32 767)
REDUCED_QMAX = 64


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


def symmetric_int8(w: np.ndarray, axes: tuple[int, ...] | None, scale=None,
                   qmax: int = 127) -> tuple[np.ndarray, np.ndarray]:
    """(q int8, scale f32) with ``|w|``'s max over ``axes`` (None: the whole tensor) mapped to ``qmax`` (127, or
    ``REDUCED_QMAX`` for 7-bit weights), or with the ``scale`` given (one per output channel, learned by
    quantization-aware training); levels within [-qmax, qmax]."""
    if scale is not None:
        keep = [1 if axes is None or i in axes else d for i, d in enumerate(w.shape)]
        scale = np.asarray(scale, np.float32).reshape(keep)
        if axes is None and scale.size != 1:
            raise ValueError("a per-tensor weight takes one learned scale")
        q = np.clip(np.rint(w * (np.float32(1) / scale)), -qmax, qmax).astype(np.int8)  # as QAT's fake_quant rounds
        return q, scale if axes is not None else scale.reshape(())
    amax = np.abs(w).max(axis=axes, keepdims=axes is not None)
    scale = np.where(amax > _TINY, amax / float(qmax), 1.0).astype(np.float32)
    q = np.clip(np.rint(w / scale), -qmax, qmax).astype(np.int8)
    return q, scale if axes is not None else scale.reshape(())


def weight_qmax(reduce_range, target) -> int:
    """The largest int8 weight level for integer kernels on ``target`` (``QuantConfig.reduce_range``): "auto" gives
    ``REDUCED_QMAX`` where the target's best int8 dot product is exact only for 7-bit weights (AVX2 without VNNI:
    ``vpmaddubsw``, twice the speed of the exact ``vpmaddwd`` path), else 127; True: ``REDUCED_QMAX``; False: 127."""
    if reduce_range != "auto":
        return REDUCED_QMAX if reduce_range else 127
    dots = target.int8_dots() if target is not None else []
    if not dots:
        return 127
    from ..lower.int8_dot import weight_limit

    return min(127, weight_limit(dots[0][0]))


def affine_groups(w: np.ndarray, group_axis: int, group_size: int, bits: int) -> tuple[np.ndarray, ...]:
    """Asymmetric ``bits``-bit codes with one (scale, minimum) per ``group_size`` elements along ``group_axis``:
    ``w ~ q * scale + minimum``, q in 0..2^bits-1, each group's minimum and maximum hit exactly (llama.cpp's Q4_1
    form: weights that came from such blocks come back exactly).

    Returns (codes: u8, two per byte along ``group_axis`` for 4 bits; scale f32; minimum f32), the last two shaped
    like ``w`` with ``group_axis`` divided by ``group_size``."""
    ax = group_axis % w.ndim
    levels = (1 << bits) - 1
    shape = w.shape[:ax] + (w.shape[ax] // group_size, group_size) + w.shape[ax + 1:]
    grouped = w.reshape(shape)
    lo = grouped.min(axis=ax + 1).astype(np.float32)
    hi = grouped.max(axis=ax + 1).astype(np.float32)
    scale = np.where(hi - lo > _TINY, (hi - lo) / levels, 1.0).astype(np.float32)
    full_lo = np.repeat(lo, group_size, axis=ax)
    full_scale = np.repeat(scale, group_size, axis=ax)
    q = np.clip(np.rint((w - full_lo) / full_scale), 0, levels).astype(np.uint8)
    return (pack_int4(q, ax) if bits == 4 else q), scale, lo


def symmetric_groups(w: np.ndarray, group_axis: int, group_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 with one scale per ``group_size`` elements along ``group_axis``: ``w ~ q * scale``, each
    group's largest magnitude at 127 (GGUF's Q8_0 form: weights that came from such blocks come back exactly)."""
    ax = group_axis % w.ndim
    shape = w.shape[:ax] + (w.shape[ax] // group_size, group_size) + w.shape[ax + 1:]
    q, scale = symmetric_int8(w.reshape(shape), (ax + 1,))
    return q.reshape(w.shape), scale.reshape(scale.shape[:ax + 1] + scale.shape[ax + 2:])


def best_int8_groups(w: np.ndarray, group_axis: int, group_size: int) -> tuple:
    """Per-group int8, symmetric (``symmetric_groups``) or with a minimum (``affine_groups``), whichever
    reproduces ``w`` with the smaller squared error: (codes, scale, minimum or None)."""
    from ..ir.ops.quant import expand_params

    def error(q, scale, lo):
        attrs = {"group_size": group_size, "group_axis": group_axis}
        back = q.astype(np.float32) * expand_params(scale, w.shape, attrs)
        if lo is not None:
            back = back + expand_params(lo, w.shape, attrs)
        return float(np.square(back - w).sum())

    sym = (*symmetric_groups(w, group_axis, group_size), None)
    aff = affine_groups(w, group_axis, group_size, 8)
    return sym if error(*sym) <= error(*aff) else aff


def int4_group_axis(n: Node, w: np.ndarray) -> int:
    """The axis int4 groups run along: the weight's reduction (input) axis, so one scale serves a few
    consecutive terms of each dot product."""
    return reduce_axes(n, w)[0]


def input_shaped(steps: np.ndarray, w: np.ndarray, n: Node) -> np.ndarray:
    """``steps`` (one per input channel) shaped to broadcast along the input axis of layer ``n``'s weight ``w`` (the
    first axis one output channel's scale covers: a conv's 1, a linear layer's 1 or, for [in, out], 0)."""
    axis = reduce_axes(n, w)[0]
    return steps.reshape(tuple(-1 if i == axis else 1 for i in range(w.ndim)))


def times_input_steps(w: np.ndarray, steps: np.ndarray, n: Node) -> np.ndarray:
    """Layer ``n``'s weight ``w`` (a conv's OIHW, a linear layer's [out, in] or [in, out]) with each input channel
    scaled by its step: ``conv(x / step, w * step) == conv(x, w)``."""
    return (w * input_shaped(steps, w, n)).astype(np.float32)


def out_in(w: np.ndarray, n: Node) -> np.ndarray:
    """Layer ``n``'s weight with its output channels first (a linear layer's [in, out] weight transposed)."""
    return w.T if reduce_axes(n, w)[0] == 0 else w
