"""Static int8's per-channel depthwise inputs (``QuantConfig.depthwise_inputs``): the ranges
(``calibrate.channel_ranges``), where ``quantize_static`` gives them, how ``fold_quantized`` and ``fold_requantize``
take them into integer kernels, and what they are worth on a layer whose channels differ in size."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import edgeopt
from edgeopt.frontend import from_torch
from edgeopt.ir import Graph, TensorType, interpret, verify
from edgeopt.pipeline import get_pass
from edgeopt.quant import QuantConfig
from edgeopt.quant.calibrate import Stats, channel_ranges


def _stats(*batches) -> Stats:
    st, rng = Stats(), np.random.default_rng(0)
    for b in batches:
        st.add(np.asarray(b, np.float32), rng)
    return st


def test_channel_ranges_are_each_channels_own_but_at_least_half_the_tensors():
    a = np.zeros((1, 3, 2, 2), np.float32)
    a[0, 0], a[0, 1], a[0, 2] = 6.0, 0.5, 2.0
    b = a.copy()
    b[0, 1, 0, 0], b[0, 2, 1, 1] = 1.0, -1.0
    st = _stats(a, b)
    assert st.channel_lo.tolist() == [6.0, 0.5, -1.0] and st.channel_hi.tolist() == [6.0, 1.0, 2.0]
    lo, hi = channel_ranges(st, -1.0, 6.0)
    assert lo.tolist() == [-0.5, -0.5, -1.0]  # half the tensor's side at least; 0 inside
    assert hi.tolist() == [6.0, 3.0, 3.0]
    lo, hi = channel_ranges(st, -0.5, 4.0)  # the tensor's chosen range (a calibrator's clip) bounds every channel
    assert lo.tolist() == [-0.25, -0.25, -0.5] and hi.tolist() == [4.0, 2.0, 2.0]


def test_channel_statistics_need_rank_4_finite_batches_of_the_same_channels():
    assert _stats(np.ones((2, 8))).channel_lo is None
    assert _stats(np.ones((1, 2, 2, 2)), np.full((1, 2, 2, 2), np.inf)).channel_lo is None
    assert _stats(np.ones((1, 2, 2, 2)), np.ones((1, 3, 2, 2))).channel_lo is None
    assert _stats(np.ones((1, 2, 2, 2)), np.ones((1, 2, 4, 4))).channel_hi.tolist() == [1.0, 1.0]
    with pytest.raises(ValueError, match="per-channel"):
        channel_ranges(_stats(np.ones((2, 8))), 0.0, 1.0)


class Block(torch.nn.Module):
    """An inverted residual's expand -> ReLU6 -> depthwise -> ReLU6 -> project, with expanded channels whose sizes
    differ 50-fold (``spread``), as a pretrained MobileNetV2's do."""

    def __init__(self, act=torch.nn.ReLU6, spread: float = 50.0):
        super().__init__()
        torch.manual_seed(0)
        self.expand = torch.nn.Conv2d(8, 32, 1)
        self.dw = torch.nn.Conv2d(32, 32, 3, padding=1, groups=32)
        self.project = torch.nn.Conv2d(32, 8, 1)
        self.act = act()
        with torch.no_grad():
            gain = torch.logspace(0, np.log10(spread), 32).reshape(32, 1, 1, 1) / spread * 4
            self.expand.weight.mul_(gain)
            self.expand.bias.mul_(gain.reshape(-1))

    def forward(self, x):
        return self.project(self.act(self.dw(self.act(self.expand(x)))))


def _quantized(model, mode: str, n: int = 8):
    x = torch.randn(1, 8, 10, 10)
    g = from_torch(model.eval(), (x,))
    cal = [[np.random.default_rng(i).standard_normal((1, 8, 10, 10)).astype(np.float32)] for i in range(n)]
    float_graph = g.clone()
    stats = get_pass("quantize_static").__class__(QuantConfig(depthwise_inputs=mode), cal).run(g)
    verify(g)
    return float_graph, g, stats, cal


def _dw_input_params(g: Graph):
    dw = next(n for n in g.nodes if n.op == "conv2d" and n.attrs["groups"] > 1)
    dq = dw.inputs[0].producer
    return g.const(dq.inputs[1]), g.const(dq.inputs[2])


