"""TE rule for conv2d_winograd (see ``edgeopt/ir/ops/winograd.py``): five stages, named for the schedule.

    pad            the input, zero-padded so the tile grid covers it (an injective stage, inlined)
    wino_rows      T[p, r, j, c]  = sum_i BT[r, i] d_p[i, j, c]       the input transform's row pass
    wino_in        V[rs, p, c]    = sum_j BT[s, j] T[p, r, j, c]      ... and its column pass
    wino_gemm      M[rs, p, k]    = sum_c V[rs, p, c] U[rs, k/v, c, k%v]   (m+2)^2 matrix products
    wino_cols      O[p, i, s, k]  = sum_j AT[s, j] M[i*(m+2)+j, p, k]  the output transform's column pass
    conv2d_winograd Y[n, kb, h, w, kv] = sum_i AT[h%m, i] O[p(h, w), i, w%m, kb*v+kv] (+ bias)

``p`` numbers the tiles (image, tile row, tile column) and ``c``/``k`` the input/output channels. The
transforms are written as sums of their nonzero terms only (no multiply by 0, none by +-1), one ``Select``
case per transform row: the schedule unrolls every row loop, so each copy's case is a constant and the
others fold away, and a pass costs its row's nonzeros in adds per element, not a dense (m+2)-term product.
"""

from __future__ import annotations

import tvm
from tvm import te

from ...ir.ops.winograd import matrices, tile_grid
from . import rule
from ._te import const
from .nn import pad_nchw


def _row_sum(coefs, term, dtype):
    """sum_i coefs[i] * term(i) over the nonzero coefficients (1 and -1 without a multiply)."""
    acc = None
    for i, c in enumerate(coefs):
        if c == 0:
            continue
        t = term(i)
        t = t if c == 1 else -t if c == -1 else t * const(float(c), dtype)
        acc = t if acc is None else acc + t
    return acc


def _by_row(index, matrix, term, dtype):
    """``_row_sum`` of row ``index`` of ``matrix`` (a symbolic index): a Select over the rows."""
    rows = [r.tolist() for r in matrix]
    expr = _row_sum(rows[-1], term, dtype)
    for r in range(len(rows) - 2, -1, -1):
        expr = tvm.tirx.Select(index == r, _row_sum(rows[r], term, dtype), expr)
    return expr


@rule("conv2d_winograd")
def conv2d_winograd(ins, attrs, out, op):
    x, u = ins[0], ins[1]
    m = attrs["tile"]
    bt, _, at = matrices(m)
    a = m + 2
    dt = x.dtype
    N, _, H, W, b = (int(d) for d in x.shape)
    _, KB, C, v = (int(d) for d in u.shape)
    OH, OW = int(out.shape[2]), int(out.shape[3])
    tH, tW = tile_grid(OH, OW, m)
    P = N * tH * tW
    t, l, bo, r = attrs["padding"]
    xp = pad_nchw(x, attrs["padding"], (tH * m + 2 - (H + t + bo), tW * m + 2 - (W + l + r)), const(0, dt))

    def rows(p, r_, j, c):
        n, th, tw = p // (tH * tW), p // tW % tH, p % tW
        return _by_row(r_, bt, lambda i: xp[n, c // b, th * m + i, tw * m + j, c % b], dt)

    T = te.compute((P, a, a, C), rows, name="wino_rows")
    V = te.compute((a * a, P, C), lambda e, p, c: _by_row(e % a, bt, lambda j: T[p, e // a, j, c], dt),
                   name="wino_in")
    rc = te.reduce_axis((0, C), "rc")
    M = te.compute((a * a, P, KB * v), lambda e, p, k: te.sum(V[e, p, rc] * u[e, k // v, rc, k % v], axis=rc),
                   name="wino_gemm")
    O = te.compute((P, a, m, KB * v), lambda p, i, s, k: _by_row(s, at, lambda j: M[i * a + j, p, k], dt),
                   name="wino_cols")
    bias = ins[2] if len(ins) == 3 else None

    def body(n, kb, h, w, kv):
        p = (n * tH + h // m) * tW + w // m
        y = _by_row(h % m, at, lambda i: O[p, i, w % m, kb * v + kv], dt)
        return y + bias[kb * v + kv] if bias is not None else y

    return te.compute(tuple(out.shape), body, name="conv2d_winograd")
