"""TE rules for reductions, softmax and layer_norm."""

from __future__ import annotations

import tvm
from tvm import te, topi

from .. import fast_math, nan_math
from . import rule
from ._te import const


def _axes(attrs, rank):
    return list(range(rank)) if attrs["axes"] is None else [a % rank for a in attrs["axes"]]


@rule("sum", "max", "min", "mean", "prod")
def reduce(ins, attrs, out, op):
    x = ins[0]
    axes = _axes(attrs, len(x.shape))
    f = {"sum": topi.sum, "mean": topi.sum, "max": nan_math.reduce_max, "min": nan_math.reduce_min,
         "prod": topi.prod}[op]
    y = f(x, axis=axes, keepdims=attrs["keepdims"])
    if op == "mean":
        n = 1
        for a in axes:
            n *= int(x.shape[a])
        y = te.compute(y.shape, lambda *i: y(*i) / const(n, x.dtype), name="mean")
    return y


@rule("cumsum")
def cumsum(ins, attrs, out, op):
    """y[..., i, ...] = sum of x[..., k, ...] for k <= i: a masked sum over the axis (n^2 adds, all independent: the
    GPUs' form; CPUs run ``edgeopt.lower.scan``'s running sums). f16 is summed in f32, as torch does on GPUs."""
    x = ins[0]
    if not x.shape:
        return te.compute((), lambda: x(), name="cumsum")
    ax = attrs["axis"] % len(x.shape)
    k = te.reduce_axis((0, int(x.shape[ax])), name="k")
    acc = "float32" if x.dtype == "float16" else x.dtype

    def body(*i):
        src = x(*i[:ax], k, *i[ax + 1:]).astype(acc)
        return te.sum(tvm.tirx.Select(k <= i[ax], src, tvm.tirx.const(0, acc)), axis=k)

    y = te.compute(x.shape, body, name="cumsum")
    return y if acc == x.dtype else te.compute(x.shape, lambda *i: y(*i).astype(x.dtype), name="cumsum_narrow")


@rule("argmax")
def argmax(ins, attrs, out, op):
    (ax,) = _axes(attrs, len(ins[0].shape))
    y = nan_math.argmax(ins[0], axis=ax, keepdims=attrs["keepdims"])
    return te.compute(y.shape, lambda *i: y(*i).astype("int64"), name="argmax_i64")


@rule("softmax", "log_softmax")
def softmax(ins, attrs, out, op):
    x = ins[0]
    ax = attrs["axis"] % len(x.shape)
    n = int(x.shape[ax])
    k = te.reduce_axis((0, n), name="k")

    def at(idx, j):
        return tuple(idx[:ax]) + (j,) + tuple(idx[ax + 1:])

    red_shape = tuple(1 if i == ax else d for i, d in enumerate(x.shape))
    mx = te.compute(red_shape, lambda *i: nan_math.max_reduce(x(*at(i, k)), axis=k),
                    name="softmax_max")
    e = te.compute(x.shape, lambda *i: fast_math.exp(x(*i) - mx(*at(i, 0))), name="softmax_exp")
    k2 = te.reduce_axis((0, n), name="k2")
    s = te.compute(red_shape, lambda *i: te.sum(e(*at(i, k2)), axis=k2), name="softmax_sum")
    if op == "softmax":
        return te.compute(x.shape, lambda *i: e(*i) / s(*at(i, 0)), name="softmax_norm")
    return te.compute(x.shape, lambda *i: x(*i) - mx(*at(i, 0)) - te.log(s(*at(i, 0))), name="log_softmax")


@rule("layer_norm")
def layer_norm(ins, attrs, out, op):
    x = ins[0]
    rank, k = len(x.shape), attrs["normalized_ndim"]
    lead, norm = x.shape[: rank - k], x.shape[rank - k:]
    n = 1
    for d in norm:
        n *= int(d)
    r1 = [te.reduce_axis((0, d), name=f"r{i}") for i, d in enumerate(norm)]
    total = te.compute(tuple(lead), lambda *i: te.sum(x(*i, *r1), axis=r1), name="ln_sum")
    mean = te.compute(tuple(lead), lambda *i: total(*i) / const(n, x.dtype), name="ln_mean")
    r2 = [te.reduce_axis((0, d), name=f"q{i}") for i, d in enumerate(norm)]

    def sq(*i):  # two-pass variance: exact for inputs with a large mean
        d = x(*i, *r2) - mean(*i)
        return te.sum(d * d, axis=r2)

    var = te.compute(tuple(lead), sq, name="ln_var")
    eps = const(attrs["eps"], x.dtype)

    def body(*i):
        y = (x(*i) - mean(*i[: rank - k])) * te.rsqrt(var(*i[: rank - k]) / const(n, x.dtype) + eps)
        if len(ins) > 1:
            y = y * ins[1](*i[rank - k:])
        if len(ins) > 2:
            y = y + ins[2](*i[rank - k:])
        return y

    return te.compute(x.shape, body, name="layer_norm")
