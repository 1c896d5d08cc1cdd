"""low_rank: factor linear and conv weights by truncated SVD into two smaller layers (``Compress(rank_energy=0.9)``
or ``Compress(rank_budget=0.5)``).

A weight ``W [out, in]`` becomes ``A [out, r] @ B [r, in]`` (the best rank-``r`` approximation, singular values
split evenly): ``linear(x, W, b)`` becomes ``linear(linear(x, B), A, b)``; a conv ``W [O, C, kh, kw]`` becomes a
``kh x kw`` conv with ``r`` filters (same stride, padding, dilation) and a 1x1 conv to ``O`` channels with the
bias. The rank is the smallest keeping ``energy`` of the squared singular values, or, for a ``budget``, chosen
across all the layers by energy per weight (``edgeopt.compress.factor.ranks_for_budget``); ranks are multiples
of ``multiple`` (16: an odd width leaves the CPU kernels' vector lanes empty, measured 7x slower). A layer whose rank
would not save multiply-adds stays whole. Only layers whose module name matches ``layers`` (globs) are factored.

Requires: ``unfused`` (plain "oi" / OIHW weights; groups of 1). Guarantees: nothing new; outputs keep their
shapes, values move by the discarded singular values.

Before (rank 2, multiple=1):
    const %w: f32[64,32]
    %y: f32[1,64] = linear(%x, %w, %b) {"weight_layout": "oi"}
After:
    const %w_lr_b: f32[2,32]
    const %w_lr_a: f32[64,2]
    %y_lr: f32[1,2] = linear(%x, %w_lr_b) {"weight_layout": "oi"}
    %y: f32[1,64] = linear(%y_lr, %w_lr_a, %b) {"weight_layout": "oi"}
"""

from __future__ import annotations

from edgeopt.compress.config import matches
from edgeopt.compress.cost import graph_macs, graph_params
from edgeopt.compress.factor import RANK_MULTIPLE, factors, pick_ranks, svd
from edgeopt.ir import Graph, Node
from edgeopt.pipeline import Pass, register_pass


@register_pass
class LowRank(Pass):
    name = "low_rank"
    requires = ("unfused",)

    def __init__(self, energy: float | None = None, budget: float | None = None, layers=("*",),
                 multiple: int = RANK_MULTIPLE):
        if (energy is None) == (budget is None):
            raise ValueError("low_rank takes one of energy= and budget=")
        self.energy, self.budget, self.layers, self.multiple = energy, budget, tuple(layers), multiple

    def run(self, g: Graph) -> dict:
        before = graph_macs(g), graph_params(g)
        found = {n: _matrix(g, n) for n in g.nodes if _factorable(g, n, self.layers)}
        decomposed = {n: svd(w2d) for n, w2d in found.items()}
        rank = pick_ranks({n: d[1] for n, d in decomposed.items()}, {n: w.shape for n, w in found.items()},
                          self.energy, self.budget, self.multiple)
        done = []
        for n, (u, s, vt) in decomposed.items():
            r = rank[n]
            if r:
                done.append({"layer": g.layer_name(n), "rank": r, "full_rank": len(s),
                             "energy": round(float((s[:r] ** 2).sum() / (s ** 2).sum()), 4)})
                _factor(g, n, *factors(u, s, vt, r, g.const(n.inputs[1]).dtype))
        g.toposort()
        g.remove_unused_constants()
        return {"factored": done, "macs_before": before[0], "macs_after": graph_macs(g),
                "params_before": before[1], "params_after": graph_params(g)}


def _factorable(g: Graph, n: Node, layers) -> bool:
    if n.op == "linear":
        ok = n.attrs["weight_layout"] == "oi"
    elif n.op == "conv2d":
        ok = n.attrs["groups"] == 1 and n.attrs["weight_layout"] == "OIHW" and n.attrs["layout"] == "NCHW"
    else:
        return False
    return ok and g.is_const(n.inputs[1]) and matches(g.layer_name(n), layers)


def _matrix(g: Graph, n: Node):
    w = g.const(n.inputs[1])
    return w.reshape(w.shape[0], -1)


def _factor(g: Graph, n: Node, a, b) -> None:
    """Replace ``n`` by the two layers ``b`` then ``a`` (``a @ b`` approximates its weight)."""
    x, w = n.inputs[:2]
    bias = n.inputs[2:]
    i = g.nodes.index(n)
    wb = g.add_const(b.reshape((b.shape[0], *w.type.shape[1:])), f"{w.name}_lr_b")
    if w.name in g.param_names:  # the second layer keeps the layer's name, the first gets ".lr_b"
        g.param_names[wb.name] = g.param_names[w.name].removesuffix(".weight") + ".lr_b.weight"
    if n.op == "linear":
        wa = g.add_const(a, f"{w.name}_lr_a")
        _keep_name(g, w, wa)
        mid = g.add("linear", [x, wb], {"weight_layout": "oi"}, source=n.source, name=f"{n.output.name}_lr",
                    index=i)
        n.inputs = [mid, wa, *bias]
    else:
        wa = g.add_const(a.reshape(*a.shape, 1, 1), f"{w.name}_lr_a")
        _keep_name(g, w, wa)
        mid = g.add("conv2d", [x, wb], {k: n.attrs[k] for k in ("stride", "padding", "dilation")},
                    source=n.source, name=f"{n.output.name}_lr", index=i)
        n.inputs = [mid, wa, *bias]
        n.attrs = {**n.attrs, "stride": [1, 1], "padding": [0, 0, 0, 0], "dilation": [1, 1]}


def _keep_name(g: Graph, old, new) -> None:
    if old.name in g.param_names:
        g.param_names[new.name] = g.param_names[old.name]
