"""TensorType / QuantParams text form, and the graph text form: print -> parse -> print is exact."""

from __future__ import annotations

import numpy as np
import pytest

from edgeopt.ir import (
    Graph,
    ParseError,
    QuantParams,
    TensorType,
    parse_graph,
    parse_type,
    print_graph,
    verify,
)
from edgeopt.ir.text import INLINE_MAX

# -- types ---------------------------------------------------------------------------------------------------

PER_TENSOR = QuantParams((0.05,), (128,))
PER_AXIS = QuantParams((0.02, 0.5, 1e-05, 3.0), (0, 0, 1, -2), axis=0)


@pytest.mark.parametrize("t, text", [
    (TensorType((1, 3, 224, 224), "f32"), "f32[1,3,224,224]"),
    (TensorType((), "f32"), "f32[]"),
    (TensorType((), "i64"), "i64[]"),
    (TensorType((0, 4), "bool"), "bool[0,4]"),
    (TensorType((7,), "i64"), "i64[7]"),
    (TensorType((2, 2), "f16"), "f16[2,2]"),
    (TensorType((3,), "f64"), "f64[3]"),
    (TensorType((1, 64), "u8", PER_TENSOR), "u8[1,64]{scale=0.05,zp=128}"),
    (TensorType((), "i8", QuantParams((0.125,), (-3,))), "i8[]{scale=0.125,zp=-3}"),
    (TensorType((4, 3), "i8", PER_AXIS), "i8[4,3]{scale=[0.02,0.5,1e-05,3.0],zp=[0,0,1,-2],axis=0}"),
    (TensorType((2, 5), "i32", QuantParams((1.5, 2.5, 3.5, 4.5, 5.5), (1, 2, 3, 4, 5), axis=1)),
     "i32[2,5]{scale=[1.5,2.5,3.5,4.5,5.5],zp=[1,2,3,4,5],axis=1}"),
])
def test_type_text_round_trip(t, text):
    assert t.text() == text == str(t)
    back = parse_type(text)
    assert back == t
    assert back.quant == t.quant
    assert back.text() == text


def test_parse_type_tolerates_surrounding_spaces():
    assert parse_type("  f32[2,3] \n") == TensorType((2, 3), "f32")


def test_type_properties():
    assert TensorType((), "f32").rank == 0 and TensorType((), "f32").numel == 1
    assert TensorType((0, 4), "bool").numel == 0
    assert TensorType((2, 3), "f16").nbytes == 12
    assert TensorType((2, 3), "i64").np_dtype == np.dtype(np.int64)
    q = TensorType((2, 3), "u8", PER_TENSOR)
    assert q.with_shape([3, 2]) == TensorType((3, 2), "u8", PER_TENSOR)


@pytest.mark.parametrize("bad", [
    "", "f32", "f32[2,3", "f32(1,2)", "f32[1,-2]", "f32[a]", "f32[2.5]", "[2]", "f33[1]", "q9[]",
    "f32[2] extra", "u8[2]{scale=[0.5,0.5],zp=[0,0]}", "u8[2]{scale=0.5,zp=0,bits=4}", "u8[2]{scale=0.5,zp}",
    "i8[2]{scale=0.5,zp=0,axis=0}", "u8[2]{scale=\"a\",zp=0}", "u8[2]{scale=0.5,zp=0,zp=3}",
    "u8[2]{scale=0.5,zp=Infinity}",
])
def test_parse_type_rejects(bad):
    with pytest.raises(ValueError, match="cannot parse type"):
        parse_type(bad)


def test_parse_type_rejects_incomplete_quant_with_value_error():
    with pytest.raises(ValueError):
        parse_type("u8[2]{scale=0.5}")


def test_invalid_types_and_quant_params():
    with pytest.raises(TypeError, match="unknown IR dtype"):
        TensorType((2,), "f8")
    with pytest.raises(TypeError, match="non-negative"):
        TensorType((2, -1), "f32")
    with pytest.raises(TypeError):
        TensorType((2.0,), "f32")
    with pytest.raises(ValueError, match="one zero point per scale"):
        QuantParams((0.1, 0.2), (0,), axis=0)
    with pytest.raises(ValueError, match="at least one scale"):
        QuantParams((), ())
    with pytest.raises(ValueError, match="exactly one scale"):
        QuantParams((0.1, 0.2), (0, 0))


