"""constant_folding: Before/Expected IR, hit counts, growth limit, numerics (interpreter before vs after), verify."""

from __future__ import annotations

import numpy as np
import pytest

from edgeopt.ir import Graph, interpret, parse_graph, print_graph, verify
from edgeopt.testing import assert_same_numerics, run_pass

NAME = "constant_folding"
RNG = np.random.default_rng(11)
W = RNG.standard_normal((4, 8)).astype(np.float32)
W6 = RNG.standard_normal((2, 12)).astype(np.float32)
BIG = RNG.standard_normal((1, 5000)).astype(np.float32)


def assert_rewrites(before: str, expected: str, before_consts: dict | None = None,
                    expected_consts: dict | None = None) -> tuple[Graph, Graph, dict]:
    """Parse Before, run the pass on a clone, compare its printed text with the printed Expected."""
    g = parse_graph(before, before_consts)
    verify(g)
    after = g.clone()
    stats = run_pass(NAME, after)
    expected_consts = expected_consts or {}
    assert print_graph(after) == print_graph(parse_graph(expected, expected_consts))
    for k, arr in expected_consts.items():
        assert after.constants[k].dtype == arr.dtype
        np.testing.assert_array_equal(after.constants[k], arr)
        assert after.constants[k].flags.c_contiguous
    return g, after, stats


# -- the docstring example -------------------------------------------------------------------------------------

def test_transpose_of_a_weight_becomes_a_constant():
    before = """
    graph main(%x: f32[1,8]) {
      const %w: f32[4,8]
      %t: f32[8,4] = transpose(%w) {"perm": [1, 0]}
      %y: f32[1,4] = matmul(%x, %t)
      return %y
    }"""
    expected = """
    graph main(%x: f32[1,8]) {
      const %t_folded: f32[8,4]
      %y: f32[1,4] = matmul(%x, %t_folded)
      return %y
    }"""
    g, after, stats = assert_rewrites(before, expected, {"w": W}, {"t_folded": W.T})
    assert stats == {"folded": 1, "folded_zero_size": 0}
    assert "w" not in after.constants  # nothing reads the original any more
    assert_same_numerics(g, after)


# -- transposes, reshapes, casts -------------------------------------------------------------------------------

def test_reshapes_and_casts_of_constants_are_folded():
    before = """
    graph main(%x: f32[5,3], %k: i32[2,3], %z: f32[2,3]) {
      const %w: f32[2,12]
      const %mask: bool[2,3] = [[true, false, true], [false, true, false]]
      const %idx: i64[2,3] = [[1, 2, 3], [4, 5, 6]]
      %r: f32[3,8] = reshape(%w) {"shape": [3, 8]}
      %m: f32[2,3] = cast(%mask) {"dtype": "f32"}
      %i: i32[2,3] = cast(%idx) {"dtype": "i32"}
      %a: f32[5,8] = matmul(%x, %r)
      %b: i32[2,3] = add(%k, %i)
      %c: f32[2,3] = mul(%z, %m)
      return %a, %b, %c
    }"""
    expected = """
    graph main(%x: f32[5,3], %k: i32[2,3], %z: f32[2,3]) {
      const %r_folded: f32[3,8]
      const %m_folded: f32[2,3] = [[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]]
      const %i_folded: i32[2,3] = [[1, 2, 3], [4, 5, 6]]
      %a: f32[5,8] = matmul(%x, %r_folded)
      %b: i32[2,3] = add(%k, %i_folded)
      %c: f32[2,3] = mul(%z, %m_folded)
      return %a, %b, %c
    }"""
    g, after, stats = assert_rewrites(before, expected, {"w": W6}, {"r_folded": W6.reshape(3, 8)})
    assert stats == {"folded": 3, "folded_zero_size": 0}
    assert after.constants["m_folded"].dtype == np.float32
    assert after.constants["i_folded"].dtype == np.int32
    rng = np.random.default_rng(0)
    xs = [rng.standard_normal((5, 3)).astype(np.float32), rng.integers(-9, 9, (2, 3)).astype(np.int32),
          rng.standard_normal((2, 3)).astype(np.float32)]
    for a, b in zip(interpret(g, xs), interpret(after, xs)):
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-6)


