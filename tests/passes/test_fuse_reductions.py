"""fuse_reductions: Before/Expected IR, hit counts, cheap-only prologues, same-type epilogues, numerics
(interpreter before vs after, compiled kernels vs interpreter), verify."""

from __future__ import annotations

import numpy as np
import pytest

from edgeopt.ir import Graph, TensorType, parse_graph, print_graph
from edgeopt.ir.registry import all_ops
from tests.passes.fusion_harness import (
    assert_same_numerics,
    body_ops,
    fused_nodes,
    harness,
)

NAME = "fuse_reductions"
#: the ops the op traits name: cheap elementwise ops (prologues) and row reductions (anchors)
CHEAP = sorted(n for n, o in all_ops().items() if o.cheap and o.kind == "elementwise")
REDUCTIONS = sorted(n for n, o in all_ops().items() if o.row_reduction)
RTOL = 1e-5
F = TensorType((2, 3, 8), "f32")


BEFORE = """
graph main(%h: f32[1,4,8], %skip: f32[1,4,8]) {
  const %g: f32[8] = [1.0, 0.5, 2.0, 1.5, 1.0, 0.25, 0.75, 1.0]
  const %b: f32[8] = [0.0, 0.5, -0.5, 1.0, 0.0, 0.25, -1.0, 0.125]
  %a: f32[1,4,8] = add(%h, %skip)
  %n: f32[1,4,8] = layer_norm(%a, %g, %b) {"normalized_ndim": 1, "eps": 1e-12}
  return %n
}"""

EXPECTED = """
graph main(%h: f32[1,4,8], %skip: f32[1,4,8]) {
  const %g: f32[8] = [1.0, 0.5, 2.0, 1.5, 1.0, 0.25, 0.75, 1.0]
  const %b: f32[8] = [0.0, 0.5, -0.5, 1.0, 0.0, 0.25, -1.0, 0.125]
  %n: f32[1,4,8] = fused(%h, %skip, %g, %b) {"name": "add_layer_norm", "anchor": "layer_norm"}
    graph add_layer_norm(%h: f32[1,4,8], %skip: f32[1,4,8], %g: f32[8], %b: f32[8]) {
      %a: f32[1,4,8] = add(%h, %skip)
      %n: f32[1,4,8] = layer_norm(%a, %g, %b) {"normalized_ndim": 1, "eps": 1e-12}
      return %n
    }
  return %n
}"""


_H = harness(NAME)
run_pass, assert_rewrites, assert_compiled_matches = (_H.run_pass, _H.assert_rewrites,
                                                     _H.assert_compiled_matches)


def test_residual_add_layer_norm():
    before, after, stats = assert_rewrites(BEFORE, EXPECTED)
    assert stats == {"fused_groups": 1, "fused_ops": 2}
    assert_same_numerics(before, after)


def test_softmax_with_scale_and_mask_prologue_and_epilogue():
    before = """
    graph main(%s: f32[2,3,5], %scale: f32[], %mask: f32[1,1,5], %keep: f32[2,3,5]) {
      %m: f32[2,3,5] = mul(%s, %scale)
      %a: f32[2,3,5] = add(%m, %mask)
      %p: f32[2,3,5] = softmax(%a) {"axis": -1}
      %q: f32[2,3,5] = mul(%p, %keep)
      return %q
    }"""
    expected = """
    graph main(%s: f32[2,3,5], %scale: f32[], %mask: f32[1,1,5], %keep: f32[2,3,5]) {
      %q: f32[2,3,5] = fused(%s, %scale, %mask, %keep) {"name": "mul_add_softmax", "anchor": "softmax"}
        graph mul_add_softmax(%s: f32[2,3,5], %scale: f32[], %mask: f32[1,1,5], %keep: f32[2,3,5]) {
          %m: f32[2,3,5] = mul(%s, %scale)
          %a: f32[2,3,5] = add(%m, %mask)
          %p: f32[2,3,5] = softmax(%a) {"axis": -1}
          %q: f32[2,3,5] = mul(%p, %keep)
          return %q
        }
      return %q
    }"""
    g, after, stats = assert_rewrites(before, expected)
    assert stats == {"fused_groups": 1, "fused_ops": 4}
    assert_same_numerics(g, after)


