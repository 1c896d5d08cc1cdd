"""Every IR op's compiled kernel against the reference interpreter.

Cases are grouped into a few multi-output graphs so the file compiles only a handful of libraries.
"""

from __future__ import annotations

import numpy as np
import pytest

from edgeopt.api import compile_graph
from edgeopt.ir import Graph, TensorType, interpret

RNG = np.random.default_rng(0)
STANDARD_CNN_OPS = {"conv2d", "linear", "matmul", "max_pool2d", "avg_pool2d"}


def rand(shape, dtype="f32", lo=-2.0, hi=2.0):
    if dtype in ("i32", "i64"):
        return RNG.integers(int(lo), int(hi), size=shape).astype(np.int32 if dtype == "i32" else np.int64)
    if dtype == "bool":
        return RNG.random(shape) > 0.5
    return RNG.uniform(lo, hi, size=shape).astype(np.float32)


def check(g: Graph, inputs, rtol=2e-5):
    expected = interpret(g, inputs)
    compiled = compile_graph(g.clone(), opt_level=0)
    got = compiled(*inputs)
    got = got if isinstance(got, tuple) else (got,)
    for v, e, o in zip(g.outputs, expected, got):
        assert o.shape == e.shape and o.dtype == e.dtype, v.name
        if e.dtype.kind == "f":
            scale = max(float(np.abs(e).max()), 1.0)
            err = float(np.abs(e.astype(np.float64) - o).max()) / scale
            assert err <= rtol, f"{v.name} ({v.producer.op}): rel err {err:.2e}"
        else:
            np.testing.assert_array_equal(o, e, err_msg=f"{v.name} ({v.producer.op})")
    return compiled


def test_elementwise_ops():
    g = Graph()
    x = g.add_input("x", TensorType((2, 3, 5), "f32"))
    p = g.add_input("p", TensorType((2, 3, 5), "f32"))  # positive
    y = g.add_input("y", TensorType((3, 1), "f32"))
    outs = [g.add(op, [x]) for op in ("neg", "abs", "exp", "tanh", "erf", "floor", "ceil", "round", "sigmoid",
                                      "relu", "silu", "hardswish", "hardsigmoid", "sin", "cos")]
    outs += [g.add(op, [p]) for op in ("log", "sqrt", "rsqrt", "reciprocal")]
    outs += [g.add("gelu", [x], {"approximate": a}) for a in ("none", "tanh")]
    outs += [g.add("leaky_relu", [x], {"alpha": 0.2}), g.add("clamp", [x], {"min": -0.5}),
             g.add("clamp", [x], {"max": 0.25, "min": -1.0}), g.add("copy", [x])]
    outs += [g.add(op, [x, y]) for op in ("add", "sub", "mul", "div", "maximum", "minimum", "eq", "lt", "ge")]
    outs += [g.add("pow", [p, y])]
    c = g.add("gt", [x, y])
    outs += [g.add("where", [c, x, y]), g.add("logical_not", [c]), g.add("logical_and", [c, g.add("lt", [x, p])])]
    outs += [g.add("cast", [x], {"dtype": "i32"}), g.add("cast", [x], {"dtype": "bool"})]
    g.set_outputs(outs)
    xs = rand((2, 3, 5)) * 2
    xs[0, 0, :3] = [2.5, -2.5, 0.5]  # round half to even, like torch
    check(g, [xs, rand((2, 3, 5), lo=0.1, hi=3.0), rand((3, 1), lo=0.5, hi=1.5)])


def test_integer_ops():
    g = Graph()
    a = g.add_input("a", TensorType((4, 6), "i64"))
    b = g.add_input("b", TensorType((6,), "i64"))
    g.set_outputs([g.add(op, [a, b]) for op in ("add", "mul", "div", "maximum", "eq", "ne")]
                  + [g.add("cast", [a], {"dtype": "f32"}), g.add("sum", [a], {"axes": [1]})])
    check(g, [rand((4, 6), "i64", -50, 50), rand((6,), "i64", 1, 7)])


