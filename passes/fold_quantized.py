"""fold_quantized: turn each quantize/dequantize sandwich around a conv or linear layer into an integer kernel.

``quantize_static`` leaves every layer reading ``dequantize(x_q)`` and ``dequantize(w_q)``: an exact description
of an int8 layer, computed in float. This pass computes it in integers. With the activation's scale ``sx`` and
zero point ``zx`` and the weight's per-channel scales ``sw[o]`` (symmetric)::

    y[o] = sum_k sx (x_q[k] - zx) * sw[o] w_q[o, k] + b[o]
         = (sx sw[o]) * (sum_k x_q[k] w_q[o, k]  -  zx * sum_k w_q[o, k]) + b[o]

so the layer becomes an integer conv / linear on the u8 activation and the i8 weight, summed exactly in i32,
followed by ``dequantize(acc, sx * sw, zx * colsum(w_q))`` and the bias add: the requantization, which
``fuse_epilogue`` puts in the kernel's epilogue together with the activation function and the next layer's
``quantize``, so the kernel reads u8, multiplies in integers and writes u8. A padded conv whose input zero point is
not 0 pads with ``zx`` (an explicit ``pad`` the conv kernel takes as its prologue), so the padding stays 0.

A conv reading 8-bit pixels in units of their steps (``dequantize(x_q, 1, minimum)``: x = q + min[c], one minimum
per channel, ``quantize_static``) sums ``x_q * w_q`` the same way; the minimums' share, ``sw[o] * sum_c min[c] *
colsum(w_q)[o, c]``, joins the bias, and the padding is each channel's level of 0, ``rint(-min[c])`` (the border
half a level off at most).

A linear layer whose input has one scale per row, computed at run time (``quantize_dynamic``), becomes the same
integer layer followed by ``dequantize(acc, row_scales, zx * colsum(w_q))`` and a product with the weight scales.

A depthwise conv reads one input channel per output channel, so its input may have a scale and zero point per
channel (``quantize_static``'s per-channel conv inputs): ``sx[c] * sw[c]`` is still one scale per output channel,
the zero points' share ``zx[c] * colsum(w_q)[c]`` one integer per output channel, and the padding each channel's
``zx[c]``. A dense conv may read one scale with a zero point per channel (``quantize_static`` moved each channel's
share of the scale into the weight): the zero points' share is ``sum_c zx[c] * sum_hw w_q[o, c]`` per output. So
may a linear layer reading rank-2 or rank-3 values, with a zero point per feature (the last axis): ``sum_c zx[c] *
w_q[o, c]``.

Requires: ``quantized`` (``quantize_static``'s or ``quantize_dynamic``'s sandwiches, weights still in their plain
layouts), ``unfused``. Guarantees: ``integer_kernels``. Other sandwiches (a dense layer reading per-channel
activation scales, which would have to multiply inside its sums) are left as they are.

Before:
    %x_q: u8[1,16] = quantize(%x, 0.05, 3) {"dtype": "u8"}
    %x_dq: f32[1,16] = dequantize(%x_q, 0.05, 3)
    %w_dq: f32[8,16] = dequantize(%w_q, %w_scale)
    %y: f32[1,8] = linear(%x_dq, %w_dq, %b) {"weight_layout": "oi"}
After:
    %x_q: u8[1,16] = quantize(%x, 0.05, 3) {"dtype": "u8"}
    %y_acc: i32[1,8] = linear(%x_q, %w_q) {"weight_layout": "oi"}
    %y_dq: f32[1,8] = dequantize(%y_acc, %y_scale, %y_zp)      # y_scale = 0.05 * w_scale, y_zp = 3 * colsum(w_q)
    %y: f32[1,8] = add(%y_dq, %b)
"""

from __future__ import annotations

import numpy as np

from edgeopt.ir import Graph, Node, Value
from edgeopt.ir.ops.nn import is_depthwise
from edgeopt.ir.ops.quant import one_value_per_element
from edgeopt.pipeline import Pass, register_pass
from edgeopt.quant.calibrate import channel_axis


