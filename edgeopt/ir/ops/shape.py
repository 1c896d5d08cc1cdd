"""Data-movement ops: reshape, transpose, slice, concat, broadcast_to, take (gather rows), copy."""

from __future__ import annotations

import numpy as np

from ..registry import REQUIRED, OpDef, OpError, register
from ..types import TensorType
from ._common import norm_axis, same_dtype


def _reshape_infer(types, attrs):
    x = types[0]
    shape = tuple(attrs["shape"])
    if any(d < 0 for d in shape) or int(np.prod(shape, dtype=np.int64)) != x.numel:
        raise OpError(f"reshape: cannot view {x.shape} as {shape} (give every dim explicitly)")
    return [TensorType(shape, x.dtype, x.quant)]


register(OpDef("reshape", "injective", _reshape_infer, lambda xs, a: [xs[0].reshape(a["shape"])],
               {"shape": REQUIRED}, (1, 1), doc="reshape(x){shape}: same elements, row-major order",
               view=True, cheap=True))


def _transpose_infer(types, attrs):
    x, perm = types[0], attrs["perm"]
    if sorted(perm) != list(range(x.rank)):
        raise OpError(f"transpose: perm {perm} is not a permutation of {x.rank} axes")
    return [TensorType(tuple(x.shape[p] for p in perm), x.dtype)]


register(OpDef("transpose", "injective", _transpose_infer,
               lambda xs, a: [np.transpose(xs[0], a["perm"]).copy()],  # .copy(): C order, keeps rank 0
               {"perm": REQUIRED}, (1, 1), doc="transpose(x){perm}: y's axis i is x's axis perm[i]", cheap=True))


def _slice_infer(types, attrs):
    x = types[0]
    ax = norm_axis(attrs["axis"], x.rank)
    start, end, step = attrs["start"], attrs["end"], attrs["step"]
    if step < 1:
        raise OpError("slice: step must be >= 1")
    n = len(range(*slice(start, end, step).indices(x.shape[ax])))
    return [TensorType(x.shape[:ax] + (n,) + x.shape[ax + 1:], x.dtype)]


def _slice_ref(xs, a):
    x = xs[0]
    sl = [slice(None)] * x.ndim
    sl[a["axis"]] = slice(a["start"], a["end"], a["step"])
    return [np.ascontiguousarray(x[tuple(sl)])]


register(OpDef("slice", "injective", _slice_infer, _slice_ref,
               {"axis": REQUIRED, "start": 0, "end": REQUIRED, "step": 1}, (1, 1),
               doc="slice(x){axis, start, end, step}: Python slicing along one axis (clamped bounds)", cheap=True))


def _concat_infer(types, attrs):
    dt = same_dtype("concat", types)
    r = types[0].rank
    ax = norm_axis(attrs["axis"], r)
    for t in types:
        if t.rank != r or any(t.shape[i] != types[0].shape[i] for i in range(r) if i != ax):
            raise OpError(f"concat: shapes {[t.shape for t in types]} differ off axis {ax}")
    shape = list(types[0].shape)
    shape[ax] = sum(t.shape[ax] for t in types)
    return [TensorType(tuple(shape), dt)]


register(OpDef("concat", "injective", _concat_infer,
               lambda xs, a: [np.concatenate(xs, axis=a["axis"])], {"axis": REQUIRED}, (1, 64),
               doc="concat(x0, x1, ...){axis}: joined along axis (same dtype, other axes equal)", cheap=True))


def _broadcast_infer(types, attrs):
    x, shape = types[0], tuple(attrs["shape"])
    try:
        np.broadcast_shapes(x.shape, shape)
    except ValueError:
        raise OpError(f"broadcast_to: {x.shape} does not broadcast to {shape}") from None
    if np.broadcast_shapes(x.shape, shape) != shape:
        raise OpError(f"broadcast_to: {x.shape} does not broadcast to {shape}")
    return [TensorType(shape, x.dtype)]


register(OpDef("broadcast_to", "injective", _broadcast_infer,
               lambda xs, a: [np.array(np.broadcast_to(xs[0], a["shape"]), order="C")],
               {"shape": REQUIRED}, (1, 1), doc="broadcast_to(x){shape}: numpy broadcasting to shape", cheap=True))


