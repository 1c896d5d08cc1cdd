"""ATen ops the IR has no op of its own for, written with the ones it has: inverse trigonometric and hyperbolic
functions, ``var_mean``, ``diagonal``, ``adaptive_max_pool2d`` (values), ``cdist``,
``embedding_bag`` on bags of one size, ``cumprod`` / ``cummax`` / ``cummin`` as masked reductions over every pair.

Each formula is chosen to keep float32's accuracy where the textbook one loses it:

    asin(x)  = atan2(x, sqrt((1 - x)(1 + x)))           (1 - x^2 cancels near |x| = 1)
    sinh(x)  = (expm1(x) - expm1(-x)) / 2                (exp(x) - exp(-x) cancels near 0)
    asinh(x) = sign(x) log1p(|x| + x^2 / (1 + sqrt(1 + x^2))), log(2|x|) past 1e8 (x^2 would overflow)
    atanh(x) = sign(x) log1p(2|x| / (1 - |x|)) / 2
    sinh, cosh past |x| = 20: sign(x) exp(|x| - log 2) (exp(|x|) alone overflows float32 before they do)
"""

from __future__ import annotations

import math

import numpy as np

from ...ir_dtypes import extremes
from .ctx import Ctx, along_last, aten, norm_dim
from .reduce import _axes, _var

_BIG = 1e8  # past this, x^2 + 1 == x^2 in float32 and x^2 overflows soon after: log(2|x|) is exact there


def _x(ctx: Ctx, a):
    return ctx.v(a, ctx.out_dtype())


def _c(ctx: Ctx, value: float, like):
    return ctx.v(float(value), like.type.dtype)


def _one_minus_x2(ctx: Ctx, x):
    one = _c(ctx, 1.0, x)
    return ctx.add("mul", [ctx.add("sub", [one, x]), ctx.add("add", [one, x])])


def _atan(ctx: Ctx, a):
    x = _x(ctx, a)
    return ctx.add("atan2", [x, _c(ctx, 1.0, x)])


def _asin(ctx: Ctx, a):
    x = _x(ctx, a)
    return ctx.add("atan2", [x, ctx.add("sqrt", [_one_minus_x2(ctx, x)])])


def _acos(ctx: Ctx, a):
    x = _x(ctx, a)
    return ctx.add("atan2", [ctx.add("sqrt", [_one_minus_x2(ctx, x)]), x])


def _tan(ctx: Ctx, a):
    x = _x(ctx, a)
    return ctx.add("div", [ctx.add("sin", [x]), ctx.add("cos", [x])])


def _half_exp(ctx: Ctx, x):
    """exp(|x|) / 2 as exp(|x| - log 2), and whether |x| is past 20 (where sinh and cosh are that)."""
    ax = ctx.add("abs", [x])
    return ctx.add("exp", [ctx.add("sub", [ax, _c(ctx, math.log(2.0), x)])]), ctx.add("gt", [ax, _c(ctx, 20.0, x)])


def _sinh(ctx: Ctx, a):
    x = _x(ctx, a)
    diff = ctx.add("sub", [ctx.add("expm1", [x]), ctx.add("expm1", [ctx.add("neg", [x])])])
    half, big = _half_exp(ctx, x)
    signed = ctx.add("where", [ctx.add("lt", [x, _c(ctx, 0.0, x)]), ctx.add("neg", [half]), half])
    return ctx.add("where", [big, signed, ctx.add("mul", [diff, _c(ctx, 0.5, x)])])


def _cosh(ctx: Ctx, a):
    x = _x(ctx, a)
    total = ctx.add("add", [ctx.add("exp", [x]), ctx.add("exp", [ctx.add("neg", [x])])])
    half, big = _half_exp(ctx, x)
    return ctx.add("where", [big, half, ctx.add("mul", [total, _c(ctx, 0.5, x)])])


def _log_2x(ctx: Ctx, ax):
    """log(2 |x|) for |x| past ``_BIG``, where asinh and acosh are that to float32's precision."""
    return ctx.add("add", [ctx.add("log", [ax]), _c(ctx, math.log(2.0), ax)])


def _asinh(ctx: Ctx, a):
    x = _x(ctx, a)
    ax = ctx.add("abs", [x])
    x2 = ctx.add("mul", [ax, ax])
    root = ctx.add("sqrt", [ctx.add("add", [x2, _c(ctx, 1.0, x)])])
    small = ctx.add("log1p", [ctx.add("add", [ax, ctx.add("div", [x2, ctx.add("add", [root, _c(ctx, 1.0, x)])])])])
    mag = ctx.add("where", [ctx.add("gt", [ax, _c(ctx, _BIG, x)]), _log_2x(ctx, ax), small])
    return ctx.add("where", [ctx.add("lt", [x, _c(ctx, 0.0, x)]), ctx.add("neg", [mag]), mag])


