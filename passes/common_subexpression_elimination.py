"""common_subexpression_elimination: compute each distinct (op, attributes, inputs) once; share equal weights.

Two nodes with the same op, attributes and input values produce the same result, so the later one is
dropped and its readers read the first. Constants with identical dtype, shape and bytes are merged
first (tied or duplicated weights are then stored once), which exposes more common subexpressions.

Requires: nothing. Guarantees: ``no_common_subexpressions``.

Before:
    %a: f32[4] = exp(%x)
    %b: f32[4] = exp(%x)
    %c: f32[4] = add(%a, %b)
After:
    %a: f32[4] = exp(%x)
    %c: f32[4] = add(%a, %a)
"""

from __future__ import annotations

import hashlib
import json

from edgeopt.ir import Graph
from edgeopt.pipeline import Pass, register_pass


@register_pass
class CommonSubexpressionElimination(Pass):
    name = "common_subexpression_elimination"
    guarantees = ("no_common_subexpressions",)

    def run(self, g: Graph) -> dict:
        merged_consts = _merge_constants(g)
        seen: dict[tuple, object] = {}
        removed = 0
        for n in list(g.nodes):
            body = str(n.body) if n.body is not None else ""
            key = (n.op, json.dumps(n.attrs, sort_keys=True), tuple(id(v) for v in n.inputs), body)
            first = seen.get(key)
            if first is None:
                seen[key] = n
                continue
            for old, new in zip(n.outputs, first.outputs):
                g.replace_uses(old, new)
            g.nodes.remove(n)
            removed += 1
        return {"removed_nodes": removed, "merged_constants": merged_consts}


def _merge_constants(g: Graph) -> int:
    first: dict[tuple, object] = {}
    merged = 0
    for name, arr in list(g.constants.items()):
        v = g.const_values[name]
        key = (arr.dtype.str, arr.shape, hashlib.sha256(arr.tobytes()).hexdigest())
        if key not in first:
            first[key] = v
        else:
            g.replace_uses(v, first[key])
            merged += 1
    g.remove_unused_constants()
    return merged
