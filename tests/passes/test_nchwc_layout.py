"""nchwc_layout: which ops go blocked, where layout_transforms go (one each way per value), constants and
depthwise weights re-laid out, refusals, numerics (interpreter before vs after, compiled vs interpreter, zoo
models vs PyTorch) and the blocked schedule in the compiled kernels."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from edgeopt.api import compile_graph
from edgeopt.ir import interpret, parse_graph, print_graph, verify
from edgeopt.ir.ops.layout import block_nchw
from edgeopt.ir.ops.nn import pack_conv_weight
from edgeopt.pipeline import get_pass
from tests.passes.fusion_harness import assert_close, random_inputs

RNG = np.random.default_rng(0)


def attrs(groups=1, pad=1, stride=1, wl="OIHW8o", layout="NCHW"):
    return (f'{{"stride": [{stride}, {stride}], "padding": [{pad}, {pad}, {pad}, {pad}], "dilation": [1, 1], '
            f'"groups": {groups}, "weight_layout": "{wl}", "layout": "{layout}"}}')


def w(*shape):
    return RNG.uniform(-1, 1, shape).astype(np.float32)


def run(g, lanes=8):
    p = get_pass("nchwc_layout")
    p.target = SimpleNamespace(vector_lanes=lambda bits=32: lanes)
    before = g.clone()
    stats = p.run(g)
    verify(g)
    xs = random_inputs(before)
    for a, b in zip(interpret(before, xs), interpret(g, xs)):
        assert_close(a, b)
    return stats


def ops(g):
    return [n.op for n in g.nodes]


POOL = ('{"kernel": [2, 2], "stride": [2, 2], "padding": [0, 0, 0, 0], "dilation": [1, 1], "ceil_mode": false, '
        '"layout": "NCHW"}')
RESIDUAL = f"""
graph main(%x: f32[1,16,8,8]) {{
  const %w1: f32[2,16,3,3,8]
  const %b1: f32[16]
  const %w2: f32[2,16,3,3,8]
  %c1: f32[1,16,8,8] = conv2d(%x, %w1, %b1) {attrs()}
  %r1: f32[1,16,8,8] = relu(%c1)
  %c2: f32[1,16,8,8] = conv2d(%r1, %w2) {attrs()}
  %a: f32[1,16,8,8] = add(%c2, %x)
  %r2: f32[1,16,8,8] = relu(%a)
  %p: f32[1,16,4,4] = max_pool2d(%r2) {POOL}
  %m: f32[1,16,1,1] = mean(%p) {{"axes": [2, 3], "keepdims": true}}
  return %m
}}"""


def residual_graph():
    return parse_graph(RESIDUAL, {"w1": w(2, 16, 3, 3, 8), "b1": w(16), "w2": w(2, 16, 3, 3, 8)})


def test_a_residual_block_runs_blocked_between_one_transform_in_and_one_out():
    g = residual_graph()
    stats = run(g)
    assert stats == {"blocked_ops": 7, "to_blocked": 1, "to_plain": 1}
    assert ops(g) == ["layout_transform", "conv2d", "relu", "conv2d", "add", "relu", "max_pool2d", "mean",
                      "layout_transform"]
    to_b, to_p = g.nodes[0], g.nodes[8]
    assert to_b.attrs == {"src_layout": "NCHW", "dst_layout": "NCHW8c"}
    assert to_p.attrs == {"src_layout": "NCHW8c", "dst_layout": "NCHW"}
    # the residual add reads the same blocked copy of %x as the first conv: converted once
    add = g.nodes[4]
    assert add.inputs[1] is to_b.outputs[0] and g.nodes[1].inputs[0] is to_b.outputs[0]
    for n in g.nodes[1:8]:
        assert n.outputs[0].type.shape[-1] == 8 and n.outputs[0].type.rank == 5
    assert g.nodes[7].outputs[0].type.shape == (1, 2, 1, 1, 8)  # the pooled vector goes back to NCHW, not the map
    assert {g.nodes[i].attrs["layout"] for i in (1, 3, 6)} == {"NCHWc"}
    assert print_graph(parse_graph(print_graph(g), dict(g.constants))) == print_graph(g)  # text round trip


def test_graph_outputs_and_plain_readers_get_nchw_back():
    text = f"""
    graph main(%x: f32[1,8,4,4]) {{
      const %w: f32[1,8,1,1,8]
      %c: f32[1,8,4,4] = conv2d(%x, %w) {attrs(pad=0)}
      %t: f32[1,4,4,8] = transpose(%c) {{"perm": [0, 2, 3, 1]}}
      return %c, %t
    }}"""
    g = parse_graph(text, {"w": w(1, 8, 1, 1, 8)})
    assert run(g) == {"blocked_ops": 1, "to_blocked": 1, "to_plain": 1}
    assert ops(g) == ["layout_transform", "conv2d", "layout_transform", "transpose"]
    assert g.outputs[0] is g.nodes[2].outputs[0] and g.outputs[0].type.shape == (1, 8, 4, 4)


def test_an_image_input_is_blocked_by_its_channel_count():
    text = f"""
    graph main(%x: f32[1,3,8,8]) {{
      const %w: f32[2,3,3,3,8]
      %c: f32[1,16,8,8] = conv2d(%x, %w) {attrs()}
      return %c
    }}"""
    g = parse_graph(text, {"w": w(2, 3, 3, 3, 8)})
    run(g)
    assert g.nodes[0].attrs["dst_layout"] == "NCHW3c" and g.nodes[1].inputs[0].type.shape == (1, 1, 8, 8, 3)


def test_depthwise_weight_is_packed_with_the_input_block():
    text = f"""
    graph main(%x: f32[1,16,8,8]) {{
      const %w1: f32[4,16,1,1,4]
      const %dw: f32[16,1,3,3]
      %c: f32[1,16,8,8] = conv2d(%x, %w1) {attrs(pad=0, wl="OIHW4o")}
      %d: f32[1,16,8,8] = conv2d(%c, %dw) {attrs(groups=16, wl="OIHW")}
      return %d
    }}"""
    dw = w(16, 1, 3, 3)
    g = parse_graph(text, {"w1": w(4, 16, 1, 1, 4), "dw": dw})
    run(g, lanes=8)
    d = g.nodes[2]
    assert d.attrs["weight_layout"] == "OIHW4o" and d.attrs["layout"] == "NCHWc"  # the block of %c, not 8 lanes
    np.testing.assert_array_equal(g.const(d.inputs[1]), pack_conv_weight(dw, 4))
    assert "dw" not in g.constants  # the OIHW copy is gone


def test_per_channel_constants_are_laid_out_at_compile_time():
    text = f"""
    graph main(%x: f32[1,16,4,4]) {{
      const %w: f32[2,16,1,1,8]
      const %s: f32[1,16,1,1]
      const %h: f32[16,1,1]
      const %k: f32[1]
      %c: f32[1,16,4,4] = conv2d(%x, %w) {attrs(pad=0)}
      %m: f32[1,16,4,4] = mul(%c, %s)
      %a: f32[1,16,4,4] = add(%m, %h)
      %y: f32[1,16,4,4] = mul(%a, %k)
      return %y
    }}"""
    s, h = w(1, 16, 1, 1), w(16, 1, 1)
    g = parse_graph(text, {"w": w(2, 16, 1, 1, 8), "s": s, "h": h, "k": w(1)})
    run(g)
    mul, add, scal = g.nodes[2], g.nodes[3], g.nodes[4]
    assert mul.inputs[1].type.shape == (1, 2, 1, 1, 8)
    np.testing.assert_array_equal(g.const(mul.inputs[1]), block_nchw(s, 8))
    np.testing.assert_array_equal(g.const(add.inputs[1]), block_nchw(h.reshape(1, 16, 1, 1), 8))
    assert scal.inputs[1].name == "k"  # a scalar broadcasts in any layout


@pytest.mark.parametrize("case", ["grouped", "unpacked_weight", "spatial_mask_operand"])
def test_refusals_leave_the_op_plain(case):
    body = {
        "grouped": f"""const %w: f32[16,8,3,3]
          %y: f32[1,16,8,8] = conv2d(%x, %w) {attrs(groups=2, wl="OIHW")}""",
        "unpacked_weight": f"""const %w: f32[16,16,3,3]
          %y: f32[1,16,8,8] = conv2d(%x, %w) {attrs(wl="OIHW")}""",
        "spatial_mask_operand": f"""const %w: f32[2,16,3,3,8]
          %c: f32[1,16,8,8] = conv2d(%x, %w) {attrs()}
          %y: f32[1,16,8,8] = mul(%c, %mask)""",
    }[case]
    text = f"""
    graph main(%x: f32[1,16,8,8], %mask: f32[1,1,8,8]) {{
      {body}
      return %y
    }}"""
    consts = {"w": w(16, 8, 3, 3) if case == "grouped" else w(16, 16, 3, 3) if case == "unpacked_weight"
              else w(2, 16, 3, 3, 8)}
    g = parse_graph(text, consts)
    run(g)
    last = g.nodes[-1]
    assert last.outputs[0].type.rank == 4 and all(v.type.rank == 4 for v in last.inputs if v.name != "w")
    if case == "spatial_mask_operand":  # the conv is blocked, the mul reads it back in NCHW
        assert ops(g) == ["layout_transform", "conv2d", "layout_transform", "mul"]


@pytest.mark.parametrize("lanes", [4, 8, 16])
def test_compiled_blocked_graph_matches_the_interpreter(lanes):
    g = residual_graph()
    before = g.clone()
    run(g, lanes)
    compiled = compile_graph(g, "host", passes=[])
    schedules = [k["schedule"] for k in compiled.report["kernels"] if k["op"] == "conv2d"]
    assert schedules and all("nchwc" in s for s in schedules), schedules
    xs = random_inputs(before)
    assert_close(interpret(before, xs)[0], compiled(*xs))


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2", "efficientnet_lite0"])
def test_cnns_convert_layout_only_at_the_ends(name):
    """The whole conv trunk of each CNN runs blocked: one transform in (the image), one out (before the head)."""
    import edgeopt
    from tests.models.zoo import build

    model, inputs = build(name, small=True)
    c = edgeopt.compile(model, inputs)
    stats = c.report["pass_stats"]["nchwc_layout"]
    assert stats["to_blocked"] == 1 and stats["to_plain"] == 1, stats
    ref = model(*inputs).detach().numpy()
    assert_close(ref, c(*[t.numpy() for t in inputs]), rtol=1e-4)


@pytest.mark.parametrize("mean_attrs, out, blocked", [
    ('{"axes": [2, 3], "keepdims": true}', "[1,16,1,1]", True),
    ('{"axes": [-1, -2], "keepdims": true}', "[1,16,1,1]", True),
    ('{"axes": [2, 3], "keepdims": false}', "[1,16]", False),
    ('{"axes": [1], "keepdims": true}', "[1,1,8,8]", False),
    ('{"axes": [3], "keepdims": true}', "[1,16,8,1]", False),
])
def test_a_global_average_pool_of_a_blocked_value_stays_blocked(mean_attrs, out, blocked):
    """A mean over H and W (keepdims) reads whole channel vectors and converts its [1,2,1,1,8] result back, not the
    8x8 map; a mean over other axes, or without keepdims, reads the map back in NCHW."""
    text = f"""
    graph main(%x: f32[1,16,8,8]) {{
      const %w: f32[2,16,3,3,8]
      %c: f32[1,16,8,8] = conv2d(%x, %w) {attrs()}
      %m: f32{out} = mean(%c) {mean_attrs}
      return %m
    }}"""
    g = parse_graph(text, {"w": w(2, 16, 3, 3, 8)})
    before = g.clone()
    run(g)
    mean = next(n for n in g.nodes if n.op == "mean")
    assert (mean.inputs[0].type.rank == 5) == blocked
    assert ops(g)[-1] == ("layout_transform" if blocked else "mean")
    if blocked:
        assert mean.outputs[0].type.shape == (1, 2, 1, 1, 8) and mean.attrs["axes"] == [2, 3]
        compiled = compile_graph(g, "host", passes=[])
        xs = random_inputs(before)
        assert_close(interpret(before, xs)[0], compiled(*xs))


CONCAT = """
graph main(%x: f32[1,16,8,8]) {{
  const %wa: f32[2,16,1,1,8]
  const %wb: f32[{ob},16,3,3,8]
  const %wc: f32[2,{cat},1,1,8]
  %a: f32[1,16,8,8] = conv2d(%x, %wa) {pad0}
  %b: f32[1,{bc},8,8] = conv2d(%x, %wb) {pad1}
  %j: f32[1,{cat},8,8] = concat(%a, %b) {{"axis": {axis}}}
  %r: f32[1,{cat},8,8] = relu(%j)
  %c: f32[1,16,8,8] = conv2d(%r, %wc) {pad0}
  return %c
}}"""


def concat_graph(b_channels: int, axis: int = 1):
    ob = b_channels // 8
    text = CONCAT.format(ob=ob, bc=b_channels, cat=16 + b_channels, axis=axis, pad0=attrs(pad=0), pad1=attrs())
    return parse_graph(text, {"wa": w(2, 16, 1, 1, 8), "wb": w(ob, 16, 3, 3, 8), "wc": w(2, 16 + b_channels, 1, 1, 8)})


@pytest.mark.parametrize("axis", [1, -3])
def test_a_channel_concat_of_blocked_values_stays_blocked(axis):
    """A U-Net skip / DenseNet join: [1,2,8,8,8] and [1,1,8,8,8] concatenate along the channel-block axis, so the
    joined value, the relu after it and the next conv need no layout_transform in between."""
    g = concat_graph(8, axis)
    assert run(g) == {"blocked_ops": 5, "to_blocked": 1, "to_plain": 1}
    assert ops(g) == ["layout_transform", "conv2d", "conv2d", "concat", "relu", "conv2d", "layout_transform"]
    j = g.nodes[3]
    assert j.attrs["axis"] == 1 and j.outputs[0].type.shape == (1, 3, 8, 8, 8)


def test_a_concat_whose_parts_do_not_fill_whole_blocks_goes_back_to_nchw():
    text = f"""
    graph main(%x: f32[1,16,8,8], %y: f32[1,3,8,8]) {{
      const %wa: f32[2,16,1,1,8]
      %a: f32[1,16,8,8] = conv2d(%x, %wa) {attrs(pad=0)}
      %j: f32[1,19,8,8] = concat(%a, %y) {{"axis": 1}}
      return %j
    }}"""
    g = parse_graph(text, {"wa": w(2, 16, 1, 1, 8)})
    assert run(g)["to_plain"] == 1
    j = next(n for n in g.nodes if n.op == "concat")
    assert j.outputs[0].type.shape == (1, 19, 8, 8) and j.inputs[0].producer.op == "layout_transform"
