"""ATen -> IR converters that select elements by rank: topk.

``topk`` is written with the IR's comparisons and sums, no sort: every element's rank along the axis is the number
of elements that beat it (a larger value, NaN beating every number as in torch, or an equal value at a smaller
index), and output slot ``r`` sums the element whose rank is ``r``. That compares every pair, so the axis is at
most ``TOPK_MAX`` long (expert routing, small vocabularies); a longer one is an unsupported case.
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


CONVERTERS = {aten.topk.default: _topk}
