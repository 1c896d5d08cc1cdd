"""``cumsum`` written in TIR for CPUs: one running sum per line along the axis, the lines in parallel.

The TE rule (``rules/reduce.py``) writes each output as a masked sum over the whole axis, ``n^2`` adds: fine for the
short axes of masks and GPUs' threads, but a cumsum over a 4096-token attention mask took 17 ms, and over a
32000-word vocabulary (top-p sampling) 3 s. Here each line is one pass, ``n`` adds. The running sum is kept in
float64 (integers: int64, each output wrapping into the result's dtype as the reference's cast does): as torch's
CPU kernel, which accumulates float32 in double, a long cumsum does not drift.

Lines along the last axis run in parallel; for an inner axis (``x.cumsum(1)`` of ``[B, T, C]``) each task takes a
block of up to ``BLOCK`` neighbouring columns, so that every step reads and writes contiguous memory.
"""

from __future__ import annotations

import math

from tvm.script import tirx as T

from ..ir.types import TVM_DTYPES, TensorType

#: columns one task carries along an inner axis
BLOCK = 64


def cumsum_kernel(in_types: list[TensorType], attrs: dict, out: TensorType):
    """The PrimFunc ``(x, out)``; None for a scalar or an empty tensor (the TE rule copies or writes nothing)."""
    (x,) = in_types
    if x.rank == 0 or x.numel == 0:
        return None
    ax = attrs["axis"] % x.rank
    outer, n, inner = math.prod(x.shape[:ax]), x.shape[ax], math.prod(x.shape[ax + 1:])
    dt = TVM_DTYPES[x.dtype]
    acc_t = "float64" if x.dtype.startswith("f") else "int64"
    block = max(d for d in range(1, min(inner, BLOCK) + 1) if inner % d == 0)  # a divisor: no partial blocks
    tasks = outer * (inner // block)

    @T.prim_func
    def kernel(x_: T.Buffer(x.shape, dt), o_: T.Buffer(out.shape, dt)):
        xf = T.decl_buffer((outer, n, inner), dt, data=x_.data)
        of = T.decl_buffer((outer, n, inner), dt, data=o_.data)
        acc = T.decl_buffer((tasks, block), acc_t)  # every task's sums, allocated once
        for task in T.parallel(tasks):
            o = T.Bind(task // (inner // block))
            first = T.Bind(task % (inner // block) * block)
            for e in range(block):
                acc[task, e] = T.Cast(acc_t, 0)
            for i in range(n):
                for e in range(block):
                    acc[task, e] = acc[task, e] + T.Cast(acc_t, xf[o, i, first + e])
                    of[o, i, first + e] = T.Cast(dt, acc[task, e])

    return kernel
