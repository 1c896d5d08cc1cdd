"""``Compress``: the compile-time compression settings (``edgeopt.compile(..., compress=edgeopt.Compress(...))``)."""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass


class CompressionError(ValueError):
    """A compression setting that cannot apply to this model (the message says what to change)."""


@dataclass(frozen=True)
class Compress:
    """What to compress at compile time (no retraining; for fine-tuning use the torch-side ``edgeopt.compress``
    functions, which make the same changes on an ``nn.Module``).

    - ``prune``: fraction of the channels of every prunable layer to remove (structured: whole conv filters,
      linear rows, attention heads, with the layers coupled to them); ``prune_score`` "l1" or "l2";
      ``round_to`` keeps a multiple of that many channels where a layer has at least that many (16: the CPU
      kernels' vector width; a digits CNN pruned to 24-channel layers ran 1.19x the unpruned time, rounded to
      multiples of 16 0.92x, its Winograd convs having no vector lanes to fill at 24).
    - ``rank_energy`` (e.g. 0.9: keep 90% of each weight's squared singular values) or ``rank_budget`` (e.g.
      0.5: the factored layers keep half their parameters, ranks chosen across layers by energy per parameter):
      low-rank factorization of linear and conv weights by truncated SVD into two smaller layers, on the layers
      whose names match ``rank_layers`` (globs over module names, e.g. ``"*.intermediate.dense"``); ranks are
      multiples of ``rank_multiple`` (vector width); a layer whose rank would not save multiply-adds stays whole.
    - ``sparsity``: unstructured magnitude pruning, the fraction of each conv / linear weight (of the layers
      matching ``sparsity_layers``) set to zero; the artifact stores such weights sparse (mask and values), and
      linear layers run as sparse kernels where measured faster (the ``sparse_linear`` pass; not with
      ``quantize=``, whose integer kernels are dense: the zeros then only shrink the artifact).
    """

    prune: float = 0.0
    prune_score: str = "l1"
    round_to: int = 16
    rank_energy: float | None = None
    rank_budget: float | None = None
    rank_layers: tuple[str, ...] = ("*",)
    rank_multiple: int = 16
    sparsity: float = 0.0
    sparsity_layers: tuple[str, ...] = ("*",)

    def __post_init__(self):
        if not 0 <= self.prune < 1:
            raise CompressionError(f"Compress(prune=...) is the fraction of channels to remove, in [0, 1): "
                                   f"got {self.prune}")
        if self.prune_score not in ("l1", "l2"):
            raise CompressionError(f"Compress(prune_score=...) must be 'l1' or 'l2' at compile time (gradient "
                                   f"scores need data: edgeopt.compress.prune(score='taylor')), got "
                                   f"{self.prune_score!r}")
        if self.rank_energy is not None and self.rank_budget is not None:
            raise CompressionError("give Compress one of rank_energy= and rank_budget=, not both")
        for name in ("rank_energy", "rank_budget"):
            v = getattr(self, name)
            if v is not None and not 0 < v <= 1:
                raise CompressionError(f"Compress({name}=...) must be in (0, 1], got {v}")
        if not 0 <= self.sparsity < 1:
            raise CompressionError(f"Compress(sparsity=...) is the fraction of each weight set to zero, in [0, 1): "
                                   f"got {self.sparsity}")
        for name in ("rank_layers", "sparsity_layers"):
            v = getattr(self, name)
            object.__setattr__(self, name, (v,) if isinstance(v, str) else tuple(v))

    @property
    def low_rank(self) -> bool:
        return self.rank_energy is not None or self.rank_budget is not None

    def passes(self, sparse_kernels: bool = True) -> list:
        """The configured passes, in the order they run (first in the pipeline). ``sparse_kernels`` False leaves
        the pruned linears dense (quantization then quantizes them: its kernels have no sparse form)."""
        from ..pipeline import get_pass

        out = []
        if self.prune:
            out.append(get_pass("prune_channels", self.prune, self.prune_score, self.round_to))
        if self.low_rank:
            out.append(get_pass("low_rank", energy=self.rank_energy, budget=self.rank_budget,
                                layers=self.rank_layers, multiple=self.rank_multiple))
        if self.sparsity:
            out.append(get_pass("prune_magnitude", self.sparsity, self.sparsity_layers))
            if sparse_kernels:
                out.append(get_pass("sparse_linear"))
        return out


def matches(name: str, patterns) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)