def test_float_to_int_cast_truncates_like_the_reference():
    before = """
    graph main(%k: i32[4]) {
      const %c: f32[4] = [1.7, -1.7, 2.5, -0.5]
      %i: i32[4] = cast(%c) {"dtype": "i32"}
      %y: i32[4] = mul(%k, %i)
      return %y
    }"""
    expected = """
    graph main(%k: i32[4]) {
      const %i_folded: i32[4] = [1, -1, 2, 0]
      %y: i32[4] = mul(%k, %i_folded)
      return %y
    }"""
    g, after, stats = assert_rewrites(before, expected)
    assert stats == {"folded": 1, "folded_zero_size": 0}
    xs = [np.array([3, -4, 5, 7], np.int32)]
    np.testing.assert_array_equal(interpret(after, xs)[0], interpret(g, xs)[0])


def test_transpose_of_a_rank_3_constant():
    w = np.random.default_rng(3).standard_normal((2, 3, 4)).astype(np.float32)
    before = """
    graph main(%x: f32[4,2,3]) {
      const %w: f32[2,3,4]
      %t: f32[4,2,3] = transpose(%w) {"perm": [2, 0, 1]}
      %a: f32[4,2,3] = add(%x, %t)
      return %a
    }"""
    expected = """
    graph main(%x: f32[4,2,3]) {
      const %t_folded: f32[4,2,3]
      %a: f32[4,2,3] = add(%x, %t_folded)
      return %a
    }"""
    g, after, stats = assert_rewrites(before, expected, {"w": w}, {"t_folded": np.transpose(w, (2, 0, 1)).copy()})
    assert stats == {"folded": 1, "folded_zero_size": 0}
    assert_same_numerics(g, after)


# -- what is not folded -----------------------------------------------------------------------------------------

NON_CONST = """
graph main(%x: f32[2,4], %y: f32[4]) {
  const %c: f32[4] = [1.0, 2.0, 3.0, 4.0]
  const %w: f32[4,8]
  %a: f32[2,4] = add(%x, %c)
  %t: f32[4,2] = transpose(%x) {"perm": [1, 0]}
  %r: f32[8] = reshape(%x) {"shape": [8]}
  %m: f32[2,2] = matmul(%x, %t)
  %k: f32[4] = mul(%c, %y)
  %l: f32[2,8] = matmul(%x, %w)
  %n: i32[2,4] = cast(%x) {"dtype": "i32"}
  return %a, %r, %m, %k, %l, %n
}"""


def test_nodes_reading_a_graph_input_are_untouched():
    g = parse_graph(NON_CONST, {"w": W})
    text = print_graph(g)
    after = g.clone()
    assert run_pass(NAME, after) == {"folded": 0, "folded_zero_size": 0}
    assert print_graph(after) == text
    assert after.constants["w"] is W  # not copied, not rewritten
    assert_same_numerics(g, after)


def test_only_the_constant_part_of_a_mixed_graph_is_folded():
    before = """
    graph main(%x: f32[2,4]) {
      const %c: f32[4] = [1.0, 2.0, 3.0, 4.0]
      const %two: f32[] = 2.0
      %d: f32[4] = mul(%c, %two)
      %a: f32[2,4] = add(%x, %d)
      %b: f32[2,4] = mul(%a, %two)
      %e: f32[2,4] = exp(%b)
      return %e
    }"""
    expected = """
    graph main(%x: f32[2,4]) {
      const %two: f32[] = 2.0
      const %d_folded: f32[4] = [2.0, 4.0, 6.0, 8.0]
      %a: f32[2,4] = add(%x, %d_folded)
      %b: f32[2,4] = mul(%a, %two)
      %e: f32[2,4] = exp(%b)
      return %e
    }"""
    g, after, stats = assert_rewrites(before, expected)
    # %c is dropped (no reader left), %two is kept (%b still reads it)
    assert stats == {"folded": 1, "folded_zero_size": 0}
    assert_same_numerics(g, after)


def test_weight_with_another_reader_is_kept():
    before = """
    graph main(%x: f32[2,8]) {
      const %w: f32[4,8]
      %t: f32[8,4] = transpose(%w) {"perm": [1, 0]}
      %a: f32[2,4] = matmul(%x, %t)
      %b: f32[2,4] = linear(%x, %w) {"weight_layout": "oi"}
      %s: f32[2,4] = sub(%a, %b)
      return %s
    }"""
    expected = """
    graph main(%x: f32[2,8]) {
      const %w: f32[4,8]
      const %t_folded: f32[8,4]
      %a: f32[2,4] = matmul(%x, %t_folded)
      %b: f32[2,4] = linear(%x, %w) {"weight_layout": "oi"}
      %s: f32[2,4] = sub(%a, %b)
      return %s
    }"""
    g, after, stats = assert_rewrites(before, expected, {"w": W}, {"w": W, "t_folded": W.T})
    assert stats == {"folded": 1, "folded_zero_size": 0}
    assert after.constants["w"] is W
    assert_same_numerics(g, after)


