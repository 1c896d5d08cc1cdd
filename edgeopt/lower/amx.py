"""Int8 kernels on AMX tiles (Intel Xeon Sapphire Rapids and later: AMX-TILE + AMX-INT8).

AMX has eight tile registers of up to 16 rows x 64 bytes and ``tdpbusd``, which adds A[M, K] (u8) x B[K/4, 16 x 4]
(i8, groups of 4 along K) into C[M, 16] (i32): M * K * 16 products per instruction. The layers that name
``vnni512`` already hold their weights in the tiles it reads, so only the kernel changes: the layout, the IR and the
weights are the ``vnni512`` ones.

* A conv on NCHW16c u8 activations with "OIHW16o4i" weights: an A tile is M output pixels' 16 input channels of one
  block (rows ``16 x stride`` bytes apart), a B tile the block's 4 groups of 4 channels for 16 output channels (4
  rows ``KH x KW x 64`` bytes apart in the packed weight), so K is 16 a step. A call runs one register tile's whole
  reduction: per (input block, window row, window column) one A tile, ``blocks`` B tiles, ``blocks`` ``tdpbusd``.
* A linear layer with "oi16o4i" weights ([out/16, in/4, 16, 4]): an A tile is 16 rows of 64 input bytes, a B tile
  16 groups of 4 inputs for 16 outputs (64 contiguous bytes each), so K is 64 a step; a call holds 2 row groups x 2
  column blocks of accumulators (4 C, 2 A, 2 B tiles) for its whole reduction.

The accumulators stay in tile registers across a call's reduction (loaded at its start from the zeroed store
buffer, stored at its end, where the epilogue reads them as on the VNNI path). Tile shapes are set per call by
``ldtilecfg``: a thread's tile configuration is its own, and other kernels set theirs.

The process must ask Linux for the tile state before its first tile instruction (``arch_prctl``):
``edgeopt.runtime.amx_permission``, which the runtimes use when an artifact says its kernels need it.
"""

from __future__ import annotations

import tvm
from tvm.s_tir import TensorIntrin
from tvm.script import tirx as T

#: the LLVM features a target needs for these kernels
FEATURES = ("amx-tile", "amx-int8")
#: rows of a tile: at most 16 output pixels (a conv) or rows (a linear layer) per A / C tile
MAX_ROWS = 16
#: a conv with fewer output pixels a call than this stays on VNNI: a tile of few rows wastes the unit. Rows of 7
#: (7x7 maps, half a tile): 402 against 668 GMAC/s a thread with 14 in a probe loop, and per 1x1 conv (one-off
#: profiles on a Xeon, AMX / VNNI time) 1.5-1.6x at 12-20 input blocks, 0.94-1.09x at 42-72 in EfficientNet-Lite0
#: (0.72-0.93x at 20-60 in MobileNetV2)
MIN_ROWS = 8
#: a conv reduction of fewer steps (input blocks x window taps) than this stays on VNNI: each call loads and stores
#: its accumulators and sets the tile shapes. Per kernel on a Xeon (Emerald Rapids; one-off profile of int8
#: MobileNetV2, AMX / VNNI time): 1x1 convs of 1-2 input blocks 1.5-2.9x, 4-6 blocks 0.97-1.2x, 9-12 blocks
#: 0.62-0.89x, 24-60 blocks 0.48-0.72x; 10 blocks at 7x7 1.2x, 20 at 7x7 0.93x; ResNet-18's 3x3 convs (36+ steps)
#: about 0.6x
MIN_STEPS = 12
#: a linear layer's inputs: a multiple of 64 (one tile row), at least this many (4 steps a call)
MIN_LINEAR_K = 256
#: output blocks of 16 channels / columns a call: ``blocks`` B tiles, each meeting every A tile
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


def amx_linear_tile(rows: int, out_blocks: int, k: int) -> tuple[int, int] | None:
    """(row groups of 16, column blocks of 16) of one call for a linear layer of ``rows`` rows, ``out_blocks``
    16-column output blocks and ``k`` inputs, or None where AMX does not fit: rows not a multiple of 16, ``k`` not a
    multiple of 64 or under ``MIN_LINEAR_K``."""
    if rows % MAX_ROWS or k % 64 or k < MIN_LINEAR_K:
        return None
    return (2 if rows % (2 * MAX_ROWS) == 0 else 1), (BLOCKS if out_blocks % BLOCKS == 0 else 1)


def amx_conv_intrinsic(blocks: int, rows: int, cin_blocks: int, kh: int, kw: int, stride: int) -> str:
    """The name of the tensor intrinsic for one register tile of such a conv (registered on first use)."""
    name = f"edgeopt_x86_amx_conv_u8i8i32_k{blocks}m{rows}c{cin_blocks}w{kh}x{kw}s{stride}"
    return _register(name, lambda: _conv(blocks, rows, cin_blocks, kh, kw, stride))


