"""fuse_elementwise: Before/Expected IR, hit counts, no recomputation of expensive producers, lone
reshapes, numerics (interpreter before vs after, compiled kernels vs interpreter), verify."""

from __future__ import annotations

import numpy as np
import pytest

from edgeopt.ir import Graph, TensorType, parse_graph, print_graph
from edgeopt.pipeline import get_pass
from tests.passes.fusion_harness import (
    assert_same_numerics,
    body_ops,
    fused_nodes,
    harness,
)

NAME = "fuse_elementwise"
RTOL = 1e-5
RNG = np.random.default_rng(23)
W = RNG.standard_normal((4, 8)).astype(np.float32)


BEFORE = """
graph main(%x: f32[1,4,6], %y: f32[1,4,6], %scale: f32[6]) {
  %a: f32[1,4,6] = add(%x, %y)
  %b: f32[1,4,6] = mul(%a, %scale)
  %c: f32[1,4,6] = tanh(%b)
  return %c
}"""

EXPECTED = """
graph main(%x: f32[1,4,6], %y: f32[1,4,6], %scale: f32[6]) {
  %c: f32[1,4,6] = fused(%x, %y, %scale) {"name": "add_mul_tanh", "anchor": "add"}
    graph add_mul_tanh(%x: f32[1,4,6], %y: f32[1,4,6], %scale: f32[6]) {
      %a: f32[1,4,6] = add(%x, %y)
      %b: f32[1,4,6] = mul(%a, %scale)
      %c: f32[1,4,6] = tanh(%b)
      return %c
    }
  return %c
}"""


_H = harness(NAME)
run_pass, assert_rewrites, assert_compiled_matches = (_H.run_pass, _H.assert_rewrites,
                                                     _H.assert_compiled_matches)


def test_chain():
    before, after, stats = assert_rewrites(BEFORE, EXPECTED)
    assert stats == {"fused_groups": 1, "fused_ops": 3}
    assert_same_numerics(before, after)


def test_scalar_constant_becomes_part_of_the_body():
    g = Graph()
    x = g.add_input("x", TensorType((2, 3), "f32"))
    half = g.add_const(np.float32(0.5), "half")
    vec = g.add_const(np.arange(3, dtype=np.float32), "vec")
    y = g.add("mul", [g.add("add", [x, vec]), half])
    g.set_outputs([g.add("sigmoid", [y])])
    before = g.clone()
    assert run_pass(g) == {"fused_groups": 1, "fused_ops": 3}
    (f,) = fused_nodes(g)
    assert f.inputs == [x, vec]  # the [3] vector is a kernel argument; the scalar is an immediate
    assert list(f.body.constants) == ["half"] and f.body.constants["half"] == np.float32(0.5)
    assert_same_numerics(before, g)


def test_tree_with_broadcasting():
    before = """
    graph main(%x: f32[2,3,4], %y: f32[3,1], %z: f32[4]) {
      %a: f32[2,3,4] = add(%x, %y)
      %b: f32[2,3,4] = mul(%a, %z)
      %c: f32[3,4] = sub(%y, %z)
      %d: f32[3,4] = neg(%c)
      %e: f32[2,3,4] = maximum(%b, %d)
      %f: f32[2,3,4] = exp(%e)
      return %f
    }"""
    expected = """
    graph main(%x: f32[2,3,4], %y: f32[3,1], %z: f32[4]) {
      %f: f32[2,3,4] = fused(%x, %y, %z) {"name": "add_mul_sub_neg_maximum_exp", "anchor": "add"}
        graph add_mul_sub_neg_maximum_exp(%x: f32[2,3,4], %y: f32[3,1], %z: f32[4]) {
          %a: f32[2,3,4] = add(%x, %y)
          %b: f32[2,3,4] = mul(%a, %z)
          %c: f32[3,4] = sub(%y, %z)
          %d: f32[3,4] = neg(%c)
          %e: f32[2,3,4] = maximum(%b, %d)
          %f: f32[2,3,4] = exp(%e)
          return %f
        }
      return %f
    }"""
    g, after, stats = assert_rewrites(before, expected)
    assert stats == {"fused_groups": 1, "fused_ops": 6}
    assert_same_numerics(g, after)


