"""remove_noops: Before/Expected IR, hit counts, numerics (interpreter before vs after), verify."""

from __future__ import annotations

import numpy as np
import pytest

from edgeopt.ir import Graph, parse_graph, print_graph, verify
from edgeopt.testing import assert_same_numerics, run_pass

NAME = "remove_noops"
NO_HITS = {"identities": 0, "copies": 0, "merged_reshapes": 0, "merged_transposes": 0}


def hits(**counts) -> dict:
    return {**NO_HITS, **counts}


def assert_rewrites(before: str, expected: str, constants: dict | None = None) -> tuple[Graph, Graph, dict]:
    """Parse Before, run the pass on a clone, compare its printed text with the printed Expected."""
    g = parse_graph(before, constants)
    verify(g)
    after = g.clone()
    stats = run_pass(NAME, after)
    assert print_graph(after) == print_graph(parse_graph(expected, constants))
    return g, after, stats


def assert_unchanged(before: str, constants: dict | None = None) -> tuple[Graph, Graph]:
    g = parse_graph(before, constants)
    verify(g)
    after = g.clone()
    assert run_pass(NAME, after) == NO_HITS
    assert print_graph(after) == print_graph(g)
    return g, after


# -- the docstring example -------------------------------------------------------------------------------------

def test_docstring_example_transposes_cancel_and_times_one_goes():
    before = """
    graph main(%x: f32[1,3,4]) {
      const %one: f32[] = 1.0
      %t: f32[1,4,3] = transpose(%x) {"perm": [0, 2, 1]}
      %u: f32[1,3,4] = transpose(%t) {"perm": [0, 2, 1]}
      %y: f32[1,3,4] = mul(%u, %one)
      %z: f32[1,3,4] = exp(%y)
      return %z
    }"""
    expected = """
    graph main(%x: f32[1,3,4]) {
      %z: f32[1,3,4] = exp(%x)
      return %z
    }"""
    g, after, stats = assert_rewrites(before, expected)
    assert stats == hits(identities=1, merged_transposes=1)
    assert_same_numerics(g, after)


# -- every identity of the docstring ---------------------------------------------------------------------------

IDENTITY_BEFORE = """
graph main(%x: f32[2,3]) {{
  const %zero: f32[] = 0.0
  const %zeros: f32[3] = [0.0, -0.0, 0.0]
  const %one: f32[] = 1.0
  const %ones: f32[1,3] = [[1.0, 1.0, 1.0]]
  {line}
  %y: f32[2,3] = relu(%n)
  return %y
}}"""
IDENTITY_EXPECTED = """
graph main(%x: f32[2,3]) {
  %y: f32[2,3] = relu(%x)
  return %y
}"""
IDENTITIES = {
    "cast_same_dtype": '%n: f32[2,3] = cast(%x) {"dtype": "f32"}',
    "reshape_same_shape": '%n: f32[2,3] = reshape(%x) {"shape": [2, 3]}',
    "broadcast_same_shape": '%n: f32[2,3] = broadcast_to(%x) {"shape": [2, 3]}',
    "identity_transpose": '%n: f32[2,3] = transpose(%x) {"perm": [0, 1]}',
    "full_slice": '%n: f32[2,3] = slice(%x) {"axis": 1, "start": 0, "end": 3, "step": 1}',
    "full_slice_clamped_bounds": '%n: f32[2,3] = slice(%x) {"axis": -1, "start": -3, "end": 100, "step": 1}',
    "zero_pad": '%n: f32[2,3] = pad(%x) {"pads": [0, 0, 0, 0], "value": 5.0}',
    "one_input_concat": '%n: f32[2,3] = concat(%x) {"axis": 0}',
    "x_plus_0": "%n: f32[2,3] = add(%x, %zeros)",
    "0_plus_x": "%n: f32[2,3] = add(%zeros, %x)",
    "x_plus_scalar_0": "%n: f32[2,3] = add(%x, %zero)",
    "x_minus_0": "%n: f32[2,3] = sub(%x, %zero)",
    "x_minus_0_vector": "%n: f32[2,3] = sub(%x, %zeros)",
    "x_times_1": "%n: f32[2,3] = mul(%x, %ones)",
    "1_times_x": "%n: f32[2,3] = mul(%one, %x)",
    "x_over_1": "%n: f32[2,3] = div(%x, %ones)",
    "x_over_scalar_1": "%n: f32[2,3] = div(%x, %one)",
    "copy": "%n: f32[2,3] = copy(%x)",
}


