"""quantize_static: static int8 (``quantize="int8"``): int8 weights, and activations quantized with ranges measured
on calibration data.

Each convolution, linear layer and matmul with a constant operand becomes a layer on int8 values:
- its weight is stored int8, symmetric, one scale per output channel (``QuantConfig.weights="per-tensor"``: one);
- each float activation it reads is quantized to u8 (i8 on targets whose int8 dot product is signed: ARM SDOT;
  asymmetric either way: ``scale``, ``zero_point``) with the range the
  calibrator picks from the statistics of that value over ``calibration_data`` (the reference interpreter runs
  the graph as it is at this point of the pipeline: after BatchNorm folding, so the ranges are those of the
  tensors the kernels compute). One quantize/dequantize pair serves every quantized reader of a value, and its
  other readers (a residual add, a concatenation) read the same int8 copy, as integer runtimes do: the kernel
  that makes the value stores int8 only (a quarter of the bytes; no separate quantize kernel). A value that is
  also a graph output stays float for the output; ``QuantConfig(quantized_residuals=False)`` keeps the other
  readers on float.
- a conv input gets a scale and zero point per channel where that pays (``QuantConfig.activation_scales``, on by
  default; ``_channel_scales``): each channel's calibrated range with 25% headroom, at least half the tensor's
  (``calibrate.channel_ranges``), where convs are its only quantized readers and their modelled rounding noise
  falls by 5% or more (``edgeopt.quant.channel_noise``). A depthwise conv takes each channel's scale in the
  requantize it has per channel anyway (``fold_quantized``); a dense conv reads the values in units of each
  channel's share of the largest scale, with those shares in its weight's input channels before rounding (as a
  conv reading pixels takes their steps); its other readers (a residual add) read the values. A linear layer's
  input of tokens (rank 3, read only by linear layers) gets the same per feature, its last axis: a transformer's
  LayerNorm and GELU outputs, whose few large features set one scale for all (SmoothQuant's migration of the
  activations' scales into the weights, bounded by a floor of a quarter of the tensor's range);
- the depth taps of a 3-d conv (layer inputs moved out of one [N, C, D, H, W] value along its depth by pads,
  slices, a transpose and reshapes: ``shared_moves``) quantize that value once, with its range and one scale, and
  the moves are done on the u8 values (the kernels read them in their prologues); its other readers keep float;
- a max pool between the activation and the layer pools the u8 values (quantizing commutes with max), and a
  concat that only quantized layers and other int8-reading ops read (and is no graph output; with
  ``quantized_residuals``) quantizes its parts with its own scale and joins u8 values (quantizing is elementwise):
  each part's kernel stores u8, a part that is also another layer's int8 input is rescaled from that copy, and a
  constant part is quantized at compile time;
- a dense conv on fewer than 4 input channels (an image's first layer) is quantized only where the target has an
  int8 dot product, and as ``QuantConfig.int8_image_convs`` says (``edgeopt.quant.image_convs``): ``"auto"`` (the
  default), where it reads exact 8-bit pixels and sums at least ``IMAGE_CONV_MIN_PATCH`` inputs per output, its
  levels chosen by GPTQ (a few weights per output, whose nearest levels cost accuracy), else float; ``True``, one
  int8 conv; ``"split"``, two int8 convs on the same input, the weight's levels and its rounding residual's (``w ~
  s q + s' q'``, ``s' ~ s / 254``: 15-bit weights for twice the int8 work); ``False``, float;
- a dense conv that reads an image input whose calibration values are 8-bit pixels (``edgeopt.quant.lattice``:
  ``(k / 255 - mean) / std`` per channel, with the evidence it asks for) reads them without loss: u8 = the pixel k,
  and each channel's step moves into the conv's weight (``fold_quantized`` pads with each channel's level of 0);
- ``weight_rounding="gptq"`` picks each layer's int8 levels (on the same grid) for the least output error on the
  calibration data (``edgeopt.quant.rounding``) instead of the nearest ones; ``"auto"`` (the default) does so where
  the dense layers get 7-bit levels (``reduce_range``: AVX2 targets) and keeps the nearest levels on 8-bit targets
  (there GPTQ moved the logits' cosine but not the top-1 agreement, for 10 s more compile time);
- ``reduce_range`` ("auto": on x86 CPUs with AVX2 but no VNNI) puts the weights of the layers ``vpmaddubsw`` will
  run on 7-bit levels (-64..64), the range it is exact for (``int8_weight_layout.weight_levels``); depthwise convs,
  shapes no 8 x 4 tile fits and QAT grids keep their levels (``prepare_qat`` trains these layers on 7-bit ones
  for such a target: ``int8_weight_layout`` then runs them on ``vpmaddubsw``, as it does any weight within +-64);
- embedding tables are stored int8 per row (as ``quantize_weights`` does) and gathered rows dequantized;
- ``bias_correction`` (on by default) shifts each layer's float bias by the mean error that weight rounding
  causes in its output over the calibration data, so that errors do not add up as a drift through deep nets
  (``edgeopt.quant.bias_correction``);
- scales learned by quantization-aware training (``QuantConfig.input_ranges`` / ``weight_scales``, by layer name)
  replace the calibrated ranges and the max-based weight scales of those layers;
- ``QuantConfig(max_drop=...)``: the metric (top-1 agreement, cosine, or a function) on the calibration data may
  fall at most this much; the fewest of the layers that add the most error (``edgeopt.quant.compare``) stay float
  for it to hold (``edgeopt.quant.budget``: a doubling then bisecting search; reported as ``kept_for_budget``).
  Each trial interprets the calibration data, so a budget costs compile time (minutes for a full-size CNN).
  Without a budget, a model whose outputs collapse gets a warning that names the layers responsible.

The graph stays an exact description of the int8 model: ``dequantize(quantize(x))`` is what an integer kernel
computes from x. Matrix products of two activations (attention scores) stay float.

Requires: ``unfused``; runs after the folds and before the layout and fusion passes. Guarantees: ``quantized``.

Before:
    %c: f32[1,8,4,4] = conv2d(%x, %w, %b) {...}
After:
    %x_q: u8[1,3,4,4] = quantize(%x, %x_scale, %x_zp) {"dtype": "u8"}
    %x_dq: f32[1,3,4,4] = dequantize(%x_q, %x_scale, %x_zp)
    %w_dq: f32[8,3,3,3] = dequantize(%w_q, %w_scale)          # %w_q: i8 constant, %w_scale: f32[8,1,1,1]
    %c: f32[1,8,4,4] = conv2d(%x_dq, %w_dq, %b_corrected) {...}
"""

