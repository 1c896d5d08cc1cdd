"""fold_affine: Before/Expected IR, folded weights, hit counts, numerics (interpreter before vs after), verify."""

from __future__ import annotations

import re

import numpy as np
import pytest

from edgeopt.ir import Graph, parse_graph, print_graph, verify
from edgeopt.testing import assert_close, assert_same_numerics, run_pass, structure

NAME = "fold_affine"
CONV_ATTRS = ('{"stride": [1, 1], "padding": [1, 1, 1, 1], "dilation": [1, 1], "groups": 1, '
              '"weight_layout": "OIHW", "layout": "NCHW"}')


def t(shape) -> str:
    return f"f32[{','.join(map(str, shape))}]"


# layer name -> (op, x shape, w shape, has bias, attrs, y shape, per-output-channel index of each weight element)
LAYERS = {
    "conv2d": ("conv2d", (1, 3, 5, 5), (4, 3, 3, 3), True, CONV_ATTRS, (1, 4, 5, 5),
               np.arange(4).reshape(4, 1, 1, 1)),
    "conv2d_no_bias": ("conv2d", (2, 3, 5, 5), (4, 3, 3, 3), False, CONV_ATTRS, (2, 4, 5, 5),
                       np.arange(4).reshape(4, 1, 1, 1)),
    "conv_transpose2d_groups2": ("conv_transpose2d", (1, 4, 3, 3), (4, 3, 2, 2), True,
                                 '{"stride": [2, 2], "padding": [0, 0], "output_padding": [0, 0], '
                                 '"dilation": [1, 1], "groups": 2}', (1, 6, 6, 6),
                                 (np.arange(4).reshape(4, 1) // 2 * 3 + np.arange(3)).reshape(4, 3, 1, 1)),
    "linear_oi": ("linear", (3, 6), (5, 6), True, '{"weight_layout": "oi"}', (3, 5), np.arange(5).reshape(5, 1)),
    "linear_io": ("linear", (3, 6), (6, 5), False, '{"weight_layout": "io"}', (3, 5), np.arange(5).reshape(1, 5)),
    "linear_3d_input": ("linear", (2, 3, 6), (5, 6), True, '{"weight_layout": "oi"}', (2, 3, 5),
                        np.arange(5).reshape(5, 1)),
}


def make_case(layer: str, op: str, c_shape: tuple, commuted: bool = False, seed: int = 0):
    """(Before text, constants, expected folded weight, expected folded bias, Expected text)."""
    lop, xs, ws, has_bias, attrs, ys, channel_of_w = LAYERS[layer]
    ch = ys[1] if lop != "linear" else ys[-1]
    rng = np.random.default_rng(seed)
    consts = {"w": rng.standard_normal(ws).astype(np.float32),
              "c": rng.uniform(-2, 2, c_shape).astype(np.float32)}
    if has_bias:
        consts["b"] = rng.standard_normal(ch).astype(np.float32)
    args = "%c, %y" if commuted else "%y, %c"
    before = f"""
    graph main(%x: {t(xs)}) {{
      const %w: {t(ws)}{f"{chr(10)}      const %b: {t((ch,))}" if has_bias else ""}
      const %c: {t(c_shape)}
      %y: {t(ys)} = {lop}(%x, %w{", %b" if has_bias else ""}) {attrs}
      %out: {t(ys)} = {op}({args})
      %z: {t(ys)} = relu(%out)
      return %z
    }}"""
    expected = f"""
    graph main(%x: {t(xs)}) {{
      const %w_folded: {t(ws)}
      const %out_bias: {t((ch,))}
      %out_1: {t(ys)} = {lop}(%x, %w_folded, %out_bias) {attrs}
      %z: {t(ys)} = relu(%out_1)
      return %z
    }}"""
    # c as one value per output channel (a scalar or size-1 constant: the same value for every channel)
    c = np.broadcast_to(consts["c"].astype(np.float64).reshape(-1), (ch,)) if consts["c"].size == 1 else \
        consts["c"].astype(np.float64).reshape(ch)
    w = consts["w"].astype(np.float64)
    bias = consts["b"].astype(np.float64) if has_bias else np.zeros(ch)
    if op == "mul":
        w_folded, b_folded = w * c[channel_of_w], bias * c
    else:
        w_folded, b_folded = w, bias + c if op == "add" else bias - c
    return before, consts, w_folded.astype(np.float32), b_folded.astype(np.float32), expected


def assert_folds(before, consts, w_folded, b_folded, expected, count: int = 1) -> tuple[Graph, Graph]:
    g = parse_graph(before, consts)
    verify(g)
    after = g.clone()
    assert run_pass(NAME, after) == {"folded": count}
    assert structure(after, values=False) == \
        structure(parse_graph(expected, {"w_folded": w_folded, "out_bias": b_folded}), values=False)
    assert_close(after.constants["w_folded"], w_folded, rtol=1e-6)
    assert_close(after.constants["out_bias"], b_folded, rtol=1e-6)
    assert_same_numerics(g, after)
    return g, after


# -- the docstring example -------------------------------------------------------------------------------------

def test_docstring_example():
    rng = np.random.default_rng(1)
    w, b = rng.standard_normal((8, 3, 1, 1)).astype(np.float32), rng.standard_normal(8).astype(np.float32)
    s = rng.uniform(-2, 2, (8, 1, 1)).astype(np.float32)
    before = """
    graph main(%x: f32[1,3,4,4]) {
      const %w: f32[8,3,1,1]
      const %b: f32[8]
      const %s: f32[8,1,1]
      %c: f32[1,8,4,4] = conv2d(%x, %w, %b) {"stride": [1, 1], "padding": [0, 0, 0, 0], "dilation": [1, 1], "groups": 1, "weight_layout": "OIHW", "layout": "NCHW"}
      %y: f32[1,8,4,4] = mul(%c, %s)
      return %y
    }"""  # noqa: E501
    expected = """
    graph main(%x: f32[1,3,4,4]) {
      const %w_folded: f32[8,3,1,1]
      const %y_bias: f32[8]
      %y_1: f32[1,8,4,4] = conv2d(%x, %w_folded, %y_bias) {"stride": [1, 1], "padding": [0, 0, 0, 0], "dilation": [1, 1], "groups": 1, "weight_layout": "OIHW", "layout": "NCHW"}
      return %y_1
    }"""  # noqa: E501
    g = parse_graph(before, {"w": w, "b": b, "s": s})
    verify(g)
    after = g.clone()
    assert run_pass(NAME, after) == {"folded": 1}
    w_folded = (w.astype(np.float64) * s.reshape(8, 1, 1, 1)).astype(np.float32)
    b_folded = (b.astype(np.float64) * s.reshape(8)).astype(np.float32)
    assert structure(after, values=False) == \
        structure(parse_graph(expected, {"w_folded": w_folded, "y_bias": b_folded}), values=False)
    assert_close(after.constants["w_folded"], w_folded, rtol=1e-6)
    assert_close(after.constants["y_bias"], b_folded, rtol=1e-6)
    assert_same_numerics(g, after)


# -- into conv2d ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("op", ["mul", "add", "sub"])
@pytest.mark.parametrize("c_shape", [(4, 1, 1), (1, 4, 1, 1), (), (1,), (1, 1, 1, 1)],
                         ids=["c41", "c1411", "scalar", "c1", "c1111"])
def test_per_channel_and_scalar_constants_fold_into_conv2d(op, c_shape):
    assert_folds(*make_case("conv2d", op, c_shape))


@pytest.mark.parametrize("op", ["mul", "add"])
@pytest.mark.parametrize("c_shape", [(4, 1, 1), ()], ids=["per_channel", "scalar"])
def test_commuted_constant_times_conv_folds(op, c_shape):
    assert_folds(*make_case("conv2d", op, c_shape, commuted=True))


@pytest.mark.parametrize("op", ["mul", "add", "sub"])
def test_conv2d_without_bias_gets_one(op):
    before, consts, w_folded, b_folded, expected = make_case("conv2d_no_bias", op, (4, 1, 1))
    g, after = assert_folds(before, consts, w_folded, b_folded, expected)
    assert len(after.nodes[0].inputs) == 3


@pytest.mark.parametrize("op", ["mul", "add", "sub"])
def test_folds_into_grouped_conv_transpose2d(op):
    assert_folds(*make_case("conv_transpose2d_groups2", op, (6, 1, 1)))


# -- into linear ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("layer", ["linear_oi", "linear_io", "linear_3d_input"])
@pytest.mark.parametrize("op,c_shape,commuted", [
    ("mul", (5,), False), ("mul", (1, 5), True), ("mul", (), False),
    ("add", (5,), True), ("add", (), False), ("sub", (1, 5), False), ("sub", (), False),
])
def test_per_channel_and_scalar_constants_fold_into_linear(layer, op, c_shape, commuted):
    if layer == "linear_3d_input" and len(c_shape) == 2:
        c_shape = (1,) + c_shape
    assert_folds(*make_case(layer, op, c_shape, commuted))


def test_scale_then_offset_fold_one_after_the_other():
    rng = np.random.default_rng(4)
    w, s, o = (rng.standard_normal(sh).astype(np.float32) for sh in ((6, 5), (5,), (1, 5)))
    before = """
    graph main(%x: f32[2,6]) {
      const %w: f32[6,5]
      const %s: f32[5]
      const %o: f32[1,5]
      %y: f32[2,5] = linear(%x, %w) {"weight_layout": "io"}
      %m: f32[2,5] = mul(%y, %s)
      %a: f32[2,5] = add(%m, %o)
      return %a
    }"""
    g = parse_graph(before, {"w": w, "s": s, "o": o})
    after = g.clone()
    assert run_pass(NAME, after) == {"folded": 2}
    assert [n.op for n in after.nodes] == ["linear"]
    lin = after.nodes[0]
    assert lin.attrs == {"weight_layout": "io"} and len(lin.inputs) == 3
    assert_close(after.const(lin.inputs[1]), (w.astype(np.float64) * s[None, :]).astype(np.float32), rtol=1e-6)
    assert_close(after.const(lin.inputs[2]), o.reshape(5), rtol=1e-6)
    assert_same_numerics(g, after)


# -- what is not folded -----------------------------------------------------------------------------------------------

NOT_FOLDED = """
graph main(%x: f32[{xs}]) {{
  const %w: f32[4,3,3,3]
  const %b: f32[4]
  const %c: f32[{cs}]
  %y: f32[{ys}] = conv2d(%x, %w, %b) {attrs}
  %out: f32[{os}] = {line}
  return %out
}}"""


@pytest.mark.parametrize("line,c_shape,batch,out_shape", [
    ("div(%y, %c)", (4, 1, 1), 1, None),                 # x / c and x * (1/c) round differently
    ("div(%y, %c)", (), 1, None),
    ("mul(%y, %c)", (1, 1, 5), 1, None),                 # varies along W
    ("add(%y, %c)", (5, 1), 1, None),                    # varies along H
    ("mul(%y, %c)", (4, 5, 5), 1, None),                 # per element
    ("mul(%y, %c)", (2, 1, 1, 1), 2, None),              # varies along the batch
    ("add(%y, %c)", (2, 4, 1, 1), 1, (2, 4, 5, 5)),      # broadcasts the result bigger
    ("mul(%c, %y)", (3, 1, 4, 1, 1), 1, (3, 1, 4, 5, 5)),
    ("sub(%c, %y)", (4, 1, 1), 1, None),                 # c - conv is not conv + const
    ("sub(%c, %y)", (), 1, None),
])
def test_not_folded(line, c_shape, batch, out_shape):
    ys = (batch, 4, 5, 5)
    before = NOT_FOLDED.format(xs=f"{batch},3,5,5", cs=",".join(map(str, c_shape)), ys=",".join(map(str, ys)),
                               os=",".join(map(str, out_shape or ys)), attrs=CONV_ATTRS, line=line)
    rng = np.random.default_rng(2)
    consts = {"w": rng.standard_normal((4, 3, 3, 3)).astype(np.float32),
              "b": rng.standard_normal(4).astype(np.float32),
              "c": rng.uniform(0.5, 2, c_shape).astype(np.float32)}
    g = parse_graph(before, consts)
    verify(g)
    after = g.clone()
    assert run_pass(NAME, after) == {"folded": 0}
    assert print_graph(after) == print_graph(g)
    assert_same_numerics(g, after)


def test_linear_constant_that_varies_along_the_batch_is_not_folded():
    rng = np.random.default_rng(3)
    before = """
    graph main(%x: f32[3,6]) {
      const %w: f32[5,6]
      const %c: f32[3,1]
      %y: f32[3,5] = linear(%x, %w) {"weight_layout": "oi"}
      %out: f32[3,5] = mul(%y, %c)
      return %out
    }"""
    g = parse_graph(before, {"w": rng.standard_normal((5, 6)).astype(np.float32),
                             "c": rng.standard_normal((3, 1)).astype(np.float32)})
    after = g.clone()
    assert run_pass(NAME, after) == {"folded": 0}
    assert print_graph(after) == print_graph(g)


@pytest.mark.parametrize("case", ["second_reader", "graph_output", "runtime_constant", "runtime_weight"])
def test_not_folded_when_the_layer_is_shared_or_not_constant(case):
    before, consts, _, _, _ = make_case("conv2d", "mul", (4, 1, 1))
    if case == "second_reader":
        before = before.replace("%z: f32[1,4,5,5] = relu(%out)",
                                "%e: f32[1,4,5,5] = exp(%y)\n      %z: f32[1,4,5,5] = add(%out, %e)")
    elif case == "graph_output":
        before = before.replace("return %z", "return %z, %y")
    else:
        name = "c" if case == "runtime_constant" else "w"
        decl = re.search(rf"const %{name}: (\S+)\n\s*", before)
        before = before.replace(decl.group(0), "").replace("(%x: f32[1,3,5,5])",
                                                           f"(%x: f32[1,3,5,5], %{name}: {decl.group(1)})")
        consts.pop(name)
    g = parse_graph(before, consts)
    verify(g)
    after = g.clone()
    assert run_pass(NAME, after) == {"folded": 0}
    assert print_graph(after) == print_graph(g)
    assert_same_numerics(g, after)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_numerics_on_random_inputs_and_constants(seed):
    for layer, op, c_shape in [("conv2d", "mul", (4, 1, 1)), ("linear_io", "sub", (5,)),
                               ("conv_transpose2d_groups2", "mul", (1, 6, 1, 1))]:
        before, consts, _, _, _ = make_case(layer, op, c_shape, seed=seed)
        g = parse_graph(before, consts)
        after = g.clone()
        assert run_pass(NAME, after) == {"folded": 1}
        assert_same_numerics(g, after, seed)
