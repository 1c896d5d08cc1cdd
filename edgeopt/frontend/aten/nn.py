"""ATen -> IR converters: contractions, convolutions, batch_norm, pooling, resizing, padding, attention."""

from __future__ import annotations

import numpy as np

from .. import volumetric
from .ctx import aten


def _linear(ctx, a, w, b=None):
    ins = [ctx.v(a), ctx.v(w)] + ([ctx.v(b)] if b is not None else [])
    return ctx.add("linear", ins)


def _matmul(ctx, a, b):
    x, y = ctx.v(a), ctx.v(b)
    sq = []
    if x.type.rank == 1:
        x = ctx.add("reshape", [x], {"shape": [1, x.type.shape[0]]})
        sq.append(-2)
    if y.type.rank == 1:
        y = ctx.add("reshape", [y], {"shape": [y.type.shape[0], 1]})
        sq.append(-1)
    out = ctx.add("matmul", [x, y])
    if sq:
        shape = [d for i, d in enumerate(out.type.shape) if i - out.type.rank not in sq]
        out = ctx.add("reshape", [out], {"shape": shape})
    return out


def _addmm(ctx, bias, a, b, beta=1, alpha=1):
    return _scaled_sum(ctx, _matmul(ctx, a, b), bias, beta, alpha)


def _addmv(ctx, bias, mat, vec, beta=1, alpha=1):
    """``beta * input + alpha * (mat @ vec)``; with ``beta=0`` the input is not read (its NaNs neither), as torch."""
    y = _matmul(ctx, mat, vec)
    return _scaled_sum(ctx, y, bias, beta, alpha)


def _addbmm(ctx, bias, a, b, beta=1, alpha=1):
    """``beta * input + alpha * sum_i (a[i] @ b[i])``."""
    y = ctx.add("sum", [_matmul(ctx, a, b)], {"axes": [0], "keepdims": False})
    return _scaled_sum(ctx, y, bias, beta, alpha)


def _scaled_sum(ctx, y, bias, beta, alpha):
    """``beta * bias + alpha * y`` in the output's dtype; ``beta=0`` does not read ``bias`` (torch ignores its NaNs)."""
    dt = ctx.out_dtype()
    y = ctx.cast(y, dt)
    if alpha != 1:
        y = ctx.add("mul", [y, ctx.scalar(alpha, dt)])
    if beta == 0:  # the result still has the broadcast shape of both
        shape = ctx.out_shape()
        return y if list(y.type.shape) == shape else ctx.add("broadcast_to", [y], {"shape": shape})
    c = ctx.v(bias, dt)
    if beta != 1:
        c = ctx.add("mul", [c, ctx.scalar(beta, dt)])
    return ctx.add("add", [y, c])


def _convolution(ctx, x, w, b, stride, padding, dilation, transposed, output_padding, groups):
    xv, wv = ctx.v(x), ctx.v(w)
    if wv.type.rank == 5:
        return _conv3d(ctx, xv, wv, b, stride, padding, dilation, transposed, output_padding, groups)
    if xv.type.rank != 4:
        return _conv1d(ctx, xv, wv, b, stride, padding, dilation, transposed, output_padding, groups)
    ins = [xv, wv] + ([ctx.v(b)] if b is not None else [])
    # one value stands for both axes (Conv2d(padding="valid") exports padding=[0])
    stride, padding, dilation, output_padding = map(_pair, (stride, padding, dilation, output_padding))
    if transposed:
        return ctx.add("conv_transpose2d", ins, {"stride": stride, "padding": padding,
                                                 "output_padding": output_padding, "dilation": dilation,
                                                 "groups": groups})
    return ctx.add("conv2d", ins, {"stride": stride, "padding": _pads(padding), "dilation": dilation,
                                   "groups": groups})


