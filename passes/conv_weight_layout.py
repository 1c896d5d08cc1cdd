"""conv_weight_layout: pack constant conv2d weights into output-channel blocks, once, at compile time.

A conv kernel computes ``v`` output channels at once, one SIMD vector, for a few output pixels; with
torch's OIHW layout each weight vector would be ``v`` loads ``I*KH*KW`` elements apart. The packed
layout ``OIHW<v>o`` is ``[O/v, I, KH, KW, v]``: the vector is contiguous and a block's weights are read
as one sequential stream. ``v`` is the target's fp32 vector width (8 with AVX2, 16 with AVX-512, 4
with NEON), or the largest power of two >= 4 below it that divides O.

Requires: ``unfused`` (run it after BatchNorm / affine folding, which rescale OIHW weights).
Guarantees: ``conv_weights_packed`` (every groups=1 conv2d with a constant fp32 weight and O divisible
by 4 has a packed weight).

Before:
    const %w: f32[16,3,3,3]
    %y: f32[1,16,8,8] = conv2d(%x, %w) {"groups": 1, "weight_layout": "OIHW", ...}
After (AVX2):
    const %w_OIHW8o: f32[2,3,3,3,8]
    %y: f32[1,16,8,8] = conv2d(%x, %w_OIHW8o) {"groups": 1, "weight_layout": "OIHW8o", ...}
"""

from __future__ import annotations

from edgeopt.ir import Graph
from edgeopt.ir.ops.nn import pack_conv_weight
from edgeopt.pipeline import Pass, register_pass

DEFAULT_LANES = 8


def block_size(out_channels: int, lanes: int) -> int:
    """The widest block <= ``lanes`` (a power of two, at least 4) that divides ``out_channels``; 0: none."""
    v = lanes
    while v >= 4 and out_channels % v:
        v //= 2
    return v if v >= 4 else 0


@register_pass
class ConvWeightLayout(Pass):
    name = "conv_weight_layout"
    requires = ("unfused",)
    guarantees = ("conv_weights_packed",)

    def run(self, g: Graph) -> dict:
        lanes = self.target.vector_lanes(32) if self.target is not None else DEFAULT_LANES
        done: dict[tuple[str, int], object] = {}
        count = 0
        for n in g.nodes:
            if n.op != "conv2d" or n.attrs["groups"] != 1 or n.attrs["weight_layout"] != "OIHW":
                continue
            w = n.inputs[1]
            if not g.is_const(w) or w.type.dtype != "f32":
                continue
            v = block_size(w.type.shape[0], lanes)
            if not v:
                continue
            if (w.name, v) not in done:
                done[w.name, v] = g.add_const(pack_conv_weight(g.const(w), v), f"{w.name}_OIHW{v}o")
            n.inputs[1] = done[w.name, v]
            n.attrs["weight_layout"] = f"OIHW{v}o"
            count += 1
        g.remove_unused_constants()
        return {"packed": count}