# -- growth limit -----------------------------------------------------------------------------------------------

def test_widening_an_int8_weight_stays_a_kernel():
    """The limit is in bytes: an i8 weight cast to i32 for an integer matmul would store it 4x bigger."""
    rng = np.random.default_rng(0)
    w = rng.integers(-127, 128, (256, 64)).astype(np.int8)  # 16 KiB; as i32, 64 KiB
    before = """
    graph main(%x: i32[2,64]) {
      const %w: i8[256,64]
      %wi: i32[256,64] = cast(%w) {"dtype": "i32"}
      %t: i32[64,256] = transpose(%wi) {"perm": [1, 0]}
      %y: i32[2,256] = matmul(%x, %t)
      return %y
    }"""
    g = parse_graph(before, {"w": w})
    after = g.clone()
    assert run_pass(NAME, after) == {"folded": 0, "folded_zero_size": 0}
    assert after.constants["w"].dtype == np.int8
    small = parse_graph(before.replace("256", "16"), {"w": w[:16]})  # 4 KiB as i32: under the limit, folded
    assert run_pass(NAME, small) == {"folded": 2, "folded_zero_size": 0}


@pytest.mark.parametrize("shape,folded", [
    ([8, 8], True),
    ([64, 64], True),      # exactly MAX_FOLD_GROWTH_BYTES = 16384 bytes of f32: still folded
    ([65, 64], False),     # 16640 bytes
    ([100, 100], False),
    ([2, 3, 1000], False),
])
def test_broadcast_of_a_scalar_is_folded_only_up_to_the_growth_limit(shape, folded):
    dims = ",".join(map(str, shape))
    before = f"""
    graph main(%x: f32[{dims}]) {{
      const %s: f32[] = 1.5
      %b: f32[{dims}] = broadcast_to(%s) {{"shape": {shape}}}
      %y: f32[{dims}] = add(%x, %b)
      return %y
    }}"""
    g = parse_graph(before)
    after = g.clone()
    stats = run_pass(NAME, after)
    if folded:
        assert stats == {"folded": 1, "folded_zero_size": 0}
        assert [n.op for n in after.nodes] == ["add"]
        c = after.nodes[0].inputs[1]
        assert after.is_const(c) and c.name == "b_folded"
        np.testing.assert_array_equal(after.constants["b_folded"], np.full(shape, 1.5, np.float32))
    else:
        assert stats == {"folded": 0, "folded_zero_size": 0}
        assert print_graph(after) == print_graph(g)  # a broadcast of a scalar to a big tensor stays a kernel
    assert_same_numerics(g, after)


def test_growth_is_measured_against_the_biggest_input():
    before = """
    graph main(%x: f32[2,5000], %v: f32[5000]) {
      const %big: f32[1,5000]
      %b: f32[2,5000] = broadcast_to(%big) {"shape": [2, 5000]}
      %r: f32[5000] = reshape(%big) {"shape": [5000]}
      %n: f32[1,5000] = neg(%big)
      %y: f32[2,5000] = add(%x, %b)
      %z: f32[5000] = add(%v, %r)
      %w: f32[2,5000] = add(%y, %n)
      return %w, %z
    }"""
    g = parse_graph(before, {"big": BIG})
    after = g.clone()
    stats = run_pass(NAME, after)
    # the reshape and the neg do not grow the weights; the broadcast doubles a 5000-element tensor
    assert stats == {"folded": 2, "folded_zero_size": 0}
    assert [n.op for n in after.nodes] == ["broadcast_to", "add", "add", "add"]
    assert sorted(after.constants) == ["big", "n_folded", "r_folded"]
    np.testing.assert_array_equal(after.constants["r_folded"], BIG.reshape(5000))
    np.testing.assert_array_equal(after.constants["n_folded"], -BIG)
    assert_same_numerics(g, after)


