"""What each x86-64 CPU level costs and gains on this machine, for one multi-level artifact per model.

For each model: ``target="x86-64", levels=["v3", "v4"]`` compiled once (compile seconds per level), saved;
loaded as the runtime picks (the best level this CPU runs) and with each level forced (``edgeopt.load(path,
level=...)``); the levels and a ``target="host"`` build timed in interleaved blocks in one run (medians, and each
level's time relative to v4's). Sizes: the multi-level artifact against the v3-only one (what the extra level
costs on disk). On a CPU without AVX-512 only v3 runs and is timed.

    .venv/bin/python bench/cpu_levels.py                       # resnet18 mobilenet_v2 efficientnet_lite0 minilm
    .venv/bin/python bench/cpu_levels.py --small minilm

Prints a table and writes bench/results/cpu_levels-<time>.json.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench.common import interleaved_ms, pin_threads, save_results  # noqa: E402

DEFAULT = ["resnet18", "mobilenet_v2", "efficientnet_lite0", "minilm"]
LEVELS = ["v3", "v4"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="*", default=DEFAULT)
    ap.add_argument("--small", action="store_true", help="the small test shapes instead of full size")
    ap.add_argument("--rounds", type=int, default=30, help="rounds of one block of 4 calls per build")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    pin_threads(args.threads)
    import numpy as np

    import edgeopt
    from edgeopt.errors import ArtifactError
    from tests.models.zoo import build

    rows = []
    with tempfile.TemporaryDirectory(prefix="edgeopt-levels-") as d:
        for name in args.models:
            model, inputs = build(name, small=args.small)
            x = [t.numpy() for t in inputs]
            multi = edgeopt.compile(model, inputs, target="x86-64", levels=LEVELS)
            path, v3_path = os.path.join(d, f"{name}.edgeopt"), os.path.join(d, f"{name}-v3.edgeopt")
            multi.save(path)
            edgeopt.compile(model, inputs, target="x86-64-v3").save(v3_path)
            picked = edgeopt.load(path)
            runs = {"host": edgeopt.compile(model, inputs, target="host")}
            for level in LEVELS:
                try:
                    runs[level] = edgeopt.load(path, level=level)
                except ArtifactError as e:  # this CPU cannot run the level
                    print(f"{name}: level {level} not timed: {e}")
            ref = runs["host"](*x)
            for k, m in runs.items():
                got = m(*x)
                got, want = (got, ref) if not isinstance(got, tuple) else (got[0], ref[0])
                assert np.allclose(got, want, rtol=1e-3, atol=1e-4), f"{name} {k} disagrees with host"
            blocks = interleaved_ms({k: (lambda m=m, x=x: m(*x)) for k, m in runs.items()}, (), args.rounds)
            ms = {k: statistics.median(t for b in v for t in b) for k, v in blocks.items()}
            row = {"model": name, "picked_level": picked.info["level"], "median_ms": ms,
                   "relative_to_v4": {k: v / ms["v4"] for k, v in ms.items()} if "v4" in ms else None,
                   "compile_seconds": {lv["level"]: lv["seconds"] for lv in multi.report["levels"]},
                   "library_bytes": {lv["level"]: lv["library_bytes"] for lv in multi.report["levels"]},
                   "artifact_bytes": os.path.getsize(path), "v3_only_artifact_bytes": os.path.getsize(v3_path)}
            rows.append(row)
            print(f"{name:20s} picked {row['picked_level']}  " + "  ".join(f"{k} {v:.3f} ms" for k, v in ms.items())
                  + f"  | artifact {row['artifact_bytes'] / 1e6:.2f} MB vs v3-only "
                  f"{row['v3_only_artifact_bytes'] / 1e6:.2f} MB | compile s {row['compile_seconds']}", flush=True)
    save_results("cpu_levels", rows, levels=LEVELS, small=args.small, threads=args.threads)


if __name__ == "__main__":
    main()
