"""common_subexpression_elimination: Before/Expected IR, hit counts, numerics (interpreter before vs after), verify."""

from __future__ import annotations

import numpy as np
import pytest

from edgeopt.ir import Graph, interpret, parse_graph, print_graph, verify
from edgeopt.testing import assert_same_numerics, run_pass

NAME = "common_subexpression_elimination"
RNG = np.random.default_rng(3)
W = RNG.standard_normal((4, 8)).astype(np.float32)
W_OTHER = RNG.standard_normal((4, 8)).astype(np.float32)


def assert_rewrites(before: str, expected: str, constants: dict | None = None) -> tuple[Graph, Graph, dict]:
    """Parse Before, run the pass on a clone, compare its printed text with the printed Expected."""
    g = parse_graph(before, constants)
    verify(g)
    after = g.clone()
    stats = run_pass(NAME, after)
    assert print_graph(after) == print_graph(parse_graph(expected, constants))
    return g, after, stats


# -- duplicate nodes ---------------------------------------------------------------------------------------------

def test_docstring_example():
    before = """
    graph main(%x: f32[4]) {
      %a: f32[4] = exp(%x)
      %b: f32[4] = exp(%x)
      %c: f32[4] = add(%a, %b)
      return %c
    }"""
    expected = """
    graph main(%x: f32[4]) {
      %a: f32[4] = exp(%x)
      %c: f32[4] = add(%a, %a)
      return %c
    }"""
    g, after, stats = assert_rewrites(before, expected)
    assert stats == {"removed_nodes": 1, "merged_constants": 0}
    assert_same_numerics(g, after)


def test_duplicate_chains_merge_all_the_way_down():
    before = """
    graph main(%x: f32[2,8]) {
      const %w: f32[4,8]
      %a1: f32[2,4] = linear(%x, %w) {"weight_layout": "oi"}
      %b1: f32[2,4] = relu(%a1)
      %c1: f32[2,4] = softmax(%b1) {"axis": 1}
      %a2: f32[2,4] = linear(%x, %w) {"weight_layout": "oi"}
      %b2: f32[2,4] = relu(%a2)
      %c2: f32[2,4] = softmax(%b2) {"axis": 1}
      %d: f32[2,4] = sub(%c1, %c2)
      return %d, %c2
    }"""
    expected = """
    graph main(%x: f32[2,8]) {
      const %w: f32[4,8]
      %a1: f32[2,4] = linear(%x, %w) {"weight_layout": "oi"}
      %b1: f32[2,4] = relu(%a1)
      %c1: f32[2,4] = softmax(%b1) {"axis": 1}
      %d: f32[2,4] = sub(%c1, %c1)
      return %d, %c1
    }"""
    g, after, stats = assert_rewrites(before, expected, {"w": W})
    assert stats == {"removed_nodes": 3, "merged_constants": 0}
    assert_same_numerics(g, after)


def test_duplicate_graph_outputs_become_one_value():
    before = """
    graph main(%x: f32[2,3], %y: f32[2,3]) {
      %a: f32[2,3] = mul(%x, %y)
      %b: f32[2,3] = mul(%x, %y)
      %c: f32[2,3] = mul(%x, %y)
      return %a, %b, %c
    }"""
    expected = """
    graph main(%x: f32[2,3], %y: f32[2,3]) {
      %a: f32[2,3] = mul(%x, %y)
      return %a, %a, %a
    }"""
    g, after, stats = assert_rewrites(before, expected)
    assert stats == {"removed_nodes": 2, "merged_constants": 0}
    assert_same_numerics(g, after)


