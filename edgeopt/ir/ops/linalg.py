"""Contractions: batched matmul with broadcasting and linear (x @ W^T + b)."""

from __future__ import annotations

import re

import numpy as np

from ..registry import OPTIONAL, REQUIRED, OpDef, OpError, register
from ..types import TensorType
from ._common import broadcast_shapes, check_int8_dot, contraction_dtype


def _matmul_infer(types, attrs):
    a, b = types
    dtype = contraction_dtype("matmul", types)
    if a.rank < 2 or b.rank < 2:
        raise OpError("matmul needs rank >= 2 operands (reshape vectors first)")
    if a.shape[-1] != b.shape[-2]:
        raise OpError(f"matmul: inner dims differ: {a.shape} @ {b.shape}")
    batch = broadcast_shapes(a.shape[:-2], b.shape[:-2])
    return [TensorType(batch + (a.shape[-2], b.shape[-1]), dtype)]


def result_dtype(x: np.ndarray) -> np.dtype:
    """numpy dtype of a contraction's result on ``x``: i32 for integer inputs, else the input's."""
    return np.dtype(np.int32) if x.dtype.kind in "iu" else x.dtype


def _matmul_ref(xs, attrs):
    a, b = xs
    return [np.matmul(a.astype(np.float64), b.astype(np.float64)).astype(result_dtype(a))]


register(OpDef("matmul", "contraction", _matmul_infer, _matmul_ref, {}, (2, 2),
               doc="matmul(a[..., M, K], b[..., K, N]) -> [..., M, N], batch dims broadcast"))


_LINEAR_LAYOUT = re.compile(r"oi([1-9][0-9]*)o(?:([1-9][0-9]*)i)?")


def linear_weight_block(attrs) -> int:
    """Output features per panel of a packed linear weight (``weight_layout`` "oi<v>o" or "oi<v>o<g>i"); 0 for
    "oi" / "io".

    The packed layout "oi<v>o" is [out/v, in, v]: the ``v`` output features a kernel computes in one register tile
    are contiguous, and so is the whole K x v panel it streams (in "io" each of its rows is a stride apart).
    "oi<v>o<g>i" is [out/v, in/g, v, g], for int8 dot products: each [v, g] tile holds the g consecutive inputs of
    v outputs that one instruction (VNNI's vpdpbusd: v=16, g=4) multiplies and sums."""
    return _linear_layout(attrs)[0]


def linear_weight_group(attrs) -> int:
    """Inputs per group of an "oi<v>o<g>i" linear weight (0 for the other layouts)."""
    return _linear_layout(attrs)[1]


def _linear_layout(attrs) -> tuple[int, int]:
    layout = attrs.get("weight_layout", "oi")
    if layout in ("oi", "io"):
        return 0, 0
    m = _LINEAR_LAYOUT.fullmatch(layout)
    if not m:
        raise OpError(f"linear: weight_layout must be 'oi' (torch), 'io' (transposed), 'oi<v>o' or 'oi<v>o<g>i' "
                      f"(packed), got {layout!r}")
    return int(m.group(1)), int(m.group(2) or 0)