def _acosh(ctx: Ctx, a):
    x = _x(ctx, a)
    below = ctx.add("sub", [x, _c(ctx, 1.0, x)])
    root = ctx.add("sqrt", [ctx.add("mul", [below, ctx.add("add", [x, _c(ctx, 1.0, x)])])])
    small = ctx.add("log1p", [ctx.add("add", [below, root])])
    y = ctx.add("where", [ctx.add("gt", [x, _c(ctx, _BIG, x)]), _log_2x(ctx, x), small])
    return ctx.add("where", [ctx.add("lt", [x, _c(ctx, 1.0, x)]), _c(ctx, math.nan, x), y])  # below 1: NaN


def _atanh(ctx: Ctx, a):
    """On |x| (near -1 the ratio would be near -1, where log1p cancels), the sign copied back."""
    x = _x(ctx, a)
    ax = ctx.add("abs", [x])
    ratio = ctx.add("div", [ctx.add("add", [ax, ax]), ctx.add("sub", [_c(ctx, 1.0, x), ax])])
    mag = ctx.add("mul", [ctx.add("log1p", [ratio]), _c(ctx, 0.5, x)])
    return ctx.add("where", [ctx.add("lt", [x, _c(ctx, 0.0, x)]), ctx.add("neg", [mag]), mag])


def _var_mean(ctx: Ctx, a, dim=None, *, correction=None, keepdim=False):
    x = ctx.v(a, ctx.out_dtype())
    axes = _axes(x, dim)
    mean = ctx.add("mean", [x], {"axes": axes, "keepdims": bool(keepdim)}) if axes else ctx.add("copy", [x])
    return _var(ctx, x, dim, correction=correction, keepdim=keepdim), mean


def _diagonal(ctx: Ctx, a, offset=0, dim1=0, dim2=1):
    """The diagonal of axes ``dim1`` and ``dim2`` (offset above it, negative below), moved last: a take of its
    positions in the two axes flattened."""
    x = ctx.v(a)
    r = x.type.rank
    d1, d2 = norm_dim(dim1, r), norm_dim(dim2, r)
    n1, n2 = x.type.shape[d1], x.type.shape[d2]
    rows = np.arange(max(0, min(n1 + min(offset, 0), n2 - max(offset, 0))))
    i, j = rows - min(offset, 0), rows + max(offset, 0)
    rest = [k for k in range(r) if k not in (d1, d2)]
    y = ctx.add("transpose", [x], {"perm": rest + [d1, d2]}) if rest + [d1, d2] != list(range(r)) else x
    y = ctx.add("reshape", [y], {"shape": [x.type.shape[k] for k in rest] + [n1 * n2]})
    return ctx.add("take", [y, ctx.g.add_const((i * n2 + j).astype(np.int64), "diagonal")], {"axis": len(rest)})


