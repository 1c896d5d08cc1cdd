"""dead_code_elimination: Before/Expected IR, hit counts, numerics (interpreter before vs after), verify."""

from __future__ import annotations

import numpy as np
import pytest

from edgeopt.ir import Graph, parse_graph, print_graph, verify
from edgeopt.testing import assert_same_numerics, run_pass

NAME = "dead_code_elimination"
W = (np.arange(32, dtype=np.float32).reshape(4, 8) - 16) / 10
W_DEAD = np.ones((4, 8), np.float32)


def assert_rewrites(before: str, expected: str, constants: dict | None = None) -> tuple[Graph, Graph, dict]:
    """Parse Before, run the pass on a clone, compare its printed text with the printed Expected."""
    g = parse_graph(before, constants)
    verify(g)
    after = g.clone()
    stats = run_pass(NAME, after)
    assert print_graph(after) == print_graph(parse_graph(expected, constants))
    return g, after, stats


BEFORE = """
graph main(%x: f32[2,8], %y: f32[2,4]) {
  const %w: f32[4,8]
  const %w_dead: f32[4,8]
  const %two: f32[] = 2.0
  const %three: f32[] = 3.0
  const %kept_out: f32[] = 7.0
  %lin: f32[2,4] = linear(%x, %w) {"weight_layout": "oi"}
  %dead_lin: f32[2,4] = linear(%x, %w_dead) {"weight_layout": "oi"}
  %dead_chain: f32[2,4] = mul(%dead_lin, %three)
  %dead_end: f32[2,4] = exp(%dead_chain)
  %a: f32[2,4] = add(%lin, %y)
  %b: f32[2,4] = relu(%a)
  %unused_of_live_input: f32[2,4] = neg(%a)
  %c: f32[2,4] = mul(%b, %two)
  %d: f32[2,4] = sigmoid(%c)
  return %c, %d, %b, %y, %kept_out
}"""

EXPECTED = """
graph main(%x: f32[2,8], %y: f32[2,4]) {
  const %w: f32[4,8]
  const %two: f32[] = 2.0
  const %kept_out: f32[] = 7.0
  %lin: f32[2,4] = linear(%x, %w) {"weight_layout": "oi"}
  %a: f32[2,4] = add(%lin, %y)
  %b: f32[2,4] = relu(%a)
  %c: f32[2,4] = mul(%b, %two)
  %d: f32[2,4] = sigmoid(%c)
  return %c, %d, %b, %y, %kept_out
}"""


def test_removes_dead_nodes_and_constants():
    before, after, stats = assert_rewrites(BEFORE, EXPECTED, {"w": W, "w_dead": W_DEAD})
    assert stats == {"removed_nodes": 4, "removed_constants": 2}
    assert_same_numerics(before, after)
    assert after.constants["w"] is before.constants["w"]  # surviving weights are not copied


def test_everything_dead_but_an_input():
    before = """
    graph main(%x: f32[3]) {
      const %c: f32[3] = [1.0, 2.0, 3.0]
      %a: f32[3] = add(%x, %c)
      %b: f32[3] = exp(%a)
      return %x
    }"""
    expected = """
    graph main(%x: f32[3]) {
      return %x
    }"""
    g, after, stats = assert_rewrites(before, expected)
    assert stats == {"removed_nodes": 2, "removed_constants": 1}
    assert_same_numerics(g, after)


def test_clean_graph_is_unchanged_and_pass_is_idempotent():
    g = parse_graph(BEFORE, {"w": W, "w_dead": W_DEAD})
    run_pass(NAME, g)
    text = print_graph(g)
    assert run_pass(NAME, g) == {"removed_nodes": 0, "removed_constants": 0}
    assert print_graph(g) == text


def test_constant_used_only_as_output_survives():
    before = """
    graph main(%x: f32[2]) {
      const %c: f32[2] = [1.0, 2.0]
      %a: f32[2] = add(%x, %c)
      return %c
    }"""
    expected = """
    graph main(%x: f32[2]) {
      const %c: f32[2] = [1.0, 2.0]
      return %c
    }"""
    g, after, stats = assert_rewrites(before, expected)
    assert stats == {"removed_nodes": 1, "removed_constants": 0}
    assert_same_numerics(g, after)


def test_node_order_is_kept():
    """Interleaved live and dead nodes: the live ones keep their relative (topological) order."""
    before = """
    graph main(%x: f32[4]) {
      %d1: f32[4] = exp(%x)
      %l1: f32[4] = relu(%x)
      %d2: f32[4] = add(%d1, %l1)
      %l2: f32[4] = tanh(%l1)
      %d3: f32[4] = sin(%l2)
      %l3: f32[4] = add(%l1, %l2)
      return %l3
    }"""
    expected = """
    graph main(%x: f32[4]) {
      %l1: f32[4] = relu(%x)
      %l2: f32[4] = tanh(%l1)
      %l3: f32[4] = add(%l1, %l2)
      return %l3
    }"""
    g, after, stats = assert_rewrites(before, expected)
    assert stats["removed_nodes"] == 3
    assert_same_numerics(g, after)


@pytest.mark.parametrize("seed", [0, 1])
def test_numerics_on_random_inputs(seed):
    g = parse_graph(BEFORE, {"w": W, "w_dead": W_DEAD})
    after = g.clone()
    run_pass(NAME, after)
    assert_same_numerics(g, after, seed)


def test_removed_names_can_be_reused():
    g = parse_graph(BEFORE, {"w": W, "w_dead": W_DEAD})
    run_pass(NAME, g)
    assert g.add_const(np.zeros(2, np.float32), "w_dead").name == "w_dead"
    verify(g)
