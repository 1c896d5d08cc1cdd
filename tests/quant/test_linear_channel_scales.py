"""Static int8's scales per feature for linear layers' inputs (``QuantConfig.activation_scales``, the transformer
half of it): a LayerNorm output whose features differ 20-fold in size, as a pretrained BERT's do, read by a linear
layer in units of each feature's share of the largest scale (the shares in its weight's input columns), and by a
residual add as the values; ``fold_quantized`` takes the zero points per feature into the integer layer."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import edgeopt
from edgeopt.frontend import from_torch
from edgeopt.ir import Graph, TensorType, interpret, verify
from edgeopt.pipeline import get_pass
from edgeopt.quant import QuantConfig
from edgeopt.quant.calibrate import FEATURE_RANGE_FLOOR

TOKENS, FEATURES = 32, 16  # 8 calibration batches: 256 values per feature


class Mlp(torch.nn.Module):
    """A transformer's feed-forward half: LayerNorm -> linear -> GELU -> linear, plus the residual of the
    LayerNorm's output. The LayerNorm's gain spreads its features 20-fold and shifts some (signed values, each feature
    its own zero point)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.norm = torch.nn.LayerNorm(FEATURES)
        self.up = torch.nn.Linear(FEATURES, 32)
        self.down = torch.nn.Linear(32, FEATURES)
        with torch.no_grad():
            self.norm.weight.copy_(torch.logspace(-1, np.log10(2), FEATURES))
            self.norm.bias.copy_(torch.linspace(-0.2, 0.3, FEATURES))

    def forward(self, x):
        h = self.norm(x)
        return h + self.down(torch.nn.functional.gelu(self.up(h)))


