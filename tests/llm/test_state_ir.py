"""IR state (a KV cache): text form, verifier, interpreter, the index_copy op, and the frontend's buffer mutations."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edgeopt.errors import UnsupportedModelError
from edgeopt.frontend import from_torch
from edgeopt.ir import Graph, TensorType, VerificationError, interpret, verify
from edgeopt.ir.text import ParseError, parse_graph

CACHE = """graph step(%x: f32[1,2,4], %pos: i64[2], state %cache: f32[1,8,4]) {
  %new: f32[1,8,4] = index_copy(%cache, %x, %pos) {"axis": 1}
  %y: f32[1,8] = sum(%new) {"axes": [2], "keepdims": false}
  state %cache <- %new
  return %y
}
"""


def test_state_text_round_trips_and_verifies():
    g = parse_graph(CACHE)
    verify(g)
    assert [v.name for v in g.states] == ["cache"] and g.state_updates["cache"].name == "new"
    assert str(g) == CACHE
    assert str(g.clone()) == CACHE


def test_interpreter_keeps_state_between_calls():
    g = parse_graph(CACHE)
    states: dict = {}
    x = np.ones((1, 2, 4), np.float32)
    (y,) = interpret(g, [x, np.array([0, 3])], states=states)
    np.testing.assert_array_equal(y[0], [4, 0, 0, 4, 0, 0, 0, 0])
    (y,) = interpret(g, [2 * x, np.array([3, 5])], states=states)  # position 3 rewritten, 0 kept
    np.testing.assert_array_equal(y[0], [4, 0, 0, 8, 0, 8, 0, 0])
    assert states["cache"].shape == (1, 8, 4)


@pytest.mark.parametrize("text, why", [
    (CACHE.replace('%y: f32[1,8] = sum(%new)', '%y: f32[1,8] = sum(%cache)'), "read by 2 nodes"),
    (CACHE.replace("state %cache <- %new", "state %cache <- %x"), "typed"),
    (CACHE.replace('%new: f32[1,8,4] = index_copy(%cache, %x, %pos) {"axis": 1}',
                   '%new: f32[1,8,4] = exp(%cache)'), "must be an index_copy"),
])
def test_verifier_refuses_a_state_update_that_cannot_run_in_place(text, why):
    with pytest.raises(VerificationError, match=why):
        verify(parse_graph(text))


def test_parser_refuses_an_update_of_an_undeclared_state():
    with pytest.raises(ParseError, match="declared state"):
        parse_graph(CACHE.replace("state %cache <- %new", "state %other <- %new"))


@pytest.mark.parametrize("index", [[0, 2], [2, 2], [-1, 1], [9, 1]])
def test_index_copy_reference_matches_torch(index):
    x = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    src = -np.arange(16, dtype=np.float32).reshape(2, 2, 4) - 1
    g = Graph()
    xv, sv, iv = g.add_input("x", TensorType((2, 3, 4), "f32")), g.add_input("s", TensorType((2, 2, 4), "f32")), \
        g.add_input("i", TensorType((2,), "i64"))
    g.set_outputs([g.add("index_copy", [xv, sv, iv], {"axis": 1})])
    (got,) = interpret(g, [x, src, np.array(index)])
    want = x.copy()
    for i, j in enumerate(index):  # in order; outside [0, 3) writes nothing
        if 0 <= j < 3:
            want[:, j] = src[:, i]
    np.testing.assert_array_equal(got, want)
    if min(index) >= 0 and max(index) < 3 and len(set(index)) == len(index):
        ref = torch.from_numpy(x).index_copy(1, torch.tensor(index), torch.from_numpy(src)).numpy()
        np.testing.assert_array_equal(got, ref)


class _Cache(torch.nn.Module):
    def __init__(self, update: str = "index_copy"):
        super().__init__()
        self.register_buffer("cache", torch.zeros(1, 8, 4))
        self.update = update

    def forward(self, x, pos):
        if self.update == "index_copy":
            self.cache.index_copy_(1, pos, x)
        elif self.update == "setitem":
            self.cache[:, pos] = x
        else:
            self.cache.add_(1.0)
        return self.cache.sum(-1)


@pytest.mark.parametrize("update, index", [("index_copy", [1, 6]), ("setitem", [1, -1])])  # -1: the last, as torch
def test_frontend_turns_an_updated_buffer_into_state(update, index):
    m = _Cache(update)
    x, pos = torch.randn(1, 2, 4), torch.tensor(index)
    g = from_torch(m, (x, pos), state=True)
    assert [v.name for v in g.states] == ["cache"] and "cache" in g.state_updates
    states: dict = {}
    (got,) = interpret(g, [x.numpy(), pos.numpy()], states=states)
    np.testing.assert_allclose(got, m(x, pos).numpy(), rtol=1e-6)
    np.testing.assert_allclose(states["cache"], m.cache.numpy())


def test_an_update_that_is_not_an_index_copy_is_one_clear_error():
    with pytest.raises(UnsupportedModelError, match="index_copy_"):
        from_torch(_Cache("add"), (torch.randn(1, 2, 4), torch.tensor([0, 1])), state=True)
    with pytest.raises(UnsupportedModelError, match="modified in place"):  # edgeopt.compile: no state
        from_torch(_Cache(), (torch.randn(1, 2, 4), torch.tensor([0, 1])))


def test_compiled_state_update_writes_rows_in_place():
    import edgeopt
    from edgeopt.api import compile_graph

    g = parse_graph(CACHE)
    c = compile_graph(g, "host")
    kinds = {v["kind"] for v in c.plan["values"].values()}
    assert "state" in kinds and c.plan["values"]["new"] == {**c.plan["values"]["new"], "kind": "view", "of": "cache"}
    assert any(k["schedule"] == "tir(rows in place)" for k in c.report["kernels"])
    model = c._runtime_model()
    x = np.ones((1, 2, 4), np.float32)
    ref_states: dict = {}
    for scale, pos in ((1, [0, 3]), (2, [3, 5]), (3, [7, 9])):  # 9: outside the cache, written nowhere
        (want,) = interpret(parse_graph(CACHE), [scale * x, np.array(pos)], states=ref_states)
        np.testing.assert_array_equal(model(scale * x, np.array(pos)), want)
    model.reset_state()
    np.testing.assert_array_equal(model(x, np.array([1, 2]))[0], [0, 4, 4, 0, 0, 0, 0, 0])
    assert edgeopt  # the public package imports with the state support


@pytest.mark.parametrize("index", [[0, 2], [2, 2], [5, -1]])  # duplicates: the last wins; outside: nothing
def test_compiled_index_copy_of_a_tensor_matches_the_reference(index):
    from edgeopt.api import compile_graph

    g = Graph()
    xv, sv, iv = g.add_input("x", TensorType((2, 3, 4), "f32")), g.add_input("s", TensorType((2, 2, 4), "f32")), \
        g.add_input("i", TensorType((2,), "i64"))
    y = g.add("index_copy", [xv, sv, iv], {"axis": 1})
    g.set_outputs([g.add("mul", [y, xv])])  # x is read again: the copy cannot be in place
    args = [np.arange(24, dtype=np.float32).reshape(2, 3, 4), -np.ones((2, 2, 4), np.float32), np.array(index)]
    (want,) = interpret(g, args)
    c = compile_graph(g.clone(), "host")
    np.testing.assert_array_equal(c(*args), want)


def test_a_state_updated_at_a_constant_position_compiles():
    from edgeopt.api import compile_graph

    text = CACHE.replace("%pos: i64[2], ", "").replace("%x: f32[1,2,4]", "%x: f32[1,1,4]").replace(
        "{\n", "{\n  const %pos: i64[1] = [3]\n", 1)
    g = parse_graph(text)
    model = compile_graph(g.clone(), "host")._runtime_model()
    states: dict = {}
    x = np.ones((1, 1, 4), np.float32)
    (want,) = interpret(g, [x], states=states)
    np.testing.assert_array_equal(model(x), want)


def test_a_buffer_that_does_not_start_at_zero_is_refused():
    m = _Cache()
    m.cache.fill_(1.0)
    with pytest.raises(UnsupportedModelError, match="torch.zeros"):
        from_torch(m, (torch.randn(1, 2, 4), torch.tensor([0, 1])), state=True)


def test_verifier_refuses_an_updated_state_returned_as_output():
    with pytest.raises(VerificationError, match="graph output"):
        verify(parse_graph(CACHE.replace("return %y", "return %y, %cache")))


def test_per_group_weights_are_for_weight_only_modes():
    from edgeopt.quant import QuantConfig, QuantizationError

    QuantConfig(mode="int8-weight", weights="per-group")
    with pytest.raises(QuantizationError, match="weight-only"):
        QuantConfig(mode="int8", weights="per-group")
