"""fuse_attention: the attention written out in ops (QKᵀ -> scale -> mask -> softmax -> ·V) becomes one
``attention`` op, lowered to a tiled online-softmax kernel that never stores the score matrix.

``scaled_dot_product_attention`` already arrives as ``attention``; this pass catches eager attention
(BERT, GPT-2...). Kᵀ must come from a transpose; a transpose that also moves other axes is split into
the part that produces K plus the swap. The scale is a scalar constant (``mul`` or ``div``); the mask
is added (any broadcastable float tensor).

Requires: ``unfused``. Guarantees: ``attention_fused``. The same math up to rounding (a ``div`` scale becomes
a multiplication by its reciprocal), NaN and inf included (``masked_rows="nan"``: a row masked entirely by
-inf stays NaN, as the softmax gave); intermediate results with other readers block the rewrite.

Before:
    %kt: f32[1,12,32,16] = transpose(%k) {"perm": [0, 1, 3, 2]}
    %s: f32[1,12,16,16] = matmul(%q, %kt)
    %t: f32[1,12,16,16] = mul(%s, %c)            # %c = 0.1767...
    %u: f32[1,12,16,16] = add(%t, %mask)
    %p: f32[1,12,16,16] = softmax(%u) {"axis": 3}
    %o: f32[1,12,16,32] = matmul(%p, %v)
After:
    %o: f32[1,12,16,32] = attention(%q, %k, %v, %mask) {"scale": 0.1767..., "causal": false, "masked_rows": "nan"}
"""

from __future__ import annotations

from edgeopt.ir import Graph
from edgeopt.pattern import Any, Const, Either, Op, rewrite
from edgeopt.pipeline import Pass, register_pass

SCORES = Op("matmul", Any("q"), Op("transpose", Any("kx"), name="kt"))
SCALED = Either(Op(("mul", "div"), SCORES, Const("scale", scalar=True), name="scaled"), SCORES)
MASKED = Either(Op("add", SCALED, Any("mask", where=lambda v: v.type.dtype == "f32"), commutative=True), SCALED)
ATTENTION = Op("matmul", Op("softmax", MASKED, where=lambda n: n.attrs["axis"] == n.inputs[0].type.rank - 1),
               Any("v"), name="out")


def _rewrite(m, b):
    q, v, kx = m["q"], m["v"], m["kx"]
    if not (q.type.rank == kx.type.rank == v.type.rank) or q.type.dtype != "f32":
        return None
    perm = m.node("kt").attrs["perm"]
    k_perm = perm[:-2] + [perm[-1], perm[-2]]  # kt = swap_last_two(K) with K = transpose(kx, k_perm)
    k = kx if k_perm == sorted(k_perm) else b.add("transpose", [kx], {"perm": k_perm}, name="k")
    scale = 1.0
    if "scaled" in m:
        c = float(m.const("scale").reshape(()))
        scale = c if m.node("scaled").op == "mul" else 1.0 / c
    ins = [q, k, v] + ([m["mask"]] if "mask" in m else [])
    # softmax over a row of -inf only is NaN (scaled_dot_product_attention would give 0): keep that
    return b.add("attention", ins, {"scale": scale, "causal": False, "masked_rows": "nan"}, name=m["out"].name)


@register_pass
class FuseAttention(Pass):
    name = "fuse_attention"
    requires = ("unfused",)
    guarantees = ("attention_fused",)

    def run(self, g: Graph) -> dict:
        return {"fused": rewrite(g, ATTENTION, _rewrite)}
