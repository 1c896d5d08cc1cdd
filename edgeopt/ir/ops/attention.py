"""Scaled dot-product attention, with torch's ``scaled_dot_product_attention`` semantics."""

from __future__ import annotations

import math

import numpy as np

from ..registry import OpDef, OpError, register
from ..types import TensorType
from ._common import broadcast_shapes, need_float


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
    return [TensorType(batch + (q.shape[-2], v.shape[-1]), q.dtype)]


def _ref(xs, attrs):
    q, k, v = (x.astype(np.float64) for x in xs[:3])
    scale = attrs["scale"] if attrs["scale"] is not None else 1 / math.sqrt(q.shape[-1])
    s = (q @ np.swapaxes(k, -1, -2)) * scale
    L, S = s.shape[-2:]
    if attrs["causal"]:
        s = np.where(np.tril(np.ones((L, S), bool)), s, -np.inf)
    if len(xs) == 4:
        m = xs[3]
        s = np.where(m, s, -np.inf) if m.dtype == np.bool_ else s + m
    s = s - s.max(axis=-1, keepdims=True)
    e = np.exp(s)
    return [((e / e.sum(axis=-1, keepdims=True)) @ v).astype(xs[0].dtype)]


register(OpDef("attention", "opaque", _infer, _ref, {"scale": None, "causal": False}, (3, 4),
               doc="attention(q[...,L,E], k[...,S,E], v[...,S,Ev], [mask]){scale, causal}: "
                   "softmax(q k^T * scale + mask) v; a bool mask keeps True positions"))
