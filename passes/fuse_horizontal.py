"""fuse_horizontal: linear layers that read the same input become one linear with concatenated weights.

The Q, K and V projections of attention are three matmuls over the same activations; one matmul with
the weights side by side reads the activations once, gives the kernel a wider output to parallelize,
and launches once. Each original result becomes a ``slice`` of the wide result along its last axis
(``fuse_elementwise`` later merges each slice into the reshape/transpose that follows it).

Requires: ``unfused``. Guarantees: ``horizontal_fused``. Groups only linears with constant weights of the
same layout, dtype and input width, all with constant biases or all without.

Before:
    %q: f32[1,16,384] = linear(%x, %wq, %bq) {"weight_layout": "io"}
    %k: f32[1,16,384] = linear(%x, %wk, %bk) {"weight_layout": "io"}
After:
    %qk: f32[1,16,768] = linear(%x, %wq_wk, %bq_bk) {"weight_layout": "io"}
    %q: f32[1,16,384] = slice(%qk) {"axis": 2, "start": 0, "end": 384, "step": 1}
    %k: f32[1,16,384] = slice(%qk) {"axis": 2, "start": 384, "end": 768, "step": 1}
"""

from __future__ import annotations

import numpy as np

from edgeopt.ir import Graph
from edgeopt.pipeline import Pass, register_pass


def _key(g: Graph, n):
    """Linears with equal keys can share one matmul (None: this one cannot)."""
    if n.op != "linear" or not all(g.is_const(v) for v in n.inputs[1:]):
        return None
    x, w = n.inputs[0], n.inputs[1]
    in_axis = 0 if n.attrs["weight_layout"] == "io" else 1  # [in, out], [out, in] or packed [out/v, in, v]
    return (id(x), n.attrs["weight_layout"], w.type.dtype, w.type.shape[in_axis], len(n.inputs))


@register_pass
class FuseHorizontal(Pass):
    name = "fuse_horizontal"
    requires = ("unfused",)
    guarantees = ("horizontal_fused",)

    def run(self, g: Graph) -> dict:
        groups: dict[tuple, list] = {}
        for n in g.nodes:
            key = _key(g, n)
            if key is not None:
                groups.setdefault(key, []).append(n)
        merged = 0
        for group in groups.values():
            if len(group) > 1:
                _merge(g, group)
                merged += len(group)
        if merged:
            g.toposort()
            g.remove_unused_constants()
        return {"merged_linears": merged, "groups": sum(len(v) > 1 for v in groups.values())}


def _merge(g: Graph, group: list) -> None:
    first = group[0]
    x, layout = first.inputs[0], first.attrs["weight_layout"]
    out_axis = 1 if layout == "io" else 0  # packed panels [out/v, in, v] stack along the panels
    w = g.add_const(np.concatenate([g.const(n.inputs[1]) for n in group], axis=out_axis),
                    "_".join(n.inputs[1].name for n in group))
    ins = [x, w]
    if len(first.inputs) == 3:
        ins.append(g.add_const(np.concatenate([g.const(n.inputs[2]) for n in group]),
                               "_".join(n.inputs[2].name for n in group)))
    at = g.nodes.index(first)
    wide = g.add("linear", ins, first.attrs, source=first.source, index=at,
                 name="_".join(n.outputs[0].name for n in group))
    axis, start = wide.type.rank - 1, 0
    for i, n in enumerate(group):
        width = n.outputs[0].type.shape[-1]
        part = g.add("slice", [wide], {"axis": axis, "start": start, "end": start + width, "step": 1},
                     source=n.source, index=at + 1 + i, name=n.outputs[0].name)
        g.replace_uses(n.outputs[0], part)
        g.nodes.remove(n)
        start += width
