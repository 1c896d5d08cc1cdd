"""IR text round trip, type text, and the verifier's error reports."""

from __future__ import annotations

import numpy as np
import pytest

from edgeopt.ir import Graph, ParseError, QuantParams, TensorType, VerificationError, parse_graph, parse_type, verify
from edgeopt.ir.graph import Node, Value


@pytest.mark.parametrize("t", [
    TensorType((1, 3, 224, 224), "f32"), TensorType((), "f32"), TensorType((0, 4), "bool"), TensorType((7,), "i64"),
    TensorType((2, 2), "f16"), TensorType((1, 64), "u8", QuantParams((0.05,), (128,))),
    TensorType((4, 3), "i8", QuantParams((0.02, 0.5, 1e-3, 3.0), (0, 0, 1, -2), axis=0)),
])
def test_type_text_roundtrip(t):
    assert parse_type(t.text()) == t


@pytest.mark.parametrize("bad", ["f33[1]", "f32(1,2)", "f32[1,-2]", "f32[a]"])
def test_bad_type_text(bad):
    with pytest.raises((ValueError, TypeError)):
        parse_type(bad)


def _graph() -> Graph:
    rng = np.random.default_rng(0)
    g = Graph("net")
    x = g.add_input("x", TensorType((1, 3, 8, 8), "f32"))
    ids = g.add_input("ids", TensorType((2,), "i64"))
    w = g.add_const(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w")
    half = g.add_const(np.float32(0.5), "half")
    table = g.add_const(rng.standard_normal((5, 4)).astype(np.float32), "table")
    y = g.add("conv2d", [x, w], {"padding": [1, 1, 1, 1], "stride": [2, 2]}, source='m.py:3  y = "conv" ü')
    z = g.add("clamp", [g.add("mul", [y, half])], {"min": 0.0, "max": None})
    e = g.add("take", [table, ids], {"axis": 0})
    g.set_outputs([g.add("layer_norm", [z], {"eps": 1e-5}), e])
    return g


def test_graph_print_parse_print_is_exact():
    g = _graph()
    verify(g)
    text = str(g)
    big = {k: v for k, v in g.constants.items() if v.size > 16}
    again = parse_graph(text, big)
    verify(again)
    assert str(again) == text
    assert [n.op for n in again.nodes] == [n.op for n in g.nodes]
    assert all(np.array_equal(again.constants[k], v) for k, v in g.constants.items())
    assert '"max": null' in text and "@\"m.py:3" in text and "const %half: f32[] = 0.5" in text


def test_parse_errors_name_the_line():
    text = str(_graph())
    with pytest.raises(ParseError, match="no data for constant %w"):
        parse_graph(text)
    with pytest.raises(ParseError, match="undefined value %nope"):
        parse_graph(text.replace("mul(%conv2d", "mul(%nope"), _graph().constants)


def test_verifier_accepts_and_lists_every_problem():
    g = _graph()
    verify(g)
    conv, mul = g.nodes[0], g.nodes[1]
    mul.outputs[0].type = TensorType((1, 4, 4, 5), "f32")  # disagrees with the schema
    conv.inputs[0] = Value("ghost", TensorType((1, 3, 8, 8), "f32"))  # not in the graph
    g.nodes.append(Node("frobnicate", [g.inputs[0]]))
    with pytest.raises(VerificationError) as e:
        verify(g)
    msg = str(e.value)
    assert "%ghost is used before it is defined" in msg
    assert "schema infers f32[1,4,4,4]" in msg
    assert "unknown IR op 'frobnicate'" in msg


@pytest.mark.parametrize("breakage, message", [
    (lambda g: g.nodes[0].attrs.update(bogus=1), "unknown attribute"),
    (lambda g: g.nodes[0].attrs.pop("groups"), "not in normal form"),
    (lambda g: g.nodes[1].inputs.append(g.inputs[0]), "takes 2..2 inputs"),
    (lambda g: g.constants.update(w=np.zeros((4, 3, 3, 3), np.float64)), "data float64"),
    (lambda g: setattr(g.nodes[1].outputs[0], "name", "conv2d"), "defined twice"),
    (lambda g: g.set_outputs([]), "no outputs"),
    (lambda g: g.nodes.reverse(), "used before it is defined"),
])
def test_verifier_rejects(breakage, message):
    g = _graph()
    breakage(g)
    with pytest.raises(VerificationError, match=message):
        verify(g)