def amx_linear_intrinsic(lead: int, groups: int, blocks: int, k: int) -> str:
    """The name of the tensor intrinsic for one register tile of a linear layer with ``lead`` leading axes (the
    rows' is the last) and ``k`` inputs (registered on first use)."""
    name = f"edgeopt_x86_amx_linear_u8i8i32_l{lead}g{groups}b{blocks}k{k}"
    return _register(name, lambda: _linear(lead, groups, blocks, k))


def _register(name: str, make) -> str:
    if TensorIntrin.get(name, allow_missing=True) is None:
        desc, impl = make()
        TensorIntrin.register(name, tvm.script.from_source(desc, extra_vars={"T": T}),
                              tvm.script.from_source(impl, extra_vars={"T": T}))
    return name


# ------------------------------------------------------------------------------------------------ source text
def _buffers(shapes: dict, strided: bool) -> str:
    """The parameters ``A, B, C`` (``shapes``: name -> (shape, dtype)); with symbolic strides for the impl."""
    def one(name, shape, dtype):
        strides = f", strides=[{', '.join('T.int32()' for _ in shape)}]" if strided else ""
        return f"{name}: T.Buffer({tuple(shape)}, \"{dtype}\", offset_factor=1{strides})"
    return ", ".join(one(n, s, d) for n, (s, d) in shapes.items())


def _header(shapes: dict, strided: bool, regions: str, written: str) -> str:
    return f"""@T.prim_func(s_tir=True)
def f({_buffers(shapes, strided)}) -> None:
    with T.sblock("root"):
        T.reads({regions})
        T.writes({written})
"""


def _desc(shapes, regions, written, axes, update) -> str:
    """The computation, TVMScript: ``axes`` (name, extent, "S" | "R") as loops, an iterator for each of extent > 1
    (the kernel keeps a loop of extent 1 but its block has no iterator for it); ``update`` reads ``v<name>``."""
    live = [(a, k) for a, e, k in axes if e > 1]
    loops, extents = ", ".join(a for a, _, _ in axes), ", ".join(str(e) for _, e, _ in axes)
    iters, bound = ", ".join("v" + a for a, _ in live), ", ".join(a for a, _ in live)
    kinds = "".join(k for _, k in live)
    return _header(shapes, False, regions, written) + f"""        for {loops} in T.grid({extents}):
            with T.sblock("update"):
                {iters} = T.axis.remap("{kinds}", [{bound}])
                {update}
"""


def _intrin(op: str, *args) -> str:
    return f'T.evaluate(T.call_llvm_intrin("void", "llvm.x86.{op}", {", ".join(str(a) for a in args)}))'


def _impl(shapes, regions, written, tiles: list[tuple[int, int]], loads_c: list[str], steps: str,
          body: list[str], stores_c: list[str]) -> str:
    """The kernel, TVMScript: set the tile shapes (``tiles``: (rows, bytes a row) of tile 0, 1, ...), load the
    accumulators, run ``body`` under the loops ``steps`` (a ``for`` header), store the accumulators."""
    cfg = ["cfg = T.decl_buffer((64,), \"uint8\", scope=\"local\")", "for i in T.vectorized(64):",
           "    cfg[i] = T.uint8(0)", "cfg[0] = T.uint8(1)"]  # palette 1; each tile: bytes a row (u16), rows (u8)
    for t, (rows, colsb) in enumerate(tiles):
        cfg += [f"cfg[{16 + 2 * t}] = T.uint8({colsb})", f"cfg[{48 + t}] = T.uint8({rows})"]
    lines = [*cfg, _intrin("ldtilecfg", "T.address_of(cfg[0])"), *loads_c, steps,
             *("    " + b for b in body), *stores_c]
    return _header(shapes, True, regions, written) + "".join(f"        {ln}\n" for ln in lines)


def _load(tile: int, at: str, stride: str) -> str:
    return _intrin("tileloadd64", f"T.int8({tile})", f"T.address_of({at})", f"T.Cast(\"int64\", {stride})")


def _store(tile: int, at: str, stride: str) -> str:
    return _intrin("tilestored64", f"T.int8({tile})", f"T.address_of({at})", f"T.Cast(\"int64\", {stride})")


def _dot(c: int, a: int, b: int) -> str:
    return _intrin("tdpbusd", f"T.int8({c})", f"T.int8({a})", f"T.int8({b})")


