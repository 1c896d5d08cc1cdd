"""Reductions: sum/mean/max/min/argmax over axes, softmax, log_softmax and layer_norm."""

from __future__ import annotations

import numpy as np

from ..registry import REQUIRED, OpDef, OpError, register
from ..types import TensorType
from ._common import need_float, norm_axis


def _axes(attrs, rank):
    axes = attrs["axes"]
    axes = list(range(rank)) if axes is None else [norm_axis(a, rank) for a in axes]
    if len(set(axes)) != len(axes):
        raise OpError(f"repeated reduction axes {attrs['axes']}")
    return sorted(axes)


_REDUCE_DOCS = {
    "sum": "sum(x){axes, keepdims}: sum over axes (None: all; []: none)",
    "mean": "mean(x){axes, keepdims}: mean over axes, float only",
    "max": "max(x){axes, keepdims}: the largest over axes; NaN if any is NaN",
    "min": "min(x){axes, keepdims}: the smallest over axes; NaN if any is NaN",
    "prod": "prod(x){axes, keepdims}: the product over axes",
    "argmax": "argmax(x){axes=[axis], keepdims}: the i64 index of the first largest along one axis (NaN wins)",
}


def _reduce(name, fn, out_dtype=None):
    def infer(types, attrs):
        t = types[0]
        axes = _axes(attrs, t.rank)
        if name == "argmax" and (attrs["axes"] is None or len(axes) != 1):
            raise OpError(f"argmax takes exactly one axis (axes=[k]), got axes={attrs['axes']}: reshape to one "
                          "axis first for the index over several")
        shape = [1 if i in axes else d for i, d in enumerate(t.shape)] if attrs["keepdims"] else \
            [d for i, d in enumerate(t.shape) if i not in axes]
        if name == "mean":
            need_float(name, t)
        return [TensorType(tuple(shape), out_dtype or t.dtype)]

    def reference(xs, attrs):
        x = xs[0]
        axes = tuple(_axes(attrs, x.ndim))
        if name == "argmax":
            (ax,) = axes
            y = np.argmax(x, axis=ax)
            y = np.expand_dims(y, ax) if attrs["keepdims"] else y
            return [y.astype(np.int64)]
        xx = x.astype(np.float64) if x.dtype.kind == "f" else x
        return [np.asarray(fn(xx, axis=axes, keepdims=attrs["keepdims"])).astype(out_dtype_np(x))]

    def out_dtype_np(x):
        return np.int64 if out_dtype == "i64" else x.dtype

    register(OpDef(name, "reduction", infer, reference, {"axes": None, "keepdims": False}, (1, 1),
                   doc=_REDUCE_DOCS[name], row_reduction=name in ("sum", "mean", "max", "min"),
                   fp16="f32" if name in ("sum", "mean") else "f16"))


_reduce("sum", np.sum)
_reduce("mean", np.mean)
_reduce("max", np.max)
_reduce("min", np.min)
_reduce("prod", np.prod)
_reduce("argmax", None, out_dtype="i64")


def _cumsum_infer(types, attrs):
    x = types[0]
    if x.rank:
        norm_axis(attrs["axis"], x.rank)
    return [TensorType(x.shape, x.dtype)]


def _cumsum_ref(xs, attrs):
    x = xs[0]
    if not x.ndim:
        return [x.copy()]
    xx = x.astype(np.float64) if x.dtype.kind == "f" else x
    return [np.cumsum(xx, axis=norm_axis(attrs["axis"], x.ndim)).astype(x.dtype)]


register(OpDef("cumsum", "reduction", _cumsum_infer, _cumsum_ref, {"axis": REQUIRED}, (1, 1),
               doc="cumsum(x){axis}: running sums along axis (y[i] = x[0] + ... + x[i]), the dtype of x"))


def _softmax_infer(types, attrs):
    need_float("softmax", types[0])
    norm_axis(attrs["axis"], types[0].rank)
    return [TensorType(types[0].shape, types[0].dtype)]


def _softmax_ref(xs, attrs, log=False):
    x = xs[0].astype(np.float64)
    ax = attrs["axis"]
    z = x - x.max(axis=ax, keepdims=True)
    e = np.exp(z)
    s = e.sum(axis=ax, keepdims=True)
    y = z - np.log(s) if log else e / s
    return [y.astype(xs[0].dtype)]


register(OpDef("softmax", "reduction", _softmax_infer, _softmax_ref, {"axis": REQUIRED}, (1, 1),
               doc="softmax(x){axis}: exp(x - max) / sum(exp(x - max)) along axis", row_reduction=True, fp16="f32"))
register(OpDef("log_softmax", "reduction", _softmax_infer, lambda xs, a: _softmax_ref(xs, a, log=True),
               {"axis": REQUIRED}, (1, 1), doc="log_softmax(x){axis}: x - max - log(sum(exp(x - max))) along axis",
               row_reduction=True, fp16="f32"))


def _layer_norm_infer(types, attrs):
    x = types[0]
    need_float("layer_norm", x)
    k = attrs["normalized_ndim"]
    if not 1 <= k <= x.rank:
        raise OpError(f"layer_norm: normalized_ndim {k} out of range for rank {x.rank}")
    for t in types[1:]:
        if t.shape != x.shape[x.rank - k:]:
            raise OpError(f"layer_norm: weight/bias shape {t.shape} != normalized shape {x.shape[x.rank - k:]}")
    return [TensorType(x.shape, x.dtype)]


def _layer_norm_ref(xs, attrs):
    x = xs[0].astype(np.float64)
    axes = tuple(range(x.ndim - attrs["normalized_ndim"], x.ndim))
    mu = x.mean(axis=axes, keepdims=True)
    var = ((x - mu) ** 2).mean(axis=axes, keepdims=True)
    y = (x - mu) / np.sqrt(var + attrs["eps"])
    if len(xs) > 1:
        y = y * xs[1]
    if len(xs) > 2:
        y = y + xs[2]
    return [y.astype(xs[0].dtype)]


register(OpDef("layer_norm", "reduction", _layer_norm_infer, _layer_norm_ref,
               {"normalized_ndim": 1, "eps": 1e-5}, (1, 3),
               doc="layer_norm(x, [weight, [bias]]): normalize over the last normalized_ndim axes",
               row_reduction=True, fp16="f32"))