def _conv1d(ctx, xv, wv, b, stride, padding, dilation, transposed, output_padding, groups):
    """conv1d as conv2d over a height-1 image."""
    if xv.type.rank != 3:
        raise NotImplementedError("only 1-D, 2-D and 3-D convolutions are supported")
    n, c, length = xv.type.shape
    x4 = ctx.add("reshape", [xv], {"shape": [n, c, 1, length]})
    w4 = ctx.add("reshape", [wv], {"shape": list(wv.type.shape[:2]) + [1, wv.type.shape[2]]})
    ins = [x4, w4] + ([ctx.v(b)] if b is not None else [])
    if transposed:
        y = ctx.add("conv_transpose2d", ins, {"stride": [1, stride[0]], "padding": [0, padding[0]],
                                              "output_padding": [0, output_padding[0]],
                                              "dilation": [1, dilation[0]], "groups": groups})
    else:
        y = ctx.add("conv2d", ins, {"stride": [1, stride[0]], "padding": [0, padding[0], 0, padding[0]],
                                    "dilation": [1, dilation[0]], "groups": groups})
    s = y.type.shape
    return ctx.add("reshape", [y], {"shape": [s[0], s[1], s[3]]})


def _conv3d(ctx, xv, wv, b, stride, padding, dilation, transposed, output_padding, groups):
    stride, padding, dilation = map(_triple, (stride, padding, dilation))
    bv = ctx.v(b) if b is not None else None
    if transposed:
        return volumetric.conv_transpose3d(ctx, xv, wv, bv, stride, padding, _triple(output_padding), dilation,
                                           groups)
    return volumetric.conv3d(ctx, xv, wv, bv, stride, padding * 2, dilation, groups)


