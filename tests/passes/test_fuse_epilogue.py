"""fuse_epilogue: Before/Expected IR, hit counts, the no-broadcast-growth rule, prologues, numerics
(interpreter before vs after, compiled kernels vs interpreter), verify."""

from __future__ import annotations

import numpy as np
import pytest

from edgeopt.ir import parse_graph, print_graph, verify
from tests.passes.fusion_harness import (
    assert_same_numerics,
    body_ops,
    fused_nodes,
    harness,
)

NAME = "fuse_epilogue"
RNG = np.random.default_rng(17)
W_CONV = RNG.standard_normal((8, 3, 1, 1)).astype(np.float32)
W_CONV3 = RNG.standard_normal((4, 2, 3, 3)).astype(np.float32)
W_LIN = RNG.standard_normal((4, 8)).astype(np.float32)
CONSTS = {"w": W_CONV, "w3": W_CONV3, "wl": W_LIN}
CONV_ATTRS = ('{"stride": [1, 1], "padding": [0, 0, 0, 0], "dilation": [1, 1], "groups": 1, '
              '"weight_layout": "OIHW", "layout": "NCHW"}')
RTOL = 1e-5


BEFORE = """
graph main(%x: f32[2,8], %skip: f32[2,4]) {
  const %wl: f32[4,8]
  const %b: f32[4] = [0.5, -0.5, 1.0, 2.0]
  %l: f32[2,4] = linear(%x, %wl, %b) {"weight_layout": "oi"}
  %a: f32[2,4] = add(%l, %skip)
  %r: f32[2,4] = relu(%a)
  return %r
}"""

EXPECTED = """
graph main(%x: f32[2,8], %skip: f32[2,4]) {
  const %wl: f32[4,8]
  const %b: f32[4] = [0.5, -0.5, 1.0, 2.0]
  %r: f32[2,4] = fused(%x, %wl, %b, %skip) {"name": "linear_add_relu", "anchor": "linear"}
    graph linear_add_relu(%x: f32[2,8], %wl: f32[4,8], %b: f32[4], %skip: f32[2,4]) {
      %l: f32[2,4] = linear(%x, %wl, %b) {"weight_layout": "oi"}
      %a: f32[2,4] = add(%l, %skip)
      %r: f32[2,4] = relu(%a)
      return %r
    }
  return %r
}"""

CONV_RESIDUAL = f"""
graph main(%x: f32[1,3,4,4], %skip: f32[1,8,4,4]) {{
  const %w: f32[8,3,1,1]
  const %b: f32[8] = [0.5, -0.5, 1.0, 2.0, 0.0, 0.25, -1.0, 3.0]
  const %half: f32[] = 0.5
  %c: f32[1,8,4,4] = conv2d(%x, %w, %b) {CONV_ATTRS}
  %s: f32[1,8,4,4] = mul(%c, %half)
  %a: f32[1,8,4,4] = add(%s, %skip)
  %r: f32[1,8,4,4] = relu(%a)
  return %r
}}"""


_H = harness(NAME, CONSTS)
run_pass, assert_rewrites, assert_compiled_matches = (_H.run_pass, _H.assert_rewrites,
                                                     _H.assert_compiled_matches)


def test_linear_bias_residual_relu():
    before, after, stats = assert_rewrites(BEFORE, EXPECTED)
    assert stats == {"fused_groups": 1, "fused_ops": 3}
    assert_same_numerics(before, after)


def test_a_conv_takes_its_scale_but_leaves_the_residual_add_to_an_elementwise_kernel():
    g = parse_graph(CONV_RESIDUAL, CONSTS)
    verify(g)
    before = g.clone()
    assert run_pass(g) == {"fused_groups": 1, "fused_ops": 2}
    assert body_ops(g) == [["conv2d", "mul"]]
    assert [n.op for n in g.nodes] == ["fused", "add", "relu"]
    assert_same_numerics(before, g)


