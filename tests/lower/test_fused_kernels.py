"""Fused kernels compiled by ``edgeopt.lower`` (one TE PrimFunc per fused body) against the interpreter
on the unfused graph; kernel arguments, the plan, and the schedules the report describes."""

from __future__ import annotations

import numpy as np
import pytest

from edgeopt.api import compile_graph
from edgeopt.ir import Graph, TensorType, interpret, verify
from edgeopt.ir.fused import fuse_nodes, is_fused
from edgeopt.lower import lower
from edgeopt.lower.build import build_primfunc, kernel_args
from edgeopt.pipeline import get_pass
from tests.passes.fusion_harness import CONV_RESIDUAL_FUSION, assert_close

RTOL = 1e-5
RNG = np.random.default_rng(99)


def T(*shape: int, dtype: str = "f32") -> TensorType:
    return TensorType(shape, dtype)


def rnd(*shape: int, scale: float = 1.0) -> np.ndarray:
    return (RNG.standard_normal(shape) * scale).astype(np.float32)


def compile_and_compare(g: Graph, passes: list[str], seed: int = 0):
    """Compile a clone of ``g`` with ``passes``; compare with the interpreter on ``g`` (unfused)."""
    compiled = compile_graph(g.clone(), "host", passes=passes)
    rng = np.random.default_rng(seed)
    xs = [rng.standard_normal(v.type.shape).astype(v.type.np_dtype) for v in g.inputs]
    out = compiled(*xs)
    out = list(out) if isinstance(out, tuple) else [out]
    expected = interpret(g, xs)
    assert len(out) == len(expected)
    for e, o in zip(expected, out):
        assert_close(e, o)
    return compiled


def kernel_ops(compiled) -> list[list[str]]:
    return [k["ops"] for k in compiled.report["kernels"]]


def schedule_of(compiled, ops: list[str]) -> str:
    return next(k["schedule"] for k in compiled.report["kernels"] if k["ops"] == ops)


def no_fallback(compiled) -> bool:
    return not [k for k in compiled.report["kernels"] if k["schedule"].startswith(("fallback", "unscheduled"))]


# -- graphs --------------------------------------------------------------------------------------------------


def conv_residual() -> Graph:
    g = Graph()
    x = g.add_input("x", T(1, 4, 6, 6))
    skip = g.add_input("skip", T(1, 8, 6, 6))
    w, b = g.add_const(rnd(8, 4, 3, 3, scale=0.3), "w"), g.add_const(rnd(8), "b")
    c = g.add("conv2d", [x, w, b], {"padding": [1, 1, 1, 1]})
    g.set_outputs([g.add("relu", [g.add("add", [c, skip])])])
    return g


def linear_gelu() -> Graph:
    g = Graph()
    x = g.add_input("x", T(2, 5, 16))
    w, b = g.add_const(rnd(24, 16, scale=0.3), "w"), g.add_const(rnd(24), "b")
    g.set_outputs([g.add("gelu", [g.add("linear", [x, w, b])])])
    return g


def transposed_matmul() -> Graph:
    g = Graph()
    a = g.add_input("a", T(2, 16, 6))
    b = g.add_input("b", T(2, 16, 8))
    s = g.add_input("s", T(8))
    r = g.add_input("r", T(2, 6, 8))
    at = g.add("transpose", [a], {"perm": [0, 2, 1]})
    m = g.add("matmul", [at, b])
    g.set_outputs([g.add("add", [g.add("mul", [m, s]), r])])
    return g


def pool_relu(op: str) -> Graph:
    g = Graph()
    x = g.add_input("x", T(1, 3, 9, 9))
    attrs = {"kernel": [3, 3], "stride": [2, 2], "padding": [1, 1, 1, 1]}
    g.set_outputs([g.add("relu", [g.add(op, [x], attrs)])])
    return g


def add_layer_norm() -> Graph:
    g = Graph()
    h, skip = g.add_input("h", T(2, 4, 32)), g.add_input("skip", T(2, 4, 32))
    gamma, beta = g.add_const(rnd(32), "gamma"), g.add_const(rnd(32), "beta")
    a = g.add("add", [h, skip])
    g.set_outputs([g.add("layer_norm", [a, gamma, beta], {"eps": 1e-5})])
    return g


def softmax_prologue() -> Graph:
    g = Graph()
    s, mask = g.add_input("s", T(2, 3, 5, 9)), g.add_input("mask", T(1, 1, 1, 9))
    scale = g.add_const(np.float32(0.25), "scale")
    a = g.add("add", [g.add("mul", [s, scale]), mask])
    g.set_outputs([g.add("softmax", [a], {"axis": -1})])
    return g


def elementwise_tree() -> Graph:
    g = Graph()
    x, y, z = g.add_input("x", T(2, 3, 8)), g.add_input("y", T(3, 1)), g.add_input("z", T(8))
    a = g.add("mul", [g.add("add", [x, y]), z])
    d = g.add("neg", [g.add("sub", [y, z])])
    e = g.add("clamp", [g.add("maximum", [a, d])], {"min": -1.5, "max": 2.0})
    g.set_outputs([g.add("sigmoid", [e])])
    return g


