"""``edgeopt.explore``: one compile per setting, accuracy / latency / size measured, the Pareto front marked, a
failed setting reported, the picture written (and it opens)."""

from __future__ import annotations

import numpy as np
import torch

import edgeopt
from edgeopt.compress.explore import ExploreResult, _mark_front


def test_front_marking():
    rows = [{"name": "a", "accuracy": 0.9, "latency_ms": 1.0, "size_bytes": 100},
            {"name": "b", "accuracy": 0.8, "latency_ms": 0.5, "size_bytes": 100},
            {"name": "c", "accuracy": 0.8, "latency_ms": 1.0, "size_bytes": 100},   # b beats it
            {"name": "d", "accuracy": 0.7, "latency_ms": 2.0, "size_bytes": 10},
            {"name": "e", "error": "TargetError: no"}]
    _mark_front(rows)
    assert [r["name"] for r in rows if r.get("pareto")] == ["a", "b", "d"]
    text = str(ExploreResult(rows))
    assert "e" in text and "failed: TargetError" in text


def test_explore_small_cnn(tmp_path):
    from PIL import Image

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 32, 3, padding=1), torch.nn.ReLU(),
                                torch.nn.Conv2d(32, 32, 3, padding=1), torch.nn.ReLU(),
                                torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(32, 4)).eval()
    data = [torch.randn(1, 3, 8, 8) for _ in range(12)]
    configs = [{"name": "fp32"}, {"name": "int8", "quantize": "int8"},
               {"name": "prune 50%", "compress": edgeopt.Compress(prune=0.5)},
               {"name": "bad", "quantize": "int3"}]
    result = edgeopt.explore(model, (data[0],), data, configs=configs, runs=3)
    by = {r["name"]: r for r in result.rows}
    assert by["fp32"]["accuracy"] == 1.0 and "error" in by["bad"]
    assert by["prune 50%"]["size_bytes"] < by["fp32"]["size_bytes"]
    assert by["int8"]["weight_bytes"] < by["fp32"]["weight_bytes"]
    from edgeopt.compress.explore import _dominates

    ok = [r for r in result.rows if "error" not in r]
    assert result.front() and all(r["pareto"] != any(_dominates(o, r) for o in ok) for r in ok)
    cos = edgeopt.explore(model, (data[0],), data, metric="cosine", configs=configs[:1], runs=2)
    assert cos.rows[0]["accuracy"] > 0.9999
    mine = edgeopt.explore(model, (data[0],), data, configs=configs[:1], runs=2,
                           metric=lambda run, d: float(np.mean([run(*b)[0].argmax() == 0 for b in d])))
    assert 0 <= mine.rows[0]["accuracy"] <= 1
    path = result.plot(str(tmp_path / "pareto.png"))
    with Image.open(path) as im:
        assert im.format == "PNG" and im.size[0] > 500
