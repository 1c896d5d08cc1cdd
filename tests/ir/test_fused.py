"""Fused nodes (``edgeopt.ir.fused``): text form, verifier, interpreter, clone/toposort and ``fuse_nodes``."""

from __future__ import annotations

import textwrap

import numpy as np
import pytest

from edgeopt.ir import Graph, ParseError, TensorType, VerificationError, interpret, parse_graph, print_graph, verify
from edgeopt.ir.fused import body_problems, fuse_nodes, is_fused

RNG = np.random.default_rng(11)
W = RNG.standard_normal((8, 3, 1, 1)).astype(np.float32)
F23 = TensorType((2, 3), "f32")


def canon(text: str) -> str:
    return textwrap.dedent(text).strip() + "\n"


def roundtrip(text: str, consts: dict | None = None) -> Graph:
    """Parse ``text`` (written in canonical form), check print is exact and print -> parse -> print too."""
    g = parse_graph(text, consts)
    verify(g)
    printed = print_graph(g)
    assert printed == canon(text)
    assert print_graph(parse_graph(printed, consts)) == printed
    return g


def _problems(g: Graph) -> list[str]:
    with pytest.raises(VerificationError) as e:
        verify(g)
    head, *lines = str(e.value).split("\n")
    assert head == "IR verification failed:"
    return [ln.strip() for ln in lines]


def _fused(g: Graph):
    return next(n for n in g.nodes if is_fused(n))


CONV = """
graph main(%x: f32[1,3,4,4], %skip: f32[1,8,4,4]) {
  const %w: f32[8,3,1,1]
  const %b: f32[8] = [0.5, -0.5, 1.0, 2.0, 0.0, 0.25, -1.0, 3.0]
  %relu: f32[1,8,4,4] = fused(%x, %w, %b, %skip) {"name": "conv2d_add_relu", "anchor": "conv2d"} @"model.py:3  y = f(x)"
    graph conv2d_add_relu(%x: f32[1,3,4,4], %w: f32[8,3,1,1], %b: f32[8], %skip: f32[1,8,4,4]) {
      %conv2d: f32[1,8,4,4] = conv2d(%x, %w, %b) {"stride": [1, 1], "padding": [0, 0, 0, 0], "dilation": [1, 1], "groups": 1, "weight_layout": "OIHW", "layout": "NCHW"}
      %add: f32[1,8,4,4] = add(%conv2d, %skip) @"model.py:3  y = f(x)"
      %relu: f32[1,8,4,4] = relu(%add)
      return %relu
    }
  return %relu
}"""  # noqa: E501

#: two outputs (one read by a later node, one a graph output), a scalar constant in the body, an outside node
MULTI = """
graph main(%x: f32[2,3], %y: f32[2,3]) {
  const %half: f32[] = 0.5
  %mul: f32[2,3], %tanh: f32[2,3] = fused(%x, %y) {"name": "add_mul_tanh", "anchor": "tanh"}
    graph add_mul_tanh(%x: f32[2,3], %y: f32[2,3]) {
      const %half: f32[] = 0.5
      const %three: f32[1] = [3.0]
      %add: f32[2,3] = add(%x, %y)
      %mul: f32[2,3] = mul(%add, %half)
      %tanh_in: f32[2,3] = mul(%mul, %three)
      %tanh: f32[2,3] = tanh(%tanh_in)
      return %mul, %tanh
    }
  %exp: f32[2,3] = exp(%y)
  %sub: f32[2,3] = sub(%tanh, %exp)
  %out: f32[2,3] = fused(%sub, %half) {"name": "relu_mul", "anchor": null}
    graph relu_mul(%sub: f32[2,3], %half: f32[]) {
      %r: f32[2,3] = relu(%sub)
      %out: f32[2,3] = mul(%r, %half)
      return %out
    }
  return %out, %mul
}"""

