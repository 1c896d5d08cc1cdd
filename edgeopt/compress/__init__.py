"""Compression beyond quantization: structured pruning, low-rank factorization, distillation and QAT.

Two faces over one analysis:
- compile options on the IR, no retraining: ``edgeopt.compile(..., compress=edgeopt.Compress(prune=0.5))``;
- PyTorch-side utilities that return a smaller ``nn.Module`` to fine-tune: ``prune``, ``low_rank``, ``distill``.

The torch-side functions import torch when called (``prepare_qat`` when first named); ``Compress`` and the IR
analysis do not need it.
"""

from __future__ import annotations

from .config import Compress, CompressionError
from .distillation import DistillResult, distill
from .explore import ExploreResult, explore
from .torch_low_rank import LowRankResult, low_rank
from .torch_prune import PruneResult, prune

__all__ = ["Compress", "CompressionError", "DistillResult", "ExploreResult", "LowRankResult", "PruneResult",
           "QATModel", "distill", "explore", "low_rank", "prepare_qat", "prune"]


def __getattr__(name):
    if name in ("prepare_qat", "QATModel", "fold_batch_norms"):  # defines torch modules: imports torch
        from . import qat

        return getattr(qat, name)
    raise AttributeError(f"module 'edgeopt.compress' has no attribute {name!r}")
