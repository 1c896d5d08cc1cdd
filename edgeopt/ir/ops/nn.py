"""Neural-network ops on NCHW tensors: conv2d, conv_transpose2d, pooling, batch_norm, resize2d, grid_sample, pad."""

from __future__ import annotations

import math
import re

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ..registry import OPTIONAL, REQUIRED, OpDef, OpError, register
from ..types import TensorType
from ._common import DEPTHWISE_INT8_DOTS, INT8_DOTS, check_int8_dot, contraction_dtype, need_float, same_dtype
from .layout import BLOCKED, PLAIN, block_nchw, blocked_type, data_layout, plain_type, unblock_nchw


def out_dim(size, k, s, p0, p1, d, ceil_mode=False):
    eff = d * (k - 1) + 1
    num = size + p0 + p1 - eff
    if num < 0 and not ceil_mode:  # ceil mode, as torch: one window, over the part of it that the input covers
        raise OpError(f"window {eff} larger than padded input {size + p0 + p1}")
    out = (math.ceil(num / s) if ceil_mode else num // s) + 1
    if ceil_mode and (out - 1) * s >= size + p0:  # last window must start inside the input or left padding
        out -= 1
    return out


def windows_along(size, k, s, p0, p1, d, ceil_mode=False) -> tuple[int, int]:
    """Along one axis: the number of windows, and how far past the input's end (before ``p1``) the last one
    reaches (>= 0: ceil mode's last window may reach past the padding)."""
    out = out_dim(size, k, s, p0, p1, d, ceil_mode)
    return out, max(0, (out - 1) * s + d * (k - 1) + 1 - (size + p0))


def _windows(x, k, s, d, pads, fill, ceil_mode=False):
    """[N, C, OH, OW, KH, KW] windows of x padded with ``fill`` (extra right/bottom fill for ceil mode)."""
    n, c, h, w = x.shape
    oh = out_dim(h, k[0], s[0], pads[0], pads[2], d[0], ceil_mode)
    ow = out_dim(w, k[1], s[1], pads[1], pads[3], d[1], ceil_mode)
    need_h = (oh - 1) * s[0] + d[0] * (k[0] - 1) + 1
    need_w = (ow - 1) * s[1] + d[1] * (k[1] - 1) + 1
    extra_h = max(0, need_h - (h + pads[0] + pads[2]))
    extra_w = max(0, need_w - (w + pads[1] + pads[3]))
    xp = np.pad(x, ((0, 0), (0, 0), (pads[0], pads[2] + extra_h), (pads[1], pads[3] + extra_w)),
                constant_values=fill)
    eff = (d[0] * (k[0] - 1) + 1, d[1] * (k[1] - 1) + 1)
    win = sliding_window_view(xp, eff, axis=(2, 3))
    return win[:, :, : (oh - 1) * s[0] + 1 : s[0], : (ow - 1) * s[1] + 1 : s[1], :: d[0], :: d[1]]


_CONV_LAYOUT = re.compile(r"OIHW([1-9][0-9]*)o(?:([1-9][0-9]*)i)?")


def conv_weight_block(attrs) -> int:
    """Output channels per block of a packed conv2d weight (``weight_layout`` "OIHW<v>o" or "OIHW<v>o<g>i"); 0 for
    plain OIHW.

    "OIHW<v>o" is [O/v, I, KH, KW, v]: the ``v`` output channels a kernel computes in one vector are contiguous,
    and one block's weights are one sequential stream. "OIHW<v>o<g>i" is [O/v, I/g, KH, KW, v, g], for int8 dot
    products: each [v, g] tile holds the g consecutive input channels of v output channels that one instruction
    (VNNI's vpdpbusd: v=16, g=4) multiplies and sums."""
    return _conv_layout(attrs)[0]


def conv_weight_group(attrs) -> int:
    """Input channels per group of an "OIHW<v>o<g>i" weight (0 for the other layouts)."""
    return _conv_layout(attrs)[1]


def is_depthwise(n) -> bool:
    """Whether node ``n`` is a depthwise conv: every output channel reads its own input channel (a channel multiplier
    of 1, more than one channel)."""
    return n.op == "conv2d" and n.attrs["groups"] == n.inputs[0].type.shape[1] == n.outputs[0].type.shape[1] > 1


def _conv_layout(attrs) -> tuple[int, int]:
    layout = attrs.get("weight_layout", "OIHW")
    if layout == "OIHW":
        return 0, 0
    m = _CONV_LAYOUT.fullmatch(layout)
    if not m:
        raise OpError(f"conv2d: weight_layout must be 'OIHW', 'OIHW<v>o' or 'OIHW<v>o<g>i' (packed), got {layout!r}")
    return int(m.group(1)), int(m.group(2) or 0)


def pack_conv_weight(w: np.ndarray, block: int, group: int = 0) -> np.ndarray:
    """OIHW -> [O/block, I, KH, KW, block], or with ``group`` -> [O/block, I/group, KH, KW, block, group]."""
    o, i, kh, kw = w.shape
    if group:
        return np.ascontiguousarray(w.reshape(o // block, block, i // group, group, kh, kw).transpose(0, 2, 4, 5, 1, 3))
    return np.ascontiguousarray(w.reshape(o // block, block, i, kh, kw).transpose(0, 2, 3, 4, 1))


def unpack_conv_weight(w: np.ndarray, block: int) -> np.ndarray:
    """The inverse of ``pack_conv_weight``: a packed weight back to OIHW."""
    if w.ndim == 6:
        ob, ig, kh, kw, b, g = w.shape
        return w.transpose(0, 4, 1, 5, 2, 3).reshape(ob * b, ig * g, kh, kw)
    ob, i, kh, kw, b = w.shape
    return w.transpose(0, 4, 1, 2, 3).reshape(ob * b, i, kh, kw)


def _conv_weight_oihw_shape(w: TensorType, attrs) -> tuple:
    block, group = _conv_layout(attrs)
    if not block:
        if w.rank != 4:
            raise OpError("conv2d needs NCHW input and OIHW weight")
        return w.shape
    if group:
        if w.rank != 6 or w.shape[4] != block or w.shape[5] != group:
            raise OpError(f"conv2d: weight_layout {attrs['weight_layout']} needs a [O/{block}, I/{group}, KH, KW, "
                          f"{block}, {group}] weight, got {list(w.shape)}")
        if attrs["groups"] != 1:
            raise OpError("conv2d: a grouped-input weight_layout needs groups=1")
        return (w.shape[0] * block, w.shape[1] * group, *w.shape[2:4])
    if w.rank != 5 or w.shape[4] != block:
        raise OpError(f"conv2d: weight_layout {attrs['weight_layout']} needs a [O/{block}, I, KH, KW, {block}] "
                      f"weight, got {list(w.shape)}")
    out = w.shape[0] * block
    if attrs["groups"] not in (1, out) or (attrs["groups"] == out and w.shape[1] != 1):
        raise OpError("conv2d: a packed weight_layout needs groups=1 or a depthwise conv (groups=out channels)")
    return (out, *w.shape[1:4])


def _plain_input(op: str, x: TensorType, attrs) -> TensorType:
    """The NCHW type of a layout-aware op's input (``layout`` "NCHWc": a blocked [N, C/b, H, W, b])."""
    if data_layout(attrs) == BLOCKED:
        if x.rank != 5:
            raise OpError(f"{op}: layout NCHWc needs a blocked [N, C/b, H, W, b] input, got {list(x.shape)}")
        return plain_type(x)
    if x.rank != 4:
        raise OpError(f"{op} needs an NCHW input, got {list(x.shape)}")
    return x


def _conv_infer(types, attrs):
    x = types[0]
    dtype = contraction_dtype("conv2d", types)
    if dtype != "i32":
        need_float("conv2d", x)
    blocked, block = data_layout(attrs) == BLOCKED, conv_weight_block(attrs)
    if blocked and not block:
        raise OpError("conv2d: layout NCHWc needs a packed weight (weight_layout 'OIHW<v>o')")
    if attrs["groups"] != 1 and attrs.get("int8_dot"):
        _check_depthwise_int8_dot(attrs, x, types[1])
    else:
        check_int8_dot("conv2d", attrs, x, types[1], (conv_weight_block(attrs), conv_weight_group(attrs)))
    x = _plain_input("conv2d", x, attrs)
    w = _conv_weight_oihw_shape(types[1], attrs)
    if blocked and attrs["groups"] != 1 and types[0].shape[4] != block:
        raise OpError("conv2d: a depthwise NCHWc conv needs the input block to equal the weight block")
    group = conv_weight_group(attrs)
    if blocked and group and types[0].shape[4] % group:
        raise OpError(f"conv2d: an NCHWc input block ({types[0].shape[4]}) must hold whole groups of {group} "
                      f"input channels (weight_layout {attrs['weight_layout']})")
    g = attrs["groups"]
    if x.shape[1] != w[1] * g or w[0] % g:
        raise OpError(f"conv2d: channels {x.shape[1]} / weight {list(w)} / groups {g} disagree")
    if len(types) == 3 and types[2].shape != (w[0],):
        raise OpError("conv2d: bias must be [out_channels]")
    s, p, d = attrs["stride"], attrs["padding"], attrs["dilation"]
    oh = out_dim(x.shape[2], w[2], s[0], p[0], p[2], d[0])
    ow = out_dim(x.shape[3], w[3], s[1], p[1], p[3], d[1])
    y = TensorType((x.shape[0], w[0], oh, ow), dtype)
    return [blocked_type(y, block) if blocked else y]


def _check_depthwise_int8_dot(attrs, x: TensorType, w: TensorType) -> None:
    """A depthwise conv's ``int8_dot`` names a depthwise instruction, whose NCHW<lanes>c input and "OIHW<lanes>o"
    weight it has, the weight's width a multiple of the taps the instruction sums."""
    name = attrs["int8_dot"]
    if name not in DEPTHWISE_INT8_DOTS:
        raise OpError(f"conv2d: a depthwise conv's int8_dot must be one of {', '.join(sorted(DEPTHWISE_INT8_DOTS))}, "
                      f"got {name!r}")
    lanes, taps, x_dtype, _ = INT8_DOTS[name]
    if (data_layout(attrs) != BLOCKED or conv_weight_block(attrs) != lanes or conv_weight_group(attrs)
            or w.rank != 5 or w.shape[3] % taps or attrs["dilation"][1] != 1 or x.dtype != x_dtype or w.dtype != "i8"):
        raise OpError(f"conv2d: int8_dot {name!r} reads {x_dtype} NCHW{lanes}c inputs and i8 'OIHW{lanes}o' weights "
                      f"whose width is a multiple of {taps} (dilation 1 along it); got {x.dtype} x {w.dtype} "
                      f"{list(w.shape)}, layout {attrs.get('layout')!r}, weight_layout {attrs.get('weight_layout')!r}, "
                      f"dilation {attrs['dilation']}")


def _on_plain(ref, xs, attrs, block: int) -> list:
    """The reference of a layout-aware op on a blocked input: ``ref`` on the plain tensors, its result blocked
    by ``block`` again."""
    return [block_nchw(ref([unblock_nchw(xs[0]), *xs[1:]], dict(attrs, layout=PLAIN))[0], block)]


def _conv_ref(xs, attrs):
    if data_layout(attrs) == BLOCKED:
        return _on_plain(_conv_ref, xs, attrs, conv_weight_block(attrs))
    x, w = xs[0].astype(np.float64), xs[1].astype(np.float64)
    block = conv_weight_block(attrs)
    if block:
        w = unpack_conv_weight(w, block)
    g = attrs["groups"]
    win = _windows(x, w.shape[2:], attrs["stride"], attrs["dilation"], attrs["padding"], 0.0)
    n, c, oh, ow, kh, kw = win.shape
    win = win.reshape(n, g, c // g, oh, ow, kh, kw)
    wg = w.reshape(g, w.shape[0] // g, c // g, kh, kw)
    y = np.einsum("ngchwrs,gkcrs->ngkhw", win, wg, optimize=True).reshape(n, w.shape[0], oh, ow)
    if len(xs) == 3:
        y = y + xs[2].reshape(1, -1, 1, 1)
    return [y.astype(np.int32 if xs[0].dtype.kind in "iu" else xs[0].dtype)]


_CONV_ATTRS = {"stride": [1, 1], "padding": [0, 0, 0, 0], "dilation": [1, 1], "groups": 1}
register(OpDef("conv2d", "contraction", _conv_infer, _conv_ref,
               dict(_CONV_ATTRS, weight_layout="OIHW", layout="NCHW", int8_dot=OPTIONAL), (2, 3),
               doc="conv2d(x[N,C,H,W], w[O,C/groups,KH,KW] or packed [O/v,C,KH,KW,v] (weight_layout "
                   "'OIHW<v>o'), [b[O]]); padding is [top, left, bottom, right]. layout 'NCHWc': x is "
                   "[N,C/b,H,W,b] and the result [N,O/v,OH,OW,v]. An integer conv in int8 dot-product tiles "
                   "('OIHW<v>o<g>i') may name the instruction that reads them (int8_dot); so may an integer "
                   "depthwise conv on NCHW<v>c whose 'OIHW<v>o' weight is a multiple of 4 taps wide (vnni512-dw, "
                   "sdot-dw)",
               blocked_layout=True))


def _convT_infer(types, attrs):
    x, w = types[0], types[1]
    need_float("conv_transpose2d", x)
    same_dtype("conv_transpose2d", types)
    g = attrs["groups"]
    if x.rank != 4 or w.rank != 4 or x.shape[1] != w.shape[0] or w.shape[0] % g:
        raise OpError(f"conv_transpose2d: input {x.shape} / weight {w.shape} / groups {g} disagree")
    s, p, op, d = attrs["stride"], attrs["padding"], attrs["output_padding"], attrs["dilation"]
    out = [(x.shape[2 + i] - 1) * s[i] - 2 * p[i] + d[i] * (w.shape[2 + i] - 1) + op[i] + 1 for i in (0, 1)]
    if min(out) <= 0:
        raise OpError("conv_transpose2d: empty output")
    return [TensorType((x.shape[0], w.shape[1] * g, out[0], out[1]), x.dtype)]


def _convT_ref(xs, attrs):
    x, w = xs[0].astype(np.float64), xs[1].astype(np.float64)
    s, p, op, d, g = attrs["stride"], attrs["padding"], attrs["output_padding"], attrs["dilation"], attrs["groups"]
    n, c, h, wd = x.shape
    kh, kw = w.shape[2:]
    up = np.zeros((n, c, (h - 1) * s[0] + 1, (wd - 1) * s[1] + 1))
    up[:, :, :: s[0], :: s[1]] = x
    # a transposed conv is a conv of the zero-upsampled input with the flipped, in/out-swapped kernel
    cin_g, cout_g = c // g, w.shape[1]
    wc = w.reshape(g, cin_g, cout_g, kh, kw).transpose(0, 2, 1, 3, 4)[..., ::-1, ::-1]
    wc = wc.reshape(g * cout_g, cin_g, kh, kw)
    pads = [d[0] * (kh - 1) - p[0], d[1] * (kw - 1) - p[1], d[0] * (kh - 1) - p[0] + op[0],
            d[1] * (kw - 1) - p[1] + op[1]]
    crop = [max(0, -q) for q in pads]
    up = up[:, :, crop[0] : up.shape[2] - crop[2], crop[1] : up.shape[3] - crop[3]]
    y = _conv_ref([up, wc], {"stride": [1, 1], "dilation": d, "groups": g,
                             "padding": [max(0, q) for q in pads]})[0]
    if len(xs) == 3:
        y = y + xs[2].reshape(1, -1, 1, 1)
    return [y.astype(np.int32 if xs[0].dtype.kind in "iu" else xs[0].dtype)]


register(OpDef("conv_transpose2d", "contraction", _convT_infer, _convT_ref,
               {"stride": [1, 1], "padding": [0, 0], "output_padding": [0, 0], "dilation": [1, 1],
                "groups": 1}, (2, 3),
               doc="conv_transpose2d(x, w[C_in, O/groups, KH, KW], [b]) with torch's semantics"))


def _pool_infer(types, attrs):
    x = _plain_input("pooling", types[0], attrs)
    k, s, p = attrs["kernel"], attrs["stride"], attrs["padding"]
    d = attrs.get("dilation", [1, 1])
    oh = out_dim(x.shape[2], k[0], s[0], p[0], p[2], d[0], attrs["ceil_mode"])
    ow = out_dim(x.shape[3], k[1], s[1], p[1], p[3], d[1], attrs["ceil_mode"])
    y = TensorType((x.shape[0], x.shape[1], oh, ow), x.dtype)
    return [blocked_type(y, types[0].shape[4]) if data_layout(attrs) == BLOCKED else y]


def _pool_ref(ref):
    """A pool's reference for either layout: blocked inputs are pooled as NCHW and blocked again."""
    def run(xs, a):
        return _on_plain(ref, xs, a, xs[0].shape[4]) if data_layout(a) == BLOCKED else ref(xs, a)
    return run


def _max_pool_ref(xs, a):
    x = xs[0]
    fill = -np.inf if x.dtype.kind == "f" else np.iinfo(x.dtype).min
    win = _windows(x, a["kernel"], a["stride"], a["dilation"], a["padding"], fill, a["ceil_mode"])
    return [win.max(axis=(4, 5)).astype(x.dtype)]


def _avg_pool_ref(xs, a):
    x = xs[0].astype(np.float64)
    k, s, p = a["kernel"], a["stride"], a["padding"]
    win = _windows(x, k, s, [1, 1], p, 0.0, a["ceil_mode"])
    total = win.sum(axis=(4, 5))
    if a["divisor_override"]:
        return [(total / a["divisor_override"]).astype(xs[0].dtype)]
    # torch's divisor: the window clipped to the padded input (count_include_pad) or to the input
    ones = np.zeros((1, 1) + x.shape[2:])
    ones_p = np.pad(ones + 1, ((0, 0), (0, 0), (p[0], p[2]), (p[1], p[3])),
                    constant_values=1.0 if a["count_include_pad"] else 0.0)
    shape_p = (x.shape[2] + p[0] + p[2], x.shape[3] + p[1] + p[3])
    cnt = _windows(ones_p, k, s, [1, 1], [0, 0, 0, 0], 0.0, a["ceil_mode"]).sum(axis=(4, 5))
    cnt = cnt[:, :, : total.shape[2], : total.shape[3]]
    assert cnt.shape[2:] == total.shape[2:], (cnt.shape, total.shape, shape_p)
    return [(total / cnt).astype(xs[0].dtype)]


register(OpDef("max_pool2d", "reduction", _pool_infer, _pool_ref(_max_pool_ref),
               {"kernel": REQUIRED, "stride": REQUIRED, "padding": [0, 0, 0, 0], "dilation": [1, 1],
                "ceil_mode": False, "layout": "NCHW"}, (1, 1), blocked_layout=True,
               doc="max_pool2d(x[N,C,H,W] or blocked NCHW<v>c){kernel, stride, padding=[t,l,b,r], dilation, ceil_mode, "
                   "layout}: the largest of each window; padding never wins; NaN if the window has one"))
register(OpDef("avg_pool2d", "reduction", _pool_infer, _pool_ref(_avg_pool_ref),
               {"kernel": REQUIRED, "stride": REQUIRED, "padding": [0, 0, 0, 0], "ceil_mode": False,
                "count_include_pad": True, "divisor_override": None, "layout": "NCHW"}, (1, 1), blocked_layout=True,
               doc="avg_pool2d(x[N,C,H,W] or blocked NCHW<v>c){kernel, stride, padding, ceil_mode, count_include_pad, "
                   "divisor_override, layout}: the mean of each window, torch's divisor rules"))


def adaptive_bounds(size: int, out: int) -> list[tuple[int, int]]:
    """torch's adaptive pooling windows: [floor(i*size/out), ceil((i+1)*size/out))."""
    return [((i * size) // out, -((-(i + 1) * size) // out)) for i in range(out)]


def _adaptive_infer(types, attrs):
    x = types[0]
    need_float("adaptive_avg_pool2d", x)
    if x.rank != 4:
        raise OpError("adaptive_avg_pool2d needs an NCHW input")
    return [TensorType(x.shape[:2] + tuple(attrs["output_size"]), x.dtype)]


def _adaptive_ref(xs, a):
    x = xs[0].astype(np.float64)
    oh, ow = a["output_size"]
    y = np.zeros(x.shape[:2] + (oh, ow))
    for i, (h0, h1) in enumerate(adaptive_bounds(x.shape[2], oh)):
        for j, (w0, w1) in enumerate(adaptive_bounds(x.shape[3], ow)):
            y[:, :, i, j] = x[:, :, h0:h1, w0:w1].mean(axis=(2, 3))
    return [y.astype(xs[0].dtype)]


register(OpDef("adaptive_avg_pool2d", "reduction", _adaptive_infer, _adaptive_ref,
               {"output_size": REQUIRED}, (1, 1), row_reduction=True,
               doc="adaptive_avg_pool2d(x[N,C,H,W]){output_size=[OH, OW]}: torch's adaptive windows, averaged"))


def _bn_infer(types, attrs):
    x = types[0]
    need_float("batch_norm", x)
    for t in types[1:]:
        if t.shape != (x.shape[1],):
            raise OpError(f"batch_norm: statistics must be [C]={x.shape[1]}, got {t.shape}")
    return [TensorType(x.shape, x.dtype)]


def _bn_ref(xs, a):
    x, mean, var, w, b = (v.astype(np.float64) for v in xs)
    shp = (1, -1) + (1,) * (x.ndim - 2)
    y = (x - mean.reshape(shp)) / np.sqrt(var.reshape(shp) + a["eps"]) * w.reshape(shp) + b.reshape(shp)
    return [y.astype(xs[0].dtype)]


register(OpDef("batch_norm", "elementwise", _bn_infer, _bn_ref, {"eps": 1e-5}, (5, 5),
               doc="batch_norm(x, mean, var, weight, bias): inference-mode BatchNorm over axis 1", pointwise=False,
               fp16="f32"))


def _resize_infer(types, attrs):
    x = types[0]
    need_float("resize2d", x)
    if attrs["mode"] not in ("nearest", "bilinear"):
        raise OpError(f"resize2d: mode {attrs['mode']!r} not supported (nearest, bilinear)")
    return [TensorType(x.shape[:2] + tuple(attrs["size"]), x.dtype)]


def resize_scale(in_size: int, out_size: int, scale_factor, align_corners: bool) -> float:
    """Source-per-destination step, as torch computes it (in float64 here: round it to float32, as torch's float
    kernels do, where the result picks pixels)."""
    if align_corners:
        return (in_size - 1) / (out_size - 1) if out_size > 1 else 0.0
    return 1.0 / scale_factor if scale_factor else in_size / out_size


def nearest_rule(in_size: int, out_size: int, scale_factor) -> tuple[str, float]:
    """How torch's nearest resize picks the source of output ``i`` along one axis: ``("copy", 1)`` (the same size:
    ``i``), ``("half", 0.5)`` (twice the size: ``i >> 1``) or ``("step", s)``: ``min(floor(f32(i) * s), in_size - 1)``
    with ``s`` and the product in float32 (a float64 step picks other pixels where ``i * s`` is near an integer:
    26 -> 22 pixels, output 11)."""
    if out_size == in_size:
        return "copy", 1.0
    if out_size == 2 * in_size:
        return "half", 0.5
    return "step", float(np.float32(resize_scale(in_size, out_size, scale_factor, False)))


def nearest_source(in_size: int, out_size: int, scale_factor) -> np.ndarray:
    """The source index of each output along one axis (``nearest_rule``), as int64."""
    how, step = nearest_rule(in_size, out_size, scale_factor)
    dst = np.arange(out_size, dtype=np.int64)
    if how == "copy":
        return dst
    if how == "half":
        return dst >> 1
    return np.minimum(np.floor(dst.astype(np.float32) * np.float32(step)).astype(np.int64), in_size - 1)


def linear_source(in_size: int, out_size: int, scale_factor, align_corners: bool):
    """torch's linear resize along one axis: for each output, the two source indices and the second one's weight
    (int64, int64, float64); an axis that keeps its size is copied, whatever the scale factor says."""
    if in_size == out_size:
        return np.arange(in_size), np.arange(in_size), np.zeros(in_size)
    st = resize_scale(in_size, out_size, scale_factor, align_corners)
    dst = np.arange(out_size, dtype=np.float64)
    src = dst * st if align_corners else np.maximum((dst + 0.5) * st - 0.5, 0.0)
    i0 = np.minimum(np.floor(src).astype(np.int64), in_size - 1)
    return i0, np.minimum(i0 + 1, in_size - 1), src - i0


def _resize_ref(xs, a):
    x = xs[0].astype(np.float64)
    out = a["size"]
    scales = a["scales"] or [None, None]
    idx = []
    for i, (n_in, n_out) in enumerate(zip(x.shape[2:], out)):
        if a["mode"] == "nearest":
            idx.append(nearest_source(n_in, n_out, scales[i]))
        else:
            idx.append(linear_source(n_in, n_out, scales[i], a["align_corners"]))
    if a["mode"] == "nearest":
        y = x[:, :, idx[0]][:, :, :, idx[1]]
    else:
        (h0, h1, lh), (w0, w1, lw) = idx
        top = x[:, :, h0] * (1 - lh)[:, None] + x[:, :, h1] * lh[:, None]
        y = top[:, :, :, w0] * (1 - lw) + top[:, :, :, w1] * lw
    return [y.astype(xs[0].dtype)]


register(OpDef("resize2d", "injective", _resize_infer, _resize_ref,
               {"size": REQUIRED, "mode": "nearest", "align_corners": False, "scales": None}, (1, 1),
               doc="resize2d(x){size=[OH, OW], mode, align_corners, scales}: torch's upsample semantics"))


GRID_MODES, GRID_PADDINGS = ("bilinear", "nearest"), ("zeros", "border", "reflection")


def _grid_infer(types, attrs):
    x, grid = types
    need_float("grid_sample", x)
    if x.rank != 4 or grid.rank != 4 or grid.shape[3] != 2 or grid.shape[0] != x.shape[0]:
        raise OpError(f"grid_sample: x [N, C, H, W] and grid [N, Ho, Wo, 2], got {x.shape} and {grid.shape}")
    if grid.dtype != x.dtype:
        raise OpError(f"grid_sample: grid is {grid.dtype}, x {x.dtype}")
    if attrs["mode"] not in GRID_MODES or attrs["padding_mode"] not in GRID_PADDINGS:
        raise OpError(f"grid_sample: mode {attrs['mode']!r} / padding_mode {attrs['padding_mode']!r} not supported "
                      f"({GRID_MODES}, {GRID_PADDINGS})")
    return [TensorType((x.shape[0], x.shape[1], grid.shape[1], grid.shape[2]), x.dtype)]


def grid_source(coord: np.ndarray, size: int, padding: str, align_corners: bool) -> np.ndarray:
    """A normalized grid coordinate (-1 .. 1) as a pixel position, as torch's CPU kernel computes it in float32:
    unnormalized, then clipped (border) or reflected and clipped (reflection; the remainder as ``d - floor(d /
    span) * span``, which every target computes, where torch calls fmod: the same but for the last bit)."""
    f = np.float32
    c = coord.astype(f)
    if align_corners:
        x = (c + f(1)) * f((size - 1) / 2)
    else:
        x = (c + f(1)) * f(size / 2) - f(0.5)
    if padding == "reflection":
        low, high = (0, 2 * (size - 1)) if align_corners else (-1, 2 * size - 1)
        if low == high:
            x = np.zeros_like(x)
        else:
            lo, span = f(low / 2), f((high - low) / 2)
            d = np.abs(x - lo)
            flips = np.floor(d / span)
            with np.errstate(invalid="ignore"):  # inf - inf: NaN, then position 0 below
                extra = d - flips * span
                even = flips - f(2) * np.floor(flips / f(2)) == 0
            x = np.where(even, extra + lo, span - extra + lo).astype(f)
    if padding in ("border", "reflection"):
        x = np.clip(np.where(np.isnan(x), f(0), x), f(0), f(size - 1))  # NaN: position 0, as torch (and the kernel)
    return x.astype(f)


def _grid_ref(xs, a):
    x, grid = xs[0].astype(np.float32), xs[1]
    n, c, h, w = x.shape
    ix = grid_source(grid[..., 0], w, a["padding_mode"], a["align_corners"])  # [N, Ho, Wo]
    iy = grid_source(grid[..., 1], h, a["padding_mode"], a["align_corners"])
    batch = np.arange(n)[:, None, None]

    def read(yy, xx):  # [N, C, Ho, Wo]; 0 outside the input
        inside = (yy >= 0) & (yy < h) & (xx >= 0) & (xx < w)
        v = x[batch, :, np.clip(yy, 0, h - 1), np.clip(xx, 0, w - 1)]  # [N, Ho, Wo, C]
        return np.moveaxis(np.where(inside[..., None], v, 0), -1, 1)

    cast = np.errstate(invalid="ignore")  # NaN and inf positions (zeros padding) cast to some int, read as 0
    if a["mode"] == "nearest":
        with cast:
            y = read(np.rint(iy).astype(np.int64), np.rint(ix).astype(np.int64))
    else:
        x0, y0 = np.floor(ix), np.floor(iy)
        with cast:
            wx, wy = (ix - x0)[:, None], (iy - y0)[:, None]  # (NaN weights for inf positions, as torch's)
            x0, y0 = x0.astype(np.int64), y0.astype(np.int64)
        y = ((1 - wy) * (1 - wx) * read(y0, x0) + (1 - wy) * wx * read(y0, x0 + 1)
             + wy * (1 - wx) * read(y0 + 1, x0) + wy * wx * read(y0 + 1, x0 + 1))
    return [y.astype(xs[0].dtype)]


register(OpDef("grid_sample", "injective", _grid_infer, _grid_ref,
               {"mode": "bilinear", "padding_mode": "zeros", "align_corners": False}, (2, 2), fp16="f32",
               doc="grid_sample(x[N, C, H, W], grid[N, Ho, Wo, 2]){mode, padding_mode, align_corners}: x read at "
                   "the grid's normalized (x, y) positions, as torch's F.grid_sample (bilinear or nearest; zeros, "
                   "border or reflection padding)"))


def _pad_infer(types, attrs):
    x = types[0]
    p = attrs["pads"]
    if len(p) != 2 * x.rank:
        raise OpError(f"pad: pads needs 2*rank={2 * x.rank} entries (before, after per axis)")
    shape = tuple(d + p[2 * i] + p[2 * i + 1] for i, d in enumerate(x.shape))
    if min(shape, default=1) < 0:
        raise OpError("pad: negative size")
    v = attrs["value"]
    if isinstance(v, list) and (x.rank < 2 or len(v) != x.shape[1] or p[2] or p[3]):
        raise OpError(f"pad: a value per channel needs one per channel of axis 1 ({x.shape[1:2]}) and no channel "
                      f"padding, got {len(v)} values")
    return [TensorType(shape, x.dtype)]


def _pad_ref(xs, a):
    x, p = xs[0], a["pads"]
    pos = [(max(0, p[2 * i]), max(0, p[2 * i + 1])) for i in range(x.ndim)]
    if isinstance(a["value"], list):  # one value per channel (axis 1)
        inside = np.pad(np.ones(x.shape, bool), pos)
        per_channel = np.asarray(a["value"], x.dtype).reshape((1, -1) + (1,) * (x.ndim - 2))
        y = np.where(inside, np.pad(x, pos), per_channel)
    else:
        y = np.pad(x, pos, constant_values=a["value"])
    sl = tuple(slice(max(0, -p[2 * i]), y.shape[i] - max(0, -p[2 * i + 1])) for i in range(x.ndim))
    return [y[sl]]


register(OpDef("pad", "injective", _pad_infer, _pad_ref, {"pads": REQUIRED, "value": 0.0}, (1, 1),
               doc="pad(x){pads=[before0, after0, before1, ...], value}: constant padding (negative crops); value: "
                   "one number, or one per channel of axis 1",
               cheap=True))
