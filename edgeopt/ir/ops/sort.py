"""Ordering: ``argtopk``, the positions of the first k elements of each row in sorted order.

It is the one sorting primitive of the IR. The frontend writes ``topk``, ``sort``, ``argsort``, ``kthvalue``,
``median`` and ``msort`` with it: the values are a ``gather`` of the positions. Torch's order is kept exactly:
- equal elements stay in their order (a stable sort; ``-0.0`` equals ``0.0``);
- NaN counts as larger than every number, so NaNs come first in descending order and last in ascending order.
"""

from __future__ import annotations

import numpy as np

from ..registry import REQUIRED, OpDef, OpError, register
from ..types import DTYPES, TensorType


def _infer(types, attrs):
    (x,) = types
    if x.rank == 0:
        raise OpError("argtopk: needs at least one axis (a scalar is its own top 1: reshape it to [1])")
    n, k = x.shape[-1], attrs["k"]
    if not 0 <= k <= n:
        raise OpError(f"argtopk: k={k} outside [0, {n}] for a last axis of {n}")
    if attrs["dtype"] not in ("i64", "i32"):
        raise OpError(f"argtopk: positions are i64 or i32, not {attrs['dtype']}")
    return [TensorType((*x.shape[:-1], k), attrs["dtype"])]


def sort_order(x: np.ndarray, largest: bool) -> np.ndarray:
    """The stable sorting permutation of ``x``'s last axis, descending if ``largest``, NaN as the largest value."""
    if x.dtype == np.bool_:
        x = x.astype(np.int8)
    nan = np.isnan(x) if x.dtype.kind == "f" else np.zeros(x.shape, bool)
    key = np.where(nan, 0, x) + 0  # + 0 turns -0.0 into 0.0: the two are equal
    if largest:  # descending: NaN first, then the numbers from the largest (~ reverses an integer's order exactly)
        key, nan = (-key if key.dtype.kind == "f" else ~key), ~nan
    return np.lexsort((key, nan), axis=-1)  # lexsort is stable: the last key is the primary one


def _ref(xs, attrs):
    order = sort_order(xs[0], attrs["largest"])
    return [np.ascontiguousarray(order[..., :attrs["k"]]).astype(DTYPES[attrs["dtype"]])]


register(OpDef("argtopk", "opaque", _infer, _ref, {"k": REQUIRED, "largest": True, "dtype": "i64"}, (1, 1),
               doc="argtopk(x){k, largest, dtype}: the positions (i64, or i32) of the k first elements of x's last "
                   "axis when sorted, descending if largest (else ascending); stable (equal elements, -0.0 and 0.0 "
                   "too, in their order), NaN larger than every number"))
