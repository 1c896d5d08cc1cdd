"""The worked example in docs/passes.md runs: custom passes registered and run through edgeopt.compile."""

from __future__ import annotations

import importlib.util
import os

EXAMPLE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs", "examples",
                       "custom_pass.py")


def test_custom_pass_example(capsys):
    spec = importlib.util.spec_from_file_location("custom_pass_example", EXAMPLE)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    compiled, err = mod.main()
    r = compiled.report
    assert r["pass_stats"]["recognize_silu"] == {"rewritten": 1}
    assert r["pass_stats"]["fuse_pool_flatten"] == {"fused_groups": 1}
    assert ["mean", "layout_transform", "reshape"] in [g["ops"] for g in r["fused_groups"]]  # the pool stays blocked
    ops = [m.op for n in compiled.graph.nodes for m in (n.body.nodes if n.body is not None else [n])]
    assert "sigmoid" not in ops and "mul" not in ops and "silu" in ops
    assert err < 1e-5