def test_a_depthwise_input_gets_a_scale_per_channel_and_one_zero_point():
    fg, g, stats, cal = _quantized(Block(), "per-channel")
    assert stats["per_channel_inputs"] == 1
    scale, zp = _dw_input_params(g)
    assert scale.shape == (1, 32, 1, 1) and scale.dtype == np.float32 and zp.shape == (1, 32, 1, 1)
    assert zp.dtype == np.int32 and (zp == 0).all()  # a ReLU6's output: 0 is every channel's level 0
    assert scale.max() / scale.min() == pytest.approx(2.0, rel=1e-4)  # the floor: half the tensor's range
    others = [n for n in g.nodes if n.op == "quantize" and n.outputs[0] is not _dw_q(g)]
    assert others and all(g.const(n.inputs[1]).size == 1 for n in others)  # dense readers: one scale
    _, g2, stats2, _ = _quantized(Block(), "per-tensor")
    assert stats2["per_channel_inputs"] == 0 and _dw_input_params(g2)[0].size == 1


def _dw_q(g: Graph):
    dw = next(n for n in g.nodes if n.op == "conv2d" and n.attrs["groups"] > 1)
    return dw.inputs[0].producer.inputs[0]


def test_per_channel_depthwise_inputs_cut_the_small_channels_error():
    """The depthwise conv's quantized input against the float value, both ways: the channels given half the step
    (small on the calibration data) have about a quarter of the rounding error, the others the same."""
    errors, scales = {}, None
    for mode in ("per-channel", "per-tensor"):
        fg, g, _, cal = _quantized(Block(), mode)
        dq = next(n for n in g.nodes if n.op == "conv2d" and n.attrs["groups"] > 1).inputs[0]
        name = dq.producer.inputs[0].producer.inputs[0].name  # the ReLU6's output, in both graphs
        scales = g.const(dq.producer.inputs[1]).reshape(-1) if mode == "per-channel" else scales
        got, ref = [], []
        for batch in cal[:4]:
            interpret(g, batch, observe=lambda v, x, out=got, want=dq: out.append(x) if v is want else 0)
            interpret(fg, batch, observe=lambda v, x, out=ref, want=name: out.append(x) if v.name == want else 0)
        errors[mode] = np.mean((np.concatenate(got) - np.concatenate(ref)) ** 2, axis=(0, 2, 3))
    finer = scales < 0.6 * scales.max()
    assert 16 <= finer.sum() < 32
    ratio = errors["per-channel"] / errors["per-tensor"]
    assert ratio[finer].mean() < 0.4, ratio
    assert np.abs(ratio[~finer] - 1).max() < 0.2, ratio


def test_inputs_with_other_readers_or_channel_zero_points_stay_per_tensor():
    class Shared(Block):  # the depthwise input is also a residual's: one int8 copy serves both readers
        def forward(self, x):
            y = self.act(self.expand(x))
            return self.project(self.act(self.dw(y)) + y)

    _, g, stats, _ = _quantized(Shared(), "per-channel")
    assert stats["per_channel_inputs"] == 0 and _dw_input_params(g)[0].size == 1
    # a leaky activation: negative values, so each channel's zero point differs and the padding would too
    _, g, stats, _ = _quantized(Block(act=lambda: torch.nn.LeakyReLU(0.1)), "per-channel")
    assert stats["per_channel_inputs"] == 0 and _dw_input_params(g)[0].size == 1


def test_fold_quantized_moves_the_channel_scales_into_the_depthwise_requantize():
    _, g, _, cal = _quantized(Block(), "per-channel")
    before = interpret(g, cal[1])[0]
    stats = get_pass("fold_quantized").run(g)
    verify(g)
    assert stats == {"integer_layers": 3}
    dw = next(n for n in g.nodes if n.op == "conv2d" and n.attrs["groups"] > 1)
    assert (dw.inputs[0].type.dtype, dw.outputs[0].type.dtype) == ("u8", "i32") and dw.attrs["padding"] == [1] * 4
    after = interpret(g, cal[1])[0]
    assert np.abs(after - before).max() <= 1e-3 * np.abs(before).max()


