"""conv2d_winograd: a 3x3 stride-1 convolution by Winograd's minimal filtering F(m x m, 3 x 3).

Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks" (2016). The output is cut into m x m
tiles; each is ``Y = AT [U * (BT d BT')] AT'``, where ``d`` is the (m+2) x (m+2) input tile under it, ``*``
is elementwise, summed over the input channels, and ``U = G g G'`` is the 3x3 filter ``g`` transformed once,
at compile time. Per tile and channel pair, (m+2)^2 multiplies replace 9 m^2: 2.25x fewer with m = 2 and 4x
fewer with m = 4, whose larger constants cost some accuracy: in fp32, about 1e-5 of the output's scale with
m = 4 and 2e-6 with m = 2 (ResNet-18's layers, ``bench/winograd.py``).

The op has one layout, the blocked one the CPU pipeline uses (``nchwc_layout``):

    x [N, C/b, H, W, b]  ->  [N, O/v, OH, OW, v],    OH = H + top + bottom - 2 (OW likewise)
    u [(m+2)^2, O/v, C, v]: U of each of the (m+2)^2 tile positions, in panels of v output channels
    bias [O] (optional)
    attrs: tile = m (2 or 4), padding = [top, left, bottom, right]

The reference computes exactly that algorithm in float64; with ``u`` from ``transform_weight`` (rounded to the
filter's dtype) it agrees with ``conv2d`` of that filter up to that rounding of ``u``.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ..registry import REQUIRED, OpDef, OpError, register
from ..types import TensorType
from ._common import need_float, same_dtype
from .layout import block_nchw, unblock_nchw

TILES = (2, 4)

#: F(m, 3) for m = 2 (interpolation points 0, 1, -1, inf) and m = 4 (0, 1, -1, 2, -2, inf): BT, G, AT
_MATRICES = {
    2: ([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]],
        [[1, 0, 0], [1 / 2, 1 / 2, 1 / 2], [1 / 2, -1 / 2, 1 / 2], [0, 0, 1]],
        [[1, 1, 1, 0], [0, 1, -1, -1]]),
    4: ([[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0], [0, -2, -1, 2, 1, 0],
         [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]],
        [[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6], [1 / 24, 1 / 12, 1 / 6],
         [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]],
        [[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]]),
}


def matrices(m: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(BT [a, a], G [a, 3], AT [m, a]) of F(m x m, 3 x 3), a = m + 2, in float64."""
    if m not in _MATRICES:
        raise OpError(f"conv2d_winograd: tile must be one of {list(TILES)}, got {m!r}")
    return tuple(np.array(x, dtype=np.float64) for x in _MATRICES[m])


def transform_weight(w: np.ndarray, m: int, v: int) -> np.ndarray:
    """An OIHW 3x3 filter -> ``u`` [(m+2)^2, O/v, C, v] (``U = G g G'`` per channel pair), in w's dtype."""
    _, g, _ = matrices(m)
    o, c = w.shape[:2]
    a = m + 2
    u = np.einsum("ri,ocij,sj->rsoc", g, w.astype(np.float64), g).reshape(a * a, o // v, v, c)
    return np.ascontiguousarray(u.transpose(0, 1, 3, 2)).astype(w.dtype)


def tile_grid(out_h: int, out_w: int, m: int) -> tuple[int, int]:
    """Tiles per column and per row: the grid covers the output, its last tiles cropped."""
    return math.ceil(out_h / m), math.ceil(out_w / m)


def _infer(types, attrs):
    x, u = types[0], types[1]
    need_float("conv2d_winograd", x)
    same_dtype("conv2d_winograd", types)
    m = attrs["tile"]
    a = matrices(m)[0].shape[0]
    if x.rank != 5:
        raise OpError(f"conv2d_winograd needs a blocked [N, C/b, H, W, b] input, got {list(x.shape)}")
    n, cb, h, w, b = x.shape
    if u.rank != 4 or u.shape[0] != a * a or u.shape[2] != cb * b:
        raise OpError(f"conv2d_winograd: tile {m} needs u = [{a * a}, O/v, {cb * b}, v], got {list(u.shape)}")
    o = u.shape[1] * u.shape[3]
    if len(types) == 3 and types[2].shape != (o,):
        raise OpError(f"conv2d_winograd: bias must be [{o}], got {list(types[2].shape)}")
    pads = attrs["padding"]
    if len(pads) != 4 or min(pads) < 0:
        raise OpError(f"conv2d_winograd: padding is [top, left, bottom, right] >= 0, got {pads}")
    oh, ow = h + pads[0] + pads[2] - 2, w + pads[1] + pads[3] - 2
    if oh < 1 or ow < 1:
        raise OpError(f"conv2d_winograd: a {h}x{w} input with padding {pads} has no 3x3 output")
    return [TensorType((n, u.shape[1], oh, ow, u.shape[3]), x.dtype)]


def _reference(xs, attrs):
    m = attrs["tile"]
    bt, _, at = matrices(m)
    a = m + 2
    x = unblock_nchw(xs[0]).astype(np.float64)
    u = xs[1].astype(np.float64)
    (n, c, h, w), v = x.shape, u.shape[3]
    o = u.shape[1] * v
    t, l, b, r = attrs["padding"]
    oh, ow = h + t + b - 2, w + l + r - 2
    th, tw = tile_grid(oh, ow, m)
    xp = np.pad(x, ((0, 0), (0, 0), (t, th * m + 2 - h - t), (l, tw * m + 2 - w - l)))
    d = sliding_window_view(xp, (a, a), axis=(2, 3))[:, :, ::m, ::m]  # [N, C, tH, tW, a, a]
    vt = np.einsum("ri,ncyxij,sj->ncyxrs", bt, d, bt, optimize=True)
    uu = u.reshape(a, a, o // v, c, v).transpose(0, 1, 2, 4, 3).reshape(a, a, o, c)
    mt = np.einsum("rsoc,ncyxrs->noyxrs", uu, vt, optimize=True)
    y = np.einsum("ir,noyxrs,js->noyixj", at, mt, at, optimize=True).reshape(n, o, th * m, tw * m)[:, :, :oh, :ow]
    if len(xs) == 3:
        y = y + xs[2].astype(np.float64).reshape(1, -1, 1, 1)
    return [block_nchw(y, v).astype(xs[0].dtype)]


register(OpDef("conv2d_winograd", "contraction", _infer, _reference, {"tile": REQUIRED, "padding": [1, 1, 1, 1]},
               (2, 3), doc="conv2d_winograd(x[N,C/b,H,W,b], u[(m+2)^2,O/v,C,v], [bias[O]]): a 3x3 stride-1 "
                           "conv by Winograd F(m x m, 3 x 3), tile m in {2, 4}; the result is [N,O/v,OH,OW,v]"))
