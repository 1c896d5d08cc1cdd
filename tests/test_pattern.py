"""The pattern language (``edgeopt.pattern``): matching, rewriting and fusion planning."""

from __future__ import annotations

import numpy as np
import pytest

from edgeopt.ir import Graph, TensorType, interpret, parse_graph, print_graph, verify
from edgeopt.ir.fused import is_fused
from edgeopt.pattern import Any, Const, Either, FusionRule, Op, explain, fuse, match, plan_groups, remove_dead, rewrite
from edgeopt.testing import assert_same_numerics, random_inputs

RNG = np.random.default_rng(5)
W = RNG.standard_normal((4, 8)).astype(np.float32)
B = RNG.standard_normal(4).astype(np.float32)
F = TensorType((2, 4), "f32")


def _by_name(g: Graph) -> dict:
    return {o.name: n for n in g.nodes for o in n.outputs}


LINEARS = """
graph main(%x: f32[2,8]) {
  const %w: f32[4,8]
  const %b: f32[4] = [0.5, -0.5, 1.0, 2.0]
  %y: f32[2,4] = linear(%x, %w, %b) {"weight_layout": "oi"}
  %z: f32[2,4] = linear(%x, %w) {"weight_layout": "oi"}
  %s: f32[2,4] = add(%y, %z)
  return %s
}"""

LAYER = Op("linear", Any("x"), Const("w"), Any("b", optional=True), name="y")


# -- match ---------------------------------------------------------------------------------------------------


def test_match_binds_values_nodes_and_constants():
    g = parse_graph(LINEARS, {"w": W})
    n = _by_name(g)
    m = match(LAYER, n["y"].outputs[0], g)
    assert m is not None
    assert m["x"] is g.inputs[0] and m["w"] is g.const_values["w"] and m["b"] is g.const_values["b"]
    assert m.node("y") is n["y"]
    np.testing.assert_array_equal(m.const("w"), W)
    np.testing.assert_array_equal(m.get_const("b"), [0.5, -0.5, 1.0, 2.0])


def test_optional_input_matches_a_missing_trailing_input():
    g = parse_graph(LINEARS, {"w": W})
    m = match(LAYER, _by_name(g)["z"].outputs[0], g)
    assert m is not None and "b" not in m and m.get_const("b") is None
    strict = Op("linear", Any("x"), Const("w"), Any("b"))
    assert match(strict, _by_name(g)["z"].outputs[0], g) is None
    assert match(strict, _by_name(g)["y"].outputs[0], g) is not None


def test_optional_op_pattern_matches_a_missing_input():
    g = parse_graph(LINEARS, {"w": W})
    p = Op("linear", Any(), Const(), Op("relu", optional=True))
    assert match(p, _by_name(g)["z"].outputs[0], g) is not None
    assert match(p, _by_name(g)["y"].outputs[0], g) is None  # %b is there and is not a relu


def test_more_node_inputs_than_patterns_does_not_match():
    g = parse_graph(LINEARS, {"w": W})
    two = Op("linear", Any(), Const())
    assert match(two, _by_name(g)["y"].outputs[0], g) is None  # three inputs
    assert match(two, _by_name(g)["z"].outputs[0], g) is not None


def test_op_without_input_patterns_does_not_look_at_inputs():
    g = parse_graph(LINEARS, {"w": W})
    for name in ("y", "z"):
        assert match(Op("linear"), _by_name(g)[name].outputs[0], g) is not None
    assert match(Op("relu"), _by_name(g)["y"].outputs[0], g) is None


def test_op_by_name_set_and_by_kind():
    g = parse_graph(LINEARS, {"w": W})
    s = _by_name(g)["s"].outputs[0]
    assert match(Op(("mul", "add")), s, g) is not None
    assert match(Op({"mul", "sub"}), s, g) is None
    assert match(Op(kind="elementwise"), s, g) is not None
    assert match(Op(kind=("reduction", "contraction")), s, g) is None
    assert match(Op(kind="contraction"), _by_name(g)["y"].outputs[0], g) is not None


def test_values_that_are_not_node_outputs_do_not_match_op():
    g = parse_graph(LINEARS, {"w": W})
    assert match(Op(), g.inputs[0], g) is None
    assert match(Op(), g.const_values["w"], g) is None
    assert match(Any("v"), g.inputs[0], g)["v"] is g.inputs[0]


