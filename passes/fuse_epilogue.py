"""fuse_epilogue: a convolution, matmul, linear or window pool and the elementwise ops after it: one kernel.

The anchor's result is finished in registers (bias, ReLU/ReLU6/GELU/SiLU/hardswish/sigmoid, clamps,
scales, and for matmul and linear a residual add...) before it is stored, so the intermediate never
goes through memory. A plain NCHW conv's residual add is left to ``fuse_elementwise`` (see ``_keeps_shape``).
Transposes, pads, slices (not along the last axis) and layout transforms that only feed the anchor join it as its
prologue (a transpose followed by a reshape too): the conv then reads the image straight from NCHW. So does a
``dequantize`` of an int8 or int4 weight (or activation): the kernel reads the narrow values and widens them in
registers.

Invalidates: ``unfused`` (its ops move into fused kernels, where pattern passes no longer see them).
Requires: nothing. Guarantees: ``epilogues_fused``. Never duplicates work: a joined producer has no
other reader; an epilogue op joins only if it keeps the anchor's output shape (no broadcast growth).

Before:
    %l: f32[4,8] = linear(%x, %w, %b) {"weight_layout": "io"}
    %a: f32[4,8] = add(%l, %skip)
    %r: f32[4,8] = relu(%a)
After:
    %r: f32[4,8] = fused(%x, %w, %b, %skip) {"name": "linear_add_relu", "anchor": "linear"}
      graph linear_add_relu(%x: ..., %w: ..., %b: ..., %skip: ...) {
        %l = linear(%x, %w, %b)
        %a = add(%l, %skip)
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
    follow a transpose (a lone reshape is already a free view). A conv on plain NCHW does not take a second
    full-size activation (a residual) into its epilogue: its register-tile store would read it a few pixels of
    a few channel planes at a time, and a separate elementwise kernel that streams it was measured faster
    (ResNet-18: 1.05x; MobileNetV2, EfficientNet-Lite0: even). A blocked (NCHWc) conv stores and reads whole
    channel vectors and keeps its residual, as matmul and linear do."""
    anchor = group[0].outputs[0].type
    epilogue = any(v.producer in group for v in cand.inputs)
    if epilogue and group[0].op == "conv2d" and group[0].attrs["layout"] == "NCHW" and any(
            v.type.shape == anchor.shape and v.producer not in group for v in cand.inputs):
        return False
    if cand.op == "reshape":
        return cand.inputs[0].producer is not None and cand.inputs[0].producer.op == "transpose"
    if cand.op in ("transpose", "pad", "layout_transform"):
        return True
    if cand.op == "slice":  # whole rows of another tensor (a 3-d conv's depth tap): read by the kernel itself
        return cand.attrs["axis"] % cand.outputs[0].type.rank != cand.outputs[0].type.rank - 1
    if cand.op == "dequantize" and not epilogue:  # int8/int4 weights or activations: widened in registers as the
        return True                                 # kernel reads them
    t = cand.outputs[0].type
    if cand.op == "quantize" or anchor.dtype == "i32":  # requantizing an integer kernel's sums, storing the next
        return t.shape == anchor.shape                   # layer's int8 input narrow straight from the registers
    return t.shape == anchor.shape and t.dtype == anchor.dtype


RULE = FusionRule(
    "epilogue",
    anchor=Op(kind="contraction"),
    epilogue=Op(kind="elementwise"),
    prologue=Op(("transpose", "pad", "reshape", "slice", "layout_transform", "dequantize")),
    where=_keeps_shape,
)
POOL_RULE = FusionRule("pool_epilogue", anchor=Op(("max_pool2d", "avg_pool2d")),
                       epilogue=Op(kind="elementwise"), where=_keeps_shape)


@register_pass
class FuseEpilogue(Pass):
    name = "fuse_epilogue"
    guarantees = ("epilogues_fused",)
    invalidates = ("unfused",)

    def run(self, g: Graph) -> dict:
        groups = fuse(g, RULE) + fuse(g, POOL_RULE)
        return {"fused_groups": len(groups), "fused_ops": sum(len(n.body.nodes) for n in groups)}
