"""ATen -> IR converters: elementwise math, comparisons, casts, identities and constant-like tensors."""

from __future__ import annotations

import math

import torch

from .ctx import Ctx, aten, promoted_dtype


def _binary(op, compare=False):
    def convert(ctx: Ctx, a, b, alpha=None):
        dt = promoted_dtype(a, b) if compare else ctx.out_dtype()
        x, y = ctx.v(a, dt), ctx.v(b, dt)
        if alpha is not None and alpha != 1:
            y = ctx.add("mul", [y, ctx.scalar(alpha, dt)])
        if op == "div" and isinstance(b, (int, float)) and b == 0 and dt.startswith("f"):
            # x / 0.0 is x * inf exactly (NaN for 0 and NaN, signed inf otherwise); TVM's constant folder would
            # stop on the division
            return ctx.add("mul", [x, ctx.scalar(math.copysign(math.inf, b), dt)])
        return ctx.add(op, [x, y])

    return convert


def _as_bool(ctx: Ctx, a):
    """A tensor as bool: nonzero is True (NaN too), as torch's logical ops read numbers."""
    x = ctx.v(a)
    return x if x.type.dtype == "bool" else ctx.add("ne", [x, ctx.v(0, x.type.dtype)])


def _logical(op):
    def convert(ctx: Ctx, a, b):
        return ctx.add(op, [_as_bool(ctx, a), _as_bool(ctx, b)])

    return convert


def _bitwise(op):
    """Bit operations (and, or, xor; shifts) on integer or bool tensors, in torch's promoted dtype."""
    def convert(ctx: Ctx, a, b):
        dt = ctx.out_dtype()
        return ctx.add(op, [ctx.v(a, dt), ctx.v(b, dt)])

    return convert


def _bitwise_not(ctx: Ctx, a):
    return ctx.add("bitwise_not", [ctx.v(a)])


def _float_test(kind):
    """isnan / isinf / isposinf / isneginf / isfinite with comparisons (an integer or bool tensor is finite)."""
    def convert(ctx: Ctx, a):
        x = ctx.v(a)
        if not x.type.dtype.startswith(("f", "bf")):  # integers and bools: all finite, never NaN or inf
            return ctx.add("eq" if kind == "isfinite" else "ne", [x, x])
        inf = ctx.v(math.inf, x.type.dtype)
        if kind == "isnan":
            return ctx.add("ne", [x, x])  # True only for NaN (the lowering keeps NaN tests exact)
        if kind == "isposinf":
            return ctx.add("eq", [x, inf])
        if kind == "isneginf":
            return ctx.add("eq", [x, ctx.v(-math.inf, x.type.dtype)])
        isinf = ctx.add("eq", [ctx.add("abs", [x]), inf])
        if kind == "isinf":
            return isinf
        # isfinite: neither inf nor NaN (``abs(x) < inf`` is not NaN-safe once LLVM assumes no NaN in a compare)
        return ctx.add("logical_not", [ctx.add("logical_or", [isinf, ctx.add("ne", [x, x])])])

    return convert


def _rsub(ctx, a, b, alpha=1):
    dt = ctx.out_dtype()
    x, y = ctx.v(a, dt), ctx.v(b, dt)
    if alpha != 1:
        x = ctx.add("mul", [x, ctx.scalar(alpha, dt)])
    return ctx.add("sub", [y, x])


def _div_mode(ctx, a, b, rounding_mode=None):
    dt = ctx.out_dtype()
    if rounding_mode is None:
        return ctx.add("div", [ctx.v(a, dt), ctx.v(b, dt)])
    fdt = dt if dt in ("f32", "f16", "f64") else "f32"
    q = ctx.add("div", [ctx.v(a, fdt), ctx.v(b, fdt)])
    q = ctx.add("floor" if rounding_mode == "floor" else "ceil", [q]) if rounding_mode == "floor" else \
        ctx.add("cast", [ctx.add("cast", [q], {"dtype": "i64"})], {"dtype": fdt})
    return ctx.cast(q, dt)


