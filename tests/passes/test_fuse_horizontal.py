"""fuse_horizontal: linears sharing an input -> one wide linear + slices; structure, counts, numerics."""

from __future__ import annotations

import numpy as np

from edgeopt.api import compile_graph
from edgeopt.ir import Graph, TensorType, interpret, verify
from edgeopt.pipeline import get_pass

RNG = np.random.default_rng(11)


def _w(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


def _qkv_graph(layout="io", bias=True):
    g = Graph()
    x = g.add_input("x", TensorType((1, 6, 8), "f32"))
    outs = []
    for name, width in (("q", 8), ("k", 8), ("v", 4)):
        w = g.add_const(_w(8, width) if layout == "io" else _w(width, 8), f"w{name}")
        ins = [x, w] + ([g.add_const(_w(width), f"b{name}")] if bias else [])
        outs.append(g.add("linear", ins, {"weight_layout": layout}, name=name))
    g.set_outputs([g.add("relu", [o]) for o in outs])
    return g


def _check(g):
    after = g.clone()
    stats = get_pass("fuse_horizontal").run(after)
    verify(after)
    xs = [RNG.standard_normal(v.type.shape).astype(np.float32) for v in g.inputs]
    for a, b in zip(interpret(after, xs), interpret(g, xs)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    return after, stats, xs


def test_qkv_become_one_linear_and_three_slices():
    for layout in ("io", "oi"):
        for bias in (True, False):
            g = _qkv_graph(layout, bias)
            after, stats, xs = _check(g)
            assert stats == {"merged_linears": 3, "groups": 1}
            ops = [n.op for n in after.nodes]
            assert ops.count("linear") == 1 and ops.count("slice") == 3
            wide = next(n for n in after.nodes if n.op == "linear")
            assert wide.outputs[0].type.shape == (1, 6, 20)
            assert [(n.attrs["start"], n.attrs["end"]) for n in after.nodes if n.op == "slice"] == [
                (0, 8), (8, 16), (16, 20)]
            compiled = compile_graph(after, "host", passes=[])
            for a, b in zip(compiled(*xs), interpret(g, xs)):
                np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_different_inputs_or_bias_presence_are_not_merged():
    g = Graph()
    x = g.add_input("x", TensorType((2, 8), "f32"))
    y = g.add_input("y", TensorType((2, 8), "f32"))
    a = g.add("linear", [x, g.add_const(_w(4, 8)), g.add_const(_w(4))])
    b = g.add("linear", [y, g.add_const(_w(4, 8)), g.add_const(_w(4))])  # other input
    c = g.add("linear", [x, g.add_const(_w(4, 8))])  # no bias
    d = g.add("linear", [x, g.add("relu", [y])])  # weight not constant
    g.set_outputs([a, b, c, d])
    after, stats, _ = _check(g)
    assert stats == {"merged_linears": 0, "groups": 0}
    assert [n.op for n in after.nodes] == [n.op for n in g.nodes]
