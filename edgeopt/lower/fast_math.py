"""exp, erf, tanh and sigmoid for float32 as plain arithmetic, so that kernels vectorize them.

TVM 0.27 lowers ``exp``/``erf``/``tanh`` on LLVM CPU targets to scalar libm calls (``expf``, ``erff``), one
call per element even inside a vectorized loop: a GELU epilogue then costs more than its matmul. These
versions are built from multiplies, adds, a floor, a division and one exponent-bits trick, which LLVM
turns into SIMD code on every target. Other dtypes keep TVM's intrinsics.

Accuracy (float32, checked against numpy in tests/lower/test_fast_math.py):
    exp      relative error < 2e-7 over [-86.5, 88.72]; 0 below -86.5 (true value < 2.7e-38), inf above 88.72
    erf      absolute error < 3e-7
    tanh     absolute error < 1e-7, relative < 3e-7
    sigmoid  absolute error < 1e-7
NaN in, NaN out for all four.

exp: x = n*ln2 + r with |r| <= ln2/2 (ln2 split in two parts so that r is exact), exp(r) by its Taylor
series to degree 7 (truncation < 1e-8 relative), times 2**n made by writing n + 127 into the exponent bits.
erf: its Maclaurin series for |x| < 0.5; above, Abramowitz & Stegun 7.1.26 (|error| <= 1.5e-7).
tanh: its Maclaurin series for |x| < 0.3; above, 1 - 2 / (exp(2|x|) + 1) with the sign restored.
"""

from __future__ import annotations

import math

import tvm
from tvm import te

from . import nan_math

F32 = "float32"
_LN2_HI, _LN2_LO = 0.693145751953125, 1.428606765330187e-06  # ln 2 = hi + lo; hi has 12 significant bits
_EXP_MAX, _EXP_MIN = 88.72283935546875, -86.5  # exp(-86.5) = 2.7e-38, near the smallest normal float
_AS_P = 0.3275911
_AS_A = (0.254829592, -0.284496736, 1.421413741, -1.453152027, 1.061405429)


def _c(v: float):
    return tvm.tirx.const(v, F32)


def _dtype(x) -> str:
    ty = getattr(x, "ty", None)
    return str(ty) if ty is not None else str(x.dtype)


def _let(value, body):
    """``body(v)`` with ``v`` bound once to ``value``: the formulas use their argument many times, and an
    expression tree repeated in place grows with every use (the fused epilogue of a GELU linear did)."""
    var = tvm.tirx.Var("fm", _dtype(value))
    return tvm.tirx.Let(var, value, body(var))


def _poly(x, coeffs):
    """c0 + c1 x + c2 x^2 + ... by Horner's rule."""
    acc = _c(coeffs[-1])
    for c in reversed(coeffs[:-1]):
        acc = acc * x + _c(c)
    return acc


def _is_nan(x):
    return tvm.tirx.isnan(x)  # not ``x != x``: the simplifier folds that to false


def exp(x):
    if _dtype(x) != F32:
        return te.exp(x)
    return _let(x, _exp)


def _exp(x):
    def reduced(xc, n):
        r = xc - n * _c(_LN2_HI) - n * _c(_LN2_LO)
        p = _let(r, lambda r: _poly(r, [1.0 / math.factorial(k) for k in range(8)]))
        # 2**n as 2 * 2**(n-1): x is clamped to [-86.5, 88.72], so n is in [-125, 128] and n - 1 + 127 is a
        # normal float's exponent field
        e = te.min(te.max(n.astype("int32") + 126, 1), 254)
        half_two_n = tvm.tirx.reinterpret(F32, tvm.tirx.shift_left(e, tvm.tirx.const(23, "int32")))
        return p * half_two_n * _c(2.0)

    def clamped(xc):
        return _let(te.floor(xc * _c(1 / math.log(2)) + _c(0.5)), lambda n: reduced(xc, n))

    # the clamp lets NaN through (nan_math's selects, not max/min): NaN then stays NaN through the arithmetic on
    # targets whose compiler drops the final isnan test (WGSL compilers may assume no NaN: lavapipe folds
    # ``x != x`` to false and its min/max return the number)
    y = _let(nan_math.clamp(x, _EXP_MIN, _EXP_MAX), clamped)
    y = tvm.tirx.Select(x > _c(_EXP_MAX), _c(math.inf), y)
    y = tvm.tirx.Select(x < _c(_EXP_MIN), _c(0.0), y)
    return tvm.tirx.Select(_is_nan(x), x, y)


def expm1(x):
    """exp(x) - 1 without losing small x (Kahan: the rounding of u = exp(x) divides out): (u - 1) * x / log(u)."""
    if _dtype(x) != F32:
        return te.exp(x) - tvm.tirx.const(1.0, _dtype(x))
    return _let(x, lambda x: _let(_exp(x), lambda u: _expm1(x, u)))


def _expm1(x, u):
    one = _c(1.0)
    y = tvm.tirx.Select(u == one, x, (u - one) * x / te.log(u))
    y = tvm.tirx.Select(u == _c(0.0), -one, y)  # x -> -inf: log(u) is -inf
    return tvm.tirx.Select(tvm.tirx.isinf(u), u, y)


def erf(x):
    if _dtype(x) != F32:
        return te.erf(x)
    return _let(x, lambda x: _let(x * x, lambda x2: _erf(x, x2)))


def _erf(x, x2):
    a = te.abs(x)
    # 2/sqrt(pi) * (x - x^3/3 + x^5/10 - x^7/42 + x^9/216 - x^11/1320 + x^13/9360)
    series = [(-1) ** k / (math.factorial(k) * (2 * k + 1)) for k in range(7)]
    small = x * _poly(x2, [c * 2 / math.sqrt(math.pi) for c in series])
    big = _let(_c(1.0) / (_c(1.0) + _c(_AS_P) * a),
               lambda t: _c(1.0) - t * _poly(t, list(_AS_A)) * _exp(-x2))
    y = tvm.tirx.Select(a < _c(0.5), small, _let(big, lambda b: tvm.tirx.Select(x < _c(0.0), -b, b)))
    return tvm.tirx.Select(_is_nan(x), x, y)


def tanh(x):
    if _dtype(x) != F32:
        return te.tanh(x)
    return _let(x, _tanh)


def _tanh(x):
    a = te.abs(x)
    x2 = x * x
    # x - x^3/3 + 2x^5/15 - 17x^7/315 + 62x^9/2835
    small = x * _poly(x2, [1.0, -1 / 3, 2 / 15, -17 / 315, 62 / 2835])
    big = _c(1.0) - _c(2.0) / (_exp(a * _c(2.0)) + _c(1.0))
    y = tvm.tirx.Select(a < _c(0.3), small, _let(big, lambda b: tvm.tirx.Select(x < _c(0.0), -b, b)))
    return tvm.tirx.Select(_is_nan(x), x, y)


def sigmoid(x):
    if _dtype(x) != F32:
        return te.sigmoid(x)
    return _c(1.0) / (_c(1.0) + exp(-x))