def test_different_attributes_are_not_merged():
    before = """
    graph main(%x: f32[2,3,4]) {
      %s0: f32[2,3,4] = softmax(%x) {"axis": 0}
      %s1: f32[2,3,4] = softmax(%x) {"axis": 1}
      %t0: f32[3,2,4] = transpose(%x) {"perm": [1, 0, 2]}
      %t1: f32[4,3,2] = transpose(%x) {"perm": [2, 1, 0]}
      %r0: f32[6,4] = reshape(%x) {"shape": [6, 4]}
      %r1: f32[2,12] = reshape(%x) {"shape": [2, 12]}
      %c0: f16[2,3,4] = cast(%x) {"dtype": "f16"}
      %c1: f64[2,3,4] = cast(%x) {"dtype": "f64"}
      %l0: f32[2,3,4] = leaky_relu(%x) {"alpha": 0.01}
      %l1: f32[2,3,4] = leaky_relu(%x) {"alpha": 0.02}
      %m0: f32[2,3] = sum(%x) {"axes": [2], "keepdims": false}
      %m1: f32[2,3,1] = sum(%x) {"axes": [2], "keepdims": true}
      return %s0, %s1, %t0, %t1, %r0, %r1, %c0, %c1, %l0, %l1, %m0, %m1
    }"""
    g = parse_graph(before)
    after = g.clone()
    assert run_pass(NAME, after) == {"removed_nodes": 0, "merged_constants": 0}
    assert print_graph(after) == print_graph(g)
    assert_same_numerics(g, after)


def test_different_inputs_or_ops_are_not_merged():
    before = """
    graph main(%x: f32[2,3], %y: f32[2,3]) {
      %a: f32[2,3] = exp(%x)
      %b: f32[2,3] = exp(%y)
      %c: f32[2,3] = log(%x)
      %d: f32[2,3] = sub(%x, %y)
      %e: f32[2,3] = sub(%y, %x)
      return %a, %b, %c, %d, %e
    }"""
    g = parse_graph(before)
    after = g.clone()
    assert run_pass(NAME, after) == {"removed_nodes": 0, "merged_constants": 0}
    assert print_graph(after) == print_graph(g)


def test_same_attributes_merge_regardless_of_key_order():
    before = """
    graph main(%x: f32[2,4]) {
      %a: f32[2,2] = slice(%x) {"axis": 1, "start": 0, "end": 2, "step": 1}
      %b: f32[2,2] = slice(%x) {"axis": 1, "start": 0, "end": 2, "step": 1}
      %c: f32[2,2] = slice(%x) {"axis": 1, "start": 2, "end": 4, "step": 1}
      %d: f32[2,2] = add(%a, %b)
      %e: f32[2,2] = add(%d, %c)
      return %e
    }"""
    expected = """
    graph main(%x: f32[2,4]) {
      %a: f32[2,2] = slice(%x) {"axis": 1, "start": 0, "end": 2, "step": 1}
      %c: f32[2,2] = slice(%x) {"axis": 1, "start": 2, "end": 4, "step": 1}
      %d: f32[2,2] = add(%a, %a)
      %e: f32[2,2] = add(%d, %c)
      return %e
    }"""
    g, after, stats = assert_rewrites(before, expected)
    assert stats == {"removed_nodes": 1, "merged_constants": 0}
    # a node whose attrs dict was built in another key order is still the same node
    g2 = parse_graph(before)
    g2.nodes[1].attrs = dict(reversed(list(g2.nodes[1].attrs.items())))
    assert run_pass(NAME, g2) == {"removed_nodes": 1, "merged_constants": 0}
    assert_same_numerics(g, after)


# -- constants ----------------------------------------------------------------------------------------------------

def test_equal_constants_are_merged_and_expose_more_duplicates():
    before = """
    graph main(%x: f32[2,8]) {
      const %w1: f32[4,8]
      const %w2: f32[4,8]
      const %c1: f32[3] = [2.0, 3.0, 4.0]
      const %c2: f32[3] = [2.0, 3.0, 4.0]
      %a: f32[2,4] = linear(%x, %w1) {"weight_layout": "oi"}
      %b: f32[2,4] = linear(%x, %w2) {"weight_layout": "oi"}
      %s: f32[2,4] = add(%a, %b)
      return %s, %c1, %c2
    }"""
    expected = """
    graph main(%x: f32[2,8]) {
      const %w1: f32[4,8]
      const %c1: f32[3] = [2.0, 3.0, 4.0]
      %a: f32[2,4] = linear(%x, %w1) {"weight_layout": "oi"}
      %s: f32[2,4] = add(%a, %a)
      return %s, %c1, %c1
    }"""
    g, after, stats = assert_rewrites(before, expected, {"w1": W, "w2": W.copy()})
    assert stats == {"removed_nodes": 1, "merged_constants": 2}
    assert after.weight_bytes() == W.nbytes + 12
    assert_same_numerics(g, after)


