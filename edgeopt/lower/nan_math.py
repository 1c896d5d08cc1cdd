"""max, min, clamp and ReLU with PyTorch's NaN semantics, as TIR expressions and TE reducers.

PyTorch propagates NaN through every max/min-like op: ``relu(nan)``, ``clamp(nan, 0, 6)``,
``maximum(1, nan)``, ``amax([1, nan])`` and a max pool over a window holding a NaN are all NaN, and
``argmax`` picks the (first) NaN's index. TVM's own ``max``/``min`` do not: on LLVM targets ``te.max(a, b)``
becomes ``select(a > b, a, b)`` (x86 ``vmaxps``), which returns ``b`` when either is NaN, so
``te.max(x, 0)`` turns a NaN into 0 and a max reduction forgets a NaN as soon as a larger value follows; the
CUDA C it emits is ``max(a, b)``, i.e. ``fmaxf``, which drops NaN from either side; WGSL leaves ``max`` on
NaN to the implementation.

Everything here is ordered comparisons and selects, no ``max``/``min`` node: an ordered comparison with a NaN
is false on every IEEE target, so ``select(x < c, c, x)`` falls through to ``x`` when it is NaN. LLVM still
makes that one instruction, ``vmaxps(c, x)``, which returns its second operand ``x`` when either is NaN. Where
either of two operands may be NaN (``maximum``, the reductions) a NaN test picks the second one; it reads the
float's bits as an integer (exponent all ones, mantissa not zero), because the float tests do not survive:
TVM's simplifier folds ``x != x`` to false and lowers ``!=`` to LLVM's ordered ``fcmp one`` (false for NaN
too), TVM 0.27's vectorizer turns a select on ``isnan`` that reads two buffers into branches or gathers, and
WGSL compilers may assume there is no NaN (lavapipe folds ``x != x``). Nor can the NaN case be told apart with
a second comparison: the simplifier treats floats as ordered and proves ``b <= a`` from ``not a < b``.
"""

from __future__ import annotations

import ctypes
import math

import tvm
import tvm_ffi
from tvm import te

from .rules._te import const, dtype_of


def is_float(dtype: str) -> bool:
    return str(dtype).startswith(("float", "bfloat"))


def lower_bound(x, lo):
    """``max(x, lo)`` for a bound ``lo`` that is not NaN (a constant): NaN stays NaN (``vmaxps(lo, x)``)."""
    if not is_float(dtype_of(x)):
        return te.max(x, lo)
    return tvm.tirx.Select(x < lo, lo, x)


def upper_bound(x, hi):
    """``min(x, hi)`` for a bound ``hi`` that is not NaN (a constant): NaN stays NaN (``vminps(hi, x)``)."""
    if not is_float(dtype_of(x)):
        return te.min(x, hi)
    return tvm.tirx.Select(x > hi, hi, x)


def relu(x):
    """``max(x, 0)`` as torch has it: NaN -> NaN, -0.0 -> -0.0."""
    return lower_bound(x, const(0, dtype_of(x)))


def clamp(x, lo=None, hi=None):
    """``min(max(x, lo), hi)`` for constant bounds (either may be None); NaN stays NaN, and ``lo > hi`` gives
    ``hi`` everywhere, as in torch."""
    dt = dtype_of(x)
    if lo is not None:
        x = lower_bound(x, const(lo, dt))
    if hi is not None:
        x = upper_bound(x, const(hi, dt))
    return x


#: float dtype -> (integer dtype of its bits, mask of all bits but the sign, the bits of +inf)
FLOAT_BITS = {"float64": ("int64", (1 << 63) - 1, 0x7FF0000000000000), "float32": ("int32", (1 << 31) - 1, 0x7F800000)}


