"""``index_copy`` written in TIR: copy ``x`` to the output (unless the two are one buffer), then write source slice
``i`` at position ``index[i]`` along the axis, in order, skipping positions outside ``[0, n)``.

Updating a KV cache in place (the output IS the state's buffer) this writes only the new rows: O(tokens), not
O(cache). TE cannot express a write at a computed position, hence TIR. The buffers may alias (``tir.noalias`` is
off): the copy is left out when the lowering knows they are one (``inplace``).
"""

from __future__ import annotations

import math

from tvm.script import tirx as T

from ..ir.types import TVM_DTYPES, TensorType


def index_copy_kernel(in_types: list[TensorType], attrs: dict, out: TensorType, inplace: bool = False):
    """The PrimFunc ``(x, source, index, out)``."""
    x, src, index = in_types
    ax = attrs["axis"] % len(x.shape)
    outer = math.prod(x.shape[:ax])
    n = x.shape[ax]
    inner = math.prod(x.shape[ax + 1:])
    count = index.shape[0]
    dt, it = TVM_DTYPES[x.dtype], TVM_DTYPES[index.dtype]
    total = outer * n * inner

    @T.prim_func
    def kernel(x_: T.Buffer(x.shape, dt), s_: T.Buffer(src.shape, dt), i_: T.Buffer((count,), it),
               o_: T.Buffer(out.shape, dt)):
        xf = T.decl_buffer((total,), dt, data=x_.data)
        sf = T.decl_buffer((outer * count * inner,), dt, data=s_.data)
        of = T.decl_buffer((total,), dt, data=o_.data)
        if not inplace:
            for e in T.parallel(total):
                of[e] = xf[e]
        for t in range(count):
            j = T.Cast("int64", i_[t])
            if j >= T.int64(0) and j < T.int64(n):
                for o in range(outer):
                    for e in range(inner):
                        of[(o * n + T.Cast("int32", j)) * inner + e] = sf[(o * count + t) * inner + e]

    return kernel
