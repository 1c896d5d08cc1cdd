"""Int8 convs on AMX tiles (Intel Xeon Sapphire Rapids and later: AMX-TILE + AMX-INT8).

A dense int8 conv on NCHW16c u8 activations with "OIHW16o4i" weights (the layout ``vnni512`` reads) can run on
AMX's tile multiply instead of ``vpdpbusd``: ``tdpbusd`` adds A[M, 16] (u8: M output pixels' 16 input channels of
one block) x B[4, 16 x 4] (i8: those channels' weights for 16 output channels, groups of 4 as stored) into C[M, 16]
(i32), M * 256 products per instruction. NCHW16c holds an output row's input pixels 16 bytes apart (times the
stride), and the packed weight holds a block's 4 groups ``KH * KW * 64`` bytes apart, so both load as tiles with a
stride: the layout, the IR and the weights are the ``vnni512`` ones; only the kernel differs.

One intrinsic call is a whole register tile's reduction: it loads ``blocks`` accumulator tiles (C: M pixels x 16
output channels each), and for every (input block, window row, window column) loads one A tile and ``blocks`` B
tiles and issues ``blocks`` ``tdpbusd``; then stores C. The accumulators stay in tile registers across the whole
reduction (a call per step would load and store them every 256 products). Tile shapes are set per call by
``ldtilecfg`` (a thread's tile configuration is its own, and other kernels set theirs).

The process must ask Linux for the tile state before its first tile instruction (``arch_prctl``:
``edgeopt.runtime.amx``), which the runtimes do when they load an artifact built for a CPU with AMX.
"""

from __future__ import annotations

import tvm
from tvm.s_tir import TensorIntrin
from tvm.script import tirx as T

#: the LLVM features a target needs for these kernels
FEATURES = ("amx-tile", "amx-int8")
#: rows of a tile: at most 16 output pixels per A / C tile
MAX_ROWS = 16
#: fewer output pixels a call than this stay on VNNI: a tile of few rows wastes the unit (7: rows of 7x7 maps)
MIN_ROWS = 7
#: a reduction of fewer steps (input blocks x window taps) than this stays on VNNI: each call loads and stores its
#: accumulators and sets the tile shapes. Per kernel on a Xeon (Emerald Rapids; one-off profile of int8 MobileNetV2,
#: AMX / VNNI time): 1x1 convs of 1-2 input blocks 1.5-2.9x, 4-6 blocks 0.97-1.2x, 9-12 blocks 0.62-0.89x, 24-60
#: blocks 0.48-0.72x; 10 blocks at 7x7 1.2x, 20 at 7x7 0.93x; ResNet-18's 3x3 convs (36+ steps) about 0.6x
MIN_STEPS = 12
#: output-channel blocks of one call: ``blocks`` C tiles + one A tile + ``blocks`` B tiles of AMX's 8 registers
BLOCKS = 2


def has_amx(features) -> bool:
    """Whether a target with the LLVM features ``features`` runs AMX int8 tiles."""
    feats = {f.lstrip("+") for f in features}
    return all(f in feats for f in FEATURES)


def amx_tile(out_blocks: int, width: int, stride: int, dilation: tuple[int, int], in_block: int,
             steps: int) -> tuple[int, int] | None:
    """(output-channel blocks, output pixels) of one call for a conv with ``out_blocks`` 16-channel output blocks,
    output rows ``width`` pixels wide, input channels in blocks of ``in_block`` and ``steps`` (input blocks x window
    taps) in its reduction, or None where AMX does not pay or fit: fewer than ``MIN_STEPS`` steps, dilation, input
    blocks other than 16 (the image's 4-channel stage), rows whose longest divisor up to 16 is under ``MIN_ROWS``."""
    if tuple(dilation) != (1, 1) or in_block != 16 or steps < MIN_STEPS:
        return None
    rows = max(d for d in range(1, min(width, MAX_ROWS) + 1) if width % d == 0)
    if rows < MIN_ROWS:
        return None
    return (BLOCKS if out_blocks % BLOCKS == 0 else 1), rows


def _name(blocks, rows, cin_blocks, kh, kw, stride) -> str:
    return f"edgeopt_x86_amx_conv_u8i8i32_k{blocks}m{rows}c{cin_blocks}w{kh}x{kw}s{stride}"


def amx_intrinsic(blocks: int, rows: int, cin_blocks: int, kh: int, kw: int, stride: int) -> str:
    """The name of the tensor intrinsic for one register tile of such a conv (registered on first use)."""
    name = _name(blocks, rows, cin_blocks, kh, kw, stride)
    if TensorIntrin.get(name, allow_missing=True) is None:
        TensorIntrin.register(name, *_desc_impl(blocks, rows, cin_blocks, kh, kw, stride))
    return name


def _desc_impl(blocks, rows, cb, kh, kw, s):
    span = (rows - 1) * s + kw
    a_shape, b_shape, c_shape = (1, cb, kh, span, 16), (blocks, cb * 4, kh, kw, 16, 4), (1, blocks, 1, rows, 16)
    return _desc(a_shape, b_shape, c_shape, blocks, rows, cb, kh, kw, s), _impl(a_shape, b_shape, c_shape, blocks,
                                                                               rows, cb, kh, kw, s)


