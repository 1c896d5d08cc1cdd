"""The pass manager: pipeline resolution and overrides, verification after each pass, requirements,
debug dumps (EDGEOPT_DEBUG / EDGEOPT_DEBUG_DIR) and report records."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from edgeopt.errors import PassError
from edgeopt.ir import Graph, TensorType, VerificationError, parse_graph, print_graph
from edgeopt.pattern import Any, Op, PatternAfterFusionWarning, rewrite
from edgeopt.pipeline import (
    CLEANUP,
    FUSION,
    Pass,
    PassOrderWarning,
    Pipeline,
    default_pipeline,
    get_pass,
    register_pass,
    registered_passes,
    resolve,
    run_passes,
)

BUILTIN = ["dead_code_elimination", "linear_weight_layout"]  # a small explicit pipeline


def _graph() -> Graph:
    g = Graph()
    x = g.add_input("x", TensorType((2, 8), "f32"))
    w = g.add_const(np.arange(32, dtype=np.float32).reshape(4, 8), "w")
    g.add("exp", [x], name="dead")
    g.set_outputs([g.add("relu", [g.add("linear", [x, w])])])
    return g


def _names(passes) -> list[str]:
    return [p.name for p in passes]


# -- passes defined by the tests (unique names: the registry is process-wide) --------------------------------


@register_pass
class BreaksOutputType(Pass):
    name = "pm_test_breaks_output_type"

    def run(self, g):
        g.outputs[0].type = TensorType((3,), "f32")
        return {"broken": 1}


@register_pass
class Raises(Pass):
    name = "pm_test_raises"

    def run(self, g):
        raise RuntimeError("boom")


@register_pass
class NeedsMagic(Pass):
    name = "pm_test_needs_magic"
    requires = ("magic",)

    def run(self, g):
        return {"used_magic": 1}


@register_pass
class MakesMagic(Pass):
    name = "pm_test_makes_magic"
    guarantees = ("magic",)

    def run(self, g):
        return None  # no stats is allowed


@register_pass
class SpoilsMagic(Pass):
    name = "pm_test_spoils_magic"
    invalidates = ("magic",)

    def run(self, g):
        return {}


# -- resolve -------------------------------------------------------------------------------------------------


def test_default_pipeline():
    full = default_pipeline(2)
    assert _names(resolve(None, [], 2, "host")) == full
    assert set(BUILTIN) <= set(full) and set(CLEANUP) <= set(full)
    assert full[-len(FUSION) - 1 : -1] == FUSION and full[-1] == "reorder_for_memory"  # fusion, then the order
    assert full.index("conv_weight_layout") < full.index("fuse_epilogue")
    assert full.index("fold_batch_norm") < full.index("fuse_epilogue")  # folds first, then fusion
    assert full.index("linear_weight_layout") < full.index("fuse_epilogue")  # bodies are not re-laid out
    assert _names(resolve(None, [], 1, "host")) == default_pipeline(1) == CLEANUP
    assert resolve(None, [], 0, "host") == [] and default_pipeline(0) == []
    with pytest.raises(ValueError, match="opt_level"):
        default_pipeline(7)


def test_disable_removes_a_pass():
    full = default_pipeline(2)
    assert _names(resolve(None, FUSION, 2, "host")) == [p for p in full if p not in FUSION]
    without_layout = [p for p in full if p != "linear_weight_layout"]
    assert _names(resolve(None, ["linear_weight_layout"], 2, "host")) == without_layout
    assert resolve(None, full, 2, "host") == []
    # disabling a known pass that is not in the pipeline is fine
    assert _names(resolve(None, ["linear_weight_layout"], 1, "host")) == CLEANUP


def test_explicit_passes_keep_their_order_and_ignore_opt_level():
    assert _names(resolve(BUILTIN[::-1], [], 0, "host")) == BUILTIN[::-1]
    assert _names(resolve(BUILTIN, ["dead_code_elimination"], 2, "host")) == ["linear_weight_layout"]
    mine = MakesMagic()
    resolved = resolve([mine, "pm_test_needs_magic"], [], 2, "host")
    assert resolved[0] is mine and isinstance(resolved[1], NeedsMagic)


def test_unknown_pass_in_passes_lists_known_passes():
    with pytest.raises(PassError) as e:
        resolve(["nope"], [], 2, "host")
    msg = str(e.value)
    assert "unknown pass 'nope'" in msg
    for name in BUILTIN + ["pm_test_needs_magic"]:
        assert name in msg


def test_unknown_pass_in_disable_raises():
    with pytest.raises(PassError, match=r"unknown pass.*'nope'"):
        resolve(None, ["nope"], 2, "host")
    with pytest.raises(PassError, match="nope"):
        resolve(None, ["dead_code_elimination", "nope"], 2, "host")


def test_unknown_pass_in_disable_lists_known_passes():
    with pytest.raises(PassError) as e:
        resolve(None, ["nope"], 2, "host")
    for name in BUILTIN:
        assert name in str(e.value)


def test_registry():
    assert set(BUILTIN) <= set(registered_passes())
    assert "pm_test_breaks_output_type" in registered_passes()
    assert registered_passes() == sorted(registered_passes())
    a, b = get_pass("dead_code_elimination"), get_pass("dead_code_elimination")
    assert a is not b and type(a) is type(b)
    assert register_pass(NeedsMagic) is NeedsMagic  # registering the same class again is harmless


def test_register_rejects_nameless_and_duplicate_passes():
    class Nameless(Pass):
        pass

    class Impostor(Pass):
        name = "dead_code_elimination"

    with pytest.raises(ValueError, match="has no name"):
        register_pass(Nameless)
    with pytest.raises(ValueError, match="registered twice"):
        register_pass(Impostor)
    assert type(get_pass("dead_code_elimination")).__name__ == "DeadCodeElimination"


# -- run_passes ----------------------------------------------------------------------------------------------


def test_records_have_name_seconds_stats():
    g = _graph()
    records = run_passes(g, resolve(BUILTIN, [], 2, "host"))
    assert [r["name"] for r in records] == BUILTIN
    for r in records:
        assert set(r) == {"name", "seconds", "stats"}
        assert isinstance(r["seconds"], float) and r["seconds"] >= 0
    assert records[0]["stats"] == {"removed_nodes": 1, "removed_constants": 0}
    assert records[1]["stats"] == {"rewritten": 1, "packed": 0}
    assert [n.op for n in g.nodes] == ["linear", "relu"]
    assert g.nodes[0].attrs == {"weight_layout": "io"}


def test_pass_returning_none_records_empty_stats():
    records = run_passes(_graph(), [MakesMagic()])
    assert records == [{"name": "pm_test_makes_magic", "seconds": records[0]["seconds"], "stats": {}}]


def test_run_passes_with_no_passes():
    g = _graph()
    text = print_graph(g)
    assert run_passes(g, []) == []
    assert print_graph(g) == text


def test_pass_that_breaks_the_ir_is_named():
    with pytest.raises(PassError) as e:
        run_passes(_graph(), resolve(["dead_code_elimination", "pm_test_breaks_output_type"], [], 2, "host"))
    msg = str(e.value)
    assert msg.startswith("pass 'pm_test_breaks_output_type' left the IR invalid:")
    assert "output %relu typed f32[3], schema infers f32[2,4]" in msg
    assert "dead_code_elimination" not in msg
    assert isinstance(e.value.__cause__, VerificationError)


def test_pass_that_raises_is_named():
    with pytest.raises(PassError, match=r"pass 'pm_test_raises' failed: RuntimeError: boom") as e:
        run_passes(_graph(), [get_pass("pm_test_raises")])
    assert isinstance(e.value.__cause__, RuntimeError)


def test_unmet_requirement():
    msg = r"pass 'pm_test_needs_magic' requires \['magic'\], which no earlier pass guarantees"
    with pytest.raises(PassError, match=msg):
        run_passes(_graph(), resolve(["pm_test_needs_magic"], [], 2, "host"))


def test_requirement_met_by_an_earlier_pass_and_invalidated():
    names = ["pm_test_makes_magic", "dead_code_elimination", "pm_test_needs_magic"]
    records = run_passes(_graph(), resolve(names, [], 2, "host"))
    assert [r["name"] for r in records] == names
    assert records[2]["stats"] == {"used_magic": 1}
    spoiled = ["pm_test_makes_magic", "pm_test_spoils_magic", "pm_test_needs_magic"]
    with pytest.warns(PassOrderWarning, match="'pm_test_needs_magic' requires 'magic', which pass "
                                              "'pm_test_spoils_magic' invalidated"):
        records = run_passes(_graph(), resolve(spoiled, [], 2, "host"))
    assert records[2]["stats"] == {"used_magic": 1}  # it still runs: an order problem is a warning


# -- debug dumps ---------------------------------------------------------------------------------------------


@pytest.fixture
def no_debug_env(monkeypatch):
    monkeypatch.delenv("EDGEOPT_DEBUG", raising=False)
    monkeypatch.delenv("EDGEOPT_DEBUG_DIR", raising=False)
    return monkeypatch


def test_no_dumps_by_default(no_debug_env, capsys):
    run_passes(_graph(), resolve(None, [], 2, "host"))
    no_debug_env.setenv("EDGEOPT_DEBUG", "0")
    run_passes(_graph(), resolve(None, [], 2, "host"))
    assert capsys.readouterr() == ("", "")


def test_debug_prints_ir_after_each_pass(no_debug_env, capsys):
    no_debug_env.setenv("EDGEOPT_DEBUG", "1")
    g = _graph()
    run_passes(g, resolve(BUILTIN, [], 2, "host"))
    out, err = capsys.readouterr()
    assert out == ""
    first, second = err.split("// ----- IR after pass 1: linear_weight_layout -----\n")
    assert first.startswith("// ----- IR after pass 0: dead_code_elimination -----\n")
    assert "exp(" not in first and '"weight_layout": "oi"' in first  # after DCE, before the layout pass
    assert second.rstrip("\n") == print_graph(g).rstrip("\n")
    assert '"weight_layout": "io"' in second


def test_debug_dir_writes_one_file_per_pass(no_debug_env, capsys, tmp_path):
    out_dir = tmp_path / "dumps" / "nested"
    no_debug_env.setenv("EDGEOPT_DEBUG_DIR", str(out_dir))
    g = _graph()
    w = g.constants["w"]
    run_passes(g, resolve(BUILTIN, [], 2, "host"))
    files = sorted(p.name for p in out_dir.iterdir())
    assert files == ["00_dead_code_elimination.ir", "01_linear_weight_layout.ir"]
    assert capsys.readouterr().err == ""
    after_dce = parse_graph((out_dir / "00_dead_code_elimination.ir").read_text(), {"w": w})
    assert [n.op for n in after_dce.nodes] == ["linear", "relu"]
    assert (out_dir / "01_linear_weight_layout.ir").read_text() == print_graph(g)


def test_debug_dir_wins_over_stderr(no_debug_env, capsys, tmp_path):
    no_debug_env.setenv("EDGEOPT_DEBUG", "1")
    no_debug_env.setenv("EDGEOPT_DEBUG_DIR", str(tmp_path))
    run_passes(_graph(), resolve(["dead_code_elimination"], [], 2, "host"))
    assert [p.name for p in tmp_path.iterdir()] == ["00_dead_code_elimination.ir"]
    assert capsys.readouterr().err == ""


# -- Pipeline: editing by name; pass order as a contract -------------------------------------------------------


def test_pipeline_inserts_before_or_after_a_named_pass():
    p = Pipeline.default(2, "host")
    assert p.names == default_pipeline(2) and len(p) == len(default_pipeline(2))
    mine = MakesMagic()
    p.insert(mine, before="fuse_epilogue")
    assert p.names[p.names.index("fuse_epilogue") - 1] == "pm_test_makes_magic"
    p.insert("pm_test_needs_magic", after=["fuse_epilogue", "fuse_elementwise"])  # after the last one present
    assert p.names[p.names.index("fuse_elementwise") + 1] == "pm_test_needs_magic"
    p.insert("pm_test_spoils_magic", after="dead_code_elimination")  # twice in the pipeline: after the second
    assert p.names.index("pm_test_spoils_magic") == len(p.names) - p.names[::-1].index("dead_code_elimination")
    assert "pm_test_spoils_magic" in p and mine in p
    p.insert("pm_test_needs_magic", after=mine)  # a Pass object names its place too
    assert p.names[p.names.index("pm_test_makes_magic") + 1] == "pm_test_needs_magic"
    p.remove("pm_test_spoils_magic").remove("winograd_conv")
    assert "winograd_conv" not in p.names and "pm_test_spoils_magic" not in p
    resolved = resolve(p, [], 2, "host")
    assert [q.name for q in resolved] == p.names and resolved[p.names.index("pm_test_makes_magic")] is mine


@pytest.mark.parametrize("call, msg", [
    (lambda p: p.insert("pm_test_makes_magic", before="no_such_pass"), r"none of \['no_such_pass'\]"),
    (lambda p: p.insert("pm_test_makes_magic"), "exactly one of before= and after="),
    (lambda p: p.insert("pm_test_makes_magic", before="fuse_epilogue", after="fuse_epilogue"), "exactly one"),
    (lambda p: p.insert(42, before="fuse_epilogue"), "pass names or Pass objects"),
    (lambda p: p.remove("no_such_pass"), "'no_such_pass' is not in the pipeline"),
])
def test_pipeline_edits_that_cannot_apply_say_why(call, msg):
    with pytest.raises(PassError, match=msg):
        call(Pipeline.default(2, "host"))


def test_targets_edit_the_generic_pipeline():
    cpu, gpu = default_pipeline(2, "arm"), default_pipeline(2, "cuda")
    assert "conv_weight_layout" in cpu and "conv_weight_layout" not in gpu
    assert [q for q in cpu if q in gpu] == gpu  # the GPU pipeline is the CPU one without the layout passes
    from edgeopt.targets import get_target

    assert default_pipeline(2, get_target("host")) == default_pipeline(2, "host")


FUSED_LATE = """
graph main(%x: f32[2,4]) {
  %s: f32[2,4] = sigmoid(%x)
  %y: f32[2,4] = mul(%x, %s)
  return %y
}"""


SWISH = Op("mul", Any("x"), Op("sigmoid", Any("x")), commutative=True)


def test_pattern_pass_after_fusion_warns_by_its_contract():
    class Declared(Pass):
        name, requires = "pm_test_silu", ("unfused",)

        def run(self, g):
            return {"rewritten": rewrite(g, SWISH, lambda m, b: b.add("silu", [m["x"]]))}

    g = parse_graph(FUSED_LATE)
    with pytest.warns(PatternAfterFusionWarning), \
            pytest.warns(PassOrderWarning, match="'pm_test_silu' requires 'unfused', which pass 'fuse_elementwise'"):
        records = run_passes(g, [get_pass("fuse_elementwise"), Declared()])
    assert records[1]["stats"] == {"rewritten": 0}
    # before fusion: no warning, and it rewrites
    g = parse_graph(FUSED_LATE)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        records = run_passes(g, [Declared(), get_pass("fuse_elementwise")])
    assert records[0]["stats"] == {"rewritten": 1} and [n.op for n in g.nodes] == ["silu"]


def test_undeclared_pattern_pass_after_fusion_warns_from_its_rewrite():
    g = parse_graph(FUSED_LATE)
    run_passes(g, [get_pass("fuse_elementwise")])
    with pytest.warns(PatternAfterFusionWarning, match="matches inside its fused kernels"):
        assert rewrite(g, SWISH, lambda m, b: b.add("silu", [m["x"]])) == 0
    with warnings.catch_warnings():  # a pattern that is nowhere, fused or not: silent
        warnings.simplefilter("error")
        assert rewrite(g, Op("tanh", Any("x")), lambda m, b: None) == 0


def test_a_graph_fused_before_the_pipeline_warns_instead_of_failing():
    g = parse_graph(FUSED_LATE)
    run_passes(g, [get_pass("fuse_elementwise")])
    with pytest.warns(PassOrderWarning, match="an earlier compile"):
        run_passes(g, [get_pass("fold_affine")])
