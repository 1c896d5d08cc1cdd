"""``edgeopt cache``: what the compile cache holds, and emptying it.

    edgeopt cache info      # its directory, entries and bytes per kind (kernels, models), its size limit
    edgeopt cache clear     # remove every entry

``EDGEOPT_CACHE_DIR`` moves it, ``EDGEOPT_CACHE=0`` turns it off, ``EDGEOPT_CACHE_MAX_MB`` bounds it.
"""

from __future__ import annotations


def add_parser(sub) -> None:
    import argparse

    p = sub.add_parser("cache", help="show or clear the on-disk compile cache", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("action", choices=["info", "clear"])


def run(args) -> str:
    from ..cache import DiskCache, cache_dir, enabled

    store = DiskCache(cache_dir())
    if args.action == "clear":
        return f"removed {store.clear()} entries from {store.root}"
    info = store.info()
    lines = [f"compile cache {info['dir']} ({'on' if enabled() else 'off: EDGEOPT_CACHE=0'}): "
             f"{info['bytes'] / 2**20:.1f} MiB of {info['limit_bytes'] / 2**20:.0f} MiB"]
    for kind, k in sorted(info["kinds"].items()):
        lines.append(f"  {kind}: {k['entries']} entries, {k['bytes'] / 2**20:.1f} MiB")
    return "\n".join(lines)
