"""fold_requantize: an integer kernel's float epilogue (dequantize, bias, ReLU / clamp, quantize) as one requantize.

After ``fold_quantized`` an integer layer's i32 sums go through four elementwise ops to become the next layer's u8
input: ``q = sat(rint(clamp((acc - zp) * s + b, lo, hi) * (1 / s_out)) + z_out)``. Folding the constants gives one
multiply-add per channel and an integer clamp, as integer runtimes requantize::

    q = clamp(rint((acc - zp) * m + c), qlo, qhi)     m = s / s_out,  c = b / s_out + z_out
                                                      qlo = max(0, rint(lo * (1 / s_out)) + z_out), qhi likewise (u8)

(rint is monotonic, so the activation's clamp commutes with it and becomes the integer bounds). The kernel's
epilogue loses the division by ``s_out`` (``vdivps``) and the float clamps: 8 vector instructions per 16 outputs
instead of 13. The zero point stays an i32 subtracted from the sums, as in dequantize: folded into ``c`` it
would be a large float cancelling a large product, off by ~1% of a level (EfficientNet-Lite0 lost 2 of 160 crops'
top-1 that way). The result differs from the unfolded chain only where a value lies within float rounding of a
half-way point between two levels.

Requires: ``integer_kernels`` (``fold_quantized``), ``unfused``; runs after the layout passes (its constants take
the blocked shapes the chain's had). Guarantees: ``requantize_folded``. Folds only chains whose constants are
known (a per-row scale computed at run time, ``int8-dynamic``, stays), whose intermediate values have no other
reader and are no graph output, and whose quantize has one scale and zero point, or one per channel (a conv's or a
linear layer's input, ``quantize_static``) where the clamp is the same levels in every channel (a ReLU's 0 is each
channel's zero point, 0 for u8; a ReLU6's 6 lies at or above each channel's top level). The output's meaning is kept
in ``requantize``'s ``scale`` / ``zero_point`` attributes for ``compare`` (lists, in channel order, when per
channel).

Before:
    %acc: i32[1,4,56,56,16] = conv2d(%x_q, %w_q) {...}
    %dq: f32[1,4,56,56,16] = dequantize(%acc, %s, %zp)          # s, zp: [1,4,1,1,16]
    %b1: f32[1,4,56,56,16] = add(%dq, %b)                       # b: [1,4,1,1,16]
    %r: f32[1,4,56,56,16] = clamp(%b1) {"min": 0.0, "max": 6.0}
    %q: u8[1,4,56,56,16] = quantize(%r, 0.0235, 0) {"dtype": "u8"}
After:
    %acc: i32[1,4,56,56,16] = conv2d(%x_q, %w_q) {...}
    %q: u8[1,4,56,56,16] = requantize(%acc, %m, %c, %zp) {"dtype": "u8", "min": 0, "max": 200, "scale": 0.0235, ...}
"""

from __future__ import annotations

import math

import numpy as np

from edgeopt.ir import Graph, Node, Value
from edgeopt.ir.ops.quant import QRANGE, one_value_per_element
from edgeopt.pipeline import Pass, register_pass
from edgeopt.quant.calibrate import channel_axis


def _sole_reader(g: Graph, users: dict, v: Value, reader: Node) -> bool:
    return users.get(v, []) == [reader] and v not in g.outputs


def _bounds(n: Node) -> tuple[float, float]:
    if n.op == "relu":
        return 0.0, math.inf
    lo, hi = n.attrs.get("min"), n.attrs.get("max")
    return (-math.inf if lo is None else float(lo)), (math.inf if hi is None else float(hi))


def _chain(g: Graph, users: dict, q: Node):
    """(dequantize, bias add or None, activation or None) that ``q`` ends, or None."""
    if q.attrs["group_size"] or not all(g.is_const(p) and _per_channel_or_one(p, q) for p in q.inputs[1:]):
        return None
    n, act, bias = q, None, None
    prev = n.inputs[0].producer
    if prev is not None and prev.op in ("relu", "clamp") and _sole_reader(g, users, prev.outputs[0], n):
        act, n, prev = prev, prev, prev.inputs[0].producer
    if prev is not None and prev.op == "add" and _sole_reader(g, users, prev.outputs[0], n) \
            and sum(g.is_const(v) for v in prev.inputs) == 1 and prev.outputs[0].type.shape == q.outputs[0].type.shape:
        bias, n, prev = prev, prev, next(v for v in prev.inputs if not g.is_const(v)).producer
    if prev is None or prev.op != "dequantize" or not _sole_reader(g, users, prev.outputs[0], n) \
            or prev.outputs[0].type.shape != q.outputs[0].type.shape:
        return None
    dq = prev
    if not one_value_per_element(dq.attrs) or dq.inputs[0].type.dtype != "i32" \
            or not all(g.is_const(p) for p in dq.inputs[1:]):
        return None
    return dq, bias, act