def _unary(op, **fixed):
    def convert(ctx: Ctx, a, *rest, **kw):
        x = ctx.v(a, ctx.out_dtype())
        attrs = dict(fixed)
        if op == "gelu":
            attrs["approximate"] = kw.get("approximate", rest[0] if rest else "none")
        if op == "leaky_relu":
            attrs["alpha"] = float(rest[0]) if rest else float(kw.get("negative_slope", 0.01))
        return ctx.add(op, [x], attrs)

    return convert


def _clamp(ctx, a, min=None, max=None):
    x = ctx.v(a, ctx.out_dtype())
    if min is None and max is None:
        return x
    if isinstance(min, torch.fx.Node) or isinstance(max, torch.fx.Node):
        if min is not None:
            x = ctx.add("maximum", [x, ctx.v(min, x.type.dtype)])
        if max is not None:
            x = ctx.add("minimum", [x, ctx.v(max, x.type.dtype)])
        return x
    return ctx.add("clamp", [x], {"min": None if min is None else float(min),
                                  "max": None if max is None else float(max)})


def _pow(ctx, a, b):
    dt = ctx.out_dtype()
    if not isinstance(b, torch.fx.Node):
        x = ctx.v(a, dt)
        if b == 2:
            return ctx.add("mul", [x, x])
        if b == 0.5:
            return ctx.add("sqrt", [x])
        if b == 1:
            return x
    return ctx.add("pow", [ctx.v(a, dt), ctx.v(b, dt)])


def _where(ctx, c, a, b):
    dt = ctx.out_dtype()
    return ctx.add("where", [ctx.v(c, "bool"), ctx.v(a, dt), ctx.v(b, dt)])


def _masked_fill(ctx, a, mask, value):
    dt = ctx.out_dtype()
    return ctx.add("where", [ctx.v(mask, "bool"), ctx.v(value, dt), ctx.v(a, dt)])


def _to_dtype(ctx, a, *args, **kw):
    return ctx.cast(ctx.v(a), ctx.out_dtype())


def _native_dropout(ctx, a, p, train):
    """``F.dropout(x, p, training=True)``: random at every call, refused (in eval mode, or with
    ``training=self.training``, torch.export leaves dropout out)."""
    if train and p:
        raise NotImplementedError(f"dropout with training=True (p={p:g}: random at every call); compile the model "
                                  "in eval mode and call F.dropout(x, p, training=self.training)")
    return _identity(ctx, a), None


def _identity(ctx, a, *args, **kw):
    return ctx.v(a)


def _logical_not(ctx, a):
    return ctx.add("logical_not", [ctx.v(a, "bool")])



def _sign(ctx, a):
    """(x > 0) - (x < 0), as torch computes it: -1, 0 or 1, and 0 for NaN and both zeros."""
    x = ctx.v(a)
    dt = x.type.dtype
    if dt == "bool":
        return x
    zero = ctx.v(0, dt)
    pos = ctx.cast(ctx.add("gt", [x, zero]), dt)
    return pos if dt.startswith("u") else ctx.add("sub", [pos, ctx.cast(ctx.add("lt", [x, zero]), dt)])


def _elu(ctx, a, alpha=1.0, scale=1.0, input_scale=1.0):
    """scale * (x if x > 0 else alpha * expm1(input_scale * x)), as torch computes it (SELU and CELU too)."""
    x = ctx.v(a)
    dt = x.type.dtype
    neg = ctx.add("expm1", [x if input_scale == 1 else ctx.add("mul", [x, ctx.v(float(input_scale), dt)])])
    if alpha != 1:
        neg = ctx.add("mul", [neg, ctx.v(float(alpha), dt)])
    pos = x
    if scale != 1:
        pos, neg = (ctx.add("mul", [v, ctx.v(float(scale), dt)]) for v in (x, neg))
    return ctx.add("where", [ctx.add("gt", [x, ctx.v(0.0, dt)]), pos, neg])


