"""int8_weight_layout: lay the i8 weights of integer conv and linear layers out in the tiles the CPU's int8 dot
product reads, once, at compile time.

An int8 dot-product instruction multiplies ``g`` consecutive u8 inputs by ``g`` i8 weights of each of ``v`` outputs and
adds each group's sum into one of ``v`` int32 lanes: VNNI's ``vpdpbusd`` (AVX-512: v=16, AVX-VNNI: v=8; g=4), AVX2's
``vpmaddubsw`` + ``vpmaddwd`` (v=8, g=4; v=16 on AVX-512 without VNNI; exact only for weights with |w| <= 64, which the
quantizers give such targets), AVX2's ``vpmaddwd`` on widened pairs (v=8, g=2; any weights), or ARM's ``sdot`` (v=4,
g=4; i8 inputs). Its weight operand is one [v, g] tile, so the weight is packed as ``oi<v>o<g>i`` = [out/v, in/g, v, g]
(linear) or ``OIHW<v>o<g>i`` = [O/v, I/g, KH, KW, v, g] (conv), and ``nchwc_layout`` then blocks the conv's input in
channel blocks of whole groups. ``schedule_int8`` tensorizes the kernels. A conv on fewer channels than a group (an RGB
image) gets zero weights and a zero-padded input channel. Each layer takes the best instruction whose lanes divide its
outputs and that is exact for its weights (AVX-512 CPUs also run the 8-lane VNNI-256 form, for 24 or 40 channels; an
AVX2 layer with 8-bit weights, e.g. scales learned by QAT, takes ``vpmaddwd``). Targets without such an instruction
(``Target.int8_dots()`` is empty) keep the plain layouts.

Each packed layer names its instruction in its ``int8_dot`` attribute ("vnni512", "avx2-ubsw"...), which the CPU
schedule tensorizes with and the verifier checks the stored weights against.

Requires: ``unfused``; runs after ``fold_quantized`` (its integer kernels). Guarantees: ``int8_weights_laid_out``.

Before:
    %y_acc: i32[4,32] = linear(%x_q, %w_q) {"weight_layout": "oi"}           # %w_q: i8[32,64]
After (AVX-512 VNNI):
    %y_acc: i32[4,32] = linear(%x_q, %w_q_oi16o4i) {"weight_layout": "oi16o4i", "int8_dot": "vnni512"}  # i8[2,16,16,4]
"""

from __future__ import annotations

import numpy as np

from edgeopt.ir import Graph, Node
from edgeopt.ir.ops._common import largest_magnitude
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


def layer_int8_dot(n: Node, w_shape: tuple, dots, x_dtype: str, w_max: int) -> tuple[str, int, int] | None:
    """The instruction (``(intrinsic, lanes, group)`` of ``dots``, the target's ``int8_dots()``) that this pass runs
    integer layer ``n`` on, given its weight's shape in the layer's plain layout, its activations' dtype and its
    largest |weight|; None where it stays plain vector code (a depthwise conv, a matmul, a shape no instruction
    fits). The quantizers ask it too, to give 7-bit weights only to layers that an instruction needing them runs."""
    from edgeopt.lower.int8_dot import activation_dtype, is_depthwise, weight_limit

    # u8 on x86, i8 for ARM's SDOT; a dense layer's (the depthwise ones sum window taps: depthwise_int8_taps)
    dots = [d for d in dots if activation_dtype(d[0]) == x_dtype and not is_depthwise(d[0])]
    if n.op == "linear" and n.attrs["weight_layout"] in ("oi", "io"):
        outputs, inputs = w_shape if n.attrs["weight_layout"] == "oi" else w_shape[::-1]
    elif (n.op == "conv2d" and n.attrs["weight_layout"] == "OIHW" and n.attrs["groups"] == 1
          and n.attrs["layout"] == "NCHW"):
        outputs, inputs = w_shape[:2]
        if dots and inputs % dots[-1][2]:  # an image's 3 channels: padded to whole groups
            inputs += -inputs % max(grp for _, _, grp in dots)
    else:
        return None
    # the best one whose lanes divide the outputs (24 or 40 channels: 8-lane VNNI-256) and that is exact for these
    # weights (AVX2's vpmaddubsw saturates past |w| = 64)
    return next(((name, v, grp) for name, v, grp in dots
                 if outputs % v == 0 and inputs % grp == 0 and w_max <= weight_limit(name)), None)


def target_activation_dtype(target) -> str:
    """The dtype integer layers' activations take on ``target``: u8 (what x86's dot products multiply), or i8 where
    its best dot product takes signed values (ARM's SDOT)."""
    from edgeopt.lower.int8_dot import activation_dtype

    dots = target.int8_dots() if target is not None else []
    return activation_dtype(dots[0][0]) if dots else "u8"


def weight_levels(n: Node, w_shape: tuple, target, x_dtype: str, reduce_range) -> int:
    """The largest int8 level a quantizer gives layer ``n``'s weight (shape ``w_shape``, plain layout) on ``target``
    (activations ``x_dtype``): 127, or 7-bit (``edgeopt.quant.weights.weight_qmax``) where this pass will run it on an
    instruction exact only for such weights (AVX2's vpmaddubsw), or on any dot product with ``reduce_range=True``.
    A depthwise conv, a matmul, an embedding table and a shape no instruction fits keep 127."""
    from edgeopt.lower.int8_dot import weight_limit
    from edgeopt.quant.weights import weight_qmax

    qmax = weight_qmax(reduce_range, target)
    if qmax == 127:
        return 127
    dot = layer_int8_dot(n, w_shape, target.int8_dots() if target is not None else [], x_dtype, qmax)
    if dot is None or (reduce_range == "auto" and weight_limit(dot[0]) > qmax):
        return 127
    return qmax


@register_pass
class Int8WeightLayout(Pass):
    name = "int8_weight_layout"
    requires = ("unfused",)
    guarantees = ("int8_weights_laid_out",)

    def run(self, g: Graph) -> dict:
        from edgeopt.lower.int8_dot import path_name

        dots = self.target.int8_dots() if self.target is not None else []
        used: dict[str, int] = {}
        for n in g.nodes:
            if not _integer(g, n):
                continue
            w = g.const(n.inputs[1])
            w_max = largest_magnitude(w)
            fit = layer_int8_dot(n, w.shape, dots, n.inputs[0].type.dtype, w_max)
            if fit is None:
                continue
            name, v, grp = fit
            if n.op == "linear":
                w_oi = w if n.attrs["weight_layout"] == "oi" else w.T
                layout, arr = f"oi{v}o{grp}i", pack_linear_weight_groups(w_oi, v, grp)
            else:
                if w.shape[1] % grp:  # an image's 3 channels: pad to whole groups
                    w = _pad_input_channels(g, n, w, grp)
                layout, arr = f"OIHW{v}o{grp}i", pack_conv_weight(w, v, grp)
            n.inputs[1] = g.add_const(arr, f"{n.inputs[1].name}_{layout}")
            n.attrs["weight_layout"] = layout
            n.attrs["int8_dot"] = path_name(name)
            used[name] = used.get(name, 0) + 1
        g.remove_unused_constants()
        return {"packed": sum(used.values()), "instructions": used}
