"""pack_int8_words: 8-bit weights four to an i32 word for targets without 8-bit integers: structure (which
constants are packed, along which axis, what is left), numerics (interpreter before vs after, bit for bit), its
place in the Vulkan pipeline and the weight bytes it saves there."""

from __future__ import annotations

import numpy as np
import torch

import edgeopt
from edgeopt.ir import interpret, parse_graph, verify
from edgeopt.ir.registry import get_op
from edgeopt.testing import run_pass

BEFORE = """graph main(%x: f32[1,8,5,5], %ids: i32[1,3]) {
  const %w_q: i8[16,8,3,3]
  const %w_scale: f32[16,1,1,1]
  const %table_q: i8[10,12]
  const %table_scale: f32[10,1]
  const %nib: u8[6,8]
  const %nib_scale: f32[6,4]
  const %nib_min: f32[6,4]
  const %odd_q: i8[6,3]
  const %odd_scale: f32[6,1]
  const %shared_q: i8[4,4]
  const %shared_scale: f32[] = 0.5
  %w: f32[16,8,3,3] = dequantize(%w_q, %w_scale)
  %y: f32[1,16,5,5] = conv2d(%x, %w) {"padding": [1, 1, 1, 1]}
  %rows: i8[1,3,12] = take(%table_q, %ids) {"axis": 0}
  %rs: f32[1,3,1] = take(%table_scale, %ids) {"axis": 0}
  %e: f32[1,3,12] = dequantize(%rows, %rs)
  %n: f32[6,16] = dequantize(%nib, %nib_scale, %nib_min) {"bits": 4, "group_size": 4}
  %o: f32[6,3] = dequantize(%odd_q, %odd_scale)
  %s: f32[4,4] = dequantize(%shared_q, %shared_scale)
  %c: f32[4,4] = cast(%shared_q) {"dtype": "f32"}
  return %y, %e, %n, %o, %s, %c
}
"""


def _graph():
    rng = np.random.default_rng(0)

    def i8(*shape):
        return rng.integers(-128, 128, shape).astype(np.int8)

    def scale(*shape):
        return rng.uniform(0.01, 0.1, shape).astype(np.float32)

    g = parse_graph(BEFORE, {
        "w_q": i8(16, 8, 3, 3), "w_scale": scale(16, 1, 1, 1), "table_q": i8(10, 12), "table_scale": scale(10, 1),
        "nib": rng.integers(0, 256, (6, 8)).astype(np.uint8), "nib_scale": scale(6, 4),
        "nib_min": rng.uniform(-1, 0, (6, 4)).astype(np.float32), "odd_q": i8(6, 3), "odd_scale": scale(6, 1),
        "shared_q": i8(4, 4)})
    for n in g.nodes:
        n.attrs = get_op(n.op).normalize_attrs(n.attrs)
    return g, [rng.standard_normal((1, 8, 5, 5)).astype(np.float32), np.array([[0, 9, 4]], np.int32)]


def test_weights_packed_along_an_axis_of_four_and_the_numbers_unchanged():
    g, xs = _graph()
    before = g.clone()
    stats = run_pass("pack_int8_words", g)
    verify(g)
    nodes = {n.outputs[0].name: n for n in g.nodes}
    types = {name: (str(v.type)) for name, v in g.const_values.items()}
    # a conv weight along its input channels (the last axis of a multiple of 4), four to a word
    assert types["w_q"] == "i32[16,2,3,3]" and nodes["w"].attrs["packed_axis"] == -3
    # an embedding table along its rows' width: the take gathers words, the dequantize unpacks the rows
    assert types["table_q"] == "i32[10,3]" and str(nodes["rows"].outputs[0].type) == "i32[1,3,3]"
    assert nodes["e"].attrs["packed_axis"] == -1 and nodes["e"].attrs["packed_dtype"] == "i8"
    # int4 bytes, eight nibbles a word, read unsigned
    assert types["nib"] == "i32[6,2]" and nodes["n"].attrs["packed_dtype"] == "u8"
    # left for wgsl_int_types to widen: no axis of a multiple of 4, or read by something else than dequantize
    assert types["odd_q"] == "i8[6,3]" and nodes["o"].attrs["packed_axis"] is None
    assert types["shared_q"] == "i8[4,4]" and nodes["s"].attrs["packed_axis"] is None
    assert stats["packed"] == 3 and [s.split(":")[0] for s in stats["left_widened"]] == ["odd_q", "shared_q"]
    assert stats["bytes_saved"] == 3 * (16 * 8 * 9 + 10 * 12 + 6 * 8)
    for want, got in zip(interpret(before, xs), interpret(g, xs)):
        np.testing.assert_array_equal(got, want)


