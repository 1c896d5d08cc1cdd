"""fuse_reductions: softmax, LayerNorm and other reductions with their elementwise prologue and epilogue.

A reduction kernel reads its input several times (max, sum, normalize); cheap elementwise producers
(a residual add before LayerNorm, the scale and mask before softmax) are recomputed on each read
instead of being stored, and elementwise ops after the reduction are applied before the store.

Invalidates: ``unfused`` (its ops move into fused kernels, where pattern passes no longer see them).
Requires: nothing. Guarantees: ``reductions_fused``. Anchors: ops with the ``row_reduction`` trait. Only ``cheap``
elementwise ops (an op trait) join as prologue (recomputing
them is cheaper than a round trip through memory); epilogue ops keep the reduction's output shape and dtype (a
``quantize`` only its shape: static int8's LayerNorm stores u8).

Before:
    %a: f32[1,16,384] = add(%h, %skip)
    %n: f32[1,16,384] = layer_norm(%a, %g, %b) {"normalized_ndim": 1, "eps": 1e-12}
After:
    %n: f32[1,16,384] = fused(%h, %skip, %g, %b) {"name": "add_layer_norm", "anchor": "layer_norm"}
      graph add_layer_norm(...) { %a = add(...)  %n = layer_norm(%a, ...)  return %n }
"""

from __future__ import annotations

from edgeopt.ir import Graph
from edgeopt.ir.registry import get_op
from edgeopt.pattern import FusionRule, Op, fuse
from edgeopt.pipeline import Pass, register_pass

#: the kernels' anchors: reductions along rows (op trait ``row_reduction``: softmax, layer_norm, sum...)
ANCHOR = Op(kind="reduction", where=lambda n: get_op(n.op).row_reduction)
#: prologue: elementwise ops cheap enough to recompute on every read of a reduction's input (op trait ``cheap``)
PROLOGUE = Op(kind="elementwise", where=lambda n: get_op(n.op).cheap)


def _fits(group, cand) -> bool:
    anchor = group[0]
    if cand.outputs[0] in {v for n in group for v in n.inputs}:  # a prologue op
        return True
    out, want = cand.outputs[0].type, anchor.outputs[0].type
    # the reduction's shape; its dtype too, except for a quantize (LayerNorm's output stored as u8 for the next layer)
    return out == want or cand.op == "quantize" and out.shape == want.shape


RULE = FusionRule("reduction", anchor=ANCHOR, prologue=PROLOGUE, epilogue=Op(kind="elementwise"),
                  where=_fits)


@register_pass
class FuseReductions(Pass):
    name = "fuse_reductions"
    guarantees = ("reductions_fused",)
    invalidates = ("unfused",)

    def run(self, g: Graph) -> dict:
        groups = fuse(g, RULE)
        return {"fused_groups": len(groups), "fused_ops": sum(len(n.body.nodes) for n in groups)}
