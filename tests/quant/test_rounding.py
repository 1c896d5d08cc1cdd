"""GPTQ weight rounding: fewer output errors than nearest rounding, on the same int8 grid."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edgeopt.ir import interpret, verify
from edgeopt.pipeline import get_pass
from edgeopt.quant import QuantConfig, QuantizationError
from edgeopt.quant.compare import sqnr_db
from edgeopt.quant.rounding import round_to_grid
from edgeopt.quant.weights import symmetric_int8
from tests.passes.test_quantize_passes import TinyCNN, _folded_graph


def correlated_inputs(n: int, k: int, seed: int = 0, mixing: int = 0) -> np.ndarray:
    """Rows whose features move together (as neighbouring pixels and channels do): ``mixing`` picks how."""
    a = np.random.default_rng(1000 + mixing).standard_normal((k // 4, k))
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, k // 4)) @ a + 0.1 * rng.standard_normal((n, k))


def output_error(w, q, s, x) -> float:
    return float(np.square((q * s - w) @ x.T).sum())


def test_gptq_levels_sit_on_the_nearest_grid_and_cut_the_output_error():
    rng = np.random.default_rng(1)
    w = rng.standard_normal((32, 96)).astype(np.float32)
    x = correlated_inputs(4096, 96)
    q0, s = symmetric_int8(w, (1,))
    q = round_to_grid(w, x.T @ x, s.reshape(-1))
    assert q.dtype == np.int8 and np.abs(q.astype(int)).max() <= 127
    assert np.abs(q.astype(int) - q0).max() <= 3  # the same grid: levels move a few steps at most
    held_out = correlated_inputs(4096, 96, seed=2)
    assert output_error(w, q, s, held_out) < 0.7 * output_error(w, q0, s, held_out)


def test_depthwise_channels_are_rounded_each_against_their_own_inputs():
    rng = np.random.default_rng(3)
    w = rng.standard_normal((8, 9)).astype(np.float32)
    xs = [correlated_inputs(2048, 36, seed=c, mixing=c)[:, :9] for c in range(8)]
    h = np.stack([x.T @ x for x in xs])
    q0, s = symmetric_int8(w, (1,))
    q = round_to_grid(w, h, s.reshape(-1))
    for c in range(8):  # channel by channel: never worse than nearest on its own inputs
        e_gptq, e_near = output_error(w[c:c + 1], q[c:c + 1], s[c], xs[c]), output_error(w[c:c + 1], q0[c:c + 1],
                                                                                           s[c], xs[c])
        assert e_gptq <= e_near * 1.0001
    total = [sum(output_error(w[c:c + 1], qq[c:c + 1], s[c], xs[c]) for c in range(8)) for qq in (q, q0)]
    assert total[0] < total[1]


def photo_crops(n: int, size: int, seed: int) -> list[np.ndarray]:
    """Random size x size crops of a real photo (natural images: neighbouring pixels move together)."""
    from skimage import data

    img = (data.astronaut().astype(np.float32) / 255 - 0.5) / 0.5
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        t, left = rng.integers(0, img.shape[0] - size, 2)
        out.append(np.ascontiguousarray(img[t:t + size, left:left + size].transpose(2, 0, 1)[None]))
    return out


def weights_only(g):
    """``g`` with every activation quantize / dequantize pair taken out: what is left is the weights' rounding (with
    one scale per activation: a dense layer reads per-channel values in units of each channel's share)."""
    g = g.clone()
    for n in list(g.nodes):
        if n.op == "dequantize" and n.inputs[0].producer is not None and n.inputs[0].producer.op == "quantize":
            g.replace_uses(n.outputs[0], n.inputs[0].producer.inputs[0])
    g.remove_dead_nodes()
    return g


def test_static_int8_with_gptq_rounds_weights_closer_to_the_float_layers():
    """Same grids (scales), other levels: on photo crops it was not calibrated on, the model with GPTQ's weights (and
    float activations, to see the weights alone) is closer to the float model than with the nearest levels."""
    torch.manual_seed(0)
    model, x = TinyCNN().eval(), torch.randn(1, 3, 12, 12)
    g, _ = _folded_graph(model, x)
    cal, held_out = [[c] for c in photo_crops(16, 12, seed=0)], photo_crops(16, 12, seed=1)
    ref = np.concatenate([interpret(g, [h])[0] for h in held_out])
    scores, scales = {}, {}
    for rounding in ("nearest", "gptq"):
        q = g.clone()
        config = QuantConfig(weight_rounding=rounding, activation_scales="per-tensor")  # as ``weights_only`` needs
        stats = get_pass("quantize_static", config, cal).run(q)
        verify(q)
        assert stats["quantized"] == 3
        scales[rounding] = sorted((k, np.asarray(v).tobytes()) for k, v in q.constants.items() if k.endswith("_scale"))
        w = weights_only(q)
        scores[rounding] = sqnr_db(ref, np.concatenate([interpret(w, [h])[0] for h in held_out]))
    assert scales["gptq"] == scales["nearest"]
    assert scores["gptq"] > scores["nearest"] + 1.0, scores


def test_weight_rounding_is_checked_and_reported():
    with pytest.raises(QuantizationError, match="weight_rounding must be one of"):
        QuantConfig(weight_rounding="stochastic")
    assert QuantConfig(weight_rounding="gptq").describe()["weight_rounding"] == "gptq"


class Multiplier(torch.nn.Module):
    """A depthwise conv with two filters per channel (GPTQ leaves it at the nearest levels), between dense ones."""

    def __init__(self):
        super().__init__()
        self.a = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.dw = torch.nn.Conv2d(8, 16, 3, padding=1, groups=8)
        self.b = torch.nn.Conv2d(16, 8, 1)

    def forward(self, x):
        return self.b(torch.relu(self.dw(torch.relu(self.a(x)))))


def test_gptq_takes_channel_multipliers_and_batches_of_several_samples():
    torch.manual_seed(0)
    model, x = Multiplier().eval(), torch.randn(2, 3, 12, 12)
    g, _ = _folded_graph(model, x)
    crops = photo_crops(16, 12, seed=3)
    cal = [[np.concatenate(crops[i:i + 2])] for i in range(0, 16, 2)]  # batches of 2
    ref = interpret(g, cal[0])[0]
    for rounding in ("nearest", "gptq"):
        q = g.clone()
        get_pass("quantize_static", QuantConfig(weight_rounding=rounding), cal).run(q)
        verify(q)
        assert sqnr_db(ref, interpret(q, cal[0])[0]) > 20
