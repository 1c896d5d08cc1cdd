"""TE rule for attention (materializes the score matrix; the fused tiled kernel comes with fusion)."""

from __future__ import annotations

import math

import tvm
from tvm import te

from .. import fast_math
from . import rule
from ._te import bcast_index, const
from .linalg import batch_index


@rule("attention")
def attention(ins, attrs, out, op):
    q, k, v = ins[:3]
    mask = ins[3] if len(ins) == 4 else None
    L, E, S = int(q.shape[-2]), int(q.shape[-1]), int(k.shape[-2])
    scale = attrs["scale"] if attrs["scale"] is not None else 1 / math.sqrt(E)
    batch = tuple(out.shape[:-2])
    rank = len(batch) + 2
    e = te.reduce_axis((0, E), "e")

    def score(*idx):
        b, i, j = idx[:-2], idx[-2], idx[-1]
        qk = q(*batch_index(q, b), i, e) * k(*batch_index(k, b), j, e)
        return te.sum(qk * const(scale, q.dtype), axis=e)

    s = te.compute(batch + (L, S), score, name="attn_score")
    neg = tvm.tirx.min_value(q.dtype)

    def masked(*idx):
        val = s(*idx)
        i, j = idx[-2], idx[-1]
        if mask is not None:
            m = mask(*bcast_index(mask, idx, rank))
            val = tvm.tirx.Select(m, val, neg) if mask.dtype == "bool" else val + m
        if attrs["causal"]:
            val = tvm.tirx.Select(j <= i, val, neg)
        return val

    sm = te.compute(batch + (L, S), masked, name="attn_masked")
    j1 = te.reduce_axis((0, S), "j1")
    mx = te.compute(batch + (L,), lambda *i: te.max(sm(*i, j1), axis=j1), name="attn_max")
    ex = te.compute(batch + (L, S), lambda *i: fast_math.exp(sm(*i) - mx(*i[:-1])), name="attn_exp")
    j2 = te.reduce_axis((0, S), "j2")
    sm_sum = te.compute(batch + (L,), lambda *i: te.sum(ex(*i, j2), axis=j2), name="attn_sum")
    j3 = te.reduce_axis((0, S), "j3")

    def pv(*idx):
        b, i, c = idx[:-2], idx[-2], idx[-1]
        return te.sum(ex(*b, i, j3) * v(*batch_index(v, b), j3, c), axis=j3)

    o = te.compute(tuple(out.shape), pv, name="attn_pv")
    return te.compute(tuple(out.shape), lambda *i: o(*i) / sm_sum(*i[:-1]), name="attention")
