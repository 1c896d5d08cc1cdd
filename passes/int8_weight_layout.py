"""int8_weight_layout: lay the i8 weights of integer conv and linear layers out in the tiles the CPU's int8 dot
product reads, once, at compile time.

An int8 dot-product instruction multiplies ``g`` consecutive u8 inputs by ``g`` i8 weights of each of ``v`` outputs
and adds each group's sum into one of ``v`` int32 lanes: VNNI's ``vpdpbusd`` (AVX-512: v=16, AVX-VNNI: v=8; g=4),
AVX2's ``vpmaddubsw`` + ``vpmaddwd`` (v=8, g=4; exact only for weights with |w| <= 64, which the quantizers give
AVX2 targets), AVX2's ``vpmaddwd`` on widened pairs (v=8, g=2; any weights), or ARM's ``sdot`` (v=4, g=4; i8
inputs). Its weight operand is one [v, g] tile, so the weight is packed as ``oi<v>o<g>i`` = [out/v, in/g, v, g]
(linear) or ``OIHW<v>o<g>i`` = [O/v, I/g, KH, KW, v, g] (conv), and ``nchwc_layout`` then blocks the conv's input
in channel blocks of whole groups. ``schedule_int8`` tensorizes the kernels. A conv on fewer channels than a group
(an RGB image) gets zero weights and a zero-padded input channel. Each layer takes the best instruction whose lanes
divide its outputs and that is exact for its weights (AVX-512 CPUs also run the 8-lane VNNI-256 form, for 24 or 40
channels; an AVX2 layer with 8-bit weights, e.g. scales learned by QAT, takes ``vpmaddwd``). Targets without such
an instruction (``Target.int8_dots()`` is empty) keep the plain layouts.

Requires: ``unfused``; runs after ``fold_quantized`` (its integer kernels). Guarantees: ``int8_weights_laid_out``.

Before:
    %y_acc: i32[4,32] = linear(%x_q, %w_q) {"weight_layout": "oi"}           # %w_q: i8[32,64]
After (AVX-512 VNNI):
    %y_acc: i32[4,32] = linear(%x_q, %w_q_oi16o4i) {"weight_layout": "oi16o4i"}   # i8[2,16,16,4]
"""

from __future__ import annotations

import numpy as np

from edgeopt.ir import Graph, Node
from edgeopt.ir.ops.linalg import pack_linear_weight_groups
from edgeopt.ir.ops.nn import pack_conv_weight
from edgeopt.pipeline import Pass, register_pass


def _integer(g: Graph, n: Node) -> bool:
    return (n.outputs[0].type.dtype == "i32" and len(n.inputs) == 2 and g.is_const(n.inputs[1])
            and n.inputs[0].type.dtype in ("u8", "i8") and n.inputs[1].type.dtype == "i8")


def _pad_input_channels(g: Graph, n: Node, w, grp: int):
    """Give conv ``n`` whole groups of ``grp`` input channels: zero weights for the extra ones, and its input padded
    with zeros along the channels (any value would do: it meets zero weights). Returns the padded weight."""
    extra = -w.shape[1] % grp
    w = np.concatenate([w, np.zeros((w.shape[0], extra, *w.shape[2:]), w.dtype)], axis=1)
    x = n.inputs[0]
    n.inputs[0] = g.add("pad", [x], {"pads": [0, 0, 0, extra, 0, 0, 0, 0], "value": 0}, source=n.source,
                        name=f"{x.name}_channels", index=g.nodes.index(n))
    return w


@register_pass
class Int8WeightLayout(Pass):
    name = "int8_weight_layout"
    requires = ("unfused",)
    guarantees = ("int8_weights_laid_out",)

    def run(self, g: Graph) -> dict:
        from edgeopt.lower.int8_dot import activation_dtype, weight_limit

        all_dots = self.target.int8_dots() if self.target is not None else []
        used: dict[str, int] = {}
        for n in g.nodes:
            if not _integer(g, n):
                continue
            dots = [d for d in all_dots if activation_dtype(d[0]) == n.inputs[0].type.dtype]  # u8 x86, i8 SDOT
            w = g.const(n.inputs[1])
            if n.op == "linear" and n.attrs["weight_layout"] in ("oi", "io"):
                w_oi = w if n.attrs["weight_layout"] == "oi" else w.T
            elif (n.op == "conv2d" and n.attrs["weight_layout"] == "OIHW" and n.attrs["groups"] == 1
                  and n.attrs["layout"] == "NCHW"):
                if dots and w.shape[1] % dots[-1][2]:  # an image's 3 channels: pad to whole groups
                    w = _pad_input_channels(g, n, w, max(grp for _, _, grp in dots))
                w_oi = w
            else:
                continue
            # the best instruction whose lanes divide the outputs (24 or 40 channels: 8-lane VNNI-256) and that is
            # exact for these weights (AVX2's vpmaddubsw saturates on |w| > 64)
            w_max = int(np.abs(w_oi.astype(np.int16)).max(initial=0))
            fit = next(((name, v, grp) for name, v, grp in dots if w_oi.shape[0] % v == 0 and w_oi.shape[1] % grp == 0
                        and w_max <= weight_limit(name)), None)
            if fit is None:
                continue
            name, v, grp = fit
            if n.op == "linear":
                layout, arr = f"oi{v}o{grp}i", pack_linear_weight_groups(w_oi, v, grp)
            else:
                layout, arr = f"OIHW{v}o{grp}i", pack_conv_weight(w, v, grp)
            n.inputs[1] = g.add_const(arr, f"{n.inputs[1].name}_{layout}")
            n.attrs["weight_layout"] = layout
            used[name] = used.get(name, 0) + 1
        g.remove_unused_constants()
        return {"packed": sum(used.values()), "instructions": used}
