"""NaN and infinities in attention as PyTorch has them: a NaN score makes its row NaN, masks add -inf (so they do
not hide a NaN), a fully masked row gives 0 in ``scaled_dot_product_attention`` and NaN in softmax written out;
the tiled online-softmax kernel, the TE rule and the reference interpreter, against torch eager."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

import edgeopt
from edgeopt.api import compile_graph
from edgeopt.ir import Graph, TensorType, interpret
from tests.test_nan_semantics import INF, NAN, assert_like_torch


class CrossAttention(torch.nn.Module):
    def __init__(self, d=16, heads=2):
        super().__init__()
        torch.manual_seed(4)
        self.q, self.kv, self.heads = torch.nn.Linear(d, d), torch.nn.Linear(d, 2 * d), heads

    def forward(self, x, mem, mask):
        B, T, D = x.shape
        q = self.q(x).view(B, T, self.heads, D // self.heads).transpose(1, 2)
        k, v = self.kv(mem).view(B, mem.shape[1], 2, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask).transpose(1, 2)


def test_attention_block_nan_query_and_fully_masked_row():
    """A NaN in one query token makes that token's output NaN (torch's math backend; its flash CPU backend gives
    0 for such a row on small shapes, which hides the NaN); a query row whose mask is all False gives 0; a NaN in
    a masked-out key still makes every row NaN (a mask adds -inf)."""
    model = CrossAttention().eval()
    g = torch.Generator().manual_seed(5)
    x, mem = torch.randn(2, 8, 16, generator=g), torch.randn(2, 8, 16, generator=g)
    mask = torch.ones(8, 8, dtype=torch.bool)
    mask[6] = False
    mask[:, 3] = False
    compiled = edgeopt.compile(model, (x, mem, mask))
    assert "flash(online-softmax)" in [k["schedule"] for k in compiled.report["kernels"]]
    x[0, 2, 5] = NAN
    mem[1, 3, 0] = NAN  # a masked-out key: masks add -inf, NaN + -inf is NaN, batch 1 is NaN throughout
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH):
        want = model(x, mem, mask)
    assert want[0, 2].isnan().all() and (want[0, 6] == 0).all() and want[1].isnan().all()
    assert want[0, [0, 1, 3, 4, 5, 7]].isfinite().all()
    assert_like_torch(compiled(x, mem, mask), want, "cross attention")


class CausalBlock(torch.nn.Module):
    def __init__(self, d=16, heads=2):
        super().__init__()
        torch.manual_seed(6)
        self.qkv, self.out, self.heads = torch.nn.Linear(d, 3 * d), torch.nn.Linear(d, d), heads

    def forward(self, x):
        B, T, D = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.out(F.relu(y.transpose(1, 2).reshape(B, T, D)))


def test_causal_block_nan_token_poisons_only_its_sequence():
    model = CausalBlock().eval()
    x = torch.randn(2, 8, 16, generator=torch.Generator().manual_seed(7))
    compiled = edgeopt.compile(model, (x,))
    x[0, 5, 3] = NAN  # tokens before 5 see its value times 0 (causal mask): NaN too, as in torch
    with torch.no_grad():
        want = model(x)
    assert want[0].isnan().all() and want[1].isfinite().all()
    assert_like_torch(compiled(x), want, "causal block")


def _attention_graph(shapes, dv):
    g = Graph()
    (L, S, E), ins = shapes, []
    for name, shape in (("q", (2, L, E)), ("k", (2, S, E)), ("v", (2, S, dv))):
        ins.append(g.add_input(name, TensorType(shape, "f32")))
    masks = [g.add_input("bool_mask", TensorType((L, S), "bool")), g.add_input("add_mask", TensorType((L, S), "f32"))]
    g.set_outputs([g.add("attention", ins + [m], {"scale": None, "causal": False}) for m in masks])
    return g


@pytest.mark.parametrize("dv, kernel, S", [(8, "flash(online-softmax)", 10), (8, "flash(online-softmax)", 128),
                                           (2, "te", 10)])
def test_attention_kernels_and_reference_on_special_scores(dv, kernel, S):
    """The tiled online-softmax kernel (Dv 8) and the TE rule (Dv 2), bool and additive masks, against torch's
    math backend: masks add -inf, so a NaN key poisons every row even where masked (batch 0); NaN and +inf in a
    query row make that row NaN; a fully masked row is 0; -inf beside finite scores is just masked (batch 1). S 10
    pads the kernel's key tile; S 128 fills two whole tiles (the scale and mask as vector code)."""
    L, E = 6, 8
    g = _attention_graph((L, S, E), dv)
    rng = np.random.default_rng(8)
    q, k, v = (rng.standard_normal(s).astype(np.float32) for s in ((2, L, E), (2, S, E), (2, S, dv)))
    k[0, 7, 1], q[1, 1, 2], q[1, 4, 0] = NAN, NAN, INF
    bool_mask = rng.random((L, S)) > 0.3
    bool_mask[:, 0] = True
    bool_mask[:, 7] = False
    bool_mask[3] = False
    add_mask = np.where(bool_mask, rng.standard_normal((L, S)), -np.inf).astype(np.float32)
    compiled = compile_graph(g.clone(), "host", passes=[])
    schedules = [kk["schedule"] for kk in compiled.report["kernels"]]
    assert all((s == kernel) if kernel != "te" else s != "flash(online-softmax)" for s in schedules), schedules
    inputs = [q, k, v, bool_mask, add_mask]
    got = compiled(*inputs)
    with np.errstate(all="ignore"):
        ref = interpret(g, inputs)
    t = [torch.from_numpy(a) for a in inputs]
    with sdpa_kernel(SDPBackend.MATH):
        want = [F.scaled_dot_product_attention(*t[:3], attn_mask=m) for m in t[3:]]
    for w in want:
        assert w[0].isnan().all() and w[1, 1].isnan().all() and w[1, 4].isnan().all() and (w[1, 3] == 0).all()
        assert w[1, [0, 2, 5]].isfinite().all()
    for i in range(2):
        assert_like_torch(got[i], want[i], f"{kernel} mask {i}")
        assert_like_torch(ref[i], want[i], f"reference mask {i}")


class ExplicitAttention(torch.nn.Module):
    """Attention written out (fuse_attention makes it one ``attention`` op with ``masked_rows="nan"``)."""

    def forward(self, q, k, v, mask):
        return torch.softmax(q @ k.transpose(-1, -2) * 0.5 + mask, -1) @ v


@pytest.mark.parametrize("dv", [8, 2])
def test_written_out_attention_keeps_nan_for_a_fully_masked_row(dv):
    """softmax of a row of -inf is NaN in torch; fused into one attention kernel (flash for Dv 8, the TE rule for
    Dv 2) it must stay NaN, not become scaled_dot_product_attention's 0."""
    g = torch.Generator().manual_seed(9)
    q, k, v = torch.randn(1, 2, 4, 8, generator=g), torch.randn(1, 2, 6, 8, generator=g), torch.randn(1, 2, 6, dv,
                                                                                                      generator=g)
    mask = torch.zeros(4, 6)
    mask[1] = -INF
    mask[2, :3] = -INF
    compiled = edgeopt.compile(ExplicitAttention(), (q, k, v, mask))
    assert [kk["op"] for kk in compiled.report["kernels"]] == ["attention"]
    want = ExplicitAttention()(q, k, v, mask)
    assert want[0, :, 1].isnan().all() and want[0, :, 2].isfinite().all()
    assert_like_torch(compiled(q, k, v, mask), want, "written-out attention")