def _activation_dequantize(g: Graph, v: Value) -> Node | None:
    """The dequantize of an activation with one zero point, and one scale (a constant) or one per row (computed at
    run time, shaped [..., rows, 1]: ``quantize_dynamic``); or a constant scale and zero point per channel (axis 1 of
    NCHW values, the last of rank-2 and rank-3 ones: ``_per_channel``)."""
    n = v.producer
    if n is None or n.op != "dequantize" or not one_value_per_element(n.attrs) or g.is_const(n.inputs[0]):
        return None
    scale, zp = n.inputs[1], n.inputs[2] if len(n.inputs) == 3 else None
    if zp is not None and g.is_const(zp) and zp.type.dtype == "f32":  # a minimum per channel: pixels in steps
        return n if g.is_const(scale) and scale.type.numel == 1 and (zp.type.numel == 1 or _channel_shaped(zp, v)) \
            else None
    if _per_channel(g, n):
        return n
    if zp is not None and not (g.is_const(zp) and zp.type.numel == 1):
        return None
    if g.is_const(scale):
        return n if scale.type.numel == 1 else None
    t = scale.type
    return n if t.rank == v.type.rank and t.shape[-1] == 1 and t.shape[:-1] == v.type.shape[:-1] else None


def _channel_shaped(p: Value, v: Value) -> bool:
    """Whether parameter ``p`` holds one value per channel of ``v`` (``channel_axis``: [1, C, 1, 1] for NCHW,
    [1, 1, C] for features)."""
    axis = channel_axis(v.type.rank)
    return axis is not None and p.type.rank == v.type.rank and p.type.numel > 1 \
        and all(d == 1 for i, d in enumerate(p.type.shape) if i != axis)


def _per_channel(g: Graph, dq: Node) -> bool:
    """Whether activation dequantize ``dq`` has a constant scale or integer zero point per channel
    (``quantize_static``'s per-channel conv inputs and per-feature linear inputs); a depthwise conv folds both, a
    dense conv or linear layer a zero point per channel under one scale."""
    v, params = dq.outputs[0], dq.inputs[1:]
    return all(g.is_const(p) for p in params) and params[0].type.dtype == "f32" \
        and any(_channel_shaped(p, v) for p in params) \
        and all(p.type.numel == 1 or _channel_shaped(p, v) for p in params) \
        and all(p.type.dtype != "f32" for p in params[1:])


def _minimum(g: Graph, dq: Node) -> np.ndarray | None:
    """The f32 minimum of ``dequantize(q, scale, minimum)`` (q * scale + minimum), flattened, or None."""
    if len(dq.inputs) == 3 and dq.inputs[2].type.dtype == "f32":
        return g.const(dq.inputs[2]).reshape(-1)
    return None


def _dequantize_of(g: Graph, v: Value, const_q: bool) -> Node | None:
    n = v.producer
    if n is None or n.op != "dequantize" or not one_value_per_element(n.attrs):
        return None
    if not all(g.is_const(p) for p in n.inputs[1:]) or (const_q != g.is_const(n.inputs[0])):
        return None
    return n


def _input_sums(w: np.ndarray, n: Node) -> np.ndarray:
    """[out, in]: the sum of weight ``w``'s levels over everything but its output and input channels (a conv's taps;
    a linear layer's weight as it is, or transposed from [in, out])."""
    w = w.astype(np.int64)
    if n.op == "conv2d":
        return w.sum(axis=(2, 3))
    return w if n.attrs["weight_layout"] == "oi" else w.T