def pack_linear_weight(w_io: np.ndarray, block: int) -> np.ndarray:
    """[in, out] -> [out/block, in, block]."""
    k, n = w_io.shape
    return np.ascontiguousarray(w_io.reshape(k, n // block, block).transpose(1, 0, 2))


def unpack_linear_weight(w: np.ndarray) -> np.ndarray:
    """[out/block, in, block] or [out/block, in/g, block, g] -> [in, out] (the inverse of the packers)."""
    if w.ndim == 4:
        nb, kg, b, g = w.shape
        return np.ascontiguousarray(w.transpose(1, 3, 0, 2).reshape(kg * g, nb * b))
    nb, k, b = w.shape
    return np.ascontiguousarray(w.transpose(1, 0, 2).reshape(k, nb * b))


def pack_linear_weight_groups(w_oi: np.ndarray, block: int, group: int) -> np.ndarray:
    """[out, in] -> [out/block, in/group, block, group] (``weight_layout`` "oi<block>o<group>i")."""
    n, k = w_oi.shape
    return np.ascontiguousarray(w_oi.reshape(n // block, block, k // group, group).transpose(0, 2, 1, 3))


def _linear_infer(types, attrs):
    x, w = types[0], types[1]
    dtype = contraction_dtype("linear", types)
    block, group = _linear_layout(attrs)
    check_int8_dot("linear", attrs, x, w, (block, group))
    rank = 4 if group else 3 if block else 2
    if w.rank != rank or (block and w.shape[2] != block) or (group and w.shape[3] != group):
        want = "[out/v, in/g, v, g]" if group else "[out/v, in, v]" if block else "rank-2"
        raise OpError(f"linear: weight_layout {attrs['weight_layout']!r} needs a {want} weight, got {list(w.shape)}")
    if group:
        out_f, in_f = w.shape[0] * block, w.shape[1] * group
    elif block:
        out_f, in_f = w.shape[0] * block, w.shape[1]
    else:
        out_f, in_f = w.shape if attrs["weight_layout"] == "oi" else w.shape[::-1]
    if x.shape[-1] != in_f:
        raise OpError(f"linear: input features {x.shape[-1]} != weight in-features {in_f}")
    if len(types) == 3 and types[2].shape != (out_f,):
        raise OpError(f"linear: bias shape {types[2].shape} != ({out_f},)")
    return [TensorType(x.shape[:-1] + (out_f,), dtype)]


def _linear_ref(xs, attrs):
    x, w = xs[0].astype(np.float64), xs[1].astype(np.float64)
    if linear_weight_block(attrs):
        w = unpack_linear_weight(w)
    y = x @ (w.T if attrs["weight_layout"] == "oi" else w)
    if len(xs) == 3:
        y = y + xs[2]
    return [y.astype(result_dtype(xs[0]))]


register(OpDef("linear", "contraction", _linear_infer, _linear_ref, {"weight_layout": "oi", "int8_dot": OPTIONAL},
               (2, 3),
               doc="linear(x, w, [b]): x @ w.T + b with w [out, in] ('oi'), x @ w + b with w [in, out] ('io'), "
                   "or packed in panels [out/v, in, v] ('oi<v>o'); an integer one in int8 dot-product tiles "
                   "[out/v, in/g, v, g] ('oi<v>o<g>i') may name the instruction that reads them (int8_dot)"))


def _sparse_linear_infer(types, attrs):
    x, values, indices = types[:3]
    if values.rank != 2 or indices.shape != values.shape or indices.dtype != "i32":
        raise OpError(f"sparse_linear: values {values} and indices {indices} must be [out, per_row], indices i32")
    if x.dtype != values.dtype or values.dtype not in ("f32", "f16"):
        raise OpError(f"sparse_linear: x {x.dtype} and values {values.dtype} must be one float dtype")
    if attrs["in_features"] != x.shape[-1]:
        raise OpError(f"sparse_linear: x has {x.shape[-1]} features, the weight {attrs['in_features']}")
    if types[3].shape != (values.shape[0],) or types[3].dtype != x.dtype:
        raise OpError(f"sparse_linear: bias shape {types[3].shape} != ({values.shape[0]},)")
    return [TensorType(x.shape[:-1] + (values.shape[0],), x.dtype)]


def _sparse_linear_ref(xs, attrs):
    x, values, indices = xs[0].astype(np.float64), xs[1].astype(np.float64), xs[2]
    y = np.einsum("...or,or->...o", x[..., indices], values) + xs[3]
    return [y.astype(xs[0].dtype)]


register(OpDef("sparse_linear", "opaque", _sparse_linear_infer, _sparse_linear_ref, {"in_features": REQUIRED},
               (4, 4), doc="sparse_linear(x, values, indices, b){in_features}: a linear layer whose weight is "
                           "sparse, row o holding values[o, r] at columns indices[o, r] (rows padded with zero "
                           "values): y[..., o] = sum_r values[o, r] * x[..., indices[o, r]] + b[o]",
               fp16="f32"))
