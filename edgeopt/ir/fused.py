"""Fused kernels: a ``fused`` node carries a subgraph (its ``body``) that is compiled as ONE kernel.

The body's parameters match the node's inputs one to one (same types, same order) and the body's
outputs are the node's outputs. Values inside the body are never written to memory between kernels.
Weights stay node inputs (kernel arguments); only scalar constants live in the body (immediates).
Nested fused nodes are not allowed. In the text form the body follows the node, indented:

    %relu: f32[1,8,4,4] = fused(%x, %w, %b) {"name": "conv2d_add_relu", "anchor": "conv2d"}
      graph conv2d_add_relu(%x: f32[1,3,4,4], %w: f32[8,3,1,1], %b: f32[8]) {
        %conv2d: f32[1,8,4,4] = conv2d(%x, %w, %b) {...}
        %relu: f32[1,8,4,4] = relu(%conv2d)
        return %relu
      }

``fuse_nodes`` turns a convex set of nodes into one fused node; passes decide which sets (see
``edgeopt.pattern``).
"""

from __future__ import annotations

from collections.abc import Sequence

from .graph import Graph, Node, Value
from .registry import REQUIRED, OpDef, OpError, register


def _no_schema(types, attrs):
    raise OpError("a fused node is typed by its body, not by a schema")


def _no_reference(inputs, attrs):
    raise OpError("a fused node is evaluated through its body")


register(OpDef("fused", "opaque", _no_schema, _no_reference, {"name": REQUIRED, "anchor": None}, (0, 1 << 16),
               doc="one kernel made of several ops: its body is a subgraph (see edgeopt.ir.fused)"))


def body_problems(n: Node) -> list[str]:
    """Structural problems of a fused node against its body (the body itself is verified separately)."""
    b = n.body
    if b is None:
        return ["fused node has no body"]
    out = []
    if len(b.inputs) != len(n.inputs):
        out.append(f"body takes {len(b.inputs)} parameters, node passes {len(n.inputs)}")
    for v, p in zip(n.inputs, b.inputs):
        if v.type != p.type:
            out.append(f"argument %{v.name}: {v.type} != body parameter %{p.name}: {p.type}")
    if len(b.outputs) != len(n.outputs):
        out.append(f"body returns {len(b.outputs)} values, node has {len(n.outputs)} outputs")
    for o, r in zip(n.outputs, b.outputs):
        if o.type != r.type:
            out.append(f"output %{o.name}: {o.type} != body result %{r.name}: {r.type}")
        if r.producer is None:
            out.append(f"body result %{r.name} is not computed in the body")
    for name, arr in b.constants.items():
        if arr.size != 1:
            out.append(f"body constant %{name} is not a scalar (weights must be node inputs)")
    for m in b.nodes:
        if m.body is not None or m.op == "fused":
            out.append("fused nodes cannot nest")
    return out


def fuse_nodes(g: Graph, nodes: Sequence[Node], name: str, anchor: Node | None = None) -> Node:
    """Replace ``nodes`` (a convex set: no path leaves the set and comes back) by one fused node.

    Outside values the nodes read become parameters (scalar constants are copied into the body); every
    output that is read outside the set, or is a graph output, becomes an output of the fused node and
    keeps its ``Value`` object, so readers need no rewiring. Returns the new node.
    """
    members = set(nodes)
    order = [n for n in g.nodes if n in members]
    if len(order) != len(members):
        raise ValueError("fuse_nodes: some nodes are not in the graph")
    produced = {o for n in order for o in n.outputs}
    body = Graph(name)
    vmap: dict[Value, Value] = {}
    params: list[Value] = []
    for n in order:
        for v in n.inputs:
            if v in produced or v in vmap:
                continue
            if g.is_const(v) and v.type.numel == 1:
                vmap[v] = body.add_const(g.const(v), v.name)
            else:
                params.append(v)
                vmap[v] = body.add_input(v.name, v.type)
    for n in order:
        m = Node(n.op, [vmap[v] for v in n.inputs], n.attrs, n.source)
        for o in n.outputs:
            vmap[o] = Value(body.fresh_name(o.name), o.type, m)
            m.outputs.append(vmap[o])
        body.nodes.append(m)
    read_outside = {v for m in g.nodes if m not in members for v in m.inputs} | set(g.outputs)
    results = [o for n in order for o in n.outputs if o in read_outside]
    body.set_outputs([vmap[o] for o in results])
    anchor = anchor or order[-1]
    fused = Node("fused", params, {"name": name, "anchor": anchor.op}, anchor.source, body)
    for o in results:
        o.producer = fused
    fused.outputs = results
    first = g.nodes.index(order[0])
    g.nodes = [n for n in g.nodes if n not in members]
    g.nodes.insert(first, fused)
    g.toposort()
    return fused


def is_fused(n: Node) -> bool:
    return n.op == "fused"
