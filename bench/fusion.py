"""Fusion on vs off: latency and kernel count of each model compiled both ways, timed in the same run.

    .venv/bin/python bench/fusion.py                       # full-size resnet18 mobilenet_v2 minilm efficientnet_lite0
    .venv/bin/python bench/fusion.py --small resnet18

"off" is the default pipeline with the fusion passes disabled (``disable=FUSION``); clean-up and
BatchNorm folding stay on in both. The two builds run in alternating blocks of back-to-back calls
(on x10, off x10, off x10, on x10, ...) so that changes in machine speed hit both alike; the first call
of each block is not counted (it runs on the other build's caches); medians of the per-call times.
Prints a table and writes bench/results/fusion-<time>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench.common import machine, pin_threads  # noqa: E402

DEFAULT = ["resnet18", "mobilenet_v2", "minilm", "efficientnet_lite0"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="*", default=DEFAULT)
    ap.add_argument("--small", action="store_true", help="the small test shapes instead of full size")
    ap.add_argument("--runs", type=int, default=90, help="timed calls of each build (in blocks of 10)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    pin_threads(args.threads)
    import numpy as np

    import edgeopt
    from edgeopt.pipeline import FUSION
    from tests.models.zoo import build

    rows = []
    for name in args.models:
        model, inputs = build(name, small=args.small)
        x = [t.numpy() for t in inputs]
        on = edgeopt.compile(model, inputs)
        off = edgeopt.compile(model, inputs, disable=FUSION)
        diff = max(float(np.abs(a - b).max()) for a, b in zip(_list(on(*x)), _list(off(*x))))
        times = interleaved_ms({"on": on, "off": off}, x, args.runs)
        r = {"model": name, "small": args.small, "traced_ops": on.report["traced_ops"],
             "kernels_on": on.report["num_kernels"], "kernels_off": off.report["num_kernels"],
             "fused_groups": len(on.report["fused_groups"]),
             "on_ms": statistics.median(times["on"]), "off_ms": statistics.median(times["off"]),
             "on_min_ms": min(times["on"]), "off_min_ms": min(times["off"]), "calls": args.runs,
             "max_abs_diff_on_vs_off": diff}
        r["speedup"] = r["off_ms"] / r["on_ms"]
        rows.append(r)
        print(f"{name:20s} traced {r['traced_ops']:4d}  kernels on {r['kernels_on']:4d} / off {r['kernels_off']:4d}   "
              f"fusion on {r['on_ms']:8.2f} ms   off {r['off_ms']:8.2f} ms   speed-up {r['speedup']:5.2f}x",
              flush=True)
    out_dir = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, f"fusion-{time.strftime('%Y%m%d-%H%M%S')}.json")
    with open(path, "w") as f:
        json.dump({"machine": machine(), "threads": args.threads, "results": rows}, f, indent=1)
    print("wrote", path)


def interleaved_ms(models: dict, x, calls: int, block: int = 10, warmup: int = 5) -> dict:
    """Per-call times (ms) of each model, in alternating blocks of ``block`` back-to-back calls (order
    flipped every round) so that drift in machine speed hits every model alike. The first call of each
    block, which runs on caches the other model left, is not counted: a deployed model runs back to back,
    and that steady state is what is timed."""
    for _ in range(warmup):
        for m in models.values():
            m(*x)
    times = {k: [] for k in models}
    keys = list(models)
    rounds = max(1, -(-calls // (block - 1)))
    for i in range(rounds):
        for k in (keys if i % 2 else keys[::-1]):
            models[k](*x)  # the block's first call: caches still hold the other model's data
            for _ in range(block - 1):
                t = time.perf_counter()
                models[k](*x)
                times[k].append((time.perf_counter() - t) * 1e3)
    return times


def _list(y):
    return list(y) if isinstance(y, (list, tuple)) else [y]


if __name__ == "__main__":
    main()
