"""What ``calibration_data`` takes (``edgeopt.quant.setup.calibration_batches``): batches shaped like the example
inputs, several of them stacked along the first axis (split into traced batches), samples without the batch axis of
a model traced on one, dicts by input name; and clear errors for data it cannot use."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edgeopt.api import compile_graph
from edgeopt.frontend import from_torch
from edgeopt.quant import QuantizationError
from edgeopt.quant.setup import calibration_batches


class TwoInputs(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.emb, self.fc = torch.nn.Embedding(20, 8), torch.nn.Linear(8, 4)

    def forward(self, input_ids, scale):
        return self.fc(self.emb(input_ids) * scale[..., None])


def two_inputs(batch: int = 1):
    ids, scale = torch.zeros(batch, 5, dtype=torch.long), torch.ones(batch, 5)
    return from_torch(TwoInputs().eval(), (ids, scale))


def images(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 4, 8, 8)).astype(np.float32)


def conv_graph(batch: int = 1):
    model = torch.nn.Sequential(torch.nn.Conv2d(4, 8, 3), torch.nn.ReLU()).eval()  # 4 channels: no image conv
    return model, from_torch(model, (torch.zeros(batch, 4, 8, 8),))


def test_stacked_samples_are_split_into_traced_batches():
    _, g = conv_graph()
    x = images(6)
    want = [[x[i:i + 1]] for i in range(6)]
    for data in ([x], [torch.from_numpy(x)], x, torch.from_numpy(x), [x[:2], x[2:]]):  # x, a tensor: iterated
        got = calibration_batches(data, g)
        assert len(got) == 6 and all(np.array_equal(a[0], b[0]) and a[0].shape == (1, 4, 8, 8)
                                     for a, b in zip(got, want)), type(data)


def test_a_model_traced_on_two_takes_stacks_of_twos_only():
    _, g = conv_graph(batch=2)
    got = calibration_batches([images(6)], g)
    assert [b[0].shape for b in got] == [(2, 4, 8, 8)] * 3
    for bad in ([images(5)], [images(1)], list(images(4))):  # 5 is no stack of twos; a lone sample is not a batch
        with pytest.raises(QuantizationError, match=r"calibration batch 0: input %\w+ is float32\[.*traced with "
                                                    r"f32\[2,4,8,8\].*stack several of them along the first axis: "
                                                    r"2 x k rows"):
            calibration_batches(bad, g)


def test_several_inputs_split_alike_or_not_at_all():
    g = two_inputs()
    ids, scale = np.arange(15).reshape(3, 5) % 20, np.ones((3, 5), np.float32)
    got = calibration_batches([(ids, scale)], g)
    assert len(got) == 3 and all(np.array_equal(b[0], ids[i:i + 1]) for i, b in enumerate(got))
    with pytest.raises(QuantizationError, match=r"stacks a different number of traced batches in each input "
                                                r"\(%input_ids 3, %scale 2\)"):
        calibration_batches([(ids, scale[:2])], g)  # 3 samples of one input, 2 of the other
    with pytest.raises(QuantizationError, match=r"input %scale is float64\[3, 5\].*convert it"):
        calibration_batches([(ids, scale.astype(np.float64))], g)  # the input in the wrong dtype is named
    with pytest.raises(QuantizationError, match="holds no rows"):
        calibration_batches([(ids[:0], scale[:0])], g)  # no rows: no batch at all


class WithAScalar(torch.nn.Module):
    def forward(self, x, t):
        return x * t


def test_a_rank_0_input_is_the_same_in_every_split_batch():
    g = from_torch(WithAScalar().eval(), (torch.zeros(1, 3), torch.tensor(2.0)))
    x, t = np.arange(12, dtype=np.float32).reshape(4, 3), np.float32(0.5)
    got = calibration_batches([(x, t)], g)
    assert len(got) == 4 and all(b[1] == t and np.array_equal(b[0], x[i:i + 1]) for i, b in enumerate(got))
    got = calibration_batches([(x[0], t)], g)  # a sample without its batch axis, beside the scalar
    assert len(got) == 1 and got[0][0].shape == (1, 3)
    with pytest.raises(QuantizationError, match=r"input %t is float32\[3\]"):
        calibration_batches([(x[:1], np.ones(3, np.float32))], g)  # the scalar given as a vector is named
    with pytest.raises(QuantizationError, match=r"input %x is float32\[1, 5\]"):
        calibration_batches([(np.ones((1, 5), np.float32), t)], g)  # and a wrong shape beside a right scalar


def test_a_tokenizer_output_for_many_samples_is_one_dict_split_by_rows():
    g = two_inputs()
    ids, scale = np.arange(20).reshape(4, 5) % 20, np.ones((4, 5), np.float32)
    got = calibration_batches({"input_ids": ids, "scale": scale, "token_type_ids": ids}, g)
    assert len(got) == 4 and all(np.array_equal(b[0], ids[i:i + 1]) for i, b in enumerate(got))


def test_dict_batches_by_input_name():
    g = two_inputs()
    ids, scale = np.ones((1, 5), np.int64), np.ones((1, 5), np.float32)
    got = calibration_batches([{"scale": scale, "input_ids": ids, "token_type_ids": ids}], g)  # an unused key: fine
    assert got[0][0] is not None and np.array_equal(got[0][0], ids) and np.array_equal(got[0][1], scale)
    with pytest.raises(QuantizationError, match=r"calibration batch 0 has no \['scale'\].*inputs are "
                                                r"\['input_ids', 'scale'\]"):
        calibration_batches([{"input_ids": ids}], g)


def test_nan_and_non_numbers_are_refused_infinities_are_data():
    _, g = conv_graph()
    x = images(1)
    x[0, 0, 0, :3] = np.nan
    with pytest.raises(QuantizationError, match=r"input %\w+ has 3 NaN values of 256"):
        calibration_batches([x], g)
    x[0, 0, 0, :3] = -np.inf  # an additive mask's -inf: calibration leaves non-finite values out of the ranges
    assert len(calibration_batches([x], g)) == 1
    with pytest.raises(QuantizationError, match="holds a str, not a tensor or array of numbers"):
        calibration_batches(["cat.png"], g)


def test_compiling_on_a_stacked_tensor_equals_compiling_on_its_slices():
    model, g = conv_graph()
    x = images(8)
    a = compile_graph(g.clone(), "host", quantize="int8", calibration_data=torch.from_numpy(x))
    b = compile_graph(g.clone(), "host", quantize="int8", calibration_data=[x[i:i + 1] for i in range(8)])
    held_out = images(1, seed=1)
    assert a.report["quantization"]["layers_quantized"] == 1
    np.testing.assert_array_equal(a(held_out), b(held_out))