def test_binary_op_that_broadcasts_within_the_limit_is_folded():
    col = np.arange(64, dtype=np.float32).reshape(64, 1)
    row = np.arange(64, dtype=np.float32).reshape(1, 64) / 64
    before = """
    graph main(%x: f32[64,64]) {
      const %col: f32[64,1]
      const %row: f32[1,64]
      %o: f32[64,64] = add(%col, %row)
      %y: f32[64,64] = mul(%x, %o)
      return %y
    }"""
    expected = """
    graph main(%x: f32[64,64]) {
      const %o_folded: f32[64,64]
      %y: f32[64,64] = mul(%x, %o_folded)
      return %y
    }"""
    g, after, stats = assert_rewrites(before, expected, {"col": col, "row": row}, {"o_folded": col + row})
    assert stats == {"folded": 1, "folded_zero_size": 0}
    assert_same_numerics(g, after)


# -- multi-step chains -----------------------------------------------------------------------------------------

CHAIN = """
graph main(%x: f32[2,8]) {
  const %w: f32[4,8]
  const %half: f32[] = 0.5
  const %shift: f32[4] = [1.0, -1.0, 0.5, -0.5]
  %t: f32[8,4] = transpose(%w) {"perm": [1, 0]}
  %s: f32[8,4] = mul(%t, %half)
  %a: f32[8,4] = add(%s, %shift)
  %r: f32[8,4] = relu(%a)
  %f: f32[32] = reshape(%r) {"shape": [32]}
  %g: f32[8,4] = reshape(%f) {"shape": [8, 4]}
  %c: f32[8,4] = cast(%g) {"dtype": "f32"}
  %y: f32[2,4] = matmul(%x, %c)
  return %y
}"""


def _chain_value() -> np.ndarray:
    w = W.astype(np.float64).T * 0.5 + np.array([1.0, -1.0, 0.5, -0.5])
    return np.maximum(w, 0).astype(np.float32)


def test_multi_step_chain_of_constant_ops_folds_fully():
    expected = """
    graph main(%x: f32[2,8]) {
      const %c_folded: f32[8,4]
      %y: f32[2,4] = matmul(%x, %c_folded)
      return %y
    }"""
    g, after, stats = assert_rewrites(CHAIN, expected, {"w": W}, {"c_folded": _chain_value()})
    assert stats == {"folded": 7, "folded_zero_size": 0}
    assert list(after.constants) == ["c_folded"]  # every intermediate constant is dropped
    assert_same_numerics(g, after)


def test_chain_whose_intermediate_is_also_read_by_a_kernel():
    before = """
    graph main(%x: f32[2,8], %z: f32[8,4]) {
      const %w: f32[4,8]
      const %two: f32[] = 2.0
      %t: f32[8,4] = transpose(%w) {"perm": [1, 0]}
      %u: f32[8,4] = mul(%t, %two)
      %v: f32[8,4] = add(%z, %t)
      %y: f32[2,4] = matmul(%x, %u)
      return %y, %v
    }"""
    expected = """
    graph main(%x: f32[2,8], %z: f32[8,4]) {
      const %t_folded: f32[8,4]
      const %u_folded: f32[8,4]
      %v: f32[8,4] = add(%z, %t_folded)
      %y: f32[2,4] = matmul(%x, %u_folded)
      return %y, %v
    }"""
    g, after, stats = assert_rewrites(before, expected, {"w": W}, {"t_folded": W.T, "u_folded": W.T * 2})
    assert stats == {"folded": 2, "folded_zero_size": 0}
    assert_same_numerics(g, after)


def test_folding_is_idempotent_and_leaves_the_input_graph_alone():
    g = parse_graph(CHAIN, {"w": W})
    text = print_graph(g)
    after = g.clone()
    run_pass(NAME, after)
    assert print_graph(g) == text
    np.testing.assert_array_equal(g.constants["w"], W)
    folded_text = print_graph(after)
    assert run_pass(NAME, after) == {"folded": 0, "folded_zero_size": 0}
    assert print_graph(after) == folded_text


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_numerics_on_random_inputs(seed):
    for text in (CHAIN, NON_CONST):
        g = parse_graph(text, {"w": W})
        after = g.clone()
        run_pass(NAME, after)
        assert_same_numerics(g, after, seed)


