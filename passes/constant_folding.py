"""constant_folding: evaluate nodes whose inputs are all constants, at compile time.

Weight-only subgraphs (a transpose or reshape of a weight, shape arithmetic on constant tensors, casts
of constant masks...) become plain constants. A fold never grows the weights much: the result may be
at most as many bytes as the largest input, or at most ``MAX_FOLD_GROWTH_BYTES`` (a broadcast of a scalar to
a big tensor, or an int8 weight widened to int32 for an integer matmul, stays a kernel).

Requires: nothing. Guarantees: ``constants_folded`` (no node reads only constants, except those whose result
would grow the weights).

Before:
    const %w: f32[4,8]
    %t: f32[8,4] = transpose(%w) {"perm": [1, 0]}
    %y: f32[1,4] = matmul(%x, %t)
After:
    const %t: f32[8,4]
    %y: f32[1,4] = matmul(%x, %t)
"""

from __future__ import annotations

import numpy as np

from edgeopt.ir import Graph, get_op
from edgeopt.ir.graph import fold_keeps_weights_small
from edgeopt.pipeline import Pass, register_pass


@register_pass
class ConstantFolding(Pass):
    name = "constant_folding"
    guarantees = ("constants_folded",)

    def run(self, g: Graph) -> dict:
        folded = 0
        for n in list(g.nodes):
            if n.body is not None or not n.inputs or not all(g.is_const(v) for v in n.inputs):
                continue
            if any(o in g.outputs for o in n.outputs):  # a graph output stays computed (outputs are not weights)
                continue
            if not all(fold_keeps_weights_small(o.type.nbytes, [v.type.nbytes for v in n.inputs]) for o in n.outputs):
                continue
            results = get_op(n.op).reference([g.const(v) for v in n.inputs], n.attrs)
            for o, arr in zip(n.outputs, results):
                c = g.add_const(np.array(arr, dtype=o.type.np_dtype, order="C"), o.name + "_folded")  # keeps rank 0
                g.replace_uses(o, c)
            g.nodes.remove(n)
            folded += 1
        g.remove_unused_constants()
        return {"folded": folded}
