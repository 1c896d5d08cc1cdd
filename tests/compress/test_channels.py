"""Structured pruning's dependency analysis and graph rebuild: channels removed together stay consistent
through residual adds, concatenations, depthwise convs, flattens, attention heads; what is not safe is kept.

The numerics check: a pruned graph computes exactly what the original computes when the removed channels are
cut off, i.e. the original with every consumer's slice of them (next conv's input channels, linear columns)
set to zero. That holds only if every coupled weight was sliced with the same indices."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from edgeopt.compress.channels import Unit, analyze, choose, prune_graph
from edgeopt.compress.cost import graph_macs, graph_params
from edgeopt.frontend import from_torch
from edgeopt.ir import interpret, parse_graph, verify
from edgeopt.ir.registry import get_op
from edgeopt.testing import random_inputs
from tests.compress.nets import ConcatNet, HeadsNet, randomize_bn


def parse_random(source: str, seed: int = 0, **given):
    """Parse IR text, with random normal data for each constant not in ``given``."""
    rng = np.random.default_rng(seed)
    consts = {}
    for name, dims in re.findall(r"const %(\w+): f32\[([\d,]+)\]", source):
        shape = tuple(int(d) for d in dims.split(","))
        consts[name] = given.get(name, rng.standard_normal(shape).astype(np.float32))
    g = parse_graph(source, consts)
    for n in g.nodes:
        n.attrs = get_op(n.op).normalize_attrs(n.attrs)
    return g


def masked(g, drop: list[Unit]):
    """``g`` with the consumer slices of the dropped channels zeroed: a weight's slice along an axis other than
    the one its layer makes (a conv's input channels, a linear's columns)."""
    makes = {(w, a) for u in analyze(g).units for w, a, _ in u.makers}
    made_by = {w for w, _ in makes}
    out = g.clone()
    out.constants = dict(g.constants)
    for u in drop:
        for w, a, i in u.weights:
            if w in made_by and (w, a) not in makes:
                arr = out.constants[w].copy()
                np.moveaxis(arr, a, 0)[i] = 0
                out.constants[w] = arr
    return out


def check_pruned(g, ratio=0.5, rtol=1e-4):
    ch = analyze(g)
    drop = choose(ch, g, ratio)
    assert drop, "nothing was prunable"
    pruned, kept = prune_graph(g, ch, drop)
    verify(pruned)
    assert graph_macs(pruned) < graph_macs(g) and graph_params(pruned) < graph_params(g)
    xs = random_inputs(g, 3)
    want = interpret(masked(g, drop), xs)
    got = interpret(pruned, xs)
    for a, b in zip(want, got):
        assert a.shape == b.shape
        np.testing.assert_allclose(b, a, rtol=rtol, atol=rtol * float(np.abs(a).max()))
    return ch, drop, pruned, kept


def test_before_after_example():
    w1 = np.ones((4, 3, 3, 3), np.float32) * np.array([3, 1, 4, 0.5], np.float32)[:, None, None, None]
    g = parse_random("""