# -- graphs: structural equality -----------------------------------------------------------------------------


def _same_array(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b, equal_nan=a.dtype.kind == "f")


def assert_same_graph(a: Graph, b: Graph) -> None:
    """Node ops/attrs/types/sources, value names and wiring, and constants (by np.array_equal) agree."""
    assert a.name == b.name
    assert [(v.name, v.type) for v in a.inputs] == [(v.name, v.type) for v in b.inputs]
    assert list(a.constants) == list(b.constants)
    for k in a.constants:
        assert a.const_values[k].type == b.const_values[k].type, k
        assert _same_array(a.constants[k], b.constants[k]), k
    assert len(a.nodes) == len(b.nodes)
    for m, n in zip(a.nodes, b.nodes):
        assert m.op == n.op
        assert m.attrs == n.attrs
        assert (m.source or None) == (n.source or None)  # an empty source is not printed
        assert [v.name for v in m.inputs] == [v.name for v in n.inputs]
        assert [(o.name, o.type) for o in m.outputs] == [(o.name, o.type) for o in n.outputs]
    assert [v.name for v in a.outputs] == [v.name for v in b.outputs]


def _big_constants(g: Graph) -> dict[str, np.ndarray]:
    return {k: v for k, v in g.constants.items() if v.size > INLINE_MAX}


def _round_trip(g: Graph) -> Graph:
    verify(g)
    text = print_graph(g)
    again = parse_graph(text, _big_constants(g))
    verify(again)
    assert print_graph(again) == text
    assert_same_graph(g, again)
    return again


# -- graphs: hand-built cases --------------------------------------------------------------------------------

RNG = np.random.default_rng(1234)


def _multi_io() -> Graph:
    g = Graph("net")
    x = g.add_input("x", TensorType((2, 8), "f32"))
    ids = g.add_input("ids", TensorType((3,), "i64"))
    mask = g.add_input("mask", TensorType((2, 4), "bool"))
    w = g.add_const(RNG.standard_normal((4, 8)).astype(np.float32), "w")  # 32 elements: passed by dict
    b = g.add_const(np.array([0.5, -1.0, 2.0, 1e-5], np.float32), "b")
    half = g.add_const(np.float32(0.5), "half")
    table = g.add_const(RNG.standard_normal((5, 4)).astype(np.float32), "table")
    y = g.add("linear", [x, w, b])
    z = g.add("where", [mask, g.add("mul", [y, half]), g.add("neg", [y])])
    e = g.add("take", [table, ids], {"axis": 0})
    g.set_outputs([z, e, x, half])  # an input and a constant can be outputs too
    return g


def _scalars_and_dtypes() -> Graph:
    g = Graph("scalars")
    x = g.add_input("x", TensorType((), "f32"))
    n = g.add_input("n", TensorType((2, 3), "i64"))
    h = g.add_input("h", TensorType((4,), "f16"))
    two = g.add_const(np.float32(2.0), "two")
    big = g.add_const(np.int64(2**62 + 1), "big")
    neg = g.add_const(np.array(-0.0, np.float32), "negzero")
    inf = g.add_const(np.array([np.inf, -np.inf, np.nan, 1e-38], np.float32), "specials")
    flags = g.add_const(np.array([[True, False, True]]), "flags")
    hc = g.add_const(np.array([0.1, 65504.0, -2.5, 6e-5], np.float16), "hc")
    u = g.add_const(np.array([0, 255, 7], np.uint8), "u")
    i8 = g.add_const(np.array([-128, 127], np.int8), "i8")
    empty = g.add_const(np.zeros((0, 3), np.float32), "empty")
    sixteen = g.add_const(np.arange(INLINE_MAX, dtype=np.int32), "sixteen")  # still inline
    seventeen = g.add_const(np.arange(INLINE_MAX + 1, dtype=np.int32), "seventeen")  # by dict
    xs = g.add("add", [g.add("mul", [x, two]), neg])
    ns = g.add("add", [n, big])
    hs = g.add("mul", [h, hc])
    sel = g.add("where", [flags, ns, n])
    g.set_outputs([xs, ns, hs, sel, inf, u, i8, empty, sixteen, seventeen])
    return g


