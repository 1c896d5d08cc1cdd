"""Scatters. ``x[..., i0, i1, ...] = values`` (or ``+=`` with ``accumulate``) where the index tensors are constants:
``F.fold`` (MobileViT's patch folding) and other scatters whose positions the model's shapes fix; and
``scatter`` / ``scatter_add`` / ``scatter_reduce`` (sum, mean, prod, amax, amin) along an axis with indices known
only at run time (one-hot labels, graph message passing, a point cloud's pooling), as a compare of every index with
every position (``scatter_dim``).

With the positions known at compile time the scatter is written as a gather: every target position lists the value
elements that land on it (padded with a zero element), a ``take`` reads them and a ``sum`` adds them up. Nothing
is scattered at run time, so the kernels stay data-parallel.

    x[:, :, ih, iw] += v      (ih, iw constant; T target positions, at most K values on one)
    ->  v3 = reshape(v, [pre, P, post]); v3 = pad(v3, one zero row on axis 1)
        out = x3 + sum(reshape(take(v3, sources[T * K], axis=1), [pre, T, K, post]), axis=2)
"""

from __future__ import annotations

import numpy as np

from ...ir_dtypes import extremes
from .ctx import along_last, aten, norm_dim

#: a target position may gather at most this many value elements (F.fold's overlapping windows: kernel / stride
#: squared); more is refused rather than made into a large gather
MAX_SOURCES = 64


def constant_indices(ctx, indices) -> list[np.ndarray | None] | None:
    """The index tensors' values, None where an axis takes no index; None if any is computed from the inputs."""
    out = []
    for t in indices:
        if t is None:
            out.append(None)
        elif getattr(t, "name", None) in ctx.torch_consts:
            out.append(ctx.torch_consts[t.name].detach().cpu().numpy())
        else:
            return None
    return out


def scatter_constant(ctx, xv, idx: list[np.ndarray | None], values, accumulate: bool):
    """``xv[..., idx...] = values`` (``+=`` if ``accumulate``) for constant integer ``idx`` on consecutive axes."""
    pos = [i for i, t in enumerate(idx) if t is not None]
    a, b = pos[0], pos[-1] + 1
    if pos != list(range(a, b)):
        raise NotImplementedError("with index tensors on non-adjacent axes")
    if any(idx[i].dtype in (np.bool_, np.uint8) for i in pos):  # (torch reads a uint8 index as a mask too)
        raise NotImplementedError("with a mask index (bool or uint8)")
    shape = xv.type.shape
    arrays = np.broadcast_arrays(*[idx[i].astype(np.int64) for i in pos])
    lin = np.zeros(arrays[0].shape, np.int64)
    for k, i in zip(range(a, b), arrays):
        n = shape[k]
        if ((i < -n) | (i >= n)).any():
            raise NotImplementedError(f"with an index out of range for axis {k} of size {n}")
        lin = lin * n + np.where(i < 0, i + n, i)
    pre, post = int(np.prod(shape[:a], dtype=np.int64)), int(np.prod(shape[b:], dtype=np.int64))
    targets, count = int(np.prod(shape[a:b], dtype=np.int64)), int(lin.size)
    per_target = np.bincount(lin.reshape(-1), minlength=targets)
    k = int(per_target.max()) if count else 0
    if k == 0:
        return ctx.add("copy", [xv])
    if not accumulate and k > 1:
        raise NotImplementedError("with repeated positions and accumulate=False (torch leaves which write wins open)")
    if k > MAX_SOURCES:
        raise NotImplementedError(f"with {k} values on one position (at most {MAX_SOURCES} are gathered)")
    order = np.argsort(lin.reshape(-1), kind="stable")  # value elements grouped by target, in order
    sources = np.full((targets, k), count, np.int64)  # `count`: the zero element appended to the values
    starts = np.concatenate([[0], np.cumsum(per_target)[:-1]])
    slot = np.arange(count) - np.repeat(starts, per_target)
    sources[np.sort(lin.reshape(-1)), slot] = order

    dt = xv.type.dtype
    full = list(shape[:a]) + list(lin.shape) + list(shape[b:])
    v = ctx.v(values, dt)
    if list(v.type.shape) != full:
        v = ctx.add("broadcast_to", [v], {"shape": full})
    v3 = ctx.add("reshape", [v], {"shape": [pre, count, post]})
    v3 = ctx.add("pad", [v3], {"pads": [0, 0, 0, 1, 0, 0], "value": 0.0 if dt.startswith("f") else 0})
    src = ctx.g.add_const(sources.reshape(-1), "scatter_sources")
    got = ctx.add("take", [v3, src], {"axis": 1})
    x3 = ctx.add("reshape", [xv], {"shape": [pre, targets, post]})
    if accumulate:
        got = ctx.add("reshape", [got], {"shape": [pre, targets, k, post]})
        got = ctx.add("sum", [got], {"axes": [2], "keepdims": False}) if k > 1 else \
            ctx.add("reshape", [got], {"shape": [pre, targets, post]})
        out = ctx.add("add", [x3, got])
    else:  # a position with no value keeps x's
        hit = ctx.g.add_const((per_target > 0).reshape(1, targets, 1), "scatter_hit")
        out = ctx.add("where", [hit, got, x3])
    return ctx.add("reshape", [out], {"shape": list(shape)})


