"""8-bit pixel inputs: the lattice ``pixel_lattice`` finds, and the exact int8 image conv quantize_static builds."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from edgeopt.targets import get_target

from edgeopt.api import compile_graph
from edgeopt.frontend import from_torch
from edgeopt.ir import interpret, verify
from edgeopt.pipeline import get_pass
from edgeopt.quant import QuantConfig
from edgeopt.quant.compare import sqnr_db
from edgeopt.quant.lattice import pixel_lattice

MEAN, STD = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])


def pixels(n: int, size: int = 16, seed: int = 0, lo: int = 0, hi: int = 256) -> np.ndarray:
    return np.random.default_rng(seed).integers(lo, hi, (n, 3, size, size)).astype(np.float32)


def imagenet(k: np.ndarray) -> np.ndarray:
    """torchvision's normalization of 8-bit pixels, in float32 as a data loader computes it."""
    return ((k / np.float32(255) - MEAN.reshape(1, 3, 1, 1).astype(np.float32))
            / STD.reshape(1, 3, 1, 1).astype(np.float32)).astype(np.float32)


def test_finds_imagenet_normalization_per_channel():
    k = pixels(4)
    lattice = pixel_lattice([imagenet(k[:2]), imagenet(k[2:])])
    assert lattice is not None
    np.testing.assert_allclose(lattice.step, 1 / (255 * STD), rtol=1e-5)
    np.testing.assert_allclose(-lattice.origin / lattice.step, 255 * MEAN, atol=1e-3)  # the level of 0: mean*255
    np.testing.assert_allclose(lattice.levels(imagenet(k)), k, atol=1e-3)  # each value's level is its pixel


def test_places_unseen_levels_evenly_around_the_values_seen_keeping_zero_on_the_grid():
    k = pixels(2, lo=60, hi=201)  # levels 60..200 seen: 141 of 256
    x = ((k / 255 - 0.5) / 0.5).astype(np.float32)
    levels = np.rint(pixel_lattice([x]).levels(x))
    assert levels.min() == (255 - 140) // 2 and levels.max() == levels.min() + 140
    k = pixels(2, lo=20, hi=256)  # k / 255 seen from 20 up: centring would put x = 0 below the grid
    lattice = pixel_lattice([(k / 255).astype(np.float32)])
    np.testing.assert_allclose(lattice.origin, 0.0, atol=1e-6)  # level 0 is x = 0: the padding stays exact


@pytest.mark.parametrize("data", [
    np.random.default_rng(0).standard_normal((2, 3, 8, 8)).astype(np.float32),  # not on a lattice
    np.arange(2 * 3 * 600, dtype=np.float32).reshape(2, 3, 600) % 300,  # 300 levels: more than 8 bits
    np.array([0.0, 1.0, 1.0 + 2 ** 0.5] * 64, np.float32).reshape(1, 3, 64),  # spacings 1 and sqrt(2)
    np.where(np.arange(2 * 3 * 64).reshape(2, 3, 64) % 2, 0.1, 0.8).astype(np.float32),  # a mask: 2 values
    np.rint(np.random.default_rng(0).standard_normal((2, 3, 64, 64)) * 10).astype(np.float32) / 10,  # rounded
    pixels(2, lo=0, hi=160) / 255 + 1.0,  # 8-bit, but 0 is far below the grid: the padding could not be a level
])
def test_refuses_values_that_are_not_8_bit_pixels(data):
    assert pixel_lattice([data.astype(np.float32)]) is None


class Stem(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.stem, self.body = torch.nn.Conv2d(3, 16, 3, stride=2, padding=1), torch.nn.Conv2d(16, 16, 3, padding=1)

    def forward(self, x):
        return self.body(torch.relu(self.stem(x)))


@pytest.mark.parametrize("target, shift", [("x86-64-v3", 0), ("arm-a76", -128)])
def test_an_image_conv_reads_the_raw_pixels_and_pads_with_the_level_of_zero(target, shift):
    """With ``int8_image_convs``, ImageNet-normalized pixels quantize to exactly their 8-bit values (less 128 where
    the dot product is signed: ARM SDOT), the steps move into the stem's weights, and the integer stem pads each
    channel with its own level of 0 (124, 116, 104)."""
    torch.manual_seed(0)
    model, k = Stem().eval(), pixels(9)
    x, cal = imagenet(k[:1]), [[imagenet(k[i:i + 1])] for i in range(1, 9)]
    g = from_torch(model, (torch.from_numpy(x),))
    get_pass("fold_batch_norm").run(g)
    before = g.clone()
    p = get_pass("quantize_static", QuantConfig(int8_image_convs=True), cal)
    # AVX2 (an int8 dot product every x86-64-v3 CPU has, on u8) or the Cortex-A76's SDOT (on i8)
    p.target = get_target("x86-64-v3") if target == "x86-64-v3" else get_target("arm", cpu="cortex-a76")
    p.run(g)
    verify(g)
    q = next(n for n in g.nodes if n.op == "quantize" and n.outputs[0].name.startswith(g.inputs[0].name))
    seen = {}
    interpret(g, [x], observe=lambda v, a: seen.setdefault(v.name, a))
    np.testing.assert_array_equal(seen[q.outputs[0].name], k[:1] + shift)  # the pixels themselves: nothing lost
    stem = next(n for n in g.nodes if n.op == "conv2d")
    assert stem.inputs[0].producer.op == "dequantize" and stem.inputs[0].type.dtype == "f32"
    ref = interpret(before, [x])[0]
    assert sqnr_db(ref, interpret(g, [x])[0]) > 30
    get_pass("fold_quantized").run(g)
    verify(g)
    (pad,) = [n for n in g.nodes if n.op == "pad" and n.inputs[0] is q.outputs[0]]
    assert pad.attrs["value"] == [124 + shift, 116 + shift, 104 + shift]
    assert pad.inputs[0].type.dtype == ("u8" if shift == 0 else "i8")
    assert sqnr_db(ref, interpret(g, [x])[0]) > 30  # the border half a level off: barely changes anything


def test_compiled_image_conv_on_pixels_matches_the_interpreter_and_torch():
    torch.manual_seed(0)
    model, k = Stem().eval(), pixels(9)
    x, cal = imagenet(k[:1]), [torch.from_numpy(imagenet(k[i:i + 1])) for i in range(1, 9)]
    compiled = compile_graph(from_torch(model, (torch.from_numpy(x),)), "host",
                             quantize=QuantConfig(int8_image_convs=True), calibration_data=cal)
    got, want = compiled(x), interpret(compiled.graph, [x])[0]
    assert np.abs(got - want).max() <= 0.02 * np.abs(want).max()
    ref = model(torch.from_numpy(x)).detach().numpy()
    assert sqnr_db(ref, got) > 25
    pads = [n for n in compiled.graph.nodes if n.op == "fused" for m in n.body.nodes if m.op == "pad"
            and isinstance(m.attrs["value"], list)]
    assert len(pads) == (1 if get_target("host").int8_dots() else 0)