def _adaptive_max(ctx: Ctx, a, output_size):
    """Values only (the indices output is an unsupported case). Windows that tile the input: a ``max_pool2d``;
    others (``floor(i * n / out)`` to ``ceil((i + 1) * n / out)``, torch's): per axis, a ``take`` of every window's
    positions (a shorter window repeats its last) and a max over them."""
    x = ctx.v(a)
    out = list(output_size) if isinstance(output_size, (list, tuple)) else [output_size] * 2
    h, w = x.type.shape[-2:]
    out = [h if o is None else o for o in out[:1]] + [w if o is None else o for o in out[1:]]
    if h % out[0] == 0 and w % out[1] == 0 and x.type.rank == 4:
        k = [h // out[0], w // out[1]]
        return ctx.add("max_pool2d", [x], {"kernel": k, "stride": k}), None
    for axis, (n, o) in zip((x.type.rank - 2, x.type.rank - 1), zip((h, w), out)):
        x = _window_max(ctx, x, axis, n, o)
    return x, None


def _window_max(ctx: Ctx, x, axis: int, n: int, out: int):
    """Max over adaptive pooling's windows of axis ``axis`` (``n`` long) for ``out`` outputs."""
    if n == out:
        return x
    starts = [i * n // out for i in range(out)]
    ends = [-(-(i + 1) * n // out) for i in range(out)]
    k = max(e - s for s, e in zip(starts, ends))
    where = np.array([[min(s + j, e - 1) for j in range(k)] for s, e in zip(starts, ends)], np.int64).reshape(-1)
    y = ctx.add("take", [x, ctx.g.add_const(where, "adaptive_windows")], {"axis": axis})
    shape = list(x.type.shape)
    y = ctx.add("reshape", [y], {"shape": shape[:axis] + [out, k] + shape[axis + 1:]})
    return ctx.add("max", [y], {"axes": [axis + 1], "keepdims": False})


def _cdist(ctx: Ctx, a, b, p, compute_mode=None):
    """``torch.cdist``'s exact form: ``(sum_k |a_ik - b_jk|^p)^(1/p)`` by broadcast differences ([.., P, R, M]; p = 2
    beyond 25 rows torch itself exports as matrix products, and edgeopt compiles those)."""
    x, y = ctx.v(a), ctx.v(b)
    m = x.type.shape[-1]
    xs = ctx.add("reshape", [x], {"shape": list(x.type.shape[:-2]) + [x.type.shape[-2], 1, m]})
    ys = ctx.add("reshape", [y], {"shape": list(y.type.shape[:-2]) + [1, y.type.shape[-2], m]})
    diff = ctx.add("abs", [ctx.add("sub", [xs, ys])])  # batch dims broadcast, as torch's
    last = {"axes": [diff.type.rank - 1], "keepdims": False}
    if p == 0:
        return ctx.add("sum", [ctx.cast(ctx.add("ne", [diff, _c(ctx, 0.0, diff)]), diff.type.dtype)], last)
    if p == 1:
        return ctx.add("sum", [diff], last)
    if p == 2:
        return ctx.add("sqrt", [ctx.add("sum", [ctx.add("mul", [diff, diff])], last)])
    if math.isinf(p):
        return ctx.add("max", [diff], last)
    total = ctx.add("sum", [ctx.add("pow", [diff, _c(ctx, p, diff)])], last)
    return ctx.add("pow", [total, _c(ctx, 1.0 / p, total)])


def _embedding_bag(ctx: Ctx, weight, indices, offsets, scale_grad_by_freq=False, mode=0, sparse=False,
                   per_sample_weights=None, include_last_offset=False, padding_idx=-1):
    """``nn.EmbeddingBag`` on bags of one size (a 2-D input: torch's offsets are ``arange(0, B * L, L)``): the
    embeddings of each bag summed, averaged or maxed. Only the bags' output (the other three are torch's
    bookkeeping)."""
    known = ctx.torch_consts.get(getattr(offsets, "name", None))
    if known is None or include_last_offset or per_sample_weights is not None or \
            (padding_idx is not None and padding_idx >= 0):
        raise NotImplementedError("with offsets computed at run time, per-sample weights or a padding index (bags "
                                  "of one size are covered)")
    w, ids = ctx.v(weight), ctx.v(indices)
    starts = known.detach().cpu().numpy().astype(np.int64)
    total = ids.type.shape[0]
    size = total // len(starts) if len(starts) else 0
    if not len(starts) or total % len(starts) or not np.array_equal(starts, np.arange(0, total, size)):
        raise NotImplementedError("with bags of different sizes (bags of one size are covered)")
    rows = ctx.add("take", [w, ids], {"axis": 0})  # [B * L, D]
    rows = ctx.add("reshape", [rows], {"shape": [len(starts), size, w.type.shape[1]]})
    op = ("sum", "mean", "max")[mode]
    return ctx.add(op, [rows], {"axes": [1], "keepdims": False}), None, None, None


CUMULATIVE_MAX = 2048  # cumprod / cummax / cummin / logcumsumexp compare every pair of positions along their axis


def _cumulative(ctx: Ctx, x, dim, reduce: str, fill):
    """``y[..., i] = reduce(x[..., k] for k <= i)`` along ``dim``: the input broadcast to ``[..., i, k]``, positions
    past ``i`` replaced by ``fill`` (the reduction's identity), reduced over ``k``. Also returns what it needs for
    the indices: the values along the last axis, the mask, and the permutation back."""
    if x.type.rank == 0:
        x = ctx.add("reshape", [x], {"shape": [1]})
    ax = norm_dim(dim, x.type.rank)
    n = x.type.shape[ax]
    if n > CUMULATIVE_MAX:
        raise NotImplementedError(f"along {n} elements (at most {CUMULATIVE_MAX}: it compares every pair)")
    xt, back = along_last(ctx, x, ax)
    lead = list(xt.type.shape[:-1])
    xk = ctx.add("reshape", [xt], {"shape": lead + [1, n]})
    tril = ctx.g.add_const(np.tril(np.ones((n, n), bool)), "cumulative_mask")  # [i, k]: k <= i
    picked = ctx.add("where", [tril, xk, ctx.v(fill, x.type.dtype)])
    y = ctx.add(reduce, [picked], {"axes": [-1], "keepdims": False})
    return y, (xk, tril, back)


def _back(ctx: Ctx, y, back, like):
    y = ctx.add("transpose", [y], {"perm": back}) if back != sorted(back) else y
    return ctx.add("reshape", [y], {"shape": []}) if like.type.rank == 0 else y


def _cumprod(ctx: Ctx, a, dim, dtype=None):
    """torch multiplies integers in int64 and float16 in float32 (float32 in float64, which the IR lacks: a product
    that overflows float32 midway stays inf here, where torch's may come back)."""
    out = ctx.out_dtype()
    x = ctx.cast(ctx.v(a), "f32" if out == "f16" else out)
    y, (_, _, back) = _cumulative(ctx, x, dim, "prod", 1)
    return ctx.cast(_back(ctx, y, back, x), out)


def _logcumsumexp(ctx: Ctx, a, dim):
    """``y[i] = log(sum_{k <= i} exp(x[k]))`` around the running max ``m[i]``: ``m[i] + log(sum exp(x[k] - m[i]))``,
    whose terms are at most 1 and one of them 1 (no overflow, and no underflow to log(0) where earlier elements are far
    below later ones); an infinite running max is the result itself, NaN stays NaN."""
    x = ctx.cast(ctx.v(a), ctx.out_dtype())
    m, (xk, tril, back) = _cumulative(ctx, x, dim, "max", -math.inf)
    mi = ctx.add("reshape", [m], {"shape": list(m.type.shape) + [1]})  # [..., i, 1] against xk's [..., 1, k]
    terms = ctx.add("where", [tril, ctx.add("exp", [ctx.add("sub", [xk, mi])]), _c(ctx, 0.0, x)])
    y = ctx.add("add", [m, ctx.add("log", [ctx.add("sum", [terms], {"axes": [-1], "keepdims": False})])])
    y = ctx.add("where", [ctx.add("eq", [ctx.add("abs", [m]), _c(ctx, math.inf, x)]), m, y])
    y = ctx.add("where", [ctx.add("ne", [m, m]), m, y])  # compares are not NaN-safe; NaN tests are
    return _back(ctx, y, back, x)


def _cum_extreme(reduce: str):
    """cummax / cummin: the running extreme (NaN once one is seen, as torch) and its index, the last position
    so far that holds it (torch's choice on ties; for NaN, the last NaN)."""

    def convert(ctx: Ctx, a, dim):
        x = ctx.v(a)
        dt = x.type.dtype
        if dt == "bool":
            x = ctx.cast(x, "u8")
        floating = x.type.dtype.startswith("f")
        fill = extremes(x.type.dtype)[reduce == "min"]  # the reduction's identity
        y, (xk, tril, back) = _cumulative(ctx, x, dim, reduce, fill)
        yi = ctx.add("reshape", [y], {"shape": list(y.type.shape) + [1]})  # [..., i, 1] against xk's [..., 1, k]
        same = ctx.add("eq", [xk, yi])
        if floating:  # NaN == NaN for the index: both NaN
            same = ctx.add("logical_or", [same, ctx.add("logical_and", [ctx.add("ne", [xk, xk]),
                                                                       ctx.add("ne", [yi, yi])])])
        n = xk.type.shape[-1]
        k = ctx.g.add_const(np.arange(n, dtype=np.int64), "cumulative_position")
        at = ctx.add("where", [ctx.add("logical_and", [same, tril]), k, ctx.v(-1, "i64")])
        idx = ctx.add("max", [at], {"axes": [-1], "keepdims": False})
        # the value read back at that index: torch's element bit for bit (of a tie of -0.0 and 0.0, the later one)
        chosen = ctx.add("eq", [k, ctx.add("reshape", [idx], {"shape": list(idx.type.shape) + [1]})])
        exact = ctx.add(reduce, [ctx.add("where", [chosen, xk, ctx.v(fill, x.type.dtype)])],
                        {"axes": [-1], "keepdims": False})
        return ctx.cast(_back(ctx, exact, back, ctx.v(a)), dt), _back(ctx, idx, back, ctx.v(a))

    return convert


CONVERTERS = {
    aten.atan.default: _atan, aten.asin.default: _asin, aten.acos.default: _acos, aten.tan.default: _tan,
    aten.sinh.default: _sinh, aten.cosh.default: _cosh, aten.asinh.default: _asinh, aten.acosh.default: _acosh,
    aten.atanh.default: _atanh, aten.var_mean.correction: _var_mean, aten.diagonal.default: _diagonal,
    aten.adaptive_max_pool2d.default: _adaptive_max, aten._cdist_forward.default: _cdist,
    aten._embedding_bag.default: _embedding_bag, aten._embedding_bag_forward_only.default: _embedding_bag,
    aten.cumprod.default: _cumprod, aten.cummax.default: _cum_extreme("max"),
    aten.cummin.default: _cum_extreme("min"), aten.logcumsumexp.default: _logcumsumexp,
}
