"""The verifier: accepts valid graphs, rejects each kind of broken IR with a message naming the problem,
and reports every problem at once."""

from __future__ import annotations

import numpy as np
import pytest

from edgeopt.ir import Graph, TensorType, VerificationError, verify
from edgeopt.ir.graph import Node, Value

F4 = TensorType((2, 4), "f32")


def _graph() -> Graph:
    """x -> linear(w, b) -> relu -> softmax; a second output adds x."""
    g = Graph()
    x = g.add_input("x", TensorType((2, 8), "f32"))
    w = g.add_const(np.ones((4, 8), np.float32), "w")
    b = g.add_const(np.zeros(4, np.float32), "b")
    y = g.add("linear", [x, w, b], name="y")
    r = g.add("relu", [y], name="r")
    s = g.add("softmax", [r], {"axis": -1}, name="s")
    g.set_outputs([s, g.add("add", [r, y], name="t")])
    return g


def _problems(g: Graph) -> list[str]:
    with pytest.raises(VerificationError) as e:
        verify(g)
    head, *lines = str(e.value).split("\n")
    assert head == "IR verification failed:"
    return [ln.strip() for ln in lines]


def _node(g: Graph, name: str) -> Node:
    return next(n for n in g.nodes if n.outputs[0].name == name)


# -- valid graphs --------------------------------------------------------------------------------------------


def _identity() -> Graph:
    g = Graph()
    g.set_outputs([g.add_input("x", F4)])
    return g


def _const_output() -> Graph:
    g = Graph()
    g.add_input("x", F4)
    g.set_outputs([g.add_const(np.float32(1.0), "one")])
    return g


def _reuse() -> Graph:
    g = Graph()
    x = g.add_input("x", F4)
    m = g.add("mul", [x, x])
    g.set_outputs([m, m, x])
    return g


@pytest.mark.parametrize("build", [_graph, _identity, _const_output, _reuse])
def test_accepts_valid_graphs(build):
    verify(build())


def test_accepts_clone_and_node_inserted_at_index():
    g = _graph()
    verify(g.clone())
    e = g.add("exp", [g.inputs[0]], index=0)  # an unused node at the front is valid
    assert g.nodes[0].outputs[0] is e
    verify(g)


# -- each kind of breakage -----------------------------------------------------------------------------------


def _use_before_def(g):
    g.nodes[0], g.nodes[1] = g.nodes[1], g.nodes[0]  # relu now reads %y before linear defines it


def _foreign_value(g):
    other = Graph()
    stranger = other.add_input("x", TensorType((2, 8), "f32"))  # same name and type, other graph
    _node(g, "y").inputs[0] = stranger


def _self_loop(g):
    n = _node(g, "r")
    n.inputs[0] = n.outputs[0]


def _wrong_output_type(g):
    _node(g, "r").outputs[0].type = TensorType((2, 5), "f32")


def _wrong_output_dtype(g):
    _node(g, "t").outputs[0].type = TensorType((2, 4), "f16")


def _unknown_op(g):
    _node(g, "r").op = "frobnicate"


def _unknown_attr(g):
    _node(g, "s").attrs["temperature"] = 2.0


def _missing_required_attr(g):
    del _node(g, "s").attrs["axis"]


def _missing_default_attr(g):
    del _node(g, "y").attrs["weight_layout"]


def _tuple_attr(g):
    g.nodes.append(Node("transpose", [g.inputs[0]], {"perm": (1, 0)}))
    g.nodes[-1].outputs = [Value("tr", TensorType((8, 2), "f32"), g.nodes[-1])]


def _too_many_inputs(g):
    _node(g, "t").inputs.append(g.inputs[0])


def _too_few_inputs(g):
    _node(g, "y").inputs.pop()
    _node(g, "y").inputs.pop()


def _bad_attr_value(g):
    _node(g, "s").attrs["axis"] = 5


def _crashing_inference(g):
    n = Node("slice", [g.inputs[0]], {"axis": 0, "start": "a", "end": 2, "step": 1})
    n.outputs = [Value("c", F4, n)]
    g.nodes.append(n)


def _const_shape(g):
    g.constants["w"] = np.ones((8, 4), np.float32)


def _const_dtype(g):
    g.constants["b"] = np.zeros(4, np.float64)


def _const_without_value(g):
    g.constants["orphan"] = np.zeros(3, np.float32)


def _duplicate_node_name(g):
    _node(g, "t").outputs[0].name = "r"


def _duplicate_input_const_name(g):
    g.const_values["w"].name = "x"
    g.constants["x"] = g.constants.pop("w")
    g.const_values["x"] = g.const_values.pop("w")


