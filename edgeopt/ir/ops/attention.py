"""Scaled dot-product attention, with torch's ``scaled_dot_product_attention`` semantics."""

from __future__ import annotations

import math

import numpy as np

from ..registry import OpDef, OpError, register
from ..types import TensorType
from ._common import broadcast_shapes, need_float

#: what a query row whose every score is masked (-inf) gives: "zero" as torch's scaled_dot_product_attention,
#: "nan" as softmax written out (exp(-inf - -inf)); the fuse_attention pass keeps the latter
MASKED_ROWS = ("zero", "nan")


def score_scale(attrs: dict, head_size: int) -> float:
    """The scores' scale: the ``scale`` attribute, else torch's 1 / sqrt(E). A head size of 0 makes every score 0
    (a sum over nothing) whatever the scale: torch's SDPA then averages v, so any finite scale serves."""
    if attrs["scale"] is not None:
        return float(attrs["scale"])
    return 1 / math.sqrt(head_size) if head_size else 1.0


def _infer(types, attrs):
    q, k, v = types[:3]
    need_float("attention", q)
    if not (q.rank == k.rank == v.rank) or q.rank < 2:
        raise OpError("attention: q, k, v must have one rank >= 2")
    if q.shape[-1] != k.shape[-1] or k.shape[-2] != v.shape[-2]:
        raise OpError(f"attention: q {q.shape}, k {k.shape}, v {v.shape} disagree")
    batch = broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    if len(types) == 4:
        m = types[3]
        broadcast_shapes(m.shape, batch + (q.shape[-2], k.shape[-2]))
        if m.dtype != "bool" and m.dtype != q.dtype:
            raise OpError("attention: mask must be bool (True = attend) or additive of q's dtype")
    if attrs["masked_rows"] not in MASKED_ROWS:
        raise OpError(f"attention: masked_rows must be one of {MASKED_ROWS}, got {attrs['masked_rows']!r}")
    return [TensorType(batch + (q.shape[-2], v.shape[-1]), q.dtype)]


def _ref(xs, attrs):
    q, k, v = (x.astype(np.float64) for x in xs[:3])
    scale = score_scale(attrs, q.shape[-1])
    s = (q @ np.swapaxes(k, -1, -2)) * scale
    L, S = s.shape[-2:]
    if S == 0:  # no keys: every row is "fully masked"; 0 either way (softmax of nothing, times no values)
        return [np.zeros(np.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2]) + (L, v.shape[-1]),
                         xs[0].dtype)]
    with np.errstate(invalid="ignore", divide="ignore"):  # inf - inf, 0 / 0: NaN as torch has it
        # masks add -inf, as torch does: a NaN score stays NaN where it is masked
        if attrs["causal"]:
            s = s + np.where(np.tril(np.ones((L, S), bool)), 0.0, -np.inf)
        if len(xs) == 4:
            m = xs[3]
            s = s + (np.where(m, 0.0, -np.inf) if m.dtype == np.bool_ else m)
        mx = s.max(axis=-1, keepdims=True)  # NaN if any score is NaN (np.max propagates it)
        e = np.exp(s - np.where(mx == -np.inf, 0.0, mx))  # a fully masked row: all 0
        total = e.sum(axis=-1, keepdims=True)
        p = e / total
        if attrs["masked_rows"] == "zero":  # a fully masked row gives 0 (x v), as torch's SDPA does
            p = np.where(total == 0, 0.0, p)
    return [(p @ v).astype(xs[0].dtype)]


register(OpDef("attention", "opaque", _infer, _ref, {"scale": None, "causal": False, "masked_rows": "zero"},
               (3, 4),
               doc="attention(q[...,L,E], k[...,S,E], v[...,S,Ev], [mask]){scale, causal, masked_rows}: "
                   "softmax(q k^T * scale + mask) v; a bool mask keeps True positions (adds -inf elsewhere); "
                   "a NaN score makes its row NaN; no keys give 0; a row with every position masked gives 0 "
                   "(masked_rows \"zero\", torch's scaled_dot_product_attention) or NaN (\"nan\", softmax written "
                   "out)", fp16="f32"))
