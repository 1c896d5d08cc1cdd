"""The image's conv on its exact 8-bit pixels: ``int8_image_convs="auto"`` (one int8 conv, its levels by GPTQ, where
the conv is large enough to pay) and ``"split"`` (two int8 convs: the weight's levels and its rounding residual's)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from edgeopt.targets import get_target

from edgeopt.api import compile_graph
from edgeopt.frontend import from_torch
from edgeopt.ir import interpret, verify
from edgeopt.pipeline import get_pass
from edgeopt.quant import QuantConfig, QuantizationError
from edgeopt.quant.compare import sqnr_db
from tests.quant.test_lattice import imagenet, pixels
from tests.quant.test_rounding import photo_crops


class Stem(torch.nn.Module):
    """An image conv (7x7: 147 inputs per output, or 3x3: 27), then an int8 body conv."""

    def __init__(self, k: int = 7):
        super().__init__()
        self.stem = torch.nn.Conv2d(3, 16, k, stride=2, padding=k // 2)
        self.body = torch.nn.Conv2d(16, 8, 3, padding=1)

    def forward(self, x):
        return self.body(torch.relu(self.stem(x)))


def _quantized(mode, k: int = 7, data=None, weights: str = "per-channel"):
    """(graph before, graph after quantize_static with ``int8_image_convs=mode``, an input, the pass's stats)."""
    torch.manual_seed(0)
    model = Stem(k).eval()
    x = imagenet(pixels(1, size=24)) if data is None else data[:1]
    if data is None:
        cal = [[imagenet(pixels(1, size=24, seed=s))] for s in range(1, 9)]
    else:
        cal = [[d[None]] for d in data[1:]]
    g = from_torch(model, (torch.from_numpy(x),))
    get_pass("fold_batch_norm").run(g)
    before = g.clone()
    # 8-bit weight levels, as on a VNNI CPU (x86-64-v3's default is 7-bit: QuantConfig.reduce_range)
    p = get_pass("quantize_static", QuantConfig(int8_image_convs=mode, weights=weights, reduce_range=False), cal)
    p.target = get_target("x86-64-v3")  # an int8 dot product every x86-64-v3 CPU has (AVX2)
    stats = p.run(g)
    verify(g)
    return before, g, x, stats


def _convs_on_pixels(g):
    return [n for n in g.nodes if n.op == "conv2d" and n.inputs[0].name.endswith("_steps")]


def test_split_is_two_int8_convs_on_the_pixels_summed_under_the_layer_name():
    before, g, x, _ = _quantized("split")
    hi, lo = _convs_on_pixels(g)
    assert hi.inputs[0] is lo.inputs[0]  # the same exact pixel levels
    assert all(n.inputs[1].producer.op == "dequantize" for n in (hi, lo))
    s_hi, s_lo = (g.const(n.inputs[1].producer.inputs[1]).reshape(-1) for n in (hi, lo))
    assert np.all(s_lo <= s_hi / 250)  # the residual's grid: ~1/254 of the weight's
    assert len(lo.inputs) == 2  # the bias is added once, by the first part
    name = next(n for n in before.nodes if n.op == "conv2d").outputs[0].name
    (total,) = [n for n in g.nodes if n.outputs[0].name == name]
    assert total.op == "add" and set(total.inputs) == {hi.outputs[0], lo.outputs[0]}
    get_pass("fold_quantized").run(g)
    verify(g)
    assert len([n for n in g.nodes if n.op == "conv2d" and n.outputs[0].type.dtype == "i32"]) == 3


def _stem_sqnr(*modes, data=None) -> list[float]:
    """The stem output's SQNR (dB) against the float graph, for each ``int8_image_convs`` mode."""
    before, _, x, _ = _quantized(False, data=data)
    stem = next(n for n in before.nodes if n.op == "conv2d").outputs[0].name
    seen = {}
    for tag, g in [("float", before)] + [(m, _quantized(m, data=data)[1]) for m in modes]:
        interpret(g, [x], observe=lambda v, a, tag=tag: seen.setdefault((tag, v.name), a))
    return [sqnr_db(seen["float", stem], seen[m, stem]) for m in modes]


def test_split_keeps_the_float_convs_accuracy_where_one_int8_conv_loses_it():
    """The stem's output: split's error is far below one int8 conv's (15-bit against 8-bit weights)."""
    split, one = _stem_sqnr("split", True)
    assert split > one + 30 and split > 70, (split, one)


def test_compiled_split_matches_the_interpreter_and_torch():
    torch.manual_seed(0)
    model = Stem().eval()
    x = imagenet(pixels(1, size=24))
    cal = [torch.from_numpy(imagenet(pixels(1, size=24, seed=s))) for s in range(1, 9)]
    compiled = compile_graph(from_torch(model, (torch.from_numpy(x),)), "host",
                             quantize=QuantConfig(int8_image_convs="split"), calibration_data=cal)
    got, want = compiled(x), interpret(compiled.graph, [x])[0]
    assert np.abs(got - want).max() <= 0.02 * np.abs(want).max()
    assert sqnr_db(model(torch.from_numpy(x)).detach().numpy(), got) > 30
    kept = compiled.report["quantization"]["kept_float"]
    assert kept == ([] if get_target("host").int8_dots() else [kept[0]])


def test_auto_quantizes_a_7x7_stem_on_pixels_with_gptq_levels_and_keeps_a_3x3_stem_or_non_pixel_input_float():
    _, g_auto, _, stats = _quantized("auto", k=7)
    _, g_one, _, _ = _quantized(True, k=7)
    (auto,), (one,) = _convs_on_pixels(g_auto), _convs_on_pixels(g_one)
    assert stats["kept_float"] == []
    levels = [g.const(n.inputs[1].producer.inputs[0]) for g, n in ((g_auto, auto), (g_one, one))]
    assert (levels[0] != levels[1]).mean() > 0.05  # GPTQ's levels, not the nearest ones
    # on crops of a real photo (neighbouring pixels move together, which GPTQ's choice of levels uses), the first
    # crop held out: less output error than the nearest levels
    crops = np.concatenate(photo_crops(9, 24, seed=5))
    assert len(_convs_on_pixels(_quantized("auto", data=crops)[1])) == 1
    gptq, nearest = _stem_sqnr("auto", True, data=crops)
    assert gptq > nearest + 6, (gptq, nearest)  # measured: 63 against 48 dB
    _, g, _, stats = _quantized("auto", k=3)
    assert _convs_on_pixels(g) == []
    assert stats["kept_float"] == ["conv2d (conv2d: 3 input channels, 27 inputs per output, under 64: no faster "
                                   "in int8)"]
    floats = np.random.default_rng(0).standard_normal((9, 3, 24, 24)).astype(np.float32)  # not 8-bit pixels
    _, g, _, stats = _quantized("auto", k=7, data=floats)
    assert stats["kept_float"] == ["conv2d (conv2d: 3 input channels, not 8-bit pixels)"]
    assert next(n for n in g.nodes if n.op == "conv2d").inputs[0].name == "x"
    _, g, _, stats = _quantized("auto", k=7, weights="per-tensor")  # no GPTQ levels: the nearest ones cost too much
    assert _convs_on_pixels(g) == [] and stats["kept_float"][0].endswith("per-tensor weights: no GPTQ levels)")


def test_auto_is_the_default_and_other_values_are_refused():
    assert QuantConfig().int8_image_convs == "auto"
    with pytest.raises(QuantizationError, match="int8_image_convs"):
        QuantConfig(int8_image_convs="yes")
