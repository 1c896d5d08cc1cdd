"""Generic CPU schedules for one kernel (a PrimFunc made from TE), chosen by the kernel's anchor op.

Every kernel gets at least a parallel + vectorized schedule; no tuning run is needed:

* injective producers are inlined into their consumers (a pad feeding a contraction stays separate; the
  dequantize of an int8/int4 operand is inlined into the contraction that reads it);
* the elementwise epilogue of a fused kernel is folded into the anchor's store from registers;
* the anchor of a contraction (conv / matmul / linear) or window pool is register-tiled: the last
  output axis is vectorized (``lanes`` wide), one more output axis (channels / rows) is unrolled, the
  reduction loops sit between the two, the accumulator lives in registers (a ``cache_write`` buffer in
  "global" scope, which TVM puts on the stack; "local" ones cost a workspace allocation per parallel task)
  and the outer output loops run in parallel; a conv with packed ``OIHW<v>o`` weights vectorizes a block
  of ``v`` output channels instead and unrolls a run of output pixels (at most 8 accumulator vectors), and
  so does a conv or pool on blocked ``NCHW<v>c`` tensors (the block is the vector; a dense blocked conv
  whose width allows holds 2 output-channel blocks x 4 pixels, reusing each loaded input value twice and
  each weight vector 4 times; its reduction runs input channel, then window, in the packed weight's order,
  with the window's last axis unrolled); a blocked depthwise conv or pool pads its input inside each
  parallel task (one channel block), not as a copy of the whole input; matmul and linear hold
  4 rows x 3 vectors when the columns allow and walk the right operand's column panels outside the rows;
* row reductions (softmax, layer_norm, sum) run in parallel over their output rows, a row's statistics computed
  in the same loop iteration that writes the row;
* injective and elementwise stages are vectorized on the innermost axis and parallel outside it.

If a step does not apply to some odd kernel the scheduler falls back to "parallel outer loops only",
and says so in the returned description (which goes to the compile report).
"""

from __future__ import annotations

import math

import tvm
from tvm.s_tir import Schedule

from ..ir.ops.linalg import linear_weight_block
from ..ir.ops.nn import conv_weight_block
from .schedule_int8 import CHANNEL_BLOCK_TASKS, int8_tile, schedule_int8

TILED_OPS = {"conv2d", "conv_transpose2d", "matmul", "linear", "max_pool2d", "avg_pool2d"}
#: which output axis to unroll (register-block) for each tiled op, counted from the front (None: none)
_UNROLL_AXIS = {"conv2d": 1, "conv_transpose2d": 1, "matmul": -2, "linear": -2}
#: vector registers when the target names none (AVX2 and SSE have 16). A register tile holds at most half of the
#: target's registers as accumulators (the rest hold weights and inputs), and at most MAX_ACCUMULATORS: with
#: AVX-512's 32 registers, 16 accumulators measured 1% slower than 8 on ResNet-18, MobileNetV2 and
#: EfficientNet-Lite0 (Zen 4, 2 threads, paired blocks), so wider tiles are not used there
#: Integer kernels on dot-product instructions (``schedule_int8``) take half the registers, uncapped: AVX-512 VNNI
#: issues two ``vpdpbusd`` a cycle, each 5 cycles long, which 8 accumulator chains cannot keep busy; 16 took int8
#: ResNet-18 without AMX to 0.68-0.75x its time (Intel Emerald Rapids, 2 threads, paired rounds; not measured on
#: Zen 4 / Zen 5, which issue one 512-bit ``vpdpbusd`` a cycle: there the tile saves loads, 10 per 16 dot products
#: instead of 12).
DEFAULT_REGISTERS = 16
MAX_ACCUMULATORS = 8
#: contractions whose column loop runs outside the row loop: one K x v panel of the right operand (a weight)
#: stays in cache while every row block of the left one streams past it, instead of the whole right operand
#: being re-read from memory for every row block
_PANEL_OUTER = {"matmul", "linear"}
_MIN_PARALLEL_WORK = 4096  # elements; below this a thread-pool launch costs more than it saves