@pytest.mark.parametrize("case", list(IDENTITIES))
def test_each_identity_is_removed(case):
    before = IDENTITY_BEFORE.format(line=IDENTITIES[case])
    g, after, stats = assert_rewrites(before, IDENTITY_EXPECTED)
    assert stats == (hits(copies=1) if case == "copy" else hits(identities=1))
    assert after.nodes[0].inputs[0] is after.inputs[0]
    assert after.constants == {}  # the 0 and 1 constants have no reader left
    assert_same_numerics(g, after)


def test_a_chain_of_identities_disappears():
    before = """
    graph main(%x: f32[1,4,3]) {
      const %one: f32[] = 1.0
      const %zeros: f32[3] = [0.0, 0.0, 0.0]
      %a: f32[1,4,3] = cast(%x) {"dtype": "f32"}
      %b: f32[1,4,3] = reshape(%a) {"shape": [1, 4, 3]}
      %c: f32[1,4,3] = broadcast_to(%b) {"shape": [1, 4, 3]}
      %d: f32[1,4,3] = transpose(%c) {"perm": [0, 1, 2]}
      %e: f32[1,4,3] = slice(%d) {"axis": 1, "start": 0, "end": 100, "step": 1}
      %f: f32[1,4,3] = pad(%e) {"pads": [0, 0, 0, 0, 0, 0], "value": 0.0}
      %g: f32[1,4,3] = concat(%f) {"axis": 2}
      %h: f32[1,4,3] = add(%g, %zeros)
      %i: f32[1,4,3] = add(%zeros, %h)
      %j: f32[1,4,3] = sub(%i, %zeros)
      %k: f32[1,4,3] = mul(%j, %one)
      %l: f32[1,4,3] = mul(%one, %k)
      %m: f32[1,4,3] = div(%l, %one)
      %n: f32[1,4,3] = copy(%m)
      %y: f32[1,4,3] = relu(%n)
      return %y
    }"""
    expected = """
    graph main(%x: f32[1,4,3]) {
      %y: f32[1,4,3] = relu(%x)
      return %y
    }"""
    g, after, stats = assert_rewrites(before, expected)
    assert stats == hits(identities=13, copies=1)
    assert_same_numerics(g, after)


def test_identity_on_an_intermediate_value_that_is_a_graph_output():
    before = """
    graph main(%x: f32[2,3]) {
      const %one: f32[] = 1.0
      %r: f32[2,3] = relu(%x)
      %y: f32[2,3] = mul(%r, %one)
      %z: f32[2,3] = exp(%y)
      return %y, %z
    }"""
    expected = """
    graph main(%x: f32[2,3]) {
      %r: f32[2,3] = relu(%x)
      %z: f32[2,3] = exp(%r)
      return %r, %z
    }"""
    g, after, stats = assert_rewrites(before, expected)
    assert stats == hits(identities=1)
    assert_same_numerics(g, after)


# -- what is not a no-op -----------------------------------------------------------------------------------------

def test_ops_that_change_values_or_shapes_are_kept():
    before = """
    graph main(%x: f32[2,3], %v: f32[3]) {
      const %zero: f32[] = 0.0
      const %zeros23: f32[2,3] = [[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]]
      const %almost_zero: f32[3] = [0.0, 0.0, 1e-30]
      const %ones23: f32[2,3] = [[1.0, 1.0, 1.0], [1.0, 1.0, 1.0]]
      const %flip: f32[3] = [1.0, 1.0, -1.0]
      const %one: f32[] = 1.0
      %a: f32[2,3] = add(%v, %zeros23)
      %b: f32[2,3] = add(%zeros23, %v)
      %c: f32[2,3] = sub(%v, %zeros23)
      %d: f32[2,3] = mul(%v, %ones23)
      %e: f32[2,3] = mul(%ones23, %v)
      %f: f32[2,3] = div(%v, %ones23)
      %g: f32[2,3] = add(%x, %almost_zero)
      %h: f32[2,3] = mul(%x, %flip)
      %i: f32[2,3] = sub(%zero, %x)
      %j: f32[2,3] = div(%one, %x)
      %k: f32[3,2] = transpose(%x) {"perm": [1, 0]}
      %l: f32[3,2] = reshape(%x) {"shape": [3, 2]}
      %m: f32[2,2] = slice(%x) {"axis": 1, "start": 0, "end": 2, "step": 1}
      %n: f32[2,2] = slice(%x) {"axis": 1, "start": 0, "end": 3, "step": 2}
      %o: f32[2,5] = pad(%x) {"pads": [0, 0, 1, 1], "value": 0.0}
      %p: f32[4,3] = concat(%x, %x) {"axis": 0}
      %q: f32[2,2,3] = broadcast_to(%x) {"shape": [2, 2, 3]}
      %s: f16[2,3] = cast(%x) {"dtype": "f16"}
      return %a, %b, %c, %d, %e, %f, %g, %h, %i, %j, %k, %l, %m, %n, %o, %p, %q, %s
    }"""
    # %a..%f: x + 0, 0 + x, x - 0, x * 1, 1 * x, x / 1 whose broadcasting makes the result bigger than x
    g, after = assert_unchanged(before)
    assert_same_numerics(g, after)


