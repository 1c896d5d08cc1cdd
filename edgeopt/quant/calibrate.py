"""Calibration: statistics of activations on real data, and the int8 ranges the calibrators pick from them.

``observe_ranges(graph, values, batches)`` runs the reference interpreter on each calibration batch and keeps,
for every value asked for, its exact min and max and a weighted sample of its elements (``Stats``: the
largest 0.1% exactly, 4096 others at random per batch: enough for a 99.99th percentile or a 2048-bin histogram,
small enough for 64 full-size images of a CNN). ``choose_range`` turns one value's statistics into the (lo, hi)
that its quantization covers, by the config's calibrator:

    minmax      (min, max)
    percentile  |x| clipped at its ``percentile``-th percentile
    entropy     |x| clipped where the KL divergence between the 2048-bin histogram and its 128-level
                quantization is least (TensorRT's calibrator)
    mse         |x| clipped where the mean squared error of quantizing the sample is least

A clip applies to each side of the range that has data (a post-ReLU tensor is clipped only at the top).

For a rank-4 value the statistics also keep each channel's (axis 1) min and max, and for a rank-2 or rank-3 value
each feature's (the last axis: what a linear layer sums over); ``channel_ranges`` turns them into ranges per channel
within the tensor's chosen range (static int8's conv and linear inputs: ``QuantConfig.activation_scales``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import numpy as np

from ..ir import Graph, Value, interpret
from ..progress import advance, expect

SAMPLES_PER_BATCH = 4096
#: a per-channel activation range (``channel_ranges``) covers at least this share of its tensor's range, and its
#: channel's calibrated range times this headroom (up to the tensor's)
CHANNEL_RANGE_FLOOR, CHANNEL_HEADROOM = 0.5, 1.25
#: the floor of a linear layer's input features (a transformer's: a LayerNorm keeps each feature's range steady):
#: all-MiniLM-L6-v2 static int8, embedding cosine over 500 sentences 0.98977 with one scale per activation, 0.99654
#: with a floor of 0.5, 0.99793 with 0.25 (a fake-quantized copy: 0.99789 with 0.125)
FEATURE_RANGE_FLOOR = 0.25
#: a range per channel only for channels seen this many times in the calibration data (64 images give a 7x7 map's
#: channels 3136 values), and at more than one position per sample: a pooled feature vector's features, one value
#: per image, keep one scale (pretrained EfficientNet-Lite0's classifier input with scales per feature: logits
#: 1 - cosine 0.00188 -> 0.00200 with a floor of 0.5, 0.00269 with 0.25, 800 crops)
MIN_CHANNEL_SAMPLES = 256


def channel_axis(rank: int) -> int | None:
    """The axis a value of this rank keeps statistics per channel along: 1 (NCHW) for rank 4, the last (features)
    for rank 2 and 3, else None."""
    return {4: 1, 3: 2, 2: 1}.get(rank)


class Stats:
    """One value's calibration statistics: exact min and max, and a weighted sample of its elements.

    From each batch the sample keeps the largest 0.1% of magnitudes exactly (weight 1: they decide what clipping
    costs) and a uniform random draw of the rest (each element standing for the ones not drawn)."""

    def __init__(self):
        self.lo, self.hi = np.inf, -np.inf
        self.channel_lo: np.ndarray | None = None  # min, max and mean square of each channel (``channel_axis``)
        self.channel_hi: np.ndarray | None = None
        self._channel_sq: np.ndarray | None = None
        self._channel_count = 0
        self._channel_positions = 0  # the fewest values of a channel in one sample (axis 0) of any batch
        self._batches = 0
        self.values: list[np.ndarray] = []
        self.weights: list[np.ndarray] = []

    def add(self, x: np.ndarray, rng: np.random.Generator) -> None:
        x = np.asarray(x, np.float32)
        finite = np.isfinite(x)
        self._channels(x, bool(finite.all()))
        x = x.reshape(-1)[finite.reshape(-1)]
        if not x.size:
            return
        self.lo, self.hi = min(self.lo, float(x.min())), max(self.hi, float(x.max()))
        if x.size <= SAMPLES_PER_BATCH:
            self.values.append(x)
            self.weights.append(np.ones(x.size))
            return
        k = max(1, x.size // 1000)
        order = np.argpartition(np.abs(x), x.size - k)
        tail, rest = x[order[x.size - k:]], x[order[:x.size - k]]
        drawn = rng.choice(rest, min(SAMPLES_PER_BATCH, rest.size), replace=False)
        self.values += [tail, drawn]
        self.weights += [np.ones(k), np.full(drawn.size, rest.size / drawn.size)]

    def _channels(self, x: np.ndarray, finite: bool) -> None:
        """Each channel's min, max and sum of squares, kept while every batch has had a rank with a ``channel_axis``,
        been finite (``finite``) and had the same channels."""
        first, self._batches = self._batches == 0, self._batches + 1
        axis = channel_axis(x.ndim)
        if axis is None or not x.size or not finite or (not first and self.channel_lo is None) \
                or (not first and x.shape[axis] != self.channel_lo.size):
            self.channel_lo = self.channel_hi = None
            return
        others = tuple(i for i in range(x.ndim) if i != axis)
        lo, hi = x.min(axis=others), x.max(axis=others)
        dims = "nchw"[:x.ndim]
        sq = np.einsum(f"{dims},{dims}->{dims[axis]}", x, x, dtype=np.float64)
        if first:
            self.channel_lo, self.channel_hi, self._channel_sq = lo, hi, sq
        else:
            self.channel_lo, self.channel_hi = np.minimum(self.channel_lo, lo), np.maximum(self.channel_hi, hi)
            self._channel_sq = self._channel_sq + sq
        self._channel_count += x.size // x.shape[axis]
        positions = x.size // (x.shape[0] * x.shape[axis])
        self._channel_positions = positions if first else min(self._channel_positions, positions)

    @property
    def channel_samples(self) -> int:
        """How many values of each channel the per-channel statistics have seen."""
        return 0 if self.channel_lo is None else self._channel_count

    @property
    def channel_positions(self) -> int:
        """How many values of each channel one sample has (a map's pixels, a sequence's tokens; 1 for a vector)."""
        return 0 if self.channel_lo is None else self._channel_positions

    @property
    def channel_mean_square(self) -> np.ndarray | None:
        """Each channel's mean square over the calibration data (None without per-channel statistics)."""
        return None if self.channel_lo is None else self._channel_sq / max(self._channel_count, 1)

    def sample(self) -> tuple[np.ndarray, np.ndarray]:
        """(values, weights) of the sample."""
        if not self.values:
            return np.zeros(1, np.float32), np.ones(1)
        return np.concatenate(self.values), np.concatenate(self.weights)


