"""depthwise_int8_taps: an integer depthwise conv's window rows widened to whole groups of 4 taps (zero weights, one
more column of padding), named "vnni512-dw" where the target has AVX512-VNNI and VBMI; the same integers out."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from edgeopt.targets import get_target

import edgeopt
from edgeopt.errors import PassError
from edgeopt.ir import Graph, TensorType, interpret, verify
from edgeopt.ir.ops.nn import pack_conv_weight
from edgeopt.ir.registry import OpError
from edgeopt.ir.verify import VerificationError
from edgeopt.pipeline import get_pass
from edgeopt.runtime.artifact import read_artifact
from tests.artifact_tools import disassemble
from tests.conftest import host_has_depthwise_int8_dot

RNG = np.random.default_rng(5)
ZEN4 = dict(target="x86", cpu="znver4")  # AVX512-VNNI and VBMI


def _depthwise(kh: int = 3, kw: int = 3, stride: int = 1, channels: int = 32, block: int = 16,
               x_dtype: str = "u8", dilation: int = 1) -> Graph:
    """An integer depthwise conv as nchwc_layout leaves it: u8 NCHW<block>c input, i8 "OIHW<block>o" weight."""
    g = Graph()
    x = g.add_input("x", TensorType((1, channels // block, 9, 11, block), x_dtype))
    w = pack_conv_weight(RNG.integers(-128, 128, (channels, 1, kh, kw)).astype(np.int8), block)
    pad = [kh // 2, kw // 2, kh // 2, kw // 2]
    y = g.add("conv2d", [x, g.add_const(w, "w")], {"groups": channels, "stride": [stride, stride], "padding": pad,
                                                   "dilation": [1, dilation], "layout": "NCHWc",
                                                   "weight_layout": f"OIHW{block}o"}, name="acc")
    g.set_outputs([y])
    verify(g)
    return g


def _run(g: Graph, **target) -> tuple[Graph, dict]:
    after = g.clone()
    p = get_pass("depthwise_int8_taps")
    p.target = get_target(**(target or ZEN4), check_toolchain=False)
    stats = p.run(after)
    verify(after)
    return after, stats


def _x(g: Graph):
    t = g.inputs[0].type
    lo, hi, dtype = (0, 256, np.uint8) if t.dtype == "u8" else (-128, 128, np.int8)
    return [RNG.integers(lo, hi, t.shape).astype(dtype)]


@pytest.mark.parametrize("kh,kw,stride", [(3, 3, 1), (3, 3, 2), (5, 5, 2), (3, 4, 1)])
def test_rows_become_whole_groups_of_4_taps_with_the_same_sums(kh, kw, stride):
    g = _depthwise(kh, kw, stride)
    after, stats = _run(g)
    assert stats == {"widened": 1}
    conv = after.nodes[-1]
    w_before, w_after = g.const(g.nodes[-1].inputs[1]), after.const(conv.inputs[1])
    wide = kw + (-kw % 4)
    assert w_after.shape == (2, 1, kh, wide, 16)
    np.testing.assert_array_equal(w_after[:, :, :, :kw], w_before)
    assert not w_after[:, :, :, kw:].any()  # the added taps weigh nothing
    assert conv.attrs["padding"] == [kh // 2, kw // 2, kh // 2, kw // 2 + wide - kw]
    assert conv.attrs["int8_dot"] == "vnni512-dw"
    assert conv.outputs[0].type == g.nodes[-1].outputs[0].type
    x = _x(g)
    np.testing.assert_array_equal(interpret(after, x)[0], interpret(g, x)[0])
    again, stats = _run(after)  # a named conv is left as it is
    assert stats == {"widened": 0} and again.const(again.nodes[-1].inputs[1]).shape == w_after.shape


def test_convs_sharing_a_weight_share_its_widened_copy():
    g = _depthwise()
    conv = g.nodes[-1]
    second = g.add("conv2d", list(conv.inputs), dict(conv.attrs), name="acc2")
    g.set_outputs([conv.outputs[0], second])
    after, stats = _run(g)
    assert stats == {"widened": 2}
    assert after.nodes[0].inputs[1] is after.nodes[1].inputs[1] and len(after.const_values) == 1
    x = _x(g)
    for a, b in zip(interpret(after, x), interpret(g, x)):
        np.testing.assert_array_equal(a, b)


def test_arm_dot_product_cpus_take_it_on_4_channel_blocks():
    """ARM's sdot ("sdot-dw"): NCHW4c blocks of i8 activations, on a CPU with the dot product only."""
    g = _depthwise(channels=8, block=4, x_dtype="i8")
    after, stats = _run(g, target="arm", cpu="cortex-a76")
    assert stats == {"widened": 1} and after.nodes[-1].attrs["int8_dot"] == "sdot-dw"
    x = _x(g)
    np.testing.assert_array_equal(interpret(after, x)[0], interpret(g, x)[0])
    assert _run(g, target="arm", cpu="cortex-a72")[1] == {"widened": 0}  # no dot product
    assert _run(_depthwise(channels=16, block=8, x_dtype="i8"), target="arm", cpu="cortex-a76")[1] == {"widened": 0}


@pytest.mark.parametrize("target", [dict(target="x86", cpu="skylake-avx512"),  # AVX-512 without VNNI or VBMI
                                    dict(target="x86", cpu="cascadelake"),  # AVX512-VNNI without VBMI
                                    dict(target="x86", cpu="znver3"),  # AVX2
                                    dict(target="x86", cpu="alderlake")])  # AVX-VNNI, no AVX-512
