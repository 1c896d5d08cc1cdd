"""TE rules for quantize and dequantize (semantics in ``edgeopt/ir/ops/quant.py``)."""

from __future__ import annotations

import tvm
from tvm import te

from ...ir.ops.quant import QRANGE, pack_axis
from . import rule
from ._te import const, round_half_even, tvm_dtype


def _param_index(p: te.Tensor, idx, attrs) -> list:
    """Index into a broadcast scale / zero point for output index ``idx`` (group axis divided by group_size)."""
    rank, r = len(idx), len(p.shape)
    g, ax = attrs.get("group_size", 0), attrs.get("group_axis", -1) % max(len(idx), 1)
    out = []
    for i in range(r):
        j = rank - r + i
        if int(p.shape[i]) == 1:
            out.append(0)
        else:
            out.append(idx[j] // g if g and j == ax else idx[j])
    return out


def _param(p, idx, attrs, dtype):
    return p(*_param_index(p, idx, attrs)).astype(dtype)


@rule("quantize")
def quantize(ins, attrs, out, op):
    x, scale = ins[0], ins[1]
    zp = ins[2] if len(ins) == 3 else None
    lo, hi = QRANGE[attrs["dtype"]]
    dt = tvm_dtype(attrs.get("storage") or attrs["dtype"])

    def body(*i):
        # times the reciprocal, not divided: PyTorch's rounding (and one multiply; LLVM hoists the reciprocal of a
        # scale that is the same along the inner loop, where a division would cost a vdivps per vector)
        inverse = const(1.0, "float32") / _param(scale, i, attrs, "float32")
        v = round_half_even(x(*i).astype("float32") * inverse)
        if zp is not None:
            v = v + _param(zp, i, attrs, "float32")
        return te.min(te.max(v, const(lo, "float32")), const(hi, "float32")).astype(dt)

    return te.compute(tuple(out.shape), body, name="quantize")


@rule("requantize")
def requantize(ins, attrs, out, op):
    acc, mult, off = ins[:3]
    zp = ins[3] if len(ins) == 4 else None
    dt = tvm_dtype(attrs.get("storage") or attrs["dtype"])

    def body(*i):
        a = acc(*i) - _param(zp, i, {}, "int32") if zp is not None else acc(*i)
        v = round_half_even(a.astype("float32") * _param(mult, i, {}, "float32") + _param(off, i, {}, "float32"))
        return te.min(te.max(v, const(attrs["min"], "float32")), const(attrs["max"], "float32")).astype(dt)

    return te.compute(tuple(out.shape), body, name="requantize")


@rule("dequantize")
def dequantize(ins, attrs, out, op):
    q, scale = ins[0], ins[1]
    zp = ins[2] if len(ins) == 3 else None
    packed = attrs["bits"] == 4
    rank = len(out.shape)
    ax = pack_axis(attrs, rank)
    word_ax = None if attrs.get("packed_axis") is None else attrs["packed_axis"] % rank

    def stored(*j):
        """The 8-bit value at index ``j`` of the byte tensor, as i32: read from its 32-bit word with packed_axis."""
        if word_ax is None:
            return q(*j).astype("int32")
        word = q(*[d // 4 if a == word_ax else d for a, d in enumerate(j)]).astype("int32")
        byte = tvm.tirx.bitwise_and(tvm.tirx.shift_right(word, (j[word_ax] % 4) * 8), const(255, "int32"))
        if attrs["packed_dtype"] == "u8":
            return byte
        return tvm.tirx.bitwise_xor(byte, const(128, "int32")) - const(128, "int32")  # sign-extended, no shift

    def element(*i):
        if not packed:
            return stored(*i)
        byte = stored(*[d // 2 if a == ax else d for a, d in enumerate(i)])
        return tvm.tirx.bitwise_and(tvm.tirx.shift_right(byte, (i[ax] % 2) * 4), const(15, "int32"))

    dt = tvm_dtype(attrs["dtype"])

    def body(*i):
        v = element(*i)
        if zp is not None and zp.dtype == "float32":  # a minimum: q * scale + min
            lo = _param(zp, i, attrs, "float32")
            return (v.astype("float32") * _param(scale, i, attrs, "float32") + lo).astype(dt)
        if zp is not None:
            v = v - _param(zp, i, attrs, "int32")
        return (v.astype("float32") * _param(scale, i, attrs, "float32")).astype(dt)

    return te.compute(tuple(out.shape), body, name="dequantize")
