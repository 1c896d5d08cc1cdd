"""ATen -> IR converters: reductions, softmax and layer_norm."""

from __future__ import annotations

import math

import numpy as np

from .ctx import Ctx, aten, norm_dim


def _reduce(op):
    def convert(ctx: Ctx, a, dim=None, keepdim=False, dtype=None):
        # the result's dtype: mean's float, dtype=, and torch's sum of bools and small integers in int64
        x = ctx.cast(ctx.v(a), ctx.out_dtype())
        if x.type.rank == 0:  # torch reduces a scalar over dim 0 / -1 / all dims to itself
            return ctx.add("reshape", [x], {"shape": []})
        axes = None if dim is None or dim == [] else _axes(x, dim)
        return ctx.add(op, [x], {"axes": axes, "keepdims": bool(keepdim)})

    return convert


def _of_scalar(ctx, x):
    """``max(dim)`` / ``min(dim)`` of a 0-d tensor: the value itself at index 0."""
    return ctx.add("copy", [x]), ctx.scalar(0, "i64")


def _max_dim(ctx, a, dim, keepdim=False):
    x = ctx.v(a)
    if x.type.rank == 0:
        return _of_scalar(ctx, x)
    ax = [norm_dim(dim, x.type.rank)]
    return (ctx.add("max", [x], {"axes": ax, "keepdims": keepdim}),
            ctx.add("argmax", [x], {"axes": ax, "keepdims": keepdim}))


def _min_dim(ctx, a, dim, keepdim=False):
    x = ctx.v(a)
    if x.type.rank == 0:
        return _of_scalar(ctx, x)
    return (ctx.add("min", [x], {"axes": [norm_dim(dim, x.type.rank)], "keepdims": keepdim}),
            _argmin(ctx, x, dim, keepdim))


def _argmax(ctx, a, dim=None, keepdim=False):
    x = ctx.v(a)
    rank = x.type.rank
    if dim is None or rank == 0:  # over every element: the flat index (keepdim: every axis kept as 1)
        flat = ctx.add("reshape", [x], {"shape": [x.type.numel]})
        y = ctx.add("argmax", [flat], {"axes": [0], "keepdims": False})
        return ctx.add("reshape", [y], {"shape": [1] * rank}) if keepdim and rank else y
    return ctx.add("argmax", [x], {"axes": [norm_dim(dim, rank)], "keepdims": keepdim})


def _softmax(op):
    def convert(ctx, a, dim, *rest):
        x = ctx.v(a, ctx.out_dtype())
        if x.type.rank == 0:  # torch's softmax of a scalar over dim 0 / -1: as of a one-element vector
            y = ctx.add(op, [ctx.add("reshape", [x], {"shape": [1]})], {"axis": 0})
            return ctx.add("reshape", [y], {"shape": []})
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


def _native_layer_norm(ctx, a, normalized_shape, weight=None, bias=None, eps=1e-5):
    """``native_layer_norm``: the normalized tensor, and the mean and 1 / std over the normalized axes (kept as 1s)
    that training reads."""
    x = ctx.v(a)
    axes = list(range(x.type.rank - len(normalized_shape), x.type.rank))
    mean = ctx.add("mean", [x], {"axes": axes, "keepdims": True})
    centered = ctx.add("sub", [x, mean])
    var = ctx.add("mean", [ctx.add("mul", [centered, centered])], {"axes": axes, "keepdims": True})
    rstd = ctx.add("rsqrt", [ctx.add("add", [var, ctx.v(float(eps), x.type.dtype)])])
    return _layer_norm(ctx, x, normalized_shape, weight, bias, eps), mean, rstd


def _axes(x, dim) -> list[int]:
    """``dim`` (None, [], an int or a list) as the list of axes a reduction covers: None and [] mean all; a
    scalar has none (torch takes dim 0 / -1 of a scalar as the scalar itself)."""
    if not x.type.rank:
        return []
    if dim is None or dim == []:
        return list(range(x.type.rank))
    return sorted({norm_dim(d, x.type.rank) for d in (dim if isinstance(dim, (list, tuple)) else [dim])})


def _var(ctx: Ctx, a, dim=None, *, correction=None, keepdim=False):
    """Variance with Bessel's ``correction`` (default 1): sum((x - mean)^2) / max(0, N - correction), torch's two-pass
    formula (N - correction <= 0 divides by 0, giving inf or NaN as torch does; an empty tensor's is NaN)."""
    x = ctx.v(a, ctx.out_dtype())
    axes = _axes(x, dim)  # [] for a scalar: its one element is its mean
    n = int(np.prod([x.type.shape[i] for i in axes]))
    mean = ctx.add("mean", [x], {"axes": axes, "keepdims": True}) if axes else x
    centred = ctx.add("sub", [x, mean])
    sq = ctx.add("mul", [centred, centred])
    total = ctx.add("sum", [sq], {"axes": axes, "keepdims": bool(keepdim)}) if axes else sq
    dof = max(0, n - (1 if correction is None else correction))  # torch's: fewer elements than the correction is 0
    # sum / 0 as sum * inf (the same: NaN for 0, inf above); a constant division by 0 stops TVM's folder
    return ctx.add("mul" if dof == 0 else "div", [total, ctx.v(math.inf if dof == 0 else float(dof), x.type.dtype)])