def _per_channel_or_one(p: Value, q: Node) -> bool:
    """Whether quantize parameter ``p`` is one value, or one per channel of ``q``'s output (``channel_axis``: axis 1
    of NCHW, the last of rank 2 and 3; or axes 1 and 4 of a blocked NCHW<b>c value: [1, C/b, 1, 1, b])."""
    out = q.outputs[0].type
    if p.type.numel == 1:
        return True
    channel_axes = (1, 4) if out.rank == 5 else (channel_axis(out.rank),)
    if p.type.rank != out.rank or channel_axes == (None,):
        return False
    return all(d == 1 or (i in channel_axes and d == out.shape[i]) for i, d in enumerate(p.type.shape))


def _level_bounds(act: Node | None, s_out: np.ndarray, z_out: np.ndarray, dtype: str) -> tuple[int, int] | None:
    """The integer bounds of the requantized values: the type's, narrowed by the activation's bounds as levels (as
    quantize would round them); None when they differ between channels (one scale and zero point per channel)."""
    qlo, qhi = QRANGE[dtype]
    lo, hi = np.full(s_out.shape, qlo), np.full(s_out.shape, qhi)
    if act is not None:
        a, b = _bounds(act)
        inverse = np.float32(1) / s_out.astype(np.float32)
        if a > -math.inf:
            lo = np.clip(np.rint(np.float32(a) * inverse).astype(np.int64) + z_out, qlo, qhi)
        if b < math.inf:
            hi = np.clip(np.rint(np.float32(b) * inverse).astype(np.int64) + z_out, qlo, qhi)
        lo = np.minimum(lo, hi)  # a clamp whose min lies above its max gives its max, as np.clip does
    if (lo != lo.reshape(-1)[0]).any() or (hi != hi.reshape(-1)[0]).any():
        return None
    return int(lo.reshape(-1)[0]), int(hi.reshape(-1)[0])


@register_pass
class FoldRequantize(Pass):
    name = "fold_requantize"
    requires = ("integer_kernels", "unfused")
    guarantees = ("requantize_folded",)

    def run(self, g: Graph) -> dict:
        users = g.users()
        folded = 0
        for q in [n for n in g.nodes if n.op == "quantize"]:
            found = _chain(g, users, q)
            if found is not None and self._fold(g, q, *found):
                folded += 1
        g.remove_dead_nodes()
        g.remove_unused_constants()
        return {"folded": folded}

    def _fold(self, g: Graph, q: Node, dq: Node, bias: Node | None, act: Node | None) -> bool:
        s = g.const(dq.inputs[1]).astype(np.float64)
        offset, zero_point = np.zeros((), np.float64), None
        if len(dq.inputs) == 3 and dq.inputs[2].type.dtype == "f32":  # a minimum: x = q * s + min
            offset = g.const(dq.inputs[2]).astype(np.float64)
        elif len(dq.inputs) == 3:  # subtracted from the sums in integers, as dequantize does
            zero_point = dq.inputs[2] if dq.inputs[2].type.dtype == "i32" else \
                g.add_const(g.const(dq.inputs[2]).astype(np.int32), f"{dq.inputs[2].name}_i32")
        if bias is not None:
            offset = offset + g.const(next(v for v in bias.inputs if g.is_const(v))).astype(np.float64)
        s_out = g.const(q.inputs[1]).astype(np.float64)
        z_out = g.const(q.inputs[2]).astype(np.int64) if len(q.inputs) == 3 else np.zeros((), np.int64)
        bounds = _level_bounds(act, s_out, z_out, q.attrs["dtype"])
        if bounds is None:
            return False
        lo, hi = bounds
        rank = q.outputs[0].type.rank
        mult = _params(s / s_out, rank)
        off = _params(offset / s_out + z_out, rank)
        old = q.outputs[0]
        params = [g.add_const(mult, f"{old.name}_mult"), g.add_const(off, f"{old.name}_off")]
        new = g.add("requantize", [dq.inputs[0], *params, *([zero_point] if zero_point is not None else [])],
                    {"dtype": q.attrs["dtype"], "min": lo, "max": hi, "scale": _attr(s_out, float),
                     "zero_point": _attr(z_out, int),
                     "storage": q.attrs.get("storage")},
                    source=q.source, name=f"{old.name}_rq", index=g.nodes.index(q))
        new.name, old.name = old.name, new.name  # the value keeps its name (``compare`` reads "<name>_q" as <name>)
        g.replace_uses(old, new)
        return True


def _attr(a: np.ndarray, kind):
    """A scale or zero point as an attribute: one number, or one per channel in channel order."""
    return kind(a.reshape(-1)[0]) if a.size == 1 else [kind(x) for x in a.reshape(-1)]


def _params(a: np.ndarray, rank: int) -> np.ndarray:
    """A f32 constant of the output's rank (1s where it is the same along an axis)."""
    a = np.asarray(a, np.float32)
    return np.ascontiguousarray(a.reshape((1,) * (rank - a.ndim) + a.shape))
