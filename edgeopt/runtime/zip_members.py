"""An artifact's zip, read with bounded memory: entries checked before any is decompressed, members streamed with
a cap.

Before reading anything, ``entries`` refuses a zip with too many entries, two entries of one name, a name that is
not a plain relative path (``..``, absolute, backslashes, control characters), an encrypted entry or a compression
method other than stored and deflate. Before reading a member, ``check_declared`` compares the uncompressed size
the zip declares with the size the manifest records, and refuses a large member that decompresses more than
``MAX_RATIO`` times its compressed size (a zip bomb); ``check_total`` does the same for all members together (many
small bombs). ``HashingReader`` then never reads past the declared size
plus one byte, so a member that holds more than it says is refused after at most that many bytes.
Any error the zip module raises on damaged data (``BadZipFile``, ``zlib.error``, ``EOFError``, ...) is in
``ZIP_ERRORS``; the caller turns them into one ``ArtifactError``. This module imports neither torch nor TVM.
"""

from __future__ import annotations

import hashlib
import struct
import zipfile
import zlib

from ..errors import ArtifactError
from .manifest_check import MAX_MEMBERS, name_problem

CHUNK = 1 << 20
MAX_ENTRIES = MAX_MEMBERS + 2  # the members, the manifest, the signature
#: a member of at least BOMB_MIN_BYTES may decompress to at most MAX_RATIO times its compressed size (weights,
#: kernels, plans and text compress 1.1x to ~20x; a zip bomb ~1000x)
BOMB_MIN_BYTES = 64 << 20
MAX_RATIO = 200
_METHODS = {zipfile.ZIP_STORED: "stored", zipfile.ZIP_DEFLATED: "deflate"}

#: what the zip module raises on a damaged zip (bad headers, bad deflate data, CRC errors, odd sizes)
ZIP_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, EOFError, OSError, ValueError, OverflowError,
              NotImplementedError, RuntimeError, struct.error, KeyError, IndexError, TypeError)


def open_zip(fileobj, what: str) -> zipfile.ZipFile:
    """``fileobj`` as a zip; ``ArtifactError`` when it is not one (or its central directory is damaged)."""
    try:
        return zipfile.ZipFile(fileobj)
    except ZIP_ERRORS as e:
        raise ArtifactError(f"{what} is not an edgeopt artifact (not a zip file, or truncated: {_why(e)})") from None


def entries(z: zipfile.ZipFile, what: str) -> dict[str, zipfile.ZipInfo]:
    """The zip's entries by name, after refusing what an artifact never holds (see the module docstring)."""
    infos = z.infolist()
    if len(infos) > MAX_ENTRIES:
        raise ArtifactError(f"{what} holds {len(infos)} zip entries (an artifact has at most {MAX_ENTRIES})")
    out: dict[str, zipfile.ZipInfo] = {}
    for info in infos:
        name = info.filename
        why = name_problem(name)
        if why:
            raise ArtifactError(f"{what} holds a zip entry named {name[:80]!r}, which is {why}: not an edgeopt "
                                "artifact, or damaged")
        if name in out:
            raise ArtifactError(f"{what} holds two zip entries named {name!r}: damaged, or not written by edgeopt")
        if info.flag_bits & 0x1:
            raise ArtifactError(f"{what}: zip entry {name!r} is encrypted; edgeopt artifacts never are")
        if info.compress_type not in _METHODS:
            raise ArtifactError(f"{what}: zip entry {name!r} uses compression method {info.compress_type}; edgeopt "
                                f"reads {' and '.join(_METHODS.values())} only")
        out[name] = info
    return out


def check_declared(info: zipfile.ZipInfo, size: int, what: str) -> None:
    """Refuse a member whose uncompressed size in the zip is not ``size``, or which expands like a zip bomb."""
    if info.file_size != size:
        raise ArtifactError(f"{what}: member {info.filename!r} has size {info.file_size} in the zip but {size} "
                            "in the manifest (damaged, or changed after it was written)")
    if size >= BOMB_MIN_BYTES and size > MAX_RATIO * max(1, info.compress_size):
        raise ArtifactError(f"{what}: member {info.filename!r} expands from {info.compress_size} to {size} bytes "
                            f"(more than {MAX_RATIO}x): refused as a zip bomb")


def check_total(infos, what: str) -> None:
    """Refuse members that together expand like a zip bomb: many members each under ``BOMB_MIN_BYTES``."""
    size = sum(i.file_size for i in infos)
    packed = sum(i.compress_size for i in infos)
    if size >= BOMB_MIN_BYTES and size > MAX_RATIO * max(1, packed):
        raise ArtifactError(f"{what}: its members expand from {packed} to {size} bytes in all (more than "
                            f"{MAX_RATIO}x): refused as a zip bomb")


def read_member(z: zipfile.ZipFile, info: zipfile.ZipInfo, size: int) -> tuple[bytes, str]:
    """(bytes, sha256) of a member of ``size`` bytes (declared sizes already checked); reads at most size + 1
    bytes. Raises one of ``ZIP_ERRORS`` when the member is damaged or holds another number of bytes."""
    with z.open(info) as raw:
        reader = HashingReader(raw, size)
        buf = bytearray(size)
        got = reader.readinto(buf)
        reader.drain()
    if got != size:
        raise ValueError(f"it holds {got} bytes, the manifest says {size}")
    return bytes(buf), reader.hexdigest()


class HashingReader:
    """A read-only stream over a zip member that counts and hashes every byte read, and raises ``ValueError``
    rather than read more than ``member_size`` + 1 bytes (a member longer than its manifest says)."""

    def __init__(self, raw, member_size: int):
        self._raw, self._h, self.size, self.member_size = raw, hashlib.sha256(), 0, member_size

    def _room(self, n: int | None) -> int:
        room = self.member_size + 1 - self.size
        return room if n is None or n < 0 else min(n, room)

    def _seen(self, chunk) -> None:
        self._h.update(chunk)
        self.size += len(chunk)
        if self.size > self.member_size:
            raise ValueError(f"it holds more than the {self.member_size} bytes the manifest says")

    def read(self, n: int = -1) -> bytes:
        n = self._room(n)
        data = self._raw.read(n) if n > 0 else b""
        self._seen(data)
        return data

    def readinto(self, buf) -> int:
        view = memoryview(buf).cast("B")
        view = view[: self._room(len(view))]
        done = 0
        while done < len(view):  # in chunks: a zip stream's readinto reads the whole request into a temporary
            n = self._raw.readinto(view[done : done + CHUNK])
            if not n:
                break
            done += n
        self._seen(view[:done])
        return done

    def drain(self) -> None:
        while self.read(CHUNK):
            pass

    def hexdigest(self) -> str:
        return self._h.hexdigest()


def _why(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}"[:200]