@register_pass
class FoldQuantized(Pass):
    name = "fold_quantized"
    requires = ("quantized", "unfused")
    guarantees = ("integer_kernels",)

    def run(self, g: Graph) -> dict:
        folded = 0
        for n in list(g.nodes):
            if n.op not in ("conv2d", "linear") or not self._foldable(g, n):
                continue
            self._fold(g, n)
            folded += 1
        g.remove_dead_nodes()
        g.remove_unused_constants()
        return {"integer_layers": folded}

    def _foldable(self, g: Graph, n: Node) -> bool:
        x, w = _activation_dequantize(g, n.inputs[0]), _dequantize_of(g, n.inputs[1], True)
        if x is None or w is None or x.inputs[0].type.dtype not in ("u8", "i8") or w.inputs[0].type.dtype != "i8":
            return False
        if len(w.inputs) == 3 and g.const(w.inputs[2]).any():
            return False
        if not g.is_const(x.inputs[1]) and n.op != "linear":  # per-row run-time scales: linear layers only
            return False
        if _minimum(g, x) is not None and (n.op != "conv2d" or n.attrs["groups"] != 1):  # dense convs only
            return False
        if _per_channel(g, x) and not is_depthwise(n) and (x.inputs[1].type.numel != 1 or (
                n.attrs["groups"] != 1 if n.op == "conv2d" else x.inputs[0].type.rank == 4)):
            return False  # a dense layer would need the scales inside its sums (a grouped conv: not handled)
        if len(n.inputs) == 3 and not g.is_const(n.inputs[2]):
            return False
        if n.op == "conv2d":
            return n.attrs["layout"] == "NCHW" and n.attrs["weight_layout"] == "OIHW"
        return n.attrs["weight_layout"] in ("oi", "io")

    def _fold(self, g: Graph, n: Node) -> None:
        xd, wd = n.inputs[0].producer, n.inputs[1].producer
        xq, wq = xd.inputs[0], wd.inputs[0]
        rows = None if g.is_const(xd.inputs[1]) else xd.inputs[1]  # per-row scales, computed at run time
        minimum = _minimum(g, xd)
        if _per_channel(g, xd):  # a zero point per input channel; a depthwise conv's scales too (channel c is output
            c = xq.type.shape[channel_axis(xq.type.rank)]  # channel c's only input)
            sx = np.broadcast_to(g.const(xd.inputs[1]).reshape(-1), (c,)).astype(np.float64)
            sx = sx[0] if not is_depthwise(n) else sx
            zx = np.broadcast_to(g.const(xd.inputs[2]).reshape(-1), (c,)).astype(np.int64) \
                if len(xd.inputs) == 3 else np.zeros(c, np.int64)
        else:
            sx = 1.0 if rows is not None else float(g.const(xd.inputs[1]).reshape(()))
            zx = int(g.const(xd.inputs[2]).reshape(())) if len(xd.inputs) == 3 and minimum is None else 0
        w = g.const(wq)
        if n.op == "conv2d":
            out_axis, sum_axes, shape = 0, (1, 2, 3), (-1, 1, 1)
        else:
            oi = n.attrs["weight_layout"] == "oi"
            out_axis, sum_axes, shape = (0, (1,), (-1,)) if oi else (1, (0,), (-1,))
        sw = np.broadcast_to(g.const(wd.inputs[1]), w.shape)
        sw = np.moveaxis(sw, out_axis, 0).reshape(w.shape[out_axis], -1)[:, 0]
        colsum = w.astype(np.int64).sum(axis=sum_axes)
        at, attrs, src, out = g.nodes.index(n), dict(n.attrs), n.source, n.outputs[0]
        x_in, bias_extra = xq, None
        pad_value = zx if np.ndim(zx) == 0 else int(zx[0]) if (zx == zx[0]).all() else [int(z) for z in zx]
        if minimum is not None:  # x = q * sx + min[c]: the min's share is a constant per output channel
            mins = np.broadcast_to(minimum, (w.shape[1],)).astype(np.float64)
            bias_extra = sw * (w.astype(np.float64).sum(axis=(2, 3)) @ mins)
            lo, hi = (0, 255) if xq.type.dtype == "u8" else (-128, 127)
            levels = np.clip(np.rint(-mins / sx), lo, hi).astype(int)  # x = 0 (the lattice keeps it on the grid)
            pad_value = int(levels[0]) if (levels == levels[0]).all() else [int(q) for q in levels]
        if n.op == "conv2d" and pad_value != 0 and any(attrs["padding"]):
            t, left, b, r = attrs["padding"]
            x_in = g.add("pad", [xq], {"pads": [0, 0, 0, 0, t, b, left, r], "value": pad_value}, source=src,
                         name=f"{xq.name}_pad", index=at)
            attrs["padding"], at = [0, 0, 0, 0], at + 1
        acc = g.add(n.op, [x_in, wq], attrs, source=src, name=f"{out.name}_acc", index=at)
        scale = g.add_const((sx * sw).astype(np.float32).reshape(shape), f"{out.name}_scale")
        params = [rows if rows is not None else scale]
        if np.any(zx):
            zsum = zx * colsum if np.ndim(zx) == 0 or is_depthwise(n) else _input_sums(w, n) @ zx
            params.append(g.add_const(zsum.astype(np.int32).reshape(shape), f"{out.name}_zp"))
        y = g.add("dequantize", [acc, *params], source=src, name=f"{out.name}_dq", index=at + 1)
        at += 2
        if rows is not None:  # (row scale x column scale) as two products: the row's, then the weight's
            y = g.add("mul", [y, scale], source=src, name=f"{out.name}_wscale", index=at)
            at += 1
        biases = [g.const(n.inputs[2])] if len(n.inputs) == 3 else []
        if bias_extra is not None:
            biases.append(bias_extra)
        if biases:
            b = sum(np.asarray(a, np.float64) for a in biases).astype(np.float32).reshape(shape)
            name = n.inputs[2].name if len(n.inputs) == 3 else out.name
            y = g.add("add", [y, g.add_const(b, f"{name}_b")], source=src, name=f"{out.name}_bias", index=at)
        g.replace_uses(out, y)
        g.nodes.remove(n)
