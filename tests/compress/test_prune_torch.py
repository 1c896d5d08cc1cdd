"""``edgeopt.compress.prune`` returns a smaller nn.Module that computes what the pruned IR computes, and the
``Compress(prune=...)`` compile option removes the same channels."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import edgeopt
from edgeopt.compress import CompressionError, prune
from edgeopt.compress.channels import analyze, choose, prune_graph
from edgeopt.frontend import from_torch
from edgeopt.ir import interpret
from tests.compress.nets import ConcatNet, HeadsNet, randomize_bn


def _ir_pruned(model, inputs, ratio=0.5, round_to=16):  # prune()'s default
    g = from_torch(model, inputs)
    ch = analyze(g)
    return prune_graph(g, ch, choose(ch, g, ratio, round_to=round_to))[0]


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2", "mobilenet_v3", "efficientnet_lite0"])
def test_pruned_module_matches_pruned_ir(name):
    from tests.models.zoo import build

    model, inputs = build(name, small=True)
    small, result = prune(model, inputs, 0.5, round_to=1, return_result=True)  # the small zoo nets are narrow
    assert result.macs_after < 0.6 * result.macs_before and result.params_after < result.params_before
    assert sum(p.numel() for p in small.parameters()) < sum(p.numel() for p in model.parameters())
    with torch.no_grad():
        got = small(*inputs).numpy()
    want = interpret(_ir_pruned(model, inputs, round_to=1), [x.numpy() for x in inputs])[0]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * float(np.abs(want).max()))
    # the pruned module traces again and prunes again (modules' sizes were updated, not just the weights)
    again = prune(small, inputs, 0.5, round_to=1)
    assert sum(p.numel() for p in again.parameters()) < sum(p.numel() for p in small.parameters())


def test_module_attributes_follow_weights():
    torch.manual_seed(0)
    model = randomize_bn(ConcatNet())
    small = prune(model, (torch.randn(1, 3, 8, 8),), 0.5)
    for m in small.modules():
        if isinstance(m, torch.nn.Conv2d):
            assert m.weight.shape[0] == m.out_channels and m.weight.shape[1] * m.groups == m.in_channels
        if isinstance(m, torch.nn.BatchNorm2d):
            assert m.running_mean.shape[0] == m.num_features == m.weight.shape[0]
        if isinstance(m, torch.nn.Linear):
            assert tuple(m.weight.shape) == (m.out_features, m.in_features)
    assert small.dw.groups == small.dw.out_channels < 16
    small.train()  # fine-tunable: gradients reach every sliced parameter
    small(torch.randn(2, 3, 8, 8)).sum().backward()
    assert all(p.grad is not None for p in small.parameters())


def test_heads_pruned_in_torch():
    torch.manual_seed(0)
    model = HeadsNet().eval()
    x = torch.randn(1, 6, 32)
    small = prune(model, (x,), 0.5)
    assert small.q.out_features == 16 and small.up.out_features == 32 and small.norm.normalized_shape == (32,)
    with torch.no_grad():
        np.testing.assert_allclose(small(x).numpy(), interpret(_ir_pruned(model, (x,)), [x.numpy()])[0],
                                   rtol=1e-4, atol=1e-5)


def test_module_with_fixed_sizes_is_refused_clearly():
    torch.manual_seed(0)
    x = torch.randn(1, 6, 32)
    with pytest.raises(CompressionError, match="does not run.*Compress"):
        prune(HeadsNet(fixed_heads=True).eval(), (x,), 0.5)


def test_minilm_heads_and_ffn_in_torch():
    from tests.models.zoo import build

    model, inputs = build("minilm", small=True)
    small, result = prune(model, inputs, 0.5, return_result=True)
    layer = small.model.encoder.layer[0]
    assert layer.intermediate.dense.out_features == 768 and layer.attention.self.query.out_features == 192
    assert layer.attention.self.num_attention_heads == 6
    with torch.no_grad():
        got = small(*inputs).numpy()
    want = interpret(_ir_pruned(model, inputs), [x.numpy() for x in inputs])[0]
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-3 * float(np.abs(want).max()))
    assert result.params_after < 0.85 * result.params_before  # embeddings (the most weights) keep their width


def test_taylor_score_uses_gradients():
    from tests.compress.nets import ConcatNet

    torch.manual_seed(0)
    model = randomize_bn(ConcatNet())
    x = torch.randn(8, 3, 8, 8)
    data = [(x, torch.randint(0, 5, (8,)))]
    a = prune(model, (x[:1],), 0.5, score="taylor", data=data)
    b = prune(model, (x[:1],), 0.5, score="l1")
    assert a.mix.weight.shape == b.mix.weight.shape
    assert not torch.equal(a.mix.weight, b.mix.weight)  # different channels chosen
    with pytest.raises(CompressionError, match="needs data"):
        prune(model, (x[:1],), 0.5, score="taylor")


def test_compile_option_removes_the_same_channels():
    from tests.models.zoo import build

    model, inputs = build("mobilenet_v2", small=True)
    compiled = edgeopt.compile(model, inputs, compress=edgeopt.Compress(prune=0.5))
    rep = compiled.report["compression"]
    assert rep["prune_channels"]["channels_removed"] > 0 and rep["macs_after"] < 0.6 * rep["macs_before"]
    small = prune(model, inputs, 0.5)
    with torch.no_grad():
        want = small(*inputs).numpy()
    np.testing.assert_allclose(compiled(*[x.numpy() for x in inputs]), want, rtol=1e-3,
                               atol=1e-3 * float(np.abs(want).max()))
    plain = edgeopt.compile(model, inputs)
    assert compiled.report["weight_bytes"] < 0.6 * plain.report["weight_bytes"]


def test_bad_settings():
    with pytest.raises(CompressionError, match=r"\[0, 1\)"):
        edgeopt.Compress(prune=1.5)
    with pytest.raises(CompressionError, match="taylor"):
        edgeopt.Compress(prune=0.5, prune_score="taylor")
    with pytest.raises(CompressionError, match="not both"):
        edgeopt.Compress(rank_energy=0.9, rank_budget=0.5)
    with pytest.raises(CompressionError, match="Compress"):
        edgeopt.compile(ConcatNet().eval(), (torch.randn(1, 3, 8, 8),), compress={"prune": 0.5})


def test_grouped_and_tied_modules():
    """Grouped and channel-multiplier convs keep their groups; tied weights stay tied and sliced alike; the result
    is checked against the pruned graph."""
    from tests.compress.nets import GroupedNet

    torch.manual_seed(0)
    model = GroupedNet().eval()
    x = torch.randn(1, 3, 8, 8)
    small = prune(model, (x,), 0.5, round_to=1)
    assert small.grouped.groups == 4 and small.mult.groups == 16
    assert small.a.weight is small.b.weight
    with torch.no_grad():
        np.testing.assert_allclose(small(x).numpy(), interpret(_ir_pruned(model, (x,), round_to=1),
                                                               [x.numpy()])[0], rtol=1e-4, atol=1e-5)
