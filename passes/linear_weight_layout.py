"""linear_weight_layout: store constant linear weights as [in, out] so kernels read them contiguously.

The kernel of ``linear`` vectorizes over output features; with torch's [out, in] layout each vector
would gather ``out`` strided loads. The transpose is done once here, at compile time, on the constant.

Requires: nothing. Guarantees: ``linear_weights_io`` (every linear with a constant weight has
``weight_layout="io"``).

Before:
    const %w: f32[4,8]
    %y: f32[1,4] = linear(%x, %w) {"weight_layout": "oi"}
After:
    const %w_io: f32[8,4]
    %y: f32[1,4] = linear(%x, %w_io) {"weight_layout": "io"}
"""

from __future__ import annotations

import numpy as np

from edgeopt.ir import Graph
from edgeopt.pipeline import Pass, register_pass


@register_pass
class LinearWeightLayout(Pass):
    name = "linear_weight_layout"
    guarantees = ("linear_weights_io",)

    def run(self, g: Graph) -> dict:
        done: dict[str, object] = {}
        count = 0
        for n in g.nodes:
            if n.op != "linear" or n.attrs["weight_layout"] != "oi" or not g.is_const(n.inputs[1]):
                continue
            w = n.inputs[1]
            if w.name not in done:
                done[w.name] = g.add_const(np.ascontiguousarray(g.const(w).T), f"{w.name}_io")
            n.inputs[1] = done[w.name]
            n.attrs["weight_layout"] = "io"
            count += 1
        g.remove_unused_constants()
        return {"rewritten": count}
