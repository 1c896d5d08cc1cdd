"""TE rules for convolutions, pooling, resize and pad (NCHW; conv2d and window pools also NCHW<b>c)."""

from __future__ import annotations

import tvm
from tvm import te

from ...ir.ops.layout import BLOCKED, data_layout, layout_block
from ...ir.ops.nn import adaptive_bounds, conv_weight_block, conv_weight_group, nearest_rule, resize_scale
from .. import nan_math
from . import rule
from ._te import const, narrow, round_half_even, tvm_dtype, widen


def pad_nchw(x, pads, extra, value, name="pad"):
    """Zero/constant padding of H and W (axes 2, 3 of NCHW or NCHW<b>c): pads=[top, left, bottom, right]
    plus extra bottom/right rows."""
    t, l, b, r = pads
    eb, er = extra
    if not any((t, l, b + eb, r + er)):
        return x
    H, W = int(x.shape[2]), int(x.shape[3])
    shape = (x.shape[0], x.shape[1], H + t + b + eb, W + l + r + er, *x.shape[4:])

    def body(n, c, h, w, *rest):
        inside = tvm.tirx.all(h >= t, h < t + H, w >= l, w < l + W)
        return tvm.tirx.if_then_else(inside, x[(n, c, h - t, w - l, *rest)], value)

    return te.compute(shape, body, name=name)


