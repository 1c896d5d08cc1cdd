"""Static int8's per-channel conv inputs (``QuantConfig.activation_scales``): the ranges (``calibrate
.channel_ranges``), where ``quantize_static`` gives them and how its readers take them (a depthwise conv as they are,
a dense conv in units of each channel's share, with the shares in its weight), how ``fold_quantized`` and
``fold_requantize`` take them into integer kernels, and what they are worth on layers whose channels differ in
size."""

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
    lo, hi = channel_ranges(st, -1.0, 6.0, headroom=1.0)
    assert lo.tolist() == [-0.5, -0.5, -1.0]  # half the tensor's side at least; 0 inside
    assert hi.tolist() == [6.0, 3.0, 3.0]
    lo, hi = channel_ranges(st, -0.5, 4.0, headroom=1.0)  # the tensor's chosen range (a calibrator's clip) bounds
    assert lo.tolist() == [-0.25, -0.25, -0.5] and hi.tolist() == [4.0, 2.0, 2.0]  # every channel
    lo, hi = channel_ranges(st, -1.0, 8.0)  # and the channel's own range with 25% headroom
    assert lo.tolist() == [-0.5, -0.5, -1.0] and hi.tolist() == [7.5, 4.0, 4.0]


def test_channel_statistics_need_a_channel_axis_finite_batches_and_the_same_channels():
    assert _stats(np.ones(8)).channel_lo is None and _stats(np.ones((1, 2, 2, 2, 2))).channel_lo is None
    assert _stats(np.ones((1, 2, 2, 2)), np.full((1, 2, 2, 2), np.inf)).channel_lo is None
    assert _stats(np.ones((1, 2, 2, 2)), np.ones((1, 3, 2, 2))).channel_lo is None
    assert _stats(np.ones((1, 2, 2, 2)), np.ones((1, 2, 4, 4))).channel_hi.tolist() == [1.0, 1.0]
    # rank 2 and 3: each feature (the last axis, what a linear layer sums over), over every token
    x = np.arange(24, dtype=np.float32).reshape(1, 4, 6)
    st = _stats(x, -x[:, :2])
    assert st.channel_lo.tolist() == [-6.0, -7.0, -8.0, -9.0, -10.0, -11.0]
    assert st.channel_hi.tolist() == x[0, 3].tolist()
    both = np.concatenate([x[0], -x[0, :2]])
    np.testing.assert_allclose(st.channel_mean_square, (both.astype(np.float64) ** 2).mean(0))
    assert _stats(np.ones((2, 8))).channel_hi.tolist() == [1.0] * 8
    assert _stats(np.ones((1, 4, 6)), np.ones((1, 4, 5))).channel_lo is None  # other features
    with pytest.raises(ValueError, match="per-channel"):
        channel_ranges(_stats(np.ones(8)), 0.0, 1.0)


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


def _inputs(rng) -> np.ndarray:
    """A block input whose 8 channels differ 40-fold in size (as an image's features do)."""
    return (rng.standard_normal((1, 8, 10, 10)) * np.logspace(-1.3, 0.3, 8).reshape(1, 8, 1, 1)).astype(np.float32)


def _quantized(model, mode: str, n: int = 8):
    x = torch.randn(1, 8, 10, 10)
    g = from_torch(model.eval(), (x,))
    cal = [[_inputs(np.random.default_rng(i))] for i in range(n)]
    float_graph = g.clone()
    stats = get_pass("quantize_static").__class__(QuantConfig(activation_scales=mode), cal).run(g)
    verify(g)
    return float_graph, g, stats, cal


def _dw_input_params(g: Graph):
    dw = next(n for n in g.nodes if n.op == "conv2d" and n.attrs["groups"] > 1)
    dq = dw.inputs[0].producer
    return g.const(dq.inputs[1]), g.const(dq.inputs[2])


