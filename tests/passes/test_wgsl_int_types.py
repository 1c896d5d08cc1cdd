"""wgsl_int_types: Before/Expected IR, fused bodies, constants, numerics (interpreter before vs after), refusals."""

from __future__ import annotations

import numpy as np
import pytest

from edgeopt.errors import PassError
from edgeopt.ir import Graph, interpret, parse_graph, print_graph, verify
from edgeopt.pipeline import resolve
from edgeopt.testing import run_pass

NAME = "wgsl_int_types"


BEFORE = """graph main(%ids: i64[1,4], %img: u8[1,4], %q: i8[1,4]) {
  const %table: f32[10,3]
  const %offset: i64[] = 2
  %shift: i64[1,4] = add(%ids, %offset)
  %e: f32[1,4,3] = take(%table, %shift) {"axis": 0}
  %f: f32[1,4] = cast(%img) {"dtype": "f32"}
  %g: f32[1,4] = cast(%q) {"dtype": "f32"}
  %h: f32[1,4] = mul(%f, %g)
  %n: i64[1,4] = cast(%h) {"dtype": "i64"}
  %m: bool[1,4] = gt(%n, %offset)
  return %e, %n, %m
}
"""
EXPECTED = """graph main(%ids: i32[1,4], %img: i32[1,4], %q: i32[1,4]) {
  const %table: f32[10,3]
  const %offset: i32[] = 2
  %shift: i32[1,4] = add(%ids, %offset)
  %e: f32[1,4,3] = take(%table, %shift) {"axis": 0}
  %f: f32[1,4] = cast(%img) {"dtype": "f32"}
  %g: f32[1,4] = cast(%q) {"dtype": "f32"}
  %h: f32[1,4] = mul(%f, %g)
  %n: i32[1,4] = cast(%h) {"dtype": "i32"}
  %m: bool[1,4] = gt(%n, %offset)
  return %e, %n, %m
}
"""


def _graph(text: str = BEFORE) -> Graph:
    rng = np.random.default_rng(0)
    return parse_graph(text, {"table": rng.standard_normal((10, 3)).astype(np.float32)})


def test_before_expected_and_numerics():
    g = _graph()
    before = g.clone()
    stats = run_pass(NAME, g)
    assert print_graph(g) == EXPECTED
    assert stats["retyped"] == 6  # 3 inputs, 1 constant, %shift and %n
    assert g.constants["offset"].dtype == np.int32 and g.constants["offset"].shape == ()
    xs = [np.array([[0, 3, 5, 7]], np.int64), np.array([[0, 17, 200, 255]], np.uint8),
          np.array([[-128, -1, 3, 127]], np.int8)]
    want = interpret(before, xs)
    got = interpret(g, [x.astype(np.int32) for x in xs])
    for a, b in zip(want, got):
        assert np.array_equal(a, b.astype(a.dtype))
    assert [b.dtype for b in got] == [np.float32, np.int32, np.bool_]


def test_no_integer_wider_or_narrower_than_32_bits_is_left():
    g = _graph()
    run_pass(NAME, g)
    dtypes = {v.type.dtype for v in g.inputs} | {o.type.dtype for n in g.nodes for o in n.outputs}
    assert not dtypes & {"i64", "i8", "u8", "i16"}
    assert run_pass(NAME, g)["retyped"] == 0  # idempotent


def test_fused_bodies_are_retyped():
    from edgeopt.pipeline import get_pass as gp

    g = _graph()
    for p in ("fuse_elementwise",):
        gp(p).run(g)
    verify(g)
    assert any(n.body is not None for n in g.nodes)
    run_pass(NAME, g)
    for n in g.nodes:
        if n.body is not None:
            for v in [*n.body.inputs, *(o for m in n.body.nodes for o in m.outputs)]:
                assert v.type.dtype not in ("i64", "i8", "u8"), v


def test_constant_outside_int32_is_an_error():
    g = _graph(BEFORE.replace("%offset: i64[] = 2", "%offset: i64[] = 4294967296"))
    with pytest.raises(PassError, match=r"constant %offset \(i64\[\]\) holds values outside int32"):
        run_pass(NAME, g)


def test_fixed_i64_result_is_an_error():
    g = parse_graph("""graph main(%x: f32[2,5]) {
  %a: i64[2] = argmax(%x) {"axes": [1], "keepdims": false} @"model.py:3  return x.argmax(1)"
  return %a
}
""")
    with pytest.raises(PassError, match=r"argmax produces i64\[2\] \(at model.py:3"):
        run_pass(NAME, g)