from __future__ import annotations

import warnings
from dataclasses import replace

import numpy as np

from edgeopt.ir import Graph, Node, Value
from edgeopt.ir.ops.nn import is_depthwise
from edgeopt.ir.registry import get_op
from edgeopt.pipeline import Pass, register_pass
from edgeopt.quant.bias_correction import WeightErrors
from edgeopt.quant.budget import meet_budget
from edgeopt.quant.calibrate import (
    CHANNEL_RANGE_FLOOR,
    FEATURE_RANGE_FLOOR,
    MIN_CHANNEL_SAMPLES,
    affine_params,
    channel_axis,
    channel_ranges,
    choose_range,
    observe_ranges,
)
from edgeopt.quant.channel_noise import channel_scales_pay
from edgeopt.quant.config import QuantConfig, QuantizationError
from edgeopt.quant.image_convs import add_residual_conv, pixel_lattices, quantize_pixels, stays_float, too_narrow
from edgeopt.quant.rounding import InputMoments, from_matrix, layer_matrix, round_to_grid
from edgeopt.quant.weights import (
    out_in,
    reduce_axes,
    symmetric_int8,
    times_input_steps,
    weight_input,
    weight_qmax,
)

from .int8_weight_layout import target_activation_dtype, weight_levels
from .quantize_weights import QuantizeWeights

