"""Bias correction for static int8 (``QuantConfig.bias_correction``): the mean error that rounding a layer's weight
causes in its output, to take off its bias, so that such errors do not add up as a drift through deep nets.

    errors = WeightErrors(layers)                  # while calibration data flows: observe(value, array, batch)
    shifts = errors.means(g, int8_weights, steps)  # after rounding: output name -> mean error per output channel
"""

from __future__ import annotations

import numpy as np

from ..ir import Graph, Node, Value
from ..ir.registry import get_op
from .weights import input_shaped, times_input_steps

#: bias correction sums the inputs of this many calibration batches
BIAS_CORRECTION_BATCHES = 16


class WeightErrors:
    """For each biased conv / linear, the mean (per output channel, over the first ``BIAS_CORRECTION_BATCHES``
    calibration batches, on float inputs) of the output error its int8 weight causes. The layer is linear in its
    input and in its weight, so that mean is the layer applied to the mean input and to (int8 weight - float
    weight): only the inputs' sums are kept while the data flows, and the weights' errors are applied at the end
    (whatever rounding chose them)."""

    def __init__(self, layers: list[Node]):
        self.layers = [n for n in layers if n.op in ("conv2d", "linear") and len(n.inputs) == 3]
        self.inputs = {n.inputs[0] for n in self.layers}
        self.sums: dict[Value, np.ndarray] = {}
        self.counts: dict[Value, int] = {}

    def observe(self, v: Value, x: np.ndarray, batch: int) -> None:
        if batch < BIAS_CORRECTION_BATCHES and v in self.inputs:  # one sample's worth of sums, whatever the batch
            self.sums[v] = self.sums.get(v, 0.0) + x.astype(np.float64).sum(axis=0, keepdims=True)
            self.counts[v] = self.counts.get(v, 0) + x.shape[0]

    def means(self, g: Graph, weights: dict, input_steps: dict) -> dict[str, np.ndarray]:
        """Output name -> the mean output error per channel of each layer with a constant bias, given its int8
        weight (``weights``: output name -> (levels, scales)) and, for a layer that reads its input in units of
        each channel's step (``input_steps``: layer -> steps), the steps its levels include."""
        out = {}
        for n in self.layers:
            v, name = n.inputs[0], n.outputs[0].name
            if not g.is_const(n.inputs[2]) or v not in self.sums:
                continue
            w = g.const(n.inputs[1])
            q, s = weights[name]
            steps = input_steps.get(n)
            if steps is None:
                delta = q.astype(np.float32) * s - w
            else:  # quantized as w * step (pixels in steps, or a channel's share): the error in x's units
                delta = (q.astype(np.float32) * s - times_input_steps(w, steps, n)) / input_shaped(steps, w, n)
            mean_x = (self.sums[v] / self.counts[v]).astype(np.float32)
            error = get_op(n.op).reference([mean_x, delta.astype(np.float32)], n.attrs)[0]
            out[name] = _channel_mean(error, n.op).astype(np.float32)
        return out


def _channel_mean(x: np.ndarray, op: str) -> np.ndarray:
    ch = 1 if op == "conv2d" else x.ndim - 1
    return x.astype(np.float64).mean(axis=tuple(i for i in range(x.ndim) if i != ch))
