"""ATen -> IR converters that select or count elements by rank: topk, sort (and argsort, which exports as sort),
histc; and the grouped matmul of a mixture of experts' routed tokens.

``topk`` is written with the IR's comparisons and sums, no sort: every element's rank along the axis is the number
of elements that beat it (a larger value, NaN beating every number as in torch, or an equal value at a smaller
index), and output slot ``r`` sums the element whose rank is ``r``. That compares every pair, so the axis is at
most ``TOPK_MAX`` long (expert routing, small vocabularies); a longer one is an unsupported case. A sort is the
top n of n: stable (equal values keep their order) and NaN last ascending, first descending, as torch's.
"""

from __future__ import annotations

import numpy as np

from .ctx import Ctx, aten, norm_dim

TOPK_MAX = 2048


def _topk(ctx: Ctx, a, k, dim=-1, largest=True, sorted=True):
    x = ctx.v(a)
    rank = x.type.rank
    if rank == 0:  # one element: itself, at index 0
        flat = ctx.add("reshape", [x], {"shape": [1]})
        return ctx.add("copy", [x]), ctx.add("argmax", [flat], {"axes": [0], "keepdims": False})
    d = norm_dim(dim, rank)
    n = x.type.shape[d]
    if n > TOPK_MAX:
        raise NotImplementedError(f"over {n} elements (at most {TOPK_MAX}: it compares every pair)")
    perm = [i for i in range(rank) if i != d] + [d]
    xt = ctx.add("transpose", [x], {"perm": perm}) if d != rank - 1 else x
    lead = list(xt.type.shape[:-1])
    xi = ctx.add("reshape", [xt], {"shape": [*lead, n, 1]})  # the element ranked (rows)
    xj = ctx.add("reshape", [xt], {"shape": [*lead, 1, n]})  # the elements it is compared with (columns)
    beats = _beats(ctx, xj, xi, largest)
    ranks = ctx.add("sum", [ctx.cast(beats, "i32")], {"axes": [rank], "keepdims": False})  # [*lead, n]
    slots = ctx.g.add_const(np.arange(k, dtype=np.int32).reshape(k, 1), "topk_slots")
    chosen = ctx.add("eq", [ctx.add("reshape", [ranks], {"shape": [*lead, 1, n]}), slots])  # [*lead, k, n]
    zero = ctx.v(0, x.type.dtype)
    values = ctx.add("sum", [ctx.add("where", [chosen, xj, zero])], {"axes": [rank], "keepdims": False})
    index = ctx.g.add_const(np.arange(n, dtype=np.int64), "topk_index")
    indices = ctx.add("sum", [ctx.add("where", [chosen, index, ctx.v(0, "i64")])], {"axes": [rank], "keepdims": False})
    if d != rank - 1:
        back = list(np.argsort(perm))
        values, indices = (ctx.add("transpose", [t], {"perm": back}) for t in (values, indices))
    return values, indices


def _sort(ctx: Ctx, a, dim=-1, descending=False):
    x = ctx.v(a)
    n = x.type.shape[norm_dim(dim, x.type.rank)] if x.type.rank else 1
    return _topk(ctx, x, n, dim, largest=descending)


def _sort_stable(ctx: Ctx, a, *, stable=None, dim=-1, descending=False):
    return _sort(ctx, a, dim, descending)


