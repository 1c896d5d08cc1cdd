"""Elementwise ops: unary math and activations, broadcasting binary ops, comparisons, where, cast, clamp."""

from __future__ import annotations

import math

import numpy as np

from ..registry import REQUIRED, OpDef, OpError, register
from ..types import DTYPES, TensorType
from ._common import broadcast_shapes, need_float, same_dtype

_erf = np.frompyfunc(math.erf, 1, 1)


def _erf_np(x):
    return np.asarray(_erf(np.asarray(x, np.float64)), np.float64)  # (frompyfunc gives a Python float for rank 0)


def _gelu(x, a):
    x64 = x.astype(np.float64)
    if a["approximate"] == "tanh":
        y = 0.5 * x64 * (1 + np.tanh(math.sqrt(2 / math.pi) * (x64 + 0.044715 * x64**3)))
    else:
        y = 0.5 * x64 * (1 + _erf_np(x64 / math.sqrt(2)))
    return y


def _sigmoid(x):
    return 1 / (1 + np.exp(-x.astype(np.float64)))


#: unary op name -> (reference in float64, needs float input, extra attrs)
UNARY = {
    "neg": (lambda x, a: -x, False, {}),
    "abs": (lambda x, a: np.abs(x), False, {}),
    "exp": (lambda x, a: np.exp(x), True, {}),
    "log": (lambda x, a: np.log(x), True, {}),
    "sqrt": (lambda x, a: np.sqrt(x), True, {}),
    "rsqrt": (lambda x, a: 1 / np.sqrt(x), True, {}),
    "reciprocal": (lambda x, a: 1 / x, True, {}),
    "sin": (lambda x, a: np.sin(x), True, {}),
    "cos": (lambda x, a: np.cos(x), True, {}),
    "tanh": (lambda x, a: np.tanh(x), True, {}),
    "erf": (lambda x, a: _erf_np(x), True, {}),
    "floor": (lambda x, a: np.floor(x), True, {}),
    "ceil": (lambda x, a: np.ceil(x), True, {}),
    "round": (lambda x, a: np.round(x), True, {}),
    "sigmoid": (lambda x, a: _sigmoid(x), True, {}),
    "relu": (lambda x, a: np.maximum(x, 0), False, {}),
    "gelu": (_gelu, True, {"approximate": "none"}),
    "silu": (lambda x, a: x * _sigmoid(x), True, {}),
    "hardswish": (lambda x, a: x * np.clip(x + 3, 0, 6) / 6, True, {}),
    "hardsigmoid": (lambda x, a: np.clip(x + 3, 0, 6) / 6, True, {}),
    "leaky_relu": (lambda x, a: np.where(x >= 0, x, x * a["alpha"]), True, {"alpha": 0.01}),
    "log1p": (lambda x, a: np.log1p(x), True, {}),
    "expm1": (lambda x, a: np.expm1(x), True, {}),
    "trunc": (lambda x, a: np.trunc(x), True, {}),
    "log2": (lambda x, a: np.log2(x), True, {}),
    "log10": (lambda x, a: np.log10(x), True, {}),
}


#: traits (see ``edgeopt.ir.registry``): cheap to recompute per read; computed in f32 under precision="fp16"
_CHEAP = {"neg", "relu", "add", "sub", "mul", "div", "maximum", "minimum"}
_KEEP_F32 = {"exp", "log", "log2", "log10", "pow", "rsqrt", "reciprocal"}

