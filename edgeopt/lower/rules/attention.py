"""TE rule for attention (materializes the score matrix; the fused tiled kernel comes with fusion)."""

from __future__ import annotations

import math

import tvm
from tvm import te

from ...ir.ops.attention import score_scale
from .. import fast_math, nan_math
from . import rule
from ._te import bcast_index, const, dtype_of
from .linalg import batch_index


@rule("attention")
def attention(ins, attrs, out, op):
    q, k, v = ins[:3]
    mask = ins[3] if len(ins) == 4 else None
    L, E, S = int(q.shape[-2]), int(q.shape[-1]), int(k.shape[-2])
    scale = score_scale(attrs, E)
    batch = tuple(out.shape[:-2])
    rank = len(batch) + 2
    if S == 0:  # no keys: every row is "fully masked" and gives 0, as torch's SDPA
        return te.compute(tuple(out.shape), lambda *_: const(0, q.dtype), name="attn_no_keys")
    e = te.reduce_axis((0, E), "e")

    def score(*idx):
        b, i, j = idx[:-2], idx[-2], idx[-1]
        qk = q(*batch_index(q, b), i, e) * k(*batch_index(k, b), j, e)
        return te.sum(qk * const(scale, q.dtype), axis=e)

    if E == 0:  # a head size of 0: every score is 0 (a TVM sum over nothing would never be written)
        s = te.compute(batch + (L, S), lambda *_: const(0, q.dtype), name="attn_score")
    else:
        s = te.compute(batch + (L, S), score, name="attn_score")
    neg, zero = const(-math.inf, q.dtype), const(0, q.dtype)

    def masked(*idx):
        val = s(*idx)
        i, j = idx[-2], idx[-1]
        if mask is not None:
            m = mask(*bcast_index(mask, idx, rank))
            # a bool mask adds -inf, as torch does: a NaN score stays NaN where it is masked
            val = val + (tvm.tirx.Select(m, zero, neg) if mask.dtype == "bool" else m)
        if attrs["causal"]:
            val = val + tvm.tirx.Select(j <= i, zero, neg)
        return val

    sm = te.compute(batch + (L, S), masked, name="attn_masked")
    j1 = te.reduce_axis((0, S), "j1")
    # NaN if a score is NaN; -inf if the whole row is masked, which then subtracts 0 instead (-inf - -inf would
    # be NaN): its exps are all 0, its sum too (see ``total``)
    mx = te.compute(batch + (L,), lambda *i: nan_math.max_reduce(sm(*i, j1), axis=j1), name="attn_max")
    ex = te.compute(batch + (L, S), lambda *i: fast_math.exp(sm(*i) - _finite_or_zero(mx(*i[:-1]))),
                    name="attn_exp")
    j2 = te.reduce_axis((0, S), "j2")
    sm_sum = te.compute(batch + (L,), lambda *i: te.sum(ex(*i, j2), axis=j2), name="attn_sum")
    j3 = te.reduce_axis((0, S), "j3")

    def pv(*idx):
        b, i, c = idx[:-2], idx[-2], idx[-1]
        return te.sum(ex(*b, i, j3) * v(*batch_index(v, b), j3, c), axis=j3)

    o = te.compute(tuple(out.shape), pv, name="attn_pv")
    one = const(1, q.dtype)

    def total(*i):
        if attrs["masked_rows"] == "nan":
            return sm_sum(*i)  # 0 / 0
        # a fully masked row sums to 0: its output is o = sum of 0 x v (0, or NaN where v is), not 0 / 0
        return tvm.tirx.Select(sm_sum(*i) == zero, one, sm_sum(*i))

    return te.compute(tuple(out.shape), lambda *i: o(*i) / total(*i[:-1]), name="attention")


def _finite_or_zero(m):
    """The row max to subtract: 0 for a fully masked row (max -inf)."""
    return tvm.tirx.Select(m == const(-math.inf, dtype_of(m)), const(0, dtype_of(m)), m)