def _prologue_graph(op: str) -> Graph:
    """``op`` (unary, or binary with a second input) feeding a softmax."""
    g = Graph()
    x = g.add_input("x", F)
    if op in ("add", "sub", "mul", "div", "maximum", "minimum"):
        y = g.add(op, [x, g.add_input("y", F)])
    elif op == "where":
        y = g.add("where", [g.add_input("c", TensorType(F.shape, "bool")), x, g.add_input("y", F)])
    elif op == "clamp":
        y = g.add("clamp", [x], {"min": -1.0, "max": 1.0})
    elif op == "cast":
        y = g.add("cast", [g.add_input("h", TensorType(F.shape, "f16"))], {"dtype": "f32"})
    else:
        y = g.add(op, [x])
    g.set_outputs([g.add("softmax", [y], {"axis": -1})])
    return g


@pytest.mark.parametrize("op", CHEAP)
def test_cheap_producers_join_as_prologue(op):
    g = _prologue_graph(op)
    before = g.clone()
    assert run_pass(g) == {"fused_groups": 1, "fused_ops": 2}
    assert body_ops(g) == [[op, "softmax"]]
    assert_same_numerics(before, g)


@pytest.mark.parametrize("op", ["exp", "tanh", "sigmoid", "gelu", "sqrt", "log", "erf", "silu", "abs", "pow"])
def test_expensive_producers_stay_out(op):
    """Recomputing exp/tanh/... on each of the reduction's reads costs more than storing them."""
    g = Graph()
    x = g.add_input("x", F)
    y = g.add(op, [x, g.add_input("y", F)]) if op == "pow" else g.add(op, [x])
    g.set_outputs([g.add("softmax", [y], {"axis": -1})])
    text = print_graph(g)
    assert run_pass(g) == {"fused_groups": 0, "fused_ops": 0}
    assert print_graph(g) == text


def test_cheap_chain_stops_at_an_expensive_producer():
    g = parse_graph("""
    graph main(%x: f32[2,3,8], %y: f32[2,3,8]) {
      %e: f32[2,3,8] = exp(%x)
      %a: f32[2,3,8] = add(%e, %y)
      %r: f32[2,3,8] = relu(%a)
      %s: f32[2,3] = sum(%r) {"axes": [2], "keepdims": false}
      return %s
    }""")
    before = g.clone()
    assert run_pass(g) == {"fused_groups": 1, "fused_ops": 3}
    assert body_ops(g) == [["add", "relu", "sum"]]
    assert [n.op for n in g.nodes] == ["exp", "fused"]
    assert_same_numerics(before, g)


def test_prologue_with_another_reader_stays_out():
    g = parse_graph("""
    graph main(%h: f32[1,4,8], %skip: f32[1,4,8]) {
      %a: f32[1,4,8] = add(%h, %skip)
      %n: f32[1,4,8] = layer_norm(%a) {"normalized_ndim": 1, "eps": 1e-05}
      %e: f32[1,4,8] = exp(%a)
      return %n, %e
    }""")
    text = print_graph(g)
    assert run_pass(g) == {"fused_groups": 0, "fused_ops": 0}  # %e reads %a: %a is stored anyway
    assert print_graph(g) == text


def test_prologue_read_by_the_epilogue_too_joins():
    """add(layer_norm(%a), %a): both readers of %a end up in the kernel, so %a joins (recomputed: it is cheap)."""
    g = parse_graph("""
    graph main(%h: f32[1,4,8], %skip: f32[1,4,8]) {
      %a: f32[1,4,8] = add(%h, %skip)
      %n: f32[1,4,8] = layer_norm(%a) {"normalized_ndim": 1, "eps": 1e-05}
      %t: f32[1,4,8] = add(%n, %a)
      return %t
    }""")
    before = g.clone()
    assert run_pass(g) == {"fused_groups": 1, "fused_ops": 3}
    assert body_ops(g) == [["add", "layer_norm", "add"]]
    assert_same_numerics(before, g)


