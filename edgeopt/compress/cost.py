"""What a graph costs: multiply-accumulates of its contractions and its weight count (what pruning and low rank
reduce; the compile report and ``edgeopt.compress`` print them before and after)."""

from __future__ import annotations

from ..ir import Graph, Node


def node_macs(n: Node) -> int:
    """Multiply-accumulates of one conv / linear / matmul / attention node (0 for every other op)."""
    out = n.outputs[0].type
    if n.op == "conv2d":  # NCHW or NCHW<v>c: each output element reads one filter
        s = out.shape
        filters = out.numel // (s[0] * s[2] * s[3])
        return out.numel * (n.inputs[1].type.numel // filters)
    if n.op == "linear":
        return out.numel * n.inputs[0].type.shape[-1]
    if n.op == "matmul":
        return out.numel * n.inputs[0].type.shape[-1]
    if n.op == "attention":
        q, k = n.inputs[0].type, n.inputs[1].type
        return out.numel // out.shape[-1] * k.shape[-2] * (q.shape[-1] + out.shape[-1])
    if n.body is not None:
        return graph_macs(n.body)
    return 0


def graph_macs(g: Graph) -> int:
    return sum(node_macs(n) for n in g.nodes)


def graph_params(g: Graph) -> int:
    """Weight elements (constants of more than one element)."""
    return sum(a.size for a in g.constants.values() if a.size > 1)
