"""3-d convolutions, pools and resizes (video and volumetric models) written with the IR's 2-d ops.

A 3-d window slides along depth as well as height and width. Every 2-d op already slides it over height and
width, so each 3-d op is its 2-d op on the depth slices folded into the batch (a conv) or the channels (a pool,
a resize), and a sum, max or mean over the window's depth taps::

    conv3d(x, w)[:, :, d]     = sum_t conv2d(xp[:, :, d*s + t*dil], w[:, :, t])     xp: x padded along depth
    conv_transpose3d          = sum_t conv_transpose2d(x, w[:, :, t]), input depth i moved to i*s + t*dil - p
    max_pool3d(x)[:, :, d]    = max_t max_pool2d(xp[:, :, d*s + t*dil])             (padded with -inf)
    avg_pool3d(x)[:, :, d]    = sum_t avg_pool2d(xp[:, :, d*s + t]) / count(d)       (torch's divisor per axis)
    adaptive_avg_pool3d       = the 2-d pool, then each depth window's mean
    trilinear / nearest 3-d   = resize2d, then the depth axis read at torch's source indices (and blended)

So the kernels, the layouts, the int8 paths and every target the 2-d ops have serve the 3-d ones: a conv3d
with a kd-deep window is kd conv2d layers over (batch x output depth) images, each adding into the last one's
result (the add fuses into the next conv's epilogue). Depth taps that only ever read padding are left out.

Each function takes the converter's context (``ctx.add(op, inputs, attrs)``, ``ctx.g``), IR values and the
op's arguments per axis, depth first, as torch and ONNX give them; ``pads`` are (front, back) along depth.
"""

from __future__ import annotations

import numpy as np

from ..ir.ops.nn import adaptive_bounds, linear_source, nearest_source, windows_along
from ..ir_dtypes import extremes


def _taps(size: int, k: int, s: int, p0: int, p1: int, dil: int, ceil_mode: bool = False):
    """Output depth, the padding that the windows reach past the input (front, back), and the window taps that
    read the input for at least one output (the others read padding only)."""
    out, back = windows_along(size, k, s, p0, p1, dil, ceil_mode)
    taps = [t for t in range(k) if any(0 <= t * dil + j * s - p0 < size for j in range(out))]
    return out, (p0, back), taps or [0]


def _depth_slices(ctx, x, axis: int, out: int, pads, taps, s: int, dil: int, fill: float):
    """x padded along ``axis`` by ``pads`` with ``fill``, then for each tap the ``out`` positions it reads."""
    if any(pads):
        widths = [0] * (2 * x.type.rank)
        widths[2 * axis], widths[2 * axis + 1] = pads
        x = ctx.add("pad", [x], {"pads": widths, "value": fill})
    return [ctx.add("slice", [x], {"axis": axis, "start": t * dil, "end": t * dil + (out - 1) * s + 1, "step": s})
            for t in taps]


def _reshape(ctx, x, shape):
    return x if list(x.type.shape) == list(shape) else ctx.add("reshape", [x], {"shape": list(shape)})


def _hw_pads(pads) -> list[int]:
    """(front, top, left, back, bottom, right) -> the 2-d ops' [top, left, bottom, right]."""
    return [pads[1], pads[2], pads[4], pads[5]]


def _fold_depth(ctx, x):
    """[N, C, D, H, W] -> [N, C*D, H, W] (free: the depth slices become channels)."""
    n, c, d, h, w = x.type.shape
    return _reshape(ctx, x, [n, c * d, h, w])


def conv3d(ctx, x, w, bias, stride, pads, dilation, groups: int):
    """``x`` [N, C, D, H, W] by ``w`` [O, C/groups, kd, kh, kw]; ``pads`` = (front, top, left, back, bottom,
    right). Each tap's slice is padded, sliced and moved depth-major on its own (no value shared between taps), so
    the whole chain joins its conv kernel's prologue (``fuse_epilogue``): the kernel's layout transform reads the
    tap's depth slices from ``x`` itself, with no slice stored between kernels."""
    n, c, d, h, wd = x.type.shape
    o, cg, kd, kh, kw = w.type.shape
    s, dil = stride[0], dilation[0]
    out, _, taps = _taps(d, kd, s, pads[0], pads[3], dil)
    attrs = {"stride": list(stride[1:]), "padding": _hw_pads(pads), "dilation": list(dilation[1:]),
             "groups": int(groups)}
    y = None
    for t in taps:
        first = t * dil - pads[0]  # the input depth that output 0 reads at this tap
        front, back = max(0, -first), max(0, first + (out - 1) * s - (d - 1))
        xt = ctx.add("pad", [x], {"pads": [0, 0, 0, 0, front, back, 0, 0, 0, 0], "value": 0.0}) \
            if front or back else x
        xt = ctx.add("slice", [xt], {"axis": 2, "start": first + front, "end": first + front + (out - 1) * s + 1,
                                     "step": s})
        xt = _reshape(ctx, ctx.add("transpose", [xt], {"perm": [0, 2, 1, 3, 4]}), [n * out, c, h, wd])
        wt = _reshape(ctx, ctx.add("slice", [w], {"axis": 2, "start": t, "end": t + 1}), [o, cg, kh, kw])
        yt = ctx.add("conv2d", [xt, wt] + ([bias] if bias is not None and y is None else []), attrs)
        y = yt if y is None else ctx.add("add", [yt, y])
    _, _, oh, ow = y.type.shape
    return ctx.add("transpose", [_reshape(ctx, y, [n, out, o, oh, ow])], {"perm": [0, 2, 1, 3, 4]})