def _prod(ctx: Ctx, a, dim=None, keepdim=False, dtype=None):
    x = ctx.v(a)
    if dtype is not None or x.type.dtype in ("bool", "u8", "i8", "i16", "i32"):  # torch: integers in int64
        x = ctx.cast(x, ctx.out_dtype())
    axes = _axes(x, dim)
    return ctx.add("prod", [x], {"axes": axes, "keepdims": bool(keepdim)}) if axes else ctx.add("copy", [x])


def _cumsum(ctx: Ctx, a, dim, dtype=None):
    x = ctx.cast(ctx.v(a), ctx.out_dtype())  # torch: integers sum in int64
    return ctx.add("cumsum", [x], {"axis": norm_dim(dim, x.type.rank)})


def _argmin(ctx, a, dim=None, keepdim=False):
    """argmax of -x: the first smallest value's index (NaN counts as the extreme, as in torch)."""
    x = ctx.v(a)
    if x.type.dtype in ("bool", "u8"):
        x = ctx.cast(x, "i32")
    return _argmax(ctx, ctx.add("neg", [x]), dim, keepdim)


def _any_all(op):
    """any / all of a boolean (or numeric: nonzero) tensor: max / min of it as 0/1, back to bool."""
    def convert(ctx: Ctx, a, dim=None, keepdim=False):
        x = ctx.v(a)
        flags = ctx.cast(x if x.type.dtype == "bool" else ctx.add("ne", [x, ctx.v(0, x.type.dtype)]), "i32")
        axes = _axes(x, dim)
        r = ctx.add(op, [flags], {"axes": axes, "keepdims": bool(keepdim)}) if axes else flags
        return ctx.cast(r, "bool")

    return convert


def _vector_norm(ctx: Ctx, a, ord=2, dim=None, keepdim=False, *, dtype=None):
    """||x||_ord over ``dim``: 2 (sqrt of the sum of squares), 1, inf / -inf (max / min of |x|), 0 (count of
    nonzeros), or any other p: (sum |x|^p)^(1/p)."""
    x = ctx.v(a, ctx.out_dtype())
    dt = x.type.dtype
    axes = _axes(x, dim)
    mag = ctx.add("abs", [x])

    def reduce(op, v):
        return ctx.add(op, [v], {"axes": axes, "keepdims": bool(keepdim)}) if axes else v

    p = float(ord)
    if p == float("inf"):
        return reduce("max", mag)
    if p == float("-inf"):
        return reduce("min", mag)
    if p == 0:
        return reduce("sum", ctx.cast(ctx.add("ne", [x, ctx.v(0.0, dt)]), dt))
    if p == 1:
        return reduce("sum", mag)
    if p == 2:
        return ctx.add("sqrt", [reduce("sum", ctx.add("mul", [x, x]))])
    powered = reduce("sum", ctx.add("pow", [mag, ctx.v(p, dt)]))
    return ctx.add("pow", [powered, ctx.v(1.0 / p, dt)])


CONVERTERS = {
    aten.var.correction: _var, aten.argmin.default: _argmin, aten.prod.dim_int: _prod, aten.prod.default: _prod,
    aten.cumsum.default: _cumsum,
    aten.any.dim: _any_all("max"), aten.any.default: _any_all("max"), aten.any.dims: _any_all("max"),
    aten.all.dim: _any_all("min"), aten.all.default: _any_all("min"), aten.all.dims: _any_all("min"),
    aten.linalg_vector_norm.default: _vector_norm,
    aten.sum.dim_IntList: _reduce("sum"), aten.sum.default: _reduce("sum"), aten.mean.dim: _reduce("mean"),
    aten.mean.default: _reduce("mean"), aten.amax.default: _reduce("max"), aten.amin.default: _reduce("min"),
    aten.max.dim: _max_dim, aten.min.dim: _min_dim, aten.argmax.default: _argmax,
    aten.max.default: _reduce("max"), aten.min.default: _reduce("min"),  # torch.max(x): over every element
    aten.softmax.int: _softmax("softmax"), aten._softmax.default: _softmax("softmax"),
    aten.log_softmax.int: _softmax("log_softmax"), aten._log_softmax.default: _softmax("log_softmax"),
    aten.layer_norm.default: _layer_norm, aten.native_layer_norm.default: _native_layer_norm,
}