DOCS = {
    "neg": "neg(x): -x", "abs": "abs(x): |x|", "exp": "exp(x): e**x (overflows to inf)",
    "log": "log(x): natural logarithm (-inf at 0, NaN below)", "sqrt": "sqrt(x): square root (NaN below 0)",
    "rsqrt": "rsqrt(x): 1 / sqrt(x) (inf at 0)", "reciprocal": "reciprocal(x): 1 / x (inf at 0)",
    "sin": "sin(x), radians", "cos": "cos(x), radians", "tanh": "tanh(x)",
    "erf": "erf(x): the Gauss error function", "floor": "floor(x): round toward -inf",
    "ceil": "ceil(x): round toward +inf", "round": "round(x): to the nearest integer, halves to even (torch.round)",
    "sigmoid": "sigmoid(x): 1 / (1 + e**-x)", "relu": "relu(x): max(x, 0) (NaN stays NaN)",
    "gelu": "gelu(x){approximate='none'|'tanh'}: x * Phi(x), or its tanh approximation",
    "silu": "silu(x): x * sigmoid(x) (swish)", "hardswish": "hardswish(x): x * clamp(x + 3, 0, 6) / 6",
    "hardsigmoid": "hardsigmoid(x): clamp(x + 3, 0, 6) / 6",
    "leaky_relu": "leaky_relu(x){alpha}: x if x >= 0 else alpha * x", "log1p": "log1p(x): log(1 + x), exact near 0",
    "expm1": "expm1(x): e**x - 1, exact near 0", "trunc": "trunc(x): round toward 0",
    "log2": "log2(x): base-2 logarithm (exact at powers of 2)", "log10": "log10(x): base-10 logarithm",
    "add": "add(a, b): a + b, broadcasting", "sub": "sub(a, b): a - b, broadcasting",
    "mul": "mul(a, b): a * b, broadcasting",
    "div": "div(a, b): a / b, broadcasting; integers truncate toward 0 (as C does); x / 0 is inf or NaN for floats",
    "pow": "pow(a, b): a ** b, broadcasting; on integers as torch (wrapping; b < 0 gives 1, +-1 or 0; see int_pow)",
    "maximum": "maximum(a, b): the larger, NaN if either is NaN",
    "minimum": "minimum(a, b): the smaller, NaN if either is NaN", "eq": "eq(a, b): a == b, a bool tensor",
    "ne": "ne(a, b): a != b, a bool tensor", "lt": "lt(a, b): a < b, a bool tensor",
    "le": "le(a, b): a <= b, a bool tensor", "gt": "gt(a, b): a > b, a bool tensor",
    "ge": "ge(a, b): a >= b, a bool tensor", "logical_and": "logical_and(a, b): bool tensors",
    "logical_or": "logical_or(a, b): bool tensors",
    "bitwise_and": "bitwise_and(a, b): a & b, integer or bool tensors",
    "bitwise_or": "bitwise_or(a, b): a | b, integer or bool tensors",
    "bitwise_xor": "bitwise_xor(a, b): a ^ b, integer or bool tensors",
    "shift_left": "shift_left(a, b): a << b on integers, 0 where b < 0 or b >= the bit width (as torch)",
    "shift_right": "shift_right(a, b): a >> b on integers (arithmetic for signed); where b < 0 or b >= the bit "
                   "width, the sign fill (0 for unsigned), as torch",
    "fmod": "fmod(a, b): remainder with the sign of a (C fmod); integer fmod by 0 is 0",
    "atan2": "atan2(a, b): the angle of the point (b, a) in radians, in [-pi, pi]; float only",
}


def _unary(name, fn, needs_float, extra):
    def infer(types, attrs):
        if needs_float:
            need_float(name, types[0])
        return [TensorType(types[0].shape, types[0].dtype)]

    def reference(xs, attrs):
        x = xs[0]
        y = fn(x.astype(np.float64) if x.dtype.kind == "f" else x, attrs)
        return [np.asarray(y).astype(x.dtype)]

    register(OpDef(name, "elementwise", infer, reference, dict(extra), (1, 1), doc=DOCS[name], cheap=name in _CHEAP,
                   fp16="f32" if name in _KEEP_F32 else "f16"))


for _n, (_f, _fl, _ex) in UNARY.items():
    _unary(_n, _f, _fl, _ex)

