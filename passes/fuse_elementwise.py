"""fuse_elementwise: chains and trees of elementwise and injective ops (with broadcasting) into one kernel.

Invalidates: ``unfused`` (its ops move into fused kernels, where pattern passes no longer see them).
Requires: nothing. Guarantees: ``elementwise_fused``. Run after the epilogue and reduction fusions so
that heavy kernels claim their neighbours first. A producer joins only if all its readers are in the
group (nothing is computed twice for different kernels); a producer that is read more than once inside
the group, or broadcast to a bigger shape, is recomputed per read, so it must be ``cheap`` (an op trait). Lone
reshapes stay out (they are free views).

Before:
    %a: f32[1,16,384] = add(%x, %y)
    %b: f32[1,16,384] = mul(%a, %scale)
    %c: f32[1,16,384] = tanh(%b)
After:
    %c: f32[1,16,384] = fused(%x, %y) {"name": "add_mul_tanh", "anchor": "add"}
      graph add_mul_tanh(%x, %y) { const %scale ...  %a = add  %b = mul  %c = tanh  return %c }
"""

from __future__ import annotations

from edgeopt.ir import Graph
from edgeopt.ir.registry import get_op
from edgeopt.pattern import FusionRule, Op, fuse
from edgeopt.pipeline import Pass, register_pass


def _cheap(n) -> bool:
    return get_op(n.op).cheap


def _no_recompute(group, cand) -> bool:
    out = cand.outputs[0]
    reads = sum(v is out for n in group for v in n.inputs)
    biggest = max(n.outputs[0].type.numel for n in group)
    if reads == 0:  # an epilogue op: if it broadcasts the group bigger, the group is recomputed per element
        return out.type.numel <= biggest or all(_cheap(n) for n in group)
    if _cheap(cand):
        return True
    return reads == 1 and out.type.numel >= biggest


ELEMENTWISE = Op(kind=("elementwise", "injective"), where=lambda n: n.op != "reshape")
RULE = FusionRule("elementwise", anchor=ELEMENTWISE, prologue=Op(kind=("elementwise", "injective")),
                  epilogue=Op(kind=("elementwise", "injective")), where=_no_recompute)


@register_pass
class FuseElementwise(Pass):
    name = "fuse_elementwise"
    guarantees = ("elementwise_fused",)
    invalidates = ("unfused",)

    def run(self, g: Graph) -> dict:
        groups = fuse(g, RULE)
        return {"fused_groups": len(groups), "fused_ops": sum(len(n.body.nodes) for n in groups)}
