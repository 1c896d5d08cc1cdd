"""Shared checks for the fusion-pass tests: Before/Expected IR, numerics before vs after, compiled kernels."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from edgeopt import testing
from edgeopt.api import compile_graph
from edgeopt.ir import Graph, interpret, parse_graph, print_graph, verify
from edgeopt.ir.fused import is_fused
from edgeopt.pattern import FusionRule, Op, fuse
from edgeopt.pipeline import Pass, get_pass
from edgeopt.testing import random_inputs

RTOL = 1e-5


class FuseConvResidual(Pass):
    """Test-only: a conv with every elementwise op after it, its residual add included. ``fuse_epilogue`` leaves
    a conv's residual add to ``fuse_elementwise`` (faster here), but a user's rule may fuse it: it must lower."""

    name = "test_fuse_conv_residual"
    RULE = FusionRule("conv_residual", anchor=Op("conv2d"), epilogue=Op(kind="elementwise"))

    def run(self, g: Graph) -> dict:
        return {"fused_groups": len(fuse(g, self.RULE))}


CONV_RESIDUAL_FUSION = FuseConvResidual()


def assert_same_numerics(before: Graph, after: Graph, seed: int = 0) -> None:
    """A fused body runs the same references in the same order: the results are identical."""
    testing.assert_same_numerics(before, after, seed, exact=True)


def assert_close(expected: np.ndarray, got: np.ndarray, rtol: float = RTOL) -> None:
    testing.assert_close(got, expected, rtol)


def fused_nodes(g: Graph) -> list:
    return [n for n in g.nodes if is_fused(n)]


def body_ops(g: Graph) -> list[list[str]]:
    return [[m.op for m in n.body.nodes] for n in fused_nodes(g)]


def harness(name: str, default_consts: dict | None = None) -> SimpleNamespace:
    """run_pass, assert_rewrites and assert_compiled_matches bound to the pass ``name``."""

    def run_pass(g: Graph) -> dict:
        stats = get_pass(name).run(g)
        verify(g)
        return stats

    def assert_rewrites(before: str, expected: str, consts: dict | None = None):
        """Parse Before, run the pass on a clone, compare its printed text with the printed Expected."""
        consts = default_consts if consts is None else consts
        g = parse_graph(before, consts)
        verify(g)
        after = g.clone()
        stats = run_pass(after)
        assert print_graph(after) == print_graph(parse_graph(expected, consts))
        return g, after, stats

    def assert_compiled_matches(g: Graph, seed: int = 0, passes=None):
        """Compile with only this pass (or ``passes``); the kernels must match the interpreter on ``g``."""
        compiled = compile_graph(g.clone(), "host", passes=list(passes) if passes else [name])
        xs = random_inputs(g, seed)
        out = compiled(*xs)
        out = list(out) if isinstance(out, tuple) else [out]
        for e, o in zip(interpret(g, xs), out):
            assert_close(e, o)
        return compiled

    return SimpleNamespace(run_pass=run_pass, assert_rewrites=assert_rewrites,
                           assert_compiled_matches=assert_compiled_matches)