UNFUSED_MULTI = """
graph main(%x: f32[2,3], %y: f32[2,3]) {
  const %half: f32[] = 0.5
  const %three: f32[1] = [3.0]
  %add: f32[2,3] = add(%x, %y)
  %exp: f32[2,3] = exp(%y)
  %mul: f32[2,3] = mul(%add, %half)
  %tanh_in: f32[2,3] = mul(%mul, %three)
  %tanh: f32[2,3] = tanh(%tanh_in)
  %sub: f32[2,3] = sub(%tanh, %exp)
  %r: f32[2,3] = relu(%sub)
  %out: f32[2,3] = mul(%r, %half)
  return %out, %mul
}"""


def _inputs(g: Graph, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(v.type.shape).astype(v.type.np_dtype) for v in g.inputs]


# -- text form -----------------------------------------------------------------------------------------------


def test_conv_fused_node_roundtrips_with_weights_and_sources():
    g = roundtrip(CONV, {"w": W})
    f = _fused(g)
    assert f.attrs == {"name": "conv2d_add_relu", "anchor": "conv2d"}
    assert f.source == "model.py:3  y = f(x)"
    assert [n.op for n in f.body.nodes] == ["conv2d", "add", "relu"]
    assert f.body.nodes[1].source == "model.py:3  y = f(x)"
    assert f.inputs[1] is g.const_values["w"]
    assert not f.body.constants  # the weight is a parameter of the body, not a body constant


def test_multi_output_fused_node_and_scalar_body_constants_roundtrip():
    g = roundtrip(MULTI)
    f = g.nodes[0]
    assert [o.name for o in f.outputs] == ["mul", "tanh"]
    assert all(o.producer is f for o in f.outputs)
    assert [v.name for v in f.body.outputs] == ["mul", "tanh"]
    assert f.body.constants["half"].shape == () and f.body.constants["three"].shape == (1,)
    # body names live in their own scope: %half is both an outer constant and a body constant
    assert g.constants["half"] is not f.body.constants["half"]
    assert g.nodes[-1].attrs == {"name": "relu_mul", "anchor": None}


def test_two_fused_nodes_in_a_row_keep_their_bodies_apart():
    g = parse_graph(MULTI)
    a, b = g.nodes[0], g.nodes[-1]
    assert is_fused(a) and is_fused(b) and not is_fused(g.nodes[1])
    assert [n.op for n in a.body.nodes] == ["add", "mul", "mul", "tanh"]
    assert [n.op for n in b.body.nodes] == ["relu", "mul"]
    assert [n.op for n in g.nodes] == ["fused", "exp", "sub", "fused"]


def test_fuse_nodes_output_roundtrips():
    g = parse_graph(UNFUSED_MULTI)
    nodes = {n.outputs[0].name: n for n in g.nodes}
    fuse_nodes(g, [nodes[k] for k in ("add", "mul", "tanh_in", "tanh")], "add_mul_tanh")
    verify(g)
    text = print_graph(g)
    assert print_graph(parse_graph(text)) == text


def test_fused_node_without_a_body_in_text_is_a_parse_error():
    text = """
    graph main(%x: f32[2,3]) {
      %r: f32[2,3] = fused(%x) {"name": "relu"}
      return %r
    }"""
    with pytest.raises(ParseError, match="followed by its body"):
        parse_graph(text)


def test_unterminated_fused_body_is_a_parse_error():
    text = """
    graph main(%x: f32[2,3]) {
      %r: f32[2,3] = fused(%x) {"name": "relu"}
        graph relu(%x: f32[2,3]) {
          %r: f32[2,3] = relu(%x)
          return %r"""
    with pytest.raises(ParseError):
        parse_graph(text)


def test_body_missing_its_closing_brace_is_a_parse_error():
    """Indentation is not significant: without its '}' the body would swallow the rest of the outer graph."""
    text = """
    graph main(%x: f32[2,3]) {
      %r: f32[2,3] = fused(%x) {"name": "relu"}
        graph relu(%x: f32[2,3]) {
          %r: f32[2,3] = relu(%x)
          return %r
      %s: f32[2,3] = exp(%r)
      return %s
    }"""
    with pytest.raises(ParseError, match="unterminated fused body"):
        parse_graph(text)


