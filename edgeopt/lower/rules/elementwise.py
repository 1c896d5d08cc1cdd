"""TE rules for elementwise ops."""

from __future__ import annotations

import math

import tvm
from tvm import te

from ...ir.ops.elementwise import POW_BITS
from .. import fast_math, nan_math
from . import rule
from ._te import const, dtype_of, elementwise, round_half_even, tvm_dtype


def _relu(x, a):
    return nan_math.relu(x)


def _gelu(x, a):
    half, one = const(0.5, dtype_of(x)), const(1.0, dtype_of(x))
    if a["approximate"] == "tanh":
        inner = const(math.sqrt(2 / math.pi), dtype_of(x)) * (x + const(0.044715, dtype_of(x)) * x * x * x)
        return half * x * (one + fast_math.tanh(inner))
    return half * x * (one + fast_math.erf(x * const(1 / math.sqrt(2), dtype_of(x))))


def _sigmoid(x, a=None):
    return fast_math.sigmoid(x)


def _hardsigmoid(x, a=None):
    return nan_math.clamp(x + const(3, dtype_of(x)), 0, 6) / const(6, dtype_of(x))


def _log1p(x, a=None):
    """log(1 + x) without losing small x (Kahan: the rounding of 1 + x divides out): log(u) * x / (u - 1)."""
    one = const(1.0, dtype_of(x))
    u = x + one
    exact = te.log(u) * x / (u - one)
    return tvm.tirx.Select(u == one, x, tvm.tirx.Select(tvm.tirx.isinf(u), u, exact))


UNARY = {
    "neg": lambda x, a: -x,
    "abs": lambda x, a: te.abs(x),
    "exp": lambda x, a: fast_math.exp(x),
    "log": lambda x, a: te.log(x),
    "sqrt": lambda x, a: te.sqrt(x),
    "rsqrt": lambda x, a: te.rsqrt(x),
    "reciprocal": lambda x, a: const(1, dtype_of(x)) / x,
    "sin": lambda x, a: te.sin(x),
    "cos": lambda x, a: te.cos(x),
    "tanh": lambda x, a: fast_math.tanh(x),
    "erf": lambda x, a: fast_math.erf(x),
    "floor": lambda x, a: te.floor(x),
    "ceil": lambda x, a: te.ceil(x),
    "round": lambda x, a: round_half_even(x),  # half to even, like torch
    "sigmoid": _sigmoid,
    "relu": _relu,
    "gelu": _gelu,
    "silu": lambda x, a: x * fast_math.sigmoid(x),
    "hardswish": lambda x, a: x * _hardsigmoid(x),
    "hardsigmoid": _hardsigmoid,
    "leaky_relu": lambda x, a: tvm.tirx.Select(x >= const(0, dtype_of(x)), x, x * const(a["alpha"], dtype_of(x))),
    "log1p": _log1p,
    "expm1": lambda x, a: fast_math.expm1(x),
    "trunc": lambda x, a: te.trunc(x),
    "log2": lambda x, a: te.log2(x),
    "log10": lambda x, a: te.log10(x),
}


#: evaluated in float32 on f16 data, then rounded once: f16 arithmetic inside them would lose most digits (GELU's
#: ``1 + erf(x)`` cancels for negative x) or overflow (exp above 11)
IN_F32 = {"exp", "log", "log2", "log10", "sqrt", "rsqrt", "sin", "cos", "tanh", "erf", "sigmoid", "gelu", "silu",
          "log1p", "expm1"}


def _in_f32(f):
    def g(x, a):
        return f(x.astype("float32"), a).astype("float16") if dtype_of(x) == "float16" else f(x, a)

    return g


@rule(*UNARY)
def unary(ins, attrs, out, op):
    f = _in_f32(UNARY[op]) if op in IN_F32 else UNARY[op]
    return elementwise(out, lambda x: f(x, attrs), ins[0], name=op)


def _div(a, b):
    return tvm.tirx.truncdiv(a, b) if dtype_of(a).startswith(("int", "uint")) else a / b