def test_a_name_bound_twice_must_be_the_same_value():
    g = Graph()
    x, y = g.add_input("x", F), g.add_input("y", F)
    sq, xy = g.add("mul", [x, x]), g.add("mul", [x, y])
    g.set_outputs([sq, xy])
    p = Op("mul", Any("a"), Any("a"))
    assert match(p, sq, g)["a"] is x
    assert match(p, xy, g) is None


def test_where_predicates():
    g = parse_graph(LINEARS, {"w": W})
    y = _by_name(g)["y"].outputs[0]
    assert match(Op("linear", where=lambda n: n.attrs["weight_layout"] == "oi"), y, g) is not None
    assert match(Op("linear", where=lambda n: n.attrs["weight_layout"] == "io"), y, g) is None
    # Any's predicate sees the Value, Const's sees the array
    assert match(Op("linear", Any(where=lambda v: v.type.shape == (2, 8))), y, g) is None  # 3 inputs, 1 pattern
    assert match(Op("linear", Any(where=lambda v: v.type.shape == (2, 8)), Any(), Any()), y, g) is not None
    assert match(Op("linear", Any(where=lambda v: v.type.rank == 3), Any(), Any()), y, g) is None
    assert match(Op("linear", Any(), Const(where=lambda a: a.shape == (4, 8)), Any()), y, g) is not None
    assert match(Op("linear", Any(), Const(where=lambda a: bool((a > 100).all())), Any()), y, g) is None


def test_const_scalar():
    g = Graph()
    x = g.add_input("x", F)
    c0 = g.add_const(np.float32(2.0), "c0")
    c11 = g.add_const(np.full((1, 1), 2.0, np.float32), "c11")
    c4 = g.add_const(np.full(4, 2.0, np.float32), "c4")
    outs = [g.add("mul", [x, c]) for c in (c0, c11, c4, x)]
    g.set_outputs(outs)
    p = Op("mul", Any("x"), Const("c", scalar=True))
    assert [match(p, o, g) is not None for o in outs] == [True, True, False, False]
    anyc = Op("mul", Any("x"), Const("c"))
    assert [match(anyc, o, g) is not None for o in outs] == [True, True, True, False]


def test_commutative_matching():
    g = Graph()
    x = g.add_input("x", F)
    c = g.add_const(np.float32(3.0), "c")
    left = g.add("add", [g.add("relu", [x]), c])
    right = g.add("add", [c, g.add("relu", [x])])
    g.set_outputs([left, right])
    p = Op("add", Op("relu", Any("x"), name="r"), Const("c"), name="out")
    assert match(p, left, g) is not None and match(p, right, g) is None
    pc = Op("add", Op("relu", Any("x"), name="r"), Const("c"), name="out", commutative=True)
    for v in (left, right):
        m = match(pc, v, g)
        assert m is not None and m["c"] is c and m["x"] is x and m.node("r").op == "relu"
        assert m["r"] is v.producer.inputs[0 if v is left else 1]


def test_commutative_retry_drops_bindings_of_the_failed_order():
    g = Graph()
    x = g.add_input("x", F)
    c = g.add_const(np.float32(3.0), "c")
    v = g.add("mul", [c, x])
    g.set_outputs([v])
    # order 1 binds first=%c, then fails on Const(%x); order 2 must rebind first=%x
    m = match(Op("mul", Any("first"), Const("k"), commutative=True), v, g)
    assert m is not None and m["first"] is x and m["k"] is c
    assert dict(m) == {"first": x, "k": c}


def test_commutative_applies_only_to_two_inputs_and_is_off_by_default():
    g = Graph()
    x, y = g.add_input("x", F), g.add_input("y", F)
    v = g.add("sub", [y, g.add("exp", [x])])
    g.set_outputs([v])
    assert match(Op("sub", Op("exp"), Any()), v, g) is None
    assert match(Op("sub", Op("exp"), Any(), commutative=True), v, g) is not None


def test_inner_op_needs_a_single_reader_unless_shared():
    g = Graph()
    x = g.add_input("x", F)
    r = g.add("relu", [x])
    a = g.add("add", [r, x])
    b = g.add("exp", [r])  # a second reader of %r
    g.set_outputs([a, b])
    assert match(Op("add", Op("relu"), Any()), a, g) is None
    assert match(Op("add", Op("relu", shared=True), Any()), a, g) is not None
    # the root itself may have any number of readers
    assert match(Op("relu", Any("x")), r, g) is not None