#: binary op name -> (numpy function, result is bool)
BINARY = {
    "add": (np.add, False), "sub": (np.subtract, False), "mul": (np.multiply, False),
    "div": (None, False), "pow": (np.power, False), "maximum": (np.maximum, False),
    "minimum": (np.minimum, False), "eq": (np.equal, True), "ne": (np.not_equal, True),
    "lt": (np.less, True), "le": (np.less_equal, True), "gt": (np.greater, True),
    "ge": (np.greater_equal, True), "logical_and": (np.logical_and, True),
    "logical_or": (np.logical_or, True), "fmod": (np.fmod, False), "atan2": (np.arctan2, False),
    "bitwise_and": (np.bitwise_and, False), "bitwise_or": (np.bitwise_or, False),
    "bitwise_xor": (np.bitwise_xor, False), "shift_left": (None, False), "shift_right": (None, False),
}
BITWISE = {"bitwise_and", "bitwise_or", "bitwise_xor", "shift_left", "shift_right"}


def shift(a: np.ndarray, b: np.ndarray, left: bool) -> np.ndarray:
    """torch's shifts: by the amount where it is in [0, width); else 0 (left, and right of unsigned values) or the
    sign fill (right of signed ones)."""
    width = 8 * a.dtype.itemsize
    a, b = np.broadcast_arrays(a, b)
    ok = (b >= 0) & (b < width)
    by = np.where(ok, b, 0).astype(a.dtype)
    if left:
        return np.where(ok, np.left_shift(a, by), 0).astype(a.dtype)
    fill = np.right_shift(a, np.asarray(width - 1, a.dtype)) if a.dtype.kind == "i" else np.zeros_like(a)
    return np.where(ok, np.right_shift(a, by), fill).astype(a.dtype)


def _div(a, b):
    if a.dtype.kind in "iu":  # integer division truncates toward zero, like C and TVM; exact (no float64 detour)
        with np.errstate(divide="ignore", over="ignore"):
            q, r = np.floor_divide(a, b), np.remainder(a, b)
        return (q + ((r != 0) & ((a < 0) != (b < 0)))).astype(a.dtype)
    return a / b


#: integer pow squares over this many low bits of the exponent (a kernel's expression grows with each bit)
POW_BITS = 6