def test_reductions_and_comparisons_of_constants_fold():
    before = """
    graph main(%x: f32[2,4], %v: f32[4,8]) {
      const %w: f32[4,8]
      const %zero: f32[] = 0.0
      %s: f32[4] = sum(%w) {"axes": [1], "keepdims": false}
      %p: bool[4,8] = gt(%w, %zero)
      %q: bool[4,8] = logical_not(%p)
      %a: f32[2,4] = add(%x, %s)
      %z: f32[4,8] = where(%q, %v, %zero)
      return %a, %z
    }"""
    g = parse_graph(before, {"w": W})
    after = g.clone()
    stats = run_pass(NAME, after)
    # %q reads %p, which reads only constants: the whole mask chain folds (3 nodes)
    assert stats == {"folded": 3, "folded_zero_size": 0}
    assert [n.op for n in after.nodes] == ["add", "where"]
    np.testing.assert_allclose(after.constants["s_folded"], W.astype(np.float64).sum(axis=1), rtol=1e-6)
    np.testing.assert_array_equal(after.constants["q_folded"], W <= 0)
    assert_same_numerics(g, after)


# -- regressions: rank-0 results, graph outputs --------------------------------------------------------------------
# (both were bugs when these tests were written: a folded scalar became f32[1] through np.ascontiguousarray, and a
# folded graph output became a constant that the lowering never shipped, so the compiled model raised KeyError)

@pytest.mark.parametrize("line", [
    '%u: f32[] = neg(%s)',
    '%u: f32[] = transpose(%s) {"perm": []}',
    '%u: f32[] = cast(%s) {"dtype": "f32"}',
    '%u: f32[] = mul(%s, %s)',
])
def test_folded_scalar_keeps_rank_0(line):
    before = f"""
    graph main(%x: f32[2,3]) {{
      const %s: f32[] = 3.0
      {line}
      %y: f32[2,3] = mul(%x, %u)
      return %y
    }}"""
    expected = """
    graph main(%x: f32[2,3]) {
      const %u_folded: f32[] = VALUE
      %y: f32[2,3] = mul(%x, %u_folded)
      return %y
    }"""
    value = {"neg": "-3.0", "mul": "9.0"}.get(line.split("= ")[1].split("(")[0], "3.0")
    g, after, stats = assert_rewrites(before, expected.replace("VALUE", value))
    assert stats == {"folded": 1, "folded_zero_size": 0}
    assert after.constants["u_folded"].shape == ()
    assert_same_numerics(g, after)


def test_folded_scalar_feeding_a_scalar_op_still_verifies():
    before = """
    graph main(%x: f32[]) {
      const %c: f32[] = 2.0
      %n: f32[] = neg(%c)
      %y: f32[] = add(%x, %n)
      return %y
    }"""
    expected = """
    graph main(%x: f32[]) {
      const %n_folded: f32[] = -2.0
      %y: f32[] = add(%x, %n_folded)
      return %y
    }"""
    g, after, stats = assert_rewrites(before, expected)  # verifies the result
    assert stats == {"folded": 1, "folded_zero_size": 0}
    xs = [np.array(1.5, np.float32)]
    np.testing.assert_array_equal(interpret(after, xs)[0], interpret(g, xs)[0])


def test_no_graph_output_becomes_a_constant():
    before = """
    graph main(%x: f32[2,3]) {
      const %w: f32[3,2] = [[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]
      %t: f32[2,3] = transpose(%w) {"perm": [1, 0]}
      %c: f32[3,2] = copy(%w)
      %y: f32[2,3] = add(%x, %t)
      return %y, %t, %c
    }"""
    g = parse_graph(before)
    after = g.clone()
    run_pass(NAME, after)
    assert not any(after.is_const(v) for v in after.outputs)
    assert_same_numerics(g, after)


def test_model_that_returns_a_weight_compiles_and_runs():
    import torch

    import edgeopt

    class ReturnsWeight(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.randn(3, 2))

        def forward(self, x):
            return x + 1, self.w.t()

    torch.manual_seed(0)
    model = ReturnsWeight().eval()
    x = torch.randn(2, 3)
    compiled = edgeopt.compile(model, (x,), passes=["constant_folding"])
    y, w = compiled(x.numpy())
    np.testing.assert_allclose(y, x.numpy() + 1, rtol=1e-6)
    np.testing.assert_array_equal(w, model.w.detach().numpy().T)


# -- zero-size inputs: the result is known without the inputs' values --------------------------------------------
# (a bug found by CI: TVM initializes a reduction inside its first step, so a sum over nothing left its output
# unwritten, and the compiled model returned whatever its arena held)

