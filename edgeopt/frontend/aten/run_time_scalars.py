"""ATen -> IR converters for numbers read out of tensors at run time: ``p.item()`` (``_local_scalar_dense``), the
Python arithmetic on it, and the ``select`` / ``slice`` that index with it.

A decoder indexes its cache at the current position: ``cache[:, p]`` with ``p`` a 0-d tensor becomes, under
torch.export, ``select(cache, 1, p.item())``, where ``p.item()`` is a symbol whose value only the call knows. Such a
number is a 0-d IR tensor; ``+ - * / // %``, ``-``, ``float()``, ``max`` and ``min`` on it are elementwise ops (in
i64 or f32, where Python computes in arbitrary-precision ints and doubles), and a ``select`` at it is a
``take`` (negative positions counted from the end, as torch does). A slice between such numbers
(``cache[:, p:p + 4]``) has a length torch.export cannot tell (it clips the bounds to the axis) and is refused with
the rewrite that works: ``cache.index_select(1, p + torch.arange(4))``.
"""

from __future__ import annotations

import operator

import torch

from .ctx import aten, ir_dtype, norm_dim, number_dtype


def _local_scalar_dense(ctx, t):
    """``t.item()``: the one element of ``t`` as a 0-d tensor."""
    tv = ctx.v(t)
    return tv if tv.type.rank == 0 else ctx.add("reshape", [tv], {"shape": []})


def _number(ctx, a):
    """A number (Python, folded from constants, or known at run time) as a 0-d IR value: integers as i64, as
    Python computes them (in 64 bits here), floats as f32."""
    a = ctx.literal(a)
    if isinstance(a, (bool, int, float)):
        return ctx.scalar(a, number_dtype(a))
    v = ctx.v(a)
    return ctx.cast(v, "i64") if v.type.dtype in ("i32", "i16", "i8", "u8", "bool") else v


def _arith(op: str):
    def convert(ctx, a, b):
        x, y = _number(ctx, a), _number(ctx, b)
        if x.type.dtype != y.type.dtype:  # an int and a float: Python computes in float
            x, y = ctx.cast(x, "f32"), ctx.cast(y, "f32")
        return ctx.add(op, [x, y])
    return convert


def _truediv(ctx, a, b):
    """Python's ``a / b``: in float, also for two integers."""
    return ctx.add("div", [ctx.cast(_number(ctx, a), "f32"), ctx.cast(_number(ctx, b), "f32")])


def _floordiv(ctx, a, b):
    """Python's ``a // b`` on integers: rounds toward minus infinity."""
    x, y = _number(ctx, a), _number(ctx, b)
    if x.type.dtype != "i64" or y.type.dtype != "i64":
        raise NotImplementedError("of floating-point numbers")
    q = ctx.add("div", [x, y])  # integer division truncates toward zero
    inexact = ctx.add("ne", [ctx.add("mul", [q, y]), x])
    signs_differ = ctx.add("lt", [ctx.add("mul", [x, y]), ctx.scalar(0, "i64")])
    down = ctx.add("logical_and", [inexact, signs_differ])
    return ctx.add("sub", [q, ctx.cast(down, "i64")])


def _mod(ctx, a, b):
    """Python's ``a % b`` on integers: the sign of ``b``."""
    x, y = _number(ctx, a), _number(ctx, b)
    return ctx.add("sub", [x, ctx.add("mul", [_floordiv(ctx, x, y), y])])


def _neg(ctx, a):
    return ctx.add("neg", [_number(ctx, a)])


def _sym_float(ctx, a):
    return ctx.cast(_number(ctx, a), "f32")


def _scalar_tensor(ctx, a, dtype=None, **kw):
    """``torch.scalar_tensor(p.item())`` (``torch.where(c, x, p.item())``): the number as a 0-d tensor."""
    return ctx.cast(_number(ctx, a), ir_dtype(dtype) if dtype is not None else "f32")


def wrap_negative(ctx, at, n: int):
    """Positions ``at`` (i64) counted from the end where negative, as torch indexes an axis of size ``n``."""
    neg = ctx.add("lt", [at, ctx.scalar(0, "i64")])
    return ctx.add("where", [neg, ctx.add("add", [at, ctx.scalar(n, "i64")]), at])


def select_at(ctx, xv, dim, index):
    """``x.select(dim, index)`` with ``index`` known only at run time: a ``take`` of one position."""
    ax = norm_dim(dim, xv.type.rank)
    return ctx.add("take", [xv, wrap_negative(ctx, _number(ctx, index), xv.type.shape[ax])], {"axis": ax})


#: Python's arithmetic on numbers (not ATen ops): folded by the frontend where every operand is a constant
NUMBER_OPS = {
    operator.add: _arith("add"), operator.sub: _arith("sub"), operator.mul: _arith("mul"),
    operator.truediv: _truediv, operator.floordiv: _floordiv, operator.mod: _mod, operator.neg: _neg,
    torch.sym_float: _sym_float, torch.sym_max: _arith("maximum"), torch.sym_min: _arith("minimum"),
}
CONVERTERS = {aten._local_scalar_dense.default: _local_scalar_dense, aten.scalar_tensor.default: _scalar_tensor,
              **NUMBER_OPS}