def _compare(f):
    """A comparison; bool operands compared as 0/1 integers (TVM would emit a float compare of i1 values, which
    LLVM rejects: ``(a > 0) != (b > 0)``)."""
    def g(a, b):
        if dtype_of(a) == "bool":
            a, b = a.astype("int32"), b.astype("int32")
        return f(a, b)

    return g


def _not_equal(a, b):
    """a != b, True where either is NaN as in torch: TVM lowers float ``!=`` to LLVM's ordered ``fcmp one``, false
    for NaN, and folds ``x != x`` to false; the NaN tests read the bits (``nan_math.isnan``)."""
    if not nan_math.is_float(dtype_of(a)):
        return a != b
    return tvm.tirx.Or(tvm.tirx.Or(nan_math.isnan(a), nan_math.isnan(b)), a != b)


def _equal(a, b):
    """a == b, False where a is NaN: TVM folds ``x == x`` to true (torch's ``isfinite`` is ``x == x`` and ...)."""
    if not nan_math.is_float(dtype_of(a)):
        return a == b
    return tvm.tirx.And(tvm.tirx.Not(nan_math.isnan(a)), a == b)


def _fmod(a, b):
    """C's fmod: the remainder with the dividend's sign; an integer remainder by 0 is 0 (numpy's), not a trap."""
    if dtype_of(a).startswith(("int", "uint")):
        zero = tvm.tirx.const(0, dtype_of(a))
        return tvm.tirx.Select(b == zero, zero, tvm.tirx.truncmod(a, tvm.tirx.Select(b == zero, zero + 1, b)))
    dt = dtype_of(a)  # libm's fmodf: exact (a - trunc(a / b) * b is not); TVM's fmod has no CPU lowering
    return tvm.tirx.call_pure_extern("float32", "fmodf", a.astype("float32"), b.astype("float32")).astype(dt)


def _pow(a, b):
    """a ** b; on integers as ``ir.ops.elementwise.int_pow`` defines it (TVM's power is float-only): by squaring over
    the exponent's low 6 bits, the multiplies wrapping as torch's do."""
    dt = dtype_of(a)
    if not dt.startswith(("int", "uint")):
        return te.power(a, b)
    one, zero = const(1, dt), const(0, dt)
    unsigned = dt.startswith("uint")
    minus_one = None if unsigned else const(-1, dt)
    out, base = one, a
    for k in range(POW_BITS):  # each factor once: a Select(bit, out * base, out) would double the tree per bit
        out = out * tvm.tirx.Select(((b >> const(k, dt)) & one) != zero, base, one)
        base = base * base
    big = b >= const(1 << POW_BITS, dt)
    if tvm.DataType(dt).bits == 8:  # odd a: the low bits' power (a ** 64 == 1 mod 256); even a: 0
        out = tvm.tirx.Select(tvm.tirx.And(big, (a & one) == zero), zero, out)
    else:
        keep = (a == one) if unsigned else tvm.tirx.Or(a == one, a == minus_one)  # (-1) ** b: its low bit's sign
        out = tvm.tirx.Select(big, tvm.tirx.Select(keep, out, zero), out)
    if unsigned:
        return out
    odd = (b & one) != zero
    small = tvm.tirx.Select(a == one, one, tvm.tirx.Select(a == minus_one, tvm.tirx.Select(odd, minus_one, one), zero))
    return tvm.tirx.Select(b < zero, small, out)


def _shift(left: bool):
    """torch's shifts (``ir.ops.elementwise.shift``): by ``b`` in [0, width); else 0 (left) or the sign fill."""
    def f(a, b):
        dt = dtype_of(a)
        width = tvm.DataType(dt).bits
        ok = tvm.tirx.all(b >= const(0, dt), b < const(width, dt))
        by = tvm.tirx.Select(ok, b, const(0, dt))
        if left:
            return tvm.tirx.Select(ok, a << by, const(0, dt))
        fill = const(0, dt) if dt.startswith("uint") else a >> const(width - 1, dt)
        return tvm.tirx.Select(ok, a >> by, fill)

    return f