def test_conv_inputs_get_a_scale_per_channel():
    """The block's three conv inputs: the image-like input x (signed: a zero point per channel, read by a 1x1 conv
    that does not pad), the depthwise conv's (a ReLU6's output: every zero point 0) and the projection's."""
    fg, g, stats, cal = _quantized(Block(), "per-channel")
    assert stats["per_channel_inputs"] == 3
    scale, zp = _dw_input_params(g)
    assert scale.shape == (1, 32, 1, 1) and scale.dtype == np.float32 and zp.shape == (1, 32, 1, 1)
    assert zp.dtype == np.int32 and (zp == 0).all()  # a ReLU6's output: 0 is every channel's level 0
    assert scale.max() / scale.min() == pytest.approx(2.0, rel=1e-4)  # the floor: half the tensor's range
    expand = next(n for n in g.nodes if n.op == "conv2d" and n.inputs[0].producer.inputs[0].producer.inputs[0]
                  in g.inputs)
    x_zp = g.const(expand.inputs[0].producer.inputs[2]).reshape(-1)
    assert len(set(x_zp.tolist())) > 1  # signed values: each channel's own zero point (a 1x1 conv: no padding)
    # a dense reader takes one scale, the largest, and each channel's share of it in its weight
    for n in (expand, next(n for n in g.nodes if n.op == "conv2d" and n.attrs["groups"] == 1 and n is not expand)):
        dq, q = n.inputs[0].producer, n.inputs[0].producer.inputs[0].producer
        channel_scales = g.const(q.inputs[1]).reshape(-1)
        assert g.const(dq.inputs[1]).size == 1 and g.const(dq.inputs[1]) == channel_scales.max()
        share = (channel_scales / channel_scales.max()).reshape(1, -1, 1, 1)
        w_float = fg.const(next(m for m in fg.nodes if m.outputs[0].name == n.outputs[0].name).inputs[1])
        w_q, w_s = (g.const(v) for v in n.inputs[1].producer.inputs[:2])
        assert np.abs(w_q * w_s - w_float * share).max() <= 0.51 * w_s.max()  # rounded on the grid of w * share
    _, g2, stats2, _ = _quantized(Block(), "per-tensor")
    assert stats2["per_channel_inputs"] == 0
    assert all(g2.const(n.inputs[1]).size == 1 for n in g2.nodes if n.op == "quantize")


def test_per_channel_inputs_cut_the_blocks_error():
    """The block's output against the float graph's, on the calibration batches: lower with per-channel inputs."""
    errors = {}
    for mode in ("per-channel", "per-tensor"):
        fg, g, _, cal = _quantized(Block(), mode)
        got = np.concatenate([interpret(g, b)[0] for b in cal])
        ref = np.concatenate([interpret(fg, b)[0] for b in cal])
        errors[mode] = float(np.mean((got - ref) ** 2) / np.mean(ref ** 2))
    assert errors["per-channel"] < 0.7 * errors["per-tensor"], errors


def test_per_channel_depthwise_inputs_cut_the_small_channels_error():
    """The depthwise conv's quantized input against the float value, both ways: the channels given half the step
    (small on the calibration data) have about a quarter of the error, the others no more (their share of the
    expand conv's error, whose input x is per channel too, is smaller)."""
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
    assert ratio[~finer].max() < 1.1, ratio


def test_other_readers_read_the_true_values_and_padded_convs_need_one_zero_point():
    class Shared(Block):  # the depthwise input is also a residual's: one int8 copy serves both readers
        def forward(self, x):
            y = self.act(self.expand(x))
            return self.project(self.act(self.dw(y)) + y)

    fg, g, stats, cal = _quantized(Shared(), "per-channel")
    assert stats["per_channel_inputs"] == 3 and _dw_input_params(g)[0].size == 32
    add = next(n for n in g.nodes if n.op == "add")
    dq = next(v.producer for v in add.inputs if v.producer.op == "dequantize")
    assert g.const(dq.inputs[1]).size == 32  # the residual reads the values, not a dense reader's shares
    got, ref = interpret(g, cal[0])[0], interpret(fg, cal[0])[0]
    assert np.abs(got - ref).max() < 0.1 * np.abs(ref).max()
    # a leaky activation: negative values, so each channel's zero point differs: the padded depthwise conv's input
    # keeps one scale (the conv would pad each channel with its own level), the 1x1 projection's does not
    _, g, stats, _ = _quantized(Block(act=lambda: torch.nn.LeakyReLU(0.1)), "per-channel")
    assert stats["per_channel_inputs"] == 2 and _dw_input_params(g)[0].size == 1