def test_expensive_producer_broadcast_to_a_bigger_shape_stays_out():
    """sigmoid [3,4] read by a [2,3,4] kernel would be computed twice per element: it stays its own kernel."""
    g = parse_graph("""
    graph main(%x: f32[2,3,4], %y: f32[3,1], %z: f32[4]) {
      %a: f32[2,3,4] = add(%x, %y)
      %m: f32[3,4] = mul(%z, %y)
      %s: f32[3,4] = sigmoid(%m)
      %b: f32[2,3,4] = sub(%a, %s)
      %c: f32[2,3,4] = tanh(%b)
      return %c
    }""")
    before = g.clone()
    assert run_pass(g) == {"fused_groups": 2, "fused_ops": 5}
    assert body_ops(g) == [["mul", "sigmoid"], ["add", "sub", "tanh"]]
    assert_same_numerics(before, g)


def test_cheap_producer_broadcast_to_a_bigger_shape_joins():
    g = parse_graph("""
    graph main(%x: f32[2,3,4], %y: f32[3,1], %z: f32[4]) {
      %a: f32[2,3,4] = add(%x, %y)
      %m: f32[3,4] = mul(%z, %y)
      %s: f32[3,4] = neg(%m)
      %b: f32[2,3,4] = sub(%a, %s)
      %c: f32[2,3,4] = tanh(%b)
      return %c
    }""")
    before = g.clone()
    assert run_pass(g) == {"fused_groups": 1, "fused_ops": 5}
    assert_same_numerics(before, g)


def test_expensive_anchor_is_not_broadcast_by_its_epilogue():
    """The same computation as test_expensive_producer_broadcast_to_a_bigger_shape_stays_out, but with the
    sigmoid before the add in graph order: the sigmoid now anchors and the [2,3,4] ops join it."""
    g = parse_graph("""
    graph main(%x: f32[2,3,4], %y: f32[3,1], %z: f32[4]) {
      %m: f32[3,4] = mul(%z, %y)
      %s: f32[3,4] = sigmoid(%m)
      %a: f32[2,3,4] = add(%x, %y)
      %b: f32[2,3,4] = sub(%a, %s)
      %c: f32[2,3,4] = tanh(%b)
      return %c
    }""")
    run_pass(g)
    assert body_ops(g) == [["mul", "sigmoid"], ["add", "sub", "tanh"]]


def test_expensive_producer_read_twice_in_the_group_stays_out():
    g = parse_graph("""
    graph main(%x: f32[2,4], %y: f32[2,4]) {
      %t: f32[2,4] = tanh(%x)
      %a: f32[2,4] = add(%t, %y)
      %b: f32[2,4] = mul(%a, %t)
      return %b
    }""")
    before = g.clone()
    assert run_pass(g) == {"fused_groups": 1, "fused_ops": 2}
    assert body_ops(g) == [["add", "mul"]]
    assert [n.op for n in g.nodes] == ["tanh", "fused"]
    assert_same_numerics(before, g)


def test_cheap_producer_read_twice_in_the_group_joins():
    g = parse_graph("""
    graph main(%x: f32[2,4], %y: f32[2,4]) {
      %t: f32[2,4] = neg(%x)
      %a: f32[2,4] = add(%t, %y)
      %b: f32[2,4] = mul(%a, %t)
      return %b
    }""")
    before = g.clone()
    assert run_pass(g) == {"fused_groups": 1, "fused_ops": 3}
    assert body_ops(g) == [["neg", "add", "mul"]]
    assert_same_numerics(before, g)


