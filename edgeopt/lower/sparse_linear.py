"""``sparse_linear`` written in TIR for CPUs: the weight in rows of (value, column) pairs, the tokens in vector
lanes.

``y.T[o, :] = sum_r values[o, r] * x.T[indices[o, r], :]``: the input is transposed once so that each stored weight
is one multiply-add over a contiguous row of all the tokens, output rows run in parallel, and the result is
transposed back. With 128 tokens it beats the dense kernel from 80-90% zeros (0.54x at 90%); with one token (a
matrix-vector product) only from about 96% (``bench/sparse.py``); the ``sparse_linear`` pass decides.
"""

from __future__ import annotations

import math

from tvm.script import tirx as T

from ..ir.types import TVM_DTYPES, TensorType


def sparse_linear_kernel(in_types: list[TensorType], attrs: dict, out: TensorType):
    """The PrimFunc ``(x, values, indices, bias, out)``."""
    x, values, indices = in_types[:3]
    k = x.shape[-1]
    rows, per_row = values.shape
    m = math.prod(x.shape[:-1])
    lanes = next(v for v in (16, 8, 4, 2, 1) if m % v == 0)  # tokens per vector
    dt = TVM_DTYPES[x.dtype]
    i32 = "int32"

    @T.prim_func
    def kernel(x_: T.Buffer(x.shape, dt), v_: T.Buffer((rows, per_row), dt), i_: T.Buffer((rows, per_row), i32),
               b_: T.Buffer((rows,), dt), o_: T.Buffer(out.shape, dt)):
        xf = T.decl_buffer((m, k), dt, data=x_.data)
        of = T.decl_buffer((m, rows), dt, data=o_.data)
        xt = T.decl_buffer((k, m), dt)
        yt = T.decl_buffer((rows, m), dt)
        for c in T.parallel(k):
            for t in range(m):
                xt[c, t] = xf[t, c]
        for o in T.parallel(rows):
            for tb in range(m // lanes):
                for t in T.vectorized(lanes):
                    yt[o, tb * lanes + t] = b_[o]
            for r in range(per_row):
                for tb in range(m // lanes):
                    for t in T.vectorized(lanes):
                        yt[o, tb * lanes + t] = yt[o, tb * lanes + t] + v_[o, r] * xt[i_[o, r], tb * lanes + t]
        for t in T.parallel(m):
            for o in range(rows):
                of[t, o] = yt[o, t]

    return kernel
