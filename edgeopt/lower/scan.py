"""``cumsum`` written in TIR for CPUs: one running sum per line along the axis, the lines in parallel.

The TE rule (``rules/reduce.py``) writes each output as a masked sum over the whole axis, ``n^2`` adds: fine for the
short axes of masks and for GPUs' threads, but on a CPU the positions of four 4096-token attention masks took 6.1 ms
that way, against 0.04 ms here (``bench/sort_scan.py``, ``sort_scan-20261207-114726.json``). Here each line is one
pass, ``n`` adds. The running sum is kept in float64 (integers: int64, each output wrapping into the result's dtype
as the reference's cast does): as torch's CPU kernel, which sums float32 in double, a long cumsum does not drift.

Lines along the last axis run in parallel; for an inner axis (``x.cumsum(1)`` of ``[B, T, C]``) each task carries a
block of up to ``BLOCK`` neighbouring columns, so that every step reads and writes contiguous memory, and blocks
are made narrower (down to ``MIN_BLOCK``) until there are ``MIN_TASKS`` tasks for the threads.
"""

from __future__ import annotations

import math

from tvm.script import tirx as T

from ..ir.types import TVM_DTYPES, TensorType

#: columns one task carries along an inner axis: at most BLOCK, at least MIN_BLOCK where that makes MIN_TASKS tasks
BLOCK, MIN_BLOCK, MIN_TASKS = 64, 8, 8


def cumsum_kernel(in_types: list[TensorType], attrs: dict, out: TensorType):
    """The PrimFunc ``(x, out)``; None for a scalar or an empty tensor (the TE rule copies or writes nothing)."""
    (x,) = in_types
    if x.rank == 0 or x.numel == 0:
        return None
    ax = attrs["axis"] % x.rank
    outer, n, inner = math.prod(x.shape[:ax]), x.shape[ax], math.prod(x.shape[ax + 1:])
    dt = TVM_DTYPES[x.dtype]
    acc_t = "float64" if x.dtype.startswith("f") else "int64"
    block = min(inner, BLOCK, max(MIN_BLOCK, -(-inner * outer // MIN_TASKS)))
    blocks = -(-inner // block)  # the last one may be partial
    tasks = outer * blocks

    @T.prim_func
    def kernel(x_: T.Buffer(x.shape, dt), o_: T.Buffer(out.shape, dt)):
        xf = T.decl_buffer((outer, n, inner), dt, data=x_.data)
        of = T.decl_buffer((outer, n, inner), dt, data=o_.data)
        acc = T.decl_buffer((tasks, block), acc_t)  # every task's sums, allocated once
        for task in T.parallel(tasks):
            o = T.Bind(task // blocks)
            first = T.Bind(task % blocks * block)
            width = T.Bind(T.min(block, inner - first))
            for e in range(block):
                acc[task, e] = T.Cast(acc_t, 0)
            for i in range(n):
                for e in range(width):
                    acc[task, e] = acc[task, e] + T.Cast(acc_t, xf[o, i, first + e])
                    of[o, i, first + e] = T.Cast(dt, acc[task, e])

    return kernel