def test_producer_with_a_reader_outside_stays_out():
    g = parse_graph("""
    graph main(%x: f32[2,4], %y: f32[2,4]) {
      %a: f32[2,4] = add(%x, %y)
      %b: f32[2,4] = relu(%a)
      %c: f32[2,4] = exp(%b)
      %d: f32[2,4] = sigmoid(%a)
      %s: f32[2,4] = softmax(%d) {"axis": -1}
      return %c, %s
    }""")
    before = g.clone()
    assert run_pass(g) == {"fused_groups": 1, "fused_ops": 2}
    assert body_ops(g) == [["relu", "exp"]]
    assert [n.op for n in g.nodes] == ["add", "fused", "sigmoid", "softmax"]
    assert_same_numerics(before, g)


def test_lone_reshape_stays_a_view_but_joins_a_chain():
    g = parse_graph("""
    graph main(%x: f32[2,3,4], %y: f32[6,4]) {
      %r: f32[6,4] = reshape(%x) {"shape": [6, 4]}
      %lone: f32[24] = reshape(%y) {"shape": [24]}
      %e: f32[6,4] = exp(%r)
      %t: f32[4,6] = transpose(%e) {"perm": [1, 0]}
      %v: f32[24] = reshape(%t) {"shape": [24]}
      %n: f32[24] = neg(%v)
      return %n, %lone
    }""")
    before = g.clone()
    assert run_pass(g) == {"fused_groups": 1, "fused_ops": 5}
    assert body_ops(g) == [["reshape", "exp", "transpose", "reshape", "neg"]]
    assert [n.op for n in g.nodes] == ["fused", "reshape"]  # %lone stays a view
    assert_same_numerics(before, g)


def test_lone_reshapes_and_single_ops_are_left_alone():
    g = parse_graph("""
    graph main(%x: f32[2,3,4]) {
      %r: f32[6,4] = reshape(%x) {"shape": [6, 4]}
      %s: f32[24] = reshape(%r) {"shape": [24]}
      %e: f32[2,3,4] = exp(%x)
      return %s, %e
    }""")
    text = print_graph(g)
    assert run_pass(g) == {"fused_groups": 0, "fused_ops": 0}
    assert print_graph(g) == text


def test_injective_ops_join():
    g = Graph()
    x = g.add_input("x", TensorType((2, 3, 4), "f32"))
    r = g.add("relu", [x])
    s = g.add("slice", [r], {"axis": 1, "start": 1, "end": 3})
    t = g.add("transpose", [s], {"perm": [0, 2, 1]})
    p = g.add("pad", [t], {"pads": [0, 0, 0, 0, 1, 1]})
    c = g.add("concat", [p, p], {"axis": 0})
    g.set_outputs([g.add("tanh", [c])])
    before = g.clone()
    assert run_pass(g) == {"fused_groups": 1, "fused_ops": 6}
    assert body_ops(g) == [["relu", "slice", "transpose", "pad", "concat", "tanh"]]
    assert_same_numerics(before, g)


def test_does_not_cross_reductions_contractions_or_fused_kernels():
    g = parse_graph("""
    graph main(%x: f32[2,8], %y: f32[2,4]) {
      const %w: f32[4,8]
      %a: f32[2,8] = relu(%x)
      %b: f32[2,8] = exp(%a)
      %l: f32[2,4] = linear(%b, %w) {"weight_layout": "oi"}
      %c: f32[2,4] = add(%l, %y)
      %d: f32[2,4] = softmax(%c) {"axis": -1}
      %e: f32[2,4] = sigmoid(%d)
      %f: f32[2,4] = neg(%e)
      return %f
    }""", {"w": W})
    before = g.clone()
    get_pass("fuse_epilogue").run(g)  # linear + add
    assert body_ops(g) == [["linear", "add"]]
    assert run_pass(g) == {"fused_groups": 2, "fused_ops": 4}
    assert body_ops(g) == [["relu", "exp"], ["linear", "add"], ["sigmoid", "neg"]]
    assert [n.op for n in g.nodes] == ["fused", "fused", "softmax", "fused"]
    assert_same_numerics(before, g)