def test_prologue_that_is_a_graph_output_stays_out():
    g = parse_graph("""
    graph main(%h: f32[1,4,8], %skip: f32[1,4,8]) {
      %a: f32[1,4,8] = add(%h, %skip)
      %n: f32[1,4,8] = layer_norm(%a) {"normalized_ndim": 1, "eps": 1e-05}
      return %n, %a
    }""")
    text = print_graph(g)
    assert run_pass(g) == {"fused_groups": 0, "fused_ops": 0}
    assert print_graph(g) == text


def test_epilogue_keeps_the_reduction_output_type():
    """sum -> [2,3]; scaling by a [3] vector keeps [2,3] and joins; a growing add and a cast do not."""
    g = parse_graph("""
    graph main(%x: f32[2,3,8], %v: f32[3], %big: f32[4,2,3]) {
      %s: f32[2,3] = sum(%x) {"axes": [2], "keepdims": false}
      %m: f32[2,3] = mul(%s, %v)
      %n: f32[2,3] = neg(%m)
      %g: f32[4,2,3] = add(%n, %big)
      %r: f32[4,2,3] = relu(%g)
      return %r
    }""")
    before = g.clone()
    assert run_pass(g) == {"fused_groups": 1, "fused_ops": 3}
    assert body_ops(g) == [["sum", "mul", "neg"]]
    assert [n.op for n in g.nodes] == ["fused", "add", "relu"]
    assert_same_numerics(before, g)

    h = parse_graph("""
    graph main(%x: f32[2,3,8]) {
      %s: f32[2,3] = max(%x) {"axes": [2], "keepdims": false}
      %c: f16[2,3] = cast(%s) {"dtype": "f16"}
      return %c
    }""")
    assert run_pass(h) == {"fused_groups": 0, "fused_ops": 0}


def test_reduction_does_not_join_another_reduction():
    g = parse_graph("""
    graph main(%x: f32[2,3,8]) {
      %p: f32[2,3,8] = softmax(%x) {"axis": -1}
      %q: f32[2,3,8] = mul(%p, %p)
      %s: f32[2,3] = sum(%q) {"axes": [2], "keepdims": false}
      %r: f32[2,3] = sqrt(%s)
      return %r
    }""")
    before = g.clone()
    assert run_pass(g) == {"fused_groups": 2, "fused_ops": 4}
    assert body_ops(g) == [["softmax", "mul"], ["sum", "sqrt"]]
    assert_same_numerics(before, g)


@pytest.mark.parametrize("op", [r for r in REDUCTIONS if r not in ("softmax", "log_softmax", "layer_norm")])
def test_every_reduction_anchors(op):
    g = Graph()
    x = g.add_input("x", TensorType((2, 3, 4, 4), "f32"))
    y = g.add("relu", [x])
    attrs = {"output_size": [1, 1]} if op == "adaptive_avg_pool2d" else {"axes": [-1], "keepdims": True}
    r = g.add(op, [y], attrs)
    g.set_outputs([g.add("neg", [r])])
    before = g.clone()
    assert run_pass(g) == {"fused_groups": 1, "fused_ops": 3}
    assert body_ops(g) == [["relu", op, "neg"]]
    assert fused_nodes(g)[0].attrs["anchor"] == op
    assert_same_numerics(before, g)


@pytest.mark.parametrize("op", ["argmax", "max_pool2d", "relu"])
def test_non_anchors(op):
    g = Graph()
    x = g.add_input("x", TensorType((2, 3, 4, 4), "f32"))
    y = g.add("add", [x, x])
    if op == "argmax":
        r = g.add("argmax", [y], {"axes": [-1]})
    elif op == "max_pool2d":
        r = g.add("max_pool2d", [y], {"kernel": [2, 2], "stride": [2, 2]})
    else:
        r = g.add("relu", [y])
    g.set_outputs([r])
    assert run_pass(g) == {"fused_groups": 0, "fused_ops": 0}


