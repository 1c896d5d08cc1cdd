"""A small CNN trained here on scikit-learn's handwritten digits: a real-accuracy model for int8 checks
(``tests/quant/test_digits_int8.py``, ``bench/quant.py``). Trains in about 20 s on 2 cores."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


class DigitsCNN(nn.Module):
    """Conv-BN-ReLU blocks (dense, depthwise and pointwise), global average pooling, a linear classifier."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 32, 3, padding=1, groups=32), nn.BatchNorm2d(32), nn.ReLU6(),
            nn.Conv2d(32, 64, 1), nn.BatchNorm2d(64), nn.ReLU())
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        return self.fc(self.features(x).mean((2, 3)))


def train_digits(epochs: int = 12, seed: int = 0):
    """(model in eval mode, x_train, x_test, y_test): trained on 1400 of the 1797 digits, tested on the rest."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.from_numpy((d.images / 16.0).astype(np.float32))[:, None]
    y = torch.from_numpy(d.target)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    train, test = perm[:1400], perm[1400:]
    torch.manual_seed(seed)
    model = DigitsCNN()
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    for _ in range(epochs):
        for idx in train[torch.randperm(len(train))].split(64):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
    return model.eval(), x[train], x[test], y[test].numpy()


def accuracy(run, x, y) -> float:
    """Top-1 accuracy of ``run`` (one 1x1x8x8 numpy image -> logits) on ``x`` (a tensor) and labels ``y``."""
    return float(np.mean([int(np.argmax(run(x[i:i + 1].numpy()))) == y[i] for i in range(len(x))]))