def test_body_values_are_not_visible_outside():
    text = """
    graph main(%x: f32[2,3]) {
      %r: f32[2,3] = fused(%x) {"name": "relu_exp"}
        graph relu_exp(%x: f32[2,3]) {
          %a: f32[2,3] = relu(%x)
          %r: f32[2,3] = exp(%a)
          return %r
        }
      %b: f32[2,3] = add(%r, %a)
      return %b
    }"""
    with pytest.raises(ParseError, match="undefined value %a"):
        parse_graph(text)


# -- verifier ------------------------------------------------------------------------------------------------


def test_valid_fused_graphs_verify():
    verify(parse_graph(CONV, {"w": W}))
    verify(parse_graph(MULTI))
    assert body_problems(_fused(parse_graph(CONV, {"w": W}))) == []


def test_body_parameter_type_mismatch():
    g = parse_graph(MULTI)
    f = g.nodes[0]
    f.body.inputs[1].type = TensorType((2, 3), "f16")
    problems = _problems(g)
    assert any("argument %y: f32[2,3] != body parameter %y: f16[2,3]" in p for p in problems), problems


def test_body_parameter_count_mismatch():
    g = parse_graph(MULTI)
    g.nodes[0].inputs.pop()
    problems = _problems(g)
    assert any("body takes 2 parameters, node passes 1" in p for p in problems), problems


def test_wrong_output_count():
    g = parse_graph(MULTI)
    f = g.nodes[0]
    f.body.outputs.pop()  # the body now returns only %mul; the node still has two outputs
    problems = _problems(g)
    assert any("body returns 1 values, node has 2 outputs" in p for p in problems), problems


def test_wrong_output_type():
    g = parse_graph(CONV, {"w": W})
    f = _fused(g)
    f.outputs[0].type = TensorType((1, 8, 4, 4), "f16")
    problems = _problems(g)
    assert any("output %relu: f16[1,8,4,4] != body result %relu: f32[1,8,4,4]" in p for p in problems), problems


def test_body_result_must_be_computed_in_the_body():
    g = parse_graph(MULTI)
    f = g.nodes[0]
    f.body.outputs[0] = f.body.inputs[0]  # same type, but a parameter passed straight through
    problems = _problems(g)
    assert any("body result %x is not computed in the body" in p for p in problems), problems


def test_non_scalar_constant_in_a_body():
    g = parse_graph(MULTI)
    body = g.nodes[0].body
    c = body.add_const(np.ones((2, 3), np.float32), "weight")
    body.nodes[0].inputs[1] = c  # add(%x, %weight): still well typed
    problems = _problems(g)
    assert any("body constant %weight is not a scalar" in p for p in problems), problems


def test_scalar_constant_of_rank_two_is_allowed_in_a_body():
    g = parse_graph(MULTI)
    body = g.nodes[0].body
    body.nodes[0].inputs[1] = body.add_const(np.ones((1, 1), np.float32), "one")
    verify(g)


def test_nested_fused_nodes():
    g = parse_graph(MULTI)
    body = g.nodes[0].body
    fuse_nodes(body, body.nodes[2:], "inner")  # a fused node inside a fused body
    verify(body)  # the body itself is a fine graph
    problems = _problems(g)
    assert any("fused nodes cannot nest" in p for p in problems), problems


def test_fused_node_without_a_body():
    g = parse_graph(MULTI)
    g.nodes[0].body = None
    problems = _problems(g)
    assert any("fused node has no body" in p for p in problems), problems


def test_only_fused_nodes_have_a_body():
    g = parse_graph(UNFUSED_MULTI)
    g.nodes[0].body = parse_graph(MULTI).nodes[0].body
    problems = _problems(g)
    assert any("only fused nodes have a body" in p for p in problems), problems


def test_problems_inside_a_body_are_reported_with_the_node():
    g = parse_graph(MULTI)
    body = g.nodes[0].body
    body.nodes[1].inputs[0] = body.nodes[2].outputs[0]  # use before definition inside the body
    problems = _problems(g)
    assert any(p.startswith("node 0 (fused) body:") and "used before it is defined" in p for p in problems), problems


def test_fused_node_needs_a_name_attribute():
    g = parse_graph(MULTI)
    del g.nodes[0].attrs["name"]
    problems = _problems(g)
    assert any("missing required attribute 'name'" in p for p in problems), problems


