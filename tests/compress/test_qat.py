"""Quantization-aware training: the fake-quantized torch model is what edgeopt's static int8 compiles (same
numbers), and on a CNN trained here on real digits its int8 accuracy is at least post-training quantization's."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import edgeopt
from bench.digits_cnn import digits_split, train_digits
from edgeopt.compress import distill, fold_batch_norms, prepare_qat
from edgeopt.compress.qat import QATLayer


def _run(compiled, x):
    return np.concatenate([compiled(x[i:i + 1].numpy()) for i in range(len(x))])


@pytest.fixture(scope="module")
def digits():
    teacher, *_ = train_digits()
    return teacher, digits_split()


def test_fold_batch_norms_keeps_outputs(digits):
    teacher, (x_tr, *_) = digits
    import copy

    folded = fold_batch_norms(copy.deepcopy(teacher), (x_tr[:1],))
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    with torch.no_grad():
        np.testing.assert_allclose(folded(x_tr[:32]).numpy(), teacher(x_tr[:32]).numpy(), rtol=1e-4, atol=1e-4)


def test_qat_int8_matches_torch_and_is_at_least_ptq(digits):
    teacher, (x_tr, y_tr, x_te, y_te) = digits
    calib = [x_tr[i:i + 1] for i in range(64)]
    example = (x_tr[:1],)
    ptq = edgeopt.compile(teacher, example, quantize="int8", calibration_data=calib)
    qat = prepare_qat(teacher, example, calib)
    layers = qat.qat_layers()
    assert len(layers) == 4 and "features.0" not in layers  # the 1-channel image conv stays float, as in int8
    distill(teacher, qat, [(x_tr[i:i + 64], y_tr[i:i + 64]) for i in range(0, len(x_tr), 64)], labels=True,
            epochs=3, lr=1e-3)
    float_model, config = qat.export()
    assert config.bias_correction is False and set(config.input_ranges) == set(layers)
    compiled = edgeopt.compile(float_model, example, quantize=config, calibration_data=calib)
    assert compiled.report["quantization"]["layers_quantized"] == 4
    with torch.no_grad():
        want = qat(x_te[:64]).numpy()
    got = _run(compiled, x_te[:64])
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-3 * float(np.abs(want).max()))
    acc_ptq = float((_run(ptq, x_te).argmax(1) == y_te.numpy()).mean())
    acc_qat = float((_run(compiled, x_te).argmax(1) == y_te.numpy()).mean())
    print(f"digits int8 accuracy: PTQ {acc_ptq:.4f}, QAT {acc_qat:.4f}")
    assert acc_qat >= acc_ptq


def test_learned_scales_are_used():
    """A weight on the learned grid comes back exactly; the learned input range replaces the calibrated one."""
    torch.manual_seed(0)
    layer = torch.nn.Linear(16, 8)
    model = torch.nn.Sequential(torch.nn.ReLU(), layer).eval()
    x = torch.rand(4, 16)
    qat = prepare_qat(model, (x,), [x])
    q: QATLayer = qat.qat_layers()["1"]
    with torch.no_grad():
        q.w_scale.mul_(1.5)  # as if training had moved them
        q.in_scale.mul_(2.0)
    float_model, config = qat.export()
    lo, hi = config.input_ranges["1"]
    assert lo == 0.0 and hi == pytest.approx(255 * float(q.in_scale), rel=1e-6)
    compiled = edgeopt.compile(float_model, (x,), quantize=config, calibration_data=[(x,)])
    with torch.no_grad():
        np.testing.assert_allclose(compiled(x.numpy()), qat(x).numpy(), rtol=1e-4, atol=1e-4)


class _ResidualShared(torch.nn.Module):
    """A residual add reading a quantized activation, and two layers reading one input."""

    def __init__(self):
        super().__init__()
        self.stem = torch.nn.Conv2d(1, 16, 3, padding=1)
        self.b = torch.nn.Conv2d(16, 16, 3, padding=1)
        self.c = torch.nn.Conv2d(16, 16, 1)
        self.fc = torch.nn.Linear(16, 10)

    def forward(self, x):
        y = torch.relu(self.stem(x))
        z = torch.relu(self.b(y)) + self.c(y) + y
        return self.fc(z.mean((2, 3)))


def test_qat_residual_and_shared_input():
    torch.manual_seed(0)
    model = _ResidualShared().eval()
    x = torch.rand(8, 1, 8, 8)
    calib = [x[i:i + 1] for i in range(8)]
    qat = prepare_qat(model, (x[:1],), calib)
    with torch.no_grad():  # the two readers of y learned different ranges
        qat.qat_layers()["c"].in_scale.mul_(1.7)
    float_model, config = qat.export()
    compiled = edgeopt.compile(float_model, (x[:1],), quantize=config, calibration_data=calib)
    with torch.no_grad():
        want = qat(x[:4]).numpy()
    np.testing.assert_allclose(_run(compiled, x[:4]), want, rtol=1e-3, atol=1e-3 * float(np.abs(want).max()))