def test_two_independent_groups_and_hit_counts():
    g = parse_graph("""
    graph main(%x: f32[2,3,8], %y: f32[2,3,8]) {
      %a: f32[2,3,8] = sub(%x, %y)
      %l: f32[2,3,8] = log_softmax(%a) {"axis": 1}
      %m: f32[2,1,8] = mean(%y) {"axes": [1], "keepdims": true}
      %c: f32[2,1,8] = clamp(%m) {"min": 0.0, "max": null}
      return %l, %c
    }""")
    before = g.clone()
    assert run_pass(g) == {"fused_groups": 2, "fused_ops": 4}
    assert body_ops(g) == [["sub", "log_softmax"], ["mean", "clamp"]]
    assert_same_numerics(before, g)


def test_pass_is_idempotent_and_leaves_the_before_graph_alone():
    g = parse_graph(BEFORE)
    text = print_graph(g)
    h = g.clone()
    run_pass(h)
    assert print_graph(g) == text
    fused_text = print_graph(h)
    assert run_pass(h) == {"fused_groups": 0, "fused_ops": 0}
    assert print_graph(h) == fused_text


# -- compiled kernels vs the interpreter ---------------------------------------------------------------------

COMPILED = {
    "add_layer_norm_relu": ("""
        graph main(%h: f32[2,4,16], %skip: f32[2,4,16]) {
          const %g: f32[16]
          const %b: f32[16]
          %a: f32[2,4,16] = add(%h, %skip)
          %n: f32[2,4,16] = layer_norm(%a, %g, %b) {"normalized_ndim": 1, "eps": 1e-05}
          %r: f32[2,4,16] = relu(%n)
          return %r
        }""", ["add", "layer_norm", "relu"]),
    "layer_norm_two_axes": ("""
        graph main(%h: f32[2,3,4], %skip: f32[3,4]) {
          %a: f32[2,3,4] = sub(%h, %skip)
          %n: f32[2,3,4] = layer_norm(%a) {"normalized_ndim": 2, "eps": 1e-05}
          return %n
        }""", ["sub", "layer_norm"]),
    "softmax_scale_mask": ("""
        graph main(%s: f32[2,3,7], %mask: f32[1,1,7]) {
          const %scale: f32[] = 0.125
          %m: f32[2,3,7] = mul(%s, %scale)
          %a: f32[2,3,7] = add(%m, %mask)
          %p: f32[2,3,7] = softmax(%a) {"axis": -1}
          return %p
        }""", ["mul", "add", "softmax"]),
    "softmax_middle_axis": ("""
        graph main(%s: f32[2,5,3], %y: f32[2,5,3]) {
          %m: f32[2,5,3] = maximum(%s, %y)
          %p: f32[2,5,3] = softmax(%m) {"axis": 1}
          %q: f32[2,5,3] = mul(%p, %y)
          return %q
        }""", ["maximum", "softmax", "mul"]),
    "variance": ("""
        graph main(%x: f32[3,10], %mu: f32[3,1]) {
          %d: f32[3,10] = sub(%x, %mu)
          %q: f32[3,10] = mul(%d, %d)
          %v: f32[3,1] = mean(%q) {"axes": [1], "keepdims": true}
          %s: f32[3,1] = sqrt(%v)
          return %s
        }""", ["sub", "mul", "mean", "sqrt"]),
    "global_pool": ("""
        graph main(%x: f32[1,4,5,5]) {
          %c: f32[1,4,5,5] = clamp(%x) {"min": 0.0, "max": 6.0}
          %p: f32[1,4,1,1] = adaptive_avg_pool2d(%c) {"output_size": [1, 1]}
          %s: f32[1,4,1,1] = sigmoid(%p)
          return %s
        }""", ["clamp", "adaptive_avg_pool2d", "sigmoid"]),
}


@pytest.mark.parametrize("case", sorted(COMPILED))
def test_compiled_fused_kernels_match_the_interpreter(case):
    text, ops = COMPILED[case]
    rng = np.random.default_rng(4)
    consts = {"g": rng.standard_normal(16).astype(np.float32), "b": rng.standard_normal(16).astype(np.float32)}
    g = parse_graph(text, consts if "const %g" in text else None)
    compiled = assert_compiled_matches(g, seed=5)
    assert compiled.report["pass_stats"][NAME]["fused_groups"] == 1
    assert [k["ops"] for k in compiled.report["kernels"]] == [ops]
    assert not [k for k in compiled.report["kernels"] if k["schedule"].startswith(("fallback", "unscheduled"))]
