"""Clean-up passes: constant_folding, remove_noops, common_subexpression_elimination, fold_batch_norm,
fold_affine. Structure (IR after the pass, hit counts) and numerics (interpreter before vs after)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import edgeopt
from edgeopt.ir import Graph, TensorType, interpret, verify
from edgeopt.pipeline import get_pass

RNG = np.random.default_rng(5)


def _w(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


def run(name: str, g: Graph):
    """Run the pass on a clone; check verify and numerics; return (after, stats)."""
    after = g.clone()
    stats = get_pass(name).run(after)
    verify(after)
    xs = [RNG.standard_normal(v.type.shape).astype(v.type.np_dtype) for v in g.inputs]
    for a, b in zip(interpret(after, xs), interpret(g, xs)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5 * max(1.0, float(np.abs(b).max())))
    return after, stats


def ops(g: Graph) -> list[str]:
    return [n.op for n in g.nodes]


# -- constant_folding --------------------------------------------------------------------------------------

def test_constant_folding_folds_weight_only_chains_and_keeps_the_rest():
    g = Graph()
    x = g.add_input("x", TensorType((2, 4), "f32"))
    w = g.add_const(_w(3, 4), "w")
    wt = g.add("transpose", [w], {"perm": [1, 0]})
    w2 = g.add("mul", [wt, g.add_const(np.float32(2.0), "two")])
    y = g.add("matmul", [x, w2])
    big = g.add("broadcast_to", [g.add_const(np.float32(1.0), "one")], {"shape": [100, 100]})
    g.set_outputs([y, big])
    after, stats = run("constant_folding", g)
    assert stats == {"folded": 2}  # transpose and mul; the 10000-element broadcast is not materialized
    assert ops(after) == ["matmul", "broadcast_to"]
    folded = after.nodes[0].inputs[1]
    assert after.is_const(folded) and folded.type.shape == (4, 3)


# -- remove_noops ------------------------------------------------------------------------------------------

def test_remove_noops_identities_merges_and_cancellations():
    g = Graph()
    x = g.add_input("x", TensorType((1, 4, 3), "f32"))
    a = g.add("cast", [x], {"dtype": "f32"})
    a = g.add("reshape", [a], {"shape": [1, 4, 3]})
    a = g.add("mul", [a, g.add_const(np.float32(1.0), "one")])
    a = g.add("add", [a, g.add_const(np.zeros((3,), np.float32), "zeros")])
    t = g.add("transpose", [a], {"perm": [0, 2, 1]})
    t = g.add("transpose", [t], {"perm": [0, 2, 1]})  # cancels the one before
    r = g.add("reshape", [g.add("reshape", [t], {"shape": [12]})], {"shape": [3, 4]})
    p = g.add("transpose", [g.add("transpose", [x], {"perm": [1, 0, 2]})], {"perm": [0, 2, 1]})
    g.set_outputs([g.add("relu", [r]), g.add("relu", [p])])
    after, stats = run("remove_noops", g)
    assert sorted(ops(after)) == ["relu", "relu", "reshape", "transpose"]
    reshape = next(n for n in after.nodes if n.op == "reshape")
    transpose = next(n for n in after.nodes if n.op == "transpose")
    assert reshape.inputs[0] is after.inputs[0]  # one reshape straight from %x
    assert transpose.attrs == {"perm": [1, 2, 0]}  # the two transposes composed
    assert stats["identities"] == 4 and stats["merged_reshapes"] == 1 and stats["merged_transposes"] == 2


def test_remove_noops_keeps_what_changes_values_or_keeps_outputs_apart():
    g = Graph()
    x = g.add_input("x", TensorType((4,), "f32"))
    grown = g.add("add", [x, g.add_const(np.zeros((3, 4), np.float32), "z")])  # broadcasts: not a no-op
    half = g.add("mul", [x, g.add_const(np.float32(0.5), "h")])
    copy = g.add("copy", [x])  # a graph output that would otherwise alias the input
    g.set_outputs([grown, half, copy])
    after, stats = run("remove_noops", g)
    assert ops(after) == ["add", "mul", "copy"]
    assert stats["identities"] == 0 and stats["copies"] == 0


# -- common_subexpression_elimination ---------------------------------------------------------------------

def test_cse_merges_equal_nodes_and_equal_constants_only():
    g = Graph()
    x = g.add_input("x", TensorType((2, 3), "f32"))
    c1 = g.add_const(np.full((3,), 2.0, np.float32), "c1")
    c2 = g.add_const(np.full((3,), 2.0, np.float32), "c2")  # same bytes as c1
    a = g.add("mul", [x, c1])
    b = g.add("mul", [x, c2])  # same as a once the constants are merged
    c = g.add("softmax", [x], {"axis": 1})
    d = g.add("softmax", [x], {"axis": 0})  # different attributes: kept
    g.set_outputs([g.add("add", [a, b]), g.add("add", [c, d])])
    after, stats = run("common_subexpression_elimination", g)
    assert stats == {"removed_nodes": 1, "merged_constants": 1}
    assert ops(after) == ["mul", "softmax", "softmax", "add", "add"]
    assert after.nodes[3].inputs[0] is after.nodes[3].inputs[1]


# -- fold_batch_norm ---------------------------------------------------------------------------------------

def _bn_consts(g, c):
    return [g.add_const(_w(c), "mean"), g.add_const(RNG.uniform(0.5, 2, c).astype(np.float32), "var"),
            g.add_const(_w(c), "gamma"), g.add_const(_w(c), "beta")]


@pytest.mark.parametrize("layer", ["conv", "conv_nobias", "depthwise", "conv_t", "conv_t_groups2",
                                   "linear_oi", "linear_io"])
def test_fold_batch_norm_into_each_layer(layer):
    g = Graph()
    if layer.startswith("linear"):
        x = g.add_input("x", TensorType((3, 6), "f32"))
        io = layer == "linear_io"
        y = g.add("linear", [x, g.add_const(_w(6, 5) if io else _w(5, 6)), g.add_const(_w(5))],
                  {"weight_layout": "io" if io else "oi"})
        c = 5
    elif layer.startswith("conv_t"):
        groups = 2 if layer.endswith("groups2") else 1
        x = g.add_input("x", TensorType((1, 4, 5, 5), "f32"))
        y = g.add("conv_transpose2d", [x, g.add_const(_w(4, 6 // groups, 3, 3)), g.add_const(_w(6))],
                  {"stride": [2, 2], "groups": groups})
        c = 6
    else:
        groups = 4 if layer == "depthwise" else 1
        x = g.add_input("x", TensorType((1, 4, 6, 6), "f32"))
        ins = [x, g.add_const(_w(4, 4 // groups, 3, 3))] + ([] if layer == "conv_nobias" else [g.add_const(_w(4))])
        y = g.add("conv2d", ins, {"padding": [1, 1, 1, 1], "groups": groups})
        c = 4
    g.set_outputs([g.add("batch_norm", [y, *_bn_consts(g, c)], {"eps": 1e-3})])
    after, stats = run("fold_batch_norm", g)
    assert stats == {"folded": 1}
    assert "batch_norm" not in ops(after) and len(after.nodes) == 1 and len(after.nodes[0].inputs) == 3


def test_fold_batch_norm_refuses_shared_results_and_sequence_linears():
    g = Graph()
    x = g.add_input("x", TensorType((1, 4, 6, 6), "f32"))
    y = g.add("conv2d", [x, g.add_const(_w(4, 4, 1, 1))])
    bn = g.add("batch_norm", [y, *_bn_consts(g, 4)])
    s = g.add_input("s", TensorType((2, 4, 6), "f32"))  # linear on [N, L, C]: BN's axis 1 is L, not C
    z = g.add("linear", [s, g.add_const(_w(4, 6))])
    bn2 = g.add("batch_norm", [z, *_bn_consts(g, 4)])
    g.set_outputs([bn, y, bn2])  # y has a second reader
    after, stats = run("fold_batch_norm", g)
    assert stats == {"folded": 0} and ops(after).count("batch_norm") == 2


def test_fold_batch_norm_through_compile_matches_torch():
    torch.manual_seed(0)
    bn = torch.nn.BatchNorm2d(8)
    bn.running_mean.uniform_(-1, 1)
    bn.running_var.uniform_(0.5, 2)
    bn.weight.data.uniform_(0.5, 1.5)
    bn.bias.data.uniform_(-1, 1)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), bn, torch.nn.ReLU()).eval()
    x = torch.randn(1, 3, 10, 10)
    compiled = edgeopt.compile(model, (x,))
    assert compiled.report["pass_stats"]["fold_batch_norm"] == {"folded": 1}
    assert all(m.op != "batch_norm" for n in compiled.graph.nodes for m in (n.body.nodes if n.body else [n]))
    with torch.no_grad():
        ref = model(x).numpy()
    np.testing.assert_allclose(compiled(x.numpy()), ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max())


# -- fold_affine -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("op,const_shape,commuted", [
    ("mul", (4, 1, 1), False), ("mul", (), True), ("add", (1, 4, 1, 1), True), ("sub", (4, 1, 1), False)])
def test_fold_affine_into_conv(op, const_shape, commuted):
    g = Graph()
    x = g.add_input("x", TensorType((1, 3, 5, 5), "f32"))
    y = g.add("conv2d", [x, g.add_const(_w(4, 3, 3, 3)), g.add_const(_w(4))])
    c = g.add_const(_w(*const_shape) if const_shape else np.float32(1.7), "c")
    g.set_outputs([g.add(op, [c, y] if commuted else [y, c])])
    after, stats = run("fold_affine", g)
    assert stats == {"folded": 1} and ops(after) == ["conv2d"]


def test_fold_affine_into_linear_without_bias():
    g = Graph()
    x = g.add_input("x", TensorType((2, 6), "f32"))
    y = g.add("linear", [x, g.add_const(_w(6, 5))], {"weight_layout": "io"})
    g.set_outputs([g.add("add", [g.add("mul", [y, g.add_const(_w(5))]), g.add_const(_w(1, 5))])])
    after, stats = run("fold_affine", g)
    assert stats == {"folded": 2} and ops(after) == ["linear"] and len(after.nodes[0].inputs) == 3


@pytest.mark.parametrize("case", ["div", "spatial", "broadcasts_bigger", "const_minus_conv"])
def test_fold_affine_leaves_what_is_not_exact(case):
    g = Graph()
    x = g.add_input("x", TensorType((1, 3, 5, 5), "f32"))
    y = g.add("conv2d", [x, g.add_const(_w(4, 3, 3, 3)), g.add_const(_w(4))])
    if case == "div":
        out = g.add("div", [y, g.add_const(_w(4, 1, 1))])
    elif case == "spatial":
        out = g.add("mul", [y, g.add_const(_w(1, 3, 3))])
    elif case == "broadcasts_bigger":
        out = g.add("add", [y, g.add_const(_w(2, 4, 1, 1))])
    else:
        out = g.add("sub", [g.add_const(_w(4, 1, 1)), y])
    g.set_outputs([out])
    after, stats = run("fold_affine", g)
    assert stats == {"folded": 0} and len(after.nodes) == 2
