"""reorder_for_memory: branches are reordered when that lowers the peak (each branch reduced as soon as it is
computed), chains and already-good orders are left alone, the order stays a valid schedule, the planner's
arena follows the lower peak, and the numerics do not change (interpreter and compiled)."""

from __future__ import annotations

import numpy as np
from edgeopt.passes.reorder_for_memory import greedy_order, peak_bytes

from edgeopt.api import compile_graph
from edgeopt.ir import interpret, parse_graph, verify
from edgeopt.pipeline import get_pass
from tests.passes.fusion_harness import assert_close, random_inputs

NAME = "reorder_for_memory"
R = '{"axes": [2], "keepdims": false}'

# three wide branches, all computed before any is reduced: 3 x 32 KiB alive at once
BRANCHES = f"""
graph main(%x: f32[1,64,128]) {{
  %a: f32[1,64,128] = relu(%x)
  %b: f32[1,64,128] = exp(%x)
  %c: f32[1,64,128] = tanh(%x)
  %sa: f32[1,64] = sum(%a) {R}
  %sb: f32[1,64] = sum(%b) {R}
  %sc: f32[1,64] = sum(%c) {R}
  %y: f32[1,192] = concat(%sa, %sb, %sc) {{"axis": 1}}
  return %y
}}"""

CHAIN = f"""
graph main(%x: f32[1,64,128]) {{
  %a: f32[1,64,128] = relu(%x)
  %b: f32[1,64,128] = exp(%a)
  %s: f32[1,64] = sum(%b) {R}
  return %s
}}"""


def graph(text):
    g = parse_graph(text)
    verify(g)
    return g


def run(g):
    stats = get_pass(NAME).run(g)
    verify(g)
    return stats


def test_branches_are_reduced_as_soon_as_they_are_computed():
    g = graph(BRANCHES)
    before = g.clone()
    stats = run(g)
    assert stats["peak_after"] < stats["peak_before"] and stats["moved"] > 0
    assert [n.outputs[0].name for n in g.nodes] == ["a", "sa", "b", "sb", "c", "sc", "y"]
    kib = 1024
    assert stats["peak_before"] == 32 * kib * 4  # x, a, b, c
    assert stats["peak_after"] == 32 * kib * 2 + 256 * 2  # at %c: x, c and the two finished sums
    xs = random_inputs(before)
    np.testing.assert_array_equal(interpret(before, xs)[0], interpret(g, xs)[0])


def test_the_arena_follows_the_lower_peak_and_the_kernels_still_match():
    g = graph(BRANCHES)
    plain = compile_graph(g.clone(), "host", passes=[])
    reordered = compile_graph(g.clone(), "host", passes=[NAME])
    assert reordered.report["arena_bytes"] < plain.report["arena_bytes"]
    assert reordered.report["lower_bound_bytes"] == reordered.report["pass_stats"][NAME]["peak_after"]
    assert reordered.report["num_kernels"] == plain.report["num_kernels"]
    xs = random_inputs(g)
    assert_close(interpret(g, xs)[0], reordered(*xs))


def test_a_chain_is_left_alone():
    g = graph(CHAIN)
    order = [n.outputs[0].name for n in g.nodes]
    stats = run(g)
    assert stats["moved"] == 0 and stats["peak_after"] == stats["peak_before"]
    assert [n.outputs[0].name for n in g.nodes] == order


def test_a_good_order_is_kept():
    g = graph(BRANCHES)
    run(g)
    order = [n.outputs[0].name for n in g.nodes]
    assert run(g)["moved"] == 0
    assert [n.outputs[0].name for n in g.nodes] == order


def test_greedy_order_is_a_topological_order_of_every_node():
    g = graph(BRANCHES)
    order = greedy_order(g)
    assert sorted(id(n) for n in order) == sorted(id(n) for n in g.nodes)
    seen = set(g.inputs)
    for n in order:
        assert all(v in seen or g.is_const(v) for v in n.inputs)
        seen.update(n.outputs)


def test_peak_counts_views_as_their_base_and_weights_as_nothing():
    g = parse_graph("""
    graph main(%x: f32[1,64,128]) {
      const %w: f32[64,128]
      %a: f32[1,64,128] = mul(%x, %w)
      %v: f32[64,128] = reshape(%a) {"shape": [64, 128]}
      %y: f32[64,128] = relu(%v)
      return %y
    }""", {"w": np.full((64, 128), 0.5, np.float32)})
    verify(g)
    assert peak_bytes(g, g.nodes) == 2 * 32 * 1024  # x and a at the mul; a (= v) and y at the relu