#: a scatter along an axis compares every index with every position: at most this many pairs per row
SCATTER_PAIRS_MAX = 1 << 20


#: scatter_reduce's reductions: the masked reduction over the values that land on a position, the value that a
#: position no value lands on contributes to it, and how a position's own value joins (include_self)
REDUCTIONS = {"sum": ("sum", 0, "add"), "mean": ("sum", 0, "add"), "prod": ("prod", 1, "mul"),
              "amax": ("max", "lowest", "maximum"), "amin": ("min", "highest", "minimum")}


def scatter_dim(ctx, x, dim, index, src, reduce: str | None, include_self: bool = True):
    """``x.scatter(dim, index, src)`` (``reduce`` None; ``src`` a tensor or a number), ``scatter_add`` (``"sum"``)
    or ``scatter_reduce`` (a key of ``REDUCTIONS``) with indices known only at run time: every position of the axis
    compares itself with every index (a [.., J, N] mask), then reduces what lands on it (with its own value if
    ``include_self``; a position nothing lands on keeps its own), or takes the last value written to it (as torch's
    CPU loop does) or the number."""
    xv = ctx.v(x)
    r = xv.type.rank
    if r == 0:
        raise NotImplementedError("of a scalar")
    d = norm_dim(dim, r)
    iv = ctx.cast(ctx.v(index), "i64")
    block = [m if k != d else xv.type.shape[d] for k, m in enumerate(iv.type.shape)]
    if block != list(xv.type.shape):  # the index covers a leading block off the axis: scatter there, keep the rest
        part = xv
        for k, m in enumerate(block):
            if m != xv.type.shape[k]:
                part = ctx.add("slice", [part], {"axis": k, "start": 0, "end": m, "step": 1})
        done = scatter_dim(ctx, part, d, iv, src, reduce, include_self)
        pads = [p for k, m in enumerate(block) for p in (0, xv.type.shape[k] - m)]
        inside = np.zeros(xv.type.shape, np.bool_)
        inside[tuple(slice(0, m) for m in block)] = True
        return ctx.add("where", [ctx.g.add_const(inside, "scatter_block"),
                                 ctx.add("pad", [done], {"pads": pads, "value": 0.0 if xv.type.dtype.startswith("f")
                                                         else 0}), xv])
    n, j = xv.type.shape[d], iv.type.shape[d]
    if j == 0:  # nothing scattered
        return ctx.add("copy", [xv])
    if n * j > SCATTER_PAIRS_MAX:
        raise NotImplementedError(f"of {j} values over {n} positions (it compares every pair: at most "
                                  f"{SCATTER_PAIRS_MAX})")
    dt = xv.type.dtype
    xl, back = along_last(ctx, xv, d)
    il, _ = along_last(ctx, iv, d)
    lead = list(il.type.shape[:-1])
    positions = ctx.g.add_const(np.arange(n, dtype=np.int64), "scatter_positions")
    mask = ctx.add("eq", [ctx.add("reshape", [il], {"shape": lead + [j, 1]}), positions])  # [.., J, N]
    if isinstance(src, (int, float, bool)):
        hit = ctx.add("gt", [ctx.add("sum", [ctx.cast(mask, "i32")], {"axes": [len(lead)], "keepdims": False}),
                             ctx.v(0, "i32")])
        out = ctx.add("where", [hit, ctx.v(src, dt), xl])
    else:
        sv = ctx.v(src, dt)
        if list(sv.type.shape) != list(iv.type.shape):  # torch reads src's leading block of the index's shape
            for k, m in enumerate(iv.type.shape):
                if sv.type.shape[k] != m:
                    sv = ctx.add("slice", [sv], {"axis": k, "start": 0, "end": m, "step": 1})
        sl, _ = along_last(ctx, sv, d)
        col = ctx.add("reshape", [sl], {"shape": lead + [j, 1]})
        if reduce is not None:
            out = _reduce_landing(ctx, xl, col, mask, len(lead), reduce, include_self)
        else:  # the last write wins: the largest j that lands on each position (1-based; 0: none)
            order = ctx.g.add_const(np.arange(1, j + 1, dtype=np.int64).reshape(j, 1), "scatter_order")
            last = ctx.add("max", [ctx.add("where", [mask, order, ctx.v(0, "i64")])], {"axes": [len(lead)],
                                                                                       "keepdims": False})
            src_at = ctx.add("gather", [sl, ctx.add("maximum", [ctx.add("sub", [last, ctx.v(1, "i64")]),
                                                                  ctx.v(0, "i64")])], {"axis": len(lead)})
            out = ctx.add("where", [ctx.add("gt", [last, ctx.v(0, "i64")]), src_at, xl])
    return out if back == list(range(r)) else ctx.add("transpose", [out], {"perm": back})


