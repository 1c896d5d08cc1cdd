"""Low-rank factorization of a torch model: ``low_rank(model, budget=0.5)`` returns a copy whose linear and conv
layers are pairs of smaller layers (an ``nn.Sequential`` in place of each), to fine-tune or distill.

The same SVD and rank choice as the ``low_rank`` compile pass (``edgeopt.compress.factor``)."""

from __future__ import annotations

import copy
from dataclasses import dataclass

from .config import CompressionError, matches
from .factor import RANK_MULTIPLE, factors, pick_ranks, svd, whitened_svd


@dataclass
class LowRankResult:
    """Per factored layer: its rank, full rank and the share of squared singular values kept; weights before and
    after over all the layers it looked at."""

    layers: dict[str, dict]
    params_before: int
    params_after: int

    def __str__(self) -> str:
        return (f"factored {len(self.layers)} layers: weights {self.params_before:,} -> {self.params_after:,} "
                f"({self.params_after / max(self.params_before, 1):.2f}x)")


def low_rank(model, *, energy: float | None = None, budget: float | None = None, layers=("*",),
             multiple: int = RANK_MULTIPLE, data=None, return_result: bool = False):
    """A copy of ``model`` with every ``nn.Linear`` and ``nn.Conv2d`` (groups 1) whose name matches ``layers``
    (globs, e.g. ``"encoder.layer.*.intermediate.dense"``) factored by truncated SVD: rank by ``energy`` (share of
    squared singular values kept, per layer) or by a parameter ``budget`` over the matched layers (share of their
    weights kept; ranks chosen across them); ranks are multiples of ``multiple`` (a CPU kernel's vector width).
    A layer whose rank would not save weights stays as it is.

    With ``data`` (batches of inputs: a tensor, a tuple, or a dict of keyword arguments), each linear layer is
    factored to keep its outputs on those inputs rather than its weight (``factor.whitened_svd``): much closer
    for transformer FFNs, whose weights have flat spectra but whose inputs do not."""
    import torch
    from torch import nn

    if (energy is None) == (budget is None):
        raise CompressionError("low_rank takes one of energy= and budget=")
    layers = (layers,) if isinstance(layers, str) else tuple(layers)
    new = copy.deepcopy(model)
    found = {name: m for name, m in new.named_modules()
             if matches(name, layers) and (isinstance(m, nn.Linear) or isinstance(m, nn.Conv2d) and m.groups == 1
                                           and m.padding_mode == "zeros")}
    if not found:
        raise CompressionError(f"low_rank: no nn.Linear or nn.Conv2d matches {list(layers)}")
    mats = {name: m.weight.detach().reshape(m.weight.shape[0], -1).numpy() for name, m in found.items()}
    grams = _input_grams(new, {n: m for n, m in found.items() if isinstance(m, nn.Linear)}, data) if data else {}
    dec = {name: whitened_svd(w, grams[name]) if name in grams else svd(w) for name, w in mats.items()}
    ranks = pick_ranks({n: d[1] for n, d in dec.items()}, {n: w.shape for n, w in mats.items()}, energy, budget,
                       multiple)
    done, before, after = {}, 0, 0
    for name, m in found.items():
        before += mats[name].size
        r = ranks[name]
        if not r:
            after += mats[name].size
            continue
        u, s, vt = dec[name]
        a, b = factors(u, s, vt, r, mats[name].dtype)
        bias = m.bias is not None
        if isinstance(m, nn.Linear):
            first, second = nn.Linear(m.in_features, r, bias=False), nn.Linear(r, m.out_features, bias=bias)
        else:
            first = nn.Conv2d(m.in_channels, r, m.kernel_size, m.stride, m.padding, m.dilation, bias=False)
            second = nn.Conv2d(r, m.out_channels, 1, bias=bias)
        with torch.no_grad():
            first.weight.copy_(torch.from_numpy(b).reshape(first.weight.shape))
            second.weight.copy_(torch.from_numpy(a).reshape(second.weight.shape))
            if bias:
                second.bias.copy_(m.bias)
        parent, _, leaf = name.rpartition(".")
        setattr(new.get_submodule(parent), leaf, nn.Sequential(first, second).to(m.weight.dtype))
        after += a.size + b.size
        done[name] = {"rank": r, "full_rank": len(s), "energy": round(float((s[:r] ** 2).sum() / (s ** 2).sum()), 4)}
    result = LowRankResult(done, before, after)
    return (new, result) if return_result else new


def _input_grams(model, layers: dict, data) -> dict:
    """X^T X of each linear layer's inputs over ``data`` (every row of every batch)."""
    import numpy as np
    import torch

    grams = {}

    def hook(name):
        def keep(module, args):
            x = args[0].detach().reshape(-1, args[0].shape[-1]).double()
            grams[name] = grams.get(name, 0) + (x.T @ x).numpy()
        return keep

    handles = [m.register_forward_pre_hook(hook(n)) for n, m in layers.items()]
    try:
        with torch.no_grad():
            for batch in data:
                if isinstance(batch, dict):
                    model(**batch)
                else:
                    model(*batch) if isinstance(batch, (tuple, list)) else model(batch)
    finally:
        for h in handles:
            h.remove()
    return {n: np.asarray(g) for n, g in grams.items()}
