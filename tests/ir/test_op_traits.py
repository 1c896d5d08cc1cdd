"""Op traits live on OpDef: every op documented, traits consistent with kinds, and passes read the traits."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from edgeopt.ir import parse_graph
from edgeopt.ir.op_reference import markdown
from edgeopt.ir.registry import _REGISTRY, OpDef, all_ops, register
from edgeopt.pipeline import get_pass
from edgeopt.testing import check_rewrite

OPS = all_ops()
ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", sorted(OPS))
def test_every_op_has_a_doc_and_consistent_traits(name):
    op = OPS[name]
    assert op.doc.strip(), f"{name} has no doc string"
    assert op.fp16 in ("f16", "f32")
    if op.view:
        assert op.kind == "injective" and op.num_inputs == (1, 1)
    if op.row_reduction:
        assert op.kind == "reduction"
    if op.cheap:
        assert op.kind in ("elementwise", "injective")
    if op.pointwise:
        assert op.kind == "elementwise"
    if op.blocked_layout:
        assert "layout" in op.attrs


def test_traits_have_safe_defaults_for_a_new_op():
    try:
        op = register(OpDef("test_trait_defaults", "elementwise", lambda t, a: [t[0]], lambda xs, a: [xs[0]], doc="x"))
        assert (op.view, op.cheap, op.fp16, op.pointwise, op.blocked_layout, op.row_reduction) == \
            (False, False, "f16", True, False, False)
        with pytest.raises(ValueError, match="fp16 must be"):
            register(OpDef("test_trait_bad", "elementwise", lambda t, a: [t[0]], lambda xs, a: [xs[0]], fp16="half"))
    finally:
        _REGISTRY.pop("test_trait_defaults", None)


def test_the_op_reference_page_is_current():
    """docs/ops.md is written from the registry; regenerate it with the command it names."""
    assert (ROOT / "docs" / "ops.md").read_text() == markdown(), \
        "docs/ops.md is stale: run .venv/bin/python -m edgeopt.ir.op_reference > docs/ops.md"


def test_no_pass_keeps_a_list_of_op_traits_of_its_own():
    """The lists the review found (KEEP_F32, CHEAP, CHEAP_INJECTIVE, REDUCTIONS, POOLS, VIEWS...) are traits now."""
    pattern = re.compile(r"^(KEEP_F32|CHEAP|CHEAP_INJECTIVE|REDUCTIONS|POOLS|_NOT_POINTWISE|VIEWS|VIEW_OPS)\s*=",
                         re.MULTILINE)
    files = [*(ROOT / "passes").glob("*.py"), ROOT / "edgeopt" / "lower" / "build.py"]
    assert [f.name for f in files if pattern.search(f.read_text())] == []


def test_a_trait_decides_what_a_pass_does():
    """Flipping ``cheap`` on an op changes fuse_reductions' prologue: the pass reads the trait, not a list."""
    text = """
    graph main(%x: f32[2,8]) {
      %a: f32[2,8] = abs(%x)
      %s: f32[2,8] = softmax(%a) {"axis": -1}
      %n: f32[2,8] = neg(%s)
      return %n
    }"""
    g = check_rewrite(get_pass("fuse_reductions"), text, numerics="exact")
    assert [n.op for n in g.nodes] == ["abs", "fused"]
    OPS["abs"].cheap = True
    try:
        g = check_rewrite(get_pass("fuse_reductions"), parse_graph(text), numerics="exact")
        assert [n.op for n in g.nodes] == ["fused"]
        assert [n.op for n in g.nodes[0].body.nodes] == ["abs", "softmax", "neg"]
    finally:
        OPS["abs"].cheap = False