def schedule_kernel(func: tvm.tirx.PrimFunc, op: str, lanes: int, attrs: dict | None = None,
                    registers: int = DEFAULT_REGISTERS, int8_dots=(),
                    amx: bool = False) -> tuple[tvm.tirx.PrimFunc, str]:
    """Schedule ``func`` (one kernel whose anchor IR op is ``op`` with ``attrs``) for a CPU with ``lanes``-wide vectors,
    ``registers`` vector registers and the int8 dot products ``int8_dots`` (``Target.int8_dots()``: an integer
    layer's ``int8_dot`` instruction is used only if listed) and, with ``amx``, AMX tiles; returns (func,
    description)."""
    try:
        sch = Schedule(tvm.IRModule({"main": func}))
        desc = _schedule(sch, op, lanes, attrs or {}, max(1, min(registers // 2, MAX_ACCUMULATORS)), int8_dots,
                         amx, max(1, registers // 2))
        return sch.mod["main"], desc
    except Exception as e:  # a schedule primitive refused this kernel: without AMX tiles, else the safe fallback
        if amx:
            return schedule_kernel(func, op, lanes, attrs, registers, int8_dots, amx=False)
        sch = Schedule(tvm.IRModule({"main": func}))
        try:
            for b in _blocks(sch):
                _parallel_outer(sch, b)
            return sch.mod["main"], f"fallback-parallel ({type(e).__name__})"
        except Exception:
            return func, f"unscheduled ({type(e).__name__})"


def _blocks(sch: Schedule):
    return sch.get_child_blocks(sch.get_sblock("root", func_name="main"))


def _iter_types(sch: Schedule, block) -> list[int]:
    return [int(iv.iter_type) for iv in sch.get(block).iter_vars]


def _is_spatial(sch: Schedule, block) -> bool:
    return all(t == 0 for t in _iter_types(sch, block))


def _extents(sch: Schedule, loops) -> list[int]:
    return [int(sch.get(lp).extent) for lp in loops]


def _schedule(sch: Schedule, op: str, lanes: int, attrs: dict, accumulators: int, int8_dots=(), amx=False,
              int8_accumulators: int = DEFAULT_REGISTERS // 2) -> str:
    if op == "conv2d_winograd":
        from .schedule_winograd import schedule_winograd  # it imports this module's helpers

        return schedule_winograd(sch, attrs, accumulators)
    outputs = {sch.get(b).name_hint for b in sch.get_output_blocks(sch.get_sblock("root", func_name="main"))}
    anchor = None
    if op in TILED_OPS:
        reds = [b for b in _blocks(sch) if not _is_spatial(sch, b)]
        anchor = sch.get(reds[0]).name_hint if reds else None
    # 1. inline injective stages, except the ones that feed the tiled anchor (pads)
    for b in reversed(list(_blocks(sch))):
        name = sch.get(b).name_hint
        if name in outputs or not _is_spatial(sch, b):
            continue
        if anchor and name != "dequantize" and any(sch.get(c).name_hint == anchor for c in sch.get_consumers(b)):
            continue  # a pad stays a stage; a dequantized int8/int4 operand is widened where the anchor reads it
        try:
            sch.compute_inline(b)
        except Exception:  # noqa: BLE001 - TVM 0.27 raises tvm_ffi errors; any refusal means 'skip this step'
            pass
    desc = []
    if not anchor:
        rows = _rows_in_one_loop(sch, lanes)
        if rows:
            return rows
    others = [sch.get(b).name_hint for b in _blocks(sch) if sch.get(b).name_hint != anchor]
    moved = []  # pad stages computed inside the anchor's parallel tasks

    def pad_in_task(consumer) -> None:
        if _pad_in_task(op, attrs):
            moved.extend(_pad_under_parallel_loop(sch, consumer, lanes))

    if anchor and int8_tile(op, attrs, int8_dots):
        desc.append(schedule_int8(sch, op, attrs, anchor, int8_accumulators, _inline_epilogue, int8_dots,
                                   pad_in_task, amx))
    elif anchor:
        desc.append(_tile_anchor(sch, sch.get_sblock(anchor, func_name="main"), op, lanes, attrs, accumulators))
        pad_in_task(sch.get_sblock(anchor + "_update", func_name="main"))
    others = [n for n in others if n not in moved]
    desc += [f"pad@task({n})" for n in moved]
    for name in others:
        try:
            b = sch.get_sblock(name, func_name="main")
        except Exception:  # noqa: BLE001 - an epilogue block inlined into the anchor's store
            continue
        if _is_spatial(sch, b):
            desc.append(_vectorize_parallel(sch, b, lanes))
        else:
            desc.append(_parallel_outer(sch, b))
    return ";".join(d for d in desc if d)


def _rows_in_one_loop(sch: Schedule, lanes: int) -> str | None:
    """A row reduction and its consumers (softmax: max, sum of exp, divide; layer_norm: mean, variance,
    normalize) as one parallel loop over rows: each row's statistics are computed right before the row is
    written, while it is in cache, instead of each stage sweeping the whole tensor in a parallel loop of its
    own. None when the kernel is not that shape (one spatial output block last, reductions before it over
    the same leading axes)."""
    blocks = list(_blocks(sch))
    out = blocks[-1]
    if len(blocks) < 2 or not _is_spatial(sch, out) or all(_is_spatial(sch, b) for b in blocks[:-1]):
        return None
    loops = sch.get_loops(out)
    if len(loops) < 2:
        return None
    ext = _extents(sch, loops)
    partial = _vector_partial_sums(sch, lanes)
    blocks = list(_blocks(sch))
    root_outputs = {sch.get(b).name_hint for b in sch.get_output_blocks(sch.get_sblock("root", func_name="main"))}
    stats = [i for i, b in enumerate(blocks[:-1]) if _is_spatial(sch, b) and sch.get(b).name_hint in root_outputs]
    if stats:  # a row statistic that is an output too (a per-row quantization's scale) owns the row loop: TVM
        at = stats[-1]  # moves no output block under another's loop, so the blocks after it move under its
        stat_loops = sch.get_loops(blocks[at])
        rows = sch.fuse(*stat_loops[:-1]) if len(stat_loops) > 2 else stat_loops[0]
        for b in reversed(blocks[:at]):
            sch.compute_at(b, rows, preserve_unit_loops=True)
        for b in blocks[at + 1:]:
            sch.reverse_compute_at(b, rows, preserve_unit_loops=True)
    else:
        rows = sch.fuse(*loops[:-1]) if len(loops) > 2 else loops[0]
        for b in reversed(blocks[:-1]):
            sch.compute_at(b, rows, preserve_unit_loops=True)
    if math.prod(ext) >= _MIN_PARALLEL_WORK and math.prod(ext[:-1]) > 1:
        sch.parallel(rows)
    for b in [*blocks[:-1], out]:
        name = sch.get(b).name_hint
        b = sch.get_sblock(name, func_name="main")
        loops = sch.get_loops(b)
        n = int(sch.get(loops[-1]).extent)
        if name.endswith("_rf"):
            _vectorize_partials(sch, b, loops, lanes)
        elif _is_spatial(sch, b) and n % lanes == 0 and n >= lanes:
            sch.vectorize(sch.split(loops[-1], [None, lanes])[1])
    return "rows(one-loop)" + (f",vector-partials={partial}" if partial else "")


def _vector_partial_sums(sch: Schedule, lanes: int) -> int:
    """Each row reduction whose row is whole vectors as ``lanes`` partial results, one per vector lane (block
    ``<name>_rf``), combined at the end: the row is read as vectors instead of one scalar chain whose every step
    waits for the last (LayerNorm's mean and variance). Returns how many; a reduction TVM cannot factor (its
    combiner) stays scalar."""
    done = 0
    for b in list(_blocks(sch)):
        if _is_spatial(sch, b):
            continue
        loops = sch.get_loops(b)
        n = int(sch.get(loops[-1]).extent)
        if n % lanes or n < 2 * lanes:
            continue
        try:
            _, lane = sch.split(loops[-1], [None, lanes])
            sch.rfactor(lane, factor_axis=len(loops) - 1)  # the partials last: one contiguous vector per row
            done += 1
        except Exception:  # noqa: BLE001 - TVM 0.27 raises tvm_ffi errors; this one stays a scalar chain
            pass
    return done


def _vectorize_partials(sch: Schedule, rf, loops, lanes: int) -> None:
    """The partial-sum block ``rf`` under its row loop: the lane loop innermost (after the reduction loop) and
    vectorized. Its innermost loops are one per block variable, in their order (``compute_at`` makes them so):
    the lane is the spatial one ``lanes`` long, the reduction loop the reduce one (whatever its length)."""
    types = _iter_types(sch, rf)
    own = loops[-len(types):]
    lane = [lp for lp, t in zip(own, types) if t == 0 and int(sch.get(lp).extent) == lanes]
    red = [lp for lp, t in zip(own, types) if t != 0]
    if len(lane) != 1 or len(red) != 1:
        return
    sch.reorder(red[0], lane[0])
    sch.vectorize(lane[0])


def _pad_in_task(op: str, attrs: dict) -> bool:
    """A depthwise conv or a window pool on blocked tensors reads only its own channel block of the input: each
    parallel task pads that block itself, into a buffer that stays in cache, instead of the kernel writing a
    padded copy of the whole input to memory first (3.6x faster on a 144-channel 56x56 depthwise conv)."""
    return attrs.get("layout") == "NCHWc" and (op != "conv2d" or attrs.get("groups", 1) != 1)


def _pad_under_parallel_loop(sch: Schedule, anchor, lanes: int) -> list[str]:
    """Move the pad stages feeding ``anchor`` under its parallel loop; returns their names."""
    moved = []
    for p in sch.get_producers(anchor):
        name = sch.get(p).name_hint
        # the rule's pad stage (a spatial block): "pad", or "pad_1" where a pad op of the kernel's prologue (a 3-d
        # conv's depth padding) took the name first
        if name != "pad" and not (name.startswith("pad_") and name[4:].isdigit()):
            continue
        sch.compute_at(p, sch.get_loops(anchor)[0], preserve_unit_loops=True)
        p = sch.get_sblock(name, func_name="main")
        loops = sch.get_loops(p)
        if int(sch.get(loops[-1]).extent) == lanes:
            sch.vectorize(loops[-1])
        moved.append(name)
    return moved


def _vectorize_parallel(sch: Schedule, block, lanes: int) -> str:
    loops = sch.get_loops(block)
    if not loops:
        return ""
    ext = _extents(sch, loops)
    total = math.prod(ext)
    vec = None
    if len(loops) >= 3 and ext[-1] < lanes and ext[-2] >= lanes:
        # a last axis too short for a vector (an image's 3 channels, blocked, padded for the first conv): unrolled
        # inside the wide axis, so LLVM vectorizes the wide axis with its stores interleaved in registers. With the
        # wide axis innermost instead, each store has a stride of 3 and LLVM wrote them as vscatterqps, microcoded
        # on Zen 4 (MobileNetV2's first conv with its int8 epilogue: 0.16 -> 0.135 ms)
        sch.unroll(loops[-1])
        if math.prod(ext) >= _MIN_PARALLEL_WORK:
            _parallel(sch, loops[:-2])
        return "par(short-axis-unrolled)"
    if ext[-1] % lanes == 0 and ext[-1] >= lanes:
        outer, vec = sch.split(loops[-1], [None, lanes])
        loops = list(loops[:-1]) + [outer]
    if total >= _MIN_PARALLEL_WORK:
        _parallel(sch, loops)
    if vec is not None:
        sch.vectorize(vec)
    return "vec" if vec is not None else "par"


def _parallel_outer(sch: Schedule, block) -> str:
    loops = sch.get_loops(block)
    types = _iter_types(sch, block)
    spatial = [lp for lp, t in zip(loops, types) if t == 0]
    spatial = spatial[: next((i for i, t in enumerate(types) if t != 0), len(types))]
    if not spatial:
        return "serial"
    if math.prod(_extents(sch, spatial)) > 1:
        _parallel(sch, spatial)
    return "rowpar"


#: a tiled kernel whose outer loops give fewer parallel tasks than this also splits its innermost outer loop
MIN_TASKS = 16


def _parallel(sch: Schedule, loops) -> None:
    """Fuse adjacent loops and run the fused loop on the thread pool."""
    sch.parallel(sch.fuse(*loops) if len(loops) > 1 else loops[0])


def _factor(extent: int, want: int) -> int:
    f = want
    while f > 1 and extent % f:
        f //= 2
    return f


def _divisor_at_most(extent: int, limit: int) -> int:
    return max(d for d in range(1, min(extent, limit) + 1) if extent % d == 0)


def _tile_shape(op: str, attrs: dict, ext: list[int], lanes: int,
                accumulators: int = DEFAULT_REGISTERS // 2) -> tuple[int, int, list[tuple[int, int]]]:
    """(vector axis, vector width, [(unrolled axis, factor), ...] outer to inner) of a tiled anchor's output, with at
    most ``accumulators`` accumulator vectors in a run of unrolled pixels."""
    def pixel_run(width: int, vector: int) -> int:  # output pixels unrolled: their accumulators fit in registers
        return _divisor_at_most(width, max(1, accumulators // max(1, vector // lanes)))

    if attrs.get("layout") == "NCHWc":  # blocked [N, C/b, H, W, b]: the block is the vector, a run of W unrolled
        b = ext[-1] if ext[-1] >= 4 else 1
        if op == "conv2d" and attrs.get("groups", 1) == 1 and b == lanes and ext[-2] % 4 == 0 and ext[1] % 2 == 0:
            # 2 output-channel blocks x 4 pixels: 8 accumulators fed by 2 weight vectors and 4 broadcasts
            # per step (6 loads per 8 FMAs) instead of 1 weight vector and 8 broadcasts
            return len(ext) - 1, b, [(1, 2), (len(ext) - 2, 4)]
        return len(ext) - 1, b, [(len(ext) - 2, pixel_run(ext[-2], b))]
    block = conv_weight_block(attrs) if op == "conv2d" else 0
    if block:  # packed weights: a block of output channels is the vector, a run of output pixels is unrolled
        return 1, block, [(len(ext) - 1, pixel_run(ext[-1], block))]
    v = _factor(ext[-1], lanes * 2 if ext[-1] >= lanes * 4 else lanes)
    if op in _PANEL_OUTER and ext[-1] % (3 * lanes) == 0:
        v = 3 * lanes  # 3 vectors x 4 rows: 12 accumulators, 7 loads per 12 FMAs (2 x 4: 6 per 8)
    panel = linear_weight_block(attrs) if op == "linear" else 0
    if panel:
        v = panel  # the weight is packed in panels of exactly this width
    if v < 4:  # 2-lane vectors trip an LLVM codegen bug in TVM 0.27 ("does not dominate all uses")
        v = 1
    u_axis = _UNROLL_AXIS.get(op)
    if u_axis is not None:
        u_axis %= len(ext)
        if u_axis == len(ext) - 1:
            u_axis = None
    return len(ext) - 1, v, [(u_axis, _factor(ext[u_axis], 4))] if u_axis is not None else []


def _tile_anchor(sch: Schedule, block, op: str, lanes: int, attrs: dict, accumulators: int) -> str:
    loops = sch.get_loops(block)
    types = _iter_types(sch, block)
    spatial = [lp for lp, t in zip(loops, types) if t == 0]
    reduce = [lp for lp, t in zip(loops, types) if t != 0]
    v_axis, v, unrolls = _tile_shape(op, attrs, _extents(sch, spatial), lanes, accumulators)
    unrolls = [(axis, f) for axis, f in unrolls if f > 1]
    outer, inner = list(spatial), []
    for axis, f in unrolls:
        lo, li = sch.split(spatial[axis], [None, f])
        outer[axis] = lo
        inner.append(li)
    vec = v
    if v > 1:
        vo, vi = sch.split(spatial[v_axis], [None, v])
        outer[v_axis] = vo
        if v > lanes and v % lanes == 0 and v & (v - 1):  # not a power of two: unroll whole vectors
            vj, vi = sch.split(vi, [None, lanes])
            inner.append(vj)
            vec = lanes
        inner.append(vi)
    if op in _PANEL_OUTER and [a for a, _ in unrolls] == [len(outer) - 2] and v_axis == len(outer) - 1:
        outer[-2], outer[-1] = outer[-1], outer[-2]  # column panel outside, row blocks inside
    if attrs.get("layout") == "NCHWc" and op == "conv2d" and attrs.get("groups", 1) == 1 and len(reduce) == 4:
        reduce = [reduce[0], reduce[3], reduce[1], reduce[2]]  # rco, rci, ry, rx: the packed weight read in order
    pairs = None
    if reduce and _reads_packed_int4(sch, block) and _extents(sch, reduce[-1:])[0] % 2 == 0:
        # two inputs a byte: both nibbles of one load, at constant shifts
        if _extents(sch, reduce[-1:])[0] % 32 == 0:  # a group of 32 (the default): its scale is loop-invariant
            kg, kk, pairs = sch.split(reduce[-1], [None, 16, 2])
            reduce[-1:] = [kg, kk]
        else:
            reduce[-1], pairs = sch.split(reduce[-1], [None, 2])
    sch.reorder(*outer, *reduce, *([pairs] if pairs is not None else []), *inner)
    if pairs is not None:
        sch.unroll(pairs)
    if attrs.get("layout") == "NCHWc" and reduce and _extents(sch, reduce[-1:])[0] <= 16:
        sch.unroll(reduce[-1])  # the window's last axis (or a block's channels): loads at constant offsets
    # "global", not "local": TVM 0.27 puts a small global buffer on the stack (LLVM keeps it in registers) but
    # allocates every "local" one from the workspace pool, a call per parallel task
    write_back = sch.cache_write(block, 0, "global")
    fused = _inline_epilogue(sch, write_back)
    sch.reverse_compute_at(write_back, outer[-1])
    par = outer[:-1] if len(outer) > 1 else outer
    if len(outer) > 1 and math.prod(_extents(sch, par)) < MIN_TASKS:
        par = outer  # few rows (a matrix-vector product: an LLM's decode step): the column panels are the tasks
    if _pad_in_task(op, attrs) and len(par) > 2:
        blocks = math.prod(_extents(sch, par[:2]))
        par = par[:2] if blocks >= CHANNEL_BLOCK_TASKS else par[:3]  # pads computed once per task
    if par and max(_extents(sch, par)) > 1:
        _parallel(sch, par)
    if v > 1:
        sch.vectorize(inner[-1])
    for lp in inner[:-1] if v > 1 else inner:
        sch.unroll(lp)
    if reduce:
        init = sch.decompose_reduction(block, reduce[0])
        _vectorize_inner(sch, init, vec)
    _vectorize_inner(sch, write_back, vec)
    _unroll_store_run(sch, write_back, block)
    packed = ",packed" if v_axis != len(spatial) - 1 else ",nchwc" if attrs.get("layout") == "NCHWc" else ""
    u = unrolls[-1][1] if unrolls else 1
    blocks = f",k{unrolls[0][1]}" if len(unrolls) > 1 else ""
    return f"tile(u{u}{blocks},v{v}{packed}{',epilogue' if fused else ''})"


def _unroll_store_run(sch: Schedule, write_back, anchor) -> None:
    """Unroll the run of pixels the store writes (at most 8 vectors; a loop of the store's own, not one it shares
    with the ``anchor``, such as the parallel one): left a loop, LLVM may vectorize it again across pixels, a lane
    at a time, with gathers and byte-by-byte stores (it did for a depthwise conv whose epilogue was one short
    requantize: 2.7x slower)."""
    shared = [sch.get(lp) for lp in sch.get_loops(anchor)]
    own = [lp for lp in sch.get_loops(write_back) if not any(sch.get(lp).same_as(f) for f in shared)]
    if len(own) >= 2 and int(sch.get(own[-2]).extent) <= 8:
        sch.unroll(own[-2])


def _reads_packed_int4(sch: Schedule, block) -> bool:
    """The block reads u8 weights at a halved index: packed int4 (two nibbles a byte) inlined from a dequantize."""
    return any(str(r.source.dtype) == "uint8" and any("// 2" in str(rg.min) for rg in r.region)
               for r in sch.get(block).reads)


def _inline_epilogue(sch: Schedule, write_back) -> bool:
    """Fold the elementwise stages after a tiled anchor into its register-to-memory store."""
    fused = False
    while True:
        consumers = sch.get_consumers(write_back)
        if len(consumers) != 1 or not _is_spatial(sch, consumers[0]):
            return fused
        try:
            sch.reverse_compute_inline(consumers[0])
        except Exception:  # noqa: BLE001 - TVM 0.27 raises tvm_ffi errors; any refusal means 'skip this step'
            return fused
        fused = True


def _vectorize_inner(sch: Schedule, block, v: int) -> None:
    loops = sch.get_loops(block)
    if v <= 1 or not loops:
        return
    extent = int(sch.get(loops[-1]).extent)
    if extent == v:
        sch.vectorize(loops[-1])
    elif extent % v == 0:  # several whole vectors (a 3-vector tile): unroll them, vectorize each
        outer, inner = sch.split(loops[-1], [None, v])
        sch.unroll(outer)
        sch.vectorize(inner)