QUANTIZED_OPS = ("conv2d", "linear", "matmul")
#: ops that only move elements: quantizing commutes with them (a pad of 0 pads the zero point)
MOVES = ("reshape", "transpose", "slice", "pad")


def moved_from(g: Graph, v: Value, readers) -> tuple[Value, list[Node]] | None:
    """(root, the ops from it to ``v``) where ``v`` is a float value moved out of another by reshapes, transposes,
    slices and pads of 0, each value read once and no graph output; else None."""
    chain, cur = [], v
    while cur.producer is not None and cur.producer.op in MOVES and len(readers.get(cur, ())) == 1 \
            and cur not in g.outputs and (cur.producer.op != "pad" or cur.producer.attrs["value"] == 0.0):
        chain.append(cur.producer)
        cur = cur.producer.inputs[0]
    return (cur, chain[::-1]) if chain and cur.type.dtype == v.type.dtype else None


def _depth_moves(chain: list[Node]) -> bool:
    """Moves of a 3-d conv's depth tap: pads and slices along the depth axis (2) of a [N, C, D, H, W] value only, a
    transpose and reshapes."""
    for n in chain:
        if n.op == "slice" and n.attrs["axis"] % 5 != 2:
            return False
        if n.op == "pad" and any(p for i, p in enumerate(n.attrs["pads"]) if i // 2 != 2):
            return False
    return True


def shared_moves(g: Graph, acts: list[Value]) -> dict[str, Value]:
    """The depth taps of 3-d convs (``frontend/volumetric.py``): layer inputs (by name) moved out of one [N, C, D, H,
    W] root along its depth only, two or more of them, the root itself no layer's input; with their root. Those
    layers share one quantize of the root (each tap re-reads most of it: one quantize per tap reads the float values
    ``kd`` times). Moves that cut channels (a split into branches) read disjoint parts and keep their own."""
    readers, by_root = g.users(), {}
    for v in acts:
        found = moved_from(g, v, readers)
        if found is not None and found[0].type.rank == 5 and found[0] not in acts and _depth_moves(found[1]):
            by_root.setdefault(found[0], []).append(v.name)
    return {name: root for root, names in by_root.items() if len(names) > 1 for name in names}


def replay_on_quantized(g: Graph, dq: Value, chain: list[Node]) -> Value:
    """The moves of ``chain`` done on the quantized values behind ``dq`` (a per-tensor dequantize: pads pad its zero
    point), then dequantized with the same scale."""
    q, scale, zero = dq.producer.inputs
    cur = q
    for node in chain:
        attrs = dict(node.attrs, value=float(g.const(zero))) if node.op == "pad" else node.attrs
        cur = g.add(node.op, [cur], attrs, source=node.source, name=f"{node.outputs[0].name}_q")
    return g.add("dequantize", [cur, scale, zero], source=dq.producer.source, name=f"{chain[-1].outputs[0].name}_dq")


@register_pass
class QuantizeStatic(Pass):
    name = "quantize_static"
    requires = ("unfused",)
    guarantees = ("quantized",)

    def __init__(self, config: QuantConfig | None = None, calibration=None, bias_correction: bool = True):
        self.config = config or QuantConfig(mode="int8")
        self.calibration = list(calibration or [])
        self.bias_correction = bias_correction

    def run(self, g: Graph) -> dict:
        if not self.calibration:
            raise QuantizationError("static int8 needs calibration_data: a few real input batches (e.g. 64 images)")
        layers, kept = [], []
        dots = self.target is not None and bool(self.target.int8_dots())
        floats = self.config.float_layers(g, [n for n in g.nodes if n.op in QUANTIZED_OPS + ("take",)
                                              and weight_input(g, n) is not None])
        self._float_tables = frozenset(n.outputs[0].name for n in floats if n.op == "take")
        for n in g.nodes:
            if n.op not in QUANTIZED_OPS or weight_input(g, n) is None:
                continue
            if n in floats:
                kept.append(f"{n.outputs[0].name} ({n.op}: QuantConfig.keep_float)")
            elif too_narrow(n) and not (dots and self.config.int8_image_convs):
                why = "no int8 dot product on the target" if self.config.int8_image_convs else "int8_image_convs=False"
                kept.append(f"{n.outputs[0].name} ({n.op}: {n.inputs[0].type.shape[1]} input channels, {why})")
            else:
                layers.append(n)
        names_here = {g.layer_name(n) for n in layers}
        unknown = sorted((set(self.config.input_ranges) | set(self.config.weight_scales)) - names_here)
        if unknown:
            warnings.warn(f"QuantConfig has learned scales for layers this model does not quantize: {unknown[:8]} "
                          f"(its quantized layers: {sorted(names_here)[:8]}...)", stacklevel=2)
        self._qmax = weight_qmax(self.config.reduce_range, self.target)  # 64: 7-bit weights (AVX2's vpmaddubsw)
        self._lattices = pixel_lattices(g, layers, self.calibration)
        if self.config.int8_image_convs == "auto":  # only where it pays, and only on exact pixels
            for n in [n for n in layers if too_narrow(n)]:
                why = stays_float(n, n.inputs[0].name in self._lattices, self._on_lattice(g, n),
                                  self._rounds_by_output(g, n))
                if why:
                    layers.remove(n)
                    kept.append(f"{n.outputs[0].name} ({n.op}: {n.inputs[0].type.shape[1]} input channels, {why})")
        acts = list(dict.fromkeys(n.inputs[0] for n in layers))
        moved = shared_moves(g, acts)
        steps = {n: self._lattices[n.inputs[0].name].step for n in layers if self._on_lattice(g, n)}
        errors = WeightErrors(layers) if self.bias_correction and self.config.bias_correction else None
        by_output = [n for n in layers if self._rounds_by_output(g, n) and self._by_gptq(n)]
        moments = InputMoments(by_output) if by_output else None
        watchers = [w.observe for w in (errors, moments) if w is not None]
        self._float_outputs = []  # one pass over the calibration data: ranges, weight errors, float outputs
        stats = observe_ranges(g, list(dict.fromkeys([*acts, *moved.values()])), self.calibration,
                               outputs=self._float_outputs,
                               also=(lambda v, x, i: [f(v, x, i) for f in watchers]) if watchers else None)
        self._ranges = {v.name: st for v, st in stats.items()}
        self._ranges.update({name: self._ranges[root.name] for name, root in moved.items()})  # quantized at the root
        self._moved = set(moved)
        self._channels = self._channel_scales(g, layers, [v for v in acts if v.name not in moved])
        for n in layers:  # a dense conv or linear layer reads a per-channel input in units of its channel's share
            params = self._channels.get(n.inputs[0].name)
            if params is not None and not is_depthwise(n):
                steps[n] = params[0] / params[0].max()
        self._weights = {n.outputs[0].name: self._int8_weight(g, n, steps.get(n), moments) for n in layers}
        self._shifts = errors.means(g, self._weights, steps) if errors else {}
        split = [n for n in layers if self.config.int8_image_convs == "split" and too_narrow(n)]
        self._residuals = {n.outputs[0].name: self._residual_weight(g, n, steps.get(n)) for n in split}
        for name in self._residuals:  # the two parts' error is ~1/(2 qmax) of one part's: nothing left to correct
            self._shifts.pop(name, None)
        #: the graph before and after, for ``CompiledModel.compare`` and the accuracy budget
        self.float_graph = g.clone()
        names = [n.outputs[0].name for n in layers]
        applied = self._apply(g, set(names))
        check, budget_applied = meet_budget(self.config, self.float_graph, g, names, self.calibration,
                                            self._float_outputs, self._apply)
        if budget_applied is not None:  # g is now the accuracy budget's graph, with layers kept float
            applied = budget_applied
        kept += applied.pop("kept_tables")  # embedding tables named in keep_float
        kept += [f"{name} (accuracy budget)" for name in check.get("kept_for_budget", [])]
        self.quant_graph = g.clone()
        return {"quantized": len(names) - len(check.get("kept_for_budget", [])), "activations": len(acts),
                "kept_float": kept, "bias_corrected": len(self._shifts), "calibration_batches": len(self.calibration),
                "weight_levels": self._qmax, "gptq_layers": len(by_output), **applied, **check}

    def _apply(self, g: Graph, names: set) -> dict:
        """Quantize the layers of ``g`` whose outputs are ``names``; returns the report's counts of activations
        given a scale per channel and of embedding tables quantized, and the tables kept float (``kept_tables``)."""
        layers = [n for n in g.nodes if n.op in QUANTIZED_OPS and n.outputs[0].name in names]
        readers = g.users()
        qdq = {}
        in_steps = {}  # a per-channel activation as its dense readers take it: x / (s[c] / max s)
        channel_scaled = 0  # activations given a scale per channel in this graph
        levels = {}  # a pixel input's levels, shared by the layers that read it (not by its other readers)
        moved_q = {}  # a 3-d conv tap's input (``shared_moves``), rebuilt on its root's u8 values
        roots_q = {}  # their roots, quantized once
        for n in layers:
            v = n.inputs[0]
            if self._on_lattice(g, n):
                if v not in levels:
                    levels[v] = quantize_pixels(g, v, self._lattices[v.name], self._activation_dtype())
                n.inputs[0] = levels[v]
            elif v.name in self._moved and self.config.input_ranges.get(g.layer_name(n)) is None \
                    and (found := moved_from(g, v, readers)) is not None:
                root, chain = found  # one quantize of the root; the moves (a 3-d conv's depth taps) on its u8 values
                if root not in roots_q:  # (its other readers keep the float values: no residual rewiring)
                    roots_q[root] = self._quantize_activation(g, root, self._ranges[v.name], readers, None, names)
                if v not in moved_q:
                    moved_q[v] = replay_on_quantized(g, roots_q[root], chain)
                n.inputs[0] = moved_q[v]
            else:
                learned = self.config.input_ranges.get(g.layer_name(n))
                key = (v, None if learned is None else tuple(learned))  # QAT: each layer's own learned range
                channels = self._channels.get(v.name) if learned is None else None
                if key not in qdq:
                    qdq[key] = self._quantize_activation(g, v, self._ranges[v.name], readers, learned, names,
                                                         channels=channels)
                    channel_scaled += channels is not None
                n.inputs[0] = qdq[key]
                if channels is not None and not is_depthwise(n):
                    if v not in in_steps:
                        q, z = qdq[key].producer.inputs[0], qdq[key].producer.inputs[2]
                        ref = g.add_const(np.float32(channels[0].max()), f"{v.name}_scale_max")
                        in_steps[v] = g.add("dequantize", [q, ref, z], source=qdq[key].producer.source,
                                            name=f"{v.name}_dq_shares")
                    n.inputs[0] = in_steps[v]
            n.inputs[1] = self._quantize_weight(g, n)
            shift = self._shifts.get(n.outputs[0].name)
            if shift is not None:
                b = g.const(n.inputs[2])
                n.inputs[2] = g.add_const((b - shift).astype(b.dtype), f"{n.inputs[2].name}_corrected")
            if n.outputs[0].name in self._residuals:
                add_residual_conv(g, n, *self._residuals[n.outputs[0].name])
                readers = g.users()  # the layer's readers now read the sum
        if self.config.quantized_residuals:  # the other readers share the int8 copy: the float one is never stored
            quantizers = {dq.producer.inputs[0].producer for dq in qdq.values()}
            for (v, _), dq in qdq.items():
                for r in readers.get(v, ()):
                    if r not in quantizers and r.op not in QUANTIZED_OPS:
                        r.inputs = [dq if i is v else i for i in r.inputs]
        g.toposort()
        g.remove_dead_nodes()  # the float values every reader now takes as int8 (a concat, a pool)
        tables = QuantizeWeights(replace(self.config, mode="int8-weight"), ops=("take",),  # embedding tables
                                 kept_float=self._float_tables).run(g)
        g.remove_unused_constants()
        return {"per_channel_inputs": channel_scaled, "embedding_tables": tables["quantized"],
                "kept_tables": tables["kept_float"]}

    def _channel_scales(self, g: Graph, layers: list[Node], acts: list[Value]) -> dict[str, tuple]:
        """The activations that get a scale and zero point per channel (``QuantConfig.activation_scales``), by name:
        (scales, zero points), each channel's calibrated range with 25% headroom, at least half the tensor's (a
        quarter for linear layers' features: ``calibrate.channel_ranges``). Such a value is no graph output, made by
        no pool or concat (those are quantized in place), and, where it is read by layers being quantized, read by
        convs only (rank 4) or by linear layers only (tokens, rank 3: a scale per feature, ``_takes_channel_scales``):
        depthwise convs take each channel's scale in their per-channel requantize; dense convs and linear layers (no
        learned QAT range, no image lattice) read it in units of its channel's share of the largest scale, ``x /
        (s[c] / max s)``, with the weight's input channels times that share (``steps``), as a conv reading pixels does.
        Each channel must have ``MIN_CHANNEL_SAMPLES`` calibration values, more than one per sample (not a pooled
        vector's).
        Channels' zero points may differ only where no reader pads (a padded conv would pad each channel with its own
        level). And it must pay: the readers' modelled rounding noise (``edgeopt.quant.channel_noise``) at least 5%
        below one scale's."""
        if self.config.activation_scales != "per-channel":
            return {}
        readers, out = g.users(), {}
        quantized = set(layers)
        for v in acts:
            st = self._ranges[v.name]
            if v in g.outputs or st.channel_samples < MIN_CHANNEL_SAMPLES or st.channel_positions < 2 \
                    or (v.producer is not None and v.producer.op in ("max_pool2d", "concat")):
                continue
            users = [r for r in readers.get(v, ()) if r in quantized]
            if not users or not all(self._takes_channel_scales(g, r, v) for r in users):
                continue
            lo, hi = choose_range(st, self.config.calibrator, self.config.percentile)
            dtype = self._activation_dtype()
            floor = FEATURE_RANGE_FLOOR if users[0].op == "linear" else CHANNEL_RANGE_FLOOR
            ranges = channel_ranges(st, lo, hi, floor)
            params = np.array([affine_params(a, b, dtype) for a, b in zip(*ranges)], np.float64)
            scales, zps = params[:, 0].astype(np.float32), params[:, 1].astype(np.int32)
            if (zps != zps[0]).any() and any(any(r.attrs.get("padding", ())) for r in users):
                continue
            readers_of_v = [(out_in(g.const(r.inputs[1]), r), is_depthwise(r), self._levels(g, r)) for r in users]
            if channel_scales_pay(readers_of_v, st.channel_mean_square, scales, affine_params(lo, hi, dtype)[0],
                                  self.config.weights == "per-channel"):
                out[v.name] = (scales, zps)
        return out

    def _takes_channel_scales(self, g: Graph, n: Node, v: Value) -> bool:
        """Whether quantized layer ``n`` can read ``v`` with a scale per channel: a depthwise conv, a dense conv
        whose weight can take each input channel's share (not on an image's lattice, no QAT-learned scales, not split
        in two), or a linear layer (no QAT-learned scales) reading tokens (rank 3) with a scale per feature (the last
        axis)."""
        name = g.layer_name(n)
        if n.inputs[0] is not v or name in self.config.input_ranges:
            return False
        if n.op == "linear":
            return v.type.rank == 3 and name not in self.config.weight_scales
        if n.op != "conv2d" or v.type.rank != 4 or n.attrs.get("layout", "NCHW") != "NCHW":
            return False
        if is_depthwise(n):
            return True
        return n.attrs["groups"] == 1 and n.attrs["weight_layout"] == "OIHW" and not self._on_lattice(g, n) \
            and name not in self.config.weight_scales \
            and not (self.config.int8_image_convs == "split" and too_narrow(n))

    def _quantize_activation(self, g: Graph, v: Value, st, readers, learned=None, layers=frozenset(),
                             channels: tuple | None = None) -> Value:
        """``v`` quantized for the layers being quantized (``layers``: their output names), and dequantized: u8 (or
        i8) values with one scale and zero point, calibrated or learned, or one per channel (``channels``: scales
        and zero points, ``_channel_scales``)."""
        dtype = self._activation_dtype()
        if channels is not None:
            shape = tuple(-1 if i == channel_axis(v.type.rank) else 1 for i in range(v.type.rank))
            s = g.add_const(channels[0].reshape(shape), f"{v.name}_scale")
            z = g.add_const(channels[1].reshape(shape), f"{v.name}_zp")
            src = v.producer.source if v.producer is not None else None
            q = g.add("quantize", [v, s, z], {"dtype": dtype}, source=src, name=f"{v.name}_q")
            return g.add("dequantize", [q, s, z], source=src, name=f"{v.name}_dq")
        lo, hi = learned if learned is not None else choose_range(st, self.config.calibrator, self.config.percentile)
        scale, zp = affine_params(lo, hi, dtype)
        s, z = g.add_const(np.float32(scale), f"{v.name}_scale"), g.add_const(np.int32(zp), f"{v.name}_zp")
        src = v.producer.source if v.producer is not None else None
        pool = v.producer
        if pool is not None and pool.op == "max_pool2d" and len(readers.get(pool.inputs[0], ())) == 1 \
                and pool.inputs[0] not in g.outputs:
            # quantizing is monotone, so it commutes with max: pool the u8 values (a quarter of the bytes) with
            # the pool's output range; the producer's kernel then stores u8 directly
            q = g.add("quantize", [pool.inputs[0], s, z], {"dtype": dtype}, source=src, name=f"{v.name}_q_in")
            q = g.add("max_pool2d", [q], pool.attrs, source=pool.source, name=f"{v.name}_q")
        elif pool is not None and pool.op == "concat" and self.config.quantized_residuals and v not in g.outputs \
                and all(r.op not in QUANTIZED_OPS or r.outputs[0].name in layers for r in readers.get(v, ())):
            # quantizing is elementwise, so it commutes with concat: each part is quantized with the concat's
            # scale (its producer's kernel stores u8; a part that is another layer's int8 input is rescaled from
            # that copy; a constant part at compile time), and the concat joins u8 values
            parts = {}
            for i, part in enumerate(pool.inputs):
                if part in parts:
                    continue
                if g.is_const(part):
                    const = [g.const(part), np.float32(scale), np.int32(zp)]
                    parts[part] = g.add_const(get_op("quantize").reference(const, {"dtype": dtype})[0],
                                              f"{v.name}_q{i}")
                    continue
                parts[part] = g.add("quantize", [part, s, z], {"dtype": dtype}, source=src, name=f"{v.name}_q{i}")
                readers.setdefault(part, []).append(parts[part].producer)
            q = g.add("concat", [parts[p] for p in pool.inputs], pool.attrs, source=pool.source, name=f"{v.name}_q")
        else:
            q = g.add("quantize", [v, s, z], {"dtype": dtype}, source=src, name=f"{v.name}_q")
        return g.add("dequantize", [q, s, z], source=src, name=f"{v.name}_dq")

    def _on_lattice(self, g: Graph, n: Node) -> bool:
        """Whether conv ``n`` reads 8-bit pixels it can take exactly (no scales learned for it by QAT)."""
        name = g.layer_name(n)
        return n.op == "conv2d" and n.attrs["groups"] == 1 and n.attrs["weight_layout"] == "OIHW" \
            and n.inputs[0].name in self._lattices and name not in self.config.input_ranges \
            and name not in self.config.weight_scales

    def _activation_dtype(self) -> str:
        """u8 (what x86's dot products multiply), or i8 where the target's best one takes signed values (ARM SDOT)."""
        return target_activation_dtype(self.target)

    def _rounds_by_output(self, g: Graph, n: Node) -> bool:
        """Whether GPTQ may round ``n``'s weight (a per-channel grid it did not learn by QAT; ``_by_gptq`` says whether
        it does)."""
        return self.config.weights == "per-channel" and g.layer_name(n) not in self.config.weight_scales \
            and layer_matrix(n, g.const(n.inputs[1])) is not None

    def _float_weight(self, g: Graph, n: Node, input_steps) -> tuple[np.ndarray, tuple[int, ...] | None]:
        """``n``'s float weight (times each input channel's step, for a layer reading pixels in units of their steps or
        values in units of their channel's share) and the axes one weight scale covers (None: one scale for the
        tensor)."""
        w = g.const(n.inputs[1])
        arr = w if input_steps is None else times_input_steps(w, input_steps, n)
        return arr, reduce_axes(n, arr) if self.config.weights == "per-channel" else None

    def _by_gptq(self, n: Node) -> bool:
        """Whether GPTQ chooses ``n``'s levels: ``weight_rounding="gptq"``; under "auto", every layer of a model whose
        dense layers get 7-bit levels (their rounding error is 4x the 8-bit one's: EfficientNet-Lite0 for AVX2 90.6%
        -> 95.0% agreement, its 8-bit depthwise convs included) and an image conv under ``int8_image_convs="auto"``."""
        rounding = self.config.weight_rounding
        return rounding == "gptq" or (rounding == "auto" and self._qmax < 127) or (
            self.config.int8_image_convs == "auto" and too_narrow(n))

    def _levels(self, g: Graph, n: Node) -> int:
        """The largest weight level of layer ``n``: 127, or 7-bit (``self._qmax``) where ``int8_weight_layout`` will
        run it on an instruction exact only for such weights (AVX2's vpmaddubsw), or on any dot product under
        ``reduce_range=True``. A depthwise conv (plain vector code on every CPU) and a layer whose shape no instruction
        fits keep 127; a weight grid learned by QAT keeps its learned levels (127 here only bounds them: on a target
        that needs 7 bits ``prepare_qat`` trained them within +-64)."""
        if g.layer_name(n) in self.config.weight_scales:
            return 127
        return weight_levels(n, g.const(n.inputs[1]).shape, self.target, self._activation_dtype(),
                             self.config.reduce_range)

    def _int8_weight(self, g: Graph, n: Node, input_steps, moments) -> tuple[np.ndarray, np.ndarray]:
        """(int8 levels, scales) of ``n``'s weight (``_float_weight``): nearest levels, or GPTQ's (``_by_gptq``)."""
        arr, axes = self._float_weight(g, n, input_steps)
        qmax = self._levels(g, n)
        q, s = symmetric_int8(arr, axes, self.config.weight_scales.get(g.layer_name(n)), qmax=qmax)
        h = moments.h.pop(n, None) if moments is not None else None  # used once: freed as soon as it is
        if h is None:
            return q, s
        if input_steps is not None:  # H of x -> H of x / step (patch columns: channel-major)
            d = np.repeat(input_steps.astype(np.float64), arr[0, 0].size)
            h = h / np.outer(d, d)
        levels = round_to_grid(layer_matrix(n, arr), h, s.reshape(-1), qmax)
        return from_matrix(n, levels, arr.shape), s

    def _residual_weight(self, g: Graph, n: Node, input_steps) -> tuple[np.ndarray, np.ndarray]:
        """(int8 levels, scales) of what ``n``'s int8 weight leaves out (``int8_image_convs="split"``): its float
        weight (``_float_weight``) less its levels times their scales."""
        arr, axes = self._float_weight(g, n, input_steps)
        q, s = self._weights[n.outputs[0].name]
        rest = arr.astype(np.float64) - q.astype(np.float64) * s
        return symmetric_int8(rest.astype(np.float32), axes, qmax=self._levels(g, n))

    def _quantize_weight(self, g: Graph, n: Node) -> Value:
        w = n.inputs[1]
        q, s = self._weights[n.outputs[0].name]
        qv, sv = g.add_const(q, f"{w.name}_q"), g.add_const(s, f"{w.name}_scale")
        return g.add("dequantize", [qv, sv], source=n.source, name=f"{w.name}_dq")