def _take_infer(types, attrs):
    data, idx = types
    if idx.dtype not in ("i32", "i64"):
        raise OpError(f"take: indices must be i32/i64, got {idx.dtype}")
    ax = norm_axis(attrs["axis"], data.rank)
    return [TensorType(data.shape[:ax] + idx.shape + data.shape[ax + 1:], data.dtype)]


def _take_ref(xs, a):
    data, idx = xs
    n = data.shape[a["axis"]]
    if idx.size and (idx.min() < -n or idx.max() >= n):
        raise IndexError(f"take: index out of range [-{n}, {n})")
    return [np.take(data, np.where(idx < 0, idx + n, idx), axis=a["axis"])]


register(OpDef("take", "injective", _take_infer, _take_ref, {"axis": 0}, (2, 2),
               doc="take(data, indices){axis}: data indexed along axis by an int tensor (embedding lookup)",
               cheap=True))

def _gather_infer(types, attrs):
    data, idx = types
    if idx.dtype not in ("i32", "i64"):
        raise OpError(f"gather: indices must be i32/i64, got {idx.dtype}")
    if idx.rank != data.rank:
        raise OpError(f"gather: indices {list(idx.shape)} need the rank of data {list(data.shape)}")
    ax = norm_axis(attrs["axis"], data.rank) if data.rank else 0
    if any(i != ax and d > data.shape[i] for i, d in enumerate(idx.shape)):
        raise OpError(f"gather: indices {list(idx.shape)} larger than data {list(data.shape)} off axis {ax}")
    return [TensorType(idx.shape, data.dtype)]


def _gather_ref(xs, a):
    data, idx = xs
    if not data.ndim:
        return [data.copy()]
    ax = norm_axis(a["axis"], data.ndim)
    n = data.shape[ax]
    if idx.size and (idx.min() < 0 or idx.max() >= n):
        raise IndexError(f"gather: index out of range [0, {n})")
    sl = tuple(slice(0, d) if i != ax else slice(None) for i, d in enumerate(idx.shape))
    return [np.take_along_axis(data[sl], idx.astype(np.int64), axis=ax)]


register(OpDef("gather", "injective", _gather_infer, _gather_ref, {"axis": 0}, (2, 2),
               doc="gather(data, indices){axis}: y[..i..] = data[..indices[..i..].. on axis]: torch.gather "
                   "(indices of data's rank, no larger off the axis)"))


register(OpDef("copy", "elementwise", lambda t, a: [t[0]], lambda xs, a: [xs[0].copy()], {}, (1, 1),
               doc="copy(x): an explicit copy (an output that would otherwise alias an input)", cheap=True))


def _index_copy_infer(types, attrs):
    x, src, index = types
    ax = norm_axis(attrs["axis"], x.rank)
    if index.rank != 1 or not index.dtype.startswith(("i", "u")):
        raise OpError(f"index_copy: index must be a 1-D integer tensor, got {index}")
    want = x.shape[:ax] + (index.shape[0],) + x.shape[ax + 1:]
    if src.shape != want or src.dtype != x.dtype:
        raise OpError(f"index_copy: source must be {x.dtype}{list(want)} for x {x} and {index.shape[0]} indices, "
                      f"got {src}")
    return [TensorType(x.shape, x.dtype)]


def _index_copy_ref(xs, a):
    x, src, index = xs
    ax = a["axis"] % x.ndim
    y = x.copy()
    for i, j in enumerate(index.tolist()):  # in order: the last of duplicate indices wins
        if 0 <= j < x.shape[ax]:
            y[(slice(None),) * ax + (j,)] = np.take(src, i, axis=ax)
    return [y]


register(OpDef("index_copy", "opaque", _index_copy_infer, _index_copy_ref, {"axis": 0}, (3, 3),
               doc="index_copy(x, source, index){axis}: x with slice index[i] along axis replaced by slice i of "
                   "source; the last of duplicate indices wins, indices outside [0, n) write nothing. The update of "
                   "a state (a KV cache) is written in place"))
