"""Checks for pass authors: run a pass on a small IR graph and assert what it must do.

    from edgeopt.testing import check_rewrite

    def test_recognize_silu():
        check_rewrite(RecognizeSilu(), '''
            graph main(%x: f32[2,4]) {
              %s: f32[2,4] = sigmoid(%x)
              %y: f32[2,4] = mul(%x, %s)
              return %y
            }''', expected='''
            graph main(%x: f32[2,4]) {
              %y: f32[2,4] = silu(%x)
              return %y
            }''', stats={"rewritten": 1})

``check_rewrite`` runs the pass through the pass manager (its ``requires`` are checked and the IR is verified
after it), compares the printed result with ``expected`` (spacing and value names aside: values are compared up
to a consistent renaming; ``names=True`` compares names too; ``values=False`` ignores the values of inline
constants, for folds checked by numerics instead), the pass's counters with ``stats``, and the outputs of
the reference interpreter before and after on random inputs (``numerics="exact"``, ``"close"`` within ``rtol``
of the outputs' scale, or None). The pieces are public too: ``run_pass``, ``random_inputs``,
``assert_same_numerics``, ``assert_close``, ``same_structure``.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable

import numpy as np

from .ir import Graph, interpret, parse_graph, print_graph
from .pipeline import Pass, get_pass, run_passes

_INLINE_VALUES = re.compile(r"^(\s*const %\S+: \S+) = .*$", re.MULTILINE)
_VALUE_NAME = re.compile(r"%[A-Za-z0-9_.]+")


def run_pass(p: Pass | str | Callable[[Graph], dict], g: Graph, target=None) -> dict:
    """Run one pass (an object, a registered name, or a function ``g -> stats``) on ``g`` in place through the pass
    manager (requirements checked, IR verified after it); returns its counters."""
    if isinstance(p, str):
        p = get_pass(p)
    elif not isinstance(p, Pass):
        p = _FunctionPass(p)
    return run_passes(g, [p], target)[0]["stats"]


class _FunctionPass(Pass):
    def __init__(self, fn):
        self.fn, self.name = fn, getattr(fn, "__name__", "function")

    def run(self, g):
        return self.fn(g)


def random_inputs(g: Graph, seed: int = 0) -> list[np.ndarray]:
    """One array per graph input: standard normal floats, integers in [-4, 4], random booleans."""
    rng = np.random.default_rng(seed)
    out = []
    for v in g.inputs:
        t = v.type
        if t.dtype == "bool":
            out.append(rng.random(t.shape) < 0.5)
        elif np.issubdtype(t.np_dtype, np.integer):
            lo = 0 if np.issubdtype(t.np_dtype, np.unsignedinteger) else -4
            out.append(rng.integers(lo, 5, t.shape).astype(t.np_dtype))
        else:
            out.append(rng.standard_normal(t.shape).astype(t.np_dtype))
    return out


def assert_close(got: np.ndarray, want: np.ndarray, rtol: float = 1e-5) -> None:
    """Same shape and dtype, and ``|got - want| <= rtol * (|want| + max(1, max |want|))`` (NaN only where
    ``want`` is NaN): floating-point error relative to the tensor's scale."""
    assert got.shape == want.shape, f"shape {got.shape}, expected {want.shape}"
    assert got.dtype == want.dtype, f"dtype {got.dtype}, expected {want.dtype}"
    g, w = got.astype(np.float64), want.astype(np.float64)
    nan = np.isnan(w)
    assert (np.isnan(g) == nan).all(), "NaN where the reference has none, or none where it has"
    g, w = g[~nan], w[~nan]
    if not w.size:
        return
    inf = np.isinf(w)
    assert (g[inf] == w[inf]).all(), "an infinity differs"
    g, w = g[~inf], w[~inf]
    if not w.size:
        return
    scale = max(1.0, float(np.abs(w).max()))
    err = np.abs(g - w)
    assert (err <= rtol * (np.abs(w) + scale)).all(), f"max abs error {err.max():.3g} at scale {scale:.3g}"


def assert_same_numerics(before: Graph, after: Graph, seed: int = 0, *, exact: bool = False,
                         rtol: float = 1e-5) -> None:
    """The reference interpreter gives ``after`` the same outputs as ``before`` on random inputs: bit for bit
    (``exact``), or within ``rtol`` (``assert_close``)."""
    xs = random_inputs(before, seed)
    ys_before, ys_after = interpret(before, xs), interpret(after, xs)
    assert len(ys_before) == len(ys_after), f"{len(ys_after)} outputs, expected {len(ys_before)}"
    for i, (a, b) in enumerate(zip(ys_before, ys_after)):
        assert a.shape == b.shape and a.dtype == b.dtype, f"output {i}: {b.dtype}{list(b.shape)}, " \
                                                          f"expected {a.dtype}{list(a.shape)}"
        if exact:
            np.testing.assert_array_equal(b, a, err_msg=f"output {i}")
        else:
            assert_close(b, a, rtol)


def structure(g: Graph | str, values: bool = True, names: bool = False) -> str:
    """The printed graph, one stripped line each (blank lines dropped), its values renamed ``%0``, ``%1``... in
    order of appearance (``names=True`` keeps the names); ``values=False``: without inline constants' values."""
    text = print_graph(g) if isinstance(g, Graph) else str(g)
    if not values:
        text = _INLINE_VALUES.sub(r"\1", text)
    if not names:
        seen: dict[str, str] = {}
        text = _VALUE_NAME.sub(lambda m: seen.setdefault(m.group(0), f"%{len(seen)}"), text)
    return "\n".join(line.strip() for line in text.strip().splitlines() if line.strip())


def same_structure(g: Graph, expected: str, values: bool = True, names: bool = False) -> None:
    """Assert that ``g`` prints as ``expected`` (IR text; spacing and, unless ``names``, value names aside), with a
    diff when it does not."""
    got, want = structure(g, values, names), structure(expected, values, names)
    if got != want:
        diff = "\n".join(difflib.unified_diff(want.splitlines(), got.splitlines(), "expected", "got", lineterm=""))
        raise AssertionError(f"the rewritten graph differs from the expected one:\n{diff}\n"
                             f"the rewritten graph, as printed:\n{print_graph(g)}")


def check_rewrite(p: Pass | str | Callable[[Graph], dict], before: Graph | str, expected: str | None = None, *,
                  constants: dict | None = None, stats: dict | None = None, numerics: str | None = "close",
                  rtol: float = 1e-5, values: bool = True, names: bool = False, target=None) -> Graph:
    """Run pass ``p`` on ``before`` (IR text, its non-inline constants from ``constants``, or a Graph, which is not
    modified) and check the result: verified IR, ``expected`` text, the counters ``stats``, and ``numerics``
    (``"exact"``, ``"close"`` or None) against ``before`` in the reference interpreter. Returns the new graph."""
    if numerics not in ("exact", "close", None):
        raise ValueError(f"numerics must be 'exact', 'close' or None, got {numerics!r}")
    original = parse_graph(before, constants) if isinstance(before, str) else before
    g = original.clone()
    got_stats = run_pass(p, g, target)
    if expected is not None:
        same_structure(g, expected, values, names)
    if stats is not None:
        assert got_stats == stats, f"pass counters {got_stats}, expected {stats}"
    if numerics is not None:
        assert_same_numerics(original, g, exact=numerics == "exact", rtol=rtol)
    return g