def test_fold_quantized_moves_the_channel_scales_into_the_requantize():
    """Every layer folds: the depthwise conv with a scale and zero point per channel, the dense ones with one scale
    and a zero point per channel (x: the expand conv's)."""
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
    """A hand-made depthwise sandwich whose channels' zero points differ: padded by an explicit per-channel pad.
    (``quantize_static`` gives differing zero points only to inputs no reader pads; ``fold_quantized`` takes any IR.)"""
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
    x = torch.from_numpy(_inputs(np.random.default_rng(99)))
    cal = [_inputs(np.random.default_rng(i)) for i in range(8)]
    c = edgeopt.compile(m, (x,), quantize="int8", calibration_data=cal)
    assert c.report["quantization"]["per_channel_inputs"] == 3
    assert c.report["pass_stats"]["fold_requantize"]["folded"] == 2  # the expand's per-channel output too
    got = c(x.numpy())
    np.testing.assert_allclose(got, interpret(c.graph, [x.numpy()])[0], rtol=1e-4, atol=1e-4)
    with torch.no_grad():
        ref = m(x).numpy()
    assert float((ref * got).sum() / np.linalg.norm(ref) / np.linalg.norm(got)) > 0.995
    rows = c.compare(m, [x])
    assert min(r["cosine"] for r in rows) > 0.99


def test_the_noise_model_weighs_finer_inputs_against_coarser_weights():
    from edgeopt.quant.channel_noise import channel_scales_pay, rounding_noise

    rng = np.random.default_rng(0)
    steps, one = np.array([0.01, 0.04]), np.array([0.04, 0.04])
    ms = np.array([0.01, 1.0])
    dw = rng.standard_normal((2, 1, 3, 3))
    # a depthwise conv: only its input's rounding, a sixteenth for the channel at a quarter of the step
    a = (dw[0] ** 2).sum() * 0.01 ** 2 / 12 + (dw[1] ** 2).sum() * 0.04 ** 2 / 12
    assert rounding_noise(dw, True, ms, steps, 127) == pytest.approx(a)
    assert channel_scales_pay([(dw, True, 127)], ms, steps, 0.04)
    # a dense conv whose weights are as large on the small channel as on the other: at its share (1/4) of the step,
    # its weights' levels are 4x coarser in its own units, and where that channel carries the signal it costs more
    # than its finer input gains
    w = np.ones((2, 2, 1, 1))
    big_ms = np.array([100.0, 0.0001])
    assert rounding_noise(w, False, big_ms, steps, 127) > rounding_noise(w, False, big_ms, one, 127)
    assert not channel_scales_pay([(w, False, 127)], big_ms, steps, 0.04)
    act = 2 * (0.01 ** 2 + 0.04 ** 2) / 12  # each channel read by 2 weights of 1
    weights = 2 * ((4 / 127) ** 2 * 100.0 + (1 / 127) ** 2 * 0.0001) / 12  # sw = 1/127 over shares 1/4 and 1
    assert rounding_noise(w, False, big_ms, steps, 127) == pytest.approx(act + weights)
    # the tensor's step in every channel: nothing gained, so one scale stays
    assert not channel_scales_pay([(w, False, 127), (dw, True, 127)], ms, one, 0.04)


