"""dead_code_elimination: remove nodes whose outputs nothing reads, then unused constants.

Requires: nothing. Guarantees: ``no_dead_code`` (every node output reaches a graph output).

Before:
    %a: f32[4] = relu(%x)
    %b: f32[4] = exp(%x)          # never used
    return %a
After:
    %a: f32[4] = relu(%x)
    return %a
"""

from __future__ import annotations

from edgeopt.ir import Graph
from edgeopt.pipeline import Pass, register_pass


@register_pass
class DeadCodeElimination(Pass):
    name = "dead_code_elimination"
    guarantees = ("no_dead_code",)

    def run(self, g: Graph) -> dict:
        return {"removed_nodes": g.remove_dead_nodes(), "removed_constants": g.remove_unused_constants()}