# -- interpreter ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1])
def test_interpreter_on_fused_graph_equals_unfused(seed):
    fused, unfused = parse_graph(MULTI), parse_graph(UNFUSED_MULTI)
    xs = _inputs(fused, seed)
    for a, b in zip(interpret(unfused, xs), interpret(fused, xs)):
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(b, a)


def test_interpreter_on_fused_conv_equals_unfused():
    g = parse_graph(CONV, {"w": W})
    ref = Graph()
    x, skip = ref.add_input("x", g.inputs[0].type), ref.add_input("skip", g.inputs[1].type)
    c = ref.add("conv2d", [x, ref.add_const(W, "w"), ref.add_const(g.constants["b"], "b")])
    ref.set_outputs([ref.add("relu", [ref.add("add", [c, skip])])])
    xs = _inputs(g)
    np.testing.assert_array_equal(interpret(g, xs)[0], interpret(ref, xs)[0])


# -- clone and toposort --------------------------------------------------------------------------------------


def test_clone_deep_copies_bodies():
    g = parse_graph(MULTI)
    text = print_graph(g)
    c = g.clone()
    assert print_graph(c) == text
    f, cf = g.nodes[0], c.nodes[0]
    assert cf.body is not f.body
    assert all(a is not b for a, b in zip(cf.body.nodes, f.body.nodes))
    assert all(a is not b for a, b in zip(cf.body.inputs, f.body.inputs))
    assert all(a is not b for a, b in zip(cf.outputs, f.outputs))
    assert all(o.producer is cf for o in cf.outputs)
    # editing the clone's body leaves the original alone
    cf.body.nodes[-1].op = "sigmoid"
    cf.body.nodes[0].attrs["x"] = 1
    cf.body.outputs.reverse()
    assert print_graph(g) == text
    verify(g)
    xs = _inputs(g)
    np.testing.assert_array_equal(interpret(g, xs)[0], interpret(parse_graph(MULTI), xs)[0])


def test_toposort_restores_order_with_fused_nodes():
    g = parse_graph(MULTI)
    text = print_graph(g)
    g.toposort()
    assert print_graph(g) == text  # already valid: unchanged
    g.nodes.reverse()
    with pytest.raises(VerificationError):
        verify(g)
    g.toposort()
    verify(g)
    assert g.nodes[-1].outputs[0].name == "out"
    np.testing.assert_array_equal(interpret(g, _inputs(g))[0], interpret(parse_graph(MULTI), _inputs(g))[0])


def test_toposort_keeps_valid_order_of_independent_nodes():
    g = Graph()
    x = g.add_input("x", F23)
    a, b, c = (g.add(op, [x]) for op in ("exp", "relu", "tanh"))
    g.set_outputs([c, a, b])
    order = list(g.nodes)
    g.toposort()
    assert g.nodes == order


def test_toposort_detects_cycles():
    g = parse_graph(UNFUSED_MULTI)
    nodes = {n.outputs[0].name: n for n in g.nodes}
    nodes["add"].inputs[0] = nodes["tanh"].outputs[0]  # add -> mul -> tanh_in -> tanh -> add
    with pytest.raises(ValueError, match="cycle"):
        g.toposort()


def test_toposort_detects_a_self_loop():
    g = Graph()
    x = g.add_input("x", F23)
    a = g.add("add", [x, x])
    a.producer.inputs[1] = a
    g.set_outputs([a])
    with pytest.raises(ValueError, match="cycle"):
        g.toposort()


def test_toposort_detects_a_cycle_through_a_fused_node():
    g = parse_graph(MULTI)
    f = g.nodes[0]
    f.inputs[1] = g.nodes[2].outputs[0]  # the fused node reads %sub, which reads the fused node's %tanh
    with pytest.raises(ValueError, match="cycle"):
        g.toposort()


# -- fuse_nodes ----------------------------------------------------------------------------------------------


