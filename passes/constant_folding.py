"""constant_folding: evaluate nodes whose inputs are all known at compile time: constants, or zero-size values.

Weight-only subgraphs (a transpose or reshape of a weight, shape arithmetic on constant tensors, casts
of constant masks...) become plain constants. A fold never grows the weights much: the result may be
at most as many bytes as the largest input, or at most ``MAX_FOLD_GROWTH_BYTES`` (a broadcast of a scalar to
a big tensor, or an int8 weight widened to int32 for an integer matmul, stays a kernel).

A zero-size value holds no data, so a node that reads only constants and zero-size values has a result known
now, whatever the inputs: ``sum`` over nothing is 0, ``[3,0] @ [0,4]`` is zeros. Such a node is always folded,
graph output or not, because its kernel would run a reduction loop of no steps, which never writes the result
(TVM initializes a reduction inside its first step). A uniform result (every element equal: all a reduction of
nothing can give) becomes a scalar constant broadcast to the shape.

Requires: nothing. Guarantees: ``constants_folded`` (no node reads only constants, except those whose result
would grow the weights; no node reads only constants and zero-size values).

Before:
    const %w: f32[4,8]
    %t: f32[8,4] = transpose(%w) {"perm": [1, 0]}
    %y: f32[1,4] = matmul(%x, %t)
After:
    const %t: f32[8,4]
    %y: f32[1,4] = matmul(%x, %t)

Before (zero-size):
    %e: f32[0] = slice(%x) {"axis": 0, "start": 0, "end": 0, "step": 1}
    %s: f32[] = sum(%e) {"axes": null, "keepdims": false}
    return %s
After:
    const %s_folded: f32[] = 0.0
    %s: f32[] = broadcast_to(%s_folded) {"shape": []}
    return %s
"""

from __future__ import annotations

import warnings

import numpy as np

from edgeopt.ir import Graph, Node, get_op
from edgeopt.ir.graph import fold_keeps_weights_small
from edgeopt.pipeline import Pass, register_pass


@register_pass
class ConstantFolding(Pass):
    name = "constant_folding"
    guarantees = ("constants_folded",)

    def run(self, g: Graph) -> dict:
        folded = empty = 0
        for n in list(g.nodes):
            if n.body is not None or not n.inputs or not all(g.is_const(v) or v.type.numel == 0 for v in n.inputs):
                continue
            if any(v.type.numel == 0 for v in n.inputs):
                _fold_reading_nothing(g, n)
                empty += 1
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
        return {"folded": folded, "folded_zero_size": empty}


def _fold_reading_nothing(g: Graph, n: Node) -> None:
    """Replace ``n``, which reads a zero-size value (a constant or not) and otherwise constants, by its result: a
    scalar constant broadcast to each output's shape where the result is uniform, else the constant (copied where
    it is a graph output, since outputs are computed)."""
    ins = [g.const(v) if g.is_const(v) else np.zeros(v.type.shape, v.type.np_dtype) for v in n.inputs]
    with warnings.catch_warnings(), np.errstate(all="ignore"):  # numpy warns of a mean of nothing (NaN, as torch)
        warnings.simplefilter("ignore", RuntimeWarning)
        results = get_op(n.op).reference(ins, n.attrs)
    at = g.nodes.index(n)
    g.nodes.remove(n)
    for o, arr in zip(n.outputs, results):
        arr = np.array(arr, dtype=o.type.np_dtype, order="C")
        flat = arr.reshape(-1)
        if flat.size and (np.all(flat == flat[0]) or np.all(np.isnan(flat))):
            c = g.add_const(flat[:1].reshape(()), o.name + "_folded")
            new = g.add("broadcast_to", [c], {"shape": list(o.type.shape)}, source=n.source, name=o.name, index=at)
        elif o in g.outputs:
            new = g.add("copy", [g.add_const(arr, o.name + "_folded")], source=n.source, name=o.name, index=at)
        else:
            g.replace_uses(o, g.add_const(arr, o.name + "_folded"))
            continue
        at += 1
        g.replace_uses(o, new)
