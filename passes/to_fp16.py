"""to_fp16: compute in half precision where it is safe, keep float32 where it is not (``precision="fp16"``).

Close to PyTorch autocast's split: most ops (convolutions, linear layers, elementwise math, data movement)
take and produce ``f16``; the ops whose ``fp16`` trait is ``"f32"`` (reductions over many elements,
normalizations, softmax, and the math that overflows or loses precision in f16: ``exp``, ``log``, ``pow``,
``rsqrt``, ``reciprocal``) read their f16 inputs as f32 and their results are stored as f16. Unlike autocast,
attention and batch_norm stay f32 too (a masked score of -65504 plus a score overflows f16). Convolutions and
matrix products accumulate in f32, and transcendental activations are evaluated in f32 (their lowering rules
do that for f16).

- **Weights**: float32 constants become f16. Values beyond f16's range (65504) saturate to it, and are
  counted (``saturated``): a ``-3.4e38`` attention-mask fill becomes ``-65504``, which still zeroes the
  softmax, where ``-inf`` could make a fully masked row NaN.
- **The boundary stays float32**: an f32 graph input is cast to f16 right after it, and an output that became
  f16 is cast back, so callers see the dtypes of the model they exported (an input, or the result of a kept op
  such as a final layer norm, is returned as it is; a weight returned as an output comes back rounded to f16).
- Casts to ``f32`` inside the graph (e.g. of an integer mask) become casts to ``f16``.
- **Quantized models** (``quantize=`` with ``precision="fp16"``: int8 / int4 weights, f16 compute): a
  ``dequantize`` gives f16 (its weights are widened in registers, as in f32), and quantization parameters (scales,
  minimums, multipliers, offsets) stay f32, constants or computed.

Requires: ``unfused``; runs on plain nodes, after ``fuse_attention`` (its casts would hide the attention pattern) and
before the passes that group nodes into kernels. Guarantees: ``fp16``.

Before:
    %y: f32[1,8] = linear(%x, %w, %b) {"weight_layout": "oi"}
    %z: f32[1,8] = softmax(%y) {"axis": -1}
    return %z
After:
    %x_f16: f16[1,4] = cast(%x) {"dtype": "f16"}
    %y: f16[1,8] = linear(%x_f16, %w, %b) {"weight_layout": "oi"}        # %w, %b: f16 constants
    %y_f32: f32[1,8] = cast(%y) {"dtype": "f32"}
    %z: f32[1,8] = softmax(%y_f32) {"axis": -1}
    %z_f16: f16[1,8] = cast(%z) {"dtype": "f16"}
    %z_f16_f32: f32[1,8] = cast(%z_f16) {"dtype": "f32"}
    return %z_f16_f32
(``remove_noops`` does not cancel the last pair: the round trip through f16 is what the f16 model computes.)
"""

from __future__ import annotations

import numpy as np

from edgeopt.errors import PassError
from edgeopt.ir import Graph, Value
from edgeopt.ir.registry import get_op
from edgeopt.ir.types import TensorType
from edgeopt.pipeline import Pass, register_pass

F16_MAX = float(np.finfo(np.float16).max)


def _cast(g: Graph, v: Value, dtype: str, source: str | None) -> Value:
    return g.add("cast", [v], {"dtype": dtype}, source=source, name=f"{v.name}_{dtype}")


#: ops whose inputs after the first are quantization parameters: scales, minimums, multipliers, offsets (f32)
QUANT_OPS = ("quantize", "dequantize", "requantize")


def _quant_params(g: Graph) -> set[Value]:
    """The constants read only as quantization parameters: they stay f32 (the ops compute in f32)."""
    uses: dict[Value, list[bool]] = {}
    for n in g.nodes:
        for i, v in enumerate(n.inputs):
            uses.setdefault(v, []).append(n.op in QUANT_OPS and i >= 1)
    return {v for v, params in uses.items() if g.is_const(v) and all(params)}


def _weights_to_f16(g: Graph) -> tuple[int, int]:
    converted = saturated = 0
    params = _quant_params(g)
    for name, arr in list(g.constants.items()):
        v = g.const_values[name]
        if v.type.dtype != "f32" or v in params:
            continue
        big = np.abs(arr) > F16_MAX
        saturated += int(np.count_nonzero(big & np.isfinite(arr)))
        g.constants[name] = np.array(np.clip(arr, -F16_MAX, F16_MAX) if big.any() else arr, dtype=np.float16)
        v.type = TensorType(v.type.shape, "f16")
        converted += 1
    return converted, saturated


@register_pass
class ToFp16(Pass):
    name = "to_fp16"
    requires = ("unfused",)
    guarantees = ("fp16",)

    def run(self, g: Graph) -> dict:
        if any(n.body is not None for n in g.nodes):
            raise PassError("to_fp16 runs on plain nodes: put it before fuse_epilogue and the other grouping passes")
        boundary = [v.type.dtype for v in g.outputs]  # what callers get back, before anything is retyped
        weights, saturated = _weights_to_f16(g)
        nodes, g.nodes = g.nodes, []
        now: dict[Value, Value] = {}  # a value -> the value readers use instead
        for v in g.inputs:
            if v.type.dtype == "f32":
                now[v] = _cast(g, v, "f16", None)
        kept = 0
        for n in nodes:
            ins = [now.get(v, v) for v in n.inputs]
            keep = get_op(n.op).fp16 == "f32" and any(o.type.dtype == "f32" for o in n.outputs)
            if keep:
                ins = [_cast(g, v, "f32", n.source) if v.type.dtype == "f16" else v for v in ins]
                kept += 1
            elif n.op == "cast" and n.attrs["dtype"] == "f32":
                n.attrs["dtype"] = "f16"
            elif n.op in QUANT_OPS:  # f16 values in, f32 parameters, f16 out (a dequantized weight: in registers)
                ins = ins[:1] + [_cast(g, v, "f32", n.source) if v.type.dtype == "f16" else v for v in ins[1:]]
                if n.op == "dequantize":
                    n.attrs["dtype"] = "f16"
            n.inputs = ins
            for o, t in zip(n.outputs, get_op(n.op).infer([v.type for v in ins], n.attrs)):
                o.type = t
            g.nodes.append(n)
            if keep:
                for o in n.outputs:
                    if o.type.dtype == "f32":
                        now[o] = _cast(g, o, "f16", n.source)
        outs = []
        for v, dtype in zip(g.outputs, boundary):
            v2 = v if v.type.dtype == dtype else now.get(v, v)  # still f32 (an input, a kept op's result): as is
            outs.append(_cast(g, v2, dtype, None) if v2.type.dtype != dtype else v2)
        g.outputs = outs
        return {"weights": weights, "saturated": saturated, "kept_f32": kept}
