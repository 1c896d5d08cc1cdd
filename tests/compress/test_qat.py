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


def _seven_bit_net():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(8, 16, 3, padding=1), torch.nn.ReLU(),
                               torch.nn.Conv2d(16, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(),
                               torch.nn.Linear(16 * 6 * 6, 10)).eval()


def test_qat_trains_on_the_levels_its_target_runs():
    """For a CPU without VNNI (x86-64-v3) the layers AVX2's vpmaddubsw will run train on 7-bit levels (it is exact only
    for |w| <= 64), so the compiled model runs them there, not on the slower exact vpmaddwd path, and gives the
    fake-quantized model's numbers; the 10-class head, which no 8 x 4 tile fits, keeps 127 levels, as does every layer
    for a VNNI CPU or with reduce_range=False."""
    from edgeopt.targets import get_target

    from tests.quant.test_reduce_range import _instructions

    if "avx2" not in get_target("host").features:
        pytest.skip("the host CPU has no AVX2")
    torch.manual_seed(1)
    x = torch.randn(48, 8, 6, 6)
    calib = [x[i:i + 1] for i in range(16)]
    levels = lambda q: {n: m.levels for n, m in q.qat_layers().items()}  # noqa: E731
    assert levels(prepare_qat(_seven_bit_net(), (x[:1],), calib, target=get_target("x86", cpu="znver4"))) == \
        {"0": 127, "2": 127, "5": 127}
    assert levels(prepare_qat(_seven_bit_net(), (x[:1],), calib, target="x86", cpu="znver4")) == \
        {"0": 127, "2": 127, "5": 127}  # by name and options, as for compile
    assert levels(prepare_qat(_seven_bit_net(), (x[:1],), calib, target="x86-64", levels=["v3", "v4"])) == \
        {"0": 64, "2": 64, "5": 127}  # a multi-level artifact: the levels every one of its builds can run fast
    assert levels(prepare_qat(_seven_bit_net(), (x[:1],), calib, target="arm", cpu="cortex-a76")) == \
        {"0": 127, "2": 127, "5": 127}  # SDOT; and no aarch64 toolchain is needed to train for it
    assert set(levels(prepare_qat(_seven_bit_net(), (x[:1],), calib, target="x86-64-v3",
                                  reduce_range=False)).values()) == {127}
    qat = prepare_qat(_seven_bit_net(), (x[:1],), calib, target="x86-64-v3")
    assert levels(qat) == {"0": 64, "2": 64, "5": 127}
    teacher = _seven_bit_net()
    distill(teacher, qat, [x[i:i + 16] for i in range(0, 48, 16)], epochs=2, lr=1e-3)
    w = qat.qat_layers()["2"].quantized_weight().detach() / qat.qat_layers()["2"].w_scale.detach().reshape(-1, 1, 1, 1)
    assert 60 < int(w.abs().max().round()) <= 64  # trained on the 7-bit grid, its top levels used
    float_model, config = qat.export()
    compiled = edgeopt.compile(float_model, (x[:1],), target="x86-64-v3", quantize=config, calibration_data=calib)
    assert _instructions(compiled) == ["avx2-ubsw", "avx2-ubsw"]  # the head: plain vector code
    with torch.no_grad():
        want = qat(x[:8]).numpy()
    got = _run(compiled, x[:8])
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-3 * float(np.abs(want).max()))


def test_qat_takes_calibration_data_as_compile_does():
    """A stacked tensor (or a list holding it) sets the same initial ranges as its one-sample slices, and data
    compile would refuse is refused here too, before any training."""
    from edgeopt.quant import QuantizationError

    model, x = _ResidualShared().eval(), torch.rand(8, 1, 8, 8)
    ranges = [{k: m.input_range() for k, m in prepare_qat(model, (x[:1],), data).qat_layers().items()}
              for data in ([x[i:i + 1] for i in range(8)], x, [x])]
    assert ranges[0] and ranges[0] == ranges[1] == ranges[2]
    with pytest.raises(QuantizationError, match=r"calibration batch 0: input %\w+ is float32\[1, 2, 8, 8\]"):
        prepare_qat(model, (x[:1],), [torch.rand(1, 2, 8, 8)])