def observe_ranges(g: Graph, values: Sequence[Value], batches: Iterable[Sequence[np.ndarray]],
                   also: Callable[[Value, np.ndarray, int], None] | None = None,
                   outputs: list | None = None) -> dict[Value, Stats]:
    """Run ``g`` on every calibration batch (a list of inputs in graph order); statistics of ``values``. In the same
    pass ``also(value, array, batch index)`` sees every value, and ``outputs`` (a list) gets each batch's outputs."""
    want = {v: Stats() for v in values}
    rng = np.random.default_rng(0)
    if hasattr(batches, "__len__"):
        expect(len(batches), "calibration")
    count = 0

    for count, batch in enumerate(batches, 1):
        def observe(v, x, i=count - 1):
            if v in want:
                want[v].add(x, rng)
            if also is not None:
                also(v, x, i)

        result = interpret(g, [np.asarray(a) for a in batch], observe=observe)
        if outputs is not None:
            outputs.append(result)
        advance(f"calibration batch {count}")
    if not count:
        from .config import QuantizationError

        raise QuantizationError("calibration_data is empty: static int8 needs a few real input batches")
    return want


def choose_range(st: Stats, calibrator: str, percentile: float = 99.99, levels: int = 256) -> tuple[float, float]:
    """The (lo, hi) an activation's quantization covers; always contains 0 (so 0 is exact)."""
    lo, hi = min(st.lo, 0.0), max(st.hi, 0.0)
    if calibrator == "minmax" or hi - lo <= 0:
        return lo, hi
    values, weights = st.sample()
    x = np.abs(values.astype(np.float64))
    amax = max(-lo, hi)
    if calibrator == "percentile":
        order = np.argsort(x)
        cum = np.cumsum(weights[order])
        t = float(x[order][min(np.searchsorted(cum, cum[-1] * percentile / 100.0), x.size - 1)])
    elif calibrator == "entropy":
        t = _entropy_threshold(x, weights, amax, levels // 2 if lo < 0 else levels)
    elif calibrator == "mse":
        t = _mse_threshold(values, weights, lo, hi, levels)
    else:
        raise ValueError(f"unknown calibrator {calibrator!r}")
    t = max(t, 1e-8)
    return max(lo, -t), min(hi, t)


def channel_ranges(st: Stats, lo: float, hi: float, floor: float = CHANNEL_RANGE_FLOOR,
                   headroom: float = CHANNEL_HEADROOM) -> tuple[np.ndarray, np.ndarray]:
    """Each channel's (lo, hi) within the tensor's chosen range (``lo``, ``hi``: ``choose_range``): the channel's own
    min and max times ``headroom``, but at least ``floor`` of the tensor's range on either side. A channel small on
    the calibration data gets up to 1 / floor finer levels; the headroom and the floor keep it from clipping on
    inputs where it is larger. Compiled pretrained EfficientNet-Lite0 (800 photo crops, static int8, minmax): logits
    1 - cosine 0.00190 with one scale per tensor, 0.00200 with no headroom, 0.00188 with 1.25; MobileNetV2: 0.0140,
    0.0043 and 0.0046."""
    if st.channel_lo is None:
        raise ValueError("no per-channel statistics: the value was not of rank 2, 3 or 4 with finite values in every "
                         "batch")
    c_lo = np.maximum(np.minimum(st.channel_lo.astype(np.float64) * headroom, lo * floor), lo)
    c_hi = np.minimum(np.maximum(st.channel_hi.astype(np.float64) * headroom, hi * floor), hi)
    return np.minimum(c_lo, 0.0), np.maximum(c_hi, 0.0)


def affine_params(lo: float, hi: float, dtype: str = "u8") -> tuple[float, int]:
    """(scale, zero point) mapping [lo, hi] (which contains 0) onto the dtype's range."""
    qmin, qmax = (0, 255) if dtype == "u8" else (-128, 127)
    scale = max((hi - lo) / (qmax - qmin), 1e-12)
    zp = int(np.clip(round(qmin - lo / scale), qmin, qmax))
    return float(np.float32(scale)), zp


def _mse_threshold(x: np.ndarray, w: np.ndarray, lo: float, hi: float, levels: int) -> float:
    """The clip of |x| (searched on a grid from 5% to 100% of the range) with the least squared error."""
    x = x.astype(np.float64)
    amax, best, best_t = max(-lo, hi), np.inf, max(-lo, hi)
    for frac in np.linspace(0.05, 1.0, 96):
        t = amax * frac
        a, b = max(lo, -t), min(hi, t)
        s = (b - a) / (levels - 1)
        q = np.clip(np.rint((x - a) / s), 0, levels - 1) * s + a
        err = float(np.average((q - x) ** 2, weights=w))
        if err < best:
            best, best_t = err, t
    return best_t


def _entropy_threshold(x: np.ndarray, w: np.ndarray, amax: float, levels: int, bins: int = 2048) -> float:
    """TensorRT's KL calibration on the histogram of |x| over [0, amax]."""
    hist, edges = np.histogram(x, bins=bins, range=(0.0, amax), weights=w)
    hist = hist.astype(np.float64)
    hist[0] = 0.0  # exact zeros (ReLU's clipped half) would dominate both distributions and hide the tail
    best, best_i = np.inf, bins
    for i in range(levels, bins + 1, 16):
        p = hist[:i].copy()
        p[-1] += hist[i:].sum()  # the clipped tail lands in the last bin
        nz = p > 0
        # merge the i bins into `levels` levels, spread each level's mass over its non-empty bins
        idx = (np.arange(i) * levels) // i
        mass = np.bincount(idx, weights=hist[:i], minlength=levels)
        count = np.bincount(idx, weights=(hist[:i] > 0).astype(np.float64), minlength=levels)
        q = np.where(hist[:i] > 0, mass[idx] / np.maximum(count[idx], 1), 0.0)
        ps, qs = p.sum(), q.sum()
        if ps <= 0 or qs <= 0:
            continue
        pn, qn = p / ps, q / qs
        ok = nz & (qn > 0)
        kl = float(np.sum(pn[ok] * np.log(pn[ok] / qn[ok]))) + (1.0 if np.any(nz & (qn <= 0)) else 0.0)
        if kl < best:
            best, best_i = kl, i
    return float(edges[min(best_i, bins)])