CASES = {
    "conv_bias_residual_relu": (conv_residual, [CONV_RESIDUAL_FUSION], ["conv2d", "add", "relu"]),
    "linear_gelu": (linear_gelu, ["fuse_epilogue"], ["linear", "gelu"]),
    "transposed_matmul_mul_add": (transposed_matmul, ["fuse_epilogue"], ["transpose", "matmul", "mul", "add"]),
    "max_pool_relu": (lambda: pool_relu("max_pool2d"), ["fuse_epilogue"], ["max_pool2d", "relu"]),
    "avg_pool_relu": (lambda: pool_relu("avg_pool2d"), ["fuse_epilogue"], ["avg_pool2d", "relu"]),
    "add_layer_norm": (add_layer_norm, ["fuse_reductions"], ["add", "layer_norm"]),
    "softmax_prologue": (softmax_prologue, ["fuse_reductions"], ["mul", "add", "softmax"]),
    "elementwise_tree": (elementwise_tree, ["fuse_elementwise"],
                         ["add", "mul", "sub", "neg", "maximum", "clamp", "sigmoid"]),
}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("seed", [0, 1])
def test_fused_kernel_matches_interpreter(case, seed):
    build, passes, ops = CASES[case]
    compiled = compile_and_compare(build(), passes, seed)
    assert kernel_ops(compiled) == [ops]  # the whole graph is one kernel
    assert compiled.report["num_kernels"] == 1
    assert compiled.report["fused_groups"] == [{"kernel": compiled.report["kernels"][0]["name"], "ops": ops,
                                               "count": 1}]
    assert no_fallback(compiled)


def test_conv_epilogue_is_folded_into_the_anchor_store():
    compiled = compile_and_compare(conv_residual(), [CONV_RESIDUAL_FUSION])
    (k,) = compiled.report["kernels"]
    assert k["op"] == "conv2d"
    assert k["schedule"].startswith("tile(") and "epilogue" in k["schedule"]


@pytest.mark.parametrize("case", ["linear_gelu", "transposed_matmul_mul_add", "max_pool_relu"])
def test_other_anchors_fold_their_epilogue_too(case):
    build, passes, ops = CASES[case]
    compiled = compile_and_compare(build(), passes)
    assert "epilogue" in schedule_of(compiled, ops)


def test_the_same_graph_unfused_gives_the_same_results():
    g = conv_residual()
    fused = compile_and_compare(g, [CONV_RESIDUAL_FUSION], seed=4)
    plain = compile_and_compare(g, [], seed=4)
    assert plain.report["num_kernels"] == 3 and fused.report["num_kernels"] == 1
    xs = [np.random.default_rng(4).standard_normal(v.type.shape).astype(np.float32) for v in g.inputs]
    np.testing.assert_allclose(fused(*xs), plain(*xs), rtol=1e-5, atol=1e-5)


# -- multi-output fused nodes --------------------------------------------------------------------------------


def multi_output() -> tuple[Graph, Graph]:
    """(unfused, fused): %mul and %tanh both leave the kernel; %exp sits between members."""
    g = Graph()
    x, y = g.add_input("x", T(3, 8)), g.add_input("y", T(3, 8))
    half = g.add_const(np.float32(0.5), "half")
    a = g.add("add", [x, y])
    e = g.add("exp", [y])
    m = g.add("mul", [a, half])
    t = g.add("tanh", [m])
    s = g.add("sub", [t, e])
    g.set_outputs([s, m])
    f = g.clone()
    by_name = {n.outputs[0].name: n for n in f.nodes}
    fuse_nodes(f, [by_name["add"], by_name["mul"], by_name["tanh"]], "add_mul_tanh")
    verify(f)
    return g, f


def test_multi_output_fused_node():
    g, f = multi_output()
    node = next(n for n in f.nodes if is_fused(n))
    assert [o.name for o in node.outputs] == ["mul", "tanh"]
    compiled = compile_graph(f.clone(), "host", passes=[])
    rng = np.random.default_rng(2)
    xs = [rng.standard_normal(v.type.shape).astype(np.float32) for v in g.inputs]
    for e, o in zip(interpret(g, xs), compiled(*xs)):
        assert_close(e, o)
    step = next(s for s in compiled.plan["steps"] if s["kernel"].startswith("add_mul_tanh"))
    assert step["args"] == ["x", "y", "mul", "tanh"]  # inputs, then both outputs (destination-passing)
    assert ["add", "mul", "tanh"] in kernel_ops(compiled)


