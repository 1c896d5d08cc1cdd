"""ATen -> IR converters for advanced indexing: reads ``x[i, j]`` (``index.Tensor``) and writes ``x[i, j] = v``,
``x[mask] = v`` (``index_put``, ``index_copy``).

PyTorch's rule for the result's shape: the index tensors broadcast to one shape ``B``; if they sit on adjacent axes,
``B`` takes those axes' place (``x[:, i, j]`` of ``x[A, P, Q, R]`` is ``[A, *B, R]``); if a slice separates them,
``B`` comes first (``x[i, :, j]`` is ``[*B, P]``). Both become one axis: the indexed axes are moved together (a
``transpose`` where they are apart) and flattened into one, and the index tensors combined into one linear index, so
a read is one ``take`` and a write one ``index_copy`` (or ``scatter_add`` with ``accumulate``) along that axis.

A bool mask index (``x[x < 0] = 0``) writes a value that does not depend on which element it lands on, so it is a
``where`` of the mask broadcast over the trailing axes. Reading through a mask, or writing one value per selected
element, has a size known only at run time and is refused by name.
"""

from __future__ import annotations

import numpy as np

from .ctx import aten, norm_dim
from .run_time_scalars import wrap_negative
from .scatter import constant_indices, scatter_constant, scatter_dim


def _mask_dtype(dtype: str) -> bool:
    return dtype in ("bool", "u8")  # torch reads a uint8 index as a mask too


def _gathered_axes(ctx, xv, indices):
    """Move the indexed axes of ``xv`` together and flatten them into one: ``(xf, axis, lin, batch, undo)``.

    ``xf`` is ``xv`` with the indexed axes as one axis ``axis``; ``lin`` the linear index into it (negative
    indices wrapped, as torch counts them from the end); ``batch`` the index tensors' broadcast shape; ``undo(y)``
    turns a tensor shaped as ``xf`` back into ``xv``'s layout. ``x[indices]`` is ``xf`` taken at ``lin`` (shaped
    ``batch``) along ``axis``."""
    pos = [i for i, t in enumerate(indices) if t is not None]
    rank = xv.type.rank
    perm = None
    if pos != list(range(pos[0], pos[-1] + 1)):  # apart: torch puts the broadcast axes first
        perm = pos + [k for k in range(rank) if k not in pos]
        xv = ctx.add("transpose", [xv], {"perm": perm})
        axes = list(range(len(pos)))
    else:
        axes = pos
    moved = list(xv.type.shape)
    a, b = axes[0], axes[-1] + 1
    idx = [ctx.cast(ctx.v(indices[i]), "i64") for i in pos]
    batch = [int(d) for d in np.broadcast_shapes(*[tuple(i.type.shape) for i in idx])]
    lin = None
    for k, i in zip(range(a, b), idx):
        i = wrap_negative(ctx, i, moved[k])
        stride = int(np.prod(moved[k + 1:b], dtype=np.int64))
        term = i if stride == 1 else ctx.add("mul", [i, ctx.scalar(stride, "i64")])
        lin = term if lin is None else ctx.add("add", [lin, term])
    if list(lin.type.shape) != batch:
        lin = ctx.add("broadcast_to", [lin], {"shape": batch})
    flat = moved[:a] + [int(np.prod(moved[a:b], dtype=np.int64))] + moved[b:]
    xf = xv if b - a == 1 else ctx.add("reshape", [xv], {"shape": flat})

    def undo(y):
        if b - a != 1:
            y = ctx.add("reshape", [y], {"shape": moved})
        if perm is not None:
            y = ctx.add("transpose", [y], {"perm": [int(p) for p in np.argsort(perm)]})
        return y

    return xf, a, lin, batch, undo


def _index(ctx, x, indices):
    """``x[i0, i1, ...]`` (advanced indexing) with integer index tensors, adjacent or apart, others ``:``."""
    xv = ctx.v(x)
    pos = [i for i, t in enumerate(indices) if t is not None]
    if any(_mask_dtype(ctx.v(indices[i]).type.dtype) for i in pos):
        raise NotImplementedError("boolean mask indexing (the result's size depends on the mask's values); "
                                  "torch.where(mask, x, 0) keeps the shape")
    xf, a, lin, _, _ = _gathered_axes(ctx, xv, indices)
    return ctx.add("take", [xf, lin], {"axis": a})


