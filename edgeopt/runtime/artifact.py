"""The artifact file: one zip with a manifest, the execution plan, weights and the compiled kernels.

    manifest.json        format + version, edgeopt/TVM versions, target, inputs/outputs, report,
                         and the sha256 and size of every other member (schema: manifest_check.py)
    plan.json            the execution plan (see edgeopt/lower/build.py)
    weights.safetensors  the constants the kernels read (never pickle)
    kernels.so           the compiled kernel library for the target
    ir.txt               the final IR, for people (not needed to run)
    signature.json       optional, not listed in the manifest: Ed25519 signatures of manifest.json (signing.py)

``read_artifact`` refuses, with one ``ArtifactError`` saying which check failed, a file that is not a zip, is
truncated or damaged, holds odd zip entries (see zip_members.py), has a manifest of the wrong schema, a member
missing, added, of another size or another sha256, or was written in a format version this runtime does not
read. Memory stays bounded by what the manifest declares: every size is checked before a member is
decompressed, and no member is read past its size.

The sha256s catch accidental damage only: they live in the same file, so whoever changes a member can change
its hash too. Against deliberate changes, load with ``trusted_keys`` (a signature by one of them over the
manifest is checked before anything else is read) or pin the whole file with ``sha256``.
This module imports neither torch nor TVM: the device runtime uses it.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import zipfile
from collections.abc import Callable

from ..errors import ArtifactError
from . import signing, zip_members
from .manifest_check import FORMAT, FORMAT_VERSION, MANIFEST, SIGNATURE, parse_manifest
from .zip_members import ZIP_ERRORS, HashingReader

__all__ = ["FORMAT", "FORMAT_VERSION", "MANIFEST", "SIGNATURE", "read_artifact", "sha256", "write_artifact"]

#: the largest manifest read (a zoo model's is tens of kilobytes: the report lists every kernel)
MAX_MANIFEST_BYTES = 8 << 20
_HEX64 = re.compile(r"[0-9a-fA-F]{64}")


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_artifact(manifest: dict, members: dict[str, bytes]) -> bytes:
    """Zip the members with a manifest that records every member's sha256; returns the file's bytes."""
    manifest = dict(manifest, format=FORMAT, format_version=FORMAT_VERSION,
                    members={name: {"sha256": sha256(data), "size": len(data)} for name, data in members.items()})
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr(MANIFEST, json.dumps(manifest, indent=1, sort_keys=True))
        for name, data in members.items():
            # weights are stored: floats and packed integers barely deflate (a few %), at seconds per 100 MB
            z.writestr(name, data, compress_type=zipfile.ZIP_STORED if name.endswith(".safetensors") else None)
    return buf.getvalue()


def read_artifact(source: str | os.PathLike | bytes, what: str = "artifact",
                  consumers: dict[str, Callable] | Callable | None = None, *, trusted_keys=None,
                  sha256: str | None = None) -> tuple[dict, dict[str, bytes]]:
    """Open and verify an artifact (a path or its bytes); returns (manifest, members).

    A member named in ``consumers`` is never held in memory as bytes: ``consumers[name](stream)`` reads it
    from a stream that hashes what passes through (e.g. straight into the weight arrays; ``stream.member_size``
    is its size), and its result becomes the member; the sha256 is checked when the stream is done.
    ``consumers`` may also be a function of the checked manifest that returns that dict (called before any member
    is read; what it raises propagates).

    ``sha256``: the whole file's hash, checked before anything in it is parsed. ``trusted_keys``: Ed25519 public
    keys (see ``signing.public_keys``); the artifact must carry a signature by one of them over its manifest,
    checked before any member is read."""
    consumers = consumers or {}
    keys = None if trusted_keys is None else signing.public_keys(trusted_keys)
    pin = None if sha256 is None else _pin(sha256)
    try:
        fileobj = io.BytesIO(source) if isinstance(source, (bytes, bytearray, memoryview)) else open(source, "rb")
    except (OSError, TypeError, ValueError) as e:
        raise ArtifactError(f"cannot open {what}: {e}") from None
    with fileobj:
        if pin is not None:  # hashed as read into memory, then parsed from there: what is checked is what is used
            fileobj = io.BytesIO(_pinned_bytes(fileobj, pin, what))
        with zip_members.open_zip(fileobj, what) as z:
            return _read(z, what, consumers, keys)


def hash_only(stream) -> None:
    """A consumer for a member that is checked (its bytes hashed as they stream past) but not kept."""
    return None


def every_member(consumer: Callable) -> Callable:
    """``consumers`` for ``read_artifact`` that give every member the manifest lists to ``consumer``."""
    return lambda manifest: dict.fromkeys(manifest["members"], consumer)


def _read(z: zipfile.ZipFile, what: str, consumers: dict, keys) -> tuple[dict, dict]:
    entries = zip_members.entries(z, what)
    if MANIFEST not in entries:
        raise ArtifactError(f"{what} has no {MANIFEST}: not an edgeopt artifact")
    manifest_bytes = _read_capped(z, entries[MANIFEST], MAX_MANIFEST_BYTES, what)
    if SIGNATURE in entries and entries[SIGNATURE].file_size > signing.MAX_SIGNATURE_BYTES:
        raise ArtifactError(f"{what}: {SIGNATURE} is {entries[SIGNATURE].file_size} bytes (at most "
                            f"{signing.MAX_SIGNATURE_BYTES})")
    if keys is not None:
        signature = (_read_capped(z, entries[SIGNATURE], signing.MAX_SIGNATURE_BYTES, what)
                     if SIGNATURE in entries else None)
        signing.verify(manifest_bytes, signature, keys, what)
    manifest = parse_manifest(manifest_bytes, what)
    if callable(consumers):  # readers chosen from the manifest (e.g. a CPU level's members; the others skipped)
        consumers = consumers(manifest)
    listed = manifest["members"]
    extra = sorted(set(entries) - set(listed) - {MANIFEST, SIGNATURE})
    if extra:
        raise ArtifactError(f"{what} contains members the manifest does not list: {extra[:10]} (damaged, or "
                            "changed after it was written)")
    for name, info in listed.items():  # every declared size before any member is decompressed
        if name not in entries:
            raise ArtifactError(f"{what} is missing member {name!r} (truncated, or changed after it was written)")
        zip_members.check_declared(entries[name], info["size"], what)
    zip_members.check_total([entries[name] for name in listed], what)
    members = {}
    for name, info in listed.items():
        try:
            if name in consumers:
                with z.open(entries[name]) as raw:
                    stream = HashingReader(raw, info["size"])
                    data = consumers[name](stream)
                    stream.drain()
                size, digest = stream.size, stream.hexdigest()
            else:
                data, digest = zip_members.read_member(z, entries[name], info["size"])
                size = len(data)
        except ZIP_ERRORS as e:
            raise ArtifactError(f"{what}: member {name!r} is damaged ({type(e).__name__}: {e})") from None
        if size != info["size"] or digest != info["sha256"]:
            raise ArtifactError(f"{what}: sha256 of member {name!r} does not match the manifest (damaged, or "
                                "changed after it was written)")
        members[name] = data
    return manifest, members


def _read_capped(z: zipfile.ZipFile, info: zipfile.ZipInfo, cap: int, what: str) -> bytes:
    """A small member (manifest, signature) read whole, refused when the zip says it is larger than ``cap``."""
    if info.file_size > cap:
        raise ArtifactError(f"{what}: {info.filename} is {info.file_size} bytes (at most {cap})")
    try:
        return zip_members.read_member(z, info, info.file_size)[0]
    except ZIP_ERRORS as e:
        raise ArtifactError(f"{what}: {info.filename} is unreadable ({type(e).__name__}: {e})") from None


def _pin(value) -> str:
    if not isinstance(value, str) or not _HEX64.fullmatch(value):
        raise ArtifactError(f"sha256= must be the file's sha256 as 64 hex digits, got {str(value)[:80]!r}")
    return value.lower()


def _pinned_bytes(fileobj, want: str, what: str) -> bytes:
    """The whole file, read once, if its sha256 is the pinned one (so a file rewritten after the check is never
    the one parsed); ``ArtifactError`` before anything in it is parsed otherwise."""
    try:
        data = fileobj.read()
    except (OSError, MemoryError) as e:
        raise ArtifactError(f"cannot read {what}: {e}") from None
    got = hashlib.sha256(data).hexdigest()
    if got != want:
        raise ArtifactError(f"{what} has sha256 {got}, not the pinned {want}: it is another file, "
                            "or was changed")
    return data