@pytest.mark.parametrize("line", [
    "%y: f32[2,3] = add(%v, %zeros)",
    "%y: f32[2,3] = add(%zeros, %v)",
    "%y: f32[2,3] = mul(%v, %ones)",
    "%y: f32[2,3] = mul(%ones, %v)",
])
def test_x_plus_0_that_broadcasts_to_a_bigger_shape_is_not_removed(line):
    before = f"""
    graph main(%v: f32[1,3]) {{
      const %zeros: f32[2,1] = [[0.0], [0.0]]
      const %ones: f32[2,1] = [[1.0], [1.0]]
      {line}
      %z: f32[2,3] = relu(%y)
      return %z
    }}"""
    g, after = assert_unchanged(before)
    assert_same_numerics(g, after)


# -- reshape of reshape --------------------------------------------------------------------------------------------

def test_reshape_of_reshape_is_merged_into_one_reshape():
    before = """
    graph main(%x: f32[2,3,4]) {
      %r1: f32[24] = reshape(%x) {"shape": [24]}
      %r2: f32[6,4] = reshape(%r1) {"shape": [6, 4]}
      %r3: f32[4,6] = reshape(%r2) {"shape": [4, 6]}
      %y: f32[4,6] = relu(%r3)
      return %y
    }"""
    expected = """
    graph main(%x: f32[2,3,4]) {
      %r3_1: f32[4,6] = reshape(%x) {"shape": [4, 6]}
      %y: f32[4,6] = relu(%r3_1)
      return %y
    }"""
    g, after, stats = assert_rewrites(before, expected)
    assert stats == hits(merged_reshapes=2)
    assert_same_numerics(g, after)


def test_reshapes_that_come_back_to_the_input_shape_disappear():
    before = """
    graph main(%x: f32[2,3]) {
      %r1: f32[6] = reshape(%x) {"shape": [6]}
      %r2: f32[2,3] = reshape(%r1) {"shape": [2, 3]}
      %y: f32[2,3] = relu(%r2)
      return %y
    }"""
    expected = """
    graph main(%x: f32[2,3]) {
      %y: f32[2,3] = relu(%x)
      return %y
    }"""
    g, after, stats = assert_rewrites(before, expected)
    assert stats == hits(merged_reshapes=1, identities=1)
    assert_same_numerics(g, after)


def test_reshape_with_another_reader_is_not_merged():
    before = """
    graph main(%x: f32[2,3,4]) {
      %r1: f32[24] = reshape(%x) {"shape": [24]}
      %r2: f32[6,4] = reshape(%r1) {"shape": [6, 4]}
      %e: f32[24] = exp(%r1)
      return %r2, %e
    }"""
    g, after = assert_unchanged(before)
    assert_same_numerics(g, after)


# -- transpose of transpose ----------------------------------------------------------------------------------------

def test_transpose_of_transpose_is_composed():
    before = """
    graph main(%x: f32[2,3,4]) {
      %t1: f32[3,2,4] = transpose(%x) {"perm": [1, 0, 2]}
      %t2: f32[3,4,2] = transpose(%t1) {"perm": [0, 2, 1]}
      %y: f32[3,4,2] = relu(%t2)
      return %y
    }"""
    expected = """
    graph main(%x: f32[2,3,4]) {
      %t2_1: f32[3,4,2] = transpose(%x) {"perm": [1, 2, 0]}
      %y: f32[3,4,2] = relu(%t2_1)
      return %y
    }"""
    g, after, stats = assert_rewrites(before, expected)
    assert stats == hits(merged_transposes=1)
    assert_same_numerics(g, after)


@pytest.mark.parametrize("p1", [[1, 0, 2], [2, 0, 1], [1, 2, 0], [2, 1, 0], [0, 2, 1]])
def test_transpose_and_its_inverse_cancel(p1):
    inv = list(np.argsort(p1))
    shape = (2, 3, 4)
    mid = [shape[p] for p in p1]
    before = f"""
    graph main(%x: f32[2,3,4]) {{
      %t1: f32[{mid[0]},{mid[1]},{mid[2]}] = transpose(%x) {{"perm": {p1}}}
      %t2: f32[2,3,4] = transpose(%t1) {{"perm": {[int(i) for i in inv]}}}
      %y: f32[2,3,4] = relu(%t2)
      return %y
    }}"""
    expected = """
    graph main(%x: f32[2,3,4]) {
      %y: f32[2,3,4] = relu(%x)
      return %y
    }"""
    g, after, stats = assert_rewrites(before, expected)
    assert stats == hits(merged_transposes=1)
    assert_same_numerics(g, after)