def _masked_put(ctx, xv, indices, values, accumulate):
    """``x[..., mask, ...] = values`` (``+=`` with ``accumulate``) where every selected element gets the same value
    (values that broadcast to ``x[..., mask, ...]``'s ``[*before, count, *after]`` with a 1, or nothing, at the
    count's place): ``where(mask, values, x)`` with the values spread over the mask's axes."""
    given = [i for i, t in enumerate(indices) if t is not None]
    if len(given) != 1:
        raise NotImplementedError("with a mask index beside other index tensors")
    p = given[0]
    mask = ctx.v(indices[p])
    shape = list(xv.type.shape)
    m = mask.type.rank
    if list(mask.type.shape) != shape[p:p + m]:
        raise NotImplementedError(f"with a {mask.type} mask on axes of sizes {shape[p:p + m]}")
    src = ctx.v(values, xv.type.dtype)
    after = len(shape) - p - m
    vshape = [1] * (p + 1 + after - src.type.rank) + list(src.type.shape)  # torch: no more axes than that
    if vshape[p] != 1:
        raise NotImplementedError(f"with a mask and values of shape {list(src.type.shape)}: one value per selected "
                                  "element (their count depends on the data); values every selected element "
                                  "shares are covered")
    spread = vshape[:p] + [1] * m + vshape[p + 1:]
    if list(src.type.shape) != spread:
        src = ctx.add("reshape", [src], {"shape": spread})
    if spread != shape:
        src = ctx.add("broadcast_to", [src], {"shape": shape})
    cond = ctx.add("reshape", [ctx.cast(mask, "bool")], {"shape": [1] * p + shape[p:p + m] + [1] * after})
    cond = ctx.add("broadcast_to", [cond], {"shape": shape})
    if accumulate:
        src = ctx.add("add", [xv, src])
    return ctx.add("where", [cond, src, xv])


def _index_put(ctx, x, indices, values, accumulate=False):
    """``x[..., i, j, ...] = values`` (``+=`` with ``accumulate``) with integer index tensors of any shape,
    adjacent or apart (``index_copy_`` and a KV cache's update export as one 1-D index), or with a bool mask.
    Constant indices on adjacent axes: a gather (``scatter.scatter_constant``). Otherwise the indexed axes become one
    (``_gathered_axes``) and the values are written with ``index_copy`` (the last write of an index wins, as torch's
    CPU loop) or added with ``scatter_add`` (``scatter.scatter_dim``)."""
    xv = ctx.v(x)
    given = [i for i, t in enumerate(indices) if t is not None]
    if any(_mask_dtype(ctx.v(indices[i]).type.dtype) for i in given):
        return _masked_put(ctx, xv, indices, values, accumulate)
    known = constant_indices(ctx, indices)
    adjacent = given == list(range(given[0], given[-1] + 1))
    if known is not None and adjacent and (accumulate or len(given) != 1 or known[given[0]].ndim != 1):
        return scatter_constant(ctx, xv, known, values, accumulate)
    xf, ax, lin, batch, undo = _gathered_axes(ctx, xv, indices)
    count = int(np.prod(batch, dtype=np.int64))
    if count == 0:  # nothing written
        return ctx.add("copy", [xv])
    if len(batch) != 1:
        lin = ctx.add("reshape", [lin], {"shape": [count]})
    fshape = list(xf.type.shape)
    shape = fshape[:ax] + batch + fshape[ax + 1:]  # x[indices]'s shape: what the values broadcast to
    src = ctx.v(values, xv.type.dtype)
    if list(src.type.shape) != shape:
        src = ctx.add("broadcast_to", [src], {"shape": shape})
    flat = fshape[:ax] + [count] + fshape[ax + 1:]
    if shape != flat:
        src = ctx.add("reshape", [src], {"shape": flat})
    if accumulate:  # index_add: each element's index along the axis, then scatter_add's compare of every pair
        along = ctx.add("reshape", [lin], {"shape": [flat[ax] if k == ax else 1 for k in range(len(flat))]})
        y = scatter_dim(ctx, xf, ax, ctx.add("broadcast_to", [along], {"shape": flat}), src, "sum")
    else:
        y = ctx.add("index_copy", [xf, src, lin], {"axis": ax})
    return undo(y)


def _index_copy(ctx, x, dim, index, source):
    xv = ctx.v(x)
    return _index_put(ctx, xv, [None] * norm_dim(dim, xv.type.rank) + [index], source)


CONVERTERS = {aten.index.Tensor: _index, aten.index_put.default: _index_put, aten.index_copy.default: _index_copy}