def test_a_blocked_conv_takes_its_residual_add_too():
    """In NCHW<v>c the conv's store writes whole channel vectors, so the residual is read as vectors too."""
    blocked = CONV_RESIDUAL.replace('"layout": "NCHW"', '"layout": "NCHWc"').replace(
        '"weight_layout": "OIHW"', '"weight_layout": "OIHW8o"').replace("f32[8,3,1,1]", "f32[1,3,1,1,8]")
    blocked = blocked.replace("f32[1,8,4,4]", "f32[1,1,4,4,8]").replace("f32[1,3,4,4]", "f32[1,1,4,4,3]")
    g = parse_graph(blocked, {"w": W_CONV.reshape(1, 8, 3, 1, 1).transpose(0, 2, 3, 4, 1).copy()})
    verify(g)
    before = g.clone()
    assert run_pass(g) == {"fused_groups": 1, "fused_ops": 4}
    assert body_ops(g) == [["conv2d", "mul", "add", "relu"]]
    assert_same_numerics(before, g)


def test_epilogue_must_not_broadcast_the_anchor_result_to_a_bigger_tensor():
    before = """
    graph main(%x: f32[2,8], %y: f32[2,4], %big: f32[3,2,4]) {
      const %wl: f32[4,8]
      %l: f32[2,4] = linear(%x, %wl) {"weight_layout": "oi"}
      %g: f32[2,4] = gelu(%l) {"approximate": "none"}
      %s: f32[2,4] = add(%g, %y)
      %bb: f32[3,2,4] = add(%s, %big)
      %r: f32[3,2,4] = relu(%bb)
      return %r
    }"""
    expected = """
    graph main(%x: f32[2,8], %y: f32[2,4], %big: f32[3,2,4]) {
      const %wl: f32[4,8]
      %s: f32[2,4] = fused(%x, %wl, %y) {"name": "linear_gelu_add", "anchor": "linear"}
        graph linear_gelu_add(%x: f32[2,8], %wl: f32[4,8], %y: f32[2,4]) {
          %l: f32[2,4] = linear(%x, %wl) {"weight_layout": "oi"}
          %g: f32[2,4] = gelu(%l) {"approximate": "none"}
          %s: f32[2,4] = add(%g, %y)
          return %s
        }
      %bb: f32[3,2,4] = add(%s, %big)
      %r: f32[3,2,4] = relu(%bb)
      return %r
    }"""
    before_g, after, stats = assert_rewrites(before, expected)
    assert stats == {"fused_groups": 1, "fused_ops": 3}
    assert_same_numerics(before_g, after)


def test_a_growing_broadcast_right_after_the_anchor_leaves_it_alone():
    g = parse_graph("""
    graph main(%x: f32[1,3,4,4], %big: f32[2,8,4,4]) {
      const %w: f32[8,3,1,1]
      %c: f32[1,8,4,4] = conv2d(%x, %w) {"stride": [1, 1], "padding": [0, 0, 0, 0], "dilation": [1, 1], "groups": 1, "weight_layout": "OIHW", "layout": "NCHW"}
      %a: f32[2,8,4,4] = add(%big, %c)
      %r: f32[2,8,4,4] = relu(%a)
      return %r
    }""", CONSTS)  # noqa: E501
    text = print_graph(g)
    assert run_pass(g) == {"fused_groups": 0, "fused_ops": 0}
    assert print_graph(g) == text


def test_smaller_operands_broadcast_into_the_epilogue():
    """A per-channel scale [8,1,1] and a scalar keep the conv's shape: they join."""
    g = parse_graph(f"""
    graph main(%x: f32[1,3,4,4], %s: f32[8,1,1], %t: f32[]) {{
      const %w: f32[8,3,1,1]
      %c: f32[1,8,4,4] = conv2d(%x, %w) {CONV_ATTRS}
      %m: f32[1,8,4,4] = mul(%c, %s)
      %a: f32[1,8,4,4] = add(%t, %m)
      %h: f32[1,8,4,4] = hardswish(%a)
      return %h
    }}""", CONSTS)
    before = g.clone()
    assert run_pass(g) == {"fused_groups": 1, "fused_ops": 4}
    assert body_ops(g) == [["conv2d", "mul", "add", "hardswish"]]
    assert [v.name for v in fused_nodes(g)[0].inputs] == ["x", "w", "s", "t"]
    assert_same_numerics(before, g)