@pytest.mark.parametrize("second", [
    'const %c2: f32[4] = [1.0, 2.0, 3.0, 5.0]',         # other values
    'const %c2: i32[4] = [1065353216, 1073741824, 1077936128, 1082130432]',  # same bytes, other dtype
    'const %c2: f32[2,2] = [[1.0, 2.0], [3.0, 4.0]]',    # same bytes, other shape
    'const %c2: f32[1,4] = [[1.0, 2.0, 3.0, 4.0]]',      # same bytes, other rank
])
def test_constants_that_differ_in_value_dtype_or_shape_are_kept_apart(second):
    before = f"""
    graph main(%x: f32[4]) {{
      const %c1: f32[4] = [1.0, 2.0, 3.0, 4.0]
      {second}
      %a: f32[4] = mul(%x, %c1)
      return %a, %c2
    }}"""
    g = parse_graph(before)
    if "i32" in second:  # the test's premise: the two arrays really have the same bytes
        assert g.constants["c1"].tobytes() == g.constants["c2"].tobytes()
    after = g.clone()
    assert run_pass(NAME, after) == {"removed_nodes": 0, "merged_constants": 0}
    assert print_graph(after) == print_graph(g)


def test_zero_and_negative_zero_are_not_merged():
    before = """
    graph main(%x: f32[2]) {
      const %pz: f32[2] = [0.0, 1.0]
      const %nz: f32[2] = [-0.0, 1.0]
      %a: f32[2] = div(%x, %pz)
      %b: f32[2] = div(%x, %nz)
      return %a, %b
    }"""
    g = parse_graph(before)
    after = g.clone()
    assert run_pass(NAME, after) == {"removed_nodes": 0, "merged_constants": 0}
    assert print_graph(after) == print_graph(g)
    with np.errstate(divide="ignore"):
        a, b = interpret(after, [np.array([1.0, 2.0], np.float32)])
    assert a[0] == np.inf and b[0] == -np.inf


def test_equal_weights_merge_but_different_weights_do_not():
    before = """
    graph main(%x: f32[2,8]) {
      const %w1: f32[4,8]
      const %w2: f32[4,8]
      const %w3: f32[4,8]
      %a: f32[2,4] = linear(%x, %w1) {"weight_layout": "oi"}
      %b: f32[2,4] = linear(%x, %w2) {"weight_layout": "oi"}
      %c: f32[2,4] = linear(%x, %w3) {"weight_layout": "oi"}
      return %a, %b, %c
    }"""
    expected = """
    graph main(%x: f32[2,8]) {
      const %w1: f32[4,8]
      const %w2: f32[4,8]
      %a: f32[2,4] = linear(%x, %w1) {"weight_layout": "oi"}
      %b: f32[2,4] = linear(%x, %w2) {"weight_layout": "oi"}
      return %a, %b, %a
    }"""
    consts = {"w1": W, "w2": W_OTHER, "w3": W.copy()}
    g, after, stats = assert_rewrites(before, expected, consts)
    assert stats == {"removed_nodes": 1, "merged_constants": 1}
    assert after.constants["w1"] is W and after.constants["w2"] is W_OTHER
    assert_same_numerics(g, after)


# -- fused nodes ---------------------------------------------------------------------------------------------------