def test_a_graph_output_counts_as_a_reader():
    g = Graph()
    x = g.add_input("x", F)
    r = g.add("relu", [x])
    a = g.add("add", [r, x])
    g.set_outputs([a, r])
    assert match(Op("add", Op("relu"), Any()), a, g) is None
    assert match(Op("add", Op("relu", shared=True), Any()), a, g) is not None


def test_swish_example_from_the_docs():
    """x * sigmoid(x), either order, becomes silu(x); x * sigmoid(y) does not."""
    g = Graph()
    x, y = g.add_input("x", F), g.add_input("y", F)
    a = g.add("mul", [x, g.add("sigmoid", [x])])
    b = g.add("mul", [g.add("sigmoid", [y]), y])
    c = g.add("mul", [x, g.add("sigmoid", [y])])
    g.set_outputs([a, b, c])
    before = g.clone()
    xv = Any("x")
    swish = Op("mul", xv, Op("sigmoid", xv), commutative=True)
    assert rewrite(g, swish, lambda m, b: b.add("silu", [m["x"]])) == 2
    verify(g)
    assert g.op_counts() == {"silu": 2, "sigmoid": 1, "mul": 1}
    xs = random_inputs(before)
    for e, o in zip(interpret(before, xs), interpret(g, xs)):
        np.testing.assert_allclose(o, e, rtol=1e-6, atol=1e-6)


def test_fused_nodes_never_match():
    g = parse_graph(LINEARS, {"w": W})
    n = _by_name(g)
    fuse(g, FusionRule("t", anchor=Op("linear"), epilogue=Op("add"), min_size=1))
    fused = [m for m in g.nodes if is_fused(m)]
    assert fused and all(not Op().test(m) and not Op("fused").test(m) for m in fused)
    assert n["s"] not in g.nodes


# -- rewrite -------------------------------------------------------------------------------------------------

CHAIN = """
graph main(%x: f32[2,4]) {
  const %one: f32[] = 1.0
  const %two: f32[] = 2.0
  %a: f32[2,4] = mul(%x, %one)
  %b: f32[2,4] = relu(%a)
  %c: f32[2,4] = mul(%b, %one)
  %d: f32[2,4] = mul(%c, %two)
  %e: f32[2,4] = exp(%x)
  return %d, %e
}"""


def test_rewrite_counts_and_removes_dead_nodes_and_constants():
    g = parse_graph(CHAIN)
    before = g.clone()
    times_one = Op("mul", Any("x"), Const(where=lambda a: bool((a == 1).all())))
    assert rewrite(g, times_one, lambda m, b: m["x"]) == 2
    verify(g)
    assert print_graph(g) == print_graph(parse_graph("""
    graph main(%x: f32[2,4]) {
      const %two: f32[] = 2.0
      %b: f32[2,4] = relu(%x)
      %d: f32[2,4] = mul(%b, %two)
      %e: f32[2,4] = exp(%x)
      return %d, %e
    }"""))
    assert_same_numerics(before, g)
    assert rewrite(g, times_one, lambda m, b: m["x"]) == 0


def test_rewrite_skips_when_fn_returns_none_or_the_root():
    g = parse_graph(CHAIN)
    text = print_graph(g)
    assert rewrite(g, Op("mul"), lambda m, b: None) == 0
    assert rewrite(g, Op("mul", name="y"), lambda m, b: m["y"]) == 0
    assert print_graph(g) == text  # nothing rewritten: dead code is not even touched


def test_rewrite_builder_inserts_before_the_root_and_new_constants():
    g = parse_graph(CHAIN)
    before = g.clone()

    def fold(m, b):  # (v * 1) * 2 with a const: one multiplication by a new constant
        k = b.const(np.float32(m.const("k1") * m.const("k2")), "k")
        return b.add("mul", [m["v"], k], name="folded")

    p = Op("mul", Op("mul", Any("v"), Const("k1", scalar=True)), Const("k2", scalar=True))
    assert rewrite(g, p, fold) == 1
    verify(g)
    n = _by_name(g)
    assert "c" not in n and "d" not in n
    assert n["folded"].inputs[0] is n["b"].outputs[0]
    assert g.outputs[0] is n["folded"].outputs[0]
    assert g.constants["k"] == np.float32(2.0)
    assert g.nodes.index(n["folded"]) < g.nodes.index(n["e"])
    assert_same_numerics(before, g)


