"""fuse_attention: eager attention (matmul, scale, mask, softmax, matmul) -> one attention op -> flash kernel."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import edgeopt
from edgeopt.ir import interpret, parse_graph, print_graph, verify
from edgeopt.pipeline import get_pass

HEADS, DIM = 2, 16


class EagerAttention(torch.nn.Module):
    def forward(self, q, k, v, mask):
        s = torch.matmul(q, k.transpose(-1, -2)) / DIM ** 0.5
        return torch.matmul(torch.softmax(s + mask, dim=-1), v)


def _inputs(seq: int):
    g = torch.Generator().manual_seed(seq)
    q, k, v = (torch.randn(1, HEADS, seq, DIM, generator=g) for _ in range(3))
    mask = torch.zeros(1, 1, 1, seq)
    mask[..., seq - seq // 4:] = -1e9  # padding at the end
    return q, k, v, mask


@pytest.mark.parametrize("seq", [16, 128, 512])
def test_matches_torch_and_never_stores_the_score_matrix(seq):
    model, inputs = EagerAttention().eval(), _inputs(seq)
    compiled = edgeopt.compile(model, inputs)
    assert compiled.report["pass_stats"]["fuse_attention"] == {"fused": 1}
    assert [n.op for n in compiled.graph.nodes] == ["attention"]
    assert compiled.report["kernels"][0]["schedule"].startswith("flash")
    # no tensor of the plan has seq x seq elements per head: nothing quadratic is stored
    sizes = [np.prod(v["shape"]) for v in compiled.plan["values"].values()]
    assert max(sizes) == HEADS * seq * DIM
    with torch.no_grad():
        ref = model(*inputs).numpy()
    got = compiled(*[x.numpy() for x in inputs])
    assert np.abs(got - ref).max() <= 1e-5 * np.abs(ref).max()


def test_unfused_build_does_store_it():
    """The control: without the pass, the plan holds the [heads, seq, seq] scores."""
    seq = 64
    compiled = edgeopt.compile(EagerAttention().eval(), _inputs(seq), disable=["fuse_attention"])
    sizes = [np.prod(v["shape"]) for v in compiled.plan["values"].values()]
    assert max(sizes) == HEADS * seq * seq


BEFORE = """
graph main(%q: f32[1,2,8,4], %kx: f32[1,8,2,4], %v: f32[1,2,8,4], %mask: f32[1,1,1,8]) {
  const %c: f32[] = 0.5
  %kt: f32[1,2,4,8] = transpose(%kx) {"perm": [0, 2, 3, 1]}
  %s: f32[1,2,8,8] = matmul(%q, %kt)
  %t: f32[1,2,8,8] = mul(%s, %c)
  %u: f32[1,2,8,8] = add(%mask, %t)
  %p: f32[1,2,8,8] = softmax(%u) {"axis": 3}
  %o: f32[1,2,8,4] = matmul(%p, %v)
  return %o
}
"""
EXPECTED = """
graph main(%q: f32[1,2,8,4], %kx: f32[1,8,2,4], %v: f32[1,2,8,4], %mask: f32[1,1,1,8]) {
  %k: f32[1,2,8,4] = transpose(%kx) {"perm": [0, 2, 1, 3]}
  %o: f32[1,2,8,4] = attention(%q, %k, %v, %mask) {"scale": 0.5, "causal": false, "masked_rows": "nan"}
  return %o
}
"""


def test_before_expected_with_commuted_mask_and_permuted_key():
    g = parse_graph(BEFORE)
    after = g.clone()
    stats = get_pass("fuse_attention").run(after)
    verify(after)
    assert stats == {"fused": 1}
    # new values get fresh names (%k, %o_1...); compare the structure with the names normalised
    text = print_graph(after)
    for node, want in zip(after.nodes, ("k", "o")):
        text = text.replace(f"%{node.outputs[0].name}:", f"%{want}:").replace(f"%{node.outputs[0].name},", f"%{want},")
    text = text.replace(f"return %{after.outputs[0].name}", "return %o")
    assert text == print_graph(parse_graph(EXPECTED))
    rng = np.random.default_rng(0)
    xs = [rng.standard_normal(v.type.shape).astype(np.float32) for v in g.inputs]
    np.testing.assert_allclose(interpret(after, xs)[0], interpret(g, xs)[0], rtol=1e-5, atol=1e-6)


def test_not_fused_when_the_probabilities_are_also_returned():
    text = BEFORE.replace("return %o", "return %o, %p")
    g = parse_graph(text)
    assert get_pass("fuse_attention").run(g) == {"fused": 0}
    assert "softmax" in g.op_counts()


def test_division_scale_and_no_mask():
    text = """
graph main(%q: f32[2,8,4], %k: f32[2,8,4], %v: f32[2,8,4]) {
  const %c: f32[] = 2.0
  %kt: f32[2,4,8] = transpose(%k) {"perm": [0, 2, 1]}
  %s: f32[2,8,8] = matmul(%q, %kt)
  %t: f32[2,8,8] = div(%s, %c)
  %p: f32[2,8,8] = softmax(%t) {"axis": 2}
  %o: f32[2,8,4] = matmul(%p, %v)
  return %o
}
"""
    g = parse_graph(text)
    after = g.clone()
    assert get_pass("fuse_attention").run(after) == {"fused": 1}
    assert [(n.op, n.attrs) for n in after.nodes] == [("attention", {"scale": 0.5, "causal": False,
                                                                      "masked_rows": "nan"})]
    assert [v.name for v in after.nodes[0].inputs] == ["q", "k", "v"]
    rng = np.random.default_rng(1)
    xs = [rng.standard_normal(v.type.shape).astype(np.float32) for v in g.inputs]
    np.testing.assert_allclose(interpret(after, xs)[0], interpret(g, xs)[0], rtol=1e-5, atol=1e-6)
