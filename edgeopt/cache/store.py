"""An on-disk, content-addressed store of compile results, shared by every process of one user.

    store = DiskCache.default()          # None when caching is off
    data = store.get("kernels", key)     # bytes, or None (missing, or damaged: then removed)
    store.put("kernels", key, data, meta={...})

Where and how much:

- ``EDGEOPT_CACHE_DIR`` (default ``$XDG_CACHE_HOME/edgeopt``, else ``~/.cache/edgeopt``) holds the entries;
- ``EDGEOPT_CACHE=0`` (or ``off``) turns caching off, as ``edgeopt.compile(..., cache=False)`` does for one compile;
- ``EDGEOPT_CACHE_MAX_MB`` (default 2048) bounds its size: after a write the least recently used entries go.

An entry is ``<kind>/<key[:2]>/<key>.bin`` (the bytes) and ``<key>.json`` (their sha256 and size, and what the
writer wants to remember). Writes go to a temporary file first and are renamed into place, so concurrent compiles
never see half an entry; a read checks the sha256, so a damaged entry is a miss (and is deleted), never wrong code.
Keys are sha256 hex digests computed by the callers (``kernel_objects``, ``models``) over everything that decides
the result.
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

    def _paths(self, kind: str, key: str) -> tuple[Path, Path]:
        if not key.isalnum() or not kind.isidentifier():
            raise ValueError(f"bad cache key {kind}/{key}")
        d = self.root / kind / key[:2]
        return d / f"{key}.bin", d / f"{key}.json"

    def get(self, kind: str, key: str) -> bytes | None:
        """The entry's bytes, or None when it is missing or damaged (a damaged entry is removed)."""
        data_path, meta_path = self._paths(kind, key)
        try:
            meta = json.loads(meta_path.read_text())
            data = data_path.read_bytes()
        except (OSError, ValueError):
            return None
        if not isinstance(meta, dict) or meta.get("sha256") != hashlib.sha256(data).hexdigest():
            log.warning("edgeopt cache: entry %s/%s is damaged; removing it", kind, key)
            self._remove(data_path, meta_path)
            return None
        try:
            os.utime(meta_path)  # recently used: evicted last
        except OSError:
            pass
        return data

    def meta(self, kind: str, key: str) -> dict | None:
        """What the writer stored beside the entry (read after a successful ``get``)."""
        try:
            meta = json.loads(self._paths(kind, key)[1].read_text())
        except (OSError, ValueError):
            return None
        return meta.get("meta") if isinstance(meta, dict) else None

    def put(self, kind: str, key: str, data: bytes, meta: dict | None = None) -> None:
        """Store ``data`` (atomically); a cache that cannot be written is only a warning, never a failed compile."""
        data_path, meta_path = self._paths(kind, key)
        record = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data), "created": time.time(),
                  "meta": meta or {}}
        try:
            data_path.parent.mkdir(parents=True, exist_ok=True)
            _write_atomic(data_path, data)
            _write_atomic(meta_path, json.dumps(record).encode())  # last: an entry exists once its record does
        except OSError as e:
            log.warning("edgeopt cache: cannot write %s (%s); compiling without it", data_path, e)
            return
        self.evict()

    def entries(self) -> list[tuple[float, int, Path, Path]]:
        """(last used, bytes, data path, record path) of every entry."""
        out = []
        if not self.root.is_dir():
            return out
        for meta_path in self.root.glob("*/*/*.json"):
            data_path = meta_path.with_suffix(".bin")
            try:
                out.append((meta_path.stat().st_mtime, data_path.stat().st_size + meta_path.stat().st_size,
                            data_path, meta_path))
            except OSError:
                continue
        return out

    def evict(self) -> int:
        """Remove the least recently used entries until the cache fits its limit; returns how many went."""
        entries = sorted(self.entries())
        total = sum(e[1] for e in entries)
        gone = 0
        for _, size, data_path, meta_path in entries:
            if total <= self.limit:
                break
            self._remove(data_path, meta_path)
            total -= size
            gone += 1
        return gone

    def info(self) -> dict:
        """Entries and bytes per kind."""
        kinds: dict[str, dict] = {}
        for _, size, data_path, _ in self.entries():
            k = kinds.setdefault(data_path.parent.parent.name, {"entries": 0, "bytes": 0})
            k["entries"] += 1
            k["bytes"] += size
        return {"dir": str(self.root), "limit_bytes": self.limit, "kinds": kinds,
                "bytes": sum(k["bytes"] for k in kinds.values())}

    def clear(self) -> int:
        """Remove every entry; returns how many."""
        entries = self.entries()
        for _, _, data_path, meta_path in entries:
            self._remove(data_path, meta_path)
        return len(entries)

    @staticmethod
    def _remove(*paths: Path) -> None:
        for p in paths:
            try:
                p.unlink()
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
