"""conv_transpose_as_conv: structure, refusals, numerics (interpreter before vs after; compiled vs PyTorch, float and
int8)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edgeopt.api import compile_graph
from edgeopt.frontend import from_torch
from edgeopt.ir import interpret, verify
from edgeopt.pipeline import get_pass
from edgeopt.quant.compare import sqnr_db


class Up(torch.nn.Module):
    def __init__(self, k=2, stride=2, padding=0, output_padding=0, groups=1, bias=True):
        super().__init__()
        self.up = torch.nn.ConvTranspose2d(16, 8, k, stride=stride, padding=padding, output_padding=output_padding,
                                           groups=groups, bias=bias)
        self.after = torch.nn.Conv2d(8, 8, 3, padding=1)

    def forward(self, x):
        return self.after(torch.relu(self.up(x)))


def graph(model, shape=(1, 16, 6, 7)):
    torch.manual_seed(0)
    x = torch.randn(*shape)
    return from_torch(model.eval(), (x,)), x


@pytest.mark.parametrize("k, bias", [(2, True), (3, False), (4, True)])
def test_stride_equal_to_kernel_becomes_a_1x1_conv_and_a_pixel_shuffle(k, bias):
    torch.manual_seed(k)
    g, x = graph(Up(k, stride=k, bias=bias))
    before = g.clone()
    stats = get_pass("conv_transpose_as_conv").run(g)
    verify(g)
    assert stats == {"rewritten": 1}
    ops = [n.op for n in g.nodes]
    assert "conv_transpose2d" not in ops
    one = next(n for n in g.nodes if n.op == "conv2d" and n.inputs[0] is g.inputs[0])
    assert one.inputs[1].type.shape == (8 * k * k, 16, 1, 1) and one.attrs["padding"] == [0, 0, 0, 0]
    assert ops[ops.index("conv2d"):ops.index("conv2d") + 4] == ["conv2d", "reshape", "transpose", "reshape"]
    assert ("add" in ops) == bias
    a, b = interpret(before, [x.numpy()])[0], interpret(g, [x.numpy()])[0]
    np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("kw", [dict(k=3, stride=2), dict(k=2, stride=2, padding=1), dict(k=2, stride=2, groups=2),
                                dict(k=2, stride=2, output_padding=1, padding=0)])
def test_overlapping_or_padded_or_grouped_ones_stay(kw):
    if kw.get("output_padding"):  # torch needs output_padding < stride or dilation; a 3x3/2 one has it
        kw = dict(k=3, stride=2, output_padding=1)
    g, _ = graph(Up(**kw))
    assert get_pass("conv_transpose_as_conv").run(g) == {"rewritten": 0}
    assert any(n.op == "conv_transpose2d" for n in g.nodes)


def test_compiled_float_and_int8_match_pytorch():
    model = Up(2, stride=2).eval()
    g, x = graph(model, (1, 16, 8, 8))
    ref = model(x).detach().numpy()
    compiled = compile_graph(g.clone(), "host")
    assert compiled.report["pass_stats"]["conv_transpose_as_conv"] == {"rewritten": 1}
    np.testing.assert_allclose(compiled(x.numpy()), ref, rtol=1e-4, atol=1e-4)
    cal = [torch.randn(1, 16, 8, 8) for _ in range(8)]
    int8 = compile_graph(g.clone(), "host", quantize="int8", calibration_data=cal)
    assert int8.report["pass_stats"]["quantize_static"]["quantized"] == 2  # the 1x1 conv is an int8 layer too
    assert sqnr_db(ref, int8(x.numpy())) > 25
