"""TE rules for matmul and linear."""

from __future__ import annotations

from tvm import te

from ...ir.ops.linalg import linear_weight_block, linear_weight_group
from . import rule
from ._te import narrow, tvm_dtype, widen


@rule("matmul")
def matmul(ins, attrs, out, op):
    a, b = ins
    K = int(a.shape[-1])
    k = te.reduce_axis((0, K), name="k")
    acc = widen(a.dtype)

    def body(*idx):
        batch, i, j = idx[:-2], idx[-2], idx[-1]
        ai, bi = batch_index(a, batch), batch_index(b, batch)
        return te.sum(acc(a(*ai, i, k)) * acc(b(*bi, k, j)), axis=k)

    return narrow(te.compute(tuple(out.shape), body, name="matmul"), tvm_dtype(out.dtype))


def batch_index(t, batch):
    """Index into t's batch dims (all but the last two) under numpy broadcasting."""
    r = len(t.shape) - 2
    return [0 if int(t.shape[i]) == 1 else batch[len(batch) - r + i] for i in range(r)]


@rule("linear")
def linear(ins, attrs, out, op):
    x, w = ins[0], ins[1]
    K = int(x.shape[-1])
    k = te.reduce_axis((0, K), name="k")
    io, v, grp = attrs["weight_layout"] == "io", linear_weight_block(attrs), linear_weight_group(attrs)

    def weight(j):
        if grp:  # int8 tiles [out/v, in/g, v, g]
            return w[j // v, k // grp, j % v, k % grp]
        if v:  # packed panels [out/v, in, v]
            return w[j // v, k, j % v]
        return w[k, j] if io else w[j, k]

    acc = widen(x.dtype)

    def body(*idx):
        lead, j = idx[:-1], idx[-1]
        return te.sum(acc(x(*lead, k)) * acc(weight(j)), axis=k)

    y = te.compute(tuple(out.shape), body, name="linear")
    if len(ins) == 3:  # added to the (f32, for f16 layers) sum before its one rounding
        b = ins[2]
        y = te.compute(y.shape, lambda *i: y(*i) + acc(b[i[-1]]), name="linear_bias")
    return narrow(y, tvm_dtype(out.dtype))


@rule("sparse_linear")
def sparse_linear(ins, attrs, out, op):
    """A gather per stored weight: y[..., o] = sum_r values[o, r] * x[..., indices[o, r]] + b[o]. The CPU targets
    run the TIR kernel (``edgeopt.lower.sparse_linear``) instead; this is the portable form."""
    x, values, indices, b = ins
    r = te.reduce_axis((0, int(values.shape[1])), name="r")
    acc = widen(x.dtype)

    def body(*idx):
        lead, o = idx[:-1], idx[-1]
        return te.sum(acc(values[o, r]) * acc(x(*lead, indices[o, r])), axis=r)

    y = te.compute(tuple(out.shape), body, name="sparse_linear")
    y = te.compute(tuple(out.shape), lambda *i: y(*i) + acc(b[i[-1]]), name="sparse_linear_bias")
    return narrow(y, tvm_dtype(out.dtype))