def _desc(a_shape, b_shape, c_shape, blocks, rows, cb, kh, kw, s):
    """The conv's reduction for one register tile, as TVMScript source: the kernel keeps a loop of extent 1 (one
    block, a 1x1 window, one input block) but its block has no iterator for it, so neither has the description."""
    axes = [("kb", blocks, "S"), ("m", rows, "S"), ("n", 16, "S"), ("rco", cb, "R"), ("ry", kh, "R"),
            ("rx", kw, "R"), ("k4", 4, "R"), ("i", 4, "R")]
    live = [(a, e, k) for a, e, k in axes if e > 1]
    v = {a: (f"v{a}" if e > 1 else "0") for a, e, _ in axes}
    c = f"C[0, {v['kb']}, 0, {v['m']}, {v['n']}]"
    a = f"A[0, {v['rco']}, {v['ry']}, {v['m']} * {s} + {v['rx']}, {v['k4']} * 4 + {v['i']}]"
    b = f"B[{v['kb']}, {v['rco']} * 4 + {v['k4']}, {v['ry']}, {v['rx']}, {v['n']}, {v['i']}]"
    kinds = "".join(k for _, _, k in live)
    regions = (f"C[0, 0:{blocks}, 0, 0:{rows}, 0:16], A[0, 0:{cb}, 0:{kh}, 0:{a_shape[3]}, 0:16], "
               f"B[0:{blocks}, 0:{cb * 4}, 0:{kh}, 0:{kw}, 0:16, 0:4]")
    src = f"""
@T.prim_func(s_tir=True)
def desc(A: T.Buffer({a_shape}, "uint8", offset_factor=1), B: T.Buffer({b_shape}, "int8", offset_factor=1),
         C: T.Buffer({c_shape}, "int32", offset_factor=1)) -> None:
    with T.sblock("root"):
        T.reads({regions})
        T.writes(C[0, 0:{blocks}, 0, 0:{rows}, 0:16])
        for {", ".join(a for a, _, _ in axes)} in T.grid({", ".join(str(e) for _, e, _ in axes)}):
            with T.sblock("update"):
                {", ".join("v" + a for a, _, _ in live)} = T.axis.remap("{kinds}", [{", ".join(a for a, _, _ in live)}])
                {c} = {c} + T.Cast("int32", {a}) * T.Cast("int32", {b})
"""
    return tvm.script.from_source(src, extra_vars={"T": T})


def _impl(a_shape, b_shape, c_shape, blocks, rows, cb, kh, kw, s):
    span = a_shape[3]
    a_tile, b_tile = blocks, blocks + 1  # tile registers: C 0..blocks-1, then A, then the B tiles

    @T.prim_func(s_tir=True)
    def impl(A: T.Buffer(a_shape, "uint8", offset_factor=1, strides=[T.int32() for _ in a_shape]),
             B: T.Buffer(b_shape, "int8", offset_factor=1, strides=[T.int32() for _ in b_shape]),
             C: T.Buffer(c_shape, "int32", offset_factor=1, strides=[T.int32() for _ in c_shape])) -> None:
        with T.sblock("root"):
            T.reads(C[0, 0:blocks, 0, 0:rows, 0:16], A[0, 0:cb, 0:kh, 0:span, 0:16],
                    B[0:blocks, 0:cb * 4, 0:kh, 0:kw, 0:16, 0:4])
            T.writes(C[0, 0:blocks, 0, 0:rows, 0:16])
            cfg = T.decl_buffer((64,), "uint8", scope="local")
            for i in T.vectorized(64):
                cfg[i] = T.uint8(0)
            cfg[0] = T.uint8(1)  # palette 1
            for t in T.unroll(blocks):  # C tiles: rows x 64 bytes (16 int32)
                cfg[16 + 2 * t] = T.uint8(64)
                cfg[48 + t] = T.uint8(rows)
            cfg[16 + 2 * a_tile] = T.uint8(16)  # A: rows x 16 bytes
            cfg[48 + a_tile] = T.uint8(rows)
            for t in T.unroll(blocks):  # B: 4 rows (groups of 4 channels) x 64 bytes
                cfg[16 + 2 * (b_tile + t)] = T.uint8(64)
                cfg[48 + b_tile + t] = T.uint8(4)
            T.evaluate(T.call_llvm_intrin("void", "llvm.x86.ldtilecfg", T.address_of(cfg[0])))
            for t in T.unroll(blocks):
                T.evaluate(T.call_llvm_intrin("void", "llvm.x86.tileloadd64", T.Cast("int8", t),
                                              T.address_of(C[0, t, 0, 0, 0]), T.Cast("int64", C.strides[3] * 4)))
            for rco, ry, rx in T.grid(cb, kh, kw):
                T.evaluate(T.call_llvm_intrin("void", "llvm.x86.tileloadd64", T.int8(a_tile),
                                              T.address_of(A[0, rco, ry, rx, 0]), T.Cast("int64", A.strides[3] * s)))
                for t in T.unroll(blocks):
                    T.evaluate(T.call_llvm_intrin("void", "llvm.x86.tileloadd64", T.Cast("int8", b_tile + t),
                                                  T.address_of(B[t, rco * 4, ry, rx, 0, 0]),
                                                  T.Cast("int64", B.strides[1])))
                for t in T.unroll(blocks):
                    T.evaluate(T.call_llvm_intrin("void", "llvm.x86.tdpbusd", T.Cast("int8", t), T.int8(a_tile),
                                                  T.Cast("int8", b_tile + t)))
            for t in T.unroll(blocks):
                T.evaluate(T.call_llvm_intrin("void", "llvm.x86.tilestored64", T.Cast("int8", t),
                                              T.address_of(C[0, t, 0, 0, 0]), T.Cast("int64", C.strides[3] * 4)))

    return impl
