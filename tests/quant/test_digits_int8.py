"""Static int8 on a real task: a small CNN trained here on scikit-learn's digits (8x8 images of handwriting)
keeps its test accuracy within 0.5 points when compiled with quantize="int8" and calibrated on 64 training images.
The artifact stores int8 weights, saves and loads, and its kernels compute what the reference interpreter does."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn


class DigitsCNN(nn.Module):
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


@pytest.fixture(scope="module")
def trained():
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.from_numpy((d.images / 16.0).astype(np.float32))[:, None]
    y = torch.from_numpy(d.target)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    train, test = perm[:1400], perm[1400:]
    torch.manual_seed(0)
    model = DigitsCNN()
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    for _ in range(12):
        for idx in train[torch.randperm(len(train))].split(64):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
    return model.eval(), x[train], x[test], y[test].numpy()


def _accuracy(fn, x, y) -> float:
    return float(np.mean([int(np.argmax(fn(x[i:i + 1]))) == y[i] for i in range(len(x))]))


@pytest.mark.slow
def test_static_int8_keeps_digits_accuracy(trained, tmp_path):
    import edgeopt

    model, x_train, x_test, y_test = trained
    calibration = [x_train[i:i + 1] for i in range(64)]
    fp32 = edgeopt.compile(model, (x_test[:1],))
    int8 = edgeopt.compile(model, (x_test[:1],), quantize="int8", calibration_data=calibration)
    acc_fp32 = _accuracy(lambda a: fp32(a.numpy()), x_test, y_test)
    acc_int8 = _accuracy(lambda a: int8(a.numpy()), x_test, y_test)
    assert acc_fp32 > 0.95  # it learned
    assert acc_int8 >= acc_fp32 - 0.005, (acc_fp32, acc_int8)
    q = int8.report["quantization"]
    assert q["layers_quantized"] == 5 and q["weight_ratio"] < 0.35 and q["kernels_by_precision"].get("int8", 0) >= 5
    # the artifact carries the int8 model: saved, loaded, same outputs; its kernels compute the interpreter's graph
    int8.save(tmp_path / "digits.edgeopt")
    loaded = edgeopt.load(tmp_path / "digits.edgeopt")
    batch = x_test[:1].numpy()
    np.testing.assert_array_equal(loaded(batch), int8(batch))
    from edgeopt.ir import interpret

    want = interpret(int8.graph, [batch])[0]
    assert np.abs(int8(batch) - want).max() <= 0.02 * np.abs(want).max()