def conv_transpose3d(ctx, x, w, bias, stride, padding, output_padding, dilation, groups: int):
    """``x`` [N, C, D, H, W] by ``w`` [C, O/groups, kd, kh, kw] (torch's ``padding``, ``output_padding`` per axis).
    Each depth tap's conv_transpose2d over the (batch x input depth) images lands at output depths
    ``i * s + t * dil - p``: its results are spread ``s`` apart (zeros between), shifted and summed."""
    n, c, d, h, wd = x.type.shape
    _, og, kd, kh, kw = w.type.shape
    s, p, dil = stride[0], padding[0], dilation[0]
    out = (d - 1) * s - 2 * p + dil * (kd - 1) + output_padding[0] + 1
    flat = _reshape(ctx, ctx.add("transpose", [x], {"perm": [0, 2, 1, 3, 4]}), [n * d, c, h, wd])
    attrs = {"stride": list(stride[1:]), "padding": list(padding[1:]), "output_padding": list(output_padding[1:]),
             "dilation": list(dilation[1:]), "groups": int(groups)}
    y = None
    for t in range(kd):
        shift = t * dil - p  # input depth i lands at output depth i * s + shift
        if not any(0 <= i * s + shift < out for i in range(d)):
            continue
        wt = _reshape(ctx, ctx.add("slice", [w], {"axis": 2, "start": t, "end": t + 1}), [c, og, kh, kw])
        z = ctx.add("conv_transpose2d", [flat, wt], attrs)
        o, oh, ow = z.type.shape[1:]
        z = _reshape(ctx, z, [n, d, 1, o, oh, ow])
        if s > 1:  # input depth i at position i * s, zeros between
            z = ctx.add("pad", [z], {"pads": [0, 0, 0, 0, 0, s - 1, 0, 0, 0, 0, 0, 0], "value": 0.0})
        z = _reshape(ctx, z, [n, d * s, o, oh, ow])
        if shift < 0:
            z = ctx.add("slice", [z], {"axis": 1, "start": -shift, "end": d * s})
        length = z.type.shape[1]
        front = max(shift, 0)
        if front + length > out:
            z = ctx.add("slice", [z], {"axis": 1, "start": 0, "end": out - front})
        pads = [0] * 10
        pads[2], pads[3] = front, out - front - z.type.shape[1]
        if any(pads):
            z = ctx.add("pad", [z], {"pads": pads, "value": 0.0})
        y = z if y is None else ctx.add("add", [y, z])
    if y is None:  # the padding crops every tap's results: the output is the bias alone
        oh, ow = ((size - 1) * st - 2 * pa + di * (k - 1) + op + 1 for size, st, pa, di, k, op in
                  zip((h, wd), stride[1:], padding[1:], dilation[1:], (kh, kw), output_padding[1:]))
        zero = ctx.g.add_const(np.zeros((1, 1, 1, 1, 1), x.type.np_dtype), "zeros")
        y = ctx.add("broadcast_to", [zero], {"shape": [n, out, og * groups, oh, ow]})
    y = ctx.add("transpose", [y], {"perm": [0, 2, 1, 3, 4]})
    if bias is None:
        return y
    return ctx.add("add", [y, _reshape(ctx, bias, [bias.type.shape[0], 1, 1, 1])])


def max_pool3d(ctx, x, kernel, stride, pads, dilation, ceil_mode: bool):
    """``pads`` = (front, top, left, back, bottom, right); padding never wins, as in torch."""
    n, c, d, h, w = x.type.shape
    y = ctx.add("max_pool2d", [_fold_depth(ctx, x)],
                {"kernel": list(kernel[1:]), "stride": list(stride[1:]), "padding": _hw_pads(pads),
                 "dilation": list(dilation[1:]), "ceil_mode": bool(ceil_mode)})
    y = _reshape(ctx, y, [n, c, d, *y.type.shape[2:]])
    out, dpads, taps = _taps(d, kernel[0], stride[0], pads[0], pads[3], dilation[0], ceil_mode)
    slices = _depth_slices(ctx, y, 2, out, dpads, taps, stride[0], dilation[0], float(extremes(x.type.dtype)[0]))
    result = slices[0]
    for sl in slices[1:]:
        result = ctx.add("maximum", [result, sl])
    return result


