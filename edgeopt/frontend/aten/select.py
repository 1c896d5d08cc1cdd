"""ATen -> IR converters that select or count elements by rank: topk, sort (and argsort, which exports as sort),
kthvalue, median and nanmedian (an element of the sorted row), searchsorted and bucketize (torch's binary search,
one gather per step), histc; and the grouped matmul of a mixture of experts' routed tokens.

``topk`` and ``sort`` are the IR's ``argtopk`` (the positions of the first k in sorted order: a merge sort on CPUs,
pairwise ranks on GPUs) and a ``gather`` of the values at them: stable (equal values keep their order) and NaN larger
than every number, as torch's; the axis is moved last and back.
"""

from __future__ import annotations

import numpy as np

from .ctx import Ctx, aten, norm_dim


def _topk(ctx: Ctx, a, k, dim=-1, largest=True, sorted=True):
    x = ctx.v(a)
    rank = x.type.rank
    if rank == 0:  # one element: itself, at index 0
        flat = ctx.add("reshape", [x], {"shape": [1]})
        return ctx.add("copy", [x]), ctx.add("argmax", [flat], {"axes": [0], "keepdims": False})
    d = norm_dim(dim, rank)
    shape = [k if i == d else s for i, s in enumerate(x.type.shape)]
    if 0 in shape:  # nothing to choose from, or nothing chosen
        return (ctx.g.add_const(np.zeros(shape, x.type.np_dtype), "topk_values"),
                ctx.g.add_const(np.zeros(shape, np.int64), "topk_indices"))
    perm = [i for i in range(rank) if i != d] + [d]
    xt = ctx.add("transpose", [x], {"perm": perm}) if d != rank - 1 else x
    indices = ctx.add("argtopk", [xt], {"k": k, "largest": bool(largest)})
    values = ctx.add("gather", [xt, indices], {"axis": -1})
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


# ------------------------------------------------------------------------------------ order statistics, search
def _is_nan(ctx: Ctx, x):
    return ctx.add("ne", [x, x])


def _at_position(ctx: Ctx, x, d: int, keepdim: bool, position, first: int):
    """The element of ``x`` at ``position`` along axis ``d`` in ascending order (NaN last, equal values in their
    order; ``position(sorted_values)`` gives an i64 tensor shaped as ``x`` with 1 at ``d``, less than ``first``, the
    number of sorted elements it reads): (value, index)."""
    values, indices = _topk(ctx, x, first, d, largest=False)
    pos = position(values)
    value = ctx.add("gather", [values, pos], {"axis": d})
    index = ctx.add("gather", [indices, pos], {"axis": d})
    if not keepdim:
        shape = [n for k, n in enumerate(x.type.shape) if k != d]
        value, index = (ctx.add("reshape", [t], {"shape": shape}) for t in (value, index))
    return value, index


def _valid_count(ctx: Ctx, values, d: int):
    """Per row along ``d``: how many elements are not NaN (as i64, the axis kept as 1)."""
    return ctx.add("sum", [ctx.cast(ctx.add("logical_not", [_is_nan(ctx, values)]), "i64")], {"axes": [d],
                                                                                          "keepdims": True})


