"""Contractions: batched matmul with broadcasting and linear (x @ W^T + b)."""

from __future__ import annotations

import numpy as np

from ..registry import OpDef, OpError, register
from ..types import TensorType
from ._common import broadcast_shapes, same_dtype


def _matmul_infer(types, attrs):
    a, b = types
    same_dtype("matmul", types)
    if a.rank < 2 or b.rank < 2:
        raise OpError("matmul needs rank >= 2 operands (reshape vectors first)")
    if a.shape[-1] != b.shape[-2]:
        raise OpError(f"matmul: inner dims differ: {a.shape} @ {b.shape}")
    batch = broadcast_shapes(a.shape[:-2], b.shape[:-2])
    return [TensorType(batch + (a.shape[-2], b.shape[-1]), a.dtype)]


def _matmul_ref(xs, attrs):
    a, b = xs
    return [np.matmul(a.astype(np.float64), b.astype(np.float64)).astype(a.dtype)]


register(OpDef("matmul", "contraction", _matmul_infer, _matmul_ref, {}, (2, 2),
               doc="matmul(a[..., M, K], b[..., K, N]) -> [..., M, N], batch dims broadcast"))


def _linear_infer(types, attrs):
    x, w = types[0], types[1]
    same_dtype("linear", types)
    if w.rank != 2:
        raise OpError("linear: weight must be rank 2")
    out_f, in_f = w.shape if attrs["weight_layout"] == "oi" else w.shape[::-1]
    if attrs["weight_layout"] not in ("oi", "io"):
        raise OpError("linear: weight_layout must be 'oi' (torch) or 'io' (transposed)")
    if x.shape[-1] != in_f:
        raise OpError(f"linear: input features {x.shape[-1]} != weight in-features {in_f}")
    if len(types) == 3 and types[2].shape != (out_f,):
        raise OpError(f"linear: bias shape {types[2].shape} != ({out_f},)")
    return [TensorType(x.shape[:-1] + (out_f,), x.dtype)]


def _linear_ref(xs, attrs):
    x, w = xs[0].astype(np.float64), xs[1].astype(np.float64)
    y = x @ (w.T if attrs["weight_layout"] == "oi" else w)
    if len(xs) == 3:
        y = y + xs[2]
    return [y.astype(xs[0].dtype)]


register(OpDef("linear", "contraction", _linear_infer, _linear_ref, {"weight_layout": "oi"}, (2, 3),
               doc="linear(x, w, [b]): x @ w.T + b with w [out, in] ('oi'), or x @ w + b with w [in, out] ('io')"))