def test_rewrite_of_a_chain_applies_to_new_nodes_producers():
    g = Graph()
    x = g.add_input("x", TensorType((2, 3, 4), "f32"))
    r1 = g.add("reshape", [x], {"shape": [6, 4]})
    r2 = g.add("reshape", [r1], {"shape": [24]})
    r3 = g.add("reshape", [r2], {"shape": [4, 6]})
    g.set_outputs([r3])
    before = g.clone()
    p = Op("reshape", Op("reshape", Any("x")), name="outer")
    count = rewrite(g, p, lambda m, b: b.add("reshape", [m["x"]], {"shape": list(m["outer"].type.shape)}))
    assert count == 2
    verify(g)
    assert [n.op for n in g.nodes] == ["reshape"] and g.nodes[0].inputs[0] is x
    assert_same_numerics(before, g)


def test_remove_dead():
    g = parse_graph(CHAIN)
    g.set_outputs([g.outputs[0]])
    assert remove_dead(g) == 1  # %e
    assert "exp" not in g.op_counts()
    verify(g)


# -- fusion planning -----------------------------------------------------------------------------------------

EW = FusionRule("ew", anchor=Op(kind="elementwise"), prologue=Op(kind="elementwise"), epilogue=Op(kind="elementwise"))


def _groups(g: Graph, rule: FusionRule) -> list[list[str]]:
    return [[n.outputs[0].name for n in group] for group, _ in plan_groups(g, rule)]


def _fuse_and_check(g: Graph, rule: FusionRule):
    before = g.clone()
    fused = fuse(g, rule)
    verify(g)
    g.toposort()  # no cycle between the new kernels
    assert_same_numerics(before, g)
    return fused


def test_epilogue_chain_and_prologue_join():
    g = Graph()
    x, y = g.add_input("x", F), g.add_input("y", F)
    w = g.add_const(W, "w")
    p = g.add("transpose", [g.add_input("z", TensorType((8, 2), "f32"))], {"perm": [1, 0]}, name="p")
    lin = g.add("linear", [p, w], name="lin")
    a = g.add("add", [lin, y], name="a")
    r = g.add("relu", [a], name="r")
    g.set_outputs([r, g.add("exp", [x], name="e")])
    rule = FusionRule("t", anchor=Op("linear"), prologue=Op("transpose"), epilogue=Op(kind="elementwise"))
    assert _groups(g, rule) == [["p", "lin", "a", "r"]]
    (f,) = _fuse_and_check(g, rule)
    assert [n.op for n in f.body.nodes] == ["transpose", "linear", "add", "relu"]
    assert f.attrs == {"name": "transpose_linear_add_relu", "anchor": "linear"}


def test_consumer_reading_the_group_through_an_outside_node_does_not_join():
    """add(%m, exp(%m)): the add's other input depends on the group through %o, which stays outside."""
    g = Graph()
    m = g.add("matmul", [g.add_input("z", TensorType((2, 8), "f32")), g.add_const(W.T.copy(), "w")], name="m")
    o = g.add("exp", [m], name="o")
    c = g.add("add", [m, o], name="c")
    g.set_outputs([c])
    rule = FusionRule("t", anchor=Op("matmul"), epilogue=Op(kind="elementwise"), min_size=1)
    assert _groups(g, rule) == [["m"]]
    _fuse_and_check(g, rule)


def test_elementwise_diamond_fuses_without_cycles():
    """%a feeds %o (outside: sigmoid is not allowed) and %c; %c reads %o: %c must not join %a's group."""
    g = Graph()
    x = g.add_input("x", F)
    a = g.add("relu", [x], name="a")
    o = g.add("sigmoid", [a], name="o")
    b = g.add("neg", [a], name="b")
    c = g.add("add", [b, o], name="c")
    d = g.add("exp", [c], name="d")
    g.set_outputs([d])
    rule = FusionRule("t", anchor=Op(("relu", "neg", "add", "exp")), prologue=Op(("relu", "neg", "add", "exp")),
                      epilogue=Op(("relu", "neg", "add", "exp")), min_size=1)
    groups = _groups(g, rule)
    assert not any("a" in grp and "c" in grp for grp in groups)
    assert sorted(sum(groups, [])) == ["a", "b", "c", "d"]
    _fuse_and_check(g, rule)