def test_three_transposes_that_compose_to_the_identity_disappear():
    before = """
    graph main(%x: f32[2,3,4]) {
      %t1: f32[3,2,4] = transpose(%x) {"perm": [1, 0, 2]}
      %t2: f32[3,4,2] = transpose(%t1) {"perm": [0, 2, 1]}
      %t3: f32[2,3,4] = transpose(%t2) {"perm": [2, 0, 1]}
      %y: f32[2,3,4] = relu(%t3)
      return %y
    }"""
    expected = """
    graph main(%x: f32[2,3,4]) {
      %y: f32[2,3,4] = relu(%x)
      return %y
    }"""
    g, after, stats = assert_rewrites(before, expected)
    assert stats == hits(merged_transposes=2)
    assert_same_numerics(g, after)


def test_transpose_with_another_reader_is_not_merged():
    before = """
    graph main(%x: f32[2,3]) {
      %t1: f32[3,2] = transpose(%x) {"perm": [1, 0]}
      %t2: f32[2,3] = transpose(%t1) {"perm": [1, 0]}
      %e: f32[3,2] = exp(%t1)
      %y: f32[2,3] = relu(%t2)
      return %y, %e
    }"""
    g, after = assert_unchanged(before)
    assert_same_numerics(g, after)


# -- copies and graph outputs ---------------------------------------------------------------------------------------

def test_copy_that_keeps_an_output_from_aliasing_an_input_is_kept():
    before = """
    graph main(%x: f32[2,3]) {
      %c: f32[2,3] = copy(%x)
      %y: f32[2,3] = relu(%x)
      return %y, %c
    }"""
    g, after = assert_unchanged(before)
    assert after.outputs[1] is not after.inputs[0]
    assert_same_numerics(g, after)


def test_copy_that_keeps_an_output_from_aliasing_a_weight_is_kept():
    w = np.arange(24, dtype=np.float32).reshape(4, 6)
    before = """
    graph main(%x: f32[2,6]) {
      const %w: f32[4,6]
      %c: f32[4,6] = copy(%w)
      %y: f32[2,4] = linear(%x, %w) {"weight_layout": "oi"}
      return %y, %c
    }"""
    g, after = assert_unchanged(before, {"w": w})
    assert_same_numerics(g, after)


def test_copy_that_keeps_two_outputs_apart_is_kept():
    before = """
    graph main(%x: f32[2,3]) {
      %r: f32[2,3] = relu(%x)
      %c: f32[2,3] = copy(%r)
      return %r, %c
    }"""
    g, after = assert_unchanged(before)
    assert after.outputs[0] is not after.outputs[1]
    assert_same_numerics(g, after)


def test_second_copy_of_the_same_value_is_kept_once_the_first_is_gone():
    before = """
    graph main(%x: f32[2,3]) {
      %r: f32[2,3] = relu(%x)
      %c1: f32[2,3] = copy(%r)
      %c2: f32[2,3] = copy(%r)
      return %c1, %c2
    }"""
    expected = """
    graph main(%x: f32[2,3]) {
      %r: f32[2,3] = relu(%x)
      %c2: f32[2,3] = copy(%r)
      return %r, %c2
    }"""
    g, after, stats = assert_rewrites(before, expected)
    assert stats == hits(copies=1)
    assert after.outputs[0] is not after.outputs[1]
    assert_same_numerics(g, after)


def test_copy_of_a_computed_value_is_removed():
    before = """
    graph main(%x: f32[2,3]) {
      %r: f32[2,3] = relu(%x)
      %c: f32[2,3] = copy(%r)
      %d: f32[2,3] = copy(%x)
      %e: f32[2,3] = add(%c, %d)
      return %c, %e
    }"""
    expected = """
    graph main(%x: f32[2,3]) {
      %r: f32[2,3] = relu(%x)
      %e: f32[2,3] = add(%r, %x)
      return %r, %e
    }"""
    g, after, stats = assert_rewrites(before, expected)
    assert stats == hits(copies=2)
    assert_same_numerics(g, after)


