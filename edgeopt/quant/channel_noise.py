"""Whether a conv or linear input's scale per channel pays: the rounding noise its readers' outputs get either way.

A step per input channel ``s[c]`` (instead of one step ``s`` for the tensor) rounds the small channels more finely.
A depthwise conv takes it at no cost. A dense conv (or a linear layer, as a 1x1 conv over its input's features)
reads the values in units of each channel's share of the largest step, ``r[c] = s[c] / max s``, with its weight's
input channels times ``r[c]`` before rounding (``quantize_static``): the weight's levels are then spent on ``w * r``,
so a channel with a small share gets a coarser weight in its own units (``sw[o] / r[c]``). Which wins depends on
the layer: on pretrained MobileNetV2 the activations' rounding is most of the error and scales per channel where
this model says so take the logits' 1 - cosine from 0.0140 to 0.0046; on EfficientNet-Lite0 the weights' is, and
per-channel inputs everywhere (no model) raised it from 0.0019 to 0.0025, where this model keeps it at 0.0019.

So each candidate is scored with the usual uniform-rounding model (a step ``d`` adds noise of variance ``d^2 / 12``),
summed over its quantized readers' outputs:

    activations:  sum_c  A[c] * step[c]^2 / 12          A[c] = sum over outputs and taps of w^2 (channel c's)
    weights:      sum_o sum_c  K * E[x_c^2] * (sw[o] / r[c])^2 / 12     (dense convs, linear layers; K taps; r = 1
                                                                        per tensor)

and gets a scale per channel where that total is at least ``MIN_GAIN`` below the per-tensor one. Left out: a
depthwise conv's own weight rounding (the same either way, so the margin is of a smaller total), the weights'
levels chosen by GPTQ (modelled as nearest, overstating what dense readers pay where GPTQ runs) and clipping (the
ranges' headroom and floor stand for it).
"""

from __future__ import annotations

import numpy as np

#: a scale per channel must cut the modelled noise by at least this share to be used
MIN_GAIN = 0.05


def rounding_noise(w: np.ndarray, depthwise: bool, mean_square: np.ndarray, steps: np.ndarray, qmax: int,
                   per_channel_weights: bool = True) -> float:
    """The modelled output noise power of a conv with float weight ``w`` (OIHW; [C, 1, KH, KW] when ``depthwise``)
    reading an input whose channel ``c`` has mean square ``mean_square[c]`` and is rounded to ``steps[c]``. A dense
    conv's weight is rounded to ``qmax`` levels after its input channels are scaled by ``steps / max(steps)``; a
    depthwise conv's weight does not change with the input's steps, so only the input's share is counted. A linear
    layer's weight ([out, in]) counts as a 1x1 conv's."""
    w = np.asarray(w, np.float64)
    w = w.reshape(w.shape + (1, 1)) if w.ndim == 2 else w
    steps = np.asarray(steps, np.float64)
    if depthwise:
        return float(np.sum((w ** 2).sum(axis=(1, 2, 3)) * steps ** 2) / 12)
    act = np.sum((w ** 2).sum(axis=(0, 2, 3)) * steps ** 2) / 12
    share = steps / steps.max()
    scaled = np.abs(w * share.reshape(1, -1, 1, 1))
    sw = (scaled.max(axis=(1, 2, 3)) if per_channel_weights else np.full(w.shape[0], scaled.max())) / qmax
    taps = w.shape[2] * w.shape[3]
    weights = np.sum((sw.reshape(-1, 1) / share.reshape(1, -1)) ** 2 * (taps * np.asarray(mean_square))) / 12
    return float(act + weights)


def channel_scales_pay(readers: list[tuple[np.ndarray, bool, int]], mean_square: np.ndarray,
                       channel_steps: np.ndarray, tensor_step: float, per_channel_weights: bool = True) -> bool:
    """Whether steps per channel (``channel_steps``) give the ``readers`` (weight, depthwise, qmax) at least
    ``MIN_GAIN`` less modelled noise than one step for the tensor (``tensor_step``)."""
    one = np.full_like(np.asarray(channel_steps, np.float64), tensor_step)
    per_tensor = sum(rounding_noise(w, dw, mean_square, one, q, per_channel_weights) for w, dw, q in readers)
    per_channel = sum(rounding_noise(w, dw, mean_square, channel_steps, q, per_channel_weights)
                      for w, dw, q in readers)
    return per_channel < (1 - MIN_GAIN) * per_tensor