def test_a_dtype_change_ends_the_epilogue():
    g = parse_graph(f"""
    graph main(%x: f32[1,3,4,4]) {{
      const %w: f32[8,3,1,1]
      %c: f32[1,8,4,4] = conv2d(%x, %w) {CONV_ATTRS}
      %r: f32[1,8,4,4] = relu(%c)
      %h: f16[1,8,4,4] = cast(%r) {{"dtype": "f16"}}
      %n: f16[1,8,4,4] = neg(%h)
      return %n
    }}""", CONSTS)
    assert run_pass(g) == {"fused_groups": 1, "fused_ops": 2}
    assert body_ops(g) == [["conv2d", "relu"]]
    assert [n.op for n in g.nodes] == ["fused", "cast", "neg"]


def test_epilogue_stops_at_a_value_with_two_readers():
    g = parse_graph("""
    graph main(%x: f32[2,8]) {
      const %wl: f32[4,8]
      %l: f32[2,4] = linear(%x, %wl) {"weight_layout": "oi"}
      %r: f32[2,4] = relu(%l)
      %e: f32[2,4] = exp(%r)
      %t: f32[2,4] = tanh(%r)
      %s: f32[2,4] = add(%e, %t)
      return %s
    }""", CONSTS)
    before = g.clone()
    assert run_pass(g) == {"fused_groups": 1, "fused_ops": 2}
    assert body_ops(g) == [["linear", "relu"]]
    assert [n.op for n in g.nodes] == ["fused", "exp", "tanh", "add"]
    assert_same_numerics(before, g)


def test_anchor_with_two_readers_is_not_fused():
    g = parse_graph("""
    graph main(%x: f32[2,8]) {
      const %wl: f32[4,8]
      %l: f32[2,4] = linear(%x, %wl) {"weight_layout": "oi"}
      %e: f32[2,4] = exp(%l)
      %s: f32[2,4] = add(%l, %e)
      return %s
    }""", CONSTS)
    text = print_graph(g)
    assert run_pass(g) == {"fused_groups": 0, "fused_ops": 0}
    assert print_graph(g) == text


def test_epilogue_stops_at_a_graph_output():
    g = parse_graph("""
    graph main(%x: f32[2,8]) {
      const %wl: f32[4,8]
      %l: f32[2,4] = linear(%x, %wl) {"weight_layout": "oi"}
      %r: f32[2,4] = relu(%l)
      %e: f32[2,4] = exp(%r)
      return %e, %r
    }""", CONSTS)
    before = g.clone()
    assert run_pass(g) == {"fused_groups": 1, "fused_ops": 2}
    f = fused_nodes(g)[0]
    assert body_ops(g) == [["linear", "relu"]] and [o.name for o in f.outputs] == ["r"]
    assert g.outputs[1] is f.outputs[0]
    assert_same_numerics(before, g)


def test_reductions_do_not_join_a_contraction():
    g = parse_graph("""
    graph main(%x: f32[2,8]) {
      const %wl: f32[4,8]
      %l: f32[2,4] = linear(%x, %wl) {"weight_layout": "oi"}
      %s: f32[2,4] = softmax(%l) {"axis": -1}
      %r: f32[2,4] = relu(%s)
      return %r
    }""", CONSTS)
    text = print_graph(g)
    assert run_pass(g) == {"fused_groups": 0, "fused_ops": 0}
    assert print_graph(g) == text


def test_contraction_does_not_join_another_contraction():
    g = parse_graph("""
    graph main(%x: f32[2,8], %v: f32[4,3]) {
      const %wl: f32[4,8]
      %l: f32[2,4] = linear(%x, %wl) {"weight_layout": "oi"}
      %r: f32[2,4] = relu(%l)
      %m: f32[2,3] = matmul(%r, %v)
      %t: f32[2,3] = tanh(%m)
      return %t
    }""", CONSTS)
    before = g.clone()
    assert run_pass(g) == {"fused_groups": 2, "fused_ops": 4}
    assert body_ops(g) == [["linear", "relu"], ["matmul", "tanh"]]
    assert_same_numerics(before, g)


