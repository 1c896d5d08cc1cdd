"""Craft artifacts for the damage, limit and signing tests: zips written byte by byte (any name, flag, compression
method, CRC or declared size, duplicates, pre-compressed zip bombs: what ``zipfile`` will not write), and
manifests edited with their member hashes recomputed (the damage a hash inside the file cannot catch)."""

from __future__ import annotations

import hashlib
import io
import json
import struct
import zipfile
import zlib
from dataclasses import dataclass

_DATE_1980 = 33  # DOS date 1980-01-01


@dataclass
class Entry:
    """One zip entry. ``data`` is the uncompressed content, or the stored bytes as they are when ``raw`` (then
    ``crc`` and ``size``, of the uncompressed content, must be given)."""

    name: str
    data: bytes
    method: int = zipfile.ZIP_DEFLATED
    crc: int | None = None
    size: int | None = None  # the uncompressed size the zip declares
    flags: int = 0
    raw: bool = False


def deflate(data: bytes) -> bytes:
    c = zlib.compressobj(6, zlib.DEFLATED, -15)
    return c.compress(data) + c.flush()


def build(entries: list[Entry]) -> bytes:
    """A zip holding ``entries`` in order (no zip64: every size under 4 GiB)."""
    out, central = bytearray(), bytearray()
    for e in entries:
        stored = e.data if e.raw or e.method != zipfile.ZIP_DEFLATED else deflate(e.data)
        crc = zlib.crc32(e.data) if e.crc is None else e.crc
        size = len(e.data) if e.size is None else e.size
        name = e.name.encode()
        flags = e.flags | (0 if e.name.isascii() else 0x800)
        offset = len(out)
        out += struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, flags, e.method, 0, _DATE_1980, crc, len(stored), size,
                           len(name), 0) + name + stored
        central += struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, flags, e.method, 0, _DATE_1980, crc,
                               len(stored), size, len(name), 0, 0, 0, 0, 0, offset) + name
    eocd = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(entries), len(entries), len(central), len(out), 0)
    return bytes(out + central + eocd)


def zeros_bomb(name: str, mib: int) -> tuple[Entry, str]:
    """(entry, sha256) of ``mib`` MiB of zeros, deflated ~1000x without ever holding them: one full-flushed block
    repeated (a full flush resets the compressor, so each copy decodes alone), then the final block."""
    chunk = bytes(1 << 20)
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = c.compress(chunk) + c.flush(zlib.Z_FULL_FLUSH)
    tail = c.flush(zlib.Z_FINISH)
    crc, h = 0, hashlib.sha256()
    for _ in range(mib):
        crc = zlib.crc32(chunk, crc)
        h.update(chunk)
    return Entry(name, block * mib + tail, crc=crc, size=mib << 20, raw=True), h.hexdigest()


def members_of(blob: bytes) -> dict[str, bytes]:
    """An (intact) artifact's members, manifest included, in zip order."""
    with zipfile.ZipFile(io.BytesIO(blob)) as z:
        return {n: z.read(n) for n in z.namelist()}


def manifest_of(members: dict[str, bytes]) -> dict:
    return json.loads(members["manifest.json"])


def rehash(manifest: dict, members: dict[str, bytes]) -> dict:
    """``manifest`` with the sha256 and size of every listed member that ``members`` holds recomputed."""
    for name, info in manifest["members"].items():
        if isinstance(info, dict) and name in members:
            info.update(sha256=hashlib.sha256(members[name]).hexdigest(), size=len(members[name]))
    return manifest


def artifact(members: dict[str, bytes], manifest: dict | None = None, rehashed: bool = True) -> bytes:
    """A zip of ``members`` with ``manifest`` (default: theirs) written as manifest.json, member hashes recomputed
    unless ``rehashed`` is False."""
    members = dict(members)
    if manifest is not None:
        manifest = rehash(manifest, members) if rehashed else manifest
        members["manifest.json"] = json.dumps(manifest).encode()
    elif rehashed:
        members["manifest.json"] = json.dumps(rehash(manifest_of(members), members)).encode()
    return build([Entry(n, d) for n, d in members.items()])


def safetensors(header: dict, data: bytes = b"") -> bytes:
    head = json.dumps(header).encode()
    return struct.pack("<Q", len(head)) + head + data