def test_targets_without_the_instruction_keep_the_conv(target):
    after, stats = _run(_depthwise(), **target)
    assert stats == {"widened": 0}
    assert after.nodes[-1].attrs.get("int8_dot") is None and after.const(after.nodes[-1].inputs[1]).shape[3] == 3


@pytest.mark.parametrize("graph", [lambda: _depthwise(block=8, channels=16),  # an 8-channel block (VNNI reads 16)
                                   lambda: _depthwise(x_dtype="i8"),  # signed activations (ARM's)
                                   lambda: _depthwise(dilation=2)])  # taps 2 pixels apart: not one contiguous run
def test_other_convs_are_left_alone(graph):
    after, stats = _run(graph())
    assert stats == {"widened": 0}


def test_the_verifier_refuses_a_window_the_instruction_cannot_read():
    g = _depthwise()
    g.nodes[-1].attrs["int8_dot"] = "vnni512-dw"  # 3 taps a row: not whole groups of 4
    with pytest.raises(VerificationError, match="multiple of 4"):
        verify(g)
    dense = Graph()
    x = dense.add_input("x", TensorType((1, 2, 5, 5, 16), "u8"))
    w = pack_conv_weight(RNG.integers(-128, 128, (32, 32, 1, 1)).astype(np.int8), 16, 4)
    with pytest.raises(OpError, match="for depthwise convs"):
        dense.add("conv2d", [x, dense.add_const(w, "w")], {"layout": "NCHWc", "weight_layout": "OIHW16o4i",
                                                           "int8_dot": "vnni512-dw"})


class _Block(torch.nn.Module):
    """MobileNetV2's inverted residual: expand, 3x3 depthwise (stride 1 and 2), project."""

    def __init__(self):
        super().__init__()
        self.expand = torch.nn.Conv2d(8, 32, 1)
        self.dw1 = torch.nn.Conv2d(32, 32, 3, 1, 1, groups=32)
        self.dw2 = torch.nn.Conv2d(32, 32, 3, 2, 1, groups=32)
        self.project = torch.nn.Conv2d(32, 16, 1)

    def forward(self, x):
        y = torch.nn.functional.relu6(self.expand(x))
        y = torch.nn.functional.relu6(self.dw2(torch.nn.functional.relu6(self.dw1(y))))
        return self.project(y)


def test_compiled_model_uses_it_on_the_host_and_matches_its_interpreter():
    """On the host: the depthwise kernels run on "vnni512-dw" where the CPU has it (else plain vector code), and the
    compiled model gives its own IR's interpreter's outputs (integer layers exact) and PyTorch's to int8 accuracy."""
    torch.manual_seed(0)
    m = _Block().eval()
    x = torch.rand(1, 8, 14, 14)
    cal = [torch.rand(1, 8, 14, 14) for _ in range(8)]
    c = edgeopt.compile(m, (x,), quantize="int8", calibration_data=cal)
    convs = [n for n in c.graph.nodes for n in ([n] if n.op != "fused" else n.body.nodes)
             if n.op == "conv2d" and n.attrs["groups"] != 1]
    has = host_has_depthwise_int8_dot()
    assert len(convs) == 2 and all(bool(n.attrs.get("int8_dot")) == has for n in convs), convs
    tiles = [k["schedule"] for k in c.report["kernels"] if "depthwise" in k["schedule"]]
    assert len(tiles) == (2 if has else 0), c.report["kernels"]
    got = c(x.numpy())
    np.testing.assert_allclose(got, interpret(c.graph, [x.numpy()])[0], rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        ref = m(x).numpy()
    assert float((ref * got).sum() / np.linalg.norm(ref) / np.linalg.norm(got)) > 0.995


def test_disable_leaves_it_out_like_any_pass(tmp_path):
    """``disable=`` reaches the passes a quantize mode brings into the pipeline too, but not the ones the mode is."""
    torch.manual_seed(0)
    m, x = _Block().eval(), torch.rand(1, 8, 14, 14)
    on = edgeopt.compile(m, (x,), target="x86", cpu="znver4", quantize="int8", calibration_data=[x])
    assert on.report["pass_stats"]["depthwise_int8_taps"] == {"widened": 2}
    # built for Zen 4 on any x86 host: both kernels tensorized, vpermb feeding vpdpbusd in the library
    assert sum(",vnni512-dw" in k["schedule"] for k in on.report["kernels"]) == 2, on.report["kernels"]
    if not shutil.which("objdump"):
        pytest.skip("objdump is not installed (binutils)")
    on.save(tmp_path / "m.edgeopt")
    code = disassemble(read_artifact(str(tmp_path / "m.edgeopt"))[1]["kernels.so"])
    assert any(i.startswith("vpermb") for i in code) and any(i.startswith("vpdpbusd") for i in code)
    c = edgeopt.compile(m, (x,), target="x86", cpu="znver4", quantize="int8", calibration_data=[x],
                        disable=["depthwise_int8_taps"])
    assert "depthwise_int8_taps" not in c.report["pass_stats"]
    convs = [n for n in c.graph.nodes for n in ([n] if n.op != "fused" else n.body.nodes) if n.op == "conv2d"]
    assert convs and not any(n.attrs.get("int8_dot") == "vnni512-dw" for n in convs)
    assert any(n.attrs.get("int8_dot") == "vnni512" for n in convs)  # the dense ones still on dot products
    for name, hint in (("quantize_static", "without quantize="), ("fold_quantized", "integer_kernels=False")):
        with pytest.raises(PassError, match=hint):
            edgeopt.compile(m, (x,), quantize="int8", calibration_data=[x], disable=[name])