def test_reductions_and_norms():
    g = Graph()
    x = g.add_input("x", TensorType((3, 5, 7), "f32"))
    w = g.add_const(rand((5, 7)), "w")
    b = g.add_const(rand((5, 7)), "b")
    w1 = g.add_const(rand((7,)), "w1")
    outs = [g.add(op, [x], {"axes": axes, "keepdims": kd}) for op in ("sum", "mean", "max", "min")
            for axes, kd in (([1], False), ([0, 2], True), (None, False))]
    outs += [g.add("argmax", [x], {"axes": [2]})]
    outs += [g.add(op, [x], {"axis": ax}) for op in ("softmax", "log_softmax") for ax in (0, 1, 2)]
    outs += [g.add("layer_norm", [x, w, b], {"normalized_ndim": 2}), g.add("layer_norm", [x, w1]),
             g.add("layer_norm", [x], {"eps": 1e-3})]
    g.set_outputs(outs)
    check(g, [rand((3, 5, 7)) + 3.0])


def test_contractions():
    g = Graph()
    a = g.add_input("a", TensorType((2, 1, 7, 13), "f32"))
    bm = g.add_input("bm", TensorType((3, 13, 5), "f32"))
    x = g.add_input("x", TensorType((2, 3, 16), "f32"))
    w = g.add_const(rand((24, 16)), "w")
    wio = g.add_const(rand((16, 24)), "wio")
    bias = g.add_const(rand((24,)), "bias")
    v = g.add_input("v", TensorType((1, 16), "f32"))
    g.set_outputs([g.add("matmul", [a, bm]), g.add("linear", [x, w, bias]),
                   g.add("linear", [x, wio], {"weight_layout": "io"}), g.add("linear", [v, w])])
    check(g, [rand((2, 1, 7, 13)), rand((3, 13, 5)), rand((2, 3, 16)), rand((1, 16))])


CONVS = [
    dict(x=(1, 4, 9, 13), w=(8, 4, 3, 3), attrs={"padding": [1, 1, 1, 1]}),
    dict(x=(1, 4, 11, 11), w=(8, 4, 3, 3), attrs={"stride": [2, 2], "padding": [0, 1, 2, 1]}),
    dict(x=(1, 4, 10, 10), w=(6, 2, 3, 3), attrs={"groups": 2, "dilation": [2, 2], "padding": [2, 2, 2, 2]}),
    dict(x=(1, 8, 14, 14), w=(8, 1, 3, 3), attrs={"groups": 8, "padding": [1, 1, 1, 1]}),
    dict(x=(1, 16, 7, 7), w=(32, 16, 1, 1), attrs={}),
    dict(x=(1, 3, 23, 23), w=(8, 3, 7, 7), attrs={"stride": [2, 2], "padding": [3, 3, 3, 3]}),
]


def test_convolutions():
    g = Graph()
    xs, outs = [], []
    for i, c in enumerate(CONVS):
        x = g.add_input(f"x{i}", TensorType(c["x"], "f32"))
        ins = [x, g.add_const(rand(c["w"]), f"w{i}")] + ([g.add_const(rand(c["w"][:1]), f"b{i}")] if i % 2 else [])
        outs.append(g.add("conv2d", ins, c["attrs"]))
        xs.append(rand(c["x"]))
    t = g.add_input("t", TensorType((1, 4, 5, 6), "f32"))
    xs.append(rand((1, 4, 5, 6)))
    outs.append(g.add("conv_transpose2d", [t, g.add_const(rand((4, 3, 2, 2)), "tw")], {"stride": [2, 2]}))
    outs.append(g.add("conv_transpose2d", [t, g.add_const(rand((4, 3, 3, 3)), "tw2"), g.add_const(rand((6,)), "tb")],
                      {"stride": [2, 2], "padding": [1, 1], "output_padding": [1, 1], "groups": 2}))
    g.set_outputs(outs)
    compiled = check(g, xs)
    fell_back = [k for k in compiled.report["kernels"] if k["schedule"].startswith(("fallback", "unscheduled"))]
    assert not fell_back


def test_pooling_resize_pad():
    g = Graph()
    x = g.add_input("x", TensorType((1, 3, 9, 11), "f32"))
    outs = [
        g.add("max_pool2d", [x], {"kernel": [3, 3], "stride": [2, 2], "padding": [1, 1, 1, 1]}),
        g.add("max_pool2d", [x], {"kernel": [2, 2], "stride": [2, 2], "ceil_mode": True}),
        g.add("avg_pool2d", [x], {"kernel": [3, 3], "stride": [2, 2], "padding": [1, 1, 1, 1]}),
        g.add("avg_pool2d", [x], {"kernel": [3, 3], "stride": [2, 2], "padding": [1, 1, 1, 1],
                                  "count_include_pad": False, "ceil_mode": True}),
        g.add("avg_pool2d", [x], {"kernel": [2, 2], "stride": [2, 2], "divisor_override": 3}),
        g.add("adaptive_avg_pool2d", [x], {"output_size": [4, 3]}),
        g.add("resize2d", [x], {"size": [18, 22], "mode": "nearest", "scales": [2.0, 2.0]}),
        g.add("resize2d", [x], {"size": [7, 5], "mode": "nearest"}),
        g.add("resize2d", [x], {"size": [18, 22], "mode": "bilinear", "scales": [2.0, 2.0]}),
        g.add("resize2d", [x], {"size": [13, 7], "mode": "bilinear", "align_corners": True}),
        g.add("pad", [x], {"pads": [0, 0, 0, 1, 2, -1, -3, 2], "value": 0.5}),
    ]
    g.set_outputs(outs)
    check(g, [rand((1, 3, 9, 11))])