def test_many_random_dags_never_get_a_cycle():
    """Random DAGs of cheap ops: every planned group is convex and the fused graph stays valid and equal."""
    ops = [("relu", 1), ("neg", 1), ("exp", 1), ("add", 2), ("mul", 2), ("sigmoid", 1)]
    rules = [EW, FusionRule("r", anchor=Op(("add", "mul")), prologue=Op(("relu", "neg")),
                            epilogue=Op(("exp", "sigmoid", "add"))),
             FusionRule("s", anchor=Op("exp"), epilogue=Op(kind="elementwise"), min_size=1)]
    rng = np.random.default_rng(0)
    for _ in range(60):
        g = Graph()
        pool = [g.add_input("x", TensorType((3,), "f32")), g.add_input("y", TensorType((3,), "f32"))]
        for _ in range(int(rng.integers(3, 10))):
            op, k = ops[int(rng.integers(len(ops)))]
            ins = [pool[int(rng.integers(len(pool)))] for _ in range(k)]
            pool.append(g.add(op, ins))
        read = {v for n in g.nodes for v in n.inputs}
        g.set_outputs([v for v in pool[2:] if v not in read])
        for rule in rules:
            h = g.clone()
            for group, _ in plan_groups(h, rule):
                _assert_convex(h, group)
            _fuse_and_check(h, rule)


def _assert_convex(g: Graph, group: list) -> None:
    members = set(group)
    users = g.users()
    # no path leaves the group and comes back: walk forward from outside readers of members
    frontier = [u for n in group for o in n.outputs for u in users.get(o, []) if u not in members]
    seen = set()
    while frontier:
        n = frontier.pop()
        if n in seen:
            continue
        seen.add(n)
        assert n not in members, f"group {[m.op for m in group]} is not convex"
        frontier.extend(u for o in n.outputs for u in users.get(o, []))


def test_producer_with_a_reader_outside_does_not_join():
    g = Graph()
    x, y = g.add_input("x", F), g.add_input("y", F)
    p = g.add("add", [x, y], name="p")
    s = g.add("softmax", [p], {"axis": -1}, name="s")
    e = g.add("exp", [p], name="e")  # a second reader: joining %p would compute it twice
    g.set_outputs([s, e])
    rule = FusionRule("t", anchor=Op("softmax"), prologue=Op("add"), min_size=1)
    assert _groups(g, rule) == [["s"]]
    g.set_outputs([s])
    g.nodes.remove(e.producer)
    assert _groups(g, rule) == [["p", "s"]]


def test_producer_that_is_a_graph_output_does_not_join():
    g = Graph()
    x, y = g.add_input("x", F), g.add_input("y", F)
    p = g.add("add", [x, y], name="p")
    s = g.add("softmax", [p], {"axis": -1}, name="s")
    g.set_outputs([s, p])
    rule = FusionRule("t", anchor=Op("softmax"), prologue=Op("add"), min_size=1)
    assert _groups(g, rule) == [["s"]]


def test_epilogue_stops_at_a_value_with_two_readers_or_a_graph_output():
    g = Graph()
    x = g.add_input("x", F)
    a = g.add("exp", [x], name="a")
    b = g.add("relu", [a], name="b")
    c = g.add("neg", [b], name="c")
    d = g.add("tanh", [c], name="d")
    g.set_outputs([d, g.add("sigmoid", [c], name="e"), b])
    rule = FusionRule("t", anchor=Op("exp"), epilogue=Op(kind="elementwise"))
    assert _groups(g, rule) == [["a", "b"]]  # %b is a graph output: the chain stops there
    g.set_outputs([d, g.outputs[1]])
    assert _groups(g, rule) == [["a", "b", "c"]]  # %c has two readers: stops after it
    (f,) = _fuse_and_check(g, rule)
    assert [o.name for o in f.outputs] == ["c"]


