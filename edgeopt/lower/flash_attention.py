"""A tiled attention kernel with online softmax: the score matrix never exists in memory.

A first parallel loop transposes the keys once, tile by tile (``[batch, S/TILE, D, TILE]``: one copy of K, linear
in the sequence length; transposing per task instead cost half the kernel's time at seq 128). Then each parallel
task takes ``ROWS`` query rows of one (batch, head) and walks the key tiles: scores of the tile for its ``ROWS``
rows at once (a register tile: each row of transposed keys, and each row of values below, is loaded once for all of
them), the running row max ``m`` and sum ``l`` are updated and the accumulator is rescaled by
``exp(m_old - m_new)`` (flash attention's online softmax). Per task it keeps ``ROWS x TILE`` scores and a ``ROWS x Dv``
accumulator: the score matrix is never materialized.

NaN and infinities as in torch: a mask (bool or causal) adds -inf to a score, so a NaN score stays NaN even where
it is masked, and its exponential is NaN (``fast_exp`` keeps NaN), so the row's sum and accumulator go NaN: a NaN
score (a NaN in q, or in any key) makes its row NaN. The row max therefore needs no NaN test (a plain ``max``:
whichever operand it returns for a NaN, the row is NaN). While a row has seen only masked scores its max is -inf;
the exponentials then subtract 0 instead (-inf - -inf would be NaN), so a fully masked row sums to 0 and its
accumulator (0 x v) is not divided by that: the row comes out 0, as torch's ``scaled_dot_product_attention`` gives
(NaN where a value is NaN, as its math backend gives); with ``masked_rows="nan"`` (attention that was softmax
written out) it is 0 / 0.

Written directly in TIR (TVMScript): the loop-carried max/sum cannot be expressed in TE. Used for
fp32 attention whose q, k and v share their batch dims (the mask may broadcast); other cases fall
back to the TE rule in ``rules/attention.py``.
"""

from __future__ import annotations

import math

import tvm
from tvm.script import tirx as T

from ..ir.ops.attention import score_scale
from ..ir.types import TensorType
from .fast_math import exp as fast_exp

#: query rows per task. Its scores (ROWS x TILE f32) must stay under 1024 bytes: TVM 0.27 puts a buffer of a parallel
#: task on the stack only below that (``kMaxStackAlloca``) and allocates a bigger one from the workspace pool in every
#: task, where LLVM cannot tell it from the keys it reads and stores the score accumulators at every step. At 4 rows
#: (exactly 1024 bytes) the kernel took 1.48x its time at 3 rows (MiniLM, heads of 32), 2.2x (heads of 64)
ROWS = 3
TILE = 64
_NEG = -math.inf  # masked scores (and the key tile's padding)


