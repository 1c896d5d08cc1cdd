"""Static int8 on a real task: a small CNN trained here on scikit-learn's digits (8x8 images of handwriting)
keeps its test accuracy within 0.5 points when compiled with quantize="int8" and calibrated on 64 training images.
The artifact stores int8 weights, saves and loads, and its kernels compute what the reference interpreter does."""

from __future__ import annotations

import numpy as np
import pytest

from bench.digits_cnn import accuracy, train_digits


@pytest.fixture(scope="module")
def trained():
    return train_digits()


@pytest.mark.slow
@pytest.mark.parametrize("target", ["host", "x86-64-v3"])  # x86-64-v3: AVX2's vpmaddubsw on 7-bit weights
def test_static_int8_keeps_digits_accuracy(trained, tmp_path, target):
    from edgeopt.targets import get_target

    import edgeopt

    if "avx2" not in get_target("host").features and target != "host":
        pytest.skip("the host CPU has no AVX2")
    model, x_train, x_test, y_test = trained
    calibration = [x_train[i:i + 1] for i in range(64)]
    fp32 = edgeopt.compile(model, (x_test[:1],), target=target)
    int8 = edgeopt.compile(model, (x_test[:1],), target=target, quantize="int8", calibration_data=calibration)
    acc_fp32 = accuracy(fp32, x_test, y_test)
    acc_int8 = accuracy(int8, x_test, y_test)
    assert acc_fp32 > 0.95  # it learned
    assert acc_int8 >= acc_fp32 - 0.005, (acc_fp32, acc_int8)
    q = int8.report["quantization"]
    assert q["layers_quantized"] == 4 and len(q["kept_float"]) == 1  # the 1-channel first conv stays float
    assert q["weight_ratio"] < 0.35 and q["kernels_by_precision"].get("int8", 0) >= 4
    # the artifact carries the int8 model: saved, loaded, same outputs; its kernels compute the interpreter's graph
    int8.save(tmp_path / "digits.edgeopt")
    loaded = edgeopt.load(tmp_path / "digits.edgeopt")
    batch = x_test[:1].numpy()
    np.testing.assert_array_equal(loaded(batch), int8(batch))
    from edgeopt.ir import interpret

    want = interpret(int8.graph, [batch])[0]
    assert np.abs(int8(batch) - want).max() <= 0.02 * np.abs(want).max()