def _histc(ctx: Ctx, a, bins=100, min=0, max=0):
    """``torch.histc``: per bin, how many elements fall in it. An element's bin is torch's
    ``trunc((x - min) * bins / (max - min))`` in the input's dtype (``max`` itself in the last bin; NaN and values
    outside ``[min, max]`` in none), then a one-hot sum over the elements."""
    x = ctx.v(a)
    dt = x.type.dtype
    lo, hi = float(min), float(max)
    if not dt.startswith("f"):
        raise NotImplementedError(f"of {dt} tensors")
    if not lo < hi:
        raise NotImplementedError("with min >= max (a range taken from the data)")
    flat = ctx.add("reshape", [x], {"shape": [x.type.numel, 1]})
    inside = ctx.add("logical_and", [ctx.add("ge", [flat, ctx.v(lo, dt)]), ctx.add("le", [flat, ctx.v(hi, dt)])])
    scaled = ctx.add("div", [ctx.add("mul", [ctx.add("sub", [flat, ctx.v(lo, dt)]), ctx.v(float(bins), dt)]),
                             ctx.v(float(np.asarray(hi, x.type.np_dtype) - np.asarray(lo, x.type.np_dtype)), dt)])
    at = ctx.add("minimum", [ctx.cast(ctx.add("floor", [scaled]), "i32"), ctx.v(bins - 1, "i32")])
    bin_ids = ctx.g.add_const(np.arange(bins, dtype=np.int32).reshape(1, bins), "histc_bins")
    hit = ctx.add("logical_and", [ctx.add("eq", [at, bin_ids]), inside])
    return ctx.add("sum", [ctx.cast(hit, dt)], {"axes": [0], "keepdims": False})


def grouped_mm(ctx: Ctx, a, weight, offs):
    """``transformers::grouped_mm_fallback(x[S, d], w[E, d, o], offs[E])``: row ``s`` times the weight of its group,
    the first ``e`` with ``s < offs[e]`` (the rows are sorted by expert, ``offs`` their cumulative counts). Each row
    gathers its group's weight (S x d x o, as transformers' "batched_mm" experts), then one batched matmul."""
    x, w, o = ctx.v(a), ctx.v(weight), ctx.v(offs)
    s, d = x.type.shape
    rows = ctx.g.add_const(np.arange(s, dtype=np.int64).reshape(s, 1), "grouped_rows")
    group = ctx.add("sum", [ctx.cast(ctx.add("le", [ctx.add("reshape", [ctx.cast(o, "i64")],
                                                            {"shape": [1, o.type.shape[0]]}), rows]), "i64")],
                    {"axes": [1], "keepdims": False})
    experts = w.type.shape[0]
    per_row = ctx.add("take", [w, ctx.add("minimum", [group, ctx.v(experts - 1, "i64")])], {"axis": 0})  # [S, d, o]
    y = ctx.add("matmul", [ctx.add("reshape", [x], {"shape": [s, 1, d]}), per_row])
    y = ctx.add("reshape", [y], {"shape": [s, w.type.shape[2]]})
    routed = ctx.add("reshape", [ctx.add("lt", [group, ctx.v(experts, "i64")])], {"shape": [s, 1]})
    return ctx.add("where", [routed, y, ctx.v(0.0, y.type.dtype)])  # rows past the last offset stay 0, as in torch


def _beats(ctx: Ctx, xj, xi, largest: bool):
    """xj comes before xi: better (NaN is the largest value), or equal (NaN equals NaN) at a smaller index."""
    n = xi.type.shape[-2]
    before = ctx.g.add_const(np.arange(n)[None, :] < np.arange(n)[:, None], "topk_before")  # [i, j]: j < i
    better = ctx.add("gt" if largest else "lt", [xj, xi])
    equal = ctx.add("eq", [xj, xi])
    if xi.type.dtype.startswith("f"):
        nan_j, nan_i = ctx.add("ne", [xj, xj]), ctx.add("ne", [xi, xi])
        if largest:
            better = ctx.add("logical_or", [better, ctx.add("logical_and", [nan_j, ctx.add("logical_not", [nan_i])])])
        else:
            better = ctx.add("logical_or", [better, ctx.add("logical_and", [nan_i, ctx.add("logical_not", [nan_j])])])
        equal = ctx.add("logical_or", [equal, ctx.add("logical_and", [nan_j, nan_i])])
    return ctx.add("logical_or", [better, ctx.add("logical_and", [equal, before])])


CONVERTERS = {aten.topk.default: _topk, aten.sort.default: _sort, aten.sort.stable: _sort_stable,
              aten.histc.default: _histc}

#: ops of other libraries, by name (their overloads exist only once the library is imported)
NAMED = {"transformers::grouped_mm_fallback": grouped_mm}
