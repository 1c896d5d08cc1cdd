"""``max_pool2d``'s indices and ``max_unpool2d`` (SegNet's and ENet's decoders put each pooled value back where it
came from), written with the IR's elementwise ops.

Indices: each output's flat position ``h * W + w`` in its input plane of the window's largest value, as torch's
CPU kernel picks it: the window's in-bounds positions scanned row by row, the first of equal values, and the last
NaN where there is one. Every window position is one strided slice of the input (padded with -inf, which never
wins), and a running compare over the ``kh x kw`` slices keeps each output's value and position: one elementwise
kernel.

Unpooling: ``max_unpool2d(y, indices)`` writes each ``y`` at its index in a zero plane. With indices from a pool
whose windows do not overlap (stride at least the window's extent: SegNet's and ENet's 2x2 / 2), every output
position lies in at most one window, so it is a gather: position ``(h, w)`` reads its window's value and index and
keeps the value where the index is its own position. Indices from elsewhere, or from overlapping windows, are
refused by name.
"""

from __future__ import annotations

import operator

import numpy as np

from ...ir.ops.nn import windows_along
from ...ir_dtypes import extremes
from .ctx import aten
from .nn import _max_pool, _pair


def _axis_taps(size: int, k: int, s: int, p: int, d: int, ceil_mode: bool):
    """Along one axis: the output count, the padding after the input that the windows reach, and per output the
    first in-bounds position of its window (torch's initial index)."""
    out, back = windows_along(size, k, s, p, p, d, ceil_mode)
    starts = np.arange(out) * s - p
    first = np.where(starts < 0, starts + d * -(starts // d), starts)  # torch steps a negative start by the dilation
    return out, back, first


def max_pool2d_indices(ctx, x, kernel, stride, padding, dilation, ceil_mode):
    """The int64 indices [N, C, OH, OW] of ``max_pool2d(x)`` with these arguments (x: [N, C, H, W])."""
    n, c, h, w = x.type.shape
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = kernel, stride, padding, dilation
    oh, bottom, first_h = _axis_taps(h, kh, sh, ph, dh, ceil_mode)
    ow, right, first_w = _axis_taps(w, kw, sw, pw, dw, ceil_mode)
    low = float(extremes(x.type.dtype)[0])
    xp = ctx.add("pad", [x], {"pads": [0, 0, 0, 0, ph, bottom, pw, right], "value": low}) \
        if ph or pw or bottom or right else x
    rows, cols = np.arange(oh) * sh - ph, np.arange(ow) * sw - pw
    best = ctx.g.add_const(np.full((1, 1, 1, 1), low, x.type.np_dtype), "pool_low")
    index = ctx.g.add_const((first_h[:, None] * w + first_w[None, :]).astype(np.int64)[None, None], "pool_first")
    for i in range(kh):
        for j in range(kw):
            v = ctx.add("slice", [xp], {"axis": 2, "start": i * dh, "end": i * dh + (oh - 1) * sh + 1, "step": sh})
            v = ctx.add("slice", [v], {"axis": 3, "start": j * dw, "end": j * dw + (ow - 1) * sw + 1, "step": sw})
            pos = (rows[:, None] + i * dh) * w + (cols[None, :] + j * dw)
            take = ctx.add("logical_or", [ctx.add("gt", [v, best]), ctx.add("ne", [v, v])])  # larger, or NaN
            best = ctx.add("where", [take, v, best])
            index = ctx.add("where", [take, ctx.g.add_const(pos.astype(np.int64)[None, None], "pool_pos"), index])
    if index.type.shape != (n, c, oh, ow):  # a 1x1 window over no padding: positions only
        index = ctx.add("broadcast_to", [index], {"shape": [n, c, oh, ow]})
    return index


def max_unpool2d(ctx, y, indices, output_size, pool: dict):
    """``y`` [N, C, OH, OW] put back at ``indices`` in zero planes of ``output_size``; ``pool``: the arguments of the
    max_pool2d that made the indices."""
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = pool["kernel"], pool["stride"], pool["padding"], pool["dilation"]
    if sh < dh * (kh - 1) + 1 or sw < dw * (kw - 1) + 1:
        raise NotImplementedError("after a pool whose windows overlap (stride smaller than the window)")
    n, c, oh, ow = y.type.shape
    height, width = (int(s) for s in output_size[-2:])
    if width != pool["input"][1]:
        raise NotImplementedError(f"to a width ({width}) other than the pooled input's ({pool['input'][1]})")
    last_row = min((oh - 1) * sh - ph + dh * (kh - 1), pool["input"][0] - 1)  # the last row a window reaches
    if height <= last_row:  # an index there is past the plane (torch raises when one is)
        raise NotImplementedError(f"to {height} rows, where the pool's windows reach row {last_row}")
    src_h = np.clip((np.arange(height) + ph) // sh, 0, oh - 1)  # the one window that can hold each position
    src_w = np.clip((np.arange(width) + pw) // sw, 0, ow - 1)

    def spread(v):
        v = ctx.add("take", [v, ctx.g.add_const(src_h.astype(np.int64), "unpool_rows")], {"axis": 2})
        return ctx.add("take", [v, ctx.g.add_const(src_w.astype(np.int64), "unpool_cols")], {"axis": 3})

    here = np.arange(height)[:, None] * width + np.arange(width)[None, :]
    mine = ctx.add("eq", [spread(indices), ctx.g.add_const(here.astype(np.int64)[None, None], "unpool_here")])
    zero = ctx.g.add_const(np.zeros((1, 1, 1, 1), y.type.np_dtype), "unpool_zero")
    return ctx.add("where", [mine, spread(y), zero])


def _max_pool_with_indices(ctx, x, kernel, stride=(), padding=0, dilation=1, ceil_mode=False):
    xv = ctx.v(x)
    values, _ = _max_pool(ctx, xv, kernel, stride, padding, dilation, ceil_mode)
    if not any(u.target is operator.getitem and u.args[1] == 1 for u in ctx.node.users):
        return values, None  # torch.export makes every max_pool2d this op: the indices only where they are read
    batched = xv if xv.type.rank == 4 else ctx.add("reshape", [xv], {"shape": [1, *xv.type.shape]})
    args = (_pair(kernel), _pair(stride or kernel), _pair(padding), _pair(dilation))
    index = max_pool2d_indices(ctx, batched, *args, bool(ceil_mode))
    if xv.type.rank == 3:
        index = ctx.add("reshape", [index], {"shape": list(index.type.shape[1:])})
    ctx.pool_indices[index.name] = {"kernel": args[0], "stride": args[1], "padding": args[2], "dilation": args[3],
                                    "input": tuple(batched.type.shape[2:])}
    return values, index


def _max_unpool2d(ctx, y, indices, output_size):
    yv, iv = ctx.v(y), ctx.v(indices)
    pool = ctx.pool_indices.get(iv.name)
    if pool is None:
        raise NotImplementedError("with indices that do not come straight from max_pool2d(return_indices=True)")
    if yv.type.rank == 4:
        return max_unpool2d(ctx, yv, iv, output_size, pool)
    one = [ctx.add("reshape", [v], {"shape": [1, *v.type.shape]}) for v in (yv, iv)]
    out = max_unpool2d(ctx, *one, output_size, pool)
    return ctx.add("reshape", [out], {"shape": list(out.type.shape[1:])})


CONVERTERS = {aten.max_pool2d_with_indices.default: _max_pool_with_indices,
              aten.max_unpool2d.default: _max_unpool2d}
