"""CPU schedules for integer kernels on int8 dot-product instructions (``edgeopt.lower.int8_dot``'s intrinsics).

A linear layer with weights in "oi<v>o<g>i" tiles, or a conv on blocked (NCHWc) u8 activations with "OIHW<v>o<g>i"
weights, sums ``g`` u8 x i8 products into each of ``v`` int32 lanes per instruction: VNNI's ``vpdpbusd`` (v=16 on
AVX-512, 8 on AVX-VNNI; g=4), ``vpmaddubsw`` + ``vpmaddwd`` on 7-bit weights (v=8, g=4 with AVX2; v=16 with AVX-512
BW, no VNNI) or AVX2's ``vpmaddwd`` on widened pairs (v=8, g=2). ``int8_weight_layout`` chooses the instruction per
layer (one the target's CPU has, exact for the layer's weights: the verifier checks them) and names it in the
layer's ``int8_dot`` attribute; a kernel whose instruction the target lacks runs as plain vector code.

    linear: rows x vectors register tile (accumulators), the reduction in groups of g outside it, one intrinsic
            call per (row, vector, group); column panels x row blocks in parallel
    conv:   a run of output pixels x one or two v-wide blocks of output channels; per (input block, group of g
            input channels, window tap) each block's weight tile is loaded once and meets each pixel's g input bytes
            (one broadcast each, shared by the blocks). That order reads the packed weight front to back, one
            sequential stream the hardware prefetcher follows: when other work has pushed the weights out of the
            caches (a model's 11 MB of them, a busy machine), ResNet-18's 512-channel convs run 1.5x their
            warm-cache time with the taps outside the groups, 1.1x with them inside.
    depthwise: (``depthwise_int8_taps``' "vnni512-dw", "sdot-dw") a run of output pixels x one block of v channels;
            per window row and group of 4 taps, the weight tile is transposed once and meets each pixel's 4
            neighbouring input pixels (one load and one ``vpermb`` / ``tbl`` each); a task per channel block pads its
            input itself
    amx:    (a "vnni512" layer on a target with AMX tiles: ``edgeopt.lower.amx``) a conv's run of up to 16 output
            pixels x two output-channel blocks, or a linear layer's 32 rows x 32 columns, its whole reduction in one
            intrinsic call on tile registers

The epilogue (requantize, bias, activation, the next layer's quantize) is folded into the store of the int32
accumulators, as for float kernels.
"""

from __future__ import annotations

import math

from tvm.s_tir import Schedule

from ..ir.ops._common import DEPTHWISE_INT8_DOTS, INT8_DOTS
from ..ir.ops.linalg import linear_weight_block, linear_weight_group
from ..ir.ops.nn import conv_weight_block, conv_weight_group
from .amx import amx_conv_intrinsic, amx_linear_intrinsic, amx_linear_tile, amx_tile
from .int8_dot import intrinsic_named, path_name, register_int8_intrinsics

_MIN_PARALLEL = 4096
#: output rows wider than WIDE_ROW keep a conv's tile at WIDE_ROW_ACCUMULATORS (the float tiles' cap): MobileNetV2's
#: two 1x1 convs on 112-wide rows (16 and 32 input channels) ran 1.3x slower with 16 (2 x 8 or 4 x 4 pixels, no
#: register spills: not explained), where its 56-wide and narrower ones ran 0.7-0.85x (Emerald Rapids)
WIDE_ROW, WIDE_ROW_ACCUMULATORS = 64, 8
#: a depthwise conv or pool on blocked tensors runs one parallel task per channel block where it has this many blocks
#: (each task pads its block's input once), else one per output row
CHANNEL_BLOCK_TASKS = 8


def int8_tile(op: str, attrs: dict, dots=()) -> tuple[int, int] | None:
    """(lanes, group) of a kernel whose anchor reads int8 weight tiles with the instruction its ``int8_dot``
    attribute names, if the target (``dots``: its ``int8_dots()``) has it; else None."""
    if op == "linear":
        v, g = linear_weight_block(attrs), linear_weight_group(attrs)
    elif op == "conv2d" and attrs.get("layout") == "NCHWc" and attrs.get("int8_dot") in DEPTHWISE_INT8_DOTS:
        v, g = INT8_DOTS[attrs["int8_dot"]][:2]  # channels x window taps
    elif op == "conv2d" and attrs.get("layout") == "NCHWc":
        v, g = conv_weight_block(attrs), conv_weight_group(attrs)
    else:
        return None
    return (v, g) if g and intrinsic_named(attrs.get("int8_dot", ""), dots) else None