def int_pow(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Integer ``a ** b`` as torch computes it (by squaring; an overflow wraps modulo 2**bits), for every exponent
    below 64 and, in 8-bit types, for every exponent: there an odd ``a`` has ``a ** 64 == 1`` (mod 256) and an even
    one ``a ** 8 == 0``, so the exponent's low 6 bits decide. For ``b < 0``: 1 where ``a`` is 1, +-1 where it is -1,
    else 0 (the integer part of ``1 / a**|b|``, as torch). Wider types with ``b >= 64``: exact for ``a`` -1, 0, 1 and
    any even ``a`` (0); an odd ``|a| >= 3`` gives 0 where torch gives its wrapped value (the product overflows 64
    bits: no model computes it on purpose)."""
    a, b = np.broadcast_arrays(a, b)
    out, base = np.ones(a.shape, a.dtype), a.copy()
    for k in range(POW_BITS):
        out = out * np.where(((b >> k) & 1) != 0, base, 1).astype(a.dtype)
        base = base * base
    big = b >= 1 << POW_BITS
    if a.dtype.itemsize == 1:  # odd: the low bits' power; even: 0
        out = np.where(big & (a % 2 == 0), 0, out)
    else:
        out = np.where(big & (a != 1) & (a != -1), 0, np.where(big & (a == -1) & ((b & 1) == 0), 1, out))
    if a.dtype.kind == "u":
        return out.astype(a.dtype)
    odd = (b & 1) != 0
    return np.where(b < 0, np.where(a == 1, 1, np.where(a == -1, np.where(odd, -1, 1), 0)), out).astype(a.dtype)


def _binary(name, fn, is_bool):
    def infer(types, attrs):
        dt = same_dtype(name, types)
        if name in ("div", "pow") and dt == "bool":
            raise OpError(f"{name} of bool tensors")
        if name == "atan2":
            need_float(name, types[0])
        if name in BITWISE and (dt.startswith("f") or (dt == "bool" and name.startswith("shift"))):
            raise OpError(f"{name} of {dt} tensors (integers{'' if name.startswith('shift') else ' or bools'})")
        return [TensorType(broadcast_shapes(types[0].shape, types[1].shape), "bool" if is_bool else dt)]

    def reference(xs, attrs):
        a, b = xs
        if name.startswith("shift"):
            return [shift(a, b, name == "shift_left")]
        f = _div if name == "div" else int_pow if name == "pow" and a.dtype.kind in "iu" else fn
        y = f(a.astype(np.float64), b.astype(np.float64)) if a.dtype.kind == "f" and not is_bool else f(a, b)
        return [np.asarray(y).astype(np.bool_ if is_bool else a.dtype)]

    register(OpDef(name, "elementwise", infer, reference, {}, (2, 2), doc=DOCS[name], cheap=name in _CHEAP,
                   fp16="f32" if name in _KEEP_F32 else "f16"))


for _n, (_f, _b) in BINARY.items():
    _binary(_n, _f, _b)


def _logical_not_infer(types, attrs):
    return [TensorType(types[0].shape, "bool")]


register(OpDef("logical_not", "elementwise", _logical_not_infer,
               lambda xs, a: [np.logical_not(xs[0])], {}, (1, 1), doc="logical_not(x): not x, a bool tensor"))


def _bitwise_not_infer(types, attrs):
    if types[0].dtype.startswith("f"):
        raise OpError(f"bitwise_not of {types[0].dtype} tensors (integers or bools)")
    return [types[0]]


register(OpDef("bitwise_not", "elementwise", _bitwise_not_infer,
               lambda xs, a: [np.invert(xs[0])], {}, (1, 1), doc="bitwise_not(x): ~x, integer or bool tensors"))

def _where_infer(types, attrs):
    c, x, y = types
    if c.dtype != "bool":
        raise OpError(f"where: condition must be bool, got {c.dtype}")
    dt = same_dtype("where", [x, y])
    return [TensorType(broadcast_shapes(c.shape, x.shape, y.shape), dt)]


register(OpDef("where", "elementwise", _where_infer,
               lambda xs, a: [np.where(xs[0], xs[1], xs[2]).astype(xs[1].dtype)], {}, (3, 3),
               doc="where(cond, x, y): x where cond else y, with broadcasting", cheap=True))


def _cast_infer(types, attrs):
    if attrs["dtype"] not in DTYPES:
        raise OpError(f"cast: unknown dtype {attrs['dtype']!r}")
    return [TensorType(types[0].shape, attrs["dtype"])]


def _cast_ref(xs, a):
    x, dt = xs[0], DTYPES[a["dtype"]]
    if x.dtype.kind == "f" and dt.kind in "iu":
        x = np.trunc(x)  # float -> int truncates, like torch and C
    return [x.astype(dt)]


register(OpDef("cast", "elementwise", _cast_infer, _cast_ref, {"dtype": REQUIRED}, (1, 1), cheap=True,
               doc="cast(x){dtype}: convert; float to integer truncates toward 0, as torch does"))


def _clamp_infer(types, attrs):
    if attrs["min"] is None and attrs["max"] is None:
        raise OpError("clamp needs min or max")
    return [TensorType(types[0].shape, types[0].dtype)]


def _clamp_ref(xs, a):
    x = xs[0]
    lo = -np.inf if a["min"] is None else a["min"]
    hi = np.inf if a["max"] is None else a["max"]
    return [np.clip(x, lo, hi).astype(x.dtype)]


register(OpDef("clamp", "elementwise", _clamp_infer, _clamp_ref, {"min": None, "max": None}, (1, 1),
               doc="clamp(x){min, max}: relu6 is clamp{min=0, max=6}", cheap=True))
