"""Knowledge distillation: train a student (pruned, factored, fake-quantized) on its teacher's outputs.

    student = edgeopt.compress.prune(teacher, inputs, 0.5)
    result = edgeopt.compress.distill(teacher, student, train_batches, labels=True, val_data=val_batches,
                                      metric=accuracy)
    result.model    # the student, trained, in eval mode; result.history: loss and score per epoch

A batch is the model's inputs (a tensor, a tuple of tensors, or a dict of keyword arguments: a tokenizer's
output), or ``(inputs, labels)`` with ``labels=True``. The loss mixes the soft targets (``loss="kl"``: KL
divergence of the temperature-softened distributions, times T^2; ``"mse"``; ``"cosine"``: for embeddings) with
the hard labels (cross entropy) as ``alpha * soft + (1 - alpha) * hard`` (default alpha: 0.5 with labels, else
1), plus ``feature_weight`` times the mean squared error between named intermediate outputs
(``features=[(student_module, teacher_module)]``; a learned linear map on the channel axis bridges a pruned
student's narrower features).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from ..progress import progress_bar


@dataclass
class DistillResult:
    model: object
    history: list[dict] = field(default_factory=list)
    best_epoch: int = -1
    stopped_early: bool = False


def distill(teacher, student, data: Iterable, *, epochs: int = 10, lr: float = 1e-3, temperature: float = 4.0,
            alpha: float | None = None, loss: str = "kl", labels: bool = False, select: Callable | None = None,
            features: list[tuple[str, str]] = (), feature_weight: float = 1.0, val_data: Iterable | None = None,
            metric: Callable | None = None, patience: int = 3, weight_decay: float = 0.0,
            progress: bool | None = None, seed: int = 0) -> DistillResult:
    """Train ``student`` (in place; returned in eval mode) to match ``teacher`` on ``data`` (a re-iterable of
    batches, e.g. a list or a DataLoader) for at most ``epochs`` epochs with Adam, its learning rate decaying from
    ``lr`` to 0 along a half cosine.

    ``select`` picks the tensor to match from a model's output (default: the output itself, or its first tensor:
    ``last_hidden_state`` for a transformers model). With ``val_data``, each epoch ends with ``metric(student,
    val_data)`` (higher is better; default: minus the distillation loss on ``val_data``); training stops after
    ``patience`` epochs without improvement and the best epoch's weights are kept. ``progress`` shows a progress
    bar (default: when stderr is a terminal and tqdm is installed)."""
    import torch

    if loss not in _LOSSES:
        raise ValueError(f"distill(loss=...) must be one of {sorted(_LOSSES)}, got {loss!r}")
    alpha = (0.5 if labels else 1.0) if alpha is None else alpha
    if not 0 <= alpha <= 1 or (alpha < 1 and not labels):
        raise ValueError("alpha mixes soft targets with hard labels: in [0, 1], and below 1 only with labels=True")
    data = list(data) if not hasattr(data, "__len__") else data
    torch.manual_seed(seed)
    teacher.eval()
    select = select or _first_tensor
    hooks = _FeatureHooks(student, teacher, features)
    if features:  # one forward of each to size the maps between narrower student features and the teacher's
        first = next(iter(data))
        with torch.no_grad():
            x = first[0] if labels else first
            _call(teacher, x), _call(student, x)
        hooks.make_maps()
    params = list(student.parameters()) + hooks.parameters()
    opt = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    # the learning rate decays to 0 along a half cosine over all the steps (fine-tuning ends on small steps)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(1, epochs * len(data)))
    result = DistillResult(student)
    best, best_state, waited = None, None, 0
    bar = progress_bar(epochs * len(data), progress, "distill")

    def batch_loss(batch):
        x, y = (batch if labels else (batch, None))
        with torch.no_grad():
            t_out = select(_call(teacher, x))
            t_feats = hooks.take_teacher()
        s_out = select(_call(student, x))
        total = _LOSSES[loss](s_out, t_out, temperature)
        if labels and alpha < 1:
            total = alpha * total + (1 - alpha) * torch.nn.functional.cross_entropy(s_out, y)
        if features:
            total = total + feature_weight * hooks.loss(t_feats)
        return total

    for epoch in range(epochs):
        student.train()
        losses = []
        for batch in data:
            opt.zero_grad()
            lv = batch_loss(batch)
            lv.backward()
            opt.step()
            sched.step()
            losses.append(lv.item())
            if bar is not None:
                bar.update(1)
                bar.set_postfix(epoch=epoch, loss=f"{losses[-1]:.4f}")
        student.eval()
        row = {"epoch": epoch, "loss": sum(losses) / len(losses)}
        if val_data is not None:
            with torch.no_grad():
                row["score"] = float(metric(student, val_data) if metric is not None
                                     else -sum(float(batch_loss(b)) for b in val_data) / max(len(val_data), 1))
            if best is None or row["score"] > best:
                best, waited, result.best_epoch = row["score"], 0, epoch
                best_state = copy.deepcopy(student.state_dict())
            else:
                waited += 1
        result.history.append(row)
        if val_data is not None and waited >= patience:
            result.stopped_early = epoch < epochs - 1
            break
    if bar is not None:
        bar.close()
    hooks.remove()
    if best_state is not None:
        student.load_state_dict(best_state)
    student.eval()
    return result


def _call(model, x):
    if isinstance(x, dict):
        return model(**x)
    return model(*x) if isinstance(x, (tuple, list)) else model(x)


def _first_tensor(out):
    import torch

    if isinstance(out, torch.Tensor):
        return out
    if hasattr(out, "last_hidden_state"):
        return out.last_hidden_state
    if isinstance(out, dict):
        out = list(out.values())
    return next(o for o in out if isinstance(o, torch.Tensor))


def _kl(s, t, temperature):
    import torch.nn.functional as F

    return F.kl_div(F.log_softmax(s / temperature, -1), F.log_softmax(t / temperature, -1), reduction="batchmean",
                    log_target=True) * temperature ** 2


def _mse(s, t, temperature):
    import torch.nn.functional as F

    return F.mse_loss(s, t)


def _cosine(s, t, temperature):
    import torch.nn.functional as F

    return (1 - F.cosine_similarity(s, t, dim=-1)).mean()


_LOSSES = {"kl": _kl, "mse": _mse, "cosine": _cosine}


class _FeatureHooks:
    """Captures the named modules' outputs in student and teacher; a linear map per pair when widths differ."""

    def __init__(self, student, teacher, pairs):
        self.pairs, self.handles, self.s, self.t, self.maps = list(pairs), [], {}, {}, {}
        for i, (sn, tn) in enumerate(self.pairs):
            self.handles.append(student.get_submodule(sn).register_forward_hook(self._keep("s", i)))
            self.handles.append(teacher.get_submodule(tn).register_forward_hook(self._keep("t", i)))

    def _keep(self, side: str, i: int):
        def hook(module, args, out):
            getattr(self, side)[i] = _first_tensor(out)
        return hook

    def take_teacher(self) -> dict:
        t, self.t = self.t, {}
        return t

    def make_maps(self) -> None:
        import torch

        for i in range(len(self.pairs)):
            s, t = self.s[i], self.t[i]
            axis = 1 if s.dim() == 4 else -1
            if s.shape[axis] != t.shape[axis]:
                self.maps[i] = torch.nn.Linear(s.shape[axis], t.shape[axis], bias=False)
        self.t = {}

    def parameters(self) -> list:
        return [p for m in self.maps.values() for p in m.parameters()]

    def loss(self, t_feats):
        import torch.nn.functional as F

        total = 0.0
        for i in range(len(self.pairs)):
            s, t = self.s[i], t_feats[i]
            if i in self.maps:
                axis = 1 if s.dim() == 4 else -1
                s = self.maps[i](s.movedim(axis, -1)).movedim(-1, axis)
            total = total + F.mse_loss(s, t)
        return total

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


