"""depthwise_int8_taps: widen an integer depthwise conv's window rows to whole groups of 4 taps, so that one int8 dot
product sums 4 taps of 16 channels.

A depthwise conv has nothing for a dot product to sum across channels: each output channel reads one input channel.
It can sum along the window instead. In NCHW16c, 4 neighbouring pixels of one input row are 64 contiguous bytes,
[4 taps, 16 channels], and so are 4 taps of an "OIHW16o" weight row; one ``vpermb`` (AVX512-VBMI) transposes each
to [16 channels, 4 taps] and one ``vpdpbusd`` sums the 4 products of every channel into its int32 lane
(``edgeopt.lower.int8_dot.VNNI512_DW``); ARM's ``sdot`` does the same for 4 channels after one ``tbl`` (``SDOT_DW``,
NCHW4c, i8 activations). A 3x3 window takes 3 ``vpermb`` and 3 ``vpdpbusd`` per 16 outputs on x86 (the weight's
``vpermb`` shared by a run of pixels) instead of 9 multiplies and 9 adds. Its rows are 3 taps, so this pass gives
each row a 4th whose weight is zero, and the conv one more column of padding on the right to read it from: every
output is the same sum (the padding value times a zero weight).

Requires: ``integer_kernels``, ``nchwc_layout`` (the blocked input and packed "OIHW<v>o" weight), ``unfused``.
Guarantees: ``depthwise_int8_taps``. Applies where the target has such an instruction (``Target.int8_dots()``:
AVX512-VNNI with VBMI; ARM's dot product) to integer depthwise convs (i32 sums, no bias input) that name no
``int8_dot`` yet, with a constant i8 weight, activations of the instruction's dtype in blocks of its lanes, and
dilation 1 along the width; names it in the conv's ``int8_dot`` attribute ("vnni512-dw", "sdot-dw"), which the CPU
schedule tensorizes with. Convs that share a weight share its widened copy.

Before (144 channels, 3x3, stride 1):
    %y: i32[1,9,56,56,16] = conv2d(%x_q, %w_OIHW16o) {"groups": 144, "padding": [1, 1, 1, 1], "layout": "NCHWc",
                                                   "weight_layout": "OIHW16o", ...}     # %w_OIHW16o: i8[9,1,3,3,16]
After:
    %y: i32[1,9,56,56,16] = conv2d(%x_q, %w_OIHW16o_taps4) {"groups": 144, "padding": [1, 1, 1, 2], ...,
                                                          "int8_dot": "vnni512-dw"}   # i8[9,1,3,4,16], [..., 3, :] = 0
"""

from __future__ import annotations

import numpy as np

from edgeopt.ir import Graph, Node
from edgeopt.ir.ops._common import INT8_DOTS
from edgeopt.ir.ops.layout import BLOCKED
from edgeopt.ir.ops.nn import conv_weight_block, conv_weight_group
from edgeopt.pipeline import Pass, register_pass


def _instruction(g: Graph, n: Node, paths: list[str]) -> str | None:
    """The first of ``paths`` (depthwise int8_dot names) that reads integer depthwise conv ``n`` as it is laid out:
    its channel block, its activations' dtype, a constant i8 weight, dilation 1 along the width."""
    a = n.attrs
    if not (n.op == "conv2d" and a["groups"] != 1 and a.get("layout") == BLOCKED and not a.get("int8_dot")
            and not conv_weight_group(a) and a["dilation"][1] == 1 and len(n.inputs) == 2
            and g.is_const(n.inputs[1]) and n.inputs[1].type.dtype == "i8" and n.outputs[0].type.dtype == "i32"):
        return None
    return next((p for p in paths if INT8_DOTS[p][0] == conv_weight_block(a)
                 and INT8_DOTS[p][2] == n.inputs[0].type.dtype), None)


@register_pass
class DepthwiseInt8Taps(Pass):
    name = "depthwise_int8_taps"
    requires = ("integer_kernels", "nchwc_layout", "unfused")
    guarantees = ("depthwise_int8_taps",)

    def run(self, g: Graph) -> dict:
        from edgeopt.lower.int8_dot import is_depthwise, path_name

        paths = [path_name(d[0]) for d in (self.target.int8_dots() if self.target is not None else [])
                 if is_depthwise(d[0])]
        widened, copies = 0, {}  # weight value -> its widened copy
        for n in g.nodes:
            path = _instruction(g, n, paths) if paths else None
            if path is None:
                continue
            taps = INT8_DOTS[path][1]
            w = g.const(n.inputs[1])  # [C/v, 1, KH, KW, v]
            extra = -w.shape[3] % taps
            if extra:
                if n.inputs[1] not in copies:  # zero taps at the end of each row
                    wide = np.pad(w, [(0, 0), (0, 0), (0, 0), (0, extra), (0, 0)])
                    copies[n.inputs[1]] = g.add_const(wide, f"{n.inputs[1].name}_taps{taps}")
                n.inputs[1] = copies[n.inputs[1]]
                top, left, bottom, right = n.attrs["padding"]
                n.attrs["padding"] = [top, left, bottom, right + extra]
            n.attrs["int8_dot"] = path
            widened += 1
        g.remove_unused_constants()
        return {"widened": widened}
