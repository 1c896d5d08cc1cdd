"""Structured pruning of a torch model: ``prune(model, inputs, ratio)`` returns a smaller ``nn.Module`` to fine-tune.

The channels that must go together come from the IR analysis (``edgeopt.compress.channels``) of the traced
model, so the torch side and the compile option (``Compress(prune=...)``) remove exactly the same channels. The
weights are sliced in a copy of the model and the modules' sizes updated (conv ``groups`` of a depthwise conv,
``in_features``, ``num_features``, attention head counts); the result is checked by running it.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np

from .channels import analyze, choose, prune_graph
from .config import CompressionError
from .cost import graph_macs, graph_params


@dataclass
class PruneResult:
    """What ``prune`` did: channels removed, MACs and parameters before and after, slices removed per weight."""

    channels: int
    macs_before: int
    macs_after: int
    params_before: int
    params_after: int
    removed: dict[str, int]

    def __str__(self) -> str:
        return (f"pruned {self.channels} channels ({len(self.removed)} weights sliced): "
                f"MACs {self.macs_before:,} -> {self.macs_after:,} "
                f"({self.macs_after / max(self.macs_before, 1):.2f}x), "
                f"parameters {self.params_before:,} -> {self.params_after:,}")


def prune(model, example_inputs, ratio: float = 0.5, *, score: str = "l1", data=None, loss_fn=None,
          round_to: int = 16, return_result: bool = False):
    """A copy of ``model`` with ``ratio`` of the channels of every prunable layer removed (the least important by
    ``score``: "l1" / "l2" norm of the filters, or "taylor" = sum of |w * dL/dw| over ``data``, an iterable of
    ``(inputs, target)`` batches with ``loss_fn(output, target)``; default loss: cross entropy).

    Coupled layers lose the same channels: the convs of a residual stream, a depthwise conv and the conv before
    it, the inputs of the next layer. Channels that reach the model's inputs or outputs, a layer norm or an op the
    analysis does not know are kept. ``round_to`` keeps a multiple of that many channels in each layer that has at
    least that many (16: the CPU kernels' vector width; ``Compress`` explains).
    With ``return_result``, returns ``(model, PruneResult)``."""
    import torch

    from ..frontend import from_torch

    inputs = tuple(example_inputs) if isinstance(example_inputs, (tuple, list)) else (example_inputs,)
    g = from_torch(model, inputs)
    ch = analyze(g)
    for u in ch.units:  # a weight the frontend made (not a parameter) cannot be sliced in the module
        if any(w not in g.param_names for w, _, _ in u.weights):
            u.blocked = True
    grads = _taylor_grads(model, g, data, loss_fn) if score == "taylor" else None
    drop = choose(ch, g, ratio, score, round_to, grads)
    pruned_g, kept = prune_graph(g, ch, drop)
    new = copy.deepcopy(model)
    sizes_before = {n: tuple(m.weight.shape) for n, m in new.named_modules() if hasattr(m, "weight")
                    and isinstance(m.weight, torch.Tensor)}
    aliases = _aliases(new)
    for const, axes in kept.items():
        _slice_tensor(new, g.param_names[const], axes, aliases)
    _update_modules(new, sizes_before)
    _check_runs(new, inputs, pruned_g)
    result = PruneResult(len(drop), graph_macs(g), graph_macs(pruned_g), graph_params(g), graph_params(pruned_g),
                         {g.param_names[c]: int(g.constants[c].shape[a] - len(i))
                          for c, axes in kept.items() for a, i in axes.items()})
    return (new, result) if return_result else new


def _aliases(model) -> dict[int, list[tuple]]:
    """Every (owner module, attribute name) holding each tensor (by id): tied weights have several."""
    import torch

    out: dict[int, list[tuple]] = {}
    for _, m in model.named_modules(remove_duplicate=False):
        for leaf, t in list(m._parameters.items()) + list(m._buffers.items()) + [
                (k, v) for k, v in vars(m).items() if isinstance(v, torch.Tensor)]:
            if t is not None and (m, leaf) not in out.setdefault(id(t), []):
                out[id(t)].append((m, leaf))
    return out


def _slice_tensor(model, fqn: str, axes: dict[int, np.ndarray], aliases: dict) -> None:
    """Slice the tensor ``fqn`` and rebind every module attribute that holds it."""
    import torch

    owner_name, _, leaf = fqn.rpartition(".")
    t = getattr(model.get_submodule(owner_name), leaf)
    with torch.no_grad():
        new = t.detach()
        for a, idx in axes.items():
            new = new.index_select(a, torch.as_tensor(idx, dtype=torch.long))
        new = new.clone()
    if isinstance(t, torch.nn.Parameter):
        new = torch.nn.Parameter(new, requires_grad=t.requires_grad)
    for owner, name in aliases.get(id(t), [(model.get_submodule(owner_name), leaf)]):
        if name in owner._parameters:
            owner._parameters[name] = new
        elif name in owner._buffers:
            owner._buffers[name] = new
        else:
            setattr(owner, name, new)


def _update_modules(model, before: dict[str, tuple]) -> None:
    """Make each module's size attributes match its sliced weights."""
    from torch import nn

    for name, m in model.named_modules():
        if isinstance(m, nn.modules.conv._ConvNd):
            o, i = m.weight.shape[:2]
            if m.groups > 1 and m.groups == m.in_channels == before[name][0] and before[name][1] == 1:  # depthwise
                m.groups = m.in_channels = m.out_channels = o
            elif m.groups == 1:
                m.out_channels, m.in_channels = o, i
        elif isinstance(m, nn.Linear):
            m.out_features, m.in_features = m.weight.shape
        elif isinstance(m, nn.modules.batchnorm._NormBase):
            m.num_features = (m.running_mean if m.running_mean is not None else m.weight).shape[0]
        q = getattr(m, "query", None)  # a transformers attention block: heads follow its query projection
        if isinstance(q, nn.Linear) and hasattr(m, "attention_head_size") and hasattr(m, "num_attention_heads"):
            width = q.weight.shape[0]  # (a parent comes before its children: q.out_features may be stale)
            m.num_attention_heads = width // m.attention_head_size
            if hasattr(m, "all_head_size"):
                m.all_head_size = width


def _check_runs(new, inputs, pruned_g) -> None:
    """The pruned module runs and computes what the pruned IR graph computes."""
    import torch

    from ..ir import interpret

    with torch.no_grad():
        try:
            got = [t.numpy() for t in _tensors(new(*inputs))]
        except Exception as e:  # a module computing sizes from its own attributes that we could not update
            raise CompressionError(f"the pruned model does not run ({type(e).__name__}: {e}); a module of it "
                                   "computes shapes from attributes that pruning does not know: prune with "
                                   "edgeopt.compile(..., compress=edgeopt.Compress(prune=...)) instead") from None
    want = interpret(pruned_g, [x.detach().numpy() for x in inputs])
    for a, b in zip(got, want):
        scale = max(float(np.abs(b).max()), 1e-6) if b.size else 1.0
        if a.shape != b.shape or (b.size and float(np.abs(a - b).max()) > 1e-3 * scale):
            raise CompressionError("the pruned module computes something other than the pruned graph: a module "
                                   "of it computes from a tensor or attribute that pruning did not update; prune "
                                   "with edgeopt.compile(..., compress=edgeopt.Compress(prune=...)) instead")


def _tensors(out) -> list:
    import torch

    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, dict) or hasattr(out, "values"):
        out = list(out.values())
    return [t for o in out for t in _tensors(o)] if isinstance(out, (list, tuple)) else []


def _taylor_grads(model, g, data, loss_fn) -> dict[str, np.ndarray]:
    """Gradients of the loss over ``data`` for every weight of ``g`` that is a parameter (const name -> array)."""
    import torch

    if data is None:
        raise CompressionError("score='taylor' needs data: an iterable of (inputs, target) batches")
    loss_fn = loss_fn or torch.nn.functional.cross_entropy
    work = copy.deepcopy(model)
    params = dict(work.named_parameters())
    work.zero_grad()
    for batch in data:
        x, y = batch
        x = x if isinstance(x, (tuple, list)) else (x,)
        loss_fn(work(*x), y).backward()
    return {c: params[f].grad.detach().numpy() for c, f in g.param_names.items()
            if f in params and params[f].grad is not None}