# -- prologues -----------------------------------------------------------------------------------------------


def test_transposed_input_joins_a_matmul():
    before = """
    graph main(%a: f32[8,2], %b: f32[8,4], %s: f32[2,4]) {
      %at: f32[2,8] = transpose(%a) {"perm": [1, 0]}
      %m: f32[2,4] = matmul(%at, %b)
      %p: f32[2,4] = mul(%m, %s)
      %q: f32[2,4] = add(%p, %s)
      return %q
    }"""
    expected = """
    graph main(%a: f32[8,2], %b: f32[8,4], %s: f32[2,4]) {
      %q: f32[2,4] = fused(%a, %b, %s) {"name": "transpose_matmul_mul_add", "anchor": "matmul"}
        graph transpose_matmul_mul_add(%a: f32[8,2], %b: f32[8,4], %s: f32[2,4]) {
          %at: f32[2,8] = transpose(%a) {"perm": [1, 0]}
          %m: f32[2,4] = matmul(%at, %b)
          %p: f32[2,4] = mul(%m, %s)
          %q: f32[2,4] = add(%p, %s)
          return %q
        }
      return %q
    }"""
    g, after, stats = assert_rewrites(before, expected)
    assert stats == {"fused_groups": 1, "fused_ops": 4}
    assert_same_numerics(g, after)


def test_transpose_then_reshape_joins_but_a_lone_reshape_does_not():
    g = parse_graph("""
    graph main(%a: f32[2,4,3], %b: f32[2,12]) {
      const %wl: f32[4,8]
      %at: f32[2,3,4] = transpose(%a) {"perm": [0, 2, 1]}
      %ar: f32[3,8] = reshape(%at) {"shape": [3, 8]}
      %l: f32[3,4] = linear(%ar, %wl) {"weight_layout": "oi"}
      %br: f32[3,8] = reshape(%b) {"shape": [3, 8]}
      %l2: f32[3,4] = linear(%br, %wl) {"weight_layout": "oi"}
      %r2: f32[3,4] = relu(%l2)
      return %l, %r2
    }""", CONSTS)
    before = g.clone()
    assert run_pass(g) == {"fused_groups": 2, "fused_ops": 5}
    assert body_ops(g) == [["transpose", "reshape", "linear"], ["linear", "relu"]]
    assert [n.op for n in g.nodes] == ["fused", "reshape", "fused"]  # the lone reshape stays a free view
    assert_same_numerics(before, g)


def test_pad_joins_a_conv():
    g = parse_graph(f"""
    graph main(%x: f32[1,2,4,4]) {{
      const %w3: f32[4,2,3,3]
      %p: f32[1,2,6,6] = pad(%x) {{"pads": [0, 0, 0, 0, 1, 1, 1, 1], "value": 0.0}}
      %c: f32[1,4,4,4] = conv2d(%p, %w3) {CONV_ATTRS}
      %r: f32[1,4,4,4] = clamp(%c) {{"min": 0.0, "max": 6.0}}
      return %r
    }}""", CONSTS)
    before = g.clone()
    assert run_pass(g) == {"fused_groups": 1, "fused_ops": 3}
    assert body_ops(g) == [["pad", "conv2d", "clamp"]]
    assert_same_numerics(before, g)


def test_slices_join_a_conv_but_not_along_the_last_axis():
    """A 3-d conv's depth tap (a strided slice off the batch axis) and a channel split are read by the conv kernel
    itself; a slice along the last axis (the kernel's vector axis) stays a kernel of its own."""
    g = parse_graph(f"""
    graph main(%x: f32[1,4,6,4], %y: f32[1,2,4,6]) {{
      const %w3: f32[4,2,3,3]
      %tap: f32[1,2,6,4] = slice(%x) {{"axis": 1, "start": 1, "end": 4, "step": 2}}
      %c: f32[1,4,4,2] = conv2d(%tap, %w3) {CONV_ATTRS}
      %r: f32[1,4,4,2] = relu(%c)
      %cols: f32[1,2,4,4] = slice(%y) {{"axis": 3, "start": 1, "end": 5, "step": 1}}
      %c2: f32[1,4,2,2] = conv2d(%cols, %w3) {CONV_ATTRS}
      return %r, %c2
    }}""", CONSTS)
    before = g.clone()
    assert run_pass(g) == {"fused_groups": 1, "fused_ops": 3}
    assert body_ops(g) == [["slice", "conv2d", "relu"]]
    assert [n.op for n in g.nodes] == ["fused", "slice", "conv2d"]
    assert_same_numerics(before, g)


