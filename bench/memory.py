"""Activation memory: the planned arena against its lower bound and the naive plan, and the measured peak
resident memory of a process that loads an artifact and runs it.

    .venv/bin/python bench/memory.py                  # every zoo model, small test shapes
    .venv/bin/python bench/memory.py --full resnet18 mobilenet_v2 minilm efficientnet_lite0

Per model: ``arena_bytes / lower_bound_bytes`` (the planner's distance from the best possible),
``naive_bytes / arena_bytes`` (what one buffer per tensor would cost), the algorithm that won, and, in a
fresh process that imports only the runtime: its baseline RSS (numpy + libtvm_runtime loaded), then the
peak RSS (``VmHWM``) over loading the artifact and running it 3 times, against baseline + weights +
arena + kernel library. Writes
bench/results/memory-<time>.json.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from bench.common import compiled_zoo, save_results  # noqa: E402

_PROBE = r"""
import json, sys
import numpy as np
from edgeopt.ir_dtypes import NP_DTYPES
from edgeopt.runtime import load, tvm_cpu
tvm_cpu.ensure_runtime()  # the runtime's fixed cost (libtvm_runtime.so) belongs to the baseline
def status(key):  # VmHWM, not ru_maxrss: that one keeps the forking parent's peak across exec
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) * 1024 for l in f if l.startswith(key))
def rss():
    return status("VmRSS")
base = rss()
m = load(sys.argv[1])
xs = [np.zeros(i["shape"], NP_DTYPES[i["dtype"]]) for i in m.inputs]
for _ in range(3):
    m(*xs)
peak = status("VmHWM")
print(json.dumps({"baseline": base, "peak": peak, "after": rss(),
                  "library": m.manifest["members"]["kernels.so"]["size"]}))
"""


def main() -> None:
    rows = []
    for name, cm in compiled_zoo(__doc__):
        r = cm.report
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "model.edgeopt")
            cm.save(path)
            probe = json.loads(subprocess.run([sys.executable, "-c", _PROBE, path], check=True, capture_output=True,
                                              text=True, cwd=ROOT).stdout.strip().splitlines()[-1])
            artifact = os.path.getsize(path)
        expected = probe["baseline"] + r["weight_bytes"] + r["arena_bytes"] + probe["library"]
        row = {"model": name, "input_shapes": [i["shape"] for i in cm.plan["inputs"]], "arena_bytes": r["arena_bytes"],
               "lower_bound_bytes": r["lower_bound_bytes"], "naive_bytes": r["naive_bytes"],
               "arena_over_lower_bound": r["arena_bytes"] / max(1, r["lower_bound_bytes"]),
               "naive_over_arena": r["naive_bytes"] / max(1, r["arena_bytes"]),
               "plan_algorithm": r["plan_algorithm"], "plan_candidates": r["plan_candidates"],
               "weight_bytes": r["weight_bytes"], "artifact_bytes": artifact, "library_bytes": probe["library"],
               "rss_baseline": probe["baseline"], "rss_peak": probe["peak"],
               "rss_expected": expected, "rss_peak_over_expected": probe["peak"] / expected}
        rows.append(row)
        print(f"{name:18s} arena {_mb(row['arena_bytes']):>8} LB {_mb(row['lower_bound_bytes']):>8} "
              f"ratio {row['arena_over_lower_bound']:.3f}  naive/arena {row['naive_over_arena']:5.2f}  "
              f"{row['plan_algorithm']:24s} RSS peak {_mb(row['rss_peak']):>8} vs baseline+weights+arena+lib "
              f"{_mb(expected):>8} ({row['rss_peak_over_expected']:.2f}x)", flush=True)
    save_results("memory", rows)


def _mb(n: int) -> str:
    return f"{n / 2**20:.2f}M"


if __name__ == "__main__":
    main()