def _multi_output_contraction(op: str) -> tuple[Graph, Graph]:
    g = Graph()
    if op == "conv2d":
        x = g.add_input("x", T(1, 4, 6, 8))
        c = g.add("conv2d", [x, g.add_const(rnd(8, 4, 1, 1), "w")])
    else:
        x = g.add_input("x", T(8, 16))
        c = g.add("matmul", [x, g.add_const(rnd(16, 16, scale=0.3), "w")])
    r = g.add("relu", [c])
    g.set_outputs([r, c])  # the anchor's own result leaves the kernel too
    f = g.clone()
    fuse_nodes(f, f.nodes, f"{op}_relu", anchor=f.nodes[0])
    verify(f)
    return g, f


@pytest.mark.parametrize("op", ["conv2d", "matmul"])
def test_multi_output_contraction_matches_interpreter(op):
    g, f = _multi_output_contraction(op)
    compiled = compile_graph(f.clone(), "host", passes=[])
    rng = np.random.default_rng(3)
    xs = [rng.standard_normal(v.type.shape).astype(np.float32) for v in g.inputs]
    for e, o in zip(interpret(g, xs), compiled(*xs)):
        assert_close(e, o)


@pytest.mark.parametrize("op", ["conv2d", "matmul"])
def test_multi_output_contraction_keeps_its_register_tiles(op):
    _, f = _multi_output_contraction(op)
    compiled = compile_graph(f, "host", passes=[])
    (k,) = compiled.report["kernels"]
    assert k["schedule"].startswith("tile("), k["schedule"]


# -- kernel arguments, plan, deduplication -------------------------------------------------------------------


def test_build_primfunc_takes_non_scalar_inputs_then_outputs():
    g = conv_residual()
    CONV_RESIDUAL_FUSION.run(g)
    (n,) = g.nodes
    func, args = build_primfunc(g, n)
    assert args == n.inputs == kernel_args(g, n)
    assert [v.name for v in args] == ["x", "w", "b", "skip"]
    assert len(func.params) == len(args) + len(n.outputs)


def test_scalar_constant_inputs_of_a_fused_node_are_folded():
    """A hand-made fused node may take a scalar constant as an argument: it becomes an immediate."""
    g = Graph()
    x = g.add_input("x", T(2, 8))
    k = g.add_const(np.float32(3.0), "k")
    v = g.add_const(rnd(8), "v")
    out = g.add("add", [g.add("mul", [x, k]), v])
    g.set_outputs([out])
    ref = g.clone()
    f = fuse_nodes(g, list(g.nodes), "mul_add")
    assert "k" in f.body.constants and f.inputs == [x, v]
    # move the scalar out of the body: the node now passes it in
    body = f.body
    p = body.add_input("k", T())
    body.nodes[0].inputs[1] = p
    del body.constants["k"], body.const_values["k"]
    f.inputs.append(k)
    verify(g)
    _, args = build_primfunc(g, f)
    assert args == [x, v]
    compiled = compile_graph(g, "host", passes=[])
    assert compiled.plan["steps"][0]["args"] == ["x", "v", out.name]
    xs = [rnd(2, 8)]
    assert_close(interpret(ref, xs)[0], compiled(*xs))


def test_lower_plan_for_fused_nodes(host_target):
    g = softmax_prologue()
    get_pass("fuse_reductions").run(g)
    lowered = lower(g, host_target)
    (step,) = lowered.plan["steps"]
    (k,) = lowered.kernels
    assert step["kernel"] == k["name"] and k["name"].startswith("mul_add_softmax_")
    assert step["args"] == ["s", "mask", "softmax"]  # the scalar 0.25 lives in the body
    assert k["op"] == "softmax" and k["ops"] == ["mul", "add", "softmax"]
    assert lowered.plan["values"]["softmax"]["kind"] == "buffer"
    assert "mul" not in lowered.plan["values"]  # the body's intermediates are never buffers


def test_same_fused_kernel_twice_on_the_same_names_is_built_once():
    g = Graph()
    x = g.add_input("x", T(2, 8))
    a = g.add("neg", [g.add("exp", [x])])
    g.set_outputs([a])
    f = g.clone()
    get_pass("fuse_elementwise").run(f)
    # two steps running the very same fused node text: one kernel
    node = f.nodes[0]
    y = f.add_input("y", T(2, 8))
    twin = f.clone().nodes[0]
    twin.inputs = [y]
    twin.outputs[0].name = "neg_twin"
    twin.outputs[0].producer = twin
    f.nodes.append(twin)
    f.set_outputs([node.outputs[0], twin.outputs[0]])
    verify(f)
    compiled = compile_graph(f, "host", passes=[])
    assert compiled.report["num_kernels"] == 2 and compiled.report["num_unique_kernels"] == 1


def test_structurally_identical_fused_kernels_are_built_once():
    g = Graph()
    outs = []
    for name in ("x", "y"):
        v = g.add_input(name, T(2, 8))
        outs.append(g.add("neg", [g.add("exp", [v])]))
    g.set_outputs(outs)
    compiled = compile_and_compare(g, ["fuse_elementwise"])
    assert compiled.report["num_kernels"] == 2
    assert compiled.report["num_unique_kernels"] == 1
