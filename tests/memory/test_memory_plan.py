"""edgeopt.memory: liveness tokens, offset assignment, the plan verifier, the arena text, and their use by the
lowering (in-place candidates, planned offsets) and the runtime (one arena per thread, views at offsets)."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeopt.api import compile_graph
from edgeopt.ir import interpret, parse_graph, verify
from edgeopt.lower.build import inplace_candidates, kernel_args
from edgeopt.memory import (
    ALGORITHMS,
    ALIGN,
    PlanError,
    Token,
    arena_rows,
    arena_text,
    build_tokens,
    check_plan,
    lower_bound,
    plan_arena,
)
from edgeopt.memory import algorithms as algorithms_module
from tests.passes.fusion_harness import CONV_RESIDUAL_FUSION, assert_close, random_inputs

U = ALIGN  # one "unit" of the hand-built plans: f32[16] = 64 bytes


# -- hand-built execution plans -------------------------------------------------------------------------


def mkplan(inputs, steps, outputs, units=None, views=None, consts=(), shapes=None, dtypes=None) -> dict:
    """An execution plan as ``edgeopt.lower.build`` writes it (without offsets).

    ``steps``: ``(ins, outs)`` or ``(ins, outs, inplace_pairs)``; every value is f32[16 * units] (default one
    unit, 64 bytes) unless ``shapes`` says otherwise; ``views``: view name -> the value it reshapes."""
    units, views, shapes, dtypes = units or {}, views or {}, shapes or {}, dtypes or {}

    def info(name, kind, shape=None):
        shape = shapes.get(name, shape if shape is not None else [16 * units.get(name, 1)])
        return {"shape": list(shape), "dtype": dtypes.get(name, "f32"), "kind": kind}

    values = {n: info(n, "input") for n in inputs}
    values.update({n: info(n, "const") for n in consts})
    plan_steps = []
    for k, s in enumerate(steps):
        ins, outs = s[0], s[1]
        values.update({o: info(o, "buffer") for o in outs})
        step = {"kernel": f"k{k}", "args": [*ins, *outs], "num_outputs": len(outs), "node": outs[0]}
        if len(s) > 2:
            step["inplace"] = [list(p) for p in s[2]]
        plan_steps.append(step)
    for name, base in views.items():  # a view has its base's bytes: shape [1, n] by default
        b = values[base]["shape"] if base in values else [16 * units.get(base, 1)]
        values[name] = {**info(name, "view", [1, int(np.prod(b))]), "of": base}

    def io(n):
        return {"name": n, "shape": values[n]["shape"], "dtype": values[n]["dtype"]}

    return {"inputs": [io(n) for n in inputs], "outputs": [io(n) for n in outputs], "values": values,
            "steps": plan_steps}


def token_of(tokens, value) -> Token:
    (t,) = [t for t in tokens if value in t.values]
    return t


def spans(tokens) -> dict:
    return {t.name: (t.start, t.end) for t in tokens}


def byte_range(mp, value) -> tuple[int, int]:
    t = token_of(mp.tokens, value)
    return mp.offsets[t.name], mp.offsets[t.name] + t.size


def disjoint(r1, r2) -> bool:
    return r1[1] <= r2[0] or r2[1] <= r1[0]


def assert_valid(mp) -> None:
    """Independent checks of a MemoryPlan: verified, aligned, bounded, minimal over its candidates."""
    check_plan(mp.tokens, mp.offsets, mp.arena_bytes)
    assert all(off % ALIGN == 0 for off in mp.offsets.values())
    assert mp.arena_bytes == max((mp.offsets[t.name] + t.size for t in mp.tokens), default=0)
    assert mp.lower_bound_bytes <= mp.arena_bytes <= mp.naive_bytes
    assert mp.arena_bytes == min(mp.candidates.values())
    assert mp.candidates[mp.algorithm] == mp.arena_bytes


# -- liveness: chains, branches, residuals, concat -------------------------------------------------------


CHAIN = mkplan(["a"], [(["a"], ["b"]), (["b"], ["c"]), (["c"], ["d"])], ["d"], units={"a": 1, "b": 3, "c": 2, "d": 4})


def test_chain_tokens_and_lifetimes():
    tokens = build_tokens(CHAIN)
    assert spans(tokens) == {"a": (0, 0), "b": (0, 1), "c": (1, 2), "d": (2, 3)}
    assert {t.name: t.size for t in tokens} == {"a": U, "b": 3 * U, "c": 2 * U, "d": 4 * U}
    assert all(t.values == [t.name] for t in tokens)


def test_chain_arena_is_the_largest_adjacent_pair_and_reuses_memory():
    mp = plan_arena(CHAIN)
    assert_valid(mp)
    assert mp.lower_bound_bytes == (2 + 4) * U  # max(a+b, b+c, c+d)
    assert mp.arena_bytes == 6 * U
    assert mp.naive_bytes == 10 * U
    # b and d (never alive together) share bytes: memory is reused
    assert not disjoint(byte_range(mp, "b"), byte_range(mp, "d"))
    for name in ALGORITHMS:
        assert 6 * U <= plan_arena(CHAIN, algorithms=[name]).arena_bytes <= 10 * U


def test_inplace_chain_is_one_token():
    plan = mkplan(["x"], [(["x"], ["a"], [["x", "a"]]), (["a"], ["b"], [["a", "b"]]), (["b"], ["c"], [["b", "c"]])],
                  ["c"])
    tokens = build_tokens(plan)
    assert len(tokens) == 1 and tokens[0].values == ["x", "a", "b", "c"] and (tokens[0].start, tokens[0].end) == (0, 3)
    mp = plan_arena(plan)
    assert_valid(mp)
    assert mp.arena_bytes == U and mp.algorithm.endswith("+inplace")
    assert set(mp.value_offsets()) == {"x", "a", "b", "c"} and set(mp.value_offsets().values()) == {0}
    assert mp.report()["inplace_values"] == 3
    separate = build_tokens(plan, inplace=False)
    assert len(separate) == 4 and lower_bound(separate) == 2 * U
    assert mp.lower_bound_bytes == U  # the smaller of the two variants' bounds


def test_branch_value_lives_until_its_last_reader():
    # a is read by k1 and k2; the pair [a, b] at k1 is refused because k2 still reads a
    plan = mkplan(["x"], [(["x"], ["a"]), (["a"], ["b"], [["a", "b"]]), (["a"], ["c"], [["a", "c"]]),
                          (["b", "c"], ["d"])], ["d"])
    tokens = build_tokens(plan)
    assert token_of(tokens, "b").name == "b"  # refused: a is read later
    assert token_of(tokens, "c").name == "a"  # granted: a dies at k2
    assert token_of(tokens, "a").values == ["a", "c"] and token_of(tokens, "a").end == 3  # c is read at k3
    sep = build_tokens(plan, inplace=False)
    assert spans(sep) == {"x": (0, 0), "a": (0, 2), "b": (1, 3), "c": (2, 3), "d": (3, 4)}
    assert lower_bound(sep) == 3 * U
    mp = plan_arena(plan)
    assert_valid(mp)
    assert disjoint(byte_range(mp, "a"), byte_range(mp, "b"))


def test_residual_skip_connection_stays_live_across_the_block():
    plan = mkplan(["x"], [(["x"], ["a"]), (["a"], ["b"], [["a", "b"]]), (["b"], ["c"], [["b", "c"]]),
                          (["c", "x"], ["y"], [["c", "y"], ["x", "y"]])], ["y"], units={"x": 2})
    tokens = build_tokens(plan)
    assert token_of(tokens, "x").end == 3
    # the block a -> b -> c runs in place; the residual add writes over c (first pair that qualifies)
    assert token_of(tokens, "y").values == ["a", "b", "c", "y"]
    assert token_of(tokens, "x").values == ["x"]
    mp = plan_arena(plan)
    assert_valid(mp)
    for v in "abcy":
        assert disjoint(byte_range(mp, "x"), byte_range(mp, v)), v
    sep = build_tokens(plan, inplace=False)
    assert lower_bound(sep) == (2 + 1 + 1) * U  # x with two block values at every inner step


def test_concat_inputs_are_all_live_at_the_concat():
    plan = mkplan(["x", "y"], [(["x"], ["a"]), (["y"], ["b"]), (["x"], ["c"]), (["a", "b", "c"], ["d"])], ["d"],
                  units={"a": 1, "b": 2, "c": 1, "d": 4})
    tokens = build_tokens(plan)
    for v in "abc":
        t = token_of(tokens, v)
        assert t.start <= 3 == t.end
    assert lower_bound(tokens) == 8 * U  # a + b + c + d at the concat step
    mp = plan_arena(plan)
    assert_valid(mp)
    assert mp.arena_bytes == 8 * U
    ranges = [byte_range(mp, v) for v in "abcd"]
    for i in range(4):
        for j in range(i + 1, 4):
            assert disjoint(ranges[i], ranges[j])


def test_graph_outputs_live_to_the_end():
    plan = mkplan(["x"], [(["x"], ["a"]), (["x"], ["b"]), (["b"], ["c"]), (["x"], ["d"])], ["a", "d"])
    tokens = build_tokens(plan)
    assert spans(tokens) == {"x": (0, 3), "a": (0, 4), "b": (1, 2), "c": (2, 2), "d": (3, 4)}
    mp = plan_arena(plan)
    assert_valid(mp)
    for v in "bcd":
        assert disjoint(byte_range(mp, "a"), byte_range(mp, v))


def test_constants_and_their_views_are_no_activations():
    plan = mkplan(["x"], [(["x", "w"], ["a"], [["x", "a"]]), (["a", "wv"], ["b"])], ["b"], consts=["w"],
                  views={"wv": "w"})
    tokens = build_tokens(plan)
    assert sorted(v for t in tokens for v in t.values) == ["a", "b", "x"]
    assert "w" not in plan_arena(plan).value_offsets()


# -- in-place -----------------------------------------------------------------------------------------


def test_inplace_shared_when_the_input_dies():
    plan = mkplan(["x"], [(["x"], ["a"], [["x", "a"]])], ["a"])
    (t,) = build_tokens(plan)
    assert t.values == ["x", "a"] and (t.start, t.end) == (0, 1)
    assert len(build_tokens(plan, inplace=False)) == 2


def test_inplace_refused_when_the_input_is_read_later():
    plan = mkplan(["x"], [(["x"], ["a"], [["x", "a"]]), (["a", "x"], ["b"])], ["b"])
    tokens = build_tokens(plan)
    assert token_of(tokens, "a").name == "a" and token_of(tokens, "x").end == 1


def test_inplace_refused_when_the_input_is_a_graph_output():
    plan = mkplan(["x"], [(["x"], ["a"], [["x", "a"]])], ["x", "a"])
    tokens = build_tokens(plan)
    assert spans(tokens) == {"x": (0, 1), "a": (0, 1)}
    mp = plan_arena(plan)
    assert disjoint(byte_range(mp, "x"), byte_range(mp, "a"))


def test_inplace_refused_when_an_earlier_holder_of_the_token_is_a_graph_output():
    plan = mkplan(["x"], [(["x"], ["a"], [["x", "a"]]), (["a"], ["b"], [["a", "b"]])], ["a", "b"])
    tokens = build_tokens(plan)
    assert token_of(tokens, "a").values == ["x", "a"] and token_of(tokens, "b").values == ["b"]


@pytest.mark.parametrize("shape", [[32], [15], [4, 5]])  # more bytes; fewer bytes, same aligned size; other
def test_inplace_refused_when_bytes_differ(shape):
    plan = mkplan(["x"], [(["x"], ["a"], [["x", "a"]])], ["a"], shapes={"a": shape})
    assert len(build_tokens(plan)) == 2


def test_inplace_through_a_view_keeps_the_base_alive():
    # v is a view of a; k2 reads v, so a (and its token) lives to k2 and k1 may not write b over a
    plan = mkplan(["x"], [(["x"], ["a"], [["x", "a"]]), (["a"], ["b"], [["a", "b"]]), (["v"], ["c"])], ["b", "c"],
                  views={"v": "a"})
    tokens = build_tokens(plan)
    assert token_of(tokens, "a").values == ["x", "a"] and token_of(tokens, "a").end == 2
    assert token_of(tokens, "b").values == ["b"]


def test_inplace_one_token_per_output_and_one_output_per_token():
    # two pairs for the same output: only the first is used; one input for two outputs: only once
    plan = mkplan(["x", "y"], [(["x", "y"], ["c"], [["x", "c"], ["y", "c"]]),
                               (["c"], ["d", "e"], [["c", "d"], ["c", "e"]])], ["d", "e"])
    tokens = build_tokens(plan)
    assert token_of(tokens, "c").values == ["x", "c", "d"]
    assert token_of(tokens, "y").values == ["y"] and token_of(tokens, "e").values == ["e"]
    assert_valid(plan_arena(plan))


# -- views and outputs that alias inputs -----------------------------------------------------------------


def test_view_keeps_its_base_alive_and_has_no_token():
    plan = mkplan(["x"], [(["x"], ["a"]), (["a"], ["b"]), (["v"], ["c"]), (["b", "w2"], ["d"])], ["d"],
                  views={"v": "a", "w2": "v"})
    tokens = build_tokens(plan)
    assert token_of(tokens, "a").end == 3  # last read through the view of a view, at k3
    assert all(t.name not in ("v", "w2") for t in tokens)
    assert all("v" not in t.values and "w2" not in t.values for t in tokens)
    mp = plan_arena(plan)
    assert_valid(mp)
    assert "v" not in mp.value_offsets()
    for other in "bcd":
        assert disjoint(byte_range(mp, "a"), byte_range(mp, other))


def test_graph_output_that_is_a_view_of_a_graph_input():
    plan = mkplan(["x", "y"], [(["y"], ["a"], [["y", "a"]]), (["a"], ["b"], [["a", "b"]])], ["v", "b"],
                  views={"v": "x"})
    tokens = build_tokens(plan)
    assert token_of(tokens, "x").end == 2 and token_of(tokens, "x").values == ["x"]
    mp = plan_arena(plan)
    assert_valid(mp)
    assert disjoint(byte_range(mp, "x"), byte_range(mp, "b"))


def test_graph_output_that_is_a_view_of_an_inplace_input_refuses_the_pair():
    plan = mkplan(["x"], [(["x"], ["a"], [["x", "a"]])], ["v", "a"], views={"v": "x"})
    tokens = build_tokens(plan)
    assert spans(tokens) == {"x": (0, 1), "a": (0, 1)}


def test_graph_output_that_is_a_graph_input():
    plan = mkplan(["x", "y"], [(["y"], ["a"], [["y", "a"]])], ["x", "a"])
    tokens = build_tokens(plan)
    assert token_of(tokens, "x").end == 1
    mp = plan_arena(plan)
    assert_valid(mp)
    assert disjoint(byte_range(mp, "x"), byte_range(mp, "a"))


def test_plan_without_steps():
    plan = mkplan(["x"], [], ["v"], views={"v": "x"})
    (t,) = build_tokens(plan)
    assert (t.name, t.start, t.end) == ("x", 0, 0)
    mp = plan_arena(plan)
    assert mp.arena_bytes == U and mp.offsets == {"x": 0}


# -- lower bound -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("tokens, expected", [
    ([], 0),
    ([Token("a", 64, 0, 0)], 64),
    ([Token("a", 64, 0, 0), Token("b", 128, 1, 1)], 128),  # never together
    ([Token("a", 64, 0, 1), Token("b", 64, 1, 2)], 128),  # closed intervals: they meet at step 1
    ([Token("a", 64, 0, 2), Token("b", 128, 1, 3), Token("c", 256, 3, 4), Token("d", 64, 4, 4)], 384),
    ([Token("a", 640, 0, 9), Token("b", 64, 2, 2), Token("c", 64, 2, 5), Token("d", 192, 5, 6)], 640 + 64 + 192),
    ([Token("a", 64, 5, 5), Token("b", 64, 5, 7), Token("c", 64, 7, 7)], 128),  # nothing alive before step 5
])
def test_lower_bound_hand_computed(tokens, expected):
    assert lower_bound(tokens) == expected


# -- offset assignment -----------------------------------------------------------------------------------


TOKEN_SETS = {
    "chain": build_tokens(CHAIN),
    "fragmenting": [Token("a", 64, 0, 1), Token("b", 256, 0, 3), Token("c", 128, 1, 2), Token("d", 64, 2, 5),
                    Token("e", 320, 3, 6), Token("f", 64, 4, 4), Token("g", 192, 5, 8), Token("h", 128, 7, 8)],
    "same_time": [Token(f"t{i}", 64 * (i + 1), 0, 0) for i in range(6)],
    "disjoint": [Token(f"t{i}", 64 * (i % 3 + 1), i, i) for i in range(6)],
    "staircase": [Token(f"t{i}", 64 * (7 - i), i, i + 2) for i in range(7)],
}


@pytest.mark.parametrize("algo", sorted(ALGORITHMS))
@pytest.mark.parametrize("which", sorted(TOKEN_SETS))
def test_every_algorithm_gives_a_valid_plan(algo, which):
    tokens = TOKEN_SETS[which]
    offsets = ALGORITHMS[algo](tokens)
    assert set(offsets) == {t.name for t in tokens}
    arena = max(offsets[t.name] + t.size for t in tokens)
    check_plan(tokens, offsets, arena)
    assert all(o % ALIGN == 0 and o >= 0 for o in offsets.values())
    assert lower_bound(tokens) <= arena <= sum(t.size for t in tokens)
    if which in ("same_time", "disjoint"):  # no choice: everything side by side, or everything at 0
        assert arena == lower_bound(tokens)


def test_algorithms_on_no_tokens():
    for algo in ALGORITHMS.values():
        assert algo([]) == {}


def test_plan_arena_report_and_candidates():
    plan = mkplan(["x"], [(["x"], ["a"], [["x", "a"]]), (["a"], ["b"]), (["a", "b"], ["c"], [["b", "c"]])], ["c"])
    mp = plan_arena(plan)
    assert_valid(mp)
    r = mp.report()
    assert {"arena_bytes", "lower_bound_bytes", "naive_bytes", "plan_algorithm", "plan_candidates",
            "inplace_values"} <= set(r)
    assert (r["arena_bytes"], r["lower_bound_bytes"], r["naive_bytes"], r["plan_algorithm"]) == (
        mp.arena_bytes, mp.lower_bound_bytes, mp.naive_bytes, mp.algorithm)
    assert set(r["plan_candidates"]) == set(ALGORITHMS) | {f"{a}+inplace" for a in ALGORITHMS}
    assert r["naive_bytes"] == 4 * U
    assert r["inplace_values"] == sum(len(t.values) - 1 for t in mp.tokens) == 2
    only = plan_arena(plan, algorithms=["longest_first"], inplace=False)
    assert set(only.candidates) == {"longest_first"} and only.algorithm == "longest_first"
    assert all(len(t.values) == 1 for t in only.tokens)


def test_plan_arena_picks_the_smallest_candidate(monkeypatch):
    def stack(tokens):  # valid but wasteful: every token in its own bytes
        offsets, cursor = {}, 0
        for t in tokens:
            offsets[t.name] = cursor
            cursor += t.size
        return offsets

    monkeypatch.setitem(algorithms_module.ALGORITHMS, "stack", stack)
    mp = plan_arena(CHAIN, algorithms=["stack", "greedy_by_size"])
    assert mp.candidates["stack"] == mp.naive_bytes == 10 * U
    assert mp.arena_bytes == 6 * U and mp.algorithm.startswith("greedy_by_size")
    assert plan_arena(CHAIN, algorithms=["stack"]).arena_bytes == 10 * U


def test_plan_arena_verifies_every_candidate(monkeypatch):
    monkeypatch.setitem(algorithms_module.ALGORITHMS, "all_at_zero", lambda tokens: {t.name: 0 for t in tokens})
    with pytest.raises(PlanError):
        plan_arena(CHAIN, algorithms=["greedy_by_size", "all_at_zero"])


# -- the verifier ------------------------------------------------------------------------------------------


def test_check_plan_catches_overlap_and_names_both():
    a, b, c = Token("alpha", 128, 0, 2), Token("beta", 64, 2, 3), Token("gamma", 64, 0, 3)
    check_plan([a, b, c], {"alpha": 0, "beta": 128, "gamma": 192}, 256)
    with pytest.raises(PlanError) as e:
        check_plan([a, b, c], {"alpha": 0, "beta": 64, "gamma": 192}, 256)  # meet at step 2, bytes 64..128
    assert "alpha" in str(e.value) and "beta" in str(e.value) and "gamma" not in str(e.value)


def test_check_plan_catches_overlap_far_apart_in_the_list():
    toks = [Token("long", 64, 0, 9)] + [Token(f"s{i}", 64, i, i) for i in range(10)]
    offsets = {"long": 0, **{f"s{i}": 64 for i in range(10)}}
    check_plan(toks, offsets, 128)
    offsets["s7"] = 0
    with pytest.raises(PlanError, match="long.*s7|s7.*long"):
        check_plan(toks, offsets, 128)


def test_check_plan_catches_misaligned_offset():
    with pytest.raises(PlanError, match="not a multiple of 64"):
        check_plan([Token("a", 64, 0, 1), Token("b", 64, 2, 3)], {"a": 0, "b": 32}, 128)


@pytest.mark.parametrize("offset, arena", [(64, 64), (0, 32), (-64, 256)])
def test_check_plan_catches_token_outside_the_arena(offset, arena):
    with pytest.raises(PlanError, match="outside the arena"):
        check_plan([Token("a", 64, 0, 1)], {"a": offset}, arena)


def test_check_plan_catches_missing_offset():
    with pytest.raises(PlanError, match="b: no offset"):
        check_plan([Token("a", 64, 0, 1), Token("b", 64, 0, 1)], {"a": 0}, 128)


def test_check_plan_accepts_same_bytes_for_disjoint_lifetimes():
    check_plan([Token("a", 128, 0, 1), Token("b", 64, 2, 3), Token("c", 128, 4, 4)], {"a": 0, "b": 64, "c": 0}, 128)
    check_plan([Token("a", 64, 0, 1), Token("b", 64, 0, 1)], {"a": 0, "b": 64}, 128)  # adjacent bytes


def test_plan_error_is_an_assertion_error():
    assert issubclass(PlanError, AssertionError)


# -- the arena as text -------------------------------------------------------------------------------------


def with_offsets(plan: dict, mp) -> dict:
    """The plan as ``lower`` stores it: every activation's offset and its storage's lifetime."""
    for t in mp.tokens:
        for v in t.values:
            plan["values"][v].update(offset=mp.offsets[t.name], live=[t.start, t.end])
    plan["arena_bytes"] = mp.arena_bytes
    return plan


def test_arena_text():
    plan = mkplan(["x"], [(["x"], ["a"], [["x", "a"]]), (["a"], ["b"]), (["a", "b"], ["c"]), (["c"], ["d"])], ["d"],
                  units={"b": 2, "c": 3})
    mp = plan_arena(plan)
    with_offsets(plan, mp)
    lines = arena_text(plan).splitlines()
    assert lines[0].startswith(f"arena {mp.arena_bytes} bytes, {len(mp.tokens)} tensors over 4 steps")
    rows = lines[2:]
    assert len(rows) == len(mp.tokens)
    offs = [int(ln.split("..")[0]) for ln in rows]
    assert offs == sorted(offs)
    for t in mp.tokens:
        (row,) = [ln for ln in rows if ln.endswith("| " + ", ".join(t.values))]
        assert row.split()[0] == f"{mp.offsets[t.name]}..{mp.offsets[t.name] + t.size}"
        bar = row[row.index("|") + 1 : row.rindex("|")]
        assert bar == " " * t.start + "#" * (t.end - t.start + 1) + " " * (4 - t.end)  # 5 columns: steps 0..4
    rows_data = arena_rows(plan)
    assert sorted(tuple(r["values"]) for r in rows_data) == sorted(tuple(t.values) for t in mp.tokens)
    for r in rows_data:
        t = token_of(mp.tokens, r["values"][0])
        assert (r["offset"], r["size"], r["start"], r["end"]) == (mp.offsets[t.name], t.size, t.start, t.end)


def test_arena_text_scales_long_plans_and_handles_empty_ones():
    plan = mkplan(["t0"], [([f"t{i}"], [f"t{i + 1}"]) for i in range(199)], ["t199"])
    with_offsets(plan, plan_arena(plan, inplace=False))
    lines = arena_text(plan, width=40).splitlines()
    assert len(lines) == 2 + 200
    assert max(len(ln.split("|")[1]) for ln in lines[2:]) <= 41
    assert arena_text({"values": {}, "steps": []}) == "(no activations)"


# -- property tests ------------------------------------------------------------------------------------


@st.composite
def token_lists(draw):
    n = draw(st.integers(1, 14))
    out = []
    for i in range(n):
        start = draw(st.integers(0, 12))
        out.append(Token(f"t{i}", 64 * draw(st.integers(1, 8)), start, start + draw(st.integers(0, 6))))
    return out


@settings(derandomize=True, max_examples=150, deadline=None)
@given(token_lists())
def test_property_every_algorithm_is_valid(tokens):
    bound, naive = lower_bound(tokens), sum(t.size for t in tokens)
    for name, algo in ALGORITHMS.items():
        offsets = algo(tokens)
        arena = max(offsets[t.name] + t.size for t in tokens)
        check_plan(tokens, offsets, arena)
        assert all(o % ALIGN == 0 for o in offsets.values()), name
        assert bound <= arena <= naive, name


@st.composite
def random_plans(draw):
    """Random DAGs of 1..12 kernels over 1..3 inputs, with views, in-place pairs and random outputs."""
    n_in = draw(st.integers(1, 3))
    inputs = [f"x{i}" for i in range(n_in)]
    units = {x: draw(st.integers(1, 3)) for x in inputs}
    views: dict[str, str] = {}
    avail = list(inputs)
    steps = []
    for k in range(draw(st.integers(1, 12))):
        if draw(st.booleans()) and draw(st.booleans()):
            base = draw(st.sampled_from(avail))
            views[f"v{k}"] = base
            units[f"v{k}"] = units[base]
            avail.append(f"v{k}")
        ins = draw(st.lists(st.sampled_from(avail), min_size=1, max_size=3, unique=True))
        outs = [f"k{k}o{j}" for j in range(draw(st.sampled_from([1, 1, 1, 2])))]
        for o in outs:
            units[o] = draw(st.integers(1, 3))
        pairs = [[i, o] for i in ins for o in outs if units[i] == units[o] and draw(st.booleans())]
        steps.append((ins, outs, pairs))
        avail += outs
    outputs = draw(st.lists(st.sampled_from(avail), min_size=1, max_size=3))
    return mkplan(inputs, steps, outputs, units=units, views=views)


def simulate(plan: dict, value_offsets: dict, arena_bytes: int) -> None:
    """Run the plan on a model of the arena (who last wrote each 64-byte block): every kernel must find its
    inputs intact, and the graph outputs must be intact at the end. Independent of the planner's tokens."""
    values = plan["values"]

    def base(v):
        while values[v]["kind"] == "view":
            v = values[v]["of"]
        return v

    def blocks(v):
        from edgeopt.memory.liveness import aligned, nbytes

        off = value_offsets[v]
        return range(off // ALIGN, (off + aligned(nbytes(values[v]))) // ALIGN)

    owner = [None] * (arena_bytes // ALIGN)
    for io in plan["inputs"]:
        for blk in blocks(io["name"]):
            owner[blk] = io["name"]

    def intact(v, when):
        v = base(v)
        if values[v]["kind"] == "const":
            return
        bad = [blk for blk in blocks(v) if owner[blk] != v]
        assert not bad, f"{v} overwritten by {owner[bad[0]]} before {when}"

    for i, s in enumerate(plan["steps"]):
        n = s["num_outputs"]
        for a in s["args"][: len(s["args"]) - n]:
            intact(a, f"step {i}")
        for o in s["args"][len(s["args"]) - n :]:
            for blk in blocks(o):
                owner[blk] = o
    for o in plan["outputs"]:
        intact(o["name"], "the end")


@settings(derandomize=True, max_examples=150, deadline=None)
@given(random_plans())
def test_property_random_plans_never_overwrite_a_live_value(plan):
    mp = plan_arena(plan)
    assert_valid(mp)
    offsets = mp.value_offsets()
    bases = {v for v, info in plan["values"].items() if info["kind"] in ("input", "buffer")}
    assert set(offsets) == bases
    simulate(plan, offsets, mp.arena_bytes)
    for variant in (True, False):  # every algorithm on both token variants, not only the winner
        tokens = build_tokens(plan, inplace=variant)
        for algo in ALGORITHMS.values():
            offs = algo(tokens)
            arena = max(offs[t.name] + t.size for t in tokens)
            check_plan(tokens, offs, arena)
            assert arena >= mp.lower_bound_bytes
            simulate(plan, {v: offs[t.name] for t in tokens for v in t.values}, arena)


def test_simulator_catches_a_bad_plan():
    """The oracle above is not vacuous: all values at offset 0 breaks a branch."""
    plan = mkplan(["x"], [(["x"], ["a"]), (["a"], ["b"]), (["a", "b"], ["c"])], ["c"])
    with pytest.raises(AssertionError, match="overwritten"):
        simulate(plan, {v: 0 for v in "xabc"}, 64)


# -- in-place candidates of the lowering -------------------------------------------------------------------


CONV = ('{"stride": [1, 1], "padding": [0, 0, 0, 0], "dilation": [1, 1], "groups": 1, '
        '"weight_layout": "OIHW", "layout": "NCHW"}')
RNG = np.random.default_rng(5)
W1 = RNG.standard_normal((4, 4, 1, 1)).astype(np.float32)
WL = RNG.standard_normal((6, 6)).astype(np.float32)


def _node_candidates(text: str, consts=None, index: int = -1):
    g = parse_graph(text, consts or {})
    verify(g)
    n = g.nodes[index]
    return inplace_candidates(g, n, kernel_args(g, n))


def test_inplace_candidates_elementwise_ops():
    assert _node_candidates("""
    graph main(%x: f32[2,6], %y: f32[2,6], %s: f32[6]) {
      %a: f32[2,6] = add(%x, %y)
      %b: f32[2,6] = mul(%a, %s)
      return %b
    }""", index=0) == [["x", "a"], ["y", "a"]]
    # a broadcast input has another type: only the full-size one qualifies
    assert _node_candidates("""
    graph main(%x: f32[2,6], %s: f32[6]) {
      %b: f32[2,6] = mul(%x, %s)
      return %b
    }""") == [["x", "b"]]
    # another dtype (a comparison) never qualifies; nor does a constant
    assert _node_candidates("""
    graph main(%x: f32[2,6], %y: f32[2,6]) {
      %b: bool[2,6] = lt(%x, %y)
      return %b
    }""") == []
    assert _node_candidates("""
    graph main(%x: f32[6,6]) {
      const %w: f32[6,6]
      %b: f32[6,6] = add(%x, %w)
      return %b
    }""", {"w": WL}) == [["x", "b"]]


def test_inplace_candidates_non_elementwise_ops():
    assert _node_candidates("""
    graph main(%x: f32[6,6]) {
      %t: f32[6,6] = transpose(%x) {"perm": [1, 0]}
      return %t
    }""") == []
    assert _node_candidates("""
    graph main(%x: f32[6,6]) {
      %t: f32[6,6] = softmax(%x) {"axis": -1}
      return %t
    }""") == []
    assert _node_candidates("""
    graph main(%x: f32[6,6]) {
      %t: f32[6,6] = matmul(%x, %x)
      return %t
    }""") == []
    assert _node_candidates("""
    graph main(%x: f32[6,6]) {
      %t: f32[36] = reshape(%x) {"shape": [36]}
      %u: f32[6,6] = reshape(%t) {"shape": [6, 6]}
      return %u
    }""") == []


def test_inplace_candidates_fused_epilogue_residual_only():
    text = f"""
    graph main(%x: f32[1,4,3,3], %skip: f32[1,4,3,3]) {{
      const %w: f32[4,4,1,1]
      %r: f32[1,4,3,3] = fused(%x, %w, %skip) {{"name": "conv2d_add_relu", "anchor": "conv2d"}}
        graph conv2d_add_relu(%p: f32[1,4,3,3], %q: f32[4,4,1,1], %s: f32[1,4,3,3]) {{
          %c: f32[1,4,3,3] = conv2d(%p, %q) {CONV}
          %a: f32[1,4,3,3] = add(%c, %s)
          %r: f32[1,4,3,3] = relu(%a)
          return %r
        }}
      return %r
    }}"""
    assert _node_candidates(text, {"w": W1}) == [["skip", "r"]]  # x (same type) feeds the conv: refused


def test_inplace_candidates_fused_param_reaching_a_reduction_or_other_shape():
    assert _node_candidates("""
    graph main(%x: f32[4,6], %y: f32[4,6]) {
      %r: f32[4,6] = fused(%x, %y) {"name": "add_softmax", "anchor": "softmax"}
        graph add_softmax(%p: f32[4,6], %q: f32[4,6]) {
          %a: f32[4,6] = add(%p, %q)
          %r: f32[4,6] = softmax(%a) {"axis": -1}
          return %r
        }
      return %r
    }""") == []
    assert _node_candidates("""
    graph main(%x: f32[4,6], %y: f32[4,6]) {
      %r: f32[4,6] = fused(%x, %y) {"name": "softmax_add", "anchor": "softmax"}
        graph softmax_add(%p: f32[4,6], %q: f32[4,6]) {
          %s: f32[4,6] = softmax(%p) {"axis": -1}
          %r: f32[4,6] = add(%s, %q)
          return %r
        }
      return %r
    }""") == [["y", "r"]]


def test_inplace_candidates_multi_output_fused_node():
    assert _node_candidates("""
    graph main(%x: f32[4,6]) {
      %a: f32[4,6], %b: f32[4,6] = fused(%x) {"name": "relu_exp", "anchor": "relu"}
        graph relu_exp(%p: f32[4,6]) {
          %a: f32[4,6] = relu(%p)
          %b: f32[4,6] = exp(%a)
          return %a, %b
        }
      return %a, %b
    }""") == []


TRANSPOSE_ADD_DUP = """
graph main(%x0: f32[16,16]) {
  %x: f32[16,16] = relu(%x0)
  %r: f32[16,16] = fused(%x, %x) {"name": "transpose_add", "anchor": "transpose"}
    graph transpose_add(%p: f32[16,16], %s: f32[16,16]) {
      %t: f32[16,16] = transpose(%p) {"perm": [1, 0]}
      %r: f32[16,16] = add(%t, %s)
      return %r
    }
  return %r
}"""

TRANSPOSE_ADD_VIEW = """
graph main(%x0: f32[1,16,16]) {
  %x: f32[1,16,16] = relu(%x0)
  %v: f32[16,16] = reshape(%x) {"shape": [16, 16]}
  %r: f32[1,16,16] = fused(%v, %x) {"name": "transpose_add", "anchor": "transpose"}
    graph transpose_add(%p: f32[16,16], %s: f32[1,16,16]) {
      %t: f32[16,16] = transpose(%p) {"perm": [1, 0]}
      %r: f32[1,16,16] = add(%t, %s)
      return %r
    }
  return %r
}"""



def test_inplace_candidates_value_passed_twice_to_a_fused_node():
    # %x reaches the transpose through %p: the kernel reads element j of x for element i of r
    assert _node_candidates(TRANSPOSE_ADD_DUP) == []


# -- end to end: compile small graphs ----------------------------------------------------------------------


def _compile(text: str, passes=(), consts=None):
    g = parse_graph(text, consts or {})
    verify(g)
    return g, compile_graph(g.clone(), "host", passes=None if passes is None else list(passes))


def _outs(y) -> list[np.ndarray]:
    return list(y) if isinstance(y, tuple) else [y]


def check_compiled(g, compiled, seed: int = 0) -> list[np.ndarray]:
    """Numerics vs the interpreter, the report's memory numbers, the stored plan, and the runtime's arena."""
    xs = random_inputs(g, seed)
    expected = interpret(g, xs)
    got = _outs(compiled(*xs))
    assert len(got) == len(expected)
    for e, o in zip(expected, got):
        if e.size:
            assert_close(e, o)
        assert o.shape == e.shape and o.dtype == e.dtype
    r, plan = compiled.report, compiled.plan
    assert r["lower_bound_bytes"] <= r["arena_bytes"] <= r["naive_bytes"]
    assert r["arena_bytes"] == plan["arena_bytes"] == min(r["plan_candidates"].values())
    assert r["plan_algorithm"] in r["plan_candidates"]
    values = plan["values"]
    for name, info in values.items():
        if info["kind"] in ("input", "buffer"):
            off = info["offset"]
            assert off % ALIGN == 0 and 0 <= off, name
            from edgeopt.memory.liveness import nbytes

            assert off + nbytes(info) <= plan["arena_bytes"], name
        else:
            assert "offset" not in info, name
    # the stored offsets pass the verifier again, on the token variant that won
    tokens = build_tokens(plan, inplace=r["plan_algorithm"].endswith("+inplace"))
    offsets = {}
    for t in tokens:
        (off,) = {values[v]["offset"] for v in t.values}
        offsets[t.name] = off
    check_plan(tokens, offsets, plan["arena_bytes"])
    for t in tokens:
        assert all(values[v]["live"] == [t.start, t.end] for v in t.values)
    assert_stored_plan_has_no_conflict(plan)
    # the runtime: one arena, every activation a view inside it at its planned offset
    ctx = compiled._model._context()
    assert ctx.arena.nbytes >= plan["arena_bytes"] and ctx.arena.ctypes.data % ALIGN == 0
    lo = ctx.arena.ctypes.data
    for name, info in values.items():
        if info["kind"] in ("input", "buffer", "view") and not _is_const_view(name, values):
            arr = ctx._arrays[name]
            assert arr.size == 0 or np.shares_memory(arr, ctx.arena), name
            start = arr.ctypes.data
            assert lo <= start and start + arr.nbytes <= lo + ctx.arena.nbytes, name
            if "offset" in info:
                assert start - lo == info["offset"], name
    # the arena is reused: run on other inputs, then again on the first ones
    other = _outs(compiled(*random_inputs(g, seed + 1)))
    again = _outs(compiled(*xs))
    for a, b, c in zip(got, again, other):
        np.testing.assert_array_equal(a, b)
        assert not np.shares_memory(a, ctx.arena) and not np.shares_memory(c, ctx.arena)
    assert compiled._model._context() is ctx
    return got


def assert_stored_plan_has_no_conflict(plan: dict) -> None:
    """From the stored offsets and lifetimes alone: two pieces of storage alive at one step share no byte."""
    from edgeopt.memory.liveness import aligned, nbytes

    store = {}
    for info in plan["values"].values():
        if "offset" in info:
            key = (info["offset"], tuple(info["live"]))
            store[key] = max(store.get(key, 0), aligned(nbytes(info)))
    items = sorted(store.items())
    for i, ((oa, (sa, ea)), za) in enumerate(items):
        for (ob, (sb, eb)), zb in items[i + 1 :]:
            if sa <= eb and sb <= ea:
                assert disjoint((oa, oa + za), (ob, ob + zb)), ((oa, sa, ea), (ob, sb, eb))


def _is_const_view(name, values) -> bool:
    while values[name]["kind"] == "view":
        name = values[name]["of"]
    return values[name]["kind"] == "const"


CHAIN_IR = """
graph main(%x: f32[1,4,6], %y: f32[1,4,6]) {
  %a: f32[1,4,6] = relu(%x)
  %b: f32[1,4,6] = exp(%a)
  %c: f32[1,4,6] = add(%b, %y)
  %d: f32[1,4,6] = tanh(%c)
  return %d
}"""

BRANCH_RESIDUAL_IR = """
graph main(%x: f32[2,8,8]) {
  %a: f32[2,8,8] = relu(%x)
  %b: f32[2,8,8] = exp(%a)
  %c: f32[2,8,8] = neg(%a)
  %t: f32[2,8,8] = transpose(%c) {"perm": [0, 2, 1]}
  %d: f32[2,8,8] = add(%b, %t)
  %e: f32[2,8,8] = tanh(%d)
  %f: f32[2,8,8] = add(%e, %x)
  return %f
}"""

CONCAT_IR = """
graph main(%x: f32[1,4,8], %y: f32[1,2,8]) {
  %a: f32[1,4,8] = relu(%x)
  %b: f32[1,2,8] = exp(%y)
  %s: f32[1,4,8] = softmax(%x) {"axis": -1}
  %c: f32[1,10,8] = concat(%a, %b, %s) {"axis": 1}
  %d: f32[1,10,8] = tanh(%c)
  return %d
}"""

VIEWS_IR = """
graph main(%x: f32[2,8], %y: f32[4,4]) {
  %a: f32[2,8] = relu(%x)
  %v: f32[16] = reshape(%a) {"shape": [16]}
  %b: f32[2,8] = exp(%a)
  %w: f32[4,4] = reshape(%v) {"shape": [4, 4]}
  %s: f32[4,4] = softmax(%w) {"axis": -1}
  %c: f32[4,4] = add(%s, %y)
  %o: f32[8,2] = reshape(%x) {"shape": [8, 2]}
  return %c, %b, %o, %y
}"""


@pytest.mark.parametrize("passes", [(), None], ids=["no_passes", "default_pipeline"])
def test_compiled_chain(passes):
    g, compiled = _compile(CHAIN_IR, passes)
    check_compiled(g, compiled)
    if passes == ():
        assert compiled.report["inplace_values"] > 0
        assert compiled.report["arena_bytes"] < compiled.report["naive_bytes"]
        plan = compiled.plan
        assert all(s.get("inplace") for s in plan["steps"])  # every kernel is elementwise
        offs = {v: plan["values"][v]["offset"] for v in "abcd"}
        assert len(set(offs.values())) < len(offs)  # some kernel wrote over its input


def test_compiled_branch_and_residual():
    g, compiled = _compile(BRANCH_RESIDUAL_IR)
    check_compiled(g, compiled)
    values = compiled.plan["values"]
    # x (the skip connection) is read at the last step: nothing before it may take its bytes
    assert all(values[v]["offset"] != values["x"]["offset"] for v in "abcdte")
    # a is read by two kernels: b (the first reader) may not write over it
    assert values["b"]["offset"] != values["a"]["offset"]
    # the transpose reads element j for element i: never in place
    assert values["t"]["offset"] != values["c"]["offset"]


def test_compiled_branch_and_residual_default_pipeline():
    g, compiled = _compile(BRANCH_RESIDUAL_IR, None)
    check_compiled(g, compiled)


def test_compiled_concat():
    g, compiled = _compile(CONCAT_IR)
    check_compiled(g, compiled)
    values = compiled.plan["values"]
    ranges = []
    for v in ("a", "b", "s", "c"):
        info = values[v]
        ranges.append((info["offset"], info["offset"] + 4 * int(np.prod(info["shape"]))))
    for i in range(4):
        for j in range(i + 1, 4):
            assert disjoint(ranges[i], ranges[j]), (i, j)


def test_compiled_views_and_outputs_aliasing_inputs():
    g, compiled = _compile(VIEWS_IR)
    got = check_compiled(g, compiled)
    xs = random_inputs(g, 0)
    np.testing.assert_array_equal(got[2], xs[0].reshape(8, 2))  # an output that is a view of an input
    np.testing.assert_array_equal(got[3], xs[1])  # an output that is an input
    values = compiled.plan["values"]
    assert values["v"]["kind"] == "view" and "offset" not in values["v"]
    # a stays alive until the softmax reads it through the views: exp may not write over it
    assert values["b"]["offset"] != values["a"]["offset"]


def test_compiled_model_without_kernels():
    g, compiled = _compile("""
    graph main(%x: f32[3,4], %y: f32[2]) {
      %v: f32[12] = reshape(%x) {"shape": [12]}
      return %v, %y
    }""")
    assert compiled.plan["steps"] == []
    got = check_compiled(g, compiled)
    xs = random_inputs(g, 0)
    np.testing.assert_array_equal(got[0], xs[0].reshape(12))


def test_compiled_odd_sizes_and_bool_values():
    # 60-byte f32 and 15-byte bool tensors: every offset still 64-aligned (the kernels require it)
    g, compiled = _compile("""
    graph main(%x: f32[3,5], %y: f32[3,5]) {
      %m: bool[3,5] = lt(%x, %y)
      %a: f32[3,5] = relu(%x)
      %b: f32[3,5] = where(%m, %a, %y)
      %c: f32[3,5] = exp(%b)
      return %c, %m
    }""")
    check_compiled(g, compiled)
    assert compiled.report["inplace_values"] > 0


def test_compiled_zero_size_tensor():
    g, compiled = _compile("""
    graph main(%x: f32[0,4], %y: f32[2,4]) {
      %a: f32[0,4] = relu(%x)
      %b: f32[2,4] = exp(%y)
      return %a, %b
    }""")
    check_compiled(g, compiled)


def test_compiled_multi_output_kernel_and_repeated_output():
    g, compiled = _compile("""
    graph main(%x: f32[4,6]) {
      %s: f32[4,6] = neg(%x)
      %a: f32[4,6], %b: f32[4,6] = fused(%s) {"name": "relu_exp", "anchor": "relu"}
        graph relu_exp(%p: f32[4,6]) {
          %a: f32[4,6] = relu(%p)
          %b: f32[4,6] = exp(%a)
          return %a, %b
        }
      %c: f32[4,6] = add(%a, %b)
      return %c, %c, %b
    }""")
    got = check_compiled(g, compiled)
    np.testing.assert_array_equal(got[0], got[1])
    values = compiled.plan["values"]
    assert values["a"]["offset"] != values["b"]["offset"]  # two outputs of one kernel
    assert values["b"]["live"][1] == len(compiled.plan["steps"])  # a graph output


def test_runtime_runs_a_plan_without_offsets():
    """An artifact without a memory plan (no offsets, no arena size): each tensor gets a buffer of its own."""
    g, compiled = _compile(BRANCH_RESIDUAL_IR)
    model = compiled._model
    xs = random_inputs(g, 0)
    want = compiled(*xs)
    plan = model.plan
    stripped = {k: v for k, v in plan.items() if k != "arena_bytes"}
    stripped["values"] = {k: {f: x for f, x in v.items() if f not in ("offset", "live")}
                          for k, v in plan["values"].items()}
    try:
        model.plan, model._local = stripped, threading.local()
        ctx = model._context()
        assert ctx.arena.nbytes == 0
        np.testing.assert_array_equal(model(*xs), want)
        for name, info in stripped["values"].items():
            if info["kind"] in ("input", "buffer"):
                assert ctx._arrays[name].ctypes.data % ALIGN == 0
    finally:
        model.plan, model._local = plan, threading.local()


def test_compiled_fused_residual_epilogue_in_place():
    # conv + residual add fused (a user's rule; fuse_epilogue leaves it): the residual's storage may take the
    # output (it dies at that kernel)
    text = f"""
    graph main(%x: f32[1,4,5,5]) {{
      const %w: f32[4,4,1,1]
      %s: f32[1,4,5,5] = exp(%x)
      %c: f32[1,4,5,5] = conv2d(%x, %w) {CONV}
      %a: f32[1,4,5,5] = add(%c, %s)
      %r: f32[1,4,5,5] = relu(%a)
      return %r
    }}"""
    g, compiled = _compile(text, [CONV_RESIDUAL_FUSION], {"w": W1})
    check_compiled(g, compiled)
    (fused,) = [s for s in compiled.plan["steps"] if s["args"][-1] == "r"]
    assert fused.get("inplace") == [["s", "r"]]
    values = compiled.plan["values"]
    assert values["r"]["offset"] == values["s"]["offset"]
    assert compiled.report["inplace_values"] >= 1


def test_saved_artifact_keeps_the_plan(tmp_path):
    import edgeopt

    g, compiled = _compile(BRANCH_RESIDUAL_IR)
    path = tmp_path / "m.edgeopt"
    compiled.save(path)
    loaded = edgeopt.load(str(path))
    assert loaded.plan["arena_bytes"] == compiled.plan["arena_bytes"]
    assert {k: v.get("offset") for k, v in loaded.plan["values"].items()} == {
        k: v.get("offset") for k, v in compiled.plan["values"].items()}
    xs = random_inputs(g, 3)
    np.testing.assert_array_equal(loaded(*xs), compiled(*xs))


def test_each_thread_gets_its_own_arena():
    g, compiled = _compile(CHAIN_IR)
    model = compiled._model
    xs0, xs1 = random_inputs(g, 0), random_inputs(g, 1)
    want0, want1 = compiled(*xs0), compiled(*xs1)
    main_ctx = model._context()
    seen, errors = {}, []

    def worker(i, xs, want):
        try:
            for _ in range(50):
                np.testing.assert_array_equal(model(*xs), want)
            seen[i] = model._context()
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(i, xs, w)) for i, (xs, w) in enumerate([(xs0, want0),
                                                                                             (xs1, want1)])]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    arenas = [main_ctx.arena, seen[0].arena, seen[1].arena]
    for i in range(3):
        for j in range(i + 1, 3):
            assert not np.shares_memory(arenas[i], arenas[j])