def _statistic(ctx: Ctx, a, dim, keepdim, kind: str, k: int = 1):
    """``kthvalue`` (the k-th smallest), ``median`` (the lower of the two middle elements; NaN, and the first NaN's
    index, where a row has one, as torch) or ``nanmedian`` (the median of the numbers; NaN for a row of NaNs) along
    ``dim``: (values, indices). Of equal values the first in the row is taken, and a row of NaNs gives index 0:
    torch documents those indices as implementation-defined (its CPU selection picks others)."""
    x = ctx.v(a)
    if x.type.rank == 0:  # one element: itself, at index 0
        x, dim, keepdim = ctx.add("reshape", [x], {"shape": [1]}), 0, False
    d = norm_dim(dim, x.type.rank)
    n = x.type.shape[d]

    def position(values):
        row = [1 if i == d else m for i, m in enumerate(values.type.shape)]
        middle = ctx.add("broadcast_to", [ctx.scalar(k - 1 if kind == "kthvalue" else (n - 1) // 2, "i64")],
                         {"shape": row})
        if kind == "kthvalue" or not values.type.dtype.startswith("f"):
            return middle
        valid = _valid_count(ctx, x, d)  # of the whole row (values holds its sorted first part)
        if kind == "median":  # a row with a NaN: its first NaN, which sorts right after the numbers
            return ctx.add("where", [ctx.add("lt", [valid, ctx.scalar(n, "i64")]), valid, middle])
        lower = ctx.add("div", [ctx.add("sub", [valid, ctx.scalar(1, "i64")]), ctx.scalar(2, "i64")])
        return ctx.add("maximum", [lower, ctx.scalar(0, "i64")])  # a row of NaNs: its first, NaN

    # how many sorted elements a position can reach
    if kind == "kthvalue":
        first = k
    elif kind == "median" and x.type.dtype.startswith("f"):
        first = n  # a row's first NaN may be its last element
    else:
        first = (n - 1) // 2 + 1
    return _at_position(ctx, x, d, bool(keepdim), position, first)


def _kthvalue(ctx: Ctx, a, k, dim=-1, keepdim=False):
    return _statistic(ctx, a, dim, keepdim, "kthvalue", k)


def _median_along(kind: str):
    def convert(ctx: Ctx, a, dim, keepdim=False):
        return _statistic(ctx, a, dim, keepdim, kind)

    return convert


def _median_of_all(kind: str):
    def convert(ctx: Ctx, a):
        x = ctx.v(a)
        return _statistic(ctx, ctx.add("reshape", [x], {"shape": [x.type.numel]}), 0, False, kind)[0]

    return convert


def _searchsorted(ctx: Ctx, seq, values, *, out_int32=False, right=False, side=None, sorter=None):
    """``torch.searchsorted``: torch's binary search itself, one step per halving of the row (``log2(n) + 1``
    gathers): the search moves right of ``mid`` where ``!(row[mid] >= value)`` (``right``: ``>``), so rows with
    NaN, and rows that are not sorted, give torch's answers too."""
    s, v = ctx.v(seq), ctx.v(values)
    floats = s.type.dtype.startswith(("f", "bf")) or v.type.dtype.startswith(("f", "bf"))
    common = "f32" if floats else "i64"  # compared in one dtype
    s, v = ctx.cast(s, common), ctx.cast(v, common)
    if sorter is not None:
        s = ctx.add("gather", [s, ctx.v(sorter)], {"axis": s.type.rank - 1})
    n = s.type.shape[-1]
    right = right or side == "right"
    shape = list(v.type.shape)
    start, end = (ctx.add("broadcast_to", [ctx.scalar(b, "i64")], {"shape": shape}) if shape else ctx.scalar(b, "i64")
                  for b in (0, n))
    one, last = ctx.scalar(1, "i64"), ctx.scalar(max(n - 1, 0), "i64")
    v_nan = _is_nan(ctx, v) if common == "f32" else None
    for _ in range(n.bit_length()):
        active = ctx.add("lt", [start, end])
        mid = ctx.add("add", [start, ctx.add("div", [ctx.add("sub", [end, start]), ctx.scalar(2, "i64")])])
        at = ctx.add("minimum", [mid, last])  # a finished search (start == end == n) reads a valid element
        mid_val = ctx.add("take", [s, at], {"axis": 0}) if s.type.rank == 1 else \
            ctx.add("gather", [s, at], {"axis": s.type.rank - 1})
        go_right = ctx.add("le" if right else "lt", [mid_val, v])  # !(mid_val > v) / !(mid_val >= v) ...
        if common == "f32":  # ... which also holds where either is NaN (compares are not NaN-safe, NaN tests are)
            go_right = ctx.add("logical_or", [go_right, ctx.add("logical_or", [_is_nan(ctx, mid_val), v_nan])])
        start = ctx.add("where", [ctx.add("logical_and", [active, go_right]), ctx.add("add", [mid, one]), start])
        end = ctx.add("where", [ctx.add("logical_and", [active, ctx.add("logical_not", [go_right])]), mid, end])
    return ctx.cast(start, "i32" if out_int32 else "i64")


def _bucketize(ctx: Ctx, values, boundaries, *, out_int32=False, right=False):
    """``torch.bucketize``: ``searchsorted(boundaries, values)`` on the same side (``right=False``:
    ``boundaries[i-1] < v <= boundaries[i]``, searchsorted's left)."""
    return _searchsorted(ctx, boundaries, values, out_int32=out_int32, right=right)


CONVERTERS = {aten.topk.default: _topk, aten.sort.default: _sort, aten.sort.stable: _sort_stable,
              aten.histc.default: _histc, aten.kthvalue.default: _kthvalue,
              aten.median.default: _median_of_all("median"), aten.median.dim: _median_along("median"),
              aten.nanmedian.default: _median_of_all("nanmedian"), aten.nanmedian.dim: _median_along("nanmedian"),
              aten.searchsorted.Tensor: _searchsorted, aten.bucketize.Tensor: _bucketize}

#: ops of other libraries, by name (their overloads exist only once the library is imported)
NAMED = {"transformers::grouped_mm_fallback": grouped_mm}
