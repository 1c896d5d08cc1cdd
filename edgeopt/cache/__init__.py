"""edgeopt's on-disk compile cache: kernels' object code and whole compiled models, reused by later compiles.

Two levels, each keyed by everything that decides its result (``store.digest``) and the versions of edgeopt, TVM
and edgeopt's code (``fingerprint``):

- ``kernels`` (``edgeopt.lower.object_cache``): one CPU kernel's object file, by its IR, schedule and target. Any
  compile that meets the same kernel reuses it, whatever model it came from.
- ``models`` (``edgeopt.cache.models``): a whole artifact, by the exported program (graph and weights), the
  target, the options and the passes. A hit skips everything after ``torch.export``.

``EDGEOPT_CACHE_DIR``, ``EDGEOPT_CACHE=0`` and ``EDGEOPT_CACHE_MAX_MB`` configure it (``store``);
``edgeopt cache info`` / ``edgeopt cache clear`` show and empty it.
"""

from .store import DiskCache, cache_dir, enabled

__all__ = ["DiskCache", "cache_dir", "enabled"]