def _remainder(ctx, a, b):
    """Python's modulo (the divisor's sign), from C's fmod as torch computes it: fmod, plus b where the signs
    differ and the remainder is not 0."""
    dt = ctx.out_dtype()
    x, y = ctx.v(a, dt), ctx.v(b, dt)
    m = ctx.add("fmod", [x, y])
    zero = ctx.v(0, dt)
    signs_differ = ctx.add("where", [ctx.add("lt", [m, zero]), ctx.add("ge", [y, zero]), ctx.add("lt", [y, zero])])
    fix = ctx.add("logical_and", [ctx.add("ne", [m, zero]), signs_differ])
    return ctx.add("where", [fix, ctx.add("add", [m, y]), m])


def _no_op(ctx, *args, **kw):
    return None


def _scalar_tensor_like(ctx, x, value, *args, **kw):
    """full_like / zeros_like / ones_like of a non-constant tensor: the result only depends on the shape."""
    meta = ctx.node.meta["val"]
    arr = torch.full(tuple(ctx.out_shape()), value, dtype=meta.dtype)
    return ctx.const(arr, ctx.node.name)


CONVERTERS = {
    aten.add.Tensor: _binary("add"), aten.add.Scalar: _binary("add"),
    aten.sub.Tensor: _binary("sub"), aten.sub.Scalar: _binary("sub"), aten.rsub.Scalar: _rsub,
    aten.rsub.Tensor: _rsub,
    aten.mul.Tensor: _binary("mul"), aten.mul.Scalar: _binary("mul"),
    aten.div.Tensor: _binary("div"), aten.div.Scalar: _binary("div"), aten.div.Tensor_mode: _div_mode,
    aten.pow.Tensor_Scalar: _pow, aten.pow.Tensor_Tensor: _pow, aten.pow.Scalar: _pow,
    aten.maximum.default: _binary("maximum"), aten.minimum.default: _binary("minimum"),
    aten.atan2.default: _binary("atan2"),
    aten.isnan.default: _float_test("isnan"), aten.isinf.default: _float_test("isinf"),
    aten.isposinf.default: _float_test("isposinf"), aten.isneginf.default: _float_test("isneginf"),
    aten.isfinite.default: _float_test("isfinite"),
    aten.eq.Tensor: _binary("eq", True), aten.eq.Scalar: _binary("eq", True),
    aten.ne.Tensor: _binary("ne", True), aten.ne.Scalar: _binary("ne", True),
    aten.lt.Tensor: _binary("lt", True), aten.lt.Scalar: _binary("lt", True),
    aten.le.Tensor: _binary("le", True), aten.le.Scalar: _binary("le", True),
    aten.gt.Tensor: _binary("gt", True), aten.gt.Scalar: _binary("gt", True),
    aten.ge.Tensor: _binary("ge", True), aten.ge.Scalar: _binary("ge", True),
    aten.logical_and.default: _logical("logical_and"), aten.logical_or.default: _logical("logical_or"),
    aten.logical_xor.default: _logical("ne"),
    aten.bitwise_and.Tensor: _bitwise("bitwise_and"), aten.bitwise_or.Tensor: _bitwise("bitwise_or"),
    aten.bitwise_xor.Tensor: _bitwise("bitwise_xor"), aten.bitwise_and.Scalar: _bitwise("bitwise_and"),
    aten.bitwise_or.Scalar: _bitwise("bitwise_or"), aten.bitwise_xor.Scalar: _bitwise("bitwise_xor"),
    aten.__lshift__.Scalar: _bitwise("shift_left"), aten.__lshift__.Tensor: _bitwise("shift_left"),
    aten.__rshift__.Scalar: _bitwise("shift_right"), aten.__rshift__.Tensor: _bitwise("shift_right"),
    aten.bitwise_left_shift.Tensor: _bitwise("shift_left"), aten.bitwise_right_shift.Tensor: _bitwise("shift_right"),
    aten.bitwise_left_shift.Tensor_Scalar: _bitwise("shift_left"),
    aten.bitwise_right_shift.Tensor_Scalar: _bitwise("shift_right"),
    aten.bitwise_left_shift.Scalar_Tensor: _bitwise("shift_left"),
    aten.bitwise_right_shift.Scalar_Tensor: _bitwise("shift_right"), aten.bitwise_and.Scalar_Tensor: _bitwise(
        "bitwise_and"), aten.bitwise_or.Scalar_Tensor: _bitwise("bitwise_or"),
    aten.bitwise_xor.Scalar_Tensor: _bitwise("bitwise_xor"),
    aten.logical_not.default: _logical_not, aten.bitwise_not.default: _bitwise_not,
    aten.where.self: _where, aten.masked_fill.Scalar: _masked_fill, aten.masked_fill.Tensor: _masked_fill,
    aten.neg.default: _unary("neg"), aten.abs.default: _unary("abs"), aten.exp.default: _unary("exp"),
    aten.log.default: _unary("log"), aten.log2.default: _unary("log2"), aten.log10.default: _unary("log10"),
    aten.sqrt.default: _unary("sqrt"), aten.rsqrt.default: _unary("rsqrt"),
    aten.reciprocal.default: _unary("reciprocal"), aten.sin.default: _unary("sin"),
    aten.cos.default: _unary("cos"), aten.tanh.default: _unary("tanh"), aten.erf.default: _unary("erf"),
    aten.floor.default: _unary("floor"), aten.ceil.default: _unary("ceil"), aten.round.default: _unary("round"),
    aten.sigmoid.default: _unary("sigmoid"), aten.relu.default: _unary("relu"),
    aten.gelu.default: _unary("gelu"), aten.silu.default: _unary("silu"),
    aten.hardswish.default: _unary("hardswish"), aten.hardsigmoid.default: _unary("hardsigmoid"),
    aten.leaky_relu.default: _unary("leaky_relu"),
    aten.log1p.default: _unary("log1p"), aten.expm1.default: _unary("expm1"), aten.trunc.default: _unary("trunc"),
    aten.sign.default: _sign, aten.elu.default: _elu,
    aten.fmod.Scalar: _binary("fmod"), aten.fmod.Tensor: _binary("fmod"),
    aten.remainder.Scalar: _remainder, aten.remainder.Tensor: _remainder,
    aten.hardtanh.default: lambda ctx, a, lo=-1.0, hi=1.0: _clamp(ctx, a, lo, hi),
    aten.relu6.default: lambda ctx, a: _clamp(ctx, a, 0.0, 6.0),
    aten.clamp.default: _clamp, aten.clamp.Tensor: _clamp,
    aten.clamp_min.default: lambda ctx, a, lo: _clamp(ctx, a, lo, None),
    aten.clamp_max.default: lambda ctx, a, hi: _clamp(ctx, a, None, hi),
    aten._to_copy.default: _to_dtype, aten.to.dtype: _to_dtype, aten.type_as.default: _to_dtype,
    aten.clone.default: _identity, aten.alias.default: _identity, aten.detach.default: _identity,
    aten.contiguous.default: _identity, aten.lift_fresh_copy.default: _identity,
    aten.dropout.default: _identity, aten.native_dropout.default: _native_dropout,
    aten._assert_tensor_metadata.default: _no_op,
    aten.full_like.default: _scalar_tensor_like,
    aten.zeros_like.default: lambda ctx, x, *a, **k: _scalar_tensor_like(ctx, x, 0),
    aten.ones_like.default: lambda ctx, x, *a, **k: _scalar_tensor_like(ctx, x, 1),
}
