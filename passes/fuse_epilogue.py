"""fuse_epilogue: a convolution, matmul, linear or window pool and the elementwise ops after it: one kernel.

The anchor's result is finished in registers (bias, residual add, ReLU/ReLU6/GELU/SiLU/hardswish/
sigmoid, clamps, scales...) before it is stored, so the intermediate never goes through memory.
Transposes and pads that only feed the anchor join it as its prologue (a transpose followed by a
reshape too).

Requires: nothing. Guarantees: ``epilogues_fused``. Never duplicates work: a joined producer has no
other reader; an epilogue op joins only if it keeps the anchor's output shape (no broadcast growth).

Before:
    %c: f32[1,8,4,4] = conv2d(%x, %w, %b)
    %a: f32[1,8,4,4] = add(%c, %skip)
    %r: f32[1,8,4,4] = relu(%a)
After:
    %r: f32[1,8,4,4] = fused(%x, %w, %b, %skip) {"name": "conv2d_add_relu", "anchor": "conv2d"}
      graph conv2d_add_relu(%x: ..., %w: ..., %b: ..., %skip: ...) {
        %c = conv2d(%x, %w, %b)
        %a = add(%c, %skip)
        %r = relu(%a)
        return %r
      }
"""

from __future__ import annotations

from edgeopt.ir import Graph
from edgeopt.pattern import FusionRule, Op, fuse
from edgeopt.pipeline import Pass, register_pass


def _keeps_shape(group, cand) -> bool:
    """Epilogue ops must not broadcast the anchor's result to a bigger tensor; prologue reshapes must
    follow a transpose (a lone reshape is already a free view)."""
    anchor = group[0].outputs[0].type
    if cand.op == "reshape":
        return cand.inputs[0].producer is not None and cand.inputs[0].producer.op == "transpose"
    if cand.op in ("transpose", "pad"):
        return True
    t = cand.outputs[0].type
    return t.shape == anchor.shape and t.dtype == anchor.dtype


RULE = FusionRule(
    "epilogue",
    anchor=Op(kind="contraction"),
    epilogue=Op(kind="elementwise"),
    prologue=Op(("transpose", "pad", "reshape")),
    where=_keeps_shape,
)
POOL_RULE = FusionRule("pool_epilogue", anchor=Op(("max_pool2d", "avg_pool2d")),
                       epilogue=Op(kind="elementwise"), where=_keeps_shape)


@register_pass
class FuseEpilogue(Pass):
    name = "fuse_epilogue"
    guarantees = ("epilogues_fused",)

    def run(self, g: Graph) -> dict:
        groups = fuse(g, RULE) + fuse(g, POOL_RULE)
        return {"fused_groups": len(groups), "fused_ops": sum(len(n.body.nodes) for n in groups)}