def test_sum_over_nothing_becomes_a_zero():
    before = """
    graph main(%x: f32[3]) {
      %e: f32[0] = slice(%x) {"axis": 0, "start": 1, "end": 1, "step": 1}
      %s: f32[] = sum(%e) {"axes": null, "keepdims": false}
      %y: f32[3] = add(%x, %s)
      return %y, %s
    }"""
    expected = """
    graph main(%x: f32[3]) {
      const %s_folded: f32[] = 0.0
      %s_1: f32[] = copy(%s_folded)
      %y: f32[3] = add(%x, %s_1)
      return %y, %s_1
    }"""
    g = parse_graph(before)
    after = g.clone()
    assert run_pass(NAME, after) == {"folded": 0, "folded_zero_size": 2}  # the slice (an empty result) and the sum
    assert print_graph(after) == print_graph(parse_graph(expected))
    assert_same_numerics(g, after)


@pytest.mark.parametrize("line,value", [
    ('%r: f32[2] = sum(%e) {"axes": [1], "keepdims": false}', 0.0),
    ('%r: f32[2] = prod(%e) {"axes": [1], "keepdims": false}', 1.0),
    ('%r: f32[2] = mean(%e) {"axes": [1], "keepdims": false}', np.nan),
    ('%r: f32[2,5] = matmul(%e, %w)', 0.0),
])
def test_reductions_of_zero_size_values_fold_to_what_the_reference_gives(line, value):
    before = f"""
    graph main(%x: f32[2,0], %z: f32[2]) {{
      const %w: f32[0,5]
      %e: f32[2,0] = neg(%x)
      {line}
      return %r
    }}"""
    g = parse_graph(before, {"w": np.zeros((0, 5), np.float32)})
    after = g.clone()
    stats = run_pass(NAME, after)
    assert stats == {"folded": 0, "folded_zero_size": 2}  # the neg (an empty result) and the reduction
    assert [n.op for n in after.nodes] == ["broadcast_to"]  # a graph output: computed, from a scalar
    verify(after)
    (got,) = interpret(after, [np.zeros((2, 0), np.float32), np.zeros(2, np.float32)])
    np.testing.assert_array_equal(got, np.full(after.outputs[0].type.shape, value, np.float32))
    assert run_pass(NAME, after) == {"folded": 0, "folded_zero_size": 0}  # idempotent


def test_small_result_read_by_a_kernel_becomes_a_plain_constant():
    before = """
    graph main(%x: f32[2,0], %z: f32[2]) {
      %s: f32[2] = sum(%x) {"axes": [1], "keepdims": false}
      %y: f32[2] = add(%z, %s)
      return %y
    }"""
    expected = """
    graph main(%x: f32[2,0], %z: f32[2]) {
      const %s_folded: f32[2] = [0.0, 0.0]
      %y: f32[2] = add(%z, %s_folded)
      return %y
    }"""
    g = parse_graph(before)
    after = g.clone()
    assert run_pass(NAME, after) == {"folded": 0, "folded_zero_size": 1}
    assert print_graph(after) == print_graph(parse_graph(expected))
    assert_same_numerics(g, after)


def test_softmax_along_an_empty_axis_is_an_empty_constant():
    """An empty result needs no reference call (numpy's max of nothing raises)."""
    before = """
    graph main(%x: f32[5,3]) {
      %e: f32[5,0] = slice(%x) {"axis": 1, "start": 0, "end": 0, "step": 1}
      %s: f32[5,0] = softmax(%e) {"axis": 1}
      return %s
    }"""
    g = parse_graph(before)
    after = g.clone()
    assert run_pass(NAME, after) == {"folded": 0, "folded_zero_size": 2}  # the slice too: its result is empty
    assert [n.op for n in after.nodes] == ["copy"]
    verify(after)
    assert interpret(after, [np.ones((5, 3), np.float32)])[0].shape == (5, 0)


def test_signed_zeros_are_not_one_repeated_value():
    before = """
    graph main(%x: f32[2], %z: f32[0]) {
      const %c: f32[2] = [-0.0, 0.0]
      %s: f32[2] = concat(%c, %z) {"axis": 0}
      %y: f32[2] = div(%x, %s)
      return %y, %s
    }"""
    g = parse_graph(before)
    after = g.clone()
    run_pass(NAME, after)
    assert [n.op for n in after.nodes] == ["copy", "div"]  # not broadcast_to(-0.0)
    y, s = interpret(after, [np.ones(2, np.float32), np.zeros(0, np.float32)])
    np.testing.assert_array_equal(y, [-np.inf, np.inf])
    np.testing.assert_array_equal(np.signbit(s), [True, False])


