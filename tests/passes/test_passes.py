"""Built-in passes: structure (Before/Expected IR, hit counts) and numerics (interpreter before vs after)."""

from __future__ import annotations

import numpy as np

from edgeopt.ir import interpret, parse_graph, verify
from edgeopt.pipeline import get_pass

W = np.arange(32, dtype=np.float32).reshape(4, 8) / 10


def _run(pass_name, before_text, constants=None):
    before = parse_graph(before_text, constants)
    after = before.clone()
    stats = get_pass(pass_name).run(after)
    verify(after)
    return before, after, stats


def _same_numerics(before, after, seed=0):
    rng = np.random.default_rng(seed)
    xs = [rng.standard_normal(v.type.shape).astype(v.type.np_dtype) for v in before.inputs]
    for a, b in zip(interpret(before, xs), interpret(after, xs)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)


def test_dead_code_elimination():
    before_text = """
    graph main(%x: f32[4]) {
      const %c: f32[] = 2.0
      const %unused: f32[] = 3.0
      %a: f32[4] = relu(%x)
      %b: f32[4] = exp(%x)
      %d: f32[4] = mul(%b, %c)
      return %a
    }"""
    expected = """
    graph main(%x: f32[4]) {
      %a: f32[4] = relu(%x)
      return %a
    }"""
    before, after, stats = _run("dead_code_elimination", before_text)
    assert str(after) == str(parse_graph(expected))
    assert stats == {"removed_nodes": 2, "removed_constants": 2}
    _same_numerics(before, after)


def test_linear_weight_layout():
    before_text = """
    graph main(%x: f32[2,8], %wx: f32[4,8]) {
      const %w: f32[4,8]
      %y: f32[2,4] = linear(%x, %w) {"weight_layout": "oi"}
      %z: f32[2,4] = linear(%x, %w) {"weight_layout": "oi"}
      %v: f32[2,4] = linear(%x, %wx) {"weight_layout": "oi"}
      %s: f32[2,4] = add(%y, %z)
      %t: f32[2,4] = add(%s, %v)
      return %t
    }"""
    before, after, stats = _run("linear_weight_layout", before_text, {"w": W})
    assert stats == {"rewritten": 2}
    assert [n.attrs["weight_layout"] for n in after.nodes[:3]] == ["io", "io", "oi"]
    assert list(after.constants) == ["w_io"]  # the shared weight is transposed once; the old one is gone
    np.testing.assert_array_equal(after.constants["w_io"], W.T)
    assert after.nodes[2].inputs[1] is after.inputs[1]  # a weight that is an input stays as it is
    _same_numerics(before, after)
