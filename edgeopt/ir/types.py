"""Value types of the IR: a static shape, an element type and, for quantized tensors, how to read them.

Text form (used by the printer and the parser):

    f32[1,3,224,224]                          plain tensor
    f32[]                                     rank-0 tensor (a scalar)
    i8[64,3,3,3]{scale=[0.02,0.03],zp=[0,0],axis=0}   per-axis quantized tensor
    u8[1,64,56,56]{scale=0.05,zp=128}         per-tensor quantized tensor
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

import numpy as np

from ..ir_dtypes import NP_DTYPES

#: IR element type name -> numpy dtype. The IR names are the ones printed in the text form.
DTYPES: dict[str, np.dtype] = dict(NP_DTYPES)
_NP_TO_IR = {v: k for k, v in DTYPES.items()}
#: IR element type -> TVM dtype string.
TVM_DTYPES = {
    "f32": "float32", "f16": "float16", "f64": "float64", "i8": "int8", "u8": "uint8", "i16": "int16",
    "i32": "int32", "i64": "int64", "bool": "bool",
}
FLOAT_DTYPES = frozenset({"f32", "f16", "f64"})


def dtype_from_numpy(dt) -> str:
    """The IR name of a numpy dtype; raises ``TypeError`` for one the IR does not have."""
    try:
        return _NP_TO_IR[np.dtype(dt)]
    except KeyError:
        raise TypeError(f"dtype {np.dtype(dt)} is not supported by the edgeopt IR "
                        f"(supported: {', '.join(DTYPES)})") from None


@dataclass(frozen=True)
class QuantParams:
    """Affine quantization: ``real = scale * (q - zero_point)``, per tensor (axis None) or per ``axis``."""

    scale: tuple[float, ...]
    zero_point: tuple[int, ...]
    axis: int | None = None

    def __post_init__(self):
        if len(self.scale) != len(self.zero_point) or not self.scale:
            raise ValueError("quantization needs one zero point per scale, and at least one scale")
        if self.axis is None and len(self.scale) != 1:
            raise ValueError("per-tensor quantization has exactly one scale; give `axis` for per-axis")

    def text(self) -> str:
        if self.axis is None:
            return f"{{scale={json.dumps(self.scale[0])},zp={self.zero_point[0]}}}"
        scale, zp = (json.dumps(list(v), separators=(",", ":")) for v in (self.scale, self.zero_point))
        return f"{{scale={scale},zp={zp},axis={self.axis}}}"


@dataclass(frozen=True)
class TensorType:
    """A tensor's static shape and element type (plus quantization parameters for int tensors)."""

    shape: tuple[int, ...]
    dtype: str
    quant: QuantParams | None = None

    def __post_init__(self):
        if self.dtype not in DTYPES:
            raise TypeError(f"unknown IR dtype {self.dtype!r}")
        if not all(isinstance(d, int) and d >= 0 for d in self.shape):
            raise TypeError(f"shape must be static non-negative ints, got {self.shape}")

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def numel(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def nbytes(self) -> int:
        return self.numel * DTYPES[self.dtype].itemsize

    @property
    def np_dtype(self) -> np.dtype:
        return DTYPES[self.dtype]

    def with_shape(self, shape) -> TensorType:
        return TensorType(tuple(int(d) for d in shape), self.dtype, self.quant)

    def text(self) -> str:
        q = self.quant.text() if self.quant else ""
        return f"{self.dtype}[{','.join(map(str, self.shape))}]{q}"

    def __str__(self) -> str:
        return self.text()


_TYPE_RE = re.compile(r"^(\w+)\[([\d,]*)\](\{.*\})?$")


def parse_type(text: str) -> TensorType:
    """Inverse of :meth:`TensorType.text`; ``ValueError`` naming the text and what is wrong with it."""
    m = _TYPE_RE.match(text.strip())
    if not m:
        raise ValueError(f"cannot parse type {text!r}")
    dtype, dims, q = m.groups()
    try:
        shape = tuple(int(d) for d in dims.split(",") if d)
        return TensorType(shape, dtype, _parse_quant(q[1:-1]) if q else None)
    except (TypeError, ValueError, OverflowError) as e:
        raise ValueError(f"cannot parse type {text!r}: {e}") from None


def _parse_quant(block: str) -> QuantParams:
    """``scale=...,zp=...[,axis=N]`` (the text between the braces) as QuantParams."""
    parts = _split_top(block)
    if not all("=" in kv for kv in parts):
        raise ValueError("a quantization block is key=value pairs")
    fields = dict(kv.split("=", 1) for kv in parts)
    if len(fields) != len(parts):
        raise ValueError("a quantization block names a key twice")
    missing = [k for k in ("scale", "zp") if k not in fields]
    unknown = sorted(set(fields) - {"scale", "zp", "axis"})
    if missing or unknown:
        raise ValueError(f"a quantization block has scale, zp and (per axis) axis; missing {missing}, unknown "
                         f"{unknown}")
    scale, zp = json.loads(fields["scale"]), json.loads(fields["zp"])
    if "axis" not in fields:
        if isinstance(scale, list) or isinstance(zp, list):
            raise ValueError("per-axis scales need axis=N")
        return QuantParams((float(scale),), (int(zp),))
    if not isinstance(scale, list) or not isinstance(zp, list):
        raise ValueError("per-axis quantization lists its scales and zero points")
    return QuantParams(tuple(map(float, scale)), tuple(map(int, zp)), int(fields["axis"]))


def _split_top(s: str) -> list[str]:
    """Split on commas that are not inside brackets."""
    out, depth, cur = [], 0, ""
    for ch in s:
        depth += ch in "[{"
        depth -= ch in "]}"
        if ch == "," and depth == 0:
            out.append(cur)
            cur = ""
        else:
            cur += ch
    if cur:
        out.append(cur)
    return out