def _bits(op):
    """& | ^ on integers; on bools the logical op (LLVM's i1)."""
    t = tvm.tirx
    logical = {"and": t.And, "or": t.Or, "xor": lambda a, b: t.Or(t.And(a, t.Not(b)), t.And(t.Not(a), b))}[op]
    bitwise = {"and": lambda a, b: a & b, "or": lambda a, b: a | b, "xor": lambda a, b: a ^ b}[op]
    return lambda a, b: logical(a, b) if dtype_of(a) == "bool" else bitwise(a, b)


def _atan2(a, b):
    dt = dtype_of(a)  # half precision has no atan2 of its own: computed in f32, as the transcendental activations
    return tvm.tirx.atan2(a.astype("float32"), b.astype("float32")).astype(dt) if dt == "float16" else \
        tvm.tirx.atan2(a, b)


BINARY = {
    "fmod": _fmod, "atan2": _atan2,
    "add": lambda a, b: a + b, "sub": lambda a, b: a - b, "mul": nan_math.multiply, "div": _div,
    "pow": _pow, "maximum": nan_math.maximum, "minimum": nan_math.minimum,
    "eq": _compare(_equal), "ne": _compare(_not_equal), "lt": _compare(lambda a, b: a < b),
    "le": _compare(lambda a, b: a <= b), "gt": _compare(lambda a, b: a > b), "ge": _compare(lambda a, b: a >= b),
    "logical_and": lambda a, b: tvm.tirx.And(a, b), "logical_or": lambda a, b: tvm.tirx.Or(a, b),
    "bitwise_and": _bits("and"), "bitwise_or": _bits("or"), "bitwise_xor": _bits("xor"),
    "shift_left": _shift(True), "shift_right": _shift(False),
}


#: arithmetic on bools, as torch computes it (LLVM has no multiply of i1): product and max are "and"/"or"...
BOOL_BINARY = {"mul": tvm.tirx.And, "minimum": tvm.tirx.And, "add": tvm.tirx.Or, "maximum": tvm.tirx.Or}


@rule(*BINARY)
def binary(ins, attrs, out, op):
    f = BOOL_BINARY[op] if op in BOOL_BINARY and str(ins[0].dtype) == "bool" else BINARY[op]
    return elementwise(out, f, ins[0], ins[1], name=op)


@rule("logical_not")
def logical_not(ins, attrs, out, op):
    return elementwise(out, lambda x: tvm.tirx.Not(x), ins[0], name=op)


@rule("bitwise_not")
def bitwise_not(ins, attrs, out, op):
    return elementwise(out, lambda x: tvm.tirx.Not(x) if dtype_of(x) == "bool" else ~x, ins[0], name=op)


@rule("where")
def where(ins, attrs, out, op):
    return elementwise(out, lambda c, x, y: tvm.tirx.Select(c, x, y), *ins, name=op)


@rule("cast")
def cast(ins, attrs, out, op):
    dt = tvm_dtype(attrs["dtype"])
    if dt == "bool":
        return elementwise(out, lambda x: x != const(0, dtype_of(x)), ins[0], name=op)
    return elementwise(out, lambda x: x.astype(dt), ins[0], name=op)


@rule("clamp")
def clamp(ins, attrs, out, op):
    return elementwise(out, lambda x: nan_math.clamp(x, attrs["min"], attrs["max"]), ins[0], name=op)


@rule("copy")
def copy(ins, attrs, out, op):
    return elementwise(out, lambda x: x, ins[0], name=op)


@rule("batch_norm")
def batch_norm(ins, attrs, out, op):
    x, mean, var, w, b = ins
    eps = const(attrs["eps"], x.dtype)
    return te.compute(x.shape, lambda n, c, *r: (x(n, c, *r) - mean[c]) * te.rsqrt(var[c] + eps) * w[c] + b[c],
                      name=op)