def test_prologue_with_another_reader_stays_out():
    g = parse_graph("""
    graph main(%a: f32[8,2], %b: f32[8,4]) {
      %at: f32[2,8] = transpose(%a) {"perm": [1, 0]}
      %m: f32[2,4] = matmul(%at, %b)
      %r: f32[2,4] = relu(%m)
      %e: f32[2,8] = exp(%at)
      return %r, %e
    }""")
    before = g.clone()
    assert run_pass(g) == {"fused_groups": 1, "fused_ops": 2}
    assert body_ops(g) == [["matmul", "relu"]]
    assert_same_numerics(before, g)


def test_elementwise_producers_do_not_join_as_prologue():
    g = parse_graph("""
    graph main(%a: f32[2,8], %b: f32[8,4]) {
      %e: f32[2,8] = exp(%a)
      %m: f32[2,4] = matmul(%e, %b)
      return %m
    }""")
    text = print_graph(g)
    assert run_pass(g) == {"fused_groups": 0, "fused_ops": 0}
    assert print_graph(g) == text


# -- pools ---------------------------------------------------------------------------------------------------

POOLS = """
graph main(%x: f32[1,3,6,6]) {
  %mp: f32[1,3,3,3] = max_pool2d(%x) {"kernel": [2, 2], "stride": [2, 2], "padding": [0, 0, 0, 0], "dilation": [1, 1], "ceil_mode": false, "layout": "NCHW"}
  %r: f32[1,3,3,3] = relu(%mp)
  %ap: f32[1,3,6,6] = avg_pool2d(%x) {"kernel": [3, 3], "stride": [1, 1], "padding": [1, 1, 1, 1], "ceil_mode": false, "count_include_pad": true, "divisor_override": null, "layout": "NCHW"}
  %h: f32[1,3,6,6] = hardswish(%ap)
  %s: f32[1,3,6,6] = sigmoid(%h)
  %lone: f32[1,3,3,3] = max_pool2d(%x) {"kernel": [2, 2], "stride": [2, 2], "padding": [0, 0, 0, 0], "dilation": [1, 1], "ceil_mode": true, "layout": "NCHW"}
  return %r, %s, %lone
}"""  # noqa: E501


def test_pool_and_its_epilogue():
    g = parse_graph(POOLS)
    before = g.clone()
    assert run_pass(g) == {"fused_groups": 2, "fused_ops": 5}
    assert body_ops(g) == [["max_pool2d", "relu"], ["avg_pool2d", "hardswish", "sigmoid"]]
    assert [n.attrs["anchor"] for n in fused_nodes(g)] == ["max_pool2d", "avg_pool2d"]
    assert [n.op for n in g.nodes].count("max_pool2d") == 1  # no epilogue: left alone
    assert_same_numerics(before, g)


# -- whole-pass properties -----------------------------------------------------------------------------------


def test_pass_is_idempotent():
    g = parse_graph(BEFORE, CONSTS)
    run_pass(g)
    text = print_graph(g)
    assert run_pass(g) == {"fused_groups": 0, "fused_ops": 0}
    assert print_graph(g) == text


def test_before_graph_is_not_modified_by_running_on_a_clone():
    g = parse_graph(BEFORE, CONSTS)
    text = print_graph(g)
    run_pass(g.clone())
    assert print_graph(g) == text


# -- compiled kernels vs the interpreter ---------------------------------------------------------------------

