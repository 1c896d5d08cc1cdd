"""``x[..., i0, i1, ...] = values`` (or ``+=`` with ``accumulate``) where the index tensors are constants: ``F.fold``
(MobileViT's patch folding) and other scatters whose positions the model's shapes fix.

With the positions known at compile time the scatter is written as a gather: every target position lists the value
elements that land on it (padded with a zero element), a ``take`` reads them and a ``sum`` adds them up. Nothing
is scattered at run time, so the kernels stay data-parallel.

    x[:, :, ih, iw] += v      (ih, iw constant; T target positions, at most K values on one)
    ->  v3 = reshape(v, [pre, P, post]); v3 = pad(v3, one zero row on axis 1)
        out = x3 + sum(reshape(take(v3, sources[T * K], axis=1), [pre, T, K, post]), axis=2)
"""

from __future__ import annotations

import numpy as np

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