# ------------------------------------------------------------------------------------------------ the kernels
def _conv(blocks, rows, cb, kh, kw, s):
    """C[0, kb, 0, m, n] += A[0, rco, ry, m * s + rx, k] * B[kb, rco * 4 + k // 4, ry, rx, n, k % 4]."""
    span = (rows - 1) * s + kw
    shapes = {"A": ((1, cb, kh, span, 16), "uint8"), "B": ((blocks, cb * 4, kh, kw, 16, 4), "int8"),
              "C": ((1, blocks, 1, rows, 16), "int32")}
    written = f"C[0, 0:{blocks}, 0, 0:{rows}, 0:16]"
    regions = f"{written}, A[0, 0:{cb}, 0:{kh}, 0:{span}, 0:16], B[0:{blocks}, 0:{cb * 4}, 0:{kh}, 0:{kw}, 0:16, 0:4]"
    axes = [("kb", blocks, "S"), ("m", rows, "S"), ("n", 16, "S"), ("rco", cb, "R"), ("ry", kh, "R"),
            ("rx", kw, "R"), ("k4", 4, "R"), ("i", 4, "R")]
    v = {a: (f"v{a}" if e > 1 else "0") for a, e, _ in axes}
    c = f"C[0, {v['kb']}, 0, {v['m']}, {v['n']}]"
    update = (f"{c} = {c} + T.Cast(\"int32\", A[0, {v['rco']}, {v['ry']}, {v['m']} * {s} + {v['rx']}, "
              f"{v['k4']} * 4 + {v['i']}]) * T.Cast(\"int32\", B[{v['kb']}, {v['rco']} * 4 + {v['k4']}, {v['ry']}, "
              f"{v['rx']}, {v['n']}, {v['i']}])")
    a_tile, b_tile = blocks, blocks + 1  # tiles: C 0..blocks-1, A, then B
    tiles = [(rows, 64)] * blocks + [(rows, 16)] + [(4, 64)] * blocks
    c_stride = "C.strides[3] * 4"
    body = [_load(a_tile, "A[0, rco, ry, rx, 0]", f"A.strides[3] * {s}"),
            *(_load(b_tile + t, f"B[{t}, rco * 4, ry, rx, 0, 0]", "B.strides[1]") for t in range(blocks)),
            *(_dot(t, a_tile, b_tile + t) for t in range(blocks))]
    impl = _impl(shapes, regions, written, tiles, [_load(t, f"C[0, {t}, 0, 0, 0]", c_stride) for t in range(blocks)],
                 f"for rco, ry, rx in T.grid({cb}, {kh}, {kw}):", body,
                 [_store(t, f"C[0, {t}, 0, 0, 0]", c_stride) for t in range(blocks)])
    return _desc(shapes, regions, written, axes, update), impl


def _linear(lead, groups, blocks, k):
    """C[..., m, n] += A[..., m, k] * B[n // 16, k // 4, n % 16, k % 4] over ``groups`` x 16 rows, ``blocks`` x 16
    columns and all ``k`` inputs."""
    rows, cols = groups * MAX_ROWS, blocks * 16
    one = "0, " * (lead - 1)
    shapes = {"A": ((1,) * (lead - 1) + (rows, k), "uint8"), "B": ((blocks, k // 4, 16, 4), "int8"),
              "C": ((1,) * (lead - 1) + (rows, cols), "int32")}
    written = f"C[{one}0:{rows}, 0:{cols}]"
    regions = f"{written}, A[{one}0:{rows}, 0:{k}], B[0:{blocks}, 0:{k // 4}, 0:16, 0:4]"
    axes = [("m", rows, "S"), ("n", cols, "S"), ("k", k, "R")]
    c = f"C[{one}vm, vn]"
    update = (f"{c} = {c} + T.Cast(\"int32\", A[{one}vm, vk]) * T.Cast(\"int32\", B[vn // 16, vk // 4, vn % 16, "
              f"vk % 4])")
    n_c = groups * blocks  # tiles: C (group-major), then A per group, then B per block
    tiles = [(16, 64)] * (n_c + groups + blocks)
    c_at = [(f"C[{one}{g * 16}, {b * 16}]", g * blocks + b) for g in range(groups) for b in range(blocks)]
    c_stride = f"C.strides[{lead - 1}] * 4"
    body = [*(_load(n_c + g, f"A[{one}{g * 16}, ks * 64]", f"A.strides[{lead - 1}]") for g in range(groups)),
            *(_load(n_c + groups + b, f"B[{b}, ks * 16, 0, 0]", "B.strides[1]") for b in range(blocks)),
            *(_dot(g * blocks + b, n_c + g, n_c + groups + b) for g in range(groups) for b in range(blocks))]
    impl = _impl(shapes, regions, written, tiles, [_load(t, at, c_stride) for at, t in c_at],
                 f"for ks in range({k // 64}):", body, [_store(t, at, c_stride) for at, t in c_at])
    return _desc(shapes, regions, written, axes, update), impl
