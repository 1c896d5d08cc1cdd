"""Fusion on vs off: latency and kernel count of each model compiled both ways, timed in the same run.

    .venv/bin/python bench/fusion.py                       # full-size resnet18 mobilenet_v2 minilm efficientnet_lite0
    .venv/bin/python bench/fusion.py --small resnet18

"off" is the default pipeline with the fusion passes disabled (``disable=FUSION``); clean-up and
BatchNorm folding stay on in both. The two builds run in alternating blocks of back-to-back calls
(on x10, off x10, off x10, on x10, ...) so that changes in machine speed hit both alike; the first call
of each block is not counted (it runs on the other build's caches). The speed-up is the median over
rounds of the ratio of the two builds' block medians in that round, with a 95% bootstrap interval;
the medians of all calls are printed beside it.
Prints a table and writes bench/results/fusion-<time>.json.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench.common import interleaved_ms, paired_speedup, pin_threads, save_results  # noqa: E402

DEFAULT = ["resnet18", "mobilenet_v2", "minilm", "efficientnet_lite0"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="*", default=DEFAULT)
    ap.add_argument("--small", action="store_true", help="the small test shapes instead of full size")
    ap.add_argument("--rounds", type=int, default=100, help="rounds of one block of calls per build")
    ap.add_argument("--block", type=int, default=4,
                    help="calls per block (the first is not counted); short blocks pair the builds closely in time")
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
        blocks = interleaved_ms({"on": on, "off": off}, x, args.rounds, args.block)
        times = {k: [t for b in v for t in b] for k, v in blocks.items()}
        speedup, lo, hi = paired_speedup(blocks["on"], blocks["off"])
        r = {"model": name, "small": args.small, "traced_ops": on.report["traced_ops"],
             "kernels_on": on.report["num_kernels"], "kernels_off": off.report["num_kernels"],
             "fused_groups": len(on.report["fused_groups"]),
             "on_ms": statistics.median(times["on"]), "off_ms": statistics.median(times["off"]),
             "on_min_ms": min(times["on"]), "off_min_ms": min(times["off"]), "rounds": args.rounds,
             "block": args.block,
             "calls": len(times["on"]), "speedup": speedup, "speedup_ci95": [lo, hi],
             "max_abs_diff_on_vs_off": diff}
        rows.append(r)
        print(f"{name:20s} traced {r['traced_ops']:4d}  kernels on {r['kernels_on']:4d} / off {r['kernels_off']:4d}   "
              f"fusion on {r['on_ms']:8.2f} ms   off {r['off_ms']:8.2f} ms   speed-up {speedup:5.3f}x "
              f"(95% CI {lo:5.3f}-{hi:5.3f})", flush=True)
    save_results("fusion", rows, threads=args.threads)


def _list(y):
    return list(y) if isinstance(y, (list, tuple)) else [y]


if __name__ == "__main__":
    main()
