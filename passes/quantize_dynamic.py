"""quantize_dynamic: int8 weights, and activations quantized per row at run time (``quantize="int8-dynamic"``).

For each linear layer (and matmul with a constant operand) the weight becomes int8 as in ``quantize_weights``,
and the activation it reads is quantized symmetrically with one scale per row (per token of a transformer),
computed from that row's largest magnitude when the model runs, and stored as u8 around zero point 128 (the
unsigned operand of VNNI's dot product). ``fold_quantized`` then makes the layers integer kernels whose epilogue
multiplies each row by its scale. Per-row scales follow activation outliers
(all-MiniLM's hidden states have a few large channels in some tokens) much better than the per-tensor scale
ONNX Runtime's dynamic quantization uses, and need no calibration data.

Requires: ``unfused`` (runs before the layout passes, like ``quantize_static``). Guarantees: ``weights_quantized``,
``quantized``.

Before:
    %y: f32[128,384] = linear(%x, %w) {"weight_layout": "oi"}
After (the row's statistics and its quantization are one kernel, which reads each row once):
    %x_scale, %x_q = fused(%x) {"name": "quantize_rows", "anchor": "max"}
      graph quantize_rows(%x: f32[128,384]) {
        %x_amax: f32[128,1] = max(abs(%x)) {"axes": [-1], "keepdims": true}
        %x_scale: f32[128,1] = maximum(div(%x_amax, 127.0), 1e-12)
        %x_q: u8[128,384] = quantize(%x, %x_scale, 128) {"dtype": "u8"}
        return %x_scale, %x_q
      }
    %x_dq: f32[128,384] = dequantize(%x_q, %x_scale, 128)
    %y: f32[128,384] = linear(%x_dq, dequantize(%w_q, %w_scale)) {"weight_layout": "oi"}
"""

from __future__ import annotations

import numpy as np

from edgeopt.ir import Graph, Value
from edgeopt.ir.fused import fuse_nodes
from edgeopt.pipeline import Pass, register_pass
from edgeopt.quant.config import QuantConfig
from edgeopt.quant.weights import weight_input, weight_qmax

from .int8_weight_layout import weight_levels
from .quantize_weights import QuantizeWeights


@register_pass
class QuantizeDynamic(Pass):
    name = "quantize_dynamic"
    requires = ("unfused",)
    guarantees = ("weights_quantized", "quantized")

    def __init__(self, config: QuantConfig | None = None):
        self.config = config or QuantConfig(mode="int8-dynamic")

    def run(self, g: Graph) -> dict:
        float_graph = g.clone()  # for CompiledModel.compare
        floats = self.config.float_layers(g, [n for n in g.nodes if n.op in ("linear", "matmul", "take")
                                              and weight_input(g, n) is not None])
        layers = [n for n in g.nodes if n.op in ("linear", "matmul") and weight_input(g, n) is not None
                  and n not in floats]
        qdq: dict[Value, Value] = {}
        for n in layers:
            x = n.inputs[0]
            if x not in qdq:
                qdq[x] = _quantize_rows(g, x, g.nodes.index(n), n.source)
            n.inputs[0] = qdq[x]
        def levels(n):  # 7-bit for the layers AVX2's vpmaddubsw will run (u8 activations, around 128)
            w = g.const(n.inputs[weight_input(g, n)])
            return weight_levels(n, w.shape, self.target, "u8", self.config.reduce_range)

        weights = QuantizeWeights(QuantConfig(mode="int8-weight", weights=self.config.weights), levels=levels,
                                  kept_float=frozenset(n.outputs[0].name for n in floats))
        stats = weights.run(g)
        self.float_graph, self.quant_graph = float_graph, weights.quant_graph
        return {"dynamic_activations": len(qdq), **stats,
                "weight_levels": weight_qmax(self.config.reduce_range, self.target)}


def _quantize_rows(g: Graph, x: Value, at: int, source: str | None) -> Value:
    """x -> dequantize(quantize(x, s), s) with s = max |row| / 127, inserted before node index ``at``."""
    def add(op, ins, attrs=None, name=None):
        nonlocal at
        v = g.add(op, ins, attrs, source=source, name=f"{x.name}_{name or op}", index=at)
        at += 1
        return v

    first = at
    amax = add("max", [add("abs", [x])], {"axes": [-1], "keepdims": True}, "amax")
    scale = add("maximum", [add("div", [amax, g.add_const(np.float32(127.0), "q127")]),
                            g.add_const(np.float32(1e-12), "tiny")], name="scale")
    zero = g.add_const(np.int32(128), "zp128")  # symmetric, stored as u8 around 128 (what VNNI multiplies)
    q = add("quantize", [x, scale, zero], {"dtype": "u8"}, "q")
    dq = add("dequantize", [q, scale, zero], name="dq")
    # one kernel, one pass over each row: its max |x|, its scale (a second output) and its u8 values
    fuse_nodes(g, g.nodes[first:at - 1], "quantize_rows", amax.producer)
    return dq
