"""ATen -> IR converters: reductions, softmax and layer_norm."""

from __future__ import annotations

import numpy as np

from .ctx import Ctx, aten, norm_dim


def _reduce(op):
    def convert(ctx: Ctx, a, dim=None, keepdim=False, dtype=None):
        x = ctx.v(a)
        if dtype is not None or op == "mean":
            x = ctx.cast(x, ctx.out_dtype())
        axes = None if dim is None or dim == [] else [norm_dim(d, x.type.rank) for d in
                                                       (dim if isinstance(dim, (list, tuple)) else [dim])]
        return ctx.add(op, [x], {"axes": axes, "keepdims": bool(keepdim)})

    return convert


def _max_dim(ctx, a, dim, keepdim=False):
    x = ctx.v(a)
    ax = [norm_dim(dim, x.type.rank)]
    return (ctx.add("max", [x], {"axes": ax, "keepdims": keepdim}),
            ctx.add("argmax", [x], {"axes": ax, "keepdims": keepdim}))


def _argmax(ctx, a, dim=None, keepdim=False):
    x = ctx.v(a)
    if dim is None:
        x = ctx.add("reshape", [x], {"shape": [x.type.numel]})
        dim = 0
    return ctx.add("argmax", [x], {"axes": [norm_dim(dim, x.type.rank)], "keepdims": keepdim})


def _softmax(op):
    def convert(ctx, a, dim, *rest):
        x = ctx.v(a, ctx.out_dtype())
        return ctx.add(op, [x], {"axis": norm_dim(dim, x.type.rank)})

    return convert


def _layer_norm(ctx, a, normalized_shape, weight=None, bias=None, eps=1e-5, *rest):
    x = ctx.v(a)
    ins = [x] + ([ctx.v(weight)] if weight is not None else [])
    if bias is not None:
        if weight is None:
            ins.append(ctx.g.add_const(np.ones(normalized_shape, x.type.np_dtype), "ln_w"))
        ins.append(ctx.v(bias))
    return ctx.add("layer_norm", ins, {"normalized_ndim": len(normalized_shape), "eps": float(eps)})


CONVERTERS = {
    aten.sum.dim_IntList: _reduce("sum"), aten.sum.default: _reduce("sum"), aten.mean.dim: _reduce("mean"),
    aten.mean.default: _reduce("mean"), aten.amax.default: _reduce("max"), aten.amin.default: _reduce("min"),
    aten.max.dim: _max_dim, aten.argmax.default: _argmax,
    aten.max.default: _reduce("max"), aten.min.default: _reduce("min"),  # torch.max(x): over every element
    aten.softmax.int: _softmax("softmax"), aten._softmax.default: _softmax("softmax"),
    aten.log_softmax.int: _softmax("log_softmax"), aten._log_softmax.default: _softmax("log_softmax"),
    aten.layer_norm.default: _layer_norm,
}
