"""Quantization ops: ``quantize`` (float -> int8/uint8) and ``dequantize`` (int8/uint8/packed int4 -> float).

Affine quantization, ``real = scale * (q - zero_point)``. ``scale`` (f32) and ``zero_point`` (i32) are inputs,
not attributes, and broadcast against the tensor like numpy (a missing zero point is 0; a stored one may be u8 or
i8 to save space):

    per tensor          scale f32[]                    (usually a scalar constant: an immediate in the kernel)
    per output channel  scale f32[N,1] for a [N,K] weight, f32[N/v,1,v] for one packed in panels [N/v,K,v]
    per row, dynamic    scale f32[M,1], computed at run time by other ops (``int8-dynamic``)
    group-wise          ``group_size`` g > 0: along ``group_axis`` element k takes scale row k // g, so
                        a [N,K] weight with groups along K has scale f32[N,K/g] (int4 weights)

``dequantize`` also reads the i32 sums of an integer conv / linear (u8 x i8): with scale = input scale x weight
scale per channel and zero point = input zero point x the channel's weight sum it requantizes them to float.

``bits=4`` (dequantize only) reads two 4-bit values per byte of a u8 tensor, packed along the group axis (the
last axis without groups), low nibble first: that logical dimension is twice the stored one. Packing along the axis
a matrix product sums over keeps a vector of outputs' nibbles in one contiguous row of bytes, shifted alike. Values
are unsigned nibbles 0..15 read with their zero point (8 for symmetric int4).

``packed_axis`` (dequantize only; None by default) reads its 8-bit values from **32-bit words**, for targets with
no 8-bit integers (Vulkan's WGSL): ``q`` is i32 and holds four bytes of a ``packed_dtype`` (i8 or u8) tensor per
element along ``packed_axis`` (counted from the end, so a ``take`` of rows keeps it), low byte first: that
dimension of the byte tensor is four times ``q``'s. The bytes are then read as above (``bits=4``: two nibbles
each). A weight so stored is as small as an ``i8`` one, where widening each value to an i32 made it as big as f32.

``dequantize`` computes in f32 and gives ``dtype``: f32, or f16 in a model that computes in f16 (``to_fp16``).

``dequantize``'s third input may instead be a f32 **minimum**: ``real = q * scale + minimum`` (llama.cpp's Q4_1
form; weight-only int4 and per-group int8 use it, so each group's range is exact and zero need not be in it).

``requantize(acc, multiplier, offset, [zero_point])`` is an integer kernel's epilogue in one op: ``clamp(rint((acc -
zero_point) * multiplier + offset), min, max)`` from i32 sums to ``dtype``; ``fold_requantize`` makes it from
dequantize -> bias -> activation -> quantize. The i32 zero point is subtracted exactly, before the float product
(folded into ``offset`` it would be a large float cancelling a large product).
``multiplier`` and ``offset`` are f32 and broadcast like numpy; ``min``/``max`` (in ``dtype``'s range)
hold a folded ReLU / clamp. ``scale`` and ``zero_point`` say what the output's values mean (real = scale * (q -
zero_point)) for tools that read them back: one number each, or one per channel (lists in channel order: a depthwise
conv's input); they take no part in the computation.

``quantize`` is ``saturate(rint(x * (1 / scale)) + zero_point)``, ties to even, with ``1 / scale`` rounded to f32:
PyTorch's ``fake_quantize_per_tensor_affine`` / ``_per_channel_affine`` (what quantization-aware training rounds
with) to the bit. ONNX's QuantizeLinear divides instead; the two differ only where ``x / scale`` lies within an
ulp of a half-integer. (``torch.quantize_per_tensor`` rounds ``x * (1 / scale) + zero_point``, which also differs at
ties when the zero point is odd.) A multiply, not a division, is also what a kernel wants: a division per vector
costs several times a multiply.
Both ops are elementwise: fusion passes fold them into the kernels around them (a weight's dequantize into
the matrix product that reads it, an activation's quantize into the epilogue of the kernel that makes it).
"""

from __future__ import annotations

import numpy as np

from ...ir_dtypes import NP_DTYPES
from ..registry import OpDef, OpError, register
from ..types import TensorType
from ._common import norm_axis

QRANGE = {"i8": (-128, 127), "u8": (0, 255)}


