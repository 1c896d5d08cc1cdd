"""constant_folding: evaluate nodes whose result is known at compile time: from constants, or zero-size values.

Weight-only subgraphs (a transpose or reshape of a weight, shape arithmetic on constant tensors, casts
of constant masks...) become plain constants. A fold never grows the weights much: the result may be
at most as many bytes as the largest input, or at most ``MAX_FOLD_GROWTH_BYTES`` (a broadcast of a scalar to
a big tensor, or an int8 weight widened to int32 for an integer matmul, stays a kernel).

A zero-size value holds no data, so a node that reads only constants and zero-size values, or whose result is
zero-size, has a result known now, whatever its inputs hold: ``sum`` over nothing is 0, ``[3,0] @ [0,4]`` is
zeros. Such a node is always folded, graph output or not, because its kernel would run a reduction loop of no
steps, which never writes the result (TVM initializes a reduction inside its first step). Where the result is a
graph output (outputs are computed) or too big to store, its repeated axes are stored once and broadcast: a
reduction of nothing is one value repeated, a linear layer of no inputs its bias repeated.

Requires: nothing. Guarantees: ``constants_folded`` (no node reads only constants, except those whose result
would grow the weights; no node reads only constants and zero-size values, and none computes a zero-size value).

Before:
    const %w: f32[4,8]
    %t: f32[8,4] = transpose(%w) {"perm": [1, 0]}
    %y: f32[1,4] = matmul(%x, %t)
After:
    const %t: f32[8,4]
    %y: f32[1,4] = matmul(%x, %t)

Before (zero-size):
    %e: f32[2,0] = slice(%x) {"axis": 1, "start": 0, "end": 0, "step": 1}
    %s: f32[2] = sum(%e) {"axes": [1], "keepdims": false}
    return %s
After:
    const %s_folded: f32[] = 0.0
    %s_1: f32[2] = broadcast_to(%s_folded) {"shape": [2]}
    return %s_1
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
            if n.body is not None or not n.inputs:
                continue
            known = all(g.is_const(v) or v.type.numel == 0 for v in n.inputs)
            if not known and not all(o.type.numel == 0 for o in n.outputs):  # an empty result is known too
                continue
            if any(o in g.state_updates.values() for o in n.outputs):  # a state's update stays its kernel
                continue
            if not known or any(v.type.numel == 0 for v in n.inputs):
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
    """Replace ``n`` (it reads a zero-size value and otherwise constants, or computes a zero-size value) by its
    result: a constant, as for any fold; where it is a graph output (computed, not a constant) or too big to store,
    the constant with its repeated axes shrunk to 1, broadcast back (a reduction of nothing is one value repeated)."""
    at = g.nodes.index(n)
    g.nodes.remove(n)
    for o, arr in zip(n.outputs, _result(g, n)):
        output = o in g.outputs
        if not output and fold_keeps_weights_small(arr.nbytes, [v.type.nbytes for v in n.inputs]):
            g.replace_uses(o, g.add_const(arr, o.name + "_folded"))
            continue
        small = _shrink_repeated_axes(arr)
        if small.size < arr.size:
            c = g.add_const(small.reshape(()) if small.size == 1 else small, o.name + "_folded")
            new = g.add("broadcast_to", [c], {"shape": list(o.type.shape)}, source=n.source, name=o.name, index=at)
        elif output:
            new = g.add("copy", [g.add_const(arr, o.name + "_folded")], source=n.source, name=o.name, index=at)
        else:
            g.replace_uses(o, g.add_const(arr, o.name + "_folded"))
            continue
        at += 1
        g.replace_uses(o, new)


def _result(g: Graph, n: Node) -> list[np.ndarray]:
    """The node's outputs, from its reference on its constants and empty arrays (an empty result: no call)."""
    if all(o.type.numel == 0 for o in n.outputs):
        return [np.zeros(o.type.shape, o.type.np_dtype) for o in n.outputs]
    ins = [g.const(v) if g.is_const(v) else np.zeros(v.type.shape, v.type.np_dtype) for v in n.inputs]
    with warnings.catch_warnings(), np.errstate(all="ignore"):  # numpy warns of a mean of nothing (NaN, as torch)
        warnings.simplefilter("ignore", RuntimeWarning)
        try:
            results = get_op(n.op).reference(ins, n.attrs)
        except (ValueError, IndexError) as e:
            raise ValueError(f"{n.op} of a zero-size value ({', '.join(str(v.type) for v in n.inputs)}) has no "
                             f"result: {e}") from None
    return [np.array(arr, dtype=o.type.np_dtype, order="C") for o, arr in zip(n.outputs, results)]


def _shrink_repeated_axes(arr: np.ndarray) -> np.ndarray:
    """``arr`` with every axis along which it repeats one slice, bit for bit (-0.0 is not 0.0), cut to size 1."""
    for ax in range(arr.ndim):
        if arr.shape[ax] > 1:
            first = arr.take([0], axis=ax)
            if np.ascontiguousarray(np.broadcast_to(first, arr.shape)).tobytes() == arr.tobytes():
                arr = first
    return arr