def _sources_and_attrs() -> Graph:
    g = Graph("attrs.v2")
    x = g.add_input("x", TensorType((1, 4, 6, 6), "f32"))
    y = g.add("conv2d", [x, g.add_const(np.ones((4, 2, 3, 3), np.float32), "w")],
              {"padding": [1, 0, 2, 1], "stride": [2, 1], "groups": 2},
              source='model.py:12  y = self.conv(x)  # "quoted" \\ backslash')
    y = g.add("clamp", [y], {"min": 0.0, "max": None}, source="ünïcødé ✓ 模型.py:3 @ = relu(%x) {}")
    y = g.add("resize2d", [y], {"size": [7, 11], "mode": "bilinear", "align_corners": True},
              source="line\nwith newline\tand tab")
    y = g.add("layer_norm", [y], {"normalized_ndim": 2, "eps": 1e-5}, source="")
    y = g.add("gelu", [y], {"approximate": "tanh"})
    y = g.add("leaky_relu", [y], {"alpha": -1.5e-3})
    y = g.add("clamp", [y], {"min": float("-inf"), "max": 6.0})
    s = g.add("sum", [y], {"axes": [-1, 1], "keepdims": True})
    m = g.add("mean", [y], {"axes": None, "keepdims": False})
    p = g.add("pad", [y], {"pads": [0, 0, -1, 2, 0, 0, 3, -2], "value": -0.25})
    g.set_outputs([s, m, p])
    return g


def _quantized_io() -> Graph:
    g = Graph("q")
    q = g.add_input("q", TensorType((2, 6), "u8", PER_TENSOR))
    r = g.add("reshape", [q], {"shape": [3, 4]})
    f = g.add("cast", [r], {"dtype": "f32"})
    g.set_outputs([r, f])
    return g


def _no_nodes() -> Graph:
    g = Graph("identity")
    g.set_outputs([g.add_input("x", TensorType((3,), "bool"))])
    return g


@pytest.mark.parametrize("build", [
    _multi_io, _scalars_and_dtypes, _sources_and_attrs, _quantized_io, _no_nodes,
])
def test_graph_print_parse_print_is_identical(build):
    _round_trip(build())


def test_round_trip_text_details():
    g = _multi_io()
    text = print_graph(g)
    assert text.startswith("graph net(%x: f32[2,8], %ids: i64[3], %mask: bool[2,4]) {\n")
    assert "  const %w: f32[4,8]\n" in text  # big constants are named only
    assert "  const %half: f32[] = 0.5\n" in text
    assert "  return %where, %take, %x, %half\n}\n" in text
    again = parse_graph(text, _big_constants(g))
    assert again.is_const(again.outputs[3]) and again.outputs[2] is again.inputs[0]
    src = print_graph(_sources_and_attrs())
    assert '"max": null' in src and '"align_corners": true' in src and '"eps": 1e-05' in src
    assert '"min": -Infinity' in src


def test_round_trip_keeps_big_constant_identity_and_inline_values():
    g = _scalars_and_dtypes()
    again = _round_trip(g)
    assert again.constants["seventeen"] is g.constants["seventeen"]  # taken from the dict as given
    assert np.signbit(again.constants["negzero"])
    assert again.constants["big"].item() == 2**62 + 1


def test_round_trip_quantized_constant():
    g = Graph()
    x = g.add_input("x", TensorType((2, 3), "i8"))
    w = g.add_const(np.ones((2, 3), np.int8), "w")
    w.type = TensorType((2, 3), "i8", QuantParams((0.5, 0.25), (0, -1), axis=0))
    g.set_outputs([g.add("add", [x, w])])
    _round_trip(g)