def scale_shape(out_shape: tuple[int, ...], attrs) -> tuple[int, ...]:
    """The shape the scale and zero point broadcast against: ``out_shape`` with the group axis in groups."""
    g = attrs.get("group_size", 0)
    if not g:
        return tuple(out_shape)
    ax = norm_axis(attrs["group_axis"], len(out_shape))
    if out_shape[ax] % g:
        raise OpError(f"group_size {g} does not divide dimension {ax} ({out_shape[ax]})")
    return tuple(d // g if i == ax else d for i, d in enumerate(out_shape))


def _check_params(op: str, types, out_shape, attrs) -> None:
    grid = scale_shape(out_shape, attrs)
    scale, zp = types[1], types[2] if len(types) == 3 else None
    if scale.dtype != "f32":
        raise OpError(f"{op}: scale must be f32, got {scale.dtype}")
    if zp is not None and zp.dtype not in ("i32", "u8", "i8") and not (op == "dequantize" and zp.dtype == "f32"):
        raise OpError(f"{op}: zero_point must be i32, u8 or i8 (or, for dequantize, a f32 minimum), got {zp.dtype}")
    for name, t in (("scale", scale), ("zero_point", zp)):
        if t is None:
            continue
        if t.rank > len(grid) or any(d not in (1, g) for d, g in zip(t.shape[::-1], grid[::-1])):
            raise OpError(f"{op}: {name} shape {list(t.shape)} does not broadcast to {list(grid)}")


def expand_params(p: np.ndarray, out_shape, attrs) -> np.ndarray:
    """A scale or zero point broadcast to the full ``out_shape`` (groups repeated ``group_size`` times)."""
    grid = scale_shape(out_shape, attrs)
    p = np.broadcast_to(p, grid)
    g = attrs.get("group_size", 0)
    if g:
        p = np.repeat(p, g, axis=norm_axis(attrs["group_axis"], len(out_shape)))
    return p


def _quantize_infer(types, attrs):
    x = types[0]
    if x.dtype not in ("f32", "f16"):
        raise OpError(f"quantize: input must be float, got {x.dtype}")
    if attrs["dtype"] not in QRANGE:
        raise OpError(f"quantize: dtype must be one of {sorted(QRANGE)}, got {attrs['dtype']!r}")
    if attrs.get("storage") not in (None, attrs["dtype"], "i32"):
        raise OpError(f"quantize: storage must be its dtype or i32, got {attrs['storage']!r}")
    _check_params("quantize", types, x.shape, attrs)
    return [TensorType(x.shape, attrs.get("storage") or attrs["dtype"])]


def _quantize_ref(xs, attrs):
    x = xs[0].astype(np.float32)
    scale = expand_params(xs[1], x.shape, attrs)
    zp = expand_params(xs[2], x.shape, attrs) if len(xs) == 3 else 0
    lo, hi = QRANGE[attrs["dtype"]]
    q = np.clip(np.rint(x * (np.float32(1) / scale.astype(np.float32))) + zp, lo, hi)
    return [q.astype(NP_DTYPES[attrs.get("storage") or attrs["dtype"]])]


register(OpDef("quantize", "elementwise", _quantize_infer, _quantize_ref,
               {"dtype": "u8", "group_size": 0, "group_axis": -1, "storage": None}, (2, 3),
               doc="quantize(x, scale, [zero_point]): clamp(rint(x * (1 / scale)) + zero_point) to the range of "
                   "``dtype`` (i8/u8), held in ``storage`` (default: ``dtype``; i32 on targets without 8-bit "
                   "integers)"))


def _requantize_infer(types, attrs):
    acc = types[0]
    if acc.dtype != "i32":
        raise OpError(f"requantize: needs i32 sums, got {acc.dtype}")
    if attrs["dtype"] not in QRANGE:
        raise OpError(f"requantize: dtype must be one of {sorted(QRANGE)}, got {attrs['dtype']!r}")
    if attrs.get("storage") not in (None, attrs["dtype"], "i32"):
        raise OpError(f"requantize: storage must be its dtype or i32, got {attrs['storage']!r}")
    lo, hi = QRANGE[attrs["dtype"]]
    if not lo <= attrs["min"] <= attrs["max"] <= hi:
        raise OpError(f"requantize: needs {lo} <= min <= max <= {hi}, got min={attrs['min']} max={attrs['max']}")
    for name, t, dtype in zip(("multiplier", "offset", "zero_point"), types[1:], ("f32", "f32", "i32")):
        if t.dtype != dtype:
            raise OpError(f"requantize: {name} must be {dtype}, got {t.dtype}")
        if t.rank > acc.rank or any(d not in (1, a) for d, a in zip(t.shape[::-1], acc.shape[::-1])):
            raise OpError(f"requantize: {name} shape {list(t.shape)} does not broadcast to {list(acc.shape)}")
    return [TensorType(acc.shape, attrs.get("storage") or attrs["dtype"])]


def fused_multiply_add(a, b, c) -> np.ndarray:
    """``a * b + c`` in float32 with one rounding, as the compiled kernels' fused multiply-add computes it: the
    product of two float32 values (or an int32 below 2**29 and a float32) is exact in float64, and the sum is rounded
    once to float64, then to float32 (the two roundings differ from one only on float32 ties, which a float64 sum
    almost never lands on)."""
    return (np.asarray(a, np.float64) * np.asarray(b, np.float32) + np.asarray(c, np.float32)).astype(np.float32)


def _requantize_ref(xs, attrs):
    acc, mult, off = xs[:3]
    a = (acc.astype(np.int32) - xs[3]) if len(xs) == 4 else acc
    y = np.rint(fused_multiply_add(a, mult, off))
    return [np.clip(y, attrs["min"], attrs["max"]).astype(NP_DTYPES[attrs.get("storage") or attrs["dtype"]])]


register(OpDef("requantize", "elementwise", _requantize_infer, _requantize_ref,
               {"dtype": "u8", "min": 0, "max": 255, "scale": 1.0, "zero_point": 0, "storage": None}, (3, 4),
               doc="requantize(acc, multiplier, offset, [zero_point]): clamp(rint((acc - zero_point) * multiplier + "
                   "offset), min, max) from i32 sums to ``dtype`` (an integer kernel's epilogue; ``scale`` / "
                   "``zero_point`` describe the output for tools); the multiply-add is rounded once to float32, as "
                   "the kernels' fused multiply-add computes it"))


def pack_axis(attrs, rank: int) -> int:
    """The axis a packed int4 tensor holds two values a byte along: the group axis, or the last one."""
    return norm_axis(attrs.get("group_axis", -1) if attrs.get("group_size") else -1, rank)


def one_value_per_element(attrs) -> bool:
    """Whether a ``dequantize`` reads one 8-bit value per element with one scale per tensor or channel: no int4
    nibbles, no groups, no words (``packed_axis``). Only such values go into an integer kernel's sums."""
    return attrs["bits"] == 8 and not attrs["group_size"] and attrs.get("packed_axis") is None


def stored_shape(q: TensorType, attrs) -> tuple[int, ...]:
    """The shape of the byte tensor ``q`` holds: ``q``'s own, or with ``packed_axis`` four times longer."""
    if attrs.get("packed_axis") is None:
        return q.shape
    ax = norm_axis(attrs["packed_axis"], q.rank)
    return tuple(4 * d if i == ax else d for i, d in enumerate(q.shape))


def logical_shape(q: TensorType, attrs) -> tuple[int, ...]:
    shape = stored_shape(q, attrs)
    if attrs["bits"] == 8:
        return shape
    if not q.rank:
        raise OpError("dequantize: packed int4 needs rank >= 1")
    ax = pack_axis(attrs, q.rank)
    return tuple(2 * d if i == ax else d for i, d in enumerate(shape))


def unpack_int4(q: np.ndarray, axis: int = -1) -> np.ndarray:
    """u8 [..., K/2, ...] -> u8 nibbles [..., K, ...] along ``axis`` (low nibble first)."""
    q = np.moveaxis(q, axis, -1)
    out = np.empty(q.shape[:-1] + (2 * q.shape[-1],), np.uint8)
    out[..., 0::2], out[..., 1::2] = q & 15, q >> 4
    return np.moveaxis(out, -1, axis)


def pack_int4(nibbles: np.ndarray, axis: int = -1) -> np.ndarray:
    """u8 nibbles 0..15 (an even count along ``axis``) -> two a byte (the inverse of ``unpack_int4``)."""
    n = np.moveaxis(nibbles.astype(np.uint8), axis, -1)
    return np.ascontiguousarray(np.moveaxis(n[..., 0::2] | (n[..., 1::2] << 4), -1, axis))


def pack_words(values: np.ndarray, axis: int = -1) -> np.ndarray:
    """An i8 / u8 tensor (a multiple of 4 along ``axis``) -> i32 words holding four values each along ``axis``,
    low byte first (the inverse of ``unpack_words``)."""
    v = np.ascontiguousarray(np.moveaxis(values, axis, -1))
    if v.dtype not in (np.int8, np.uint8) or v.ndim == 0 or v.shape[-1] % 4:
        raise ValueError(f"pack_words needs i8/u8 values, a multiple of 4 along axis {axis}; got {v.dtype}{v.shape}")
    return np.ascontiguousarray(np.moveaxis(v.view("<i4").astype(np.int32), -1, axis))


def unpack_words(words: np.ndarray, axis: int, dtype: str) -> np.ndarray:
    """i32 words [..., K/4, ...] -> the ``dtype`` (i8/u8) values [..., K, ...] they hold along ``axis``."""
    w = np.ascontiguousarray(np.moveaxis(words, axis, -1), "<i4")
    return np.moveaxis(w.view(NP_DTYPES[dtype]), -1, axis)


def _dequantize_infer(types, attrs):
    q = types[0]
    if attrs["bits"] not in (4, 8):
        raise OpError(f"dequantize: bits must be 8 or 4, got {attrs['bits']}")
    if attrs.get("packed_axis") is not None:
        if q.dtype != "i32" or not q.rank or attrs.get("packed_dtype") not in QRANGE \
                or (attrs["bits"] == 4 and attrs["packed_dtype"] != "u8"):
            raise OpError(f"dequantize: packed_axis needs i32 words of i8 / u8 values (u8 for bits=4) and rank >= "
                          f"1, got {q} with packed_dtype={attrs.get('packed_dtype')!r}")
        norm_axis(attrs["packed_axis"], q.rank)
    if q.dtype not in (*QRANGE, "i32") or (attrs["bits"] == 4 and q.dtype not in ("u8", "i32")):
        raise OpError(f"dequantize: needs an {'u8 (packed int4)' if attrs['bits'] == 4 else 'i8, u8 or i32'} "
                      f"input, got {q.dtype}")
    if attrs["dtype"] not in ("f32", "f16"):
        raise OpError(f"dequantize: dtype must be f32 or f16, got {attrs['dtype']!r}")
    shape = logical_shape(q, attrs)
    _check_params("dequantize", types, shape, attrs)
    return [TensorType(shape, attrs["dtype"])]


def _dequantize_ref(xs, attrs):
    q = xs[0]
    if attrs.get("packed_axis") is not None:
        q = unpack_words(q, attrs["packed_axis"], attrs["packed_dtype"])
    q = unpack_int4(q, pack_axis(attrs, q.ndim)) if attrs["bits"] == 4 else q
    scale = expand_params(xs[1], q.shape, attrs)
    zp = expand_params(xs[2], q.shape, attrs) if len(xs) == 3 else 0
    out = NP_DTYPES[attrs.get("dtype", "f32")]
    if len(xs) == 3 and xs[2].dtype == np.float32:  # a minimum: q * scale + min
        return [(q.astype(np.float32) * scale.astype(np.float32) + zp).astype(out)]
    return [((q.astype(np.int32) - zp).astype(np.float32) * scale.astype(np.float32)).astype(out)]


register(OpDef("dequantize", "elementwise", _dequantize_infer, _dequantize_ref,
               {"bits": 8, "group_size": 0, "group_axis": -1, "packed_axis": None, "packed_dtype": "i8",
                "dtype": "f32"}, (2, 3),
               doc="dequantize(q, scale, [zero_point]): (q - zero_point) * scale, or q * scale + minimum when the "
                   "third input is f32, computed in f32 and given as ``dtype`` (f32, or f16 in an fp16 model); "
                   "bits=4 reads packed nibbles; packed_axis reads the 8-bit values (``packed_dtype``) four to an "
                   "i32 word along that axis"))
