"""remove_noops: drop what does nothing at inference time, and cancel shape ops that undo each other.

Removed: copies (unless the copy keeps a graph output from aliasing an input or weight), casts to the
same dtype, reshapes/broadcasts to the same shape, identity transposes, full slices, zero pads,
one-input concats, ``x + 0``, ``x - 0``, ``x * 1``, ``x / 1``. Merged: reshape of a reshape (one
reshape), transpose of a transpose (one transpose, or nothing when they cancel). Dropout and identity
modules never reach the IR (the frontend traces in eval mode).

Requires: nothing. Guarantees: ``no_noops``.

Before:
    %t: f32[1,4,3] = transpose(%x) {"perm": [0, 2, 1]}
    %u: f32[1,3,4] = transpose(%t) {"perm": [0, 2, 1]}
    %y: f32[1,3,4] = mul(%u, %one)
After:
    (readers of %y read %x)
"""

from __future__ import annotations

import numpy as np

from edgeopt.ir import Graph
from edgeopt.pattern import Any, Const, Op, rewrite
from edgeopt.pipeline import Pass, register_pass


def _same_type(n) -> bool:
    return n.outputs[0].type == n.inputs[0].type


def _is(value: float):
    return lambda arr: bool(np.all(arr == value))


def _full_slice(n) -> bool:
    a, size = n.attrs, n.inputs[0].type.shape[n.attrs["axis"]]
    return a["step"] == 1 and n.outputs[0].type.shape[a["axis"]] == size


def _noop(ops, *inputs, where=None) -> Op:
    """An op that returns its input ``x`` unchanged; its result is bound as ``y``."""
    return Op(ops, *inputs, where=where, name="y")


IDENTITIES = [
    _noop("cast", Any("x"), where=_same_type),
    _noop("reshape", Any("x"), where=_same_type),
    _noop("broadcast_to", Any("x"), where=_same_type),
    _noop("transpose", Any("x"), where=lambda n: n.attrs["perm"] == sorted(n.attrs["perm"])),
    _noop("slice", Any("x"), where=_full_slice),
    _noop("pad", Any("x"), where=lambda n: not any(n.attrs["pads"])),
    _noop("concat", Any("x"), where=lambda n: len(n.inputs) == 1),
    _noop(("add", "sub"), Any("x"), Const(where=_is(0)), where=_same_type),
    _noop("add", Const(where=_is(0)), Any("x"), where=lambda n: n.outputs[0].type == n.inputs[1].type),
    _noop(("mul", "div"), Any("x"), Const(where=_is(1)), where=_same_type),
    _noop("mul", Const(where=_is(1)), Any("x"), where=lambda n: n.outputs[0].type == n.inputs[1].type),
]
RESHAPE_OF_RESHAPE = Op("reshape", Op("reshape", Any("x")), name="outer")
TRANSPOSE_OF_TRANSPOSE = Op("transpose", Op("transpose", Any("x"), name="inner"), name="outer")


@register_pass
class RemoveNoops(Pass):
    name = "remove_noops"
    guarantees = ("no_noops",)

    def run(self, g: Graph) -> dict:
        stats = {"identities": 0, "copies": 0, "merged_reshapes": 0, "merged_transposes": 0}
        stats["merged_reshapes"] = rewrite(g, RESHAPE_OF_RESHAPE, lambda m, b: b.add(
            "reshape", [m["x"]], {"shape": m["outer"].type.shape}, name=m["outer"].name))
        stats["merged_transposes"] = rewrite(g, TRANSPOSE_OF_TRANSPOSE, lambda m, b: _compose_transposes(g, m, b))
        for p in IDENTITIES:
            stats["identities"] += rewrite(g, p, lambda m, b: _forward(g, m))
        stats["copies"] = rewrite(g, Op("copy", Any("x"), name="y"), lambda m, b: _forward(g, m))
        return stats


def _compose_transposes(g, m, b):
    p1, p2 = m.node("inner").attrs["perm"], m.node("outer").attrs["perm"]
    perm = [p1[i] for i in p2]
    if perm == sorted(perm):  # they cancel
        return _forward(g, {"x": m["x"], "y": m["outer"]})
    return b.add("transpose", [m["x"]], {"perm": perm}, name=m["outer"].name)


def _forward(g, m):
    """Readers of ``y`` read ``x`` instead, unless ``y`` is a graph output that would then alias an input,
    a weight or another output (the op is the copy that keeps them apart)."""
    x, y = m["x"], m["y"]
    if y in g.outputs and (x.producer is None or x in g.outputs):
        return None
    return x
