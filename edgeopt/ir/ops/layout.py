"""Blocked activation layouts and the op that converts between them.

``NCHW<b>c`` stores an NCHW tensor as ``[N, C/b, H, W, b]``: ``b`` channels of one pixel are contiguous,
so a kernel that computes a vector of ``b`` channels loads and stores whole vectors. Ops that work on
blocked tensors say so with ``layout="NCHWc"`` (the block is the tensor's last dimension); every other
op sees plain NCHW, and ``layout_transform`` converts at the border.

    %xb: f32[1,2,8,8,8] = layout_transform(%x) {"src_layout": "NCHW", "dst_layout": "NCHW8c"}
"""

from __future__ import annotations

import re

import numpy as np

from ..registry import REQUIRED, OpDef, OpError, register
from ..types import TensorType

PLAIN, BLOCKED = "NCHW", "NCHWc"


def layout_block(layout: str) -> int:
    """The channel block of ``"NCHW<b>c"``; 0 for plain ``"NCHW"``."""
    if layout == PLAIN:
        return 0
    m = re.fullmatch(r"NCHW([1-9][0-9]*)c", layout)
    if not m:
        raise OpError(f"layout must be 'NCHW' or 'NCHW<b>c', got {layout!r}")
    return int(m.group(1))


def data_layout(attrs) -> str:
    """The ``layout`` attribute of a layout-aware op ("NCHW" or "NCHWc"), checked."""
    layout = attrs.get("layout", PLAIN)
    if layout not in (PLAIN, BLOCKED):
        raise OpError(f"layout must be 'NCHW' or 'NCHWc' (blocked, the block being the last dim), got {layout!r}")
    return layout


def block_nchw(x: np.ndarray, b: int) -> np.ndarray:
    """[N, C, H, W] -> [N, C/b, H, W, b]."""
    n, c, h, w = x.shape
    return np.ascontiguousarray(x.reshape(n, c // b, b, h, w).transpose(0, 1, 3, 4, 2))


def unblock_nchw(x: np.ndarray) -> np.ndarray:
    """[N, C/b, H, W, b] -> [N, C, H, W] (the inverse of ``block_nchw``)."""
    n, cb, h, w, b = x.shape
    return np.ascontiguousarray(x.transpose(0, 1, 4, 2, 3).reshape(n, cb * b, h, w))


def blocked_type(t: TensorType, b: int) -> TensorType:
    n, c, h, w = t.shape
    return TensorType((n, c // b, h, w, b), t.dtype)


def plain_type(t: TensorType) -> TensorType:
    n, cb, h, w, b = t.shape
    return TensorType((n, cb * b, h, w), t.dtype)


def _transform_infer(types, attrs):
    x = types[0]
    src, dst = layout_block(attrs["src_layout"]), layout_block(attrs["dst_layout"])
    if (src == 0) == (dst == 0):
        raise OpError("layout_transform converts between NCHW and NCHW<b>c (one of each)")
    if dst:
        if x.rank != 4 or x.shape[1] % dst:
            raise OpError(f"layout_transform: NCHW{dst}c needs a 4-D input with channels divisible by {dst}, "
                          f"got {list(x.shape)}")
        return [blocked_type(x, dst)]
    if x.rank != 5 or x.shape[4] != src:
        raise OpError(f"layout_transform: an NCHW{src}c input is [N, C/{src}, H, W, {src}], got {list(x.shape)}")
    return [plain_type(x)]


def _transform_ref(xs, attrs):
    dst = layout_block(attrs["dst_layout"])
    return [block_nchw(xs[0], dst) if dst else unblock_nchw(xs[0])]


register(OpDef("layout_transform", "injective", _transform_infer, _transform_ref,
               {"src_layout": REQUIRED, "dst_layout": REQUIRED}, (1, 1),
               doc="layout_transform(x){src_layout, dst_layout}: NCHW <-> NCHW<b>c ([N, C/b, H, W, b])"))
