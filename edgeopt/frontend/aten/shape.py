"""ATen -> IR converters: views, permutations, slicing, concatenation, splitting and indexing."""

from __future__ import annotations

import numpy as np

from .ctx import NP_DTYPES, aten, norm_dim
from .run_time_scalars import select_at


def _view(ctx, x, shape):
    xv = ctx.v(x)
    out = ctx.out_shape()
    if list(xv.type.shape) == out:
        return xv
    return ctx.add("reshape", [xv], {"shape": out})


def _permute(ctx, x, dims):
    xv = ctx.v(x)
    perm = [norm_dim(d, xv.type.rank) for d in dims]
    return xv if perm == sorted(perm) else ctx.add("transpose", [xv], {"perm": perm})


def _transpose(ctx, x, d0, d1):
    xv = ctx.v(x)
    perm = list(range(xv.type.rank))
    a, b = norm_dim(d0, xv.type.rank), norm_dim(d1, xv.type.rank)
    perm[a], perm[b] = perm[b], perm[a]
    return xv if a == b else ctx.add("transpose", [xv], {"perm": perm})


def _t(ctx, x):
    xv = ctx.v(x)
    return xv if xv.type.rank < 2 else ctx.add("transpose", [xv], {"perm": [1, 0]})


def _expand(ctx, x, size, implicit=False):
    xv = ctx.v(x)
    out = ctx.out_shape()
    if list(xv.type.shape) == out:
        return xv
    if xv.type.rank < len(out):
        xv = ctx.add("reshape", [xv], {"shape": [1] * (len(out) - xv.type.rank) + list(xv.type.shape)})
    return ctx.add("broadcast_to", [xv], {"shape": out})


def _slice(ctx, x, dim=0, start=None, end=None, step=1):
    xv = ctx.v(x)
    start, end = ctx.literal(start), ctx.literal(end)
    if ctx.is_run_time_number(start) or ctx.is_run_time_number(end):
        raise NotImplementedError("with bounds read from a tensor at run time, so of a length known only then; "
                                  "index with positions instead: x.index_select(dim, p + torch.arange(length))")
    ax = norm_dim(dim, xv.type.rank)
    n = xv.type.shape[ax]
    start, end = 0 if start is None else start, n if end is None else end
    rng = range(*slice(start, end, step).indices(n))
    if rng.start == 0 and rng.stop >= n and step == 1:
        return xv
    return ctx.add("slice", [xv], {"axis": ax, "start": rng.start, "end": rng.start + len(rng) * step,
                                   "step": step})


def _select(ctx, x, dim, index):
    xv = ctx.v(x)
    index = ctx.literal(index)
    if ctx.is_run_time_number(index):
        return select_at(ctx, xv, dim, index)
    ax = norm_dim(dim, xv.type.rank)
    i = index % xv.type.shape[ax]
    s = ctx.add("slice", [xv], {"axis": ax, "start": i, "end": i + 1, "step": 1})
    return ctx.add("reshape", [s], {"shape": [d for k, d in enumerate(xv.type.shape) if k != ax]})


def _slice_scatter(ctx, x, src, dim=0, start=None, end=None, step=1):
    """``x`` with ``x[start:end]`` along ``dim`` replaced by ``src`` (what ``out[:, a:b] = y`` becomes): the parts of
    ``x`` before and after, and ``src``, joined. A step other than 1 is not covered."""
    xv = ctx.v(x)
    sv = ctx.v(src, xv.type.dtype)
    ax = norm_dim(dim, xv.type.rank)
    n = xv.type.shape[ax]
    rng = range(*slice(0 if start is None else start, n if end is None else end, step).indices(n))
    if not len(rng):
        return xv
    if step != 1 and len(rng) > 1:
        raise NotImplementedError(f"with step {step}")
    parts = [ctx.add("slice", [xv], {"axis": ax, "start": 0, "end": rng.start, "step": 1})] if rng.start else []
    parts.append(sv)
    stop = rng.start + len(rng)
    if stop < n:
        parts.append(ctx.add("slice", [xv], {"axis": ax, "start": stop, "end": n, "step": 1}))
    return ctx.add("concat", parts, {"axis": ax}) if len(parts) > 1 else ctx.add("copy", [sv])


def _select_scatter(ctx, x, src, dim, index):
    """``x`` with ``x.select(dim, index)`` replaced by ``src`` (``out[:, t] = y``)."""
    xv = ctx.v(x)
    ax = norm_dim(dim, xv.type.rank)
    i = index % xv.type.shape[ax]
    shape = list(xv.type.shape)
    shape[ax] = 1
    return _slice_scatter(ctx, xv, ctx.add("reshape", [ctx.v(src, xv.type.dtype)], {"shape": shape}), ax, i, i + 1)


def _copy(ctx, dst, src, non_blocking=False):
    """``dst.copy_(src)`` as a value: ``src`` broadcast to ``dst``'s shape, in ``dst``'s dtype."""
    d, sv = ctx.v(dst), ctx.v(src)
    sv = ctx.cast(sv, d.type.dtype)
    if list(sv.type.shape) != list(d.type.shape):
        if sv.type.rank < d.type.rank:
            sv = ctx.add("reshape", [sv], {"shape": [1] * (d.type.rank - sv.type.rank) + list(sv.type.shape)})
        return ctx.add("broadcast_to", [sv], {"shape": list(d.type.shape)})
    return ctx.add("copy", [sv])


