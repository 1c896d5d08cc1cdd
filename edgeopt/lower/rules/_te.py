"""Small TE helpers shared by the rules."""

from __future__ import annotations

import tvm
from tvm import te

from ...ir.types import TVM_DTYPES


def tvm_dtype(ir_dtype: str) -> str:
    return TVM_DTYPES[ir_dtype]


def const(value, dtype: str):
    return tvm.tirx.const(value, dtype)


def round_half_even(x):
    """``x`` rounded to the nearest integer, ties to even (``torch.round``, ``numpy.rint``), as ``te.round``: in TVM
    0.27 it lowers to ``llvm.nearbyint`` (LLVM), ``nearbyintf`` (CUDA) and WGSL's ``round``, all ties to even, and
    is marked vectorizable. ``te.nearbyint`` means the same but is not marked, so TVM scalarized any vectorized loop
    holding it and left it to LLVM's loop vectorizer, which on a per-row quantize (int8-dynamic) read the row with
    gathers and wrote it byte by byte: 52 us a call for 128 x 384 values, 8-18 us vectorized."""
    return te.round(x)


def bcast_index(t: te.Tensor, idx, out_rank: int):
    """Index into ``t`` for output index ``idx`` under numpy broadcasting."""
    r = len(t.shape)
    return [0 if int(t.shape[i]) == 1 else idx[out_rank - r + i] for i in range(r)]


def elementwise(out, fn, *tensors, name="T"):
    """te.compute of ``fn(*elements)`` with broadcasting to ``out.shape``."""
    rank = len(out.shape)

    def body(*idx):
        return fn(*[t(*bcast_index(t, idx, rank)) for t in tensors])

    return te.compute(tuple(out.shape), body, name=name)


def widen(dtype: str):
    """How the factors of a product of ``dtype`` elements are read into a sum: f16 ones as f32, so that f16
    convolutions and matrix products multiply exactly and accumulate in f32, as tensor cores do (``narrow`` then
    stores the result as f16); int8 and uint8 ones as int32 (integer kernels sum exactly in i32); other dtypes as
    they are."""
    if dtype == "float16":
        return lambda e: e.astype("float32")
    if dtype in ("int8", "uint8"):
        return lambda e: e.astype("int32")
    return lambda e: e


def narrow(t: te.Tensor, dtype: str, name: str | None = None) -> te.Tensor:
    """``t`` stored as ``dtype`` (a stage of its own, which schedules inline), or ``t`` if it already is."""
    if t.dtype == dtype:
        return t
    return te.compute(t.shape, lambda *i: t(*i).astype(dtype), name=name or f"{t.op.name}_{dtype}")


def floatify(x):
    return x if x.dtype.startswith("float") else x.astype("float32")


def dtype_of(e) -> str:
    """dtype of a TE tensor element or a TIR expression (0.27 exprs carry ``.ty``, not ``.dtype``)."""
    ty = getattr(e, "ty", None)
    return str(ty) if ty is not None else str(e.dtype)