def constant_value(x) -> float | None:
    """The value of ``x`` when it is a float constant: an immediate, or a read of a tensor computed as one (a scalar
    constant of the graph, inlined into the kernel later); else None."""
    if isinstance(x, tvm.tirx.FloatImm):
        return float(x.value)
    if isinstance(x, tvm.ir.Call) and getattr(x.op, "name", "") == "te.tensor_load":  # TVM 0.27's tensor read
        body = getattr(x.args[0].op, "body", None)
        if body is not None and len(body) == 1 and isinstance(body[0], tvm.tirx.FloatImm):
            return float(body[0].value)
    return None


def isnan(x):
    """Whether ``x`` is NaN, from its bits: without the sign they exceed the bits of +inf (f16 and bf16 are
    widened to f32 first: WGSL has no 16-bit integers). A constant's answer is a constant: CUDA's codegen
    reinterprets by taking an address, which a literal does not have (``max(absmax, 1e-12)`` failed in nvcc)."""
    value = constant_value(x)
    if value is not None:
        return tvm.tirx.const(math.isnan(value), "bool")
    magnitude, inf = _magnitude_bits(x)
    return magnitude > inf


def not_finite(x):
    """Whether ``x`` is inf or NaN, from its bits (as ``isnan``)."""
    magnitude, inf = _magnitude_bits(x)
    return magnitude >= inf


def _magnitude_bits(x):
    """``x``'s bits without the sign, as an integer, and the bits of +inf (f16 and bf16 widened to f32 first)."""
    if dtype_of(x) not in FLOAT_BITS:
        x = x.astype("float32")
    ity, mask, inf = FLOAT_BITS[dtype_of(x)]
    return tvm.tirx.bitwise_and(tvm.tirx.reinterpret(ity, x), const(mask, ity)), const(inf, ity)


def multiply(a, b):
    """``a * b``, NaN where a constant 0 meets inf or NaN: TVM's simplifier rewrites ``x * 0.0`` as ``0.0``, so a
    product with a constant zero is written as ``NaN if x is not finite else 0`` (the zero's sign is not kept:
    LLVM's fast-math flags ignore it anyway)."""
    if is_float(dtype_of(a)):
        for x, c in ((a, constant_value(b)), (b, constant_value(a))):
            if c == 0.0:
                return tvm.tirx.Select(not_finite(x), const(math.nan, dtype_of(x)), const(0.0, dtype_of(x)))
    return a * b


def maximum(a, b):
    """Elementwise ``max(a, b)``, NaN if either is NaN: ``select(a < b, b, a)`` keeps a NaN ``a``
    (``vmaxps(b, a)``), the NaN test on ``b`` a NaN ``b``. In a reduction ``a`` is the accumulator: the test on
    the new element stays off the loop-carried chain."""
    if not is_float(dtype_of(a)):
        return te.max(a, b)
    return tvm.tirx.Select(isnan(b), b, tvm.tirx.Select(a < b, b, a))


def minimum(a, b):
    """Elementwise ``min(a, b)``, NaN if either is NaN."""
    if not is_float(dtype_of(a)):
        return te.min(a, b)
    return tvm.tirx.Select(isnan(b), b, tvm.tirx.Select(b < a, b, a))


def lowest(dtype: str):
    """The identity of a max: -inf for floats (so that a max over -inf values is -inf, not the lowest
    finite float), the smallest value for integers."""
    return const(-math.inf, dtype) if is_float(dtype) else tvm.tirx.min_value(dtype)


def highest(dtype: str):
    """The identity of a min: +inf for floats, the largest value for integers."""
    return const(math.inf, dtype) if is_float(dtype) else tvm.tirx.max_value(dtype)


#: reducers for ``te.compute(..., lambda ...: max_reduce(expr, axis=[...]))``; NaN anywhere gives NaN
max_reduce = te.comm_reducer(maximum, lowest, name="nan_max")
min_reduce = te.comm_reducer(minimum, highest, name="nan_min")