def _reduce_landing(ctx, xl, col, mask, axis: int, reduce: str, include_self: bool):
    """Each position's ``reduce`` of the values ``col`` that ``mask`` lands on it ([.., J, 1] and [.., J, N] ->
    [.., N]), joined with its own value ``xl`` (``include_self``) or replacing it where anything lands."""
    dt = xl.type.dtype
    if dt == "bool":
        raise NotImplementedError(f"{reduce!r} of bool tensors")
    op, fill, join = REDUCTIONS[reduce]
    if fill in ("lowest", "highest"):  # the extremes' identity: infinity, or the integer type's end
        fill = extremes(dt)[fill == "highest"]
    got = ctx.add(op, [ctx.add("where", [mask, col, ctx.v(fill, dt)])], {"axes": [axis], "keepdims": False})
    if include_self:
        got = ctx.add(join, [xl, got])
    if reduce != "mean" and include_self:
        return got
    count = ctx.add("sum", [ctx.cast(mask, "i64")], {"axes": [axis], "keepdims": False})
    if reduce == "mean":  # a position's own value counts once with include_self; nothing landed divides by 1
        one = ctx.v(1, "i64")
        got = _mean_of_sum(ctx, got, ctx.add("add" if include_self else "maximum", [count, one]))
    return got if include_self else ctx.add("where", [ctx.add("gt", [count, ctx.v(0, "i64")]), got, xl])


def _mean_of_sum(ctx, total, count):
    """total / count, rounded down for integers as torch's scatter_reduce "mean" does."""
    dt = total.type.dtype
    if dt.startswith(("f", "bf")):
        return ctx.add("div", [total, ctx.cast(count, dt)])
    count = ctx.cast(count, dt)
    q = ctx.add("div", [total, count])  # toward 0; one less where a negative total left a remainder
    rest = ctx.add("sub", [total, ctx.add("mul", [q, count])])
    return ctx.add("where", [ctx.add("lt", [rest, ctx.v(0, dt)]), ctx.add("sub", [q, ctx.v(1, dt)]), q])


def _scatter(ctx, x, dim, index, src):
    return scatter_dim(ctx, x, dim, index, src, None)


def _scatter_add(ctx, x, dim, index, src):
    return scatter_dim(ctx, x, dim, index, src, "sum")


def _scatter_reduce(ctx, x, dim, index, src, reduce, include_self=True):
    return scatter_dim(ctx, x, dim, index, src, reduce, bool(include_self))


def _scatter_with_reduce(ctx, x, dim, index, src, reduce):
    """``x.scatter(dim, index, src, reduce="add" | "multiply")``: with ``x``'s own values, as scatter_reduce's; a
    number ``src`` is a tensor of it shaped as ``index``."""
    if isinstance(src, (bool, int, float)):
        src = ctx.add("broadcast_to", [ctx.v(src, ctx.v(x).type.dtype)], {"shape": list(ctx.v(index).type.shape)})
    return scatter_dim(ctx, x, dim, index, src, {"add": "sum", "multiply": "prod"}[reduce])


CONVERTERS = {aten.scatter.src: _scatter, aten.scatter.value: _scatter, aten.scatter_add.default: _scatter_add,
              aten.scatter_reduce.two: _scatter_reduce, aten.scatter.reduce: _scatter_with_reduce,
              aten.scatter.value_reduce: _scatter_with_reduce}