def test_data_movement_and_views():
    g = Graph()
    x = g.add_input("x", TensorType((2, 3, 4), "f32"))
    ids = g.add_input("ids", TensorType((2, 2), "i64"))
    ids32 = g.add_input("ids32", TensorType((3,), "i32"))
    table = g.add_const(rand((5, 4)), "table")
    r = g.add("reshape", [x], {"shape": [6, 4]})
    outs = [r, g.add("relu", [r]), g.add("transpose", [x], {"perm": [2, 0, 1]}),
            g.add("slice", [x], {"axis": 2, "start": 1, "end": 4, "step": 2}),
            g.add("concat", [x, g.add("neg", [x])], {"axis": 1}),
            g.add("broadcast_to", [g.add("slice", [x], {"axis": 0, "end": 1})], {"shape": [3, 3, 4]}),
            g.add("take", [table, ids]), g.add("take", [x, ids32], {"axis": 1})]
    g.set_outputs(outs)
    check(g, [rand((2, 3, 4)), np.array([[0, -1], [4, 2]], np.int64), np.array([2, -3, 0], np.int32)])


def test_attention():
    g = Graph()
    q = g.add_input("q", TensorType((1, 2, 5, 8), "f32"))
    k = g.add_input("k", TensorType((1, 2, 6, 8), "f32"))
    v = g.add_input("v", TensorType((1, 1, 6, 4), "f32"))
    bm = g.add_input("bm", TensorType((1, 1, 5, 6), "bool"))
    fm = g.add_input("fm", TensorType((6,), "f32"))
    q6 = g.add_input("q6", TensorType((1, 2, 6, 8), "f32"))
    mask = rand((1, 1, 5, 6), "bool")
    mask[..., 0] = True  # no fully masked row
    g.set_outputs([g.add("attention", [q, k, v]), g.add("attention", [q, k, v, bm]),
                   g.add("attention", [q, k, v, fm], {"scale": 0.3}),
                   g.add("attention", [q6, k, v], {"causal": True})])
    check(g, [rand((1, 2, 5, 8)), rand((1, 2, 6, 8)), rand((1, 1, 6, 4)), mask, rand((6,)), rand((1, 2, 6, 8))])


def test_identical_kernels_built_once():
    g = Graph()
    x = g.add_input("x", TensorType((4, 8), "f32"))
    g.set_outputs([g.add("relu", [g.add("relu", [g.add("exp", [x])])])])
    compiled = check(g, [rand((4, 8))])
    assert compiled.report["num_kernels"] == 3 and compiled.report["num_unique_kernels"] == 2


@pytest.mark.parametrize("op", sorted(STANDARD_CNN_OPS))
def test_standard_ops_get_tiled_schedules(op):
    from edgeopt.lower.build import build_primfunc
    from edgeopt.lower.schedule_cpu import schedule_kernel

    g = Graph()
    x = g.add_input("x", TensorType((1, 8, 16, 16) if op != "linear" and op != "matmul" else (16, 32), "f32"))
    if op == "conv2d":
        y = g.add(op, [x, g.add_const(rand((16, 8, 3, 3)), "w")], {"stride": [2, 2], "padding": [1, 1, 1, 1]})
    elif op == "linear":
        y = g.add(op, [x, g.add_const(rand((32, 64)), "w")], {"weight_layout": "io"})
    elif op == "matmul":
        y = g.add(op, [x, g.add_const(rand((32, 64)), "w")])
    else:
        y = g.add(op, [x], {"kernel": [3, 3], "stride": [2, 2]})
    func, _ = build_primfunc(g, y.producer)
    _, desc = schedule_kernel(func, op, 8)
    assert desc.startswith("tile("), desc