def _reduce(reducer, name):
    def f(x: te.Tensor, axis, keepdims: bool) -> te.Tensor:
        ks = {a: te.reduce_axis((0, x.shape[a]), name=f"k{a}") for a in axis}

        def body(*idx):
            return reducer(x(*_source_index(idx, ks, len(x.shape), keepdims)), axis=list(ks.values()))

        return te.compute(_reduced_shape(x, ks, keepdims), body, name=name)

    f.__doc__ = f"{name} of ``x`` over the axes ``axis`` (topi's signature), NaN if any element is NaN."
    return f


def _reduced_shape(x, axes, keepdims):
    if keepdims:
        return tuple(1 if a in axes else d for a, d in enumerate(x.shape))
    return tuple(d for a, d in enumerate(x.shape) if a not in axes)


def _source_index(idx, axes: dict, rank: int, keepdims: bool) -> list:
    """The input index of output index ``idx``: the reduce axis ``axes[a]`` at each reduced axis ``a``."""
    if keepdims:
        return [axes.get(a, i) for a, i in enumerate(idx)]
    it = iter(idx)
    return [axes[a] if a in axes else next(it) for a in range(rank)]


reduce_max = _reduce(max_reduce, "max")
reduce_min = _reduce(min_reduce, "min")


def _argmax_combine(lhs, rhs):
    """(index, value) pairs: the larger value wins, a NaN beats any number, ties (NaN included) go to the
    smaller index: torch's and numpy's argmax."""
    i0, v0 = lhs
    i1, v1 = rhs
    if is_float(dtype_of(v0)):
        n0, n1 = isnan(v0), isnan(v1)
        tie = tvm.tirx.Or(v1 == v0, tvm.tirx.And(n0, n1))
        better = tvm.tirx.Or(v1 > v0, tvm.tirx.And(n1, tvm.tirx.Not(n0)))
    else:
        tie, better = v1 == v0, v1 > v0
    take = tvm.tirx.Or(better, tvm.tirx.And(tie, i1 < i0))
    return tvm.tirx.Select(take, i1, i0), tvm.tirx.Select(take, v1, v0)


def _argmax_identity(idx_dtype, val_dtype):
    # the index of the identity loses every tie (an all -inf row gives its first index)
    return tvm.tirx.max_value(idx_dtype), lowest(val_dtype)


argmax_reduce = te.comm_reducer(_argmax_combine, _argmax_identity, name="nan_argmax")


def argmax(x: te.Tensor, axis: int, keepdims: bool, index_dtype: str = "int32") -> te.Tensor:
    """The index of the largest element along ``axis`` (the first NaN if any, else the first maximum)."""
    k = te.reduce_axis((0, x.shape[axis]), name="k")

    def body(*idx):
        return argmax_reduce((k.var.astype(index_dtype), x(*_source_index(idx, {axis: k}, len(x.shape), keepdims))),
                             axis=k)

    pair = te.compute(_reduced_shape(x, {axis: k}, keepdims), body, name="argmax_pair")
    return pair[0]


def _register_with_the_schedule() -> None:
    """Tell TVM's schedule analysis about these reducers: rfactor and the cross-thread reductions of GPU
    schedules accept only reducers in its registry ("No matched reducer for the identity and the combiner").

    The registry is a C++ static that outlives the interpreter: when it is destroyed at exit it would release
    the Python callbacks after Python has shut down (a double free, exit status 134). Each callback therefore
    gets one extra reference that is never dropped."""
    register = tvm_ffi.get_global_func("s_tir.schedule.RegisterReducer")

    def keep(fn):
        f = tvm_ffi.convert(fn)
        tvm_ffi.LIB.TVMFFIObjectIncRef(ctypes.c_void_p(f.__chandle__()))
        return f

    def identities(fn):
        return lambda values: [fn(dtype_of(v)) for v in values]

    register(1, keep(lambda x, y: [maximum(x[0], y[0])]), keep(identities(lowest)))
    register(1, keep(lambda x, y: [minimum(x[0], y[0])]), keep(identities(highest)))
    register(2, keep(lambda x, y: list(_argmax_combine(x, y))),
             keep(lambda values: list(_argmax_identity(dtype_of(values[0]), dtype_of(values[1])))))


_register_with_the_schedule()
