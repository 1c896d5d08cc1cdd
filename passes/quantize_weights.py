"""quantize_weights: store the weights of linear layers, constant matmul operands and embedding tables as int8
(symmetric, one scale per output channel; or "per-group" like int4) or int4 (a scale and a minimum per group of
inputs: ``w = q * scale + min``),
and dequantize them inside the kernel that reads them (``quantize="int8-weight"`` / ``"int4-weight"``).

Activations stay float: only the weights lose precision, so accuracy stays close to the float model while the
artifact's weights shrink about 4x (int8) or 6x (int4 with groups of 32). ``fuse_epilogue`` takes the
``dequantize`` into the linear kernel as its prologue and the CPU schedule computes it in registers, so the
float weight never exists in memory. An embedding table is gathered as int8 rows with their scales, then
dequantized (a ``take`` of the codes and one of the scales).

Requires: ``unfused`` (runs after the layout passes: a packed ``oi<v>o`` weight keeps its layout, its scales shaped
``[out/v, 1, v]``). Guarantees: ``weights_quantized``. Layers named in ``QuantConfig.keep_float`` stay float.

Before:
    const %w: f32[8,16]
    %y: f32[2,8] = linear(%x, %w) {"weight_layout": "oi"}
After (int8):
    const %w_q: i8[8,16]
    const %w_scale: f32[8,1]
    %w_dq: f32[8,16] = dequantize(%w_q, %w_scale) {"bits": 8, "group_size": 0, "group_axis": -1}
    %y: f32[2,8] = linear(%x, %w_dq) {"weight_layout": "oi"}
After (int4, groups of 8 along the 16 inputs):
    const %w_q4: u8[8,8]        (two nibbles a byte, along the inputs)
    const %w_scale: f32[8,2]
    const %w_min: f32[8,2]
    %w_dq: f32[8,16] = dequantize(%w_q4, %w_scale, %w_min) {"bits": 4, "group_size": 8, "group_axis": 1}
"""

from __future__ import annotations

from edgeopt.ir import Graph, Node, Value
from edgeopt.pipeline import Pass, register_pass
from edgeopt.quant.config import QuantConfig
from edgeopt.quant.weights import (
    affine_groups,
    best_int8_groups,
    int4_group_axis,
    reduce_axes,
    symmetric_int8,
    weight_input,
)

#: weights smaller than this stay float: their bytes do not matter and the smallest layers are the most sensitive
MIN_WEIGHT_ELEMENTS = 1024


@register_pass
class QuantizeWeights(Pass):
    name = "quantize_weights"
    requires = ("unfused",)
    guarantees = ("weights_quantized",)

    def __init__(self, config: QuantConfig | None = None, ops: tuple[str, ...] = ("linear", "matmul", "take"),
                 levels=None, kept_float: frozenset[str] | None = None):
        self.config = config or QuantConfig(mode="int8-weight")
        self.ops = ops
        #: the output names of the layers to keep float, where another pass runs this one on part of its layers and
        #: has read ``keep_float`` against all of them; None: read it here (and warn about names matching no layer)
        self.kept_float = kept_float
        #: layer -> per-channel int8's largest level (int8-dynamic on AVX2: 64 for the layers vpmaddubsw runs)
        self.levels = levels or (lambda n: 127)

    def run(self, g: Graph) -> dict:
        self.float_graph = g.clone()  # for CompiledModel.compare
        done: dict[str, list[Value]] = {}  # a weight shared by several layers is encoded once
        quantized, kept = [], []
        candidates = [n for n in g.nodes if n.op in self.ops and weight_input(g, n) is not None]
        if self.kept_float is None:
            floats = self.config.float_layers(g, candidates)
        else:
            floats = {n for n in candidates if n.outputs[0].name in self.kept_float}
        self._eight_bits = self.config.int8_layers(g, candidates)
        for n in list(g.nodes):
            i = weight_input(g, n) if n.op in self.ops else None
            if i is None or g.const(n.inputs[i]).size < MIN_WEIGHT_ELEMENTS:
                continue
            if n in floats:
                kept.append(f"{n.outputs[0].name} ({n.op}: QuantConfig.keep_float)")
                continue
            w = n.inputs[i]
            key = f"{w.name}/{n.op}/{n.attrs.get('weight_layout')}/{self._bits(n)}/{self.levels(n)}"
            if key not in done:
                done[key] = self._encode(g, n, w)
            if n.op == "take":
                self._dequantize_rows(g, n, done[key])
            else:
                n.inputs[i] = self._dequantize(g, n, done[key])
            quantized.append(n.outputs[0].name)
        g.toposort()
        g.remove_unused_constants()
        self.quant_graph = g.clone()
        return {"quantized": len(quantized), "kept_float": kept, "bits": self.config.weight_bits}

    def _bits(self, n: Node) -> int:
        return 8 if n in self._eight_bits else self.config.weight_bits

    def _encode(self, g: Graph, n: Node, w: Value) -> list:
        arr = g.const(w)
        bits = self._bits(n)
        if bits == 4 or self.config.weights == "per-group" or bits != self.config.weight_bits:
            ax = int4_group_axis(n, arr)
            gs = _group_size(arr.shape[ax], self.config.group_size)
            if gs:
                q, s, lo = affine_groups(arr, ax, gs, 4) if bits == 4 else best_int8_groups(arr, ax, gs)
                attrs = {"bits": bits, "group_size": gs, "group_axis": ax}
                return [g.add_const(q, f"{w.name}_q{bits}"), g.add_const(s, f"{w.name}_scale"),
                        None if lo is None else g.add_const(lo, f"{w.name}_min"), attrs]
        axes = reduce_axes(n, arr) if self.config.weights == "per-channel" else None
        q, s = symmetric_int8(arr, axes, qmax=self.levels(n))
        return [g.add_const(q, f"{w.name}_q"), g.add_const(s, f"{w.name}_scale"), None, {}]

    def _dequantize(self, g: Graph, n: Node, enc: list) -> Value:
        q, s, z, attrs = enc
        ins = [q, s] + ([z] if z is not None else [])
        return g.add("dequantize", ins, attrs, source=n.source, name=f"{q.name}_dq", index=g.nodes.index(n))

    def _dequantize_rows(self, g: Graph, n: Node, enc: list) -> None:
        """take(table, ids) -> dequantize(take(codes, ids), take(scales, ids)): gather int rows, then widen."""
        q, s, z, attrs = enc
        ids, at = n.inputs[1], g.nodes.index(n)
        rows = [g.add("take", [t, ids], {"axis": 0}, source=n.source, name=f"{t.name}_rows", index=at)
                for t in [q, s] + ([z] if z is not None else [])]
        attrs = dict(attrs, group_axis=-1) if attrs else attrs
        out = g.add("dequantize", rows, attrs, source=n.source, name=f"{n.outputs[0].name}_dq", index=at + len(rows))
        g.replace_uses(n.outputs[0], out)
        g.nodes.remove(n)


def _group_size(extent: int, want: int) -> int:
    """The largest even group size <= ``want`` that divides ``extent`` (0 if none >= 8)."""
    for gs in range(want, 7, -2):
        if extent % gs == 0:
            return gs
    return 0
