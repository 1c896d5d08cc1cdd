"""Distillation recovers what pruning lost: a CNN trained here on scikit-learn's digits (real handwriting),
pruned by half (structured), distilled from the original, is within 1 point of its test accuracy."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bench.digits_cnn import DigitsCNN, DigitsResNet, digits_split, train_digits
from edgeopt.compress import distill, prune


def _accuracy(model, x, y) -> float:
    with torch.no_grad():
        return float((model(x).argmax(1).numpy() == np.asarray(y)).mean())


@pytest.fixture(scope="module")
def digits():
    teacher, *_ = train_digits(model=DigitsResNet())
    return teacher, digits_split()


def test_pruned_and_distilled_within_one_point(digits):
    teacher, (x_tr, y_tr, x_te, y_te) = digits
    base = _accuracy(teacher, x_te, y_te)
    student, result = prune(teacher, (x_tr[:1],), 0.5, return_result=True)
    assert result.macs_after < 0.5 * result.macs_before
    cut = _accuracy(student, x_te, y_te)
    train = [(x_tr[i:i + 64], y_tr[i:i + 64]) for i in range(0, len(x_tr), 64)]
    out = distill(teacher, student, train, labels=True, epochs=20, lr=3e-3)
    got = _accuracy(out.model, x_te, y_te)
    print(f"digits: teacher {base:.4f}, pruned 50% {cut:.4f}, distilled {got:.4f}, MACs {result.macs_before} -> "
          f"{result.macs_after}")
    assert cut < base - 0.05  # pruning without training did lose accuracy
    assert got >= base - 0.01
    assert len(out.history) == 20 and out.history[-1]["loss"] < out.history[0]["loss"]


def test_feature_distillation_and_early_stop(digits):
    teacher, (x_tr, y_tr, x_te, y_te) = digits
    student = prune(teacher, (x_tr[:1],), 0.5)
    before = [p.detach().clone() for p in student.parameters()]
    batches = [x_tr[i:i + 128] for i in range(0, 512, 128)]
    out = distill(teacher, student, batches, epochs=4, lr=1e-3, features=[("block", "block"), ("down.8", "down.8")],
                  feature_weight=0.5, val_data=[x_tr[1200:1300]], loss="mse")
    assert out.history[-1]["score"] > out.history[0]["score"]  # minus the validation loss: it improved
    # a metric that never improves after the first epoch: stops after `patience` more, keeps the first epoch
    out = distill(teacher, student, batches, epochs=50, val_data=[x_tr[1200:1300]], metric=lambda m, d: 0.0,
                  patience=2)
    assert out.stopped_early and out.best_epoch == 0 and len(out.history) == 3
    assert any(not torch.equal(a, b) for a, b in zip(before, student.parameters()))
    assert not student.training


def test_settings():
    t, s = DigitsCNN().eval(), DigitsCNN()
    with pytest.raises(ValueError, match="loss"):
        distill(t, s, [torch.zeros(1, 1, 8, 8)], loss="l7")
    with pytest.raises(ValueError, match="labels=True"):
        distill(t, s, [torch.zeros(1, 1, 8, 8)], alpha=0.5)
