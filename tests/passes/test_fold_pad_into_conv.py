"""fold_pad_into_conv: Before/Expected IR, refusals, numerics (interpreter before vs after, and a torch model
with TF-style 'same' padding compiled vs PyTorch)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from edgeopt.ir import interpret, parse_graph, print_graph, verify
from edgeopt.pipeline import get_pass
from tests.passes.fusion_harness import assert_close, random_inputs

CONV = ('{{"stride": [2, 2], "padding": [{p}], "dilation": [1, 1], "groups": {g}, "weight_layout": "OIHW", '
        '"layout": "NCHW"}}')


def graph(pads="[0, 0, 0, 0, 0, 1, 0, 1]", value="0.0", conv_pad="0, 0, 0, 0", groups=8, extra_reader=False,
          out=(5, 5)):
    pl = [int(v) for v in pads.strip("[]").split(",")]
    padded = [10 + pl[4] + pl[5], 10 + pl[6] + pl[7]]
    c = 8 + pl[2] + pl[3]
    cp = [int(v) for v in conv_pad.split(",")]
    oh = (padded[0] + cp[0] + cp[2] - 3) // 2 + 1
    ow = (padded[1] + cp[1] + cp[3] - 3) // 2 + 1
    reader = f"\n      %s: f32[1,{c},{padded[0]},{padded[1]}] = relu(%p)" if extra_reader else ""
    ret = "%y, %s" if extra_reader else "%y"
    text = f"""
    graph main(%x: f32[1,8,10,10]) {{
      const %w: f32[{c},{c // groups},3,3]
      %p: f32[1,{c},{padded[0]},{padded[1]}] = pad(%x) {{"pads": {pads}, "value": {value}}}
      %y: f32[1,{c},{oh},{ow}] = conv2d(%p, %w) {CONV.format(p=conv_pad, g=groups)}{reader}
      return {ret}
    }}"""
    rng = np.random.default_rng(0)
    return parse_graph(text, {"w": rng.standard_normal((c, c // groups, 3, 3)).astype(np.float32)})


def run(g):
    before = g.clone()
    stats = get_pass("fold_pad_into_conv").run(g)
    verify(g)
    xs = random_inputs(before)
    for a, b in zip(interpret(before, xs), interpret(g, xs)):
        assert_close(a, b)
    return stats


def test_an_asymmetric_same_pad_becomes_the_convs_padding():
    g = graph()
    assert run(g) == {"folded": 1}
    assert [n.op for n in g.nodes] == ["conv2d"]
    conv = g.nodes[0]
    assert conv.inputs[0] is g.inputs[0] and conv.attrs["padding"] == [0, 0, 1, 1]  # [top, left, bottom, right]
    assert print_graph(parse_graph(print_graph(g), dict(g.constants))) == print_graph(g)


def test_the_pad_adds_to_the_convs_own_padding():
    g = graph(pads="[0, 0, 0, 0, 2, 0, 0, 1]", conv_pad="1, 1, 1, 1")
    run(g)
    assert g.nodes[0].attrs["padding"] == [3, 1, 1, 2]


@pytest.mark.parametrize("case", ["nonzero_value", "crop", "channel_pad", "pad_has_another_reader"])
def test_refusals(case):
    kw = {"nonzero_value": dict(value="1.5"),
          "crop": dict(pads="[0, 0, 0, 0, 0, -1, 0, 1]"),
          "channel_pad": dict(pads="[0, 0, 0, 8, 0, 1, 0, 1]", groups=1),
          "pad_has_another_reader": dict(extra_reader=True)}[case]
    g = graph(**kw)
    text = print_graph(g)
    assert run(g) == {"folded": 0}
    assert print_graph(g) == text


def test_a_tf_same_padded_model_compiles_to_no_pad_kernel():
    import edgeopt

    class SamePadDepthwise(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.dw = torch.nn.Conv2d(16, 16, 3, stride=2, groups=16)
            self.pw = torch.nn.Conv2d(16, 8, 1)

        def forward(self, x):
            return self.pw(F.relu6(self.dw(F.pad(x, (0, 1, 0, 1)))))

    torch.manual_seed(0)
    model, x = SamePadDepthwise().eval(), torch.randn(1, 16, 12, 12)
    c = edgeopt.compile(model, (x,))
    assert c.report["pass_stats"]["fold_pad_into_conv"] == {"folded": 1}
    assert not any("pad" in k["ops"] for k in c.report["kernels"])
    assert_close(model(x).detach().numpy(), c(x.numpy()), rtol=1e-4)
