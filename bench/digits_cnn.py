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


class DigitsResNet(nn.Module):
    """A wider CNN for the compression experiments: a stem, a residual block (two 3x3 convs and an identity
    shortcut), a strided stage, depthwise + pointwise, global average pooling and a linear classifier."""

    def __init__(self, width: int = 32):
        super().__init__()
        w = width
        self.stem = nn.Sequential(nn.Conv2d(1, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU())
        self.block = nn.Sequential(nn.Conv2d(w, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU(),
                                   nn.Conv2d(w, w, 3, padding=1), nn.BatchNorm2d(w))
        self.down = nn.Sequential(nn.Conv2d(w, 2 * w, 3, stride=2, padding=1), nn.BatchNorm2d(2 * w), nn.ReLU(),
                                  nn.Conv2d(2 * w, 2 * w, 3, padding=1, groups=2 * w), nn.BatchNorm2d(2 * w),
                                  nn.ReLU6(), nn.Conv2d(2 * w, 4 * w, 1), nn.BatchNorm2d(4 * w), nn.ReLU())
        self.fc = nn.Linear(4 * w, 10)

    def forward(self, x):
        x = self.stem(x)
        x = torch.relu(x + self.block(x))
        return self.fc(self.down(x).mean((2, 3)))


def digits_split(seed: int = 0):
    """(x_train, y_train, x_test, y_test) tensors: 1400 of the 1797 digits to train on, the rest to test."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.from_numpy((d.images / 16.0).astype(np.float32))[:, None]
    y = torch.from_numpy(d.target)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    train, test = perm[:1400], perm[1400:]
    return x[train], y[train], x[test], y[test]


def train_digits(epochs: int = 12, seed: int = 0, model: nn.Module | None = None):
    """(model in eval mode, x_train, x_test, y_test): ``model`` (default: a new ``DigitsCNN``) trained on 1400 of
    the 1797 digits, tested on the rest."""
    x_train, y_train, x_test, y_test = digits_split(seed)
    torch.manual_seed(seed)
    model = model if model is not None else DigitsCNN()
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    for _ in range(epochs):
        for idx in torch.randperm(len(x_train)).split(64):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x_train[idx]), y_train[idx]).backward()
            opt.step()
    return model.eval(), x_train, x_test, y_test.numpy()


def accuracy(run, x, y) -> float:
    """Top-1 accuracy of ``run`` (one 1x1x8x8 numpy image -> logits) on ``x`` (a tensor) and labels ``y``."""
    return float(np.mean([int(np.argmax(run(x[i:i + 1].numpy()))) == y[i] for i in range(len(x))]))
