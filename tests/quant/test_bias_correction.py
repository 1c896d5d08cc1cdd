"""Bias correction's statistics (``edgeopt.quant.bias_correction.WeightErrors``): the mean output error that a
layer's int8 weight causes, from the inputs' sums alone, equals the mean over the batches of (int8 layer - float
layer), per output channel, for convs (padded, depthwise, in units of input steps) and for linear layers ([out, in]
and [in, out]); only the first ``BIAS_CORRECTION_BATCHES`` batches count; and the corrected layer's mean error on
held-out inputs falls."""

from __future__ import annotations

import numpy as np
import pytest

from edgeopt.ir import Graph, TensorType
from edgeopt.ir.registry import get_op
from edgeopt.quant.bias_correction import BIAS_CORRECTION_BATCHES, WeightErrors
from edgeopt.quant.weights import input_shaped, reduce_axes, symmetric_int8, times_input_steps

CONV = {"stride": [1, 1], "padding": [1, 1, 1, 1], "dilation": [1, 1], "groups": 1, "weight_layout": "OIHW"}


def layer(kind: str) -> tuple[Graph, object]:
    """A graph with one biased layer of ``kind`` on a non-zero-mean input (post-ReLU activations are)."""
    g, rng = Graph("one"), np.random.default_rng(0)
    if kind in ("conv", "depthwise"):
        x = g.add_input("x", TensorType((2, 8, 6, 6), "f32"))
        groups = 8 if kind == "depthwise" else 1
        w = rng.standard_normal((8, 8 // groups, 3, 3)).astype(np.float32)
        attrs = {**CONV, "groups": groups}
        op = "conv2d"
    else:
        x = g.add_input("x", TensorType((2, 5, 8), "f32"))
        w = rng.standard_normal((12, 8)).astype(np.float32)
        attrs = {"weight_layout": "oi"}
        if kind == "linear io":
            w, attrs = np.ascontiguousarray(w.T), {"weight_layout": "io"}
        op = "linear"
    b = g.add_const(rng.standard_normal(w.shape[0] if op == "conv2d" or kind == "linear" else w.shape[1])
                    .astype(np.float32), "b")
    y = g.add(op, [x, g.add_const(w, "w"), b], attrs, name="y")
    g.set_outputs([y])
    return g, y.producer


def batches(g: Graph, k: int, seed: int = 1) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    shape = g.inputs[0].type.shape
    return [np.abs(rng.standard_normal(shape)).astype(np.float32) + 0.5 * (i % 3) for i in range(k)]


def mean_error(n, w_float, w_int8, xs) -> np.ndarray:
    """The brute-force mean over ``xs`` of (layer with ``w_int8`` - layer with ``w_float``), per output channel."""
    ref = get_op(n.op).reference
    err = np.mean([ref([x, w_int8], n.attrs)[0] - ref([x, w_float], n.attrs)[0] for x in xs], axis=0)
    ch = 1 if n.op == "conv2d" else err.ndim - 1
    return err.astype(np.float64).mean(axis=tuple(i for i in range(err.ndim) if i != ch))


# a depthwise conv reads no steps: it takes each channel's scale in its requantize, not in its weight
@pytest.mark.parametrize("kind, stepped", [("conv", False), ("conv", True), ("depthwise", False), ("linear", False),
                                           ("linear", True), ("linear io", False), ("linear io", True)])
def test_mean_error_from_input_sums_matches_the_brute_force_mean(kind, stepped):
    g, n = layer(kind)
    w = g.const(n.inputs[1])
    xs = batches(g, BIAS_CORRECTION_BATCHES + 4)
    steps = None
    if stepped:  # the layer reads x / step, its weight is w * step (pixels, or a channel's share of the scale)
        steps = np.linspace(0.25, 1.0, n.inputs[0].type.shape[1 if n.op == "conv2d" else -1]).astype(np.float32)
    errors = WeightErrors([n])
    for i, x in enumerate(xs):
        errors.observe(n.inputs[0], x, i)
    stored = w if steps is None else times_input_steps(w, steps, n)
    q, s = symmetric_int8(stored, reduce_axes(n, stored))
    shift = errors.means(g, {"y": (q, s)}, {} if steps is None else {n: steps})["y"]
    effective = q.astype(np.float32) * s  # what the int8 layer computes with, back in x's units
    if steps is not None:
        effective = effective / input_shaped(steps, w, n)
    want = mean_error(n, w, effective, xs[:BIAS_CORRECTION_BATCHES])  # the later batches do not count
    assert np.abs(want).max() > 1e-4  # rounding does shift the mean: the check is not of zeros
    np.testing.assert_allclose(shift, want, rtol=1e-4, atol=1e-6)
    assert not np.allclose(shift, mean_error(n, w, effective, xs), rtol=1e-3, atol=1e-6)  # it is the first 16's


def test_the_corrected_layer_drifts_less_on_held_out_inputs():
    g, n = layer("conv")
    w = g.const(n.inputs[1])
    errors = WeightErrors([n])
    for i, x in enumerate(batches(g, BIAS_CORRECTION_BATCHES)):
        errors.observe(n.inputs[0], x, i)
    q, s = symmetric_int8(w, (1, 2, 3), qmax=15)  # coarse levels: a drift well above the sampling noise
    shift = errors.means(g, {"y": (q, s)}, {})["y"]
    held_out = batches(g, 8, seed=7)
    before = mean_error(n, w, q.astype(np.float32) * s, held_out)
    assert np.abs(before - shift).mean() < 0.25 * np.abs(before).mean()


def test_layers_without_a_constant_bias_get_no_shift():
    """No bias input (nothing to shift), or a bias that is a graph input (no constant to rewrite)."""
    g = Graph("nobias")
    x = g.add_input("x", TensorType((1, 4, 4, 4), "f32"))
    b = g.add_input("b", TensorType((4,), "f32"))
    w = np.random.default_rng(0).standard_normal((4, 4, 1, 1)).astype(np.float32)
    attrs = {**CONV, "padding": [0, 0, 0, 0]}
    none = g.add("conv2d", [x, g.add_const(w, "w")], attrs, name="none")
    given = g.add("conv2d", [x, g.add_const(w, "w2"), b], attrs, name="given")
    g.set_outputs([none, given])
    errors = WeightErrors([none.producer, given.producer])
    errors.observe(x, np.ones((1, 4, 4, 4), np.float32), 0)
    assert errors.layers == [given.producer]
    int8 = symmetric_int8(w, (1, 2, 3))
    assert errors.means(g, {"none": int8, "given": int8}, {}) == {}