def _normalize_groups(ctx, xv, groups: int, eps: float):
    """x [N, C, ...] normalized over each of ``groups`` channel groups (and every spatial position): the mean and
    the biased variance of each (sample, group), as torch's group / instance norms compute them."""
    shape = list(xv.type.shape)
    g = ctx.add("reshape", [xv], {"shape": [shape[0], groups, xv.type.numel // (shape[0] * groups)]})
    mean = ctx.add("mean", [g], {"axes": [2], "keepdims": True})
    d = ctx.add("sub", [g, mean])
    var = ctx.add("mean", [ctx.add("mul", [d, d])], {"axes": [2], "keepdims": True})
    dt = xv.type.dtype
    rstd = ctx.add("rsqrt", [ctx.add("add", [var, ctx.v(float(eps), dt)])])
    y = ctx.add("reshape", [ctx.add("mul", [d, rstd])], {"shape": shape})
    return y, mean, rstd


def _per_channel(ctx, y, v, rank: int, op: str):
    if v is None:
        return y
    wv = ctx.v(v)
    return ctx.add(op, [y, ctx.add("reshape", [wv], {"shape": [wv.type.shape[0]] + [1] * (rank - 2)})])


def _group_norm(ctx, x, w, b, n, c, hw, groups, eps):
    """aten.native_group_norm -> (out, mean [N, G], rstd [N, G])."""
    xv = ctx.v(x)
    y, mean, rstd = _normalize_groups(ctx, xv, int(groups), eps)
    y = _per_channel(ctx, _per_channel(ctx, y, w, xv.type.rank, "mul"), b, xv.type.rank, "add")
    stats = [ctx.add("reshape", [v], {"shape": [xv.type.shape[0], int(groups)]}) for v in (mean, rstd)]
    return (y, *stats)


def _batch_norm_batch_stats(ctx, x, w, b, training, momentum, eps):
    """aten._native_batch_norm_legit.no_stats (BatchNorm on the batch's own statistics; InstanceNorm traces to
    it on [1, N*C, H, W]) -> (out, mean [C], rstd [C])."""
    xv = ctx.v(x)
    rank, c = xv.type.rank, xv.type.shape[1]
    moved = ctx.add("transpose", [xv], {"perm": [1, 0, *range(2, rank)]})  # [C, N, ...]: one group per channel
    flat = ctx.add("reshape", [moved], {"shape": [1, c, xv.type.numel // c]})
    y, mean, rstd = _normalize_groups(ctx, flat, c, eps)
    y = ctx.add("transpose", [ctx.add("reshape", [y], {"shape": list(moved.type.shape)})],
                {"perm": [1, 0, *range(2, rank)]})
    y = _per_channel(ctx, _per_channel(ctx, y, w, rank, "mul"), b, rank, "add")
    return (y, *[ctx.add("reshape", [v], {"shape": [c]}) for v in (mean, rstd)])


def _batch_norm(ctx, x, w, b, mean, var, momentum, eps):
    xv = ctx.v(x)
    c = xv.type.shape[1]
    wv = ctx.v(w) if w is not None else ctx.g.add_const(np.ones(c, xv.type.np_dtype), "bn_w")
    bv = ctx.v(b) if b is not None else ctx.g.add_const(np.zeros(c, xv.type.np_dtype), "bn_b")
    y = ctx.add("batch_norm", [xv, ctx.v(mean), ctx.v(var), wv, bv], {"eps": float(eps)})
    return (y, None, None)


# -- pooling and resizing ----------------------------------------------------------------------------------
def _pads(p):
    p = list(p) if isinstance(p, (list, tuple)) else [p, p]
    p = p * 2 if len(p) == 1 else p
    return [p[0], p[1], p[0], p[1]]


def _pair(v):
    v = list(v) if isinstance(v, (list, tuple)) else [v]
    return v * 2 if len(v) == 1 else v


def _triple(v):
    v = list(v) if isinstance(v, (list, tuple)) else [v]
    return v * 3 if len(v) == 1 else v


def _batched(convert, unbatched_rank: int = 3):
    """A pooling converter that also takes torch's unbatched input ([C, H, W], or [C, D, H, W] for 3-d pools) as a
    batch of one."""
    def wrapped(ctx, x, *args, **kwargs):
        xv = ctx.v(x)
        if xv.type.rank != unbatched_rank:
            return convert(ctx, xv, *args, **kwargs)
        y = convert(ctx, ctx.add("reshape", [xv], {"shape": [1, *xv.type.shape]}), *args, **kwargs)
        first = y[0] if isinstance(y, tuple) else y
        first = ctx.add("reshape", [first], {"shape": list(first.type.shape[1:])})
        return (first, *y[1:]) if isinstance(y, tuple) else first

    return wrapped


@_batched
def _max_pool(ctx, x, kernel, stride=(), padding=0, dilation=1, ceil_mode=False):
    y = ctx.add("max_pool2d", [ctx.v(x)], {"kernel": _pair(kernel), "stride": _pair(stride or kernel),
                                           "padding": _pads(padding), "dilation": _pair(dilation),
                                           "ceil_mode": bool(ceil_mode)})
    return (y, None)


@_batched
def _avg_pool(ctx, x, kernel, stride=(), padding=0, ceil_mode=False, count_include_pad=True,
              divisor_override=None):
    return ctx.add("avg_pool2d", [ctx.v(x)], {"kernel": _pair(kernel), "stride": _pair(stride or kernel),
                                              "padding": _pads(padding), "ceil_mode": bool(ceil_mode),
                                              "count_include_pad": bool(count_include_pad),
                                              "divisor_override": divisor_override})


@_batched
def _adaptive_avg(ctx, x, output_size):
    xv = ctx.v(x)
    out = _pair(output_size)
    h, w = xv.type.shape[2:]
    if out == [1, 1]:
        return ctx.add("mean", [xv], {"axes": [2, 3], "keepdims": True})
    if h % out[0] == 0 and w % out[1] == 0:
        k = [h // out[0], w // out[1]]
        return ctx.add("avg_pool2d", [xv], {"kernel": k, "stride": k})
    return ctx.add("adaptive_avg_pool2d", [xv], {"output_size": out})


def _max_pool3d(ctx, x, kernel, stride=(), padding=0, dilation=1, ceil_mode=False):
    kernel = _triple(kernel)
    return (volumetric.max_pool3d(ctx, ctx.v(x), kernel, _triple(stride or kernel), _triple(padding) * 2,
                                  _triple(dilation), ceil_mode), None)


def _avg_pool3d(ctx, x, kernel, stride=(), padding=0, ceil_mode=False, count_include_pad=True,
                divisor_override=None):
    kernel = _triple(kernel)
    return volumetric.avg_pool3d(ctx, ctx.v(x), kernel, _triple(stride or kernel), _triple(padding) * 2, ceil_mode,
                                 count_include_pad, divisor_override)


def _adaptive_avg3d(ctx, x, output_size):
    return volumetric.adaptive_avg_pool3d(ctx, ctx.v(x), _triple(output_size))


def _upsample3d(mode):
    def convert(ctx, x, output_size=None, *rest):
        align = rest[0] if mode == "linear" else False
        scales = rest[1] if mode == "linear" else rest[0]
        size = [int(s) for s in ctx.node.meta["val"].shape[2:]]
        return volumetric.resize3d(ctx, ctx.v(x), size, mode, bool(align), scales)

    return convert


def _upsample(mode):
    def convert(ctx, x, output_size=None, *rest):
        align = rest[0] if mode == "bilinear" else False
        scales = rest[1] if mode == "bilinear" else rest[0]
        xv = ctx.v(x)
        size = list(ctx.node.meta["val"].shape[2:])
        return ctx.add("resize2d", [xv], {"size": [int(s) for s in size], "mode": mode,
                                          "align_corners": bool(align),
                                          "scales": [float(s) for s in scales] if scales else None})

    return convert


def _constant_pad(ctx, x, pad, value=0.0):
    xv = ctx.v(x)
    pads = [0] * (2 * xv.type.rank)
    for i in range(len(pad) // 2):  # torch lists (before, after) from the LAST axis backwards
        ax = xv.type.rank - 1 - i
        pads[2 * ax], pads[2 * ax + 1] = pad[2 * i], pad[2 * i + 1]
    return ctx.add("pad", [xv], {"pads": pads, "value": float(value)})



def _sdpa(ctx, q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
    if enable_gqa:
        raise NotImplementedError("scaled_dot_product_attention(enable_gqa=True)")
    if dropout_p:
        raise NotImplementedError(f"with dropout_p={dropout_p:g}, which drops at random at every call, in eval mode "
                                  "too; pass dropout_p=0.0 outside training (dropout_p=self.p if self.training else "
                                  "0.0)")
    ins = [ctx.v(q), ctx.v(k), ctx.v(v)]
    if attn_mask is not None:
        m = ctx.v(attn_mask)
        ins.append(m if m.type.dtype == "bool" else ctx.cast(m, ins[0].type.dtype))
    return ctx.add("attention", ins, {"scale": None if scale is None else float(scale),
                                      "causal": bool(is_causal)})



def _grid_sampler(ctx, x, grid, interpolation_mode, padding_mode, align_corners):
    """``F.grid_sample`` (aten's modes by number: 0 bilinear, 1 nearest, 2 bicubic; 0 zeros, 1 border, 2
    reflection)."""
    if interpolation_mode not in (0, 1):
        raise NotImplementedError("bicubic (bilinear and nearest are covered)")
    xv = ctx.v(x)
    return ctx.add("grid_sample", [xv, ctx.v(grid, xv.type.dtype)],
                   {"mode": ("bilinear", "nearest")[interpolation_mode],
                    "padding_mode": ("zeros", "border", "reflection")[padding_mode],
                    "align_corners": bool(align_corners)})


_MAX_POOL3D = _batched(_max_pool3d, 4)

CONVERTERS = {
    aten.grid_sampler_2d.default: _grid_sampler,
    aten.linear.default: _linear, aten.matmul.default: _matmul, aten.mm.default: _matmul,
    aten.bmm.default: _matmul, aten.addmm.default: _addmm, aten.addmv.default: _addmv, aten.addbmm.default: _addbmm,
    aten.convolution.default: _convolution,
    aten._native_batch_norm_legit_no_training.default: _batch_norm,
    aten.native_group_norm.default: _group_norm, aten._native_batch_norm_legit.no_stats: _batch_norm_batch_stats,
    aten.max_pool2d.default: lambda *a, **k: _max_pool(*a, **k)[0],
    aten.avg_pool2d.default: _avg_pool, aten.adaptive_avg_pool2d.default: _adaptive_avg,
    aten._adaptive_avg_pool2d.default: _adaptive_avg,
    aten.upsample_bilinear2d.vec: _upsample("bilinear"), aten.upsample_nearest2d.vec: _upsample("nearest"),
    aten.max_pool3d_with_indices.default: _MAX_POOL3D,
    aten.max_pool3d.default: lambda *a, **k: _MAX_POOL3D(*a, **k)[0],
    aten.avg_pool3d.default: _batched(_avg_pool3d, 4), aten.adaptive_avg_pool3d.default: _batched(_adaptive_avg3d, 4),
    aten._adaptive_avg_pool3d.default: _batched(_adaptive_avg3d, 4),
    aten.upsample_trilinear3d.vec: _upsample3d("linear"), aten.upsample_nearest3d.vec: _upsample3d("nearest"),
    aten.constant_pad_nd.default: _constant_pad,
    aten.scaled_dot_product_attention.default: _sdpa,
}
