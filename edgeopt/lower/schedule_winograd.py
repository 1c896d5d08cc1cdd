"""CPU schedule of a conv2d_winograd kernel (the stages of ``rules/winograd.py``), one row of tiles per task.

The tiles' transformed inputs and products are never stored whole: each parallel task takes one row of
output tiles and, for it alone, runs the input transform (``wino_rows`` and ``wino_in``: the channel block
is the vector, the transform's rows unrolled so every coefficient is a constant), the (m+2)^2 small matrix
products (``wino_gemm``, register-tiled like a linear: a run of tiles x 1-2 vectors of output channels,
the accumulators in registers) and then the output transform and the fused epilogue (``wino_cols`` and
the output block, per tile and output-channel vector). A task's intermediates (for a 56-wide row of 64
channels, 14 tiles: 130 KB each) stay in the L2 cache between the stages.
"""

from __future__ import annotations

from tvm.s_tir import Schedule

from .schedule_cpu import DEFAULT_REGISTERS, _divisor_at_most

#: the rule's stages (``rules/winograd.py``)
STAGES = ("wino_rows", "wino_in", "wino_gemm", "wino_cols", "conv2d_winograd")
def schedule_winograd(sch: Schedule, attrs: dict, accumulators: int = DEFAULT_REGISTERS // 2) -> str:
    """Schedule the conv2d_winograd kernel in ``sch`` (tile ``attrs["tile"]``), with at most ``accumulators``
    accumulator vectors in the products' register tile (half the target's vector registers; the rest feed the
    FMAs); returns its description."""
    m = attrs["tile"]
    a = m + 2
    block = _input_block(sch)
    # a scalar constant of the epilogue (a block with no producers: "x * 0.5") is folded into its reader
    for name in _block_names(sch):
        b = sch.get_sblock(name, func_name="main")
        if name not in STAGES and not sch.get_producers(b) and sch.get_consumers(b):
            sch.compute_inline(b)
    names = _block_names(sch)
    # producers before the transform (the pad, a layout transform prologue) are read in place
    for name in names[: names.index("wino_rows")]:
        sch.compute_inline(sch.get_sblock(name, func_name="main"))
    # the epilogue (bias, activation, residual add) is computed in the output block's store
    for name in names[names.index("conv2d_winograd") + 1:]:
        sch.reverse_compute_inline(sch.get_sblock(name, func_name="main"))
    out = sch.get_sblock("conv2d_winograd", func_name="main")
    n, kb, h, w, kv = sch.get_loops(out)
    th, i = sch.split(h, [None, m])
    tw, j = sch.split(w, [None, m])
    sch.reorder(n, th, kb, tw, i, j, kv)
    row = sch.fuse(n, th)  # one task: one row of tiles (of one image)
    sch.unroll(i)
    sch.unroll(j)
    sch.vectorize(kv)

    _transform_at(sch, "wino_cols", tw)  # one tile's output transform, per vector of output channels

    gemm = sch.get_sblock("wino_gemm", func_name="main")
    sch.compute_at(gemm, row, preserve_unit_loops=True)
    vin = sch.get_sblock("wino_in", func_name="main")
    sch.compute_at(vin, row, preserve_unit_loops=True)
    e, p, c = sch.get_loops(vin)[-3:]
    co, cb = sch.split(c, [None, block])
    r, s = sch.split(e, [a, a])
    sch.reorder(p, co, r, s, cb)
    sch.unroll(r)  # the transform's rows: each row's coefficients become constants (the Select folds)
    _transform_at(sch, "wino_rows", r)  # one row of the input transform, per channel block
    sch.unroll(s)
    sch.vectorize(cb)
    sch.parallel(row)
    return f"winograd(F{m}x{m},{_tile_products(sch, gemm, _last_dim(sch, 1), accumulators)})"


def _transform_at(sch: Schedule, name: str, loop) -> None:
    """Compute a transform pass (4 loops: tile, row, column, channel) under ``loop``: its row and column loops
    unrolled (their coefficients become constants), the channel loop vectorized."""
    block = sch.get_sblock(name, func_name="main")
    sch.compute_at(block, loop, preserve_unit_loops=True)
    _, rows, cols, channels = sch.get_loops(block)[-4:]
    sch.unroll(rows)
    sch.unroll(cols)
    sch.vectorize(channels)


def _block_names(sch: Schedule) -> list[str]:
    root = sch.get_sblock("root", func_name="main")
    return [sch.get(b).name_hint for b in sch.get_child_blocks(root)]


def _input_block(sch: Schedule) -> int:
    """The channel block of the transform's input (the blocked, padded tensor ``wino_rows`` reads)."""
    return int(sch.get(sch.get_sblock("wino_rows", func_name="main")).reads[0].source.shape[-1])


def _last_dim(sch: Schedule, arg: int) -> int:
    """The last dim of the kernel's argument ``arg`` (1: the weight, whose last dim is its panel width)."""
    return int(sch.mod["main"].params[arg].shape[-1])


def _tile_products(sch: Schedule, gemm, v: int, accumulators: int) -> str:
    """Register-tile the products M[e, p, k] of one task: ``rows`` tiles x ``vecs`` vectors of ``v`` channels
    (``v``: the weight's panel width, the output's channel block)."""
    e, p, k, c = sch.get_loops(gemm)[-4:]
    tiles, channels = (int(sch.get(lp).extent) for lp in (p, k))
    rows = _divisor_at_most(tiles, accumulators - 1)
    if rows < 4 < tiles:  # a prime-ish count (13 tiles): 4 rows with a predicated tail beat 1-row tiles
        rows = 4
    vecs = 2 if rows <= accumulators // 2 and channels % (2 * v) == 0 else 1
    ko, ki = sch.split(k, [None, vecs * v])
    po, pi = sch.split(p, [None, rows])
    kj, kl = sch.split(ki, [None, v])
    sch.reorder(e, ko, po, c, pi, kj, kl)
    acc = sch.cache_write(gemm, 0, "global")  # on the stack: TVM keeps it in registers
    sch.reverse_compute_at(acc, po)
    sch.unroll(pi)
    sch.unroll(kj)
    sch.vectorize(kl)
    init = sch.decompose_reduction(gemm, c)
    sch.vectorize(sch.get_loops(init)[-1])
    sch.vectorize(sch.get_loops(acc)[-1])
    return f"rows{rows}xv{vecs}"