COMPILED = {
    "linear_add_relu": (BEFORE, ["linear", "add", "relu"]),
    "conv_mul": (CONV_RESIDUAL, ["conv2d", "mul"]),
    "linear_gelu_broadcast": ("""
        graph main(%x: f32[2,8], %y: f32[2,4], %big: f32[3,2,4]) {
          const %wl: f32[4,8]
          %l: f32[2,4] = linear(%x, %wl) {"weight_layout": "oi"}
          %g: f32[2,4] = gelu(%l) {"approximate": "none"}
          %s: f32[2,4] = add(%g, %y)
          %bb: f32[3,2,4] = add(%s, %big)
          return %bb
        }""", ["linear", "gelu", "add"]),
    "transpose_matmul": ("""
        graph main(%a: f32[8,5], %b: f32[8,16], %s: f32[5,16]) {
          %at: f32[5,8] = transpose(%a) {"perm": [1, 0]}
          %m: f32[5,16] = matmul(%at, %b)
          %p: f32[5,16] = mul(%m, %s)
          %q: f32[5,16] = sub(%p, %s)
          return %q
        }""", ["transpose", "matmul", "mul", "sub"]),
    "pad_conv_clamp": (f"""
        graph main(%x: f32[1,2,4,4]) {{
          const %w3: f32[4,2,3,3]
          %p: f32[1,2,6,6] = pad(%x) {{"pads": [0, 0, 0, 0, 1, 1, 1, 1], "value": 0.0}}
          %c: f32[1,4,4,4] = conv2d(%p, %w3) {CONV_ATTRS}
          %r: f32[1,4,4,4] = clamp(%c) {{"min": 0.0, "max": 6.0}}
          return %r
        }}""", ["pad", "conv2d", "clamp"]),
    "pools": (POOLS, ["max_pool2d", "relu"]),
    "depth_tap_slice_conv": (f"""
        graph main(%x: f32[1,2,5,6,6]) {{
          const %w3: f32[4,2,3,3]
          %p: f32[1,2,7,6,6] = pad(%x) {{"pads": [0, 0, 0, 0, 1, 1, 0, 0, 0, 0], "value": 0.0}}
          %tap: f32[1,2,3,6,6] = slice(%p) {{"axis": 2, "start": 0, "end": 5, "step": 2}}
          %t: f32[1,3,2,6,6] = transpose(%tap) {{"perm": [0, 2, 1, 3, 4]}}
          %r: f32[3,2,6,6] = reshape(%t) {{"shape": [3, 2, 6, 6]}}
          %c: f32[3,4,4,4] = conv2d(%r, %w3) {CONV_ATTRS}
          return %c
        }}""", ["pad", "slice", "transpose", "reshape", "conv2d"]),
}


@pytest.mark.parametrize("case", sorted(COMPILED))
def test_compiled_fused_kernels_match_the_interpreter(case):
    text, ops = COMPILED[case]
    g = parse_graph(text, CONSTS)
    compiled = assert_compiled_matches(g, seed=3)
    assert compiled.report["pass_stats"][NAME]["fused_groups"] >= 1
    assert ops in [k["ops"] for k in compiled.report["kernels"]]
    assert not [k for k in compiled.report["kernels"] if k["schedule"].startswith(("fallback", "unscheduled"))]


def test_a_pad_prologue_joins_even_when_its_input_has_the_conv_output_shape():
    """The residual rule is about epilogue operands: a 'same' conv's pad reads a tensor of the output's shape."""
    g = parse_graph(f"""
    graph main(%x: f32[1,2,4,4]) {{
      const %w: f32[2,2,3,3]
      %p: f32[1,2,6,6] = pad(%x) {{"pads": [0, 0, 0, 0, 1, 1, 1, 1], "value": 0.0}}
      %c: f32[1,2,4,4] = conv2d(%p, %w) {CONV_ATTRS}
      %r: f32[1,2,4,4] = clamp(%c) {{"min": 0.0, "max": 6.0}}
      return %r
    }}""", {"w": RNG.standard_normal((2, 2, 3, 3)).astype(np.float32)})
    verify(g)
    before = g.clone()
    assert run_pass(g) == {"fused_groups": 1, "fused_ops": 3}
    assert body_ops(g) == [["pad", "conv2d", "clamp"]]
    assert_same_numerics(before, g)