def test_min_size():
    g = Graph()
    x = g.add_input("x", F)
    a = g.add("exp", [x], name="a")
    b = g.add("relu", [a], name="b")
    lone = g.add("tanh", [x], name="lone")
    c = g.add("exp", [lone], name="c")
    d = g.add("neg", [c], name="d")
    e = g.add("relu", [d], name="e")
    g.set_outputs([b, e])
    rule = FusionRule("t", anchor=Op("exp"), epilogue=Op(("relu", "neg")), min_size=3)
    assert _groups(g, rule) == [["c", "d", "e"]]
    rule.min_size = 2
    assert _groups(g, rule) == [["a", "b"], ["c", "d", "e"]]
    rule.min_size = 1
    assert len(_groups(g, rule)) == 2
    fused = _fuse_and_check(g, FusionRule("t", anchor=Op("exp"), epilogue=Op(("relu", "neg")), min_size=3))
    assert len(fused) == 1 and g.op_counts() == {"exp": 1, "relu": 1, "tanh": 1, "fused": 1}


def test_where_can_veto_a_join():
    g = Graph()
    x = g.add_input("x", F)
    v = x
    for op in ("exp", "relu", "neg", "tanh", "sigmoid"):
        v = g.add(op, [v], name=op)
    g.set_outputs([v])
    rule = FusionRule("t", anchor=Op("exp"), epilogue=Op(kind="elementwise"), where=lambda grp, c: len(grp) < 3)
    assert _groups(g, rule) == [["exp", "relu", "neg"]]


def test_nodes_are_taken_by_one_group_only():
    g = Graph()
    x = g.add_input("x", F)
    a = g.add("exp", [x], name="a")
    b = g.add("exp", [a], name="b")
    c = g.add("exp", [b], name="c")
    g.set_outputs([c])
    rule = FusionRule("t", anchor=Op("exp"), epilogue=Op("exp"))
    assert _groups(g, rule) == [["a", "b", "c"]]
    fused = _fuse_and_check(g, rule)
    assert len(fused) == 1 and fuse(g, rule) == []  # fused nodes are never anchors or members


def test_fuse_labels_groups_by_their_ops_in_order():
    g = Graph()
    x = g.add_input("x", F)
    v = x
    for op in ("exp", "relu", "exp", "neg"):
        v = g.add(op, [v])
    g.set_outputs([v])
    (f,) = fuse(g, FusionRule("t", anchor=Op("exp"), epilogue=Op(kind="elementwise")))
    assert f.attrs["name"] == "exp_relu_neg"


@pytest.mark.parametrize("seed", [0, 1])
def test_fusion_numerics_on_a_mixed_graph(seed):
    g = parse_graph(LINEARS, {"w": W})
    before = g.clone()
    fuse(g, FusionRule("t", anchor=Op("linear"), epilogue=Op(kind="elementwise"), min_size=1))
    verify(g)
    xs = random_inputs(before, seed)
    np.testing.assert_allclose(interpret(g, xs)[0], interpret(before, xs)[0], rtol=1e-6, atol=1e-6)


# -- literals, attributes, argument checks, explain: a pattern cannot quietly mean something else ----------------

HARDSWISH_LIKE = """
graph main(%y: f32[2,4]) {{
  const %a: f32[] = [{add}]
  const %d: f32[] = [{div}]
  %s: f32[2,4] = add(%y, %a)
  %r: f32[2,4] = clamp(%s) {{"min": 0.0, "max": 6.0}}
  %m: f32[2,4] = mul(%y, %r)
  %h: f32[2,4] = div(%m, %d)
  return %h
}}"""

HARDSWISH = Op("div", Op("mul", Any("y"), Op("clamp", Op("add", Any("y"), Const(value=3.0)),
                                             attrs={"min": 0.0, "max": 6.0}), commutative=True), Const(value=6.0))


def _hardswish_pass(g):
    return rewrite(g, HARDSWISH, lambda m, b: b.add("hardswish", [m["y"]]))


def test_literal_constants_match_only_their_value():
    """The review's trap: ``y * relu6(y + 2) / 5`` is not hardswish, and a pass keyed on 3 and 6 must leave it."""
    trap = parse_graph(HARDSWISH_LIKE.format(add=2.0, div=5.0))
    before = print_graph(trap)
    assert _hardswish_pass(trap) == 0 and print_graph(trap) == before
    real = parse_graph(HARDSWISH_LIKE.format(add=3.0, div=6.0))
    reference = real.clone()
    assert _hardswish_pass(real) == 1 and [n.op for n in real.nodes] == ["hardswish"]
    assert_same_numerics(reference, real)
    assert _hardswish_pass(parse_graph(HARDSWISH_LIKE.format(add=3.0, div=5.0))) == 0  # one literal off: no


