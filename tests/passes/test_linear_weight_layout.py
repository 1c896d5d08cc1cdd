"""linear_weight_layout: Before/Expected IR, hit counts, numerics (interpreter before vs after), verify; weights whose
width a vector tile divides are packed in panels ("oi<v>o"), the others stored "io"."""

from __future__ import annotations

import numpy as np
import pytest

from edgeopt.ir import Graph, parse_graph, print_graph, verify
from edgeopt.pipeline import get_pass
from edgeopt.testing import assert_same_numerics, run_pass

NAME = "linear_weight_layout"
RNG = np.random.default_rng(7)
W = RNG.standard_normal((4, 8)).astype(np.float32)
W_IO = RNG.standard_normal((8, 3)).astype(np.float32)  # already [in, out]
W_OTHER = RNG.standard_normal((5, 8)).astype(np.float32)


def assert_rewrites(before: str, expected: str, before_consts: dict, expected_consts: dict):
    """Parse Before, run the pass on a clone, compare its printed text with the printed Expected."""
    g = parse_graph(before, before_consts)
    verify(g)
    after = g.clone()
    stats = run_pass(NAME, after)
    assert print_graph(after) == print_graph(parse_graph(expected, expected_consts))
    for k, arr in expected_consts.items():
        np.testing.assert_array_equal(after.constants[k], arr)
        assert after.constants[k].flags.c_contiguous
    return g, after, stats


BEFORE = """
graph main(%x: f32[2,8], %wx: f32[4,8]) {
  const %w: f32[4,8]
  const %b: f32[4] = [0.5, -0.5, 1.0, 2.0]
  const %w_io_given: f32[8,3]
  %y: f32[2,4] = linear(%x, %w, %b) {"weight_layout": "oi"}
  %z: f32[2,4] = linear(%x, %w) {"weight_layout": "oi"}
  %v: f32[2,4] = linear(%x, %wx) {"weight_layout": "oi"}
  %u: f32[2,3] = linear(%x, %w_io_given) {"weight_layout": "io"}
  %s: f32[2,4] = add(%y, %z)
  %t: f32[2,4] = add(%s, %v)
  return %t, %u
}"""

EXPECTED = """
graph main(%x: f32[2,8], %wx: f32[4,8]) {
  const %b: f32[4] = [0.5, -0.5, 1.0, 2.0]
  const %w_io_given: f32[8,3]
  const %w_io: f32[8,4]
  %y: f32[2,4] = linear(%x, %w_io, %b) {"weight_layout": "io"}
  %z: f32[2,4] = linear(%x, %w_io) {"weight_layout": "io"}
  %v: f32[2,4] = linear(%x, %wx) {"weight_layout": "oi"}
  %u: f32[2,3] = linear(%x, %w_io_given) {"weight_layout": "io"}
  %s: f32[2,4] = add(%y, %z)
  %t: f32[2,4] = add(%s, %v)
  return %t, %u
}"""


def _before() -> Graph:
    return parse_graph(BEFORE, {"w": W, "w_io_given": W_IO})


def test_transposes_constant_weights():
    before, after, stats = assert_rewrites(BEFORE, EXPECTED, {"w": W, "w_io_given": W_IO},
                                           {"w_io": W.T, "w_io_given": W_IO})
    assert stats == {"rewritten": 2, "packed": 0}
    assert_same_numerics(before, after)


def test_shared_weight_is_transposed_once():
    g = _before()
    run_pass(NAME, g)
    y, z = g.nodes[0], g.nodes[1]
    assert y.inputs[1] is z.inputs[1] is g.const_values["w_io"]
    assert [k for k in g.constants if k.startswith("w_io") and k != "w_io_given"] == ["w_io"]
    assert "w" not in g.constants  # the [out, in] original is dropped once nothing reads it


def test_non_constant_weight_is_left_alone():
    g = _before()
    run_pass(NAME, g)
    v = g.nodes[2]
    assert v.inputs[1] is g.inputs[1]
    assert v.attrs == {"weight_layout": "oi"}


def test_io_weight_is_left_alone_and_pass_is_idempotent():
    g = _before()
    run_pass(NAME, g)
    assert g.constants["w_io_given"] is W_IO
    text = print_graph(g)
    assert run_pass(NAME, g) == {"rewritten": 0, "packed": 0}
    assert print_graph(g) == text


def test_weight_also_read_by_another_op_is_kept():
    before = """
    graph main(%x: f32[3,8]) {
      const %w: f32[4,8]
      %y: f32[3,4] = linear(%x, %w) {"weight_layout": "oi"}
      %wt: f32[8,4] = transpose(%w) {"perm": [1, 0]}
      %m: f32[3,4] = matmul(%x, %wt)
      %s: f32[3,4] = sub(%y, %m)
      return %s, %w
    }"""
    expected = """
    graph main(%x: f32[3,8]) {
      const %w: f32[4,8]
      const %w_io: f32[8,4]
      %y: f32[3,4] = linear(%x, %w_io) {"weight_layout": "io"}
      %wt: f32[8,4] = transpose(%w) {"perm": [1, 0]}
      %m: f32[3,4] = matmul(%x, %wt)
      %s: f32[3,4] = sub(%y, %m)
      return %s, %w
    }"""
    g, after, stats = assert_rewrites(before, expected, {"w": W}, {"w": W, "w_io": W.T})
    assert stats == {"rewritten": 1, "packed": 0}
    assert_same_numerics(g, after)