def schedule_int8(sch: Schedule, op: str, attrs: dict, anchor: str, accumulators: int,
                  inline_epilogue, dots=(), pad_in_task=None, amx: bool = False) -> str:
    """Tile, tensorize and parallelize the integer anchor block ``anchor`` on the intrinsic its ``int8_dot``
    attribute names (``int8_tile`` says whether the target, with ``dots``, has it); returns the description.
    ``inline_epilogue(sch, store)`` and ``pad_in_task(block)`` are the generic CPU schedule's steps (``schedule_cpu``)
    that fold the epilogue into the store and compute a depthwise conv's padded input inside its parallel tasks.
    ``amx``: the target has AMX tiles, which a ``vnni512`` layer then runs on where its shape fits (``amx``)."""
    register_int8_intrinsics()
    v, g = int8_tile(op, attrs, dots)
    intrin = intrinsic_named(attrs["int8_dot"], dots)
    block = sch.get_sblock(anchor, func_name="main")
    if op == "linear":
        if amx and attrs["int8_dot"] == "vnni512":
            *lead, i, j, k = sch.get_loops(block)
            tile = amx_linear_tile(_extent(sch, i), _extent(sch, j) // v, _extent(sch, k))
            if tile is not None:
                return _linear_amx(sch, block, *tile, inline_epilogue)
        return _linear(sch, block, v, g, intrin, accumulators, inline_epilogue)
    if attrs["int8_dot"] in DEPTHWISE_INT8_DOTS:
        return _depthwise(sch, block, v, g, intrin, accumulators, inline_epilogue, pad_in_task)
    if amx and attrs["int8_dot"] == "vnni512":
        _, ko, _, w, _, rco, ry, rx, rcq, r4 = sch.get_loops(block)
        tile = amx_tile(_extent(sch, ko), _extent(sch, w), attrs["stride"][1], attrs["dilation"],
                        _extent(sch, rcq) * _extent(sch, r4), _extent(sch, rco) * _extent(sch, ry) * _extent(sch, rx))
        if tile is not None:
            return _conv_amx(sch, block, *tile, attrs["stride"][1], inline_epilogue)
    return _conv(sch, block, v, intrin, accumulators, inline_epilogue)


def _extent(sch, loop) -> int:
    return int(sch.get(loop).extent)


def _divisor(n: int, limit: int) -> int:
    return max(d for d in range(1, max(1, min(n, limit)) + 1) if n % d == 0)


def _linear(sch, block, v, g, intrin, accumulators, inline_epilogue) -> str:
    *lead, i, j, k = sch.get_loops(block)  # rows: the last leading axis (its split must stay affine for tensorize)
    m, n_vec = _extent(sch, i), _extent(sch, j) // v
    if m == 1:  # a matrix-vector product: independent accumulator chains come from several vectors
        rows, vectors = 1, _divisor(n_vec, accumulators)
    else:
        rows = _divisor(m, 4)
        vectors = _divisor(n_vec, max(1, accumulators // rows))
    jo, jv, ji = sch.split(j, [None, vectors, v])
    io, ii = sch.split(i, [None, rows])
    ko, ki = sch.split(k, [None, g])
    sch.reorder(*lead, jo, io, ko, ii, jv, ji, ki)
    write_back, fused = _store(sch, block, io, inline_epilogue)
    if math.prod(_extent(sch, lp) for lp in lead) * m * n_vec * v >= _MIN_PARALLEL:
        sch.parallel(sch.fuse(*lead, jo, io))
    sch.unroll(ii)
    sch.unroll(jv)
    _tensorize(sch, block, ko, ji, write_back, intrin, v)
    return f"int8-tile(r{rows},v{vectors}x{v},{path_name(intrin)}{',epilogue' if fused else ''})"


def _linear_amx(sch, block, groups, blocks, inline_epilogue) -> str:
    """A call of ``amx``'s linear intrinsic per (``groups`` x 16 rows, ``blocks`` x 16 columns): its whole reduction
    on tile registers; tasks over (leading axes, column panel, row block), panels outside as in ``_linear``."""
    *lead, i, j, k = sch.get_loops(block)
    intrin = amx_linear_intrinsic(len(lead) + 1, groups, blocks, _extent(sch, k))
    jo, ji = sch.split(j, [None, blocks * 16])
    io, ii = sch.split(i, [None, groups * 16])
    sch.reorder(*lead, jo, io, ii, ji, k)
    write_back, fused = _store(sch, block, io, inline_epilogue)
    sch.parallel(sch.fuse(*lead, jo, io))
    init = sch.decompose_reduction(block, ii)
    sch.tensorize(ii, intrin)
    _vectorize(sch, init, 16)
    _vectorize(sch, write_back, 16)
    return f"int8-tile(r{groups * 16},v{blocks}x16,amx{',epilogue' if fused else ''})"


def _conv(sch, block, v, intrin, accumulators, inline_epilogue) -> str:
    n, ko, h, w, lanes, rco, ry, rx, rcq, r4 = sch.get_loops(block)
    blocks, run = _conv_tile(_extent(sch, ko), _extent(sch, w), accumulators)
    koo, koi = sch.split(ko, [None, blocks])
    wo, wi = sch.split(w, [None, run])
    sch.reorder(n, koo, h, wo, rco, rcq, ry, rx, koi, wi, lanes, r4)
    write_back, fused = _store(sch, block, wo, inline_epilogue)
    outer = [n, koo, h]
    if math.prod(_extent(sch, lp) for lp in outer) * _extent(sch, wo) > 1:
        sch.parallel(sch.fuse(*outer, wo))
    sch.unroll(koi)
    sch.unroll(wi)
    if _extent(sch, rx) <= 3:
        sch.unroll(rx)
    _tensorize(sch, block, rco, lanes, write_back, intrin, v)
    return f"int8-tile(u{run},k{blocks},v{v},nchwc,{path_name(intrin)}{',epilogue' if fused else ''})"


def _conv_amx(sch, block, blocks, rows, stride, inline_epilogue) -> str:
    """A call of ``amx``'s conv intrinsic per (``blocks`` output-channel blocks, ``rows`` pixels of an output row):
    its whole reduction on tile registers; tasks over (image, block pair, row, run of pixels)."""
    n, ko, h, w, lanes, rco, ry, rx, rcq, r4 = sch.get_loops(block)
    intrin = amx_conv_intrinsic(blocks, rows, _extent(sch, rco), _extent(sch, ry), _extent(sch, rx), stride)
    koo, koi = sch.split(ko, [None, blocks])
    wo, wi = sch.split(w, [None, rows])
    sch.reorder(n, koo, h, wo, koi, wi, lanes, rco, ry, rx, rcq, r4)
    write_back, fused = _store(sch, block, wo, inline_epilogue)
    sch.parallel(sch.fuse(n, koo, h, wo))
    init = sch.decompose_reduction(block, koi)
    sch.tensorize(koi, intrin)
    _vectorize(sch, init, 16)
    _vectorize(sch, write_back, 16)
    return f"int8-tile(u{rows},k{blocks},v16,nchwc,amx{',epilogue' if fused else ''})"


def _depthwise(sch, block, v, taps, intrin, accumulators, inline_epilogue, pad_in_task) -> str:
    n, ko, h, w, lanes, ry, rx = sch.get_loops(block)
    run = _divisor(_extent(sch, w), accumulators)
    rxo, rxi = sch.split(rx, [None, taps])
    wo, wi = sch.split(w, [None, run])
    sch.reorder(n, ko, h, wo, ry, rxo, wi, lanes, rxi)
    write_back, fused = _store(sch, block, wo, inline_epilogue)
    # a task per channel block (its input padded once per task, ``schedule_cpu``), or per row where blocks are few
    outer = [n, ko] if _extent(sch, n) * _extent(sch, ko) >= CHANNEL_BLOCK_TASKS else [n, ko, h]
    sch.parallel(sch.fuse(*outer))
    if pad_in_task is not None:
        pad_in_task(block)
    sch.unroll(wi)
    _tensorize(sch, block, ry, lanes, write_back, intrin, v)
    return f"int8-tile(u{run},v{v}x{taps}taps,depthwise,{path_name(intrin)}{',epilogue' if fused else ''})"


def _conv_tile(out_blocks: int, width: int, accumulators: int) -> tuple[int, int]:
    """(output-channel blocks, output pixels) of a conv's register tile: 2 blocks x the longest run of at least 4
    pixels that divides the row, within ``accumulators`` (each input broadcast feeds 2 dot products, each weight tile
    the whole run: 6 loads per 8 dot products with 4 pixels, 10 per 16 with 8; int8 ResNet-18 0.975x, MobileNetV2
    0.967x against one block, Zen 4), else one block x the longest run that divides the row (rows of 7 or 14 with 8
    accumulators would leave 2 x 1 or 2 x 2 tiles). With AVX-512's 16 accumulators: 2 x 8 (a row of 56), 2 x 7
    (rows of 28, 14 and 7); rows wider than ``WIDE_ROW`` keep 8."""
    if width > WIDE_ROW:
        accumulators = min(accumulators, WIDE_ROW_ACCUMULATORS)
    run = _divisor(width, accumulators // 2)
    if out_blocks % 2 == 0 and run >= 4:
        return 2, run
    return 1, _divisor(width, accumulators)


def _store(sch, block, loop, inline_epilogue):
    """The accumulators in registers, stored (with the epilogue folded in) under ``loop``: (store block, fused?)."""
    write_back = sch.cache_write(block, 0, "global")
    fused = inline_epilogue(sch, write_back)
    sch.reverse_compute_at(write_back, loop)
    return write_back, fused


def _tensorize(sch, block, reduce_loop, tensor_loop, write_back, intrin: str, v: int) -> None:
    """Zero the accumulators above ``reduce_loop`` (after parallel/unroll: TVM 0.27's order), put the intrinsic on
    ``tensor_loop`` and vectorize the init and the store."""
    init = sch.decompose_reduction(block, reduce_loop)
    sch.tensorize(tensor_loop, intrin)
    _vectorize(sch, init, v)
    _vectorize(sch, write_back, v)


def _vectorize(sch, blk, v: int) -> None:
    loops = sch.get_loops(blk)
    inner = loops[-1]
    ext = _extent(sch, inner)
    if ext == v:
        sch.vectorize(inner)
    elif ext % v == 0:
        o, i = sch.split(inner, [None, v])
        sch.unroll(o)
        sch.vectorize(i)
    if len(loops) >= 2 and _extent(sch, loops[-2]) <= 8:
        sch.unroll(loops[-2])