def test_linear_of_no_features_is_its_bias_broadcast_not_a_big_constant():
    rng = np.random.default_rng(5)
    b = rng.standard_normal(1024).astype(np.float32)
    before = """
    graph main(%x: f32[64,3]) {
      const %w: f32[1024,0]
      const %b: f32[1024]
      %e: f32[64,0] = slice(%x) {"axis": 1, "start": 0, "end": 0, "step": 1}
      %y: f32[64,1024] = linear(%e, %w, %b) {"weight_layout": "oi"}
      %r: f32[64,1024] = relu(%y)
      return %r
    }"""
    g = parse_graph(before, {"w": np.zeros((1024, 0), np.float32), "b": b})
    after = g.clone()
    run_pass(NAME, after)
    run_pass("dead_code_elimination", after)
    assert [n.op for n in after.nodes] == ["broadcast_to", "relu"]
    assert after.weight_bytes() == b.nbytes  # the bias once, not 64 copies of it
    assert after.nodes[0].inputs[0].type.shape == (1, 1024)
    assert_same_numerics(g, after)


def test_zero_size_result_beside_a_run_time_input_is_left_to_its_kernel():
    before = """
    graph main(%x: f32[3], %z: f32[0]) {
      %c: f32[3] = concat(%x, %z) {"axis": 0}
      return %c
    }"""
    g = parse_graph(before)
    after = g.clone()
    assert run_pass(NAME, after) == {"folded": 0, "folded_zero_size": 0}
    assert print_graph(after) == print_graph(g)


def test_model_summing_an_empty_unfold_matches_pytorch():
    """CI's failing case: ``x.unfold(0, 0, 1).sum()``, as a graph output and inside the graph."""
    import torch

    import edgeopt

    class SumsNothing(torch.nn.Module):
        def forward(self, x):
            s = x.unfold(0, 0, 1).sum()
            return x.unfold(0, 1, 1) + s, s, x.unfold(0, 1, 1)[:0].prod()

    x = torch.tensor(2.5)
    compiled = edgeopt.compile(SumsNothing().eval(), (x,))
    for _ in range(3):  # the arena holds earlier results: an unwritten output would show them
        a, s, p = compiled(x.numpy())
        np.testing.assert_array_equal(a, [2.5])
        assert s == 0.0 and p == 1.0


def test_lowering_refuses_a_reduction_over_nothing_when_the_pass_is_disabled():
    import torch

    import edgeopt
    from edgeopt.errors import PassError

    class SumsNothing(torch.nn.Module):
        def forward(self, x):
            return x + x[:, :0].sum(dim=1, keepdim=True)

    with pytest.raises(PassError, match="constant_folding"):
        edgeopt.compile(SumsNothing().eval(), (torch.ones(2, 3),), disable=["constant_folding"])


def test_lowering_refuses_only_kernels_that_reduce_over_nothing():
    """The guard looks for a zero-extent reduction axis in the kernel's TE, not at op kinds: an index_copy of no
    rows (opaque, no reduction) lowers; a linear layer of no features whose bias is computed cannot fold."""
    from edgeopt.errors import PassError
    from edgeopt.lower.build import build_primfunc

    no_rows = parse_graph("""
    graph main(%x: f32[4,3], %s: f32[0,3], %i: i64[0]) {
      %y: f32[4,3] = index_copy(%x, %s, %i) {"axis": 0}
      return %y
    }""")
    build_primfunc(no_rows, no_rows.nodes[0])
    run_time_bias = parse_graph("""
    graph main(%x: f32[2,0], %b: f32[4]) {
      const %w: f32[4,0]
      %y: f32[2,4] = linear(%x, %w, %b) {"weight_layout": "oi"}
      return %y
    }""", {"w": np.zeros((4, 0), np.float32)})
    assert run_pass(NAME, run_time_bias.clone()) == {"folded": 0, "folded_zero_size": 0}
    with pytest.raises(PassError, match="reduces over zero elements"):
        build_primfunc(run_time_bias, run_time_bias.nodes[0])