def test_runtime_refuses_an_offset_outside_the_arena():
    from edgeopt.errors import ArtifactError
    from edgeopt.runtime.cpu_context import CpuContext

    _, compiled = _compile(CHAIN_IR)
    model = compiled._model
    plan = model.plan
    saved = plan["values"]["d"]["offset"], plan["arena_bytes"]
    try:
        plan["values"]["d"]["offset"] = plan["arena_bytes"]
        with pytest.raises(ArtifactError, match="outside"):
            CpuContext(model)
        plan["values"]["d"]["offset"] = 32
        with pytest.raises(ArtifactError, match="misaligned"):
            CpuContext(model)
    finally:
        plan["values"]["d"]["offset"], plan["arena_bytes"] = saved


@pytest.mark.parametrize("text", [TRANSPOSE_ADD_DUP, TRANSPOSE_ADD_VIEW], ids=["same_value_twice", "value_and_view"])
def test_compiled_fused_kernel_reading_its_inplace_input_twice(text):
    g, compiled = _compile(text)
    xs = random_inputs(g, 0)
    assert_close(interpret(g, xs)[0], compiled(*xs))


# -- zoo models -----------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.models
@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2", "minilm"])
def test_zoo_arena_near_lower_bound(name):
    from tests.conftest import as_list, compile_zoo, rel_err, torch_outputs

    model, inputs, compiled = compile_zoo(name)
    r = compiled.report
    assert r["arena_bytes"] / r["lower_bound_bytes"] <= 1.05, (r["arena_bytes"], r["lower_bound_bytes"])
    assert r["arena_bytes"] <= r["naive_bytes"]
    ref = torch_outputs(model, inputs)
    got = as_list(compiled(*inputs))
    for a, b in zip(ref, got):
        assert rel_err(a, b) <= 1e-4, f"{name}: compiled vs torch {rel_err(a, b):.2e}"
    plan = compiled.plan
    tokens = build_tokens(plan, inplace=r["plan_algorithm"].endswith("+inplace"))
    check_plan(tokens, {t.name: plan["values"][t.name]["offset"] for t in tokens}, plan["arena_bytes"])
