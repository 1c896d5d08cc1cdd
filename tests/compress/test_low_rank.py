"""Low-rank factorization: the ``low_rank`` pass and ``edgeopt.compress.low_rank`` make the same two-layer
factors; full energy reproduces the model, a budget is met, a layer that would not shrink stays whole."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import edgeopt
from edgeopt.compress import CompressionError, low_rank
from edgeopt.compress.cost import graph_params
from edgeopt.compress.factor import rank_for_energy, ranks_for_budget, saves
from edgeopt.frontend import from_torch
from edgeopt.ir import interpret, verify
from edgeopt.pipeline import get_pass
from tests.compress.nets import ConcatNet, randomize_bn


def _low_rank_ir(model, inputs, **options):
    g = from_torch(model, inputs)
    before = g.clone()
    stats = get_pass("low_rank", **options).run(g)
    verify(g)
    return before, g, stats


def test_full_energy_is_exact():
    """A weight of rank 8 factors exactly (rank 16: ranks are multiples of 16); a full-rank square one would not
    shrink and stays."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.ReLU(), torch.nn.Linear(256, 256)).eval()
    with torch.no_grad():
        model[0].weight.copy_(torch.randn(256, 8) @ torch.randn(8, 64))
    x = torch.randn(2, 64)
    before, after, stats = _low_rank_ir(model, (x,), energy=1.0)
    assert [(r["layer"], r["rank"]) for r in stats["factored"]] == [("0", 16)]
    _, _, stats = _low_rank_ir(model, (x,), energy=1.0, multiple=1)
    assert [(r["layer"], r["rank"]) for r in stats["factored"]] == [("0", 8)]
    np.testing.assert_allclose(interpret(after, [x.numpy()])[0], interpret(before, [x.numpy()])[0], rtol=1e-4,
                               atol=1e-4)


def test_rank_cut_error_follows_discarded_energy():
    torch.manual_seed(0)
    lin = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.ReLU(), torch.nn.Linear(256, 64)).eval()
    x = torch.randn(4, 64)
    before, after, stats = _low_rank_ir(lin, (x,), energy=0.9, multiple=1)
    assert {r["layer"] for r in stats["factored"]} == {"0", "2"}
    assert all(r["energy"] >= 0.9 and r["rank"] < 64 for r in stats["factored"])
    assert stats["params_after"] < stats["params_before"]
    assert [n.op for n in after.nodes].count("linear") == 4
    xs = [x.numpy()]
    want, got = interpret(before, xs)[0], interpret(after, xs)[0]
    rel = np.linalg.norm(got - want) / np.linalg.norm(want)
    assert 0 < rel < 0.5
    # the torch side makes the same factors
    small, res = low_rank(lin, energy=0.9, multiple=1, return_result=True)
    assert isinstance(small[0], torch.nn.Sequential) and res.layers["0"]["rank"] == stats["factored"][0]["rank"]
    with torch.no_grad():
        np.testing.assert_allclose(small(x).numpy(), got, rtol=1e-4, atol=1e-5)


def test_conv_factored_into_two_convs():
    torch.manual_seed(0)
    model = randomize_bn(ConcatNet())
    x = torch.randn(1, 3, 8, 8)
    before, after, stats = _low_rank_ir(model, (x,), energy=0.8, layers=["b.0", "mix"], multiple=1)
    assert {r["layer"] for r in stats["factored"]} <= {"b.0", "mix"} and stats["factored"]
    small = low_rank(model, energy=0.8, layers=["b.0", "mix"], multiple=1)
    with torch.no_grad():
        want = small(x).numpy()
    np.testing.assert_allclose(interpret(after, [x.numpy()])[0], want, rtol=1e-4, atol=1e-4)
    compiled = edgeopt.compile(model, (x,), compress=edgeopt.Compress(rank_energy=0.8, rank_layers=("b.0", "mix"),
                                                                             rank_multiple=1))
    np.testing.assert_allclose(compiled(x.numpy()), want, rtol=1e-3, atol=1e-4)
    assert compiled.report["compression"]["low_rank"]["factored"] == stats["factored"]


def test_budget_is_met_across_layers():
    rng = np.random.default_rng(0)
    layers = {f"l{i}": (np.sort(rng.random(64))[::-1] ** (i + 1), 256, 64) for i in range(3)}
    ranks = ranks_for_budget(layers, 0.5, multiple=1)
    used = sum(r * (a + b) for (_, a, b), r in zip(layers.values(), ranks.values()))
    assert used <= 0.5 * 3 * 256 * 64 and used > 0.45 * 3 * 256 * 64
    blocks = ranks_for_budget(layers, 0.5)
    assert all(r % 16 == 0 for r in blocks.values())
    assert sum(r * (a + b) for (_, a, b), r in zip(layers.values(), blocks.values())) <= 0.5 * 3 * 256 * 64
    assert ranks["l2"] < ranks["l0"]  # a faster-decaying spectrum needs fewer singular values
    assert all(saves(r, 256, 64) for r in ranks.values())
    assert rank_for_energy(np.array([3.0, 2.0, 1.0]), 0.9, multiple=1) == 2
    assert rank_for_energy(np.array([3.0, 2.0, 1.0]), 0.9) == 3 and rank_for_energy(np.array([1.0]), 0.5) == 1
    spectrum = np.linspace(2, 1, 40)
    for energy in (0.3, 0.5, 0.8):
        exact = rank_for_energy(spectrum, energy, multiple=1)
        assert rank_for_energy(spectrum, energy) == min(40, -(-exact // 16) * 16) >= exact


def test_budget_on_minilm_ffn():
    from tests.models.zoo import build

    model, inputs = build("minilm", small=True)
    ffn = ("model.encoder.layer.?.intermediate.dense", "model.encoder.layer.?.output.dense")
    small, res = low_rank(model, budget=0.5, layers=ffn, return_result=True)
    assert len(res.layers) == 12 and res.params_after <= 0.5 * res.params_before
    assert "attention" not in " ".join(res.layers)
    g_small = from_torch(small, inputs)
    g = from_torch(model, inputs)
    assert graph_params(g) - graph_params(g_small) >= 0.49 * 12 * 384 * 1536


def test_low_rank_settings():
    with pytest.raises(CompressionError, match="one of"):
        low_rank(torch.nn.Linear(4, 4), energy=0.5, budget=0.5)
    with pytest.raises(CompressionError, match="no nn.Linear"):
        low_rank(torch.nn.Linear(4, 4), energy=0.5, layers=["nothing"])