def test_fold_quantized_pads_each_channel_with_its_zero_point():
    """A hand-made depthwise sandwich whose channels' zero points differ: padded by an explicit per-channel pad."""
    g = Graph()
    x = g.add_input("x", TensorType((1, 4, 5, 5), "f32"))
    s = g.add_const(np.array([0.02, 0.05, 0.01, 0.1], np.float32).reshape(1, 4, 1, 1), "s")
    z = g.add_const(np.array([10, 128, 0, 250], np.int32).reshape(1, 4, 1, 1), "z")
    q = g.add("quantize", [x, s, z], {"dtype": "u8"})
    dq = g.add("dequantize", [q, s, z])
    rng = np.random.default_rng(0)
    wq = g.add_const(rng.integers(-127, 128, (4, 1, 3, 3)).astype(np.int8), "w_q")
    w = g.add("dequantize", [wq, g.add_const(np.full((4, 1, 1, 1), 0.01, np.float32), "w_s")])
    y = g.add("conv2d", [dq, w, g.add_const(np.arange(4, dtype=np.float32), "b")],
              {"groups": 4, "padding": [1, 1, 1, 1]})
    g.set_outputs([y])
    verify(g)
    data = [rng.uniform(-1, 2, (1, 4, 5, 5)).astype(np.float32)]
    before = interpret(g, data)[0]
    get_pass("fold_quantized").run(g)
    verify(g)
    pad = next(n for n in g.nodes if n.op == "pad")
    assert pad.attrs["value"] == [10, 128, 0, 250]
    np.testing.assert_allclose(interpret(g, data)[0], before, rtol=1e-5, atol=1e-4)


def test_fold_requantize_folds_per_channel_outputs_only_with_equal_bounds():
    def chain(lo):
        g = Graph()
        acc = g.add_input("acc", TensorType((1, 3, 2, 2), "i32"))
        dq = g.add("dequantize", [acc, g.add_const(np.full((1, 3, 1, 1), 0.01, np.float32), "s")])
        r = g.add("clamp", [dq], {"min": lo, "max": 6.0})
        s = g.add_const(np.array([0.01, 0.02, 0.0235], np.float32).reshape(1, 3, 1, 1), "so")
        zp = 0 if lo == 0.0 else np.array([100, 50, 25], np.int32)  # -0.5 / s + zp: 50, 25, 4
        z = g.add_const(np.asarray(zp, np.int32).reshape((1, 3, 1, 1) if np.ndim(zp) else ()), "zo")
        g.set_outputs([g.add("quantize", [r, s, z], {"dtype": "u8"})])
        return g

    g = chain(0.0)  # a ReLU6: level 0 at the bottom of every channel, 6 above every channel's top
    data = [np.random.default_rng(0).integers(-300, 3000, (1, 3, 2, 2)).astype(np.int32)]
    before = interpret(g, data)[0]
    assert get_pass("fold_requantize").run(g) == {"folded": 1}
    rq = next(n for n in g.nodes if n.op == "requantize")
    assert (rq.attrs["min"], rq.attrs["max"]) == (0, 255) and rq.attrs["scale"] == pytest.approx([0.01, 0.02, 0.0235])
    np.testing.assert_array_equal(interpret(g, data)[0], before)
    g = chain(-0.5)  # -0.5 is level 50, 25 or 4 by channel: one integer clamp cannot hold it
    assert get_pass("fold_requantize").run(g) == {"folded": 0}


def test_compiled_block_matches_the_interpreter_and_torch():
    m = Block().eval()
    x = torch.randn(1, 8, 10, 10)
    cal = [torch.randn(1, 8, 10, 10) for _ in range(8)]
    c = edgeopt.compile(m, (x,), quantize="int8", calibration_data=cal)
    assert c.report["quantization"]["per_channel_inputs"] == 1
    assert c.report["pass_stats"]["fold_requantize"]["folded"] == 2  # the expand's per-channel output too
    got = c(x.numpy())
    np.testing.assert_allclose(got, interpret(c.graph, [x.numpy()])[0], rtol=1e-4, atol=1e-4)
    with torch.no_grad():
        ref = m(x).numpy()
    assert float((ref * got).sum() / np.linalg.norm(ref) / np.linalg.norm(got)) > 0.995
    rows = c.compare(m, [x])
    assert min(r["cosine"] for r in rows) > 0.99