def test_parse_ignores_blank_lines_comments_and_indentation():
    text = """
        # a comment before the graph
    graph main(%x: f32[4]) {

            # a comment inside
      const %c: f32[] = 2.0
    %y: f32[4] = mul(%x, %c)
          return %y
    }
    """
    g = parse_graph(text)
    verify(g)
    assert print_graph(g) == (
        "graph main(%x: f32[4]) {\n  const %c: f32[] = 2.0\n  %y: f32[4] = mul(%x, %c)\n  return %y\n}\n")


def test_parse_keeps_attrs_as_written_and_verify_flags_non_normal_form():
    g = parse_graph("graph main(%x: f32[2,3]) {\n %y: f32[3] = sum(%x) {\"axes\": [0]}\n return %y\n}")
    assert g.nodes[0].attrs == {"axes": [0]}
    with pytest.raises(ValueError, match="not in normal form"):
        verify(g)


# -- graph parse errors --------------------------------------------------------------------------------------

GOOD = """graph main(%x: f32[4], %y: f32[4]) {
  const %c: f32[4]
  %a: f32[4] = add(%x, %y)
  %b: f32[4] = mul(%a, %c)
  return %b
}"""
C = {"c": np.ones(4, np.float32)}


def test_good_text_parses():
    verify(parse_graph(GOOD, C))


@pytest.mark.parametrize("text, constants, message", [
    ("", None, "expected 'graph NAME"),
    ("graph main(%x: f32[4]) {\n return %x", None, "expected 'graph NAME"),
    ("graph main(%x: f32[4])\n return %x\n}", None, "expected 'graph NAME"),
    (GOOD.replace("mul(%a", "mul(%nope"), C, r"line 4: undefined value %nope"),
    (GOOD.replace("return %b", "return %zz"), C, r"line 5: undefined value %zz"),
    (GOOD.replace("%b: f32[4] = mul", "%a: f32[4] = mul"), C, r"line 4: duplicate value name %a"),
    (GOOD.replace("%a: f32[4] = add", "%x: f32[4] = add"), C, r"line 3: duplicate value name %x"),
    (GOOD.replace("const %c:", "const %x:"), {"x": C["c"]}, r"line 2: duplicate value name %x"),
    (GOOD.replace("%x: f32[4], %y", "%x: f32[4], %x"), C, r"duplicate value name %x"),
    (GOOD, None, r"line 2: no data for constant %c"),
    (GOOD, {"c": np.ones(3, np.float32)}, r"constant %c data is float32\[3\], declared f32\[4\]"),
    (GOOD, {"c": np.ones(4, np.float64)}, r"constant %c data is float64\[4\], declared f32\[4\]"),
    (GOOD.replace("const %c: f32[4]", "const c f32[4]"), C, r"line 2: bad const"),
    (GOOD.replace("%b: f32[4] = mul(%a, %c)", "%b: f32[4] := mul %a %c"), C, r"line 4: bad node"),
])
def test_parse_graph_errors(text, constants, message):
    with pytest.raises(ValueError, match=message):
        parse_graph(text, constants)


def test_parse_errors_are_parse_errors():
    for text, constants in [(GOOD, None), (GOOD.replace("mul(%a", "mul(%nope"), C), ("graph", None)]:
        with pytest.raises(ParseError):
            parse_graph(text, constants)


@pytest.mark.parametrize("old, new, line", [
    ("%a: f32[4] = add", "%a: q9[4] = add", 3),
    ("%a: f32[4] = add", "%a: f32[4]{scale=0.5} = add", 3),
    ("const %c: f32[4]", "const %c: f32[4] = [1.0, 2.0, 3.0, 4.0, 5.0]", 2),
    ("const %c: f32[4]", "const %c: u8[2] = [1, 300]", 2),
])
def test_parse_graph_malformed_line_is_parse_error(old, new, line):
    with pytest.raises(ParseError, match=f"line {line}"):
        parse_graph(GOOD.replace(old, new), C)
