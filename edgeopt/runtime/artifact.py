"""The artifact file: one zip with a manifest, the execution plan, weights and the compiled kernels.

    manifest.json        format + version, edgeopt/TVM versions, target, inputs/outputs, report,
                         and the sha256 and size of every other member
    plan.json            the execution plan (see edgeopt/lower/build.py)
    weights.safetensors  the constants the kernels read (never pickle)
    kernels.so           the compiled kernel library for the target
    ir.txt               the final IR, for people (not needed to run)

``read_artifact`` refuses a file that is not a zip, is truncated, has a member missing, added or changed
(sha256), or was written in a format version this runtime does not read, and says which check failed.
This module imports neither torch nor TVM: the device runtime uses it.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from collections.abc import Callable

from ..errors import ArtifactError

FORMAT = "edgeopt-artifact"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"


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
            z.writestr(name, data)
    return buf.getvalue()


def read_artifact(source: str | bytes, what: str = "artifact",
                  consumers: dict[str, Callable] | None = None) -> tuple[dict, dict[str, bytes]]:
    """Open and verify an artifact (a path or its bytes); returns (manifest, members).

    A member named in ``consumers`` is never held in memory as bytes: ``consumers[name](stream)`` reads it
    from a stream that hashes what passes through (e.g. straight into the weight arrays), and its result
    becomes the member; the sha256 is checked when the stream is done."""
    consumers = consumers or {}
    try:
        fileobj = io.BytesIO(source) if isinstance(source, bytes) else open(source, "rb")
    except OSError as e:
        raise ArtifactError(f"cannot open {what}: {e}") from None
    with fileobj:
        try:
            z = zipfile.ZipFile(fileobj)
        except zipfile.BadZipFile:
            raise ArtifactError(f"{what} is not an edgeopt artifact (not a zip file, or truncated)") from None
        with z:
            names = z.namelist()
            if MANIFEST not in names:
                raise ArtifactError(f"{what} has no {MANIFEST}: not an edgeopt artifact")
            try:
                manifest = json.loads(z.read(MANIFEST))
            except (ValueError, zipfile.BadZipFile, EOFError) as e:
                raise ArtifactError(f"{what}: {MANIFEST} is unreadable ({e})") from None
            _check_format(manifest, what)
            listed = manifest.get("members", {})
            extra = sorted(set(names) - set(listed) - {MANIFEST})
            if extra:
                raise ArtifactError(f"{what} contains members the manifest does not list: {extra} (tampered)")
            members = {}
            for name, info in listed.items():
                if name not in names:
                    raise ArtifactError(f"{what} is missing member {name!r} (truncated or tampered)")
                try:
                    if name in consumers:
                        with z.open(name) as raw:
                            stream = _HashingReader(raw)
                            data = consumers[name](stream)
                            stream.drain()
                        size, digest = stream.size, stream.hexdigest()
                    else:
                        data = z.read(name)
                        size, digest = len(data), sha256(data)
                except (zipfile.BadZipFile, EOFError, OSError, ValueError) as e:
                    raise ArtifactError(f"{what}: member {name!r} is damaged ({e})") from None
                if size != info["size"] or digest != info["sha256"]:
                    raise ArtifactError(f"{what}: sha256 of member {name!r} does not match the manifest "
                                        "(the file was modified after it was written)")
                members[name] = data
    return manifest, members


_CHUNK = 1 << 20


class _HashingReader:
    """A read-only stream over a zip member that counts and hashes every byte read."""

    def __init__(self, raw):
        self._raw, self._h, self.size = raw, hashlib.sha256(), 0

    def _seen(self, chunk) -> None:
        self._h.update(chunk)
        self.size += len(chunk)

    def read(self, n: int = -1) -> bytes:
        data = self._raw.read(n)
        self._seen(data)
        return data

    def readinto(self, buf) -> int:
        view = memoryview(buf).cast("B")
        done = 0
        while done < len(view):  # in chunks: a zip stream's readinto reads the whole request into a temporary
            n = self._raw.readinto(view[done : done + _CHUNK])
            if not n:
                break
            done += n
        self._seen(view[:done])
        return done

    def drain(self) -> None:
        while self.read(_CHUNK):
            pass

    def hexdigest(self) -> str:
        return self._h.hexdigest()


def _check_format(manifest: dict, what: str) -> None:
    if manifest.get("format") != FORMAT:
        raise ArtifactError(f"{what} is not an edgeopt artifact (format {manifest.get('format')!r})")
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise ArtifactError(f"{what} has artifact format version {version}; this edgeopt runtime reads version "
                            f"{FORMAT_VERSION}. Recompile the model with this edgeopt, or install the edgeopt "
                            "version that wrote it.")