def test_packs_nothing_twice():
    g, xs = _graph()
    run_pass("pack_int8_words", g)
    again = g.clone()
    assert run_pass("pack_int8_words", again)["packed"] == 0
    for want, got in zip(interpret(g, xs), interpret(again, xs)):
        np.testing.assert_array_equal(got, want)


class _Encoder(torch.nn.Module):
    """An embedding table and two linears: what int8-weight and int4-weight quantize."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.emb = torch.nn.Embedding(64, 32)
        self.up, self.down = torch.nn.Linear(32, 64), torch.nn.Linear(64, 32)

    def forward(self, ids):
        return self.down(torch.relu(self.up(self.emb(ids))))


def test_vulkan_pipeline_packs_before_widening_and_keeps_the_weights_small():
    """Built for Vulkan (compiling needs no device), int8-weight / int4-weight weights take the bytes they take on
    the host; widened to i32 they took as many as f32 (or, for int4's bytes, half)."""
    model, ids = _Encoder().eval(), torch.randint(0, 64, (2, 8))
    fp32 = edgeopt.compile(model, [ids], target="vulkan").report["weight_bytes"]
    for mode, most in (("int8-weight", 0.3), ("int4-weight", 0.2)):
        host = edgeopt.compile(model, [ids], quantize=edgeopt.QuantConfig(mode=mode, reduce_range=False))
        gpu = edgeopt.compile(model, [ids], target="vulkan", quantize=mode)
        names = [p["name"] for p in gpu.report["passes"]]
        at = names.index("pack_int8_words")
        assert names[at + 1] == "wgsl_int_types" and names.index("quantize_weights") < at, names
        assert "pack_int8_words" not in [p["name"] for p in host.report["passes"]]
        assert gpu.report["weight_bytes"] <= most * fp32, (mode, gpu.report["weight_bytes"], fp32)
        assert gpu.report["weight_bytes"] <= 1.02 * host.report["weight_bytes"], mode
        assert not [v for v in gpu.graph.const_values.values() if v.type.dtype in ("i8", "u8")]


def test_take_along_a_middle_axis_direct_readers_and_what_is_left():
    """A table read both through a take along axis 1 and directly: packed along an axis after the take's, for both
    readers. A zero point and a graph output stay as they are."""
    text = """graph main(%ids: i32[2]) {
  const %t: i8[3,8,4]
  const %ts: f32[] = 0.1
  const %zp: i8[4]
  const %out_q: i8[4,4]
  %r: i8[3,2,4] = take(%t, %ids) {"axis": 1}
  %rd: f32[3,2,4] = dequantize(%r, %ts)
  %d: f32[3,8,4] = dequantize(%t, %ts)
  %z: f32[4,4] = dequantize(%out_q, %ts, %zp)
  return %rd, %d, %z, %out_q
}
"""
    rng = np.random.default_rng(1)
    g = parse_graph(text, {"t": rng.integers(-128, 128, (3, 8, 4)).astype(np.int8),
                           "zp": rng.integers(-128, 128, 4).astype(np.int8),
                           "out_q": rng.integers(-128, 128, (4, 4)).astype(np.int8)})
    for n in g.nodes:
        n.attrs = get_op(n.op).normalize_attrs(n.attrs)
    before = g.clone()
    stats = run_pass("pack_int8_words", g)
    verify(g)
    nodes = {n.outputs[0].name: n for n in g.nodes}
    assert str(g.const_values["t"].type) == "i32[3,8,1]" and str(nodes["r"].outputs[0].type) == "i32[3,2,1]"
    assert nodes["rd"].attrs["packed_axis"] == nodes["d"].attrs["packed_axis"] == -1
    assert nodes["z"].attrs["packed_axis"] is None
    assert stats["left_widened"] == ["zp: read by dequantize (as a parameter)", "out_q: a graph output"]
    ids = np.array([7, 2], np.int32)
    for want, got in zip(interpret(before, [ids]), interpret(g, [ids])):
        np.testing.assert_array_equal(got, want)