FUSED = """
graph main(%x: f32[2,3]) {{
  %a: f32[2,3] = fused(%x) {{"name": "exp_mul", "anchor": "exp"}}
    graph exp_mul(%x: f32[2,3]) {{
      const %k: f32[] = 2.0
      %e: f32[2,3] = exp(%x)
      %m: f32[2,3] = mul(%e, %k)
      return %m
    }}
  %b: f32[2,3] = fused(%x) {{"name": "exp_mul", "anchor": "exp"}}
    graph exp_mul(%x: f32[2,3]) {{
      const %k: f32[] = {k}
      %e: f32[2,3] = exp(%x)
      %m: f32[2,3] = mul(%e, %k)
      return %m
    }}
  %s: f32[2,3] = sub(%a, %b)
  return %s
}}"""


def test_identical_fused_kernels_are_merged():
    expected = """
    graph main(%x: f32[2,3]) {
      %a: f32[2,3] = fused(%x) {"name": "exp_mul", "anchor": "exp"}
        graph exp_mul(%x: f32[2,3]) {
          const %k: f32[] = 2.0
          %e: f32[2,3] = exp(%x)
          %m: f32[2,3] = mul(%e, %k)
          return %m
        }
      %s: f32[2,3] = sub(%a, %a)
      return %s
    }"""
    g, after, stats = assert_rewrites(FUSED.format(k="2.0"), expected)
    assert stats == {"removed_nodes": 1, "merged_constants": 0}
    assert_same_numerics(g, after)


def test_fused_kernels_with_different_bodies_are_not_merged():
    g = parse_graph(FUSED.format(k="3.0"))
    verify(g)
    after = g.clone()
    assert run_pass(NAME, after) == {"removed_nodes": 0, "merged_constants": 0}
    assert print_graph(after) == print_graph(g)
    assert_same_numerics(g, after)


# -- numerics, idempotence ---------------------------------------------------------------------------------------------

MIXED = """
graph main(%x: f32[2,8], %y: f32[2,4]) {
  const %w1: f32[4,8]
  const %w2: f32[4,8]
  const %h1: f32[] = 0.5
  const %h2: f32[] = 0.5
  %a: f32[2,4] = linear(%x, %w1) {"weight_layout": "oi"}
  %b: f32[2,4] = linear(%x, %w2) {"weight_layout": "oi"}
  %c: f32[2,4] = mul(%a, %h1)
  %d: f32[2,4] = mul(%b, %h2)
  %e: f32[2,4] = add(%c, %y)
  %f: f32[2,4] = add(%d, %y)
  %g: f32[2,4] = add(%y, %d)
  %s: f32[2,4] = softmax(%e) {"axis": 1}
  %t: f32[2,4] = softmax(%f) {"axis": 0}
  return %s, %t, %g
}"""


def test_mixed_graph():
    expected = """
    graph main(%x: f32[2,8], %y: f32[2,4]) {
      const %w1: f32[4,8]
      const %h1: f32[] = 0.5
      %a: f32[2,4] = linear(%x, %w1) {"weight_layout": "oi"}
      %c: f32[2,4] = mul(%a, %h1)
      %e: f32[2,4] = add(%c, %y)
      %g: f32[2,4] = add(%y, %c)
      %s: f32[2,4] = softmax(%e) {"axis": 1}
      %t: f32[2,4] = softmax(%e) {"axis": 0}
      return %s, %t, %g
    }"""
    g, after, stats = assert_rewrites(MIXED, expected, {"w1": W, "w2": W.copy()})
    assert stats == {"removed_nodes": 3, "merged_constants": 2}
    assert_same_numerics(g, after)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_numerics_on_random_inputs(seed):
    g = parse_graph(MIXED, {"w1": W, "w2": W.copy()})
    after = g.clone()
    run_pass(NAME, after)
    assert_same_numerics(g, after, seed)


def test_pass_is_idempotent_and_leaves_the_input_graph_alone():
    g = parse_graph(MIXED, {"w1": W, "w2": W.copy()})
    text = print_graph(g)
    after = g.clone()
    run_pass(NAME, after)
    assert print_graph(g) == text
    once = print_graph(after)
    assert run_pass(NAME, after) == {"removed_nodes": 0, "merged_constants": 0}
    assert print_graph(after) == once