def avg_pool3d(ctx, x, kernel, stride, pads, ceil_mode: bool, count_include_pad: bool, divisor_override=None):
    """torch's divisor: the window clipped to the padded input (``count_include_pad``) or to the input, per axis,
    or ``divisor_override``."""
    n, c, d, h, w = x.type.shape
    y = ctx.add("avg_pool2d", [_fold_depth(ctx, x)],
                {"kernel": list(kernel[1:]), "stride": list(stride[1:]), "padding": _hw_pads(pads),
                 "ceil_mode": bool(ceil_mode), "count_include_pad": bool(count_include_pad),
                 "divisor_override": divisor_override})
    y = _reshape(ctx, y, [n, c, d, *y.type.shape[2:]])
    k, s, front = kernel[0], stride[0], pads[0]
    out, dpads, taps = _taps(d, k, s, front, pads[3], 1, ceil_mode)
    slices = _depth_slices(ctx, y, 2, out, dpads, taps, s, 1, 0.0)
    total = slices[0]
    for sl in slices[1:]:
        total = ctx.add("add", [total, sl])
    if divisor_override:  # the 2-d pool divided the window's sum by it already
        return total
    starts = np.arange(out) * s - front
    ends = np.minimum(starts + k, d + pads[3])
    counts = ends - starts if count_include_pad else np.minimum(ends, d) - np.maximum(starts, 0)
    divisor = ctx.g.add_const(counts.astype(y.type.np_dtype).reshape(1, 1, out, 1, 1), "depth_count")
    return ctx.add("div", [total, divisor])


def adaptive_avg_pool3d(ctx, x, size):
    """torch's adaptive windows along each axis (``size`` entries of None keep the axis)."""
    n, c, d, h, w = x.type.shape
    od, oh, ow = (dim if s is None else int(s) for s, dim in zip(size, (d, h, w)))
    if (od, oh, ow) == (1, 1, 1):
        return ctx.add("mean", [x], {"axes": [2, 3, 4], "keepdims": True})
    y = _fold_depth(ctx, x)
    if (oh, ow) == (1, 1):
        y = ctx.add("mean", [y], {"axes": [2, 3], "keepdims": True})
    elif (oh, ow) != (h, w):
        y = ctx.add("adaptive_avg_pool2d", [y], {"output_size": [oh, ow]})
    y = _reshape(ctx, y, [n, c, d, oh, ow])
    if od == d:
        return y
    if d % od == 0:  # equal windows: one mean over a split axis
        return ctx.add("mean", [_reshape(ctx, y, [n, c, od, d // od, oh, ow])], {"axes": [3]})
    parts = [ctx.add("mean", [ctx.add("slice", [y], {"axis": 2, "start": a, "end": b})],
                     {"axes": [2], "keepdims": True}) for a, b in adaptive_bounds(d, od)]
    return ctx.add("concat", parts, {"axis": 2})


def resize3d(ctx, x, size, mode: str, align_corners: bool = False, scales=None):
    """torch's ``upsample_trilinear3d`` (``mode="linear"``) and ``upsample_nearest3d`` (``"nearest"``) to ``size``
    (depth, height, width); ``scales``: the scale factors the user gave, if any (they set the source indices)."""
    n, c, d, h, w = x.type.shape
    od, oh, ow = (int(s) for s in size)
    scales = list(scales) if scales else [None, None, None]
    y = _fold_depth(ctx, x)
    if (oh, ow) != (h, w) or mode == "linear":
        y = ctx.add("resize2d", [y], {"size": [oh, ow], "mode": "bilinear" if mode == "linear" else "nearest",
                                      "align_corners": bool(align_corners) if mode == "linear" else False,
                                      "scales": [float(s) if s else None for s in scales[1:]]
                                      if any(scales[1:]) else None})
    y = _reshape(ctx, y, [n, c, d, oh, ow])
    if mode == "nearest":
        src = nearest_source(d, od, scales[0])
        return y if np.array_equal(src, np.arange(d)) else _take_depth(ctx, y, src)
    i0, i1, lam = linear_source(d, od, scales[0], bool(align_corners))
    if not lam.any():
        return y if np.array_equal(i0, np.arange(d)) else _take_depth(ctx, y, i0)
    dt = y.type.np_dtype
    shape = (1, 1, od, 1, 1)
    w0 = ctx.g.add_const((1 - lam).astype(dt).reshape(shape), "depth_w0")
    w1 = ctx.g.add_const(lam.astype(dt).reshape(shape), "depth_w1")
    blend = [ctx.add("mul", [_take_depth(ctx, y, i), wi]) for i, wi in ((i0, w0), (i1, w1))]
    return ctx.add("add", blend)


def _take_depth(ctx, y, idx: np.ndarray):
    return ctx.add("take", [y, ctx.g.add_const(idx.astype(np.int64), "depth_index")], {"axis": 2})
