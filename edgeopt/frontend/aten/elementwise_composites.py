"""ATen elementwise ops the IR has no op of its own for, written with the ones it has:

    exp2(x) = pow(2, x)
    hypot(a, b) = m sqrt(1 + (n / m)^2) with m = max(|a|, |b|), n = min(|a|, |b|)   (a^2 + b^2 would overflow
                  float32 past 1.8e19; an infinite side gives inf, also beside a NaN, as C's hypot)
    signbit(x) = x < 0, or x == 0 with 1 / x < 0 (-0.0)      copysign(a, b) = signbit(b) ? -|a| : |a|
    fmax / fmin: maximum / minimum that take the number where the other side is NaN

(``logaddexp2``, ``xlogy`` and the like are decomposed by torch.export into these and the IR's ops.) The sign of a
NaN is not visible to comparisons: ``signbit`` and ``copysign`` read every NaN as positive.
"""

from __future__ import annotations

import math

from .ctx import Ctx, aten, promoted_dtype


def _exp2(ctx: Ctx, a):
    x = ctx.v(a, ctx.out_dtype())
    return ctx.add("pow", [ctx.v(2.0, x.type.dtype), x])


def _hypot(ctx: Ctx, a, b):
    dt = ctx.out_dtype()
    x, y = ctx.add("abs", [ctx.v(a, dt)]), ctx.add("abs", [ctx.v(b, dt)])
    big, small = ctx.add("maximum", [x, y]), ctx.add("minimum", [x, y])
    zero, one, inf = ctx.v(0.0, dt), ctx.v(1.0, dt), ctx.v(math.inf, dt)
    safe = ctx.add("where", [ctx.add("eq", [big, zero]), one, big])  # 0 / 0 where both are 0: the result is 0
    ratio = ctx.add("div", [small, safe])
    r = ctx.add("mul", [big, ctx.add("sqrt", [ctx.add("add", [one, ctx.add("mul", [ratio, ratio])])])])
    infinite = ctx.add("logical_or", [ctx.add("eq", [x, inf]), ctx.add("eq", [y, inf])])
    return ctx.add("where", [infinite, inf, r])  # also beside a NaN, as C's hypot; inf / inf would make it NaN


def signbit(ctx: Ctx, x):
    """A bool tensor: ``x``'s sign bit (-0.0 included; NaN reads as positive)."""
    zero = ctx.v(0, x.type.dtype)
    if not x.type.dtype.startswith("f"):
        return ctx.add("lt", [x, zero])
    negative_zero = ctx.add("logical_and", [ctx.add("eq", [x, zero]),
                                            ctx.add("lt", [ctx.add("div", [ctx.v(1.0, x.type.dtype), x]), zero])])
    negative = ctx.add("logical_or", [ctx.add("lt", [x, zero]), negative_zero])
    return ctx.add("logical_and", [negative, ctx.add("eq", [x, x])])  # compares are not NaN-safe; NaN tests are


def _signbit(ctx: Ctx, a):
    return signbit(ctx, ctx.v(a))


def _copysign(ctx: Ctx, a, b):
    dt = ctx.out_dtype()
    x = ctx.add("abs", [ctx.v(a, dt)])
    return ctx.add("where", [signbit(ctx, ctx.v(b, dt)), ctx.add("neg", [x]), x])


def _nan_ignoring(op: str):
    def convert(ctx: Ctx, a, b):
        dt = promoted_dtype(a, b)
        x, y = ctx.v(a, dt), ctx.v(b, dt)
        m = ctx.add(op, [x, y])
        if not dt.startswith("f"):
            return m
        m = ctx.add("where", [ctx.add("ne", [y, y]), x, m])
        return ctx.add("where", [ctx.add("ne", [x, x]), y, m])

    return convert


CONVERTERS = {
    aten.exp2.default: _exp2, aten.hypot.default: _hypot, aten.signbit.default: _signbit,
    aten.copysign.Tensor: _copysign, aten.copysign.Scalar: _copysign,
    aten.fmax.default: _nan_ignoring("maximum"), aten.fmin.default: _nan_ignoring("minimum"),
}