def test_new_constant_name_does_not_clash():
    before = """
    graph main(%x: f32[2,8]) {
      const %w: f32[4,8]
      const %w_io: f32[8,3]
      %y: f32[2,4] = linear(%x, %w) {"weight_layout": "oi"}
      %z: f32[2,3] = linear(%x, %w_io) {"weight_layout": "io"}
      return %y, %z
    }"""
    expected = """
    graph main(%x: f32[2,8]) {
      const %w_io: f32[8,3]
      const %w_io_1: f32[8,4]
      %y: f32[2,4] = linear(%x, %w_io_1) {"weight_layout": "io"}
      %z: f32[2,3] = linear(%x, %w_io) {"weight_layout": "io"}
      return %y, %z
    }"""
    g, after, stats = assert_rewrites(before, expected, {"w": W, "w_io": W_IO}, {"w_io": W_IO, "w_io_1": W.T})
    assert stats == {"rewritten": 1, "packed": 0}
    assert_same_numerics(g, after)


def test_two_weights_and_batched_input():
    before = """
    graph main(%x: f32[2,3,8]) {
      const %w1: f32[4,8]
      const %w2: f32[5,8]
      %a: f32[2,3,4] = linear(%x, %w1) {"weight_layout": "oi"}
      %b: f32[2,3,5] = linear(%x, %w2) {"weight_layout": "oi"}
      return %a, %b
    }"""
    expected = """
    graph main(%x: f32[2,3,8]) {
      const %w1_io: f32[8,4]
      const %w2_io: f32[8,5]
      %a: f32[2,3,4] = linear(%x, %w1_io) {"weight_layout": "io"}
      %b: f32[2,3,5] = linear(%x, %w2_io) {"weight_layout": "io"}
      return %a, %b
    }"""
    g, after, stats = assert_rewrites(before, expected, {"w1": W, "w2": W_OTHER},
                                      {"w1_io": W.T, "w2_io": W_OTHER.T})
    assert stats == {"rewritten": 2, "packed": 0}
    assert_same_numerics(g, after)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_numerics_on_random_inputs(seed):
    g = _before()
    after = g.clone()
    run_pass(NAME, after)
    assert_same_numerics(g, after, seed)


def test_before_graph_is_not_modified_by_running_on_a_clone():
    g = _before()
    text = print_graph(g)
    run_pass(NAME, g.clone())
    assert print_graph(g) == text
    np.testing.assert_array_equal(g.constants["w"], W)


W48 = RNG.standard_normal((48, 8)).astype(np.float32)  # [out, in]: 48 = 2 panels of 3 x 8 lanes


def test_packs_weights_in_register_tile_panels():
    before = """
    graph main(%x: f32[2,8]) {
      const %w: f32[48,8]
      const %w16_io: f32[8,16]
      %y: f32[2,48] = linear(%x, %w) {"weight_layout": "oi"}
      %z: f32[2,16] = linear(%x, %w16_io) {"weight_layout": "io"}
      return %y, %z
    }"""
    expected = """
    graph main(%x: f32[2,8]) {
      const %w_oi24o: f32[2,8,24]
      const %w16_io_oi8o: f32[2,8,8]
      %y: f32[2,48] = linear(%x, %w_oi24o) {"weight_layout": "oi24o"}
      %z: f32[2,16] = linear(%x, %w16_io_oi8o) {"weight_layout": "oi8o"}
      return %y, %z
    }"""
    w16 = RNG.standard_normal((8, 16)).astype(np.float32)
    panels = W48.T.reshape(8, 2, 24).transpose(1, 0, 2)  # panel p holds output features 24p .. 24p+23
    g, after, stats = assert_rewrites(before, expected, {"w": W48, "w16_io": w16},
                                      {"w_oi24o": panels, "w16_io_oi8o": w16.reshape(8, 2, 8).transpose(1, 0, 2)})
    assert stats == {"rewritten": 2, "packed": 2}
    assert_same_numerics(g, after)
    assert run_pass(NAME, after) == {"rewritten": 0, "packed": 0}  # idempotent


def test_panel_width_follows_the_target_vector_width():
    class Neon:  # a 4-lane target: 3 vectors of 4
        def vector_lanes(self, bits):
            return 128 // bits

    g = parse_graph("""
    graph main(%x: f32[2,8]) {
      const %w: f32[48,8]
      %y: f32[2,48] = linear(%x, %w) {"weight_layout": "oi"}
      return %y
    }""", {"w": W48})
    ref = g.clone()
    p = get_pass(NAME)
    p.target = Neon()
    assert p.run(g) == {"rewritten": 1, "packed": 1}
    verify(g)
    assert g.nodes[0].attrs["weight_layout"] == "oi12o" and g.nodes[0].inputs[1].type.shape == (4, 8, 12)
    assert_same_numerics(ref, g)


def test_horizontal_fusion_stacks_packed_panels():
    g = parse_graph("""
    graph main(%x: f32[2,8]) {
      const %wq: f32[48,8]
      const %wk: f32[24,8]
      %q: f32[2,48] = linear(%x, %wq) {"weight_layout": "oi"}
      %k: f32[2,24] = linear(%x, %wk) {"weight_layout": "oi"}
      return %q, %k
    }""", {"wq": W48, "wk": W48[:24] * 2})
    ref = g.clone()
    run_pass(NAME, g)
    assert get_pass("fuse_horizontal").run(g)["merged_linears"] == 2
    verify(g)
    (wide,) = [n for n in g.nodes if n.op == "linear"]
    assert wide.attrs["weight_layout"] == "oi24o" and wide.inputs[1].type.shape == (3, 8, 24)
    assert_same_numerics(ref, g)
