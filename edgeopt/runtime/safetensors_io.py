"""A minimal reader/writer of the safetensors format in plain numpy (no torch, no pickle).

Layout: 8-byte little-endian header size N, N bytes of JSON header {name: {dtype, shape, data_offsets}},
then the raw little-endian tensor bytes. Files written here are read by the ``safetensors`` package too.

Reading checks the header against the data's size before allocating anything: the header must fit (and be at
most ``MAX_HEADER_BYTES``, with at most ``MAX_TENSORS`` tensors), and every tensor's offsets must match its shape
and dtype, lie inside the data and not overlap another's. So a damaged or hostile header never asks for more
memory than the file holds; every problem is a ``ValueError`` saying which.
"""

from __future__ import annotations

import io
import json
import struct

import numpy as np

from . import strict_json

_TO_ST = {"float32": "F32", "float16": "F16", "float64": "F64", "int8": "I8", "uint8": "U8", "int16": "I16",
          "int32": "I32", "int64": "I64", "bool": "BOOL"}
_FROM_ST = {v: np.dtype(k) for k, v in _TO_ST.items()}
MAX_HEADER_BYTES = 64 << 20  # the safetensors package allows 100 MB; ours are a few kilobytes
MAX_TENSORS = 1 << 20
MAX_DIMS = 32


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
    return read_into(io.BytesIO(blob), np.empty, len(blob))


def read_into(stream, alloc, size: int | None = None) -> dict[str, np.ndarray]:
    """Read safetensors data of ``size`` bytes from a stream straight into arrays made by ``alloc(shape, dtype)``,
    in file order: the bytes are never held twice (for loading large weights with a small peak). ``size`` defaults
    to ``stream.member_size`` (an artifact's member streams have it) or what is left of a seekable stream."""
    size = _stream_size(stream) if size is None else size
    if size < 8:
        raise ValueError(f"safetensors data of {size} bytes is truncated (no header size)")
    (n,) = struct.unpack("<Q", _read_exact(stream, 8))
    if n > min(size - 8, MAX_HEADER_BYTES):
        raise ValueError(f"safetensors header of {n} bytes does not fit in {size} bytes of data"
                         + (f" (at most {MAX_HEADER_BYTES})" if n > MAX_HEADER_BYTES else ""))
    try:
        header = strict_json.loads(_read_exact(stream, n))
    except ValueError as e:
        raise ValueError(f"safetensors header is unreadable ({e})") from None
    entries = _entries(header, size - 8 - n)
    out, pos = {}, 0
    for name, dt, shape, start, end in entries:
        _skip(stream, start - pos)
        arr = alloc(shape, dt)
        if arr.nbytes and stream.readinto(arr.reshape(-1).view(np.uint8)) != end - start:
            raise ValueError(f"safetensors tensor {name!r} is truncated")
        out[name] = arr
        pos = end
    return out


def _entries(header, data_bytes: int) -> list[tuple[str, np.dtype, list[int], int, int]]:
    """(name, dtype, shape, start, end) of every tensor, in file order, each checked against ``data_bytes``."""
    if not isinstance(header, dict):
        raise ValueError("safetensors header is not a JSON object")
    if len(header) > MAX_TENSORS:
        raise ValueError(f"safetensors header lists {len(header)} tensors (at most {MAX_TENSORS})")
    out = []
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if not isinstance(info, dict) or info.get("dtype") not in _FROM_ST:
            raise ValueError(f"safetensors tensor {name[:80]!r}: no dtype this reader knows")
        shape, offsets = info.get("shape"), info.get("data_offsets")
        if not (isinstance(shape, list) and len(shape) <= MAX_DIMS and all(_size(d) for d in shape)):
            raise ValueError(f"safetensors tensor {name[:80]!r}: shape is not a list of sizes")
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(_size(o) for o in offsets)):
            raise ValueError(f"safetensors tensor {name[:80]!r}: data_offsets is not [start, end]")
        dt, (start, end) = _FROM_ST[info["dtype"]], offsets
        nbytes = dt.itemsize
        for d in shape:  # Python ints: no overflow, whatever the header says
            nbytes *= d
        if not start <= end <= data_bytes or end - start != nbytes:
            raise ValueError(f"safetensors tensor {name[:80]!r} has inconsistent offsets: {dt}{shape} is {nbytes} "
                             f"bytes at [{start}, {end}) of {data_bytes} bytes of data")
        out.append((name, dt, shape, start, end))
    out.sort(key=lambda e: e[3])
    for prev, cur in zip(out, out[1:]):
        if cur[3] < prev[4]:
            raise ValueError(f"safetensors tensors {prev[0][:80]!r} and {cur[0][:80]!r} overlap")
    return out


def _size(v) -> bool:
    return type(v) is int and v >= 0


def _stream_size(stream) -> int:
    size = getattr(stream, "member_size", None)
    if size is not None:
        return size
    if getattr(stream, "seekable", lambda: False)():
        pos = stream.tell()
        end = stream.seek(0, io.SEEK_END)
        stream.seek(pos)
        return end - pos
    raise TypeError("read_into needs size= for a stream of unknown length")


def _skip(stream, n: int) -> None:
    while n > 0:  # in chunks: a gap between tensors is never held whole
        n -= len(_read_exact(stream, min(n, 1 << 20)))


def _read_exact(stream, n: int) -> bytes:
    data = stream.read(n) if n else b""
    if len(data) != n:
        raise ValueError("safetensors data is truncated")
    return data
