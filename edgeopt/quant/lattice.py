"""Inputs that are 8-bit pixels: find the lattice their values lie on, so that quantizing them loses nothing.

A photo normalized as ``(k / 255 - mean) / std`` takes, in each channel c, only the values ``origin[c] + k * step[c]``
for integers k in 0..255 (``step = 1 / (255 std)``, ``origin = -mean / std``). A u8 grid fitted to the values'
min and max (what a calibrator does) puts those values half a step off its points, and 0 (the conv's zero padding)
must be a point of it: quantizing the image then costs accuracy (EfficientNet-Lite0: 3.75 points of top-1
agreement). On the lattice itself, ``k = (x - origin) / step`` is the raw pixel: exact.

``pixel_lattice(arrays)`` finds ``step`` and ``origin`` per channel (axis 1) from calibration arrays, or returns
None when the values are not on such a lattice (more than 256 distinct values in a channel, spacings that are not
whole multiples of one step, a span over 255 steps) or show too little of one to trust (fewer than 64 distinct
values or a span under 128 steps: a mask, data rounded to a coarse grid), or when 0 would fall off the grid (the
conv's zero padding must be a level). When the data do not show k = 0 or k = 255, the origin is placed so that
the values seen sit in the middle of the 256 levels, as far as 0 stays on the grid.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

LEVELS = 256
#: how far (in steps) a value may sit from its lattice point: float32 rounding of (k / 255 - mean) / std
TOLERANCE = 1e-2
#: evidence of 8-bit pixels in each channel: distinct values seen, and levels between the lowest and the highest
MIN_DISTINCT, MIN_SPAN = 64, 128


@dataclass(frozen=True)
class Lattice:
    """Per channel: the value of level 0 (``origin``) and the distance between levels (``step``), f32 [C]."""

    origin: np.ndarray
    step: np.ndarray

    def levels(self, x: np.ndarray) -> np.ndarray:
        """The level of each element of ``x`` (channels on axis 1), as floats."""
        shape = (1, -1) + (1,) * (x.ndim - 2)
        return (x - self.origin.reshape(shape)) / self.step.reshape(shape)


def pixel_lattice(arrays: Sequence[np.ndarray]) -> Lattice | None:
    """The per-channel lattice of ``arrays`` (each [N, C, ...], C on axis 1), or None if they are not on one."""
    if not arrays or any(a.ndim < 2 or not np.issubdtype(a.dtype, np.floating) for a in arrays):
        return None
    channels = arrays[0].shape[1]
    origins, steps = [], []
    for c in range(channels):
        found = _channel_lattice(np.concatenate([np.moveaxis(a, 1, 0)[c].reshape(-1) for a in arrays]))
        if found is None:
            return None
        origins.append(found[0])
        steps.append(found[1])
    return Lattice(np.asarray(origins, np.float32), np.asarray(steps, np.float32))


def _channel_lattice(x: np.ndarray) -> tuple[float, float] | None:
    if not np.isfinite(x).all():
        return None
    values = np.unique(x.astype(np.float64))
    if len(values) < 2 or len(values) > LEVELS:
        return None
    step = float(np.diff(values).min())
    if step <= 0:
        return None
    step = float(values[-1] - values[0]) / max(1.0, np.rint((values[-1] - values[0]) / step))  # less rounding
    k = (values - values[0]) / step
    if np.abs(k - np.rint(k)).max() > TOLERANCE or k[-1] > LEVELS - 1 + TOLERANCE:
        return None
    span = int(np.rint(k[-1]))
    if len(values) < MIN_DISTINCT or span < MIN_SPAN:  # too little evidence of 8-bit pixels (a mask, rounded data)
        return None
    zero = -float(values[0]) / step  # the level of x = 0 counted from the lowest value seen: padding must be a level
    lowest, highest = max(0.0, -zero), min(float(LEVELS - 1 - span), LEVELS - 1 - zero)
    if lowest > highest + TOLERANCE:
        return None
    # unseen levels: as many below the values seen as above them, as far as 0 stays on the grid
    below = int(np.clip((LEVELS - 1 - span) // 2, np.ceil(lowest - TOLERANCE), np.floor(highest + TOLERANCE)))
    return float(values[0] - below * step), step