@rule("layout_transform")
def layout_transform(ins, attrs, out, op):
    x = ins[0]
    b = layout_block(attrs["dst_layout"])
    if b:
        return te.compute(tuple(out.shape), lambda n, c, h, w, i: x[n, c * b + i, h, w], name="to_blocked")
    b = int(x.shape[4])
    return te.compute(tuple(out.shape), lambda n, c, h, w: x[n, c // b, h, w, c % b], name="to_plain")


def _conv2d_blocked(x, w, attrs, out):
    """NCHW<b>c conv: x [N, C/b, H, W, b], packed w [O/v, C/groups, KH, KW, v] -> [N, O/v, OH, OW, v].

    The reduction axes are the input-channel blocks, the window, then the channels of a block (contiguous in x); a
    depthwise conv's loops are (n, k, h, w, v, ry, rx), the order ``schedule_int8``'s window-tap kernel splits.
    The CPU schedules put a block's channels (or its groups of g, for int8 dot products) outside the window, the
    order the packed weight is stored in, so a kernel reads it as one stream (``schedule_cpu``, ``schedule_int8``)."""
    (sh, sw), (dh, dw) = attrs["stride"], attrs["dilation"]
    KH, KW = int(w.shape[2]), int(w.shape[3])
    xp = pad_nchw(x, attrs["padding"], (0, 0), const(0, x.dtype))
    ry, rx = te.reduce_axis((0, KH), "ry"), te.reduce_axis((0, KW), "rx")
    acc = widen(x.dtype)
    if attrs["groups"] != 1:  # depthwise: output channel block k is input channel block k
        def depthwise(n, k, h, wi, v):
            return te.sum(acc(xp[n, k, h * sh + ry * dh, wi * sw + rx * dw, v]) * acc(w[k, 0, ry, rx, v]),
                          axis=[ry, rx])

        return te.compute(tuple(out.shape), depthwise, name="conv2d")
    b = int(x.shape[4])
    grp = conv_weight_group(attrs)
    if grp:  # int8 tiles [O/v, C/g, KH, KW, v, g]: the g channels of one input pixel meet one [v, g] tile
        rco, rcq, r4 = te.reduce_axis((0, int(x.shape[1])), "rco"), te.reduce_axis((0, b // grp), "rcq"), \
            te.reduce_axis((0, grp), "r4")

        def grouped(n, k, h, wi, v):
            return te.sum(acc(xp[n, rco, h * sh + ry * dh, wi * sw + rx * dw, rcq * grp + r4])
                          * acc(w[k, rco * (b // grp) + rcq, ry, rx, v, r4]), axis=[rco, ry, rx, rcq, r4])

        return te.compute(tuple(out.shape), grouped, name="conv2d")
    Cg = int(w.shape[1])
    rco, rci = te.reduce_axis((0, Cg // b), "rco"), te.reduce_axis((0, b), "rci")

    def body(n, k, h, wi, v):
        return te.sum(xp[n, rco, h * sh + ry * dh, wi * sw + rx * dw, rci] * w[k, rco * b + rci, ry, rx, v],
                      axis=[rco, ry, rx, rci])

    return te.compute(tuple(out.shape), body, name="conv2d")


@rule("conv2d")
def conv2d(ins, attrs, out, op):
    x, w = ins[0], ins[1]
    (sh, sw), (dh, dw), g = attrs["stride"], attrs["dilation"], attrs["groups"]
    block = conv_weight_block(attrs)
    if data_layout(attrs) == BLOCKED:
        return _bias(_conv2d_blocked(x, w, attrs, out), ins, block)
    grp = conv_weight_group(attrs)
    if grp:  # int8 tiles [O/v, I/g, KH, KW, v, g]
        Cg, KH, KW, O = int(w.shape[1]) * grp, int(w.shape[2]), int(w.shape[3]), int(out.shape[1])

        def weight(k, c, y, x_):
            return w[k // block, c // grp, y, x_, k % block, c % grp]
    elif block:  # packed [O/v, I, KH, KW, v]: w[k, c, y, x] is w[k // v, c, y, x, k % v]
        _, Cg, KH, KW, _ = (int(d) for d in w.shape)
        O = int(out.shape[1])

        def weight(k, c, y, x_):
            return w[k // block, c, y, x_, k % block]
    else:
        O, Cg, KH, KW = (int(d) for d in w.shape)

        def weight(k, c, y, x_):
            return w[k, c, y, x_]
    Og = O // g
    xp = pad_nchw(x, attrs["padding"], (0, 0), const(0, x.dtype))
    rc, ry, rx = te.reduce_axis((0, Cg), "rc"), te.reduce_axis((0, KH), "ry"), te.reduce_axis((0, KW), "rx")

    acc = widen(x.dtype)

    def body(n, k, h, wi):
        c = rc if g == 1 else (k // Og) * Cg + rc
        return te.sum(acc(xp[n, c, h * sh + ry * dh, wi * sw + rx * dw]) * acc(weight(k, rc, ry, rx)),
                      axis=[rc, ry, rx])

    return narrow(_bias(te.compute(tuple(out.shape), body, name="conv2d"), ins), tvm_dtype(out.dtype))


def _bias(y, ins, block=0):
    """``y`` plus the bias ``ins[2]``, if any, in ``y``'s dtype (f16 layers add it to their f32 sum)."""
    if len(ins) < 3:
        return y
    b = ins[2]
    acc = widen(b.dtype) if y.dtype != b.dtype else (lambda e: e)
    if block:
        return te.compute(y.shape, lambda n, k, h, w, v: y[n, k, h, w, v] + acc(b[k * block + v]), name="bias")
    return te.compute(y.shape, lambda n, k, h, w: y[n, k, h, w] + acc(b[k]), name="bias")


@rule("conv_transpose2d")
def conv_transpose2d(ins, attrs, out, op):
    x, w = ins[0], ins[1]
    s, p, d, g = attrs["stride"], attrs["padding"], attrs["dilation"], attrs["groups"]
    Cin, Og, KH, KW = (int(v) for v in w.shape)
    Cg = Cin // g
    H, W = int(x.shape[2]), int(x.shape[3])
    OH, OW = int(out.shape[2]), int(out.shape[3])
    # conv of the zero-upsampled input, padded by d*(k-1)-p, with the flipped kernel
    pt, pl = d[0] * (KH - 1) - p[0], d[1] * (KW - 1) - p[1]
    span_h, span_w = OH + d[0] * (KH - 1), OW + d[1] * (KW - 1)

    def up(n, c, h, wi):
        hh, ww = h - pt, wi - pl
        ok = tvm.tirx.all(hh >= 0, ww >= 0, hh % s[0] == 0, ww % s[1] == 0,
                          hh // s[0] < H, ww // s[1] < W)
        return tvm.tirx.if_then_else(ok, x[n, c, tvm.tirx.max(hh, 0) // s[0], tvm.tirx.max(ww, 0) // s[1]],
                                     const(0, x.dtype))

    xu = te.compute((x.shape[0], Cin, span_h, span_w), up, name="upsample_pad")
    rc, ry, rx = te.reduce_axis((0, Cg), "rc"), te.reduce_axis((0, KH), "ry"), te.reduce_axis((0, KW), "rx")

    acc = widen(x.dtype)

    def body(n, k, h, wi):
        c = (k // Og) * Cg + rc
        return te.sum(acc(xu[n, c, h + ry * d[0], wi + rx * d[1]]) * acc(w[c, k % Og, KH - 1 - ry, KW - 1 - rx]),
                      axis=[rc, ry, rx])

    return narrow(_bias(te.compute(tuple(out.shape), body, name="conv_transpose2d"), ins), x.dtype)


def _pool_extra(x, out, k, s, d, pads):
    need = [(int(out.shape[2 + i]) - 1) * s[i] + d[i] * (k[i] - 1) + 1 for i in (0, 1)]
    have = [int(x.shape[2]) + pads[0] + pads[2], int(x.shape[3]) + pads[1] + pads[3]]
    return [max(0, need[i] - have[i]) for i in (0, 1)]


@rule("max_pool2d")
def max_pool2d(ins, attrs, out, op):
    x = ins[0]
    k, s, d, p = attrs["kernel"], attrs["stride"], attrs["dilation"], attrs["padding"]
    xp = pad_nchw(x, p, _pool_extra(x, out, k, s, d, p), nan_math.lowest(x.dtype))  # -inf: torch's padding
    ry, rx = te.reduce_axis((0, k[0]), "ry"), te.reduce_axis((0, k[1]), "rx")
    return te.compute(tuple(out.shape), lambda n, c, h, w, *v: nan_math.max_reduce(
        xp[(n, c, h * s[0] + ry * d[0], w * s[1] + rx * d[1], *v)], axis=[ry, rx]), name="max_pool2d")


@rule("avg_pool2d")
def avg_pool2d(ins, attrs, out, op):
    x = ins[0]
    k, s, p = attrs["kernel"], attrs["stride"], attrs["padding"]
    H, W = int(x.shape[2]), int(x.shape[3])
    xp = pad_nchw(x, p, _pool_extra(x, out, k, s, [1, 1], p), const(0, x.dtype))
    ry, rx = te.reduce_axis((0, k[0]), "ry"), te.reduce_axis((0, k[1]), "rx")
    total = te.compute(tuple(out.shape), lambda n, c, h, w, *v: te.sum(
        xp[(n, c, h * s[0] + ry, w * s[1] + rx, *v)], axis=[ry, rx]), name="pool_sum")

    def divisor(h, w):  # torch's rule, see ir/ops/nn.py
        if attrs["divisor_override"]:
            return const(float(attrs["divisor_override"]), x.dtype)
        h0, w0 = h * s[0] - p[0], w * s[1] - p[1]
        h1, w1 = te.min(h0 + k[0], H + p[2]), te.min(w0 + k[1], W + p[3])
        if not attrs["count_include_pad"]:
            h0, w0, h1, w1 = te.max(h0, 0), te.max(w0, 0), te.min(h1, H), te.min(w1, W)
        return ((h1 - h0) * (w1 - w0)).astype(x.dtype)

    return te.compute(tuple(out.shape), lambda n, c, h, w, *v: total[(n, c, h, w, *v)] / divisor(h, w),
                      name="avg_pool2d")


@rule("adaptive_avg_pool2d")
def adaptive_avg_pool2d(ins, attrs, out, op):
    x = ins[0]
    H, W = int(x.shape[2]), int(x.shape[3])
    oh, ow = attrs["output_size"]
    bh, bw = adaptive_bounds(H, oh), adaptive_bounds(W, ow)
    kh, kw = max(b - a for a, b in bh), max(b - a for a, b in bw)
    ry, rx = te.reduce_axis((0, kh), "ry"), te.reduce_axis((0, kw), "rx")

    def start(i, size, out_size):
        return (i * size) // out_size

    def end(i, size, out_size):
        return ((i + 1) * size + out_size - 1) // out_size

    def body(n, c, i, j):
        h0, w0 = start(i, H, oh), start(j, W, ow)
        ok = tvm.tirx.all(h0 + ry < end(i, H, oh), w0 + rx < end(j, W, ow))
        return te.sum(tvm.tirx.if_then_else(ok, x[n, c, te.min(h0 + ry, H - 1), te.min(w0 + rx, W - 1)],
                                            const(0, x.dtype)), axis=[ry, rx])

    total = te.compute(tuple(out.shape), body, name="adaptive_sum")
    return te.compute(tuple(out.shape), lambda n, c, i, j: total[n, c, i, j] / (
        (end(i, H, oh) - start(i, H, oh)) * (end(j, W, ow) - start(j, W, ow))).astype(x.dtype),
        name="adaptive_avg_pool2d")


@rule("resize2d")
def resize2d(ins, attrs, out, op):
    x = ins[0]
    H, W = int(x.shape[2]), int(x.shape[3])
    OH, OW = attrs["size"]
    scales = attrs["scales"] or [None, None]
    st = [resize_scale(n, o, sc, attrs["align_corners"]) for n, o, sc in zip((H, W), (OH, OW), scales)]
    if attrs["mode"] == "nearest":
        rules = [nearest_rule(n, o, sc) for n, o, sc in zip((H, W), (OH, OW), scales)]

        def source(i, n_in, rule):  # torch's pick, in its float32 arithmetic (ir.ops.nn.nearest_rule)
            how, step = rule
            if how == "copy":
                return i
            if how == "half":
                return tvm.tirx.floordiv(i, 2)  # i >> 1 (i >= 0)
            return te.min(te.floor(i.astype("float32") * const(step, "float32")).astype("int32"), n_in - 1)

        return te.compute(tuple(out.shape), lambda n, c, h, w: x[n, c, source(h, H, rules[0]), source(w, W, rules[1])],
                          name="resize_nearest")

    def src(i, step):
        f = i.astype("float32")
        if attrs["align_corners"]:
            return f * const(step, "float32")
        return te.max((f + const(0.5, "float32")) * const(step, "float32") - const(0.5, "float32"),
                      const(0.0, "float32"))

    def taps(i, n_in, n_out, step):
        """(i0, i1, weight of i1) along one axis; an axis that keeps its size is copied, as torch does."""
        if n_in == n_out:
            return i, None, None
        s = src(i, step)
        i0 = te.min(te.floor(s).astype("int32"), n_in - 1)
        return i0, te.min(i0 + 1, n_in - 1), (s - i0.astype("float32")).astype(x.dtype)

    def lerp(a, b, t):
        return a if t is None else a * (const(1, x.dtype) - t) + b * t

    def bilinear(n, c, h, w):
        h0, h1, lh = taps(h, H, OH, st[0])
        w0, w1, lw = taps(w, W, OW, st[1])
        top = lerp(x[n, c, h0, w0], None if lw is None else x[n, c, h0, w1], lw)
        if lh is None:
            return top
        return lerp(top, lerp(x[n, c, h1, w0], None if lw is None else x[n, c, h1, w1], lw), lh)

    return te.compute(tuple(out.shape), bilinear, name="resize_bilinear")


@rule("grid_sample")
def grid_sample(ins, attrs, out, op):
    """torch's F.grid_sample, in float32 as its CPU kernel (``ir.ops.nn.grid_source`` is the reference's)."""
    x, grid = ins
    H, W = int(x.shape[2]), int(x.shape[3])
    f32 = "float32"

    def f(v):
        return const(float(v), f32)

    def source(c, size):
        c = c.astype(f32)
        p = (c + f(1)) * f((size - 1) / 2) if attrs["align_corners"] else (c + f(1)) * f(size / 2) - f(0.5)
        if attrs["padding_mode"] == "reflection":
            low, high = (0, 2 * (size - 1)) if attrs["align_corners"] else (-1, 2 * size - 1)
            if low == high:
                p = f(0)
            else:
                lo, span = low / 2, (high - low) / 2
                d = te.abs(p - f(lo))
                flips = te.floor(d / f(span))
                extra = d - flips * f(span)  # (no fmodf: WGSL has none)
                even = flips - f(2) * te.floor(flips / f(2)) == f(0)
                p = tvm.tirx.Select(even, extra + f(lo), f(span) - extra + f(lo))
        if attrs["padding_mode"] in ("border", "reflection"):
            p = te.min(te.max(p, f(0)), f(size - 1))
        return p

    def read(n, c, yy, xx):  # 0 outside the input
        inside = tvm.tirx.all(yy >= 0, yy < H, xx >= 0, xx < W)
        v = x[n, c, te.min(te.max(yy, 0), H - 1), te.min(te.max(xx, 0), W - 1)].astype(f32)
        return tvm.tirx.Select(inside, v, f(0))

    def body(n, c, h, w):
        ix, iy = source(grid[n, h, w, 0], W), source(grid[n, h, w, 1], H)
        if attrs["mode"] == "nearest":
            return read(n, c, round_half_even(iy).astype("int32"), round_half_even(ix).astype("int32")).astype(x.dtype)
        x0, y0 = te.floor(ix), te.floor(iy)
        wx, wy = ix - x0, iy - y0
        xi, yi = x0.astype("int32"), y0.astype("int32")
        top = read(n, c, yi, xi) * (f(1) - wx) + read(n, c, yi, xi + 1) * wx
        bottom = read(n, c, yi + 1, xi) * (f(1) - wx) + read(n, c, yi + 1, xi + 1) * wx
        return (top * (f(1) - wy) + bottom * wy).astype(x.dtype)

    return te.compute(tuple(out.shape), body, name="grid_sample")


@rule("pad")
def pad(ins, attrs, out, op):
    x = ins[0]
    p, v = attrs["pads"], attrs["value"]

    def value(channel):
        if not isinstance(v, list):
            return const(v, x.dtype)
        out = const(v[-1], x.dtype)  # one value per channel: a select chain, one select per channel
        for c in range(len(v) - 2, -1, -1):
            out = tvm.tirx.Select(channel == c, const(v[c], x.dtype), out)
        return out

    def body(*idx):
        src = [i - p[2 * a] for a, i in enumerate(idx)]
        ok = tvm.tirx.all(*[tvm.tirx.all(s >= 0, s < int(x.shape[a])) for a, s in enumerate(src)])
        clamped = [te.min(te.max(s, 0), int(x.shape[a]) - 1) for a, s in enumerate(src)]
        return tvm.tirx.if_then_else(ok, x(*clamped), value(idx[1] if len(idx) > 1 else 0))

    return te.compute(tuple(out.shape), body, name="pad")