def _no_outputs(g):
    g.set_outputs([])


def _undefined_output(g):
    g.outputs.append(Value("ghost", F4))


def _input_with_producer(g):
    g.inputs[0].producer = g.nodes[0]


def _broken_back_pointer(g):
    _node(g, "r").outputs[0].producer = None


def _extra_output(g):
    n = _node(g, "r")
    n.outputs.append(Value("r2", F4, n))


@pytest.mark.parametrize("breakage, message", [
    (_use_before_def, r"node 0 \(relu\): input %y is used before it is defined"),
    (_foreign_value, r"node 0 \(linear\): input %x is used before it is defined \(or not in the graph\)"),
    (_self_loop, r"node 1 \(relu\): input %r is used before it is defined"),
    (_wrong_output_type, r"node 1 \(relu\): output %r typed f32\[2,5\], schema infers f32\[2,4\]"),
    (_wrong_output_dtype, r"node 3 \(add\): output %t typed f16\[2,4\], schema infers f32\[2,4\]"),
    (_unknown_op, r"node 1 \(frobnicate\): unknown IR op 'frobnicate'"),
    (_unknown_attr, r"node 2 \(softmax\): softmax: unknown attribute\(s\) \['temperature'\]"),
    (_missing_required_attr, r"node 2 \(softmax\): softmax: missing required attribute 'axis'"),
    (_missing_default_attr, r"node 0 \(linear\): attributes \{\} are not in normal form"),
    (_tuple_attr, r"node 4 \(transpose\): attributes .* are not in normal form"),
    (_too_many_inputs, r"node 3 \(add\): add takes 2\.\.2 inputs, got 3"),
    (_too_few_inputs, r"node 0 \(linear\): linear takes 2\.\.3 inputs, got 1"),
    (_bad_attr_value, r"node 2 \(softmax\): axis 5 out of range for rank 2"),
    (_crashing_inference, r"node 4 \(slice\): type inference failed: TypeError"),
    (_const_shape, r"constant %w: data float32\[8, 4\] != type f32\[4,8\]"),
    (_const_dtype, r"constant %b: data float64\[4\] != type f32\[4\]"),
    (_const_without_value, r"constant orphan has no value"),
    (_duplicate_node_name, r"node 3 \(add\): value name %r defined twice"),
    (_duplicate_input_const_name, r"constant: value name %x defined twice"),
    (_no_outputs, r"graph has no outputs"),
    (_undefined_output, r"graph output %ghost is not defined"),
    (_input_with_producer, r"input %x has a producer"),
    (_broken_back_pointer, r"node 1 \(relu\): output %r does not point back to its node"),
    (_extra_output, r"node 1 \(relu\): 2 outputs, schema gives 1"),
])
def test_rejects(breakage, message):
    g = _graph()
    verify(g)
    breakage(g)
    with pytest.raises(VerificationError, match=message):
        verify(g)


def test_lists_every_problem_not_just_the_first():
    g = _graph()
    _foreign_value(g)
    _wrong_output_type(g)
    _unknown_attr(g)
    _const_dtype(g)
    _too_many_inputs(g)
    _undefined_output(g)
    problems = _problems(g)
    expected = [
        "constant %b: data float64[4] != type f32[4]",
        "node 0 (linear): input %x is used before it is defined (or not in the graph)",
        "node 1 (relu): output %r typed f32[2,5], schema infers f32[2,4]",
        "node 2 (softmax): softmax: unknown attribute(s) ['temperature']; known: ['axis']",
        "node 3 (add): add takes 2..2 inputs, got 3",
        "graph output %ghost is not defined",
    ]
    assert problems == expected


def test_one_node_can_have_several_problems():
    g = _graph()
    n = _node(g, "r")
    n.inputs[0] = Value("ghost", F4)
    n.outputs[0].type = TensorType((9,), "f32")
    n.outputs[0].producer = None
    problems = [p for p in _problems(g) if p.startswith("node 1 (relu): ")]
    assert problems == [
        "node 1 (relu): input %ghost is used before it is defined (or not in the graph)",
        "node 1 (relu): output %r typed f32[9], schema infers f32[2,4]",
        "node 1 (relu): output %r does not point back to its node",
    ]


def test_downstream_of_a_bad_node_is_still_checked():
    """An unknown op's output is still defined, so its readers are not reported as undefined-use."""
    g = _graph()
    _unknown_op(g)
    assert _problems(g) == ["node 1 (frobnicate): unknown IR op 'frobnicate'"]
