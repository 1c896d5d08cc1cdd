"""The accuracy budget's search (``edgeopt.quant.budget.meet_budget``), on a chain of linear layers whose
"quantization" adds a fixed error per layer: it keeps float the fewest of the noisiest layers that meet the budget,
adopts that graph, and without a budget warns, naming the noisiest layers, when the outputs collapse."""

from __future__ import annotations

import numpy as np
import pytest

from edgeopt.ir import Graph, TensorType, interpret
from edgeopt.quant import QuantConfig
from edgeopt.quant.budget import meet_budget
from edgeopt.quant.compare import mean_cosine

#: each layer's relative weight error when "quantized", 3x apart and growing along the chain, so that the noise a
#: layer reads is small beside its own and the ranking by the noise each adds is unambiguous
ERRORS = {"l0": 0.003, "l1": 0.01, "l2": 0.03, "l3": 0.1, "l4": 0.3}
NOISIEST_FIRST = ["l4", "l3", "l2", "l1", "l0"]
ROWS = 32


def chain() -> Graph:
    g = Graph("chain")
    v = g.add_input("x", TensorType((ROWS, 16), "f32"))
    rng = np.random.default_rng(0)
    for i, name in enumerate(ERRORS):
        w, _ = np.linalg.qr(rng.standard_normal((16, 16)))  # orthogonal: every layer carries the whole signal
        v = g.add("linear", [v, g.add_const(w.astype(np.float32), f"{name}_w")], {"weight_layout": "oi"}, name=name)
        g.param_names[f"{name}_w"] = f"block{i}.fc.weight"  # its module: what the warning names
    g.set_outputs([v])
    return g


def noisy(g: Graph, names: set, scale: float = 1.0) -> int:
    """``apply`` for the search: perturb the weights of the layers ``names`` (each by its own fixed noise); returns
    how many it perturbed."""
    for n in g.nodes:
        name = n.outputs[0].name
        if name in names:
            w = g.const(n.inputs[1])
            rng = np.random.default_rng(list(ERRORS).index(name) + 1)
            noise = rng.standard_normal(w.shape) * scale * ERRORS[name] * np.abs(w).mean()
            n.inputs[1] = g.add_const((w + noise).astype(np.float32), f"{name}_noisy")
    g.remove_unused_constants()
    return len(names)


def batches(k: int = 8) -> list:
    return [[np.random.default_rng(10 + i).standard_normal((ROWS, 16)).astype(np.float32)] for i in range(k)]


def score_keeping(float_graph: Graph, kept: list, cal: list) -> float:
    t = float_graph.clone()
    noisy(t, set(ERRORS) - set(kept))
    return mean_cosine([interpret(float_graph, b) for b in cal], [interpret(t, b) for b in cal])


@pytest.mark.parametrize("needed", [1, 2, 3, 4, 5])  # 4: the trial it adopts is not the last it ran
def test_keeps_float_the_fewest_noisiest_layers_that_meet_the_budget(needed):
    f, cal = chain(), batches()
    ref = [interpret(f, b) for b in cal]
    drops = [1 - score_keeping(f, NOISIEST_FIRST[:k], cal) for k in range(len(ERRORS) + 1)]
    assert all(a > b for a, b in zip(drops, drops[1:]))  # each layer kept float helps
    max_drop = (drops[needed - 1] + drops[needed]) / 2  # met with `needed` layers float, not with one fewer
    g = f.clone()
    noisy(g, set(ERRORS))
    report, applied = meet_budget(QuantConfig(max_drop=max_drop, metric="cosine"), f, g, list(ERRORS), cal, ref,
                                  noisy)
    assert report["kept_for_budget"] == NOISIEST_FIRST[:needed]
    assert applied == len(ERRORS) - needed  # what ``apply`` returned for the graph it adopted
    assert report["score"] == pytest.approx(1 - drops[needed], abs=1e-4) and report["score_float"] == 1.0
    np.testing.assert_allclose(interpret(g, cal[0])[0], interpret(_keeping(f, NOISIEST_FIRST[:needed]), cal[0])[0])


def _keeping(f: Graph, kept: list) -> Graph:
    t = f.clone()
    noisy(t, set(ERRORS) - set(kept))
    return t


def test_within_budget_nothing_changes_and_no_search_runs():
    f, cal = chain(), batches()
    g = f.clone()
    noisy(g, set(ERRORS))
    before = interpret(g, cal[0])[0]
    calls = []
    report, applied = meet_budget(QuantConfig(max_drop=0.5, metric="cosine"), f, g, list(ERRORS), cal,
                                  [interpret(f, b) for b in cal], lambda t, names: calls.append(names))
    assert applied is None and not calls and "kept_for_budget" not in report and report["score"] < 1.0
    np.testing.assert_array_equal(interpret(g, cal[0])[0], before)


def test_collapse_without_a_budget_warns_naming_the_noisiest_layers():
    f, cal = chain(), batches()
    g = f.clone()
    noisy(g, set(ERRORS), scale=4.0)  # the outputs no longer resemble the float ones
    said = (r"lost .* of cosine .* the layers adding the most error: block4.fc, block3.fc, block2.fc, block1.fc, "
            r"block0.fc \(keep them float with QuantConfig\(keep_float=\['block4.fc', 'block3.fc'\]\)")
    with pytest.warns(UserWarning, match=said) as seen:
        report, applied = meet_budget(QuantConfig(metric="cosine"), f, g, list(ERRORS), cal,
                                      [interpret(f, b) for b in cal], noisy)
    assert applied is None and report["score_float"] - report["score"] > 0.25 and len(seen) == 1


def test_layers_left_float_are_not_ranked():
    f, cal = chain(), batches()
    g = f.clone()
    quantized = set(ERRORS) - {"l4"}  # the noisiest layer stays float: it reads noise, adds none of its own
    noisy(g, quantized, scale=20.0)
    with pytest.warns(UserWarning, match=r"the layers adding the most error: block3.fc, block2.fc") as seen:
        meet_budget(QuantConfig(metric="cosine"), f, g, sorted(quantized), cal, [interpret(f, b) for b in cal], noisy)
    assert "block4.fc" not in str(seen[0].message)