def test_independent_chains_are_separate_groups():
    g = parse_graph("""
    graph main(%x: f32[2,4], %y: f32[3]) {
      %a: f32[2,4] = exp(%x)
      %b: f32[2,4] = neg(%a)
      %c: f32[3] = relu(%y)
      %d: f32[3] = clamp(%c) {"min": null, "max": 1.0}
      %e: f32[3] = sqrt(%d)
      return %b, %e
    }""")
    before = g.clone()
    assert run_pass(g) == {"fused_groups": 2, "fused_ops": 5}
    assert body_ops(g) == [["exp", "neg"], ["relu", "clamp", "sqrt"]]
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
    "chain": BEFORE,
    "broadcast_tree": """
        graph main(%x: f32[2,3,8], %y: f32[3,1], %z: f32[8]) {
          %a: f32[2,3,8] = add(%x, %y)
          %b: f32[2,3,8] = mul(%a, %z)
          %c: f32[3,8] = sub(%y, %z)
          %d: f32[3,8] = neg(%c)
          %e: f32[2,3,8] = maximum(%b, %d)
          %f: f32[2,3,8] = sigmoid(%e)
          return %f
        }""",
    "shape_ops": """
        graph main(%x: f32[2,3,4], %y: f32[4,6]) {
          %r: f32[2,3,4] = relu(%x)
          %v: f32[6,4] = reshape(%r) {"shape": [6, 4]}
          %t: f32[4,6] = transpose(%v) {"perm": [1, 0]}
          %a: f32[4,6] = add(%t, %y)
          %s: f32[4,4] = slice(%a) {"axis": 1, "start": 1, "end": 5, "step": 1}
          %p: f32[5,5] = pad(%s) {"pads": [0, 1, 0, 1], "value": 0.0}
          %c: f32[10,5] = concat(%p, %p) {"axis": 0}
          %h: f32[10,5] = tanh(%c)
          return %h
        }""",
    "two_outputs_two_groups": """
        graph main(%x: f32[4,16], %y: f32[4,16]) {
          %a: f32[4,16] = sub(%x, %y)
          %b: f32[4,16] = exp(%a)
          %c: f32[4,16] = gelu(%x) {"approximate": "tanh"}
          %d: f32[4,16] = mul(%c, %y)
          return %b, %d
        }""",
}


@pytest.mark.parametrize("case", sorted(COMPILED))
def test_compiled_fused_kernels_match_the_interpreter(case):
    g = parse_graph(COMPILED[case])
    compiled = assert_compiled_matches(g, seed=6)
    stats = compiled.report["pass_stats"][NAME]
    assert stats["fused_groups"] >= 1
    assert compiled.report["num_kernels"] == stats["fused_groups"]  # every op ended up in a fused kernel
    assert not [k for k in compiled.report["kernels"] if k["schedule"].startswith(("fallback", "unscheduled"))]


def test_compiled_after_the_epilogue_pass():
    g = parse_graph("""
    graph main(%x: f32[2,8], %y: f32[2,4]) {
      const %w: f32[4,8]
      %a: f32[2,8] = relu(%x)
      %b: f32[2,8] = exp(%a)
      %l: f32[2,4] = linear(%b, %w) {"weight_layout": "oi"}
      %c: f32[2,4] = add(%l, %y)
      %d: f32[2,4] = softmax(%c) {"axis": -1}
      %e: f32[2,4] = sigmoid(%d)
      %f: f32[2,4] = neg(%e)
      return %f
    }""", {"w": W})
    compiled = assert_compiled_matches(g, seed=7, passes=("fuse_epilogue", NAME))
    assert [k["ops"] for k in compiled.report["kernels"]] == [
        ["relu", "exp"], ["linear", "add"], ["softmax"], ["sigmoid", "neg"]]
