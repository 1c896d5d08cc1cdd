"""Weight rounding that minds the layer's output: GPTQ (Frantar et al., 2022) on int8 grids.

Rounding each weight to its nearest int8 level minimizes the error of the weight, not of the layer's output
``y = W x``. The output error of a rounding ``dW`` is ``E[(dW x)^2] = dW H dW^T`` with ``H = E[x x^T]``, the second
moment of the inputs the layer sees (its im2col patches, for a conv). GPTQ rounds one input column at a time and
moves what that rounding got wrong onto the columns not rounded yet, weighted by the inverse of ``H``:
inputs that move together make up for each other. The grid (each output channel's scale) stays the max-based one
that nearest rounding uses; only which level each weight takes changes, so the kernels are unchanged.

``InputMoments`` gathers ``H`` for each layer from the calibration pass (sampled patch positions, the first
``BATCHES`` batches); ``round_to_grid`` then rounds a layer's weight. Dense convs and linear layers share one
``H`` per layer; a depthwise conv has one small ``H`` per channel (its k*k taps).

Measured on EfficientNet-Lite0's static int8 (``QuantConfig(weight_rounding="gptq")``): see docs/quantization.md.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ..ir import Node, Value

#: calibration batches H is gathered from, and patch positions sampled per batch and layer
BATCHES, POSITIONS = 16, 2048
#: added to H's diagonal, as a share of its mean: keeps the inverse stable when inputs are collinear or silent
DAMPING = 0.01
#: columns rounded between two updates of the remaining ones (GPTQ's lazy batches)
BLOCK = 128
#: layers with more inputs than this (a 512-channel 3x3 conv has 4608) keep the nearest levels: H is inputs^2
MAX_INPUTS = 8192


def layer_matrix(n: Node, w: np.ndarray) -> np.ndarray | None:
    """``n``'s weight as [out, in] (a dense conv: in = C*KH*KW; a depthwise conv: [C, KH*KW]); None if not handled
    (other grouped convs, and layers with more than ``MAX_INPUTS`` inputs: their H would be too big)."""
    m = None
    depthwise = n.op == "conv2d" and w.shape[1] == 1 and n.attrs["groups"] == w.shape[0]  # one channel per filter
    if n.op == "conv2d" and n.attrs["weight_layout"] == "OIHW" and (n.attrs["groups"] == 1 or depthwise):
        m = w.reshape(w.shape[0], -1)
    elif n.op == "linear" and n.attrs["weight_layout"] in ("oi", "io") and w.ndim == 2:
        m = w if n.attrs["weight_layout"] == "oi" else w.T
    return m if m is not None and m.shape[1] <= MAX_INPUTS else None


def from_matrix(n: Node, m: np.ndarray, shape: tuple) -> np.ndarray:
    """The inverse of ``layer_matrix``."""
    if n.op == "linear" and n.attrs["weight_layout"] == "io":
        m = m.T
    return m.reshape(shape)


class InputMoments:
    """``H = sum x x^T`` over the inputs of each layer (patches for a conv), on calibration data."""

    def __init__(self, layers: list[Node]):
        self.readers: dict[Value, list[Node]] = {}
        for n in layers:
            self.readers.setdefault(n.inputs[0], []).append(n)
        self.h: dict[Node, np.ndarray] = {}
        self.rng = np.random.default_rng(0)

    def observe(self, v: Value, x: np.ndarray, batch: int) -> None:
        if batch >= BATCHES:
            return
        for n in self.readers.get(v, ()):
            cols = _patches(n, x, self.rng) if n.op == "conv2d" else x.reshape(-1, x.shape[-1])
            cols = cols.astype(np.float64)
            if cols.ndim == 3:  # depthwise: [C, P, K] -> one K x K moment per channel
                h = np.einsum("cpk,cpl->ckl", cols, cols)
            else:
                h = cols.T @ cols
            self.h[n] = self.h.get(n, 0.0) + h


def _patches(n: Node, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Sampled im2col patches of conv ``n``'s input ``x`` [N, C, H, W] (``POSITIONS`` per batch, spread over its
    samples): [P, C*KH*KW], or [C, P, KH*KW] (depthwise)."""
    a = n.attrs
    t, left, b, r = a["padding"]
    kh, kw = n.inputs[1].type.shape[2:]
    (sh, sw), (dh, dw) = a["stride"], a["dilation"]
    x = np.pad(x, ((0, 0), (0, 0), (t, b), (left, r)))
    win = sliding_window_view(x, ((kh - 1) * dh + 1, (kw - 1) * dw + 1), axis=(2, 3))[:, :, ::sh, ::sw, ::dh, ::dw]
    n_, c, oh, ow = win.shape[:4]
    win = win.transpose(1, 0, 2, 3, 4, 5).reshape(c, n_ * oh * ow, kh * kw)  # [C, positions of every sample, K]
    pick = rng.choice(win.shape[1], min(POSITIONS, win.shape[1]), replace=False)
    win = win[:, pick]
    return win if a["groups"] > 1 else win.transpose(1, 0, 2).reshape(len(pick), c * kh * kw)


def round_to_grid(w: np.ndarray, h: np.ndarray, scale: np.ndarray, qmax: int = 127) -> np.ndarray:
    """int8 levels (within [-qmax, qmax]) of ``w`` [out, in] on the grid ``scale`` [out] chosen by GPTQ against input
    moments ``h`` ([in, in], or [out, in, in]: one per output channel)."""
    per_row = h.ndim == 3
    hs = h if per_row else h[None]
    hs = hs.copy()
    k = w.shape[1]
    dead = np.einsum("cii->ci", hs) <= 0  # an input that is always 0: its weight does not matter
    idx = np.arange(k)
    hs[:, idx, idx] = np.where(dead, 1.0, hs[:, idx, idx])
    hs[:, idx, idx] += DAMPING * np.maximum(hs[:, idx, idx].mean(-1, keepdims=True), 1e-12)
    # the upper Cholesky factor of H^-1 carries each column's update to the columns after it
    u = np.linalg.cholesky(np.linalg.inv(hs)).transpose(0, 2, 1)
    if not per_row:
        u = u[0]
    rest = w.astype(np.float64).copy()
    s = scale.astype(np.float64).reshape(-1)
    q = np.zeros(w.shape, np.int8)
    for b0 in range(0, k, BLOCK):
        b1 = min(b0 + BLOCK, k)
        errs = np.zeros((w.shape[0], b1 - b0))
        for i in range(b0, b1):
            level = np.clip(np.rint(rest[:, i] / s), -qmax, qmax)
            q[:, i] = level
            d = u[:, i, i] if per_row else u[i, i]
            err = (rest[:, i] - level * s) / d
            row = u[:, i, i + 1:b1] if per_row else u[i, i + 1:b1]
            rest[:, i + 1:b1] -= err[:, None] * row
            errs[:, i - b0] = err
        if b1 < k:
            rest[:, b1:] -= (np.einsum("oj,ojk->ok", errs, u[:, b0:b1, b1:]) if per_row
                             else errs @ u[b0:b1, b1:])
    return q