def test_literal_compares_whole_arrays_and_tolerances():
    g = parse_graph("""
    graph main(%x: f32[4]) {
      const %c: f32[4] = [1.0, 2.0, 3.0, 4.0]
      const %k: f32[4] = [3.0, 3.0, 3.0, 3.0]
      %y: f32[4] = add(%x, %c)
      %z: f32[4] = mul(%y, %k)
      return %z
    }""")
    y, z = (n.outputs[0] for n in g.nodes)
    assert match(Op("add", Any(), Const(value=[1, 2, 3, 4])), y, g) is not None
    assert match(Op("add", Any(), Const(value=[1, 2, 3, 5])), y, g) is None
    assert match(Op("add", Any(), Const(value=[1, 2, 3])), y, g) is None  # shapes differ
    assert match(Op("mul", Any(), Const(value=3.0)), z, g) is not None  # every element is 3
    assert match(Op("mul", Any(), Const(value=3.0, scalar=True)), z, g) is None  # but it has four
    assert match(Op("mul", Any(), Const(value=3.001)), z, g) is None
    assert match(Op("mul", Any(), Const(value=3.001, atol=0.01)), z, g) is not None


def test_attributes_match_by_value_or_predicate():
    g = parse_graph("""
    graph main(%x: f32[2,3,4]) {
      %t: f32[2,4,3] = transpose(%x) {"perm": [0, 2, 1]}
      return %t
    }""")
    t = g.nodes[0].outputs[0]
    assert match(Op("transpose", attrs={"perm": (0, 2, 1)}), t, g) is not None
    assert match(Op("transpose", attrs={"perm": [1, 0, 2]}), t, g) is None
    assert match(Op("transpose", attrs={"perm": lambda p: p[0] == 0}), t, g) is not None


@pytest.mark.parametrize("build, error, msg", [
    (lambda: Const("c", scalar=3.0), TypeError, r"scalar= takes True or False, got 3.0 \(for a literal, write value"),
    (lambda: Const(3.0), TypeError, r"name must be a string.*Const\(value=3.0\)"),
    (lambda: Op("mul", Any("x"), 3.0), TypeError, r"input 1 must be a pattern.*Const\(value=3.0\)"),
    (lambda: Op("relu6"), ValueError, "unknown op 'relu6'"),
    (lambda: Op("sigmod"), ValueError, "did you mean sigmoid"),
    (lambda: Op(kind="elementwize"), ValueError, "unknown kind 'elementwize'"),
    (lambda: Op("transpose", attrs={"axes": [1, 0]}), ValueError,
     r"has no attribute 'axes'; its attributes: \['perm'\]"),
    (lambda: Op("add", commutative="yes"), TypeError, "commutative= takes True or False"),
    (lambda: Op("add", where=True), TypeError, "where= must be a function"),
    (lambda: Const(value="three"), TypeError, "value= must be a number"),
    (lambda: Either(Any()), TypeError, "two or more patterns"),
])
def test_pattern_arguments_are_checked_when_built(build, error, msg):
    with pytest.raises(error, match=msg):
        build()


def test_explain_says_why_a_pattern_does_not_match():
    g = parse_graph(HARDSWISH_LIKE.format(add=3.0, div=5.0))
    assert explain(HARDSWISH, g.nodes[-1].outputs[0], g) == "%h (div) > Const(): %d (constant 5.0) is not 6.0"
    g = parse_graph(HARDSWISH_LIKE.format(add=2.0, div=6.0))
    why = explain(HARDSWISH, g.nodes[-1].outputs[0], g)
    assert "%h (div) > %m (mul) > %r (clamp) > %s (add) > Const(): %a (constant 2.0) is not 3.0" in why
    g = parse_graph(HARDSWISH_LIKE.format(add=3.0, div=6.0))
    assert explain(HARDSWISH, g.nodes[-1].outputs[0], g) == "matches"
    assert "its op is add, not div" in explain(HARDSWISH, g.nodes[0].outputs[0], g)


def test_a_rewrite_must_keep_the_matched_type():
    g = parse_graph(LINEARS, {"w": W})
    with pytest.raises(TypeError, match="the replacement is f32\\[2,8\\], but the matched value is f32\\[2,4\\]"):
        rewrite(g, Op("add", Any(), Any()), lambda m, b: g.inputs[0])