def test_fuse_nodes_on_a_non_contiguous_convex_set():
    g = parse_graph(UNFUSED_MULTI)
    ref = g.clone()
    nodes = {n.outputs[0].name: n for n in g.nodes}
    tanh, mul = nodes["tanh"].outputs[0], nodes["mul"].outputs[0]
    # %exp sits between %add and %mul in graph order but is not a member (and reads no member)
    f = fuse_nodes(g, [nodes[k] for k in ("tanh", "add", "mul", "tanh_in")], "add_mul_tanh")
    verify(g)
    assert body_problems(f) == []
    assert [n.op for n in f.body.nodes] == ["add", "mul", "mul", "tanh"]  # graph order, not argument order
    assert f.attrs == {"name": "add_mul_tanh", "anchor": "tanh"}  # default anchor: the last member
    assert [v.name for v in f.inputs] == ["x", "y"]
    # outputs read outside (or graph outputs) keep their Value objects: readers need no rewiring
    assert f.outputs == [mul, tanh]
    assert mul.producer is f and tanh.producer is f
    assert nodes["sub"].inputs[0] is tanh and g.outputs[1] is mul
    # scalar constants are copied into the body; the outer ones remain where something else reads them
    assert sorted(f.body.constants) == ["half", "three"]
    assert [n.op for n in g.nodes] == ["fused", "exp", "sub", "relu", "mul"]
    xs = _inputs(g)
    for a, b in zip(interpret(ref, xs), interpret(g, xs)):
        np.testing.assert_array_equal(b, a)


def test_fuse_nodes_with_an_outside_node_between_that_reads_a_member():
    g = Graph()
    x = g.add_input("x", F23)
    a = g.add("relu", [x], name="a")
    o = g.add("exp", [a], name="o")  # outside, between the members, reads member %a
    b = g.add("tanh", [a], name="b")
    g.set_outputs([g.add("add", [o, b], name="s")])
    ref = g.clone()
    f = fuse_nodes(g, [a.producer, b.producer], "relu_tanh", anchor=a.producer)
    verify(g)
    assert f.outputs == [a, b] and f.attrs["anchor"] == "relu"
    assert g.nodes.index(f) < g.nodes.index(o.producer)
    xs = _inputs(g)
    np.testing.assert_array_equal(interpret(g, xs)[0], interpret(ref, xs)[0])


def test_fuse_nodes_weights_stay_parameters():
    g = Graph()
    x = g.add_input("x", TensorType((1, 3, 4, 4), "f32"))
    w = g.add_const(W, "w")
    s = g.add_const(np.float32(2.0), "s")
    c = g.add("conv2d", [x, w])
    m = g.add("mul", [c, s])
    g.set_outputs([m])
    f = fuse_nodes(g, [c.producer, m.producer], "conv2d_mul", anchor=c.producer)
    verify(g)
    assert f.inputs == [x, w]
    assert list(f.body.constants) == ["s"] and f.body.constants["s"] == np.float32(2.0)
    assert f.attrs["anchor"] == "conv2d"


def test_fuse_nodes_reads_a_value_twice_as_one_parameter():
    g = Graph()
    x, y = g.add_input("x", F23), g.add_input("y", F23)
    a = g.add("mul", [x, y])
    b = g.add("add", [a, x])
    g.set_outputs([b])
    f = fuse_nodes(g, [a.producer, b.producer], "mul_add")
    verify(g)
    assert f.inputs == [x, y] and len(f.body.inputs) == 2


def test_fuse_nodes_of_a_non_convex_set_is_refused():
    g = Graph()
    x = g.add_input("x", F23)
    a = g.add("relu", [x])
    o = g.add("exp", [a])  # a -> o -> b leaves the set and comes back
    b = g.add("add", [a, o])
    g.set_outputs([b])
    with pytest.raises(ValueError, match="cycle"):
        fuse_nodes(g, [a.producer, b.producer], "bad")


def test_fuse_nodes_of_nodes_not_in_the_graph():
    g = parse_graph(UNFUSED_MULTI)
    other = parse_graph(UNFUSED_MULTI)
    with pytest.raises(ValueError, match="not in the graph"):
        fuse_nodes(g, [g.nodes[0], other.nodes[1]], "bad")
