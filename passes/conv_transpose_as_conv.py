"""conv_transpose_as_conv: a transposed conv whose stride equals its kernel becomes a 1x1 conv and a pixel shuffle.

With stride == kernel (a U-Net's or a decoder's 2x2 / stride-2 upsampling) the windows do not overlap: input
pixel (i, j) alone makes output block (k i .. k i + k-1, k j .. k j + k-1), ``y[o, k i + a, k j + b] = sum_c
x[c, i, j] w[c, o, a, b]``. That is a 1x1 conv to ``O * k * k`` channels, ordered (o, a, b), followed by moving
each pixel's (a, b) channels into its k x k block (a reshape, a transpose, a reshape), and the bias. The 1x1 conv
runs on the tuned, packed conv kernels (and, quantized, on int8 dot products); the shuffle fuses into one
data-movement kernel with the bias and what follows.

Requires: ``unfused``; runs after the folds (BatchNorm into the transposed conv first). Guarantees:
``conv_transpose_rewritten``. Exact up to float summation order. Rewrites only groups=1, dilation 1, no padding,
no output padding, stride == kernel, a constant float weight.

Before:
    %y: f32[1,64,56,56] = conv_transpose2d(%x, %w, %b) {"stride": [2, 2], ...}     # x [1,128,28,28], w [128,64,2,2]
After:
    %y_cols: f32[1,256,28,28] = conv2d(%x, %w_1x1) {...}                             # w_1x1 [256,128,1,1]
    %y_blocks: f32[1,64,2,2,28,28] = reshape(%y_cols) {"shape": [1, 64, 2, 2, 28, 28]}
    %y_moved: f32[1,64,28,2,28,2] = transpose(%y_blocks) {"perm": [0, 1, 4, 2, 5, 3]}
    %y_shuffled: f32[1,64,56,56] = reshape(%y_moved) {"shape": [1, 64, 56, 56]}
    %y: f32[1,64,56,56] = add(%y_shuffled, %b_c11)                                   # b as [1,64,1,1]
"""

from __future__ import annotations

import numpy as np

from edgeopt.ir import Graph, Node
from edgeopt.pipeline import Pass, register_pass


def _rewritable(g: Graph, n: Node) -> bool:
    a = n.attrs
    if n.op != "conv_transpose2d" or a["groups"] != 1 or list(a["dilation"]) != [1, 1] or any(a["padding"]) \
            or any(a["output_padding"]) or not g.is_const(n.inputs[1]) or n.inputs[0].type.rank != 4:
        return False
    w = n.inputs[1].type
    return w.dtype in ("f32", "f16") and list(a["stride"]) == list(w.shape[2:]) and \
        (len(n.inputs) == 2 or g.is_const(n.inputs[2]))


@register_pass
class ConvTransposeAsConv(Pass):
    name = "conv_transpose_as_conv"
    requires = ("unfused",)
    guarantees = ("conv_transpose_rewritten",)

    def run(self, g: Graph) -> dict:
        done = 0
        for n in [n for n in g.nodes if _rewritable(g, n)]:
            self._rewrite(g, n)
            done += 1
        return {"rewritten": done}

    def _rewrite(self, g: Graph, n: Node) -> None:
        x, out, src = n.inputs[0], n.outputs[0], n.source
        w = g.const(n.inputs[1])  # [C, O, KH, KW]
        c, o, kh, kw = w.shape
        batch, _, h, wd = x.type.shape
        cols = np.ascontiguousarray(w.transpose(1, 2, 3, 0).reshape(o * kh * kw, c, 1, 1))  # rows (o, a, b)
        at = g.nodes.index(n)
        weight = g.add_const(cols, f"{n.inputs[1].name}_1x1")
        conv_attrs = {"stride": [1, 1], "padding": [0, 0, 0, 0], "dilation": [1, 1], "groups": 1}
        y = g.add("conv2d", [x, weight], conv_attrs, source=src, name=f"{out.name}_cols", index=at)
        y = g.add("reshape", [y], {"shape": [batch, o, kh, kw, h, wd]}, source=src, name=f"{out.name}_blocks",
                  index=at + 1)
        y = g.add("transpose", [y], {"perm": [0, 1, 4, 2, 5, 3]}, source=src, name=f"{out.name}_moved", index=at + 2)
        y = g.add("reshape", [y], {"shape": [batch, o, h * kh, wd * kw]}, source=src, name=f"{out.name}_shuffled",
                  index=at + 3)
        if len(n.inputs) == 3:
            bias = g.add_const(g.const(n.inputs[2]).reshape(1, o, 1, 1), f"{n.inputs[2].name}_c11")
            y = g.add("add", [y, bias], source=src, name=f"{out.name}_bias", index=at + 4)
        g.replace_uses(out, y)
        g.nodes.remove(n)
        g.remove_unused_constants()