def test_compare_reads_per_channel_outputs_back():
    """``edgeopt compare`` dequantizes a kernel's u8 output with one scale, or one per channel (axis 1 of NCHW, the
    features of tokens)."""
    from edgeopt.commands.compare_cmd import _dequantized, quantized_outputs

    q = np.arange(24, dtype=np.float64).reshape(1, 3, 2, 4)
    np.testing.assert_allclose(_dequantized(q, np.float32(0.5), np.int32(2)), (q - 2) * 0.5)
    s, z = np.array([0.1, 0.2, 0.4], np.float32), np.array([0, 1, 2], np.int32)
    np.testing.assert_allclose(_dequantized(q, s, z), (q - z.reshape(1, 3, 1, 1)) * s.reshape(1, 3, 1, 1), rtol=1e-6)
    assert _dequantized(q, np.ones(4, np.float32), np.int32(0)) is None  # not one per channel
    tokens = np.arange(9, dtype=np.float64).reshape(1, 3, 3)  # 3 tokens of 3 features: the last axis, not axis 1
    np.testing.assert_allclose(_dequantized(tokens, s, z), (tokens - z) * s, rtol=1e-6)
    m = Block().eval()
    c = edgeopt.compile(m, (torch.from_numpy(_inputs(np.random.default_rng(99))),), quantize="int8",
                        calibration_data=[_inputs(np.random.default_rng(i)) for i in range(8)])
    outs = quantized_outputs(c._artifact, c.ir)
    assert sorted(np.asarray(v[0]).size for v in outs.values()) == [32, 32]  # the ReLU6s' outputs, per channel


def test_fold_quantized_takes_a_dense_convs_zero_point_per_channel_padding_each_channel_with_it():
    """A hand-made dense sandwich (one scale, a zero point per channel) with padding: ``quantize_static`` gives such
    zero points only to inputs no reader pads, but ``fold_quantized`` takes any IR: the zero points' share per output
    and an explicit per-channel pad."""
    g = Graph()
    x = g.add_input("x", TensorType((1, 3, 5, 5), "f32"))
    s = g.add_const(np.float32(0.02), "s")
    z = g.add_const(np.array([10, 128, 250], np.int32).reshape(1, 3, 1, 1), "z")
    q = g.add("quantize", [x, s, z], {"dtype": "u8"})
    dq = g.add("dequantize", [q, s, z])
    rng = np.random.default_rng(1)
    wq = g.add_const(rng.integers(-127, 128, (4, 3, 3, 3)).astype(np.int8), "w_q")
    w = g.add("dequantize", [wq, g.add_const(np.full((4, 1, 1, 1), 0.01, np.float32), "w_s")])
    g.set_outputs([g.add("conv2d", [dq, w, g.add_const(np.arange(4, dtype=np.float32), "b")], {"padding": [1] * 4})])
    verify(g)
    data = [rng.uniform(-2, 2, (1, 3, 5, 5)).astype(np.float32)]
    before = interpret(g, data)[0]
    assert get_pass("fold_quantized").run(g) == {"integer_layers": 1}
    verify(g)
    assert next(n for n in g.nodes if n.op == "pad").attrs["value"] == [10, 128, 250]
    np.testing.assert_allclose(interpret(g, data)[0], before, rtol=1e-5, atol=1e-4)


def test_the_report_counts_the_scales_per_channel_of_the_graph_it_returns():
    """With an accuracy budget the graph is the adopted trial's: the count is of its per-channel quantizes."""
    for cfg in (QuantConfig(), QuantConfig(max_drop=1e-6, metric="cosine")):
        x = torch.from_numpy(_inputs(np.random.default_rng(99)))
        g = from_torch(Block().eval(), (x,))
        cal = [[_inputs(np.random.default_rng(i))] for i in range(8)]
        stats = get_pass("quantize_static").__class__(cfg, cal).run(g)
        per_channel = [n for n in g.nodes if n.op == "quantize" and g.const(n.inputs[1]).size > 1]
        assert stats["per_channel_inputs"] == len(per_channel), (cfg.max_drop, stats)


def test_channel_statistics_count_the_values_of_a_channel_per_sample():
    """A map's pixels or a sequence's tokens; 1 for a pooled vector (which keeps one scale)."""
    assert _stats(np.ones((2, 3, 4, 5))).channel_positions == 20
    assert _stats(np.ones((1, 7, 6)), np.ones((1, 5, 6))).channel_positions == 5  # the fewest of any batch
    assert _stats(np.ones((64, 8))).channel_positions == 1
    assert _stats(np.ones((1, 2, 2, 2))).channel_samples == 4 and _stats(np.ones(3)).channel_samples == 0