def scratch_bytes(batch_heads: int, seq_k: int, d: int, dv: int, threads: int) -> int:
    """Bytes the kernel allocates besides its inputs and output: the transposed keys (once per call) and each
    thread's scores, running max/sum, accumulator and reduction scratch."""
    tt = min(TILE, -(-seq_k // 8) * 8)
    keys = batch_heads * -(-seq_k // tt) * tt * d
    return 4 * (keys + threads * (2 * ROWS + ROWS * tt + ROWS * dv + 10))


def flash_attention(in_types: list[TensorType], attrs: dict, out: TensorType):
    """The kernel as a PrimFunc ``(q, k, v, [mask], out)``, or None when this case is not covered."""
    q, k, v = in_types[:3]
    mask = in_types[3] if len(in_types) == 4 else None
    batch = out.shape[:-2]
    if q.dtype != "f32" or not (q.shape[:-2] == k.shape[:-2] == v.shape[:-2] == batch) or v.shape[-1] < 4:
        return None  # (vectors under 4 lanes trip an LLVM bug in TVM 0.27)
    if k.shape[-2] == 0 or q.shape[-1] == 0:
        return None  # no keys, or a head size of 0: the TE rule's zeros or zero scores
    L, D, S, Dv = q.shape[-2], q.shape[-1], k.shape[-2], v.shape[-1]
    NB = math.prod(batch)
    scale = score_scale(attrs, D)
    causal = bool(attrs["causal"])
    TT = min(TILE, -(-S // 8) * 8)
    R = ROWS
    NR = -(-L // R)
    NK = -(-S // TT)
    whole_tiles = S % TT == 0
    mshape = tuple(mask.shape) if mask is not None else (1, 1)
    mdt = {"bool": "bool", "f32": "float32"}.get(mask.dtype) if mask is not None else None

    def mask_at(mbuf, b, i, j):
        """mask[b..., i, j] under broadcasting (``b`` is the flattened batch index)."""
        coords, rem = [], b
        for dim in reversed(batch):
            coords.append(rem % dim)
            rem = rem // dim
        coords = coords[::-1] + [i, j]
        return mbuf[tuple(0 if dim == 1 else c for c, dim in zip(coords[len(coords) - len(mshape):], mshape))]

    def score(raw, b, i, j, mbuf):
        s = raw * T.float32(scale)
        if mask is not None:
            mv = mask_at(mbuf, b, i, j)
            s = s + (T.if_then_else(mv, T.float32(0), T.float32(_NEG)) if mdt == "bool" else mv)
        if causal:
            s = s + T.if_then_else(j <= i, T.float32(0), T.float32(_NEG))
        return s

    def total(lsum):
        """A row's divisor: a fully masked row sums to 0 and keeps its accumulator (masked_rows "zero"), or
        divides 0 by 0 (masked_rows "nan")."""
        if attrs["masked_rows"] == "nan":
            return lsum
        return T.if_then_else(lsum == T.float32(0), T.float32(1), lsum)

    @T.prim_func
    def kernel(q_: T.Buffer(q.shape, "float32"), k_: T.Buffer(k.shape, "float32"),
               v_: T.Buffer(v.shape, "float32"), m_: T.Buffer(mshape, mdt or "float32"),
               o_: T.Buffer(out.shape, "float32")):
        T.func_attr({"tir.noalias": True})
        qf = T.decl_buffer((NB * L * D,), "float32", data=q_.data)
        kf = T.decl_buffer((NB * S * D,), "float32", data=k_.data)
        vf = T.decl_buffer((NB * S * Dv,), "float32", data=v_.data)
        of = T.decl_buffer((NB * L * Dv,), "float32", data=o_.data)
        kt = T.alloc_buffer((NB, NK, D, TT), "float32")  # every key tile transposed once per call
        for bk in T.parallel(NB * NK):
            for t, d in T.grid(TT, D):
                kt[bk // NK, bk % NK, d, t] = kf[(bk // NK * S + T.min(bk % NK * TT + t, S - 1)) * D + d]
        for task in T.parallel(NB * NR):
            # "global" scope: TVM puts these small buffers on the stack ("local" ones cost a workspace
            # allocation per task)
            m = T.alloc_buffer((R,), "float32")
            lsum = T.alloc_buffer((R,), "float32")
            acc = T.alloc_buffer((R, Dv), "float32")
            s = T.alloc_buffer((R, TT), "float32")
            part = T.alloc_buffer((8,), "float32")
            red = T.alloc_buffer((3,), "float32")  # the row's new max, its tile sum, the max to subtract
            for r in range(R):
                m[r] = T.float32(_NEG)
                lsum[r] = T.float32(0)
                for d in T.vectorized(Dv):
                    acc[r, d] = T.float32(0)
            for kb in range(NK):
                # the tile's scores, all R rows at once: each row of transposed keys is loaded once for R rows
                for r in T.unroll(R):
                    for t in T.vectorized(TT):
                        s[r, t] = T.float32(0)
                for d in range(D):
                    for r in T.unroll(R):
                        for t in T.vectorized(TT):
                            s[r, t] = s[r, t] + qf[(task // NR * L + T.min(task % NR * R + r, L - 1)) * D + d] \
                                * kt[task // NR, kb, d, t]
                for r in range(R):
                    if whole_tiles:  # no key padding: the scale and the mask are vector code
                        for t in T.vectorized(TT):
                            s[r, t] = score(s[r, t], task // NR, T.min(task % NR * R + r, L - 1), kb * TT + t, m_)
                    else:
                        for t in range(TT):
                            s[r, t] = T.if_then_else(
                                kb * TT + t < S,
                                score(s[r, t], task // NR, T.min(task % NR * R + r, L - 1), T.min(kb * TT + t, S - 1),
                                      m_),
                                T.float32(_NEG))
                    for t in T.vectorized(8):
                        part[t] = m[r]
                    for t0 in range(TT // 8):
                        for t in T.vectorized(8):
                            part[t] = T.max(part[t], s[r, t0 * 8 + t])
                    red[0] = m[r]
                    for t in range(8):
                        red[0] = T.max(red[0], part[t])
                    red[2] = T.if_then_else(red[0] == T.float32(_NEG), T.float32(0), red[0])
                    for t in T.vectorized(TT):
                        s[r, t] = fast_exp(s[r, t] - red[2])
                    for t in T.vectorized(8):
                        part[t] = T.float32(0)
                    for t0 in range(TT // 8):
                        for t in T.vectorized(8):
                            part[t] = part[t] + s[r, t0 * 8 + t]
                    red[1] = T.float32(0)
                    for t in range(8):
                        red[1] = red[1] + part[t]
                    lsum[r] = lsum[r] * fast_exp(m[r] - red[2]) + red[1]
                    for d in T.vectorized(Dv):
                        acc[r, d] = acc[r, d] * fast_exp(m[r] - red[2])
                    m[r] = red[0]
                # the values, each row of v loaded once for R rows
                for t in range(T.min(TT, S - kb * TT)):
                    for r in T.unroll(R):
                        for d in T.vectorized(Dv):
                            acc[r, d] = acc[r, d] + s[r, t] * vf[(task // NR * S + kb * TT + t) * Dv + d]
            for r in range(R):
                if task % NR * R + r < L:
                    for d in T.vectorized(Dv):
                        of[(task // NR * L + task % NR * R + r) * Dv + d] = acc[r, d] / total(lsum[r])

    if mask is None:  # the kernel never reads the mask parameter: drop it, it is called (q, k, v, out)
        keep = [p for i, p in enumerate(kernel.params) if i != 3]
        kernel = tvm.tirx.PrimFunc(keep, kernel.body, kernel.ret_type, kernel.attrs)
    return kernel
