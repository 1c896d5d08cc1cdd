"""conv_weight_layout: Before/Expected IR, packed weights, block sizes per target width, refusals, numerics
(interpreter before vs after, compiled packed kernels vs interpreter), the verifier on packed weights, and
BatchNorm folding leaving packed weights alone."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from edgeopt.passes.conv_weight_layout import block_size

from edgeopt.ir import VerificationError, interpret, parse_graph, print_graph, verify
from edgeopt.ir.ops.nn import pack_conv_weight, unpack_conv_weight
from edgeopt.pipeline import get_pass
from tests.passes.fusion_harness import assert_close, random_inputs

NAME = "conv_weight_layout"


def conv_graph(x=(1, 3, 8, 8), w=(16, 3, 3, 3), groups=1, bias=False, stride=1, pad=1, layout="OIHW",
               w_const=True, dtype="f32"):
    oh = (x[2] + 2 * pad - w[2]) // stride + 1
    ow = (x[3] + 2 * pad - w[3]) // stride + 1
    o = w[0] * (w[4] if len(w) == 5 else 1)
    sh = lambda s: f"{dtype}[{','.join(map(str, s))}]"  # noqa: E731
    params = f"%x: {sh(x)}" + ("" if w_const else f", %w: {sh(w)}")
    consts = "" if not w_const else f"const %w: {sh(w)}\n"
    if bias:
        consts += f"const %b: {sh((o,))}\n"
    attrs = (f'{{"stride": [{stride}, {stride}], "padding": [{pad}, {pad}, {pad}, {pad}], "dilation": [1, 1], '
             f'"groups": {groups}, "weight_layout": "{layout}", "layout": "NCHW"}}')
    text = f"""
    graph main({params}) {{
      {consts}
      %y: {sh((x[0], o, oh, ow))} = conv2d(%x, %w{', %b' if bias else ''}) {attrs}
      return %y
    }}"""
    rng = np.random.default_rng(0)
    npdt = np.float32 if dtype == "f32" else np.float16
    values = {}
    if w_const:
        values["w"] = rng.standard_normal(w).astype(npdt)
    if bias:
        values["b"] = rng.standard_normal(o).astype(npdt)
    return text, values


def run(g, lanes=8):
    p = get_pass(NAME)
    p.target = SimpleNamespace(vector_lanes=lambda bits=32: lanes)
    stats = p.run(g)
    verify(g)
    return stats


@pytest.mark.parametrize("lanes,out_channels,block", [(8, 16, 8), (16, 16, 16), (16, 24, 8), (4, 16, 4),
                                                      (8, 12, 4), (8, 6, 0), (16, 40, 8)])
def test_block_is_the_widest_power_of_two_that_divides_the_channels(lanes, out_channels, block):
    assert block_size(out_channels, lanes) == block


def test_pack_and_unpack_are_inverse():
    w = np.arange(16 * 3 * 2 * 2, dtype=np.float32).reshape(16, 3, 2, 2)
    p = pack_conv_weight(w, 8)
    assert p.shape == (2, 3, 2, 2, 8) and p.flags.c_contiguous
    assert p[1, 2, 0, 1, 5] == w[13, 2, 0, 1]
    np.testing.assert_array_equal(unpack_conv_weight(p, 8), w)


def test_packs_the_weight_and_sets_the_layout():
    text, consts = conv_graph()
    g = parse_graph(text, consts)
    before = g.clone()
    assert run(g) == {"packed": 1}
    conv = g.nodes[0]
    assert conv.attrs["weight_layout"] == "OIHW8o"
    assert conv.inputs[1].type.shape == (2, 3, 3, 3, 8)
    np.testing.assert_array_equal(g.const(conv.inputs[1]), pack_conv_weight(consts["w"], 8))
    assert list(g.constants) == [conv.inputs[1].name]  # the OIHW copy is gone
    assert '"weight_layout": "OIHW8o", "layout": "NCHW"' in print_graph(g)
    xs = random_inputs(before)
    assert_close(interpret(before, xs)[0], interpret(g, xs)[0])
    assert print_graph(parse_graph(print_graph(g), dict(g.constants))) == print_graph(g)  # text round trip


def test_a_shared_weight_is_packed_once():
    text = """
    graph main(%x: f32[1,4,6,6]) {
      const %w: f32[8,4,1,1]
      %a: f32[1,8,6,6] = conv2d(%x, %w) ATTRS
      %b: f32[1,8,6,6] = conv2d(%x, %w) ATTRS
      %y: f32[1,8,6,6] = add(%a, %b)
      return %y
    }"""
    attrs = ('{"stride": [1, 1], "padding": [0, 0, 0, 0], "dilation": [1, 1], "groups": 1, '
             '"weight_layout": "OIHW", "layout": "NCHW"}')
    g = parse_graph(text.replace("ATTRS", attrs), {"w": np.ones((8, 4, 1, 1), np.float32)})
    verify(g)
    assert run(g) == {"packed": 2}
    assert len(g.constants) == 1 and g.nodes[0].inputs[1] is g.nodes[1].inputs[1]


@pytest.mark.parametrize("case", ["grouped", "odd_channels", "weight_is_an_input", "fp16", "already_packed"])
def test_refusals(case):
    kw = {"grouped": dict(x=(1, 4, 8, 8), w=(8, 2, 3, 3), groups=2),
          "odd_channels": dict(w=(6, 3, 3, 3)),
          "weight_is_an_input": dict(w_const=False),
          "fp16": dict(dtype="f16"),
          "already_packed": dict(w=(2, 3, 3, 3, 8), layout="OIHW8o")}[case]
    text, consts = conv_graph(**kw)
    g = parse_graph(text, consts)
    before = print_graph(g)
    assert run(g) == {"packed": 0}
    assert print_graph(g) == before


@pytest.mark.parametrize("lanes", [4, 8, 16])
@pytest.mark.parametrize("shape", [dict(x=(1, 3, 9, 7), w=(16, 3, 3, 3), bias=True),
                                   dict(x=(2, 8, 10, 10), w=(32, 8, 3, 3), stride=2),
                                   dict(x=(1, 16, 7, 7), w=(16, 16, 1, 1), pad=0)])
def test_compiled_packed_kernel_matches_the_interpreter(shape, lanes):
    from edgeopt.api import compile_graph

    text, consts = conv_graph(**shape)
    g = parse_graph(text, consts)
    packed = g.clone()
    run(packed, lanes)
    assert packed.nodes[0].attrs["weight_layout"] != "OIHW"
    compiled = compile_graph(packed, "host", passes=[])
    assert "packed" in compiled.report["kernels"][0]["schedule"]
    xs = random_inputs(g)
    assert_close(interpret(g, xs)[0], compiled(*xs))


@pytest.mark.parametrize("w,layout,groups,msg", [
    ((2, 3, 3, 3, 8), "OIHW4o", 1, "needs a"),
    ((16, 3, 3, 3), "OIHW8o", 1, "needs a"),
    ((2, 3, 3, 3, 8), "NCHW8c", 1, "weight_layout must be"),
    ((2, 1, 3, 3, 8), "OIHW8o", 3, "groups=1"),
])
def test_verifier_rejects_a_weight_that_does_not_fit_the_layout(w, layout, groups, msg):
    text, consts = conv_graph(w=w, layout=layout, groups=groups)
    with pytest.raises(Exception, match=msg) as e:
        verify(parse_graph(text, consts))
    assert isinstance(e.value, (VerificationError, ValueError)) or "conv2d" in str(e.value)


def test_batch_norm_folding_leaves_a_packed_conv_alone():
    text = """
    graph main(%x: f32[1,3,4,4]) {
      const %w: f32[1,3,1,1,8]
      const %m: f32[8]
      const %v: f32[8]
      const %ga: f32[8]
      const %be: f32[8]
      %c: f32[1,8,4,4] = conv2d(%x, %w) {"stride": [1, 1], "padding": [0, 0, 0, 0], "dilation": [1, 1], "groups": 1, "weight_layout": "OIHW8o", "layout": "NCHW"}
      %y: f32[1,8,4,4] = batch_norm(%c, %m, %v, %ga, %be) {"eps": 1e-05}
      return %y
    }"""  # noqa: E501
    rng = np.random.default_rng(1)
    consts = {"w": rng.standard_normal((1, 3, 1, 1, 8)).astype(np.float32),
              "m": rng.standard_normal(8).astype(np.float32), "v": rng.uniform(0.5, 2, 8).astype(np.float32),
              "ga": rng.standard_normal(8).astype(np.float32), "be": rng.standard_normal(8).astype(np.float32)}
    g = parse_graph(text, consts)
    verify(g)
    before = print_graph(g)
    get_pass("fold_batch_norm").run(g)
    assert print_graph(g) == before