def test_identity_that_is_the_only_op_between_input_and_output_is_kept():
    before = """
    graph main(%x: f32[2,3]) {
      const %one: f32[] = 1.0
      %y: f32[2,3] = mul(%x, %one)
      %z: f32[2,3] = reshape(%x) {"shape": [2, 3]}
      return %y, %z
    }"""
    g, after = assert_unchanged(before)
    assert all(o.producer is not None for o in after.outputs)
    assert_same_numerics(g, after)


# -- mixed graph, numerics, idempotence -------------------------------------------------------------------------------

MIXED = """
graph main(%x: f32[1,4,3], %s: f32[2,6]) {
  const %one: f32[] = 1.0
  const %zeros: f32[3] = [0.0, 0.0, 0.0]
  %a: f32[1,4,3] = cast(%x) {"dtype": "f32"}
  %b: f32[1,4,3] = mul(%a, %one)
  %c: f32[1,4,3] = add(%b, %zeros)
  %t: f32[1,3,4] = transpose(%c) {"perm": [0, 2, 1]}
  %u: f32[1,4,3] = transpose(%t) {"perm": [0, 2, 1]}
  %r1: f32[12] = reshape(%u) {"shape": [12]}
  %r2: f32[3,4] = reshape(%r1) {"shape": [3, 4]}
  %p: f32[4,1,3] = transpose(%x) {"perm": [1, 0, 2]}
  %q: f32[4,3,1] = transpose(%p) {"perm": [0, 2, 1]}
  %v: f32[12] = reshape(%s) {"shape": [12]}
  %w: f32[12] = copy(%v)
  %y: f32[3,4] = relu(%r2)
  %z: f32[4,3,1] = exp(%q)
  return %y, %z, %w
}"""


def test_mixed_graph():
    expected = """
    graph main(%x: f32[1,4,3], %s: f32[2,6]) {
      %r2_1: f32[3,4] = reshape(%x) {"shape": [3, 4]}
      %q_1: f32[4,3,1] = transpose(%x) {"perm": [1, 2, 0]}
      %v: f32[12] = reshape(%s) {"shape": [12]}
      %y: f32[3,4] = relu(%r2_1)
      %z: f32[4,3,1] = exp(%q_1)
      return %y, %z, %v
    }"""
    g, after, stats = assert_rewrites(MIXED, expected)
    assert stats == {"identities": 3, "copies": 1, "merged_reshapes": 1, "merged_transposes": 2}
    assert_same_numerics(g, after)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_numerics_on_random_inputs(seed):
    g = parse_graph(MIXED)
    after = g.clone()
    run_pass(NAME, after)
    assert_same_numerics(g, after, seed)


def test_pass_is_idempotent_and_leaves_the_input_graph_alone():
    g = parse_graph(MIXED)
    text = print_graph(g)
    after = g.clone()
    run_pass(NAME, after)
    assert print_graph(g) == text
    once = print_graph(after)
    assert run_pass(NAME, after) == NO_HITS
    assert print_graph(after) == once


# -- cancelled transposes keep a graph output apart from an input or weight -----------------------------------


@pytest.mark.parametrize("source", ["input", "weight"])
def test_cancelled_transposes_do_not_make_an_output_alias_an_input_or_weight(source):
    before = f"""
    graph main(%x: f32[2,3]) {{
      const %w: f32[2,3] = [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]
      %t: f32[3,2] = transpose(%{"x" if source == "input" else "w"}) {{"perm": [1, 0]}}
      %u: f32[2,3] = transpose(%t) {{"perm": [1, 0]}}
      %y: f32[2,3] = relu(%x)
      return %y, %u
    }}"""
    g = parse_graph(before)
    after = g.clone()
    run_pass(NAME, after)
    # the same rule as for `mul(x, 1)` or `copy(x)` (see test_identity_that_is_the_only_op_...): keep an op
    assert all(o.producer is not None for o in after.outputs)
    assert_same_numerics(g, after)


def test_cancelled_transposes_of_a_weight_output_compile_and_run():
    from edgeopt.api import compile_graph

    before = """
    graph main(%x: f32[2,3]) {
      const %w: f32[2,3] = [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]
      %t: f32[3,2] = transpose(%w) {"perm": [1, 0]}
      %u: f32[2,3] = transpose(%t) {"perm": [1, 0]}
      %y: f32[2,3] = relu(%x)
      return %y, %u
    }"""
    compiled = compile_graph(parse_graph(before), passes=["remove_noops"])
    x = np.arange(-3, 3, dtype=np.float32).reshape(2, 3)
    y, u = compiled(x)
    np.testing.assert_array_equal(y, np.maximum(x, 0))
    np.testing.assert_array_equal(u, [[1, 2, 3], [4, 5, 6]])