def _tokens(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((1, TOKENS, FEATURES)).astype(np.float32)


def _quantized(mode: str, rounding: str = "auto"):
    g = from_torch(Mlp().eval(), (torch.from_numpy(_tokens(99)),))
    cal = [[_tokens(i)] for i in range(8)]
    float_graph = g.clone()
    config = QuantConfig(activation_scales=mode, weight_rounding=rounding)
    stats = get_pass("quantize_static").__class__(config, cal).run(g)
    verify(g)
    return float_graph, g, stats, cal


def _layer(g: Graph, out_features: int):
    return next(n for n in g.nodes if n.op == "linear" and n.outputs[0].type.shape[-1] == out_features)


def test_linear_inputs_get_a_scale_per_feature():
    fg, g, stats, _ = _quantized("per-channel")
    assert stats["per_channel_inputs"] >= 1
    up = _layer(g, 32)
    dq = up.inputs[0].producer
    q = dq.inputs[0].producer
    scales, zps = g.const(q.inputs[1]), g.const(q.inputs[2])
    assert scales.shape == (1, 1, FEATURES) and zps.shape == (1, 1, FEATURES) and zps.dtype == np.int32
    assert len(set(zps.reshape(-1).tolist())) > 1  # signed, shifted features: each its own zero point
    assert scales.max() / scales.min() == pytest.approx(1 / FEATURE_RANGE_FLOOR, rel=1e-4)  # the floor: a quarter
    # the linear layer reads one scale, the largest, and each feature's share of it in its weight's columns
    assert g.const(dq.inputs[1]).size == 1 and g.const(dq.inputs[1]) == scales.max()
    share = scales.reshape(1, -1) / scales.max()
    w_float = fg.const(_layer(fg, 32).inputs[1])
    w_q, w_s = (g.const(v) for v in up.inputs[1].producer.inputs[:2])
    assert np.abs(w_q * w_s - w_float * share).max() <= 0.51 * w_s.max()  # rounded on the grid of w * share
    # the residual add reads the values themselves: the per-feature dequantize, not the shares
    add = next(n for n in g.nodes if n.op == "add" and any(v.producer is not None and v.producer.op == "dequantize"
                                                             and v.producer.inputs[0] is q.outputs[0]
                                                             for v in n.inputs))
    read = next(v.producer for v in add.inputs if v.producer is not None and v.producer.op == "dequantize")
    assert g.const(read.inputs[1]).shape == (1, 1, FEATURES)
    _, g2, stats2, _ = _quantized("per-tensor")
    assert stats2["per_channel_inputs"] == 0
    assert all(g2.const(n.inputs[1]).size == 1 for n in g2.nodes if n.op == "quantize")


@pytest.mark.parametrize("rounding", ["nearest", "gptq"])
def test_per_feature_inputs_cut_the_error(rounding):
    """The output against the float graph's, on the calibration batches: lower with a scale per feature, with the
    nearest levels and with GPTQ's (which rounds the weight times the shares against the shares' inputs)."""
    errors = {}
    for mode in ("per-channel", "per-tensor"):
        fg, g, stats, cal = _quantized(mode, rounding)
        assert stats["gptq_layers"] == (2 if rounding == "gptq" else 0)
        got = np.concatenate([interpret(g, b)[0] for b in cal])
        ref = np.concatenate([interpret(fg, b)[0] for b in cal])
        errors[mode] = float(np.mean((got - ref) ** 2) / np.mean(ref ** 2))
    assert errors["per-channel"] < 0.7 * errors["per-tensor"], errors


@pytest.mark.parametrize("layout", ["oi", "io"])
def test_fold_quantized_takes_a_linear_layers_zero_point_per_feature(layout):
    """A hand-made sandwich (one scale, a zero point per feature of a rank-3 input): the zero points' share per
    output, ``sum_c zx[c] * w_q[o, c]``, in the integer layer's dequantize."""
    g = Graph()
    x = g.add_input("x", TensorType((1, 3, 5), "f32"))
    s = g.add_const(np.float32(0.02), "s")
    z = g.add_const(np.array([10, 128, 250, 3, 77], np.int32).reshape(1, 1, 5), "z")
    dq = g.add("dequantize", [g.add("quantize", [x, s, z], {"dtype": "u8"}), s, z])
    rng = np.random.default_rng(1)
    levels = rng.integers(-127, 128, (4, 5)).astype(np.int8)
    wq = g.add_const(levels if layout == "oi" else np.ascontiguousarray(levels.T), "w_q")
    w_scale = np.linspace(0.01, 0.02, 4, dtype=np.float32)
    w = g.add("dequantize", [wq, g.add_const(w_scale.reshape((4, 1) if layout == "oi" else (1, 4)), "w_s")])
    g.set_outputs([g.add("linear", [dq, w, g.add_const(np.arange(4, dtype=np.float32), "b")],
                         {"weight_layout": layout})])
    verify(g)
    data = [rng.uniform(-2, 2, (1, 3, 5)).astype(np.float32)]
    before = interpret(g, data)[0]
    assert get_pass("fold_quantized").run(g) == {"integer_layers": 1}
    verify(g)
    acc = next(n for n in g.nodes if n.op == "linear")
    assert acc.inputs[0].type.dtype == "u8" and acc.outputs[0].type.dtype == "i32"
    np.testing.assert_allclose(interpret(g, data)[0], before, rtol=1e-5, atol=1e-4)


def test_the_noise_model_takes_a_linear_weight_as_a_1x1_conv():
    from edgeopt.quant.channel_noise import rounding_noise

    rng = np.random.default_rng(0)
    w, ms, steps = rng.standard_normal((8, 5)), rng.uniform(0.1, 2, 5), rng.uniform(0.01, 0.04, 5)
    assert rounding_noise(w, False, ms, steps, 127) == rounding_noise(w[:, :, None, None], False, ms, steps, 127)


def test_compiled_mlp_matches_the_interpreter_and_torch():
    m = Mlp().eval()
    x = torch.from_numpy(_tokens(99))
    c = edgeopt.compile(m, (x,), quantize="int8", calibration_data=[_tokens(i) for i in range(8)])
    q = c.report["quantization"]
    assert q["per_channel_inputs"] >= 1 and q["kernels_by_precision"].get("int8", 0) >= 2
    assert c.report["pass_stats"]["fold_quantized"]["integer_layers"] == 2
    got = c(x.numpy())
    np.testing.assert_allclose(got, interpret(c.graph, [x.numpy()])[0], rtol=1e-4, atol=1e-4)
    with torch.no_grad():
        ref = m(x).numpy()
    assert float((ref * got).sum() / np.linalg.norm(ref) / np.linalg.norm(got)) > 0.995


def test_features_seen_too_few_times_keep_one_scale():
    """A feature's range from 8 batches of 4 tokens (32 values, fewer than ``MIN_CHANNEL_SAMPLES``: as a pooled
    vector's features from a few dozen images) would clip on other inputs: one scale per activation."""
    from edgeopt.quant.calibrate import MIN_CHANNEL_SAMPLES

    def tokens(seed):
        return _tokens(seed)[:, :4]

    g = from_torch(Mlp().eval(), (torch.from_numpy(tokens(99)),))
    cal = [[tokens(i)] for i in range(8)]
    assert 8 * 4 < MIN_CHANNEL_SAMPLES
    stats = get_pass("quantize_static").__class__(QuantConfig(), cal).run(g)
    assert stats["per_channel_inputs"] == 0 and stats["quantized"] == 2


def test_an_io_linear_gets_the_same_scales_and_numbers():
    """An ``[in, out]`` weight (ONNX's MatMul) takes the shares along its rows: the quantized graph computes what the
    ``[out, in]`` one does."""
    g = from_torch(Mlp().eval(), (torch.from_numpy(_tokens(99)),))
    io = g.clone()
    for n in io.nodes:
        if n.op == "linear":
            w = io.const(n.inputs[1])
            n.inputs[1] = io.add_const(np.ascontiguousarray(w.T), f"{n.inputs[1].name}_io")
            n.attrs["weight_layout"] = "io"
    io.remove_unused_constants()
    verify(io)
    cal = [[_tokens(i)] for i in range(8)]
    outs = []
    for graph in (g, io):
        stats = get_pass("quantize_static").__class__(QuantConfig(), cal).run(graph)
        assert stats["per_channel_inputs"] == 2
        outs.append(interpret(graph, [_tokens(123)])[0])
    np.testing.assert_allclose(outs[1], outs[0], rtol=1e-5, atol=1e-5)


def test_fold_requantize_folds_a_relu_mlps_per_feature_requantize():
    """linear -> ReLU -> linear on tokens: the hidden features' quantize (a ReLU's: every zero point 0) folds into
    the first layer's requantize along the last axis, and the compiled model matches the interpreter."""

    class ReluMlp(torch.nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(1)
            self.up, self.down = torch.nn.Linear(FEATURES, 32), torch.nn.Linear(32, FEATURES)
            with torch.no_grad():
                self.up.weight.mul_(torch.logspace(-1, 0.3, 32).reshape(-1, 1))  # hidden features 20x apart

        def forward(self, x):
            return self.down(torch.relu(self.up(x)))

    m, x = ReluMlp().eval(), torch.from_numpy(_tokens(99))
    c = edgeopt.compile(m, (x,), quantize="int8", calibration_data=[_tokens(i) for i in range(8)])
    assert c.report["quantization"]["per_channel_inputs"] >= 1
    assert c.report["pass_stats"]["fold_requantize"]["folded"] >= 1
    rq = [m for n in c.graph.nodes for m in (n.body.nodes if n.body is not None else [n])
          if m.op == "requantize" and isinstance(m.attrs["scale"], list)]
    assert rq and all(len(n.attrs["scale"]) == 32 and n.outputs[0].type.shape == (1, TOKENS, 32) for n in rq)
    np.testing.assert_allclose(c(x.numpy()), interpret(c.graph, [x.numpy()])[0], rtol=1e-4, atol=1e-4)


def test_gptq_rounds_the_weight_times_the_shares_against_the_values_it_reads():
    """With the shares in its columns, GPTQ weighs the rounding by the inputs in share units (their second moments
    rescaled by the shares): the layer's own output error, in the values' units, below the nearest levels'."""
    m = Mlp().eval()
    with torch.no_grad():
        x = torch.cat([m.norm(torch.from_numpy(_tokens(i))) for i in range(8)]).reshape(-1, FEATURES).double().numpy()
    errors = {}
    for rounding in ("nearest", "gptq"):
        fg, g, _, _ = _quantized("per-channel", rounding)
        up = _layer(g, 32)
        scales = g.const(up.inputs[0].producer.inputs[0].producer.inputs[1]).reshape(-1)
        w_q, w_s = (g.const(v).astype(np.float64) for v in up.inputs[1].producer.inputs[:2])
        w_values = w_q * w_s / (scales / scales.max())  # the weight in the values' units
        errors[rounding] = float(np.square(x @ (w_values - fg.const(_layer(fg, 32).inputs[1])).T).sum())
    assert errors["gptq"] < 0.95 * errors["nearest"], errors  # 0.92
