"""A minimal reader/writer of the safetensors format in plain numpy (no torch, no pickle).

Layout: 8-byte little-endian header size N, N bytes of JSON header {name: {dtype, shape, data_offsets}},
then the raw little-endian tensor bytes. Files written here are read by the ``safetensors`` package too.
"""

from __future__ import annotations

import io
import json
import struct

import numpy as np

_TO_ST = {"float32": "F32", "float16": "F16", "float64": "F64", "int8": "I8", "uint8": "U8", "int16": "I16",
          "int32": "I32", "int64": "I64", "bool": "BOOL"}
_FROM_ST = {v: np.dtype(k) for k, v in _TO_ST.items()}


def dumps(tensors: dict[str, np.ndarray]) -> bytes:
    header, chunks, offset = {}, [], 0
    for name, arr in tensors.items():
        arr = np.ascontiguousarray(arr)
        data = arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()
        header[name] = {"dtype": _TO_ST[arr.dtype.name], "shape": list(arr.shape),
                        "data_offsets": [offset, offset + len(data)]}
        chunks.append(data)
        offset += len(data)
    head = json.dumps(header, separators=(",", ":")).encode()
    head += b" " * (-len(head) % 8)  # keep the data 8-byte aligned, as the format recommends
    return struct.pack("<Q", len(head)) + head + b"".join(chunks)


def loads(blob: bytes) -> dict[str, np.ndarray]:
    return read_into(io.BytesIO(blob), np.empty)


def read_into(stream, alloc) -> dict[str, np.ndarray]:
    """Read safetensors data from a stream straight into arrays made by ``alloc(shape, dtype)``, in file order:
    the bytes are never held twice (for loading large weights with a small peak)."""
    head = _read_exact(stream, 8)
    (n,) = struct.unpack("<Q", head)
    header = json.loads(_read_exact(stream, n))
    entries = sorted(((k, v) for k, v in header.items() if k != "__metadata__"),
                     key=lambda kv: kv[1]["data_offsets"][0])
    out, pos = {}, 0
    for name, info in entries:
        start, end = info["data_offsets"]
        dt = _FROM_ST[info["dtype"]]
        if start < pos or end - start != dt.itemsize * int(np.prod(info["shape"], dtype=np.int64)):
            raise ValueError(f"safetensors tensor {name!r} has inconsistent offsets")
        _read_exact(stream, start - pos)
        arr = alloc(info["shape"], dt)
        if arr.nbytes and stream.readinto(arr.reshape(-1).view(np.uint8)) != end - start:
            raise ValueError(f"safetensors tensor {name!r} is truncated")
        out[name] = arr
        pos = end
    return out


def _read_exact(stream, n: int) -> bytes:
    data = stream.read(n) if n else b""
    if len(data) != n:
        raise ValueError("safetensors data is truncated")
    return data
