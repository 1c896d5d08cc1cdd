"""edgeopt.testing: the checks pass authors use must catch what they claim to catch."""

from __future__ import annotations

import importlib.util
import os

import numpy as np
import pytest

from edgeopt.errors import PassError
from edgeopt.ir import parse_graph
from edgeopt.pattern import Any, Const, Op, rewrite
from edgeopt.pipeline import Pass
from edgeopt.testing import assert_close, check_rewrite, random_inputs

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs", "examples")
SWISH_GRAPH = """
graph main(%x: f32[2,4]) {
  %s: f32[2,4] = sigmoid(%x)
  %y: f32[2,4] = mul(%x, %s)
  return %y
}"""
SILU_GRAPH = """
graph main(%x: f32[2,4]) {
    %y: f32[2,4] = silu(%x)
    return %y
}"""
SWISH = Op("mul", Any("x"), Op("sigmoid", Any("x")), commutative=True)


def _silu(g):
    return {"rewritten": rewrite(g, SWISH, lambda m, b: b.add("silu", [m["x"]]))}


def _wrong(g):  # a miscompile that verifies: x * sigmoid(x) -> sigmoid(x)
    return {"rewritten": rewrite(g, SWISH, lambda m, b: b.add("sigmoid", [m["x"]]))}


def test_check_rewrite_passes_a_correct_pass_and_leaves_the_input_alone():
    before = parse_graph(SWISH_GRAPH)
    after = check_rewrite(_silu, before, SILU_GRAPH, stats={"rewritten": 1}, numerics="close")
    assert [n.op for n in after.nodes] == ["silu"] and [n.op for n in before.nodes] == ["sigmoid", "mul"]


def test_check_rewrite_catches_wrong_structure_stats_and_numerics():
    with pytest.raises(AssertionError, match=r"-%1: f32\[2,4\] = silu\(%0\)\n\+%1: f32\[2,4\] = sigmoid\(%0\)"):
        check_rewrite(_wrong, SWISH_GRAPH, SILU_GRAPH)
    with pytest.raises(AssertionError, match=r"-return %y\n\+%silu: f32\[2,4\] = silu\(%x\)"):
        check_rewrite(_silu, SWISH_GRAPH, SILU_GRAPH, names=True)  # names compared only when asked
    with pytest.raises(AssertionError, match=r"pass counters \{'rewritten': 1\}, expected \{'rewritten': 2\}"):
        check_rewrite(_silu, SWISH_GRAPH, stats={"rewritten": 2})
    with pytest.raises(AssertionError, match="max abs error"):
        check_rewrite(_wrong, SWISH_GRAPH)
    check_rewrite(_wrong, SWISH_GRAPH, numerics=None)  # asked not to look: it does not
    with pytest.raises(ValueError, match="numerics must be"):
        check_rewrite(_silu, SWISH_GRAPH, numerics="roughly")


def test_check_rewrite_runs_through_the_pass_manager():
    class NeedsMagic(Pass):
        name, requires = "testing_needs_magic", ("magic",)

        def run(self, g):
            return {}

    with pytest.raises(PassError, match="requires \\['magic'\\]"):
        check_rewrite(NeedsMagic(), SWISH_GRAPH)

    def breaks_types(g):
        g.nodes[-1].outputs[0].type = g.nodes[-1].outputs[0].type.with_shape((4, 2))
        return {}

    with pytest.raises(PassError, match="left the IR invalid"):
        check_rewrite(breaks_types, SWISH_GRAPH)


def test_exact_numerics_and_values_free_structure():
    folded = """
    graph main(%x: f32[2]) {
      const %c: f32[2] = [0.1, 0.2]
      %y: f32[2] = add(%x, %c)
      return %y
    }"""

    def fold(g):
        c = g.const_values["c"]
        g.constants["c"] = (g.constants["c"].astype(np.float64) + 1e-7).astype(np.float32)
        assert c is g.const_values["c"]
        return {}

    with pytest.raises(AssertionError):
        check_rewrite(fold, folded, numerics="exact")
    check_rewrite(fold, folded, folded.replace("0.1", "9.9"), numerics="close", values=False)


def test_helpers_cover_dtypes_and_special_values():
    g = parse_graph("graph main(%a: f32[3], %b: i32[3], %c: bool[3], %d: u8[3]) {\n return %a\n}")
    xs = random_inputs(g, seed=1)
    assert [x.dtype for x in xs] == [np.float32, np.int32, np.bool_, np.uint8]
    assert xs[3].min() >= 0 and xs[1].min() >= -4
    nan = np.array([np.nan, np.inf, 1.0], np.float32)
    assert_close(nan.copy(), nan)
    with pytest.raises(AssertionError, match="NaN"):
        assert_close(np.array([0.0, np.inf, 1.0], np.float32), nan)
    with pytest.raises(AssertionError, match="dtype"):
        assert_close(nan.astype(np.float64), nan)


def _load(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(EXAMPLES, f"{name}.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_the_tutorials_new_pass_with_its_test_fits_in_30_lines():
    """docs/passes.md's promise: a new pass (a pattern with literals and an attribute) and its test, in 30 lines."""
    path = os.path.join(EXAMPLES, "hardswish_pass.py")
    assert len(open(path).read().splitlines()) <= 30
    mod = _load("hardswish_pass")
    mod.test_recognize_hardswish()
    mod.test_recognize_hardswish(add=2.0, div=5.0, rewritten=0)  # the review's trap: not hardswish, left alone
    mod.test_recognize_hardswish(add=3.0, div=5.0, rewritten=0)
    with pytest.raises(AssertionError):  # and the test in the example fails when the pass would be wrong
        mod.test_recognize_hardswish(add=2.0, div=5.0, rewritten=1)
    assert isinstance(mod.HARDSWISH.inputs[1], Const)


def test_a_pattern_that_ignores_literals_is_caught_by_the_numerics():
    """What the docs say about the trap: keyed on "any scalar", the pass rewrites x*relu6(x+2)/5 and the
    interpreter comparison fails."""
    mod = _load("hardswish_pass")
    loose = Op("div", Op("mul", mod.X, Op("clamp", Op("add", mod.X, Const(scalar=True))), commutative=True),
               Const(scalar=True))

    class Loose(mod.RecognizeHardswish):
        def run(self, g):
            return {"rewritten": rewrite(g, loose, lambda m, b: b.add("hardswish", [m["x"]]))}

    mod.RecognizeHardswish, strict = Loose, mod.RecognizeHardswish
    try:
        with pytest.raises(AssertionError, match="max abs error"):
            mod.test_recognize_hardswish(add=2.0, div=5.0, rewritten=1)
    finally:
        mod.RecognizeHardswish = strict