graph main(%x: f32[1,3,8,8]) {
  const %w1: f32[4,3,3,3]
  const %w2: f32[8,4,1,1]
  %a: f32[1,4,8,8] = conv2d(%x, %w1) {"padding": [1, 1, 1, 1]}
  %r: f32[1,4,8,8] = relu(%a)
  %y: f32[1,8,8,8] = conv2d(%r, %w2)
  return %y
}""", w1=w1)
    ch, drop, pruned, kept = check_pruned(g)
    assert [v.type.shape for v in pruned.nodes[0].outputs] == [(1, 2, 8, 8)]
    assert pruned.constants["w1"].shape == (2, 3, 3, 3) and pruned.constants["w2"].shape == (8, 2, 1, 1)
    np.testing.assert_array_equal(kept["w1"][0], [0, 2])  # filters with L1 norms 3 and 4 stay
    np.testing.assert_array_equal(pruned.constants["w2"], g.constants["w2"][:, [0, 2]])


@pytest.mark.parametrize("name", ["resnet18", "resnet50", "mobilenet_v2", "mobilenet_v3", "efficientnet_lite0"])
def test_zoo_cnns_prune_consistently(name):
    from tests.models.zoo import build

    model, inputs = build(name, small=True)  # efficientnet_lite0: pretrained weights
    g = from_torch(model, inputs)
    ch, drop, pruned, _ = check_pruned(g)
    out_shapes = [v.type.shape for v in pruned.outputs]
    assert out_shapes == [v.type.shape for v in g.outputs]


def test_residual_stream_is_one_group():
    """The convs that write one residual add lose the same channels (ResNet BasicBlock with identity)."""
    from tests.models.zoo import build

    model, inputs = build("resnet18", small=True)
    g = from_torch(model, inputs)
    ch, drop, pruned, kept = check_pruned(g)
    unit_of = {key: id(u) for u in ch.units for key in u.values}
    adds = [n for n in g.nodes if n.op == "add" and n.outputs[0].type.rank == 4]
    assert len(adds) >= 4
    for n in adds:
        (x, y), out = n.inputs, n.outputs[0]
        for i in range(out.type.shape[1]):
            assert unit_of[(out.name, i)] == unit_of[(x.name, i)] == unit_of[(y.name, i)]
    makers = {}
    for u in ch.units:
        makers.setdefault(u.space(), set()).update(w for w, _, _ in u.makers)
    assert max(len(ws) for ws in makers.values()) >= 2, "no residual stream couples several convs"


def test_concat_depthwise_flatten():
    torch.manual_seed(0)
    model = randomize_bn(ConcatNet())
    g = from_torch(model, (torch.randn(1, 3, 8, 8),))
    ch, drop, pruned, kept = check_pruned(g)
    dw = next(n for n in pruned.nodes if n.op == "conv2d" and n.attrs["groups"] > 1)
    assert dw.attrs["groups"] == dw.inputs[0].type.shape[1] == dw.outputs[0].type.shape[1] < 16
    cat = next(n for n in pruned.nodes if n.op == "concat")
    assert cat.outputs[0].type.shape[1] == sum(v.type.shape[1] for v in cat.inputs)
    head = next(n for n in pruned.nodes if n.op == "linear")
    assert head.inputs[1].type.shape[1] == dw.outputs[0].type.shape[1] * 4 * 4  # a channel is 16 features


def test_attention_heads_and_mlp_neurons():
    torch.manual_seed(0)
    g = from_torch(HeadsNet().eval(), (torch.randn(1, 6, 32),))
    ch, drop, pruned, kept = check_pruned(g)
    q = next(k for k, v in g.param_names.items() if v == "q.weight")
    up = next(k for k, v in g.param_names.items() if v == "up.weight")
    assert kept[q][0].size == 16 and set(kept[q]) == {0}  # 2 of 4 heads, whole: rows of one head go together
    heads = sorted({int(i) // 8 for i in kept[q][0]})
    assert len(heads) == 2 and sorted(kept[q][0].tolist()) == [h * 8 + j for h in heads for j in range(8)]
    assert kept[up][0].size == 32  # MLP neurons
    norm_width = [n for n in pruned.nodes if n.op == "layer_norm"][0].inputs[0].type.shape[-1]
    assert norm_width == 32  # the layer-normed residual width is kept


def test_minilm_heads_and_ffn():
    from tests.models.zoo import build

    model, inputs = build("minilm", small=True)
    g = from_torch(model, inputs)
    ch, drop, pruned, kept = check_pruned(g, rtol=2e-4)
    by_name = {v: k for k, v in g.param_names.items()}
    ffn = kept[by_name["model.encoder.layer.0.intermediate.dense.weight"]][0]
    query = kept[by_name["model.encoder.layer.0.attention.self.query.weight"]][0]
    assert ffn.size == 768 and query.size == 6 * 32
    assert by_name["model.embeddings.word_embeddings.weight"] not in kept  # the layer-normed width stays


@pytest.mark.parametrize("source", [
    # the channels reach the output
    """graph main(%x: f32[1,3,4,4]) {
  const %w: f32[4,3,1,1]
  %y: f32[1,4,4,4] = conv2d(%x, %w)
  return %y
}""",
    # a slice of the channel axis
    """graph main(%x: f32[1,3,4,4]) {
  const %w: f32[4,3,1,1]
  const %w2: f32[2,2,1,1]
  %a: f32[1,4,4,4] = conv2d(%x, %w)
  %s: f32[1,2,4,4] = slice(%a) {"axis": 1, "start": 0, "end": 2}
  %y: f32[1,2,4,4] = conv2d(%s, %w2)
  return %y
}""",
    # a reduction over the channels
    """graph main(%x: f32[1,3,4,4]) {
  const %w: f32[4,3,1,1]
  %a: f32[1,4,4,4] = conv2d(%x, %w)
  %y: f32[1,4,4] = sum(%a) {"axes": [1]}
  return %y
}""",
    # added to a graph input's channels
    """graph main(%x: f32[1,4,4,4]) {
  const %w: f32[4,4,1,1]
  const %w2: f32[2,4,1,1]
  %a: f32[1,4,4,4] = conv2d(%x, %w)
  %b: f32[1,4,4,4] = add(%a, %x)
  %y: f32[1,2,4,4] = conv2d(%b, %w2)
  return %y
}""",
])
def test_unsafe_channels_are_kept(source):
    g = parse_random(source)
    ch = analyze(g)
    assert ch.spaces() == [] or all(len(s) == 0 for s in ch.spaces())
    assert choose(ch, g, 0.5) == []


def test_ratio_round_to_and_scores():
    torch.manual_seed(0)
    model = randomize_bn(ConcatNet())
    g = from_torch(model, (torch.randn(1, 3, 8, 8),))
    ch = analyze(g)
    sizes = sorted(len(s) for s in ch.spaces())
    for ratio in (0.25, 0.5, 0.75):
        drop = choose(ch, g, ratio)
        assert len(drop) == sum(int(n * ratio) for n in sizes if n - int(n * ratio) >= 1)
    drop = choose(ch, g, 0.5, round_to=4)
    for space in ch.spaces():
        kept = len(space) - sum(u in drop for u in space)
        assert kept % 4 == 0 or kept == len(space)
    assert choose(ch, g, 0.5, score="l2")
    with pytest.raises(ValueError, match="score"):
        choose(ch, g, 0.5, score="random")
    with pytest.raises(ValueError, match="ratio"):
        choose(ch, g, 1.0)


def test_grouped_multiplier_and_tied_weights():
    """A grouped conv and a channel-multiplier depthwise conv keep their groups; a weight two layers share loses
    the same slices for both (or none)."""
    from tests.compress.nets import GroupedNet

    torch.manual_seed(0)
    g = from_torch(GroupedNet().eval(), (torch.randn(1, 3, 8, 8),))
    ch, drop, pruned, kept = check_pruned(g)
    groups = sorted(n.attrs["groups"] for n in pruned.nodes if n.op == "conv2d")
    assert groups == [1, 1, 4, 16]  # unchanged: their channels could not be pruned


def test_multi_query_attention_keeps_consistent_heads():
    from tests.compress.nets import MultiQueryNet

    torch.manual_seed(0)
    g = from_torch(MultiQueryNet().eval(), (torch.randn(1, 6, 32),))
    ch = analyze(g)
    drop = choose(ch, g, 0.5)
    pruned, _ = prune_graph(g, ch, drop)  # no shape error: the expanded key/value head blocks query heads
    verify(pruned)
    if drop:
        check_pruned(g)


def test_weights_read_unsliced_are_kept():
    """A weight that a gather reads as well as a linear cannot lose slices (a tied embedding / output layer)."""
    g = parse_random("""
graph main(%x: f32[2,16], %i: i64[3]) {
  const %w: f32[32,16]
  const %w2: f32[4,32]
  %h: f32[2,32] = linear(%x, %w) {"weight_layout": "oi"}
  %r: f32[2,32] = relu(%h)
  %y: f32[2,4] = linear(%r, %w2) {"weight_layout": "oi"}
  %e: f32[3,16] = take(%w, %i) {"axis": 0}
  return %y, %e
}""")
    assert choose(analyze(g), g, 0.5) == []


def test_round_to_counts_channels_not_heads():
    """16 heads of 8 channels: round_to=16 is satisfied by any head count (each head is 8 channels... two make
    16), so half the heads go."""
    torch.manual_seed(0)
    g = from_torch(HeadsNet(d=128, heads=16, hidden=32).eval(), (torch.randn(1, 4, 128),))
    ch = analyze(g)
    q = next(k for k, v in g.param_names.items() if v == "q.weight")
    _, kept = prune_graph(g, ch, choose(ch, g, 0.5, round_to=16))
    assert kept[q][0].size == 64
