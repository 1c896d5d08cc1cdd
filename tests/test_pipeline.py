"""The pass manager: pipelines, overrides, verification after each pass, debug dumps, report records."""

from __future__ import annotations

import numpy as np
import pytest

from edgeopt.errors import PassError
from edgeopt.ir import Graph, TensorType
from edgeopt.pipeline import Pass, default_pipeline, register_pass, resolve, run_passes


def _graph():
    g = Graph()
    x = g.add_input("x", TensorType((2, 8), "f32"))
    w = g.add_const(np.ones((4, 8), np.float32), "w")
    g.add("exp", [x])  # dead
    g.set_outputs([g.add("linear", [x, w])])
    return g


@register_pass
class BreaksTypes(Pass):
    name = "test_breaks_types"

    def run(self, g):
        g.nodes[-1].outputs[0].type = TensorType((3,), "f32")
        return {}


@register_pass
class NeedsMagic(Pass):
    name = "test_needs_magic"
    requires = ("magic",)

    def run(self, g):
        return {}


def test_default_pipeline_and_overrides():
    assert [p.name for p in resolve(None, [], 2, "host")] == default_pipeline(2)
    assert [p.name for p in resolve(None, ["linear_weight_layout"], 2, "host")] == ["dead_code_elimination"]
    assert resolve(None, [], 0, "host") == []
    assert [p.name for p in resolve(["linear_weight_layout"], [], 2, "host")] == ["linear_weight_layout"]
    with pytest.raises(PassError, match="unknown pass 'nope'.*dead_code_elimination"):
        resolve(["nope"], [], 2, "host")
    with pytest.raises(PassError, match="unknown pass"):
        resolve(None, ["nope"], 2, "host")


def test_records_and_verification():
    g = _graph()
    records = run_passes(g, resolve(None, [], 2, "host"))
    assert [r["name"] for r in records] == ["dead_code_elimination", "linear_weight_layout"]
    assert records[0]["stats"]["removed_nodes"] == 1 and all(r["seconds"] >= 0 for r in records)
    with pytest.raises(PassError, match="pass 'test_breaks_types' left the IR invalid"):
        run_passes(_graph(), resolve(["test_breaks_types"], [], 2, "host"))
    with pytest.raises(PassError, match="requires \\['magic'\\]"):
        run_passes(_graph(), resolve(["test_needs_magic"], [], 2, "host"))


def test_debug_dumps(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("EDGEOPT_DEBUG", "1")
    run_passes(_graph(), resolve(None, [], 2, "host"))
    err = capsys.readouterr().err
    assert "IR after pass 0: dead_code_elimination" in err and "weight_layout\": \"io\"" in err
    monkeypatch.delenv("EDGEOPT_DEBUG")
    monkeypatch.setenv("EDGEOPT_DEBUG_DIR", str(tmp_path))
    run_passes(_graph(), resolve(None, [], 2, "host"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["00_dead_code_elimination.ir", "01_linear_weight_layout.ir"]
