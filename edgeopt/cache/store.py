"""An on-disk, content-addressed store of compile results, shared by every process of one user.

    store = DiskCache.default()          # None when caching is off
    data = store.get("kernels", key)     # bytes, or None (missing, or damaged: then removed)
    store.put("kernels", key, data, meta={...})

Where and how much:

- ``EDGEOPT_CACHE_DIR`` (default ``$XDG_CACHE_HOME/edgeopt``, else ``~/.cache/edgeopt``) holds the entries;
- ``EDGEOPT_CACHE=0`` (or ``off``) turns caching off, as ``edgeopt.compile(..., cache=False)`` does for one compile;
- ``EDGEOPT_CACHE_MAX_MB`` (default 2048) bounds its size: after a write the least recently used entries go.

An entry is one file, ``<kind>/<key[:2]>/<key>.entry``: a JSON header line (the payload's sha256 and size, and what
the writer wants to remember) and the payload bytes. It is written to a temporary file and renamed into place, so
concurrent compiles never see half an entry; a read checks the sha256, so a damaged entry is a miss (and is
deleted), never wrong code. Last use is the file's mtime, set to the nanosecond on every write and hit; the least
recently used entries are evicted first. Keys are sha256 hex digests computed by the callers (``kernel_objects``,
``models``) over everything that decides the result.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import time
from pathlib import Path

log = logging.getLogger("edgeopt.cache")

#: bumped when the layout of entries changes: old entries are then ignored
LAYOUT = "v1"
DEFAULT_MAX_MB = 2048


def cache_dir() -> Path:
    """The directory of the cache (whether or not caching is on)."""
    given = os.environ.get("EDGEOPT_CACHE_DIR")
    if given:
        return Path(given).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "edgeopt"


def enabled() -> bool:
    return os.environ.get("EDGEOPT_CACHE", "1").strip().lower() not in ("0", "off", "false", "no")


def max_bytes() -> int:
    try:
        return int(float(os.environ.get("EDGEOPT_CACHE_MAX_MB", DEFAULT_MAX_MB)) * 2**20)
    except ValueError:
        return DEFAULT_MAX_MB * 2**20


class DiskCache:
    """Entries under ``root`` (see the module docstring)."""

    def __init__(self, root: str | os.PathLike, limit: int | None = None):
        self.root = Path(root) / LAYOUT
        self.limit = max_bytes() if limit is None else limit

    @classmethod
    def default(cls) -> DiskCache | None:
        """The user's cache, or None when ``EDGEOPT_CACHE`` turns it off."""
        return cls(cache_dir()) if enabled() else None

    def _path(self, kind: str, key: str) -> Path:
        if not key.isalnum() or not kind.isidentifier():
            raise ValueError(f"bad cache key {kind}/{key}")
        return self.root / kind / key[:2] / f"{key}.entry"

    def get(self, kind: str, key: str) -> tuple[bytes, dict] | None:
        """(payload, the writer's meta) of the entry, or None when it is missing or damaged (then removed)."""
        path = self._path(kind, key)
        try:
            blob = path.read_bytes()
        except OSError:
            return None
        head, sep, data = blob.partition(b"\n")
        try:
            record = json.loads(head) if sep else None
        except ValueError:
            record = None
        if not isinstance(record, dict) or record.get("sha256") != hashlib.sha256(data).hexdigest() \
                or not isinstance(record.get("meta"), dict):
            log.warning("edgeopt cache: entry %s/%s is damaged; removing it", kind, key)
            self._remove(path)
            return None
        _touch(path)  # recently used: evicted last
        log.info("edgeopt cache: hit %s/%s", kind, key[:12])
        return data, record["meta"]

    def put(self, kind: str, key: str, data: bytes, meta: dict | None = None, evict: bool = True) -> None:
        """Store ``data`` (atomically); a cache that cannot be written is one warning, never a failed compile."""
        if self.root in _UNWRITABLE:
            return
        path = self._path(kind, key)
        record = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data), "created": time.time(),
                  "meta": meta or {}}
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            _write_atomic(path, json.dumps(record).encode() + b"\n" + data)
            _touch(path)
        except OSError as e:
            _UNWRITABLE.add(self.root)
            log.warning("edgeopt cache: cannot write %s (%s); compiling without storing results there", path, e)
            return
        log.info("edgeopt cache: stored %s/%s (%d bytes)", kind, key[:12], len(data))
        if evict:
            self.evict()

    def entries(self) -> list[tuple[int, int, Path]]:
        """(last used in ns, bytes, path) of every entry."""
        out = []
        if not self.root.is_dir():
            return out
        for path in self.root.glob("*/*/*.entry"):
            try:
                st = path.stat()
            except OSError:
                continue
            out.append((st.st_mtime_ns, st.st_size, path))
        return out

    def evict(self) -> int:
        """Remove the least recently used entries until the cache fits its limit (and temporary files a crashed
        writer left over an hour ago); returns how many entries went."""
        entries = sorted(self.entries())
        total = sum(e[1] for e in entries)
        gone = 0
        for _, size, path in entries:
            if total <= self.limit:
                break
            self._remove(path)
            total -= size
            gone += 1
        cutoff = time.time() - 3600
        for tmp in self.root.glob("*/*/.tmp-*") if self.root.is_dir() else ():
            try:
                if tmp.stat().st_mtime < cutoff:
                    tmp.unlink()
            except OSError:
                pass
        return gone

    def info(self) -> dict:
        """Entries and bytes per kind."""
        kinds: dict[str, dict] = {}
        for _, size, path in self.entries():
            k = kinds.setdefault(path.parent.parent.name, {"entries": 0, "bytes": 0})
            k["entries"] += 1
            k["bytes"] += size
        return {"dir": str(self.root), "limit_bytes": self.limit, "kinds": kinds,
                "bytes": sum(k["bytes"] for k in kinds.values())}

    def clear(self) -> int:
        """Remove every entry (and leftover temporary files); returns how many entries."""
        entries = self.entries()
        for _, _, path in entries:
            self._remove(path)
        for tmp in self.root.glob("*/*/.tmp-*") if self.root.is_dir() else ():
            self._remove(tmp)
        return len(entries)

    @staticmethod
    def _remove(*paths: Path) -> None:
        for p in paths:
            try:
                p.unlink()
            except OSError:
                pass


#: cache roots a write failed under in this process: not tried again (one warning, not one per kernel)
_UNWRITABLE: set[Path] = set()


def _touch(path: Path) -> None:
    """Mark ``path`` used now, to the nanosecond (LRU order: writes and hits in one second stay ordered)."""
    now = time.time_ns()
    try:
        os.utime(path, ns=(now, now))
    except OSError:
        pass


def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def digest(*parts) -> str:
    """A sha256 hex key over JSON-able ``parts`` (a change to any part gives another key)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()