def test_target_runs_it_first_and_it_cannot_be_disabled():
    names = [p.name for p in resolve(None, (), 2, "vulkan", ("wgsl_int_types",))]
    assert names[0] == NAME and names.count(NAME) == 1
    names = [p.name for p in resolve(["constant_folding"], (), 2, "vulkan", ("wgsl_int_types",))]
    assert names == [NAME, "constant_folding"]
    with pytest.raises(PassError, match="cannot be disabled"):
        resolve(None, (NAME,), 2, "vulkan", ("wgsl_int_types",))


@pytest.mark.parametrize("dtype,lo,hi", [("u8", 0, 255), ("i8", -128, 127), ("i16", -32768, 32767)])
def test_casts_to_a_narrow_type_keep_their_wrap_around(dtype, lo, hi):
    g = parse_graph(f"""graph main(%x: i64[8], %f: f32[8]) {{
  %a: {dtype}[8] = cast(%x) {{"dtype": "{dtype}"}}
  %b: {dtype}[8] = cast(%f) {{"dtype": "{dtype}"}}
  return %a, %b
}}
""")
    before = g.clone()
    run_pass(NAME, g)
    x = np.array([0, 1, -1, hi, hi + 1, lo - 1, 70000, -70001], np.int64)
    f = np.array([0.5, -0.5, 3.9, -3.9, float(hi), float(lo), 10.0, -7.0], np.float32)
    if dtype == "u8":  # a negative float cast to u8 is undefined in C (and numpy): x86 wraps, aarch64 gives 0
        f = np.abs(f)
    want = interpret(before, [x, f])
    got = interpret(g, [x.astype(np.int32), f])
    for w, r in zip(want, got):
        assert r.dtype == np.int32 and np.array_equal(r, w.astype(np.int32)), (w, r)


@pytest.mark.parametrize("dtype,np_dtype", [("u8", np.uint8), ("i8", np.int8), ("i16", np.int16)])
def test_left_shifts_and_nots_of_a_narrow_type_keep_their_wrap_around(dtype, np_dtype):
    """Held in i32, a left shift keeps the bits past the narrow width and ~ of a u8 goes negative: wrapped back,
    ``(packed << 4) >> 4`` unpacks int4 as it does in the narrow type."""
    g = parse_graph(f"""graph main(%x: {dtype}[6], %s: {dtype}[6]) {{
  %l: {dtype}[6] = shift_left(%x, %s)
  %r: {dtype}[6] = shift_right(%l, %s)
  %n: {dtype}[6] = bitwise_not(%x)
  %h: {dtype}[6] = shift_right(%n, %s)
  return %r, %h
}}
""")
    before = g.clone()
    run_pass(NAME, g)
    info = np.iinfo(np_dtype)
    x = np.array([0x3A, info.max, info.min, 7, -3 if info.min else 200, 1], np_dtype)
    s = np.array([4, 1, 3, 0, 7, 15 if dtype == "i16" else 7], np_dtype)
    want = interpret(before, [x, s])
    got = interpret(g, [x.astype(np.int32), s.astype(np.int32)])
    for w, r in zip(want, got):
        assert np.array_equal(r, w.astype(np.int32)), (w, r)


def test_a_clamped_quantization_needs_no_wrap():
    g = parse_graph("""graph main(%x: f32[4]) {
  %r: f32[4] = round(%x)
  %c: f32[4] = clamp(%r) {"min": -127.0, "max": 127.0}
  %q: i8[4] = cast(%c) {"dtype": "i8"}
  %u: u8[4] = cast(%q) {"dtype": "u8"}
  return %q, %u
}
""")
    run_pass(NAME, g)
    assert [n.op for n in g.nodes][:3] == ["round", "clamp", "cast"] and g.nodes[3].op == "cast"  # no wrap for %q
    assert "where" in [n.op for n in g.nodes[4:]]  # an i8 -> u8 cast wraps negative values


def test_narrowed_graph_interprets_integer_inputs_that_fit():
    """The interpreter takes an integer array of another dtype whose values fit, as the runtime does: calibrating
    static int8 for Vulkan runs the narrowed graph on the user's int64 token ids."""
    g = _graph()
    run_pass(NAME, g)
    ids, img, q = np.array([[0, 3, 5, 7]], np.int64), np.array([[0, 1, 2, 255]], np.uint8), np.zeros((1, 4), np.int8)
    got = interpret(g, [ids, img, q])
    want = interpret(g, [ids.astype(np.int32), img.astype(np.int32), q.astype(np.int32)])
    for a, b in zip(want, got):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="expected i32"):  # does not fit
        interpret(g, [np.array([[0, 3, 5, 2**40]], np.int64), img, q])
    with pytest.raises(ValueError, match="expected i32"):  # not an integer
        interpret(g, [ids.astype(np.float32), img, q])