def _cat(ctx, tensors, dim=0):
    """``torch.cat``: the inputs with elements joined (an empty input adds none; torch also skips 1-D ``[0]`` ones
    beside any rank); with no elements at all, an empty constant of the result's shape."""
    vals = [ctx.v(t, ctx.out_dtype()) for t in tensors]
    shape = ctx.out_shape()
    if 0 in shape:
        return ctx.g.add_const(np.zeros(shape, NP_DTYPES[ctx.out_dtype()]), "empty")
    vals = [v for v in vals if v.type.numel > 0]
    return vals[0] if len(vals) == 1 else ctx.add("concat", vals, {"axis": norm_dim(dim, vals[0].type.rank)})


def _split_sizes(ctx, x, sizes, dim=0):
    xv = ctx.v(x)
    ax = norm_dim(dim, xv.type.rank)
    outs, start = [], 0
    for s in sizes:
        outs.append(ctx.add("slice", [xv], {"axis": ax, "start": start, "end": start + s, "step": 1}))
        start += s
    return tuple(outs)


def _split(ctx, x, split_size, dim=0):
    n = ctx.shape(x)[norm_dim(dim, len(ctx.shape(x)))]
    return _split_sizes(ctx, x, [min(split_size, n - i) for i in range(0, n, split_size)], dim)


def _unbind(ctx, x, dim=0):
    xv = ctx.v(x)
    ax = norm_dim(dim, xv.type.rank)
    return tuple(_select(ctx, x, ax, i) for i in range(xv.type.shape[ax]))


def _squeeze(ctx, x, dims=None):
    return _view(ctx, x, None)


def _embedding(ctx, w, ids, *rest):
    return ctx.add("take", [ctx.v(w), ctx.v(ids)], {"axis": 0})


def _repeat(ctx, x, repeats):
    """x.repeat(r0, ..., rk) (and tile): each axis as [r, d] by a broadcast, then merged: [r * d]."""
    xv = ctx.v(x)
    reps = [int(r) for r in repeats]
    shape = [1] * (len(reps) - xv.type.rank) + list(xv.type.shape)
    paired = [v for d in shape for v in (1, d)]
    y = ctx.add("reshape", [xv], {"shape": paired})
    y = ctx.add("broadcast_to", [y], {"shape": [v for r, d in zip(reps, shape) for v in (r, d)]})
    return ctx.add("reshape", [y], {"shape": [r * d for r, d in zip(reps, shape)]})


def _flip(ctx, x, dims):
    """x.flip(dims): a gather of each flipped axis in reverse order."""
    y = xv = ctx.v(x)
    for d in sorted({norm_dim(d, xv.type.rank) for d in dims}) if xv.type.rank else []:
        n = xv.type.shape[d]
        if n > 1:
            rev = ctx.g.add_const(np.arange(n - 1, -1, -1, dtype=np.int64), "flip")
            y = ctx.add("take", [y, rev], {"axis": d})
    return ctx.add("copy", [xv]) if y is xv else y


def _unfold(ctx, x, dim, size, step):
    """``x.unfold(dim, size, step)`` (sliding windows: ``torch.stft``'s frames): a ``take`` of every window's
    positions along ``dim``, the window axis moved last."""
    xv = ctx.v(x)
    if xv.type.rank == 0:  # torch: size 0 or 1 of the scalar
        y = ctx.add("reshape", [xv], {"shape": [1]})
        return y if size else ctx.add("slice", [y], {"axis": 0, "start": 0, "end": 0, "step": 1})
    d = norm_dim(dim, xv.type.rank)
    shape = list(xv.type.shape)
    windows = (shape[d] - size) // step + 1
    where = (np.arange(windows)[:, None] * step + np.arange(size)[None, :]).reshape(-1).astype(np.int64)
    y = ctx.add("take", [xv, ctx.g.add_const(where, "unfold")], {"axis": d})
    y = ctx.add("reshape", [y], {"shape": shape[:d] + [windows, size] + shape[d + 1:]})
    perm = [i for i in range(len(shape) + 1) if i != d + 1] + [d + 1]
    return y if perm == sorted(perm) else ctx.add("transpose", [y], {"perm": perm})


def _gather(ctx, x, dim, index, sparse_grad=False):
    xv = ctx.v(x)
    if xv.type.rank == 0:  # torch: every index of a scalar is 0, so each reads the scalar
        shape = list(ctx.v(index).type.shape)
        return ctx.add("broadcast_to", [xv], {"shape": shape}) if shape else ctx.add("copy", [xv])
    return ctx.add("gather", [xv, ctx.v(index)], {"axis": norm_dim(dim, xv.type.rank)})


def _index_select(ctx, x, dim, index):
    xv = ctx.v(x)
    if xv.type.rank == 0:  # a scalar indexed by a one-element index: the scalar (torch checks the index is 0)
        return ctx.add("copy", [xv])
    return ctx.add("take", [xv, ctx.v(index)], {"axis": norm_dim(dim, xv.type.rank)})


CONVERTERS = {
    aten.unfold.default: _unfold,
    aten.view.default: _view, aten._unsafe_view.default: _view, aten.reshape.default: _view,
    aten.squeeze.dim: _squeeze, aten.squeeze.dims: _squeeze, aten.squeeze.default: _squeeze,
    aten.unsqueeze.default: _view, aten.flatten.using_ints: _view,
    aten.permute.default: _permute, aten.transpose.int: _transpose, aten.t.default: _t,
    aten.expand.default: _expand, aten.repeat.default: _repeat, aten.flip.default: _flip,
    aten.gather.default: _gather, aten.slice.Tensor: _slice, aten.select.int: _select,
    aten.slice_scatter.default: _slice_scatter, aten.select_scatter.default: _select_scatter,
    aten.copy.default: _copy,
    aten.cat.default: _cat, aten.split.Tensor: _split, aten.split_with_sizes.default: _split_sizes,
    aten.unbind.int: _unbind,
    aten.embedding.default: _embedding, aten.index_select.default: _index_select,
}
