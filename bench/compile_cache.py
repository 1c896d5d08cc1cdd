"""How much the on-disk compile cache saves: ResNet-18 (224x224) compiled cold, then again.

    .venv/bin/python bench/compile_cache.py [--rounds 3] [--small]

Each round uses a fresh, empty cache directory and clears edgeopt's in-memory kernel memo, then times:

- ``cold``: the first compile (nothing cached);
- ``kernels``: a second compile after the whole-model entry is removed, so only kernels' object code is reused
  (what a compile of an edited model, or with other passes, gets from the cache);
- ``model``: a second compile of the same model (the whole artifact reused; ``torch.export`` still runs).

All three in one process, after a warm-up compile of another model (torch.export's and TVM's first-use costs are
paid before, not counted). Then the same as separate processes (``edgeopt.compile`` called once each, torch and TVM
imported fresh), which is what running a build script twice costs. Medians; results in bench/results.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

CHILD = """
import json, sys, time
t0 = time.perf_counter()
import torch, edgeopt
sys.path.insert(0, {root!r})
from tests.models.zoo import resnet18
model, x = resnet18(small={small})
t1 = time.perf_counter()
c = edgeopt.compile(model, x)
t2 = time.perf_counter()
print(json.dumps({{"compile_s": t2 - t1, "process_s": t2 - t0, "cache": c.report["cache"]}}))
"""


def one_round(model, x, small: bool) -> dict:
    import edgeopt
    from edgeopt.cache import DiskCache
    from edgeopt.lower import build

    with tempfile.TemporaryDirectory(prefix="edgeopt-bench-cache-") as d:
        os.environ["EDGEOPT_CACHE_DIR"] = d
        build._KERNEL_CACHE.clear()
        t0 = time.perf_counter()
        cold = edgeopt.compile(model, x)
        t1 = time.perf_counter()
        store = DiskCache.default()
        for _, _, path in store.entries():  # drop the whole-model entry: kernels only
            if path.parent.parent.name == "models":
                path.unlink()
        build._KERNEL_CACHE.clear()
        t2 = time.perf_counter()
        kernels = edgeopt.compile(model, x)
        t3 = time.perf_counter()
        build._KERNEL_CACHE.clear()
        hit = edgeopt.compile(model, x)
        t4 = time.perf_counter()
        assert kernels.report["cache"]["kernels_compiled"] == 0 and hit.report["cache"]["model"] == "hit"
        return {"cold_s": t1 - t0, "kernels_s": t3 - t2, "model_s": t4 - t3,
                "kernels": cold.report["num_unique_kernels"],
                "cold_report": {k: cold.report[k] for k in ("frontend_seconds", "lower_seconds", "codegen_seconds")}}


def processes(small: bool, rounds: int) -> dict:
    rows = []
    for _ in range(rounds):
        with tempfile.TemporaryDirectory(prefix="edgeopt-bench-cache-") as d:
            env = {**os.environ, "EDGEOPT_CACHE_DIR": d}
            code = CHILD.format(root=ROOT, small=small)
            runs = [json.loads(subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                                              check=True).stdout.strip().splitlines()[-1]) for _ in range(2)]
            assert runs[1]["cache"]["model"] == "hit"
            rows.append({"cold_compile_s": runs[0]["compile_s"], "warm_compile_s": runs[1]["compile_s"],
                         "cold_process_s": runs[0]["process_s"], "warm_process_s": runs[1]["process_s"]})
    return {k: statistics.median(r[k] for r in rows) for k in rows[0]}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--small", action="store_true", help="the small ResNet-18 (a quick check of the script)")
    args = ap.parse_args(argv)
    import torch

    import edgeopt
    from bench.common import save_results
    from tests.models.zoo import resnet18

    with tempfile.TemporaryDirectory() as d:  # warm-up: torch.export's and TVM's first use, another model
        os.environ["EDGEOPT_CACHE_DIR"] = d
        edgeopt.compile(torch.nn.Sequential(torch.nn.Linear(4, 4)).eval(), (torch.randn(1, 4),))
    model, x = resnet18(small=args.small)
    rows = [one_round(model, x, args.small) for _ in range(args.rounds)]
    med = {k: statistics.median(r[k] for r in rows) for k in ("cold_s", "kernels_s", "model_s")}
    proc = processes(args.small, args.rounds)
    summary = {"model": f"resnet18{' (small)' if args.small else ''}", "kernels": rows[0]["kernels"], **med,
               "speedup_kernels": med["cold_s"] / med["kernels_s"], "speedup_model": med["cold_s"] / med["model_s"],
               **{f"process_{k}": v for k, v in proc.items()},
               "process_speedup_compile": proc["cold_compile_s"] / proc["warm_compile_s"],
               "process_speedup_total": proc["cold_process_s"] / proc["warm_process_s"]}
    path = save_results("compile-cache", rows, summary=summary)
    print(f"ResNet-18{' (small)' if args.small else ''}, {rows[0]['kernels']} distinct kernels, median of "
          f"{args.rounds} rounds, in one process (torch/TVM warmed up):")
    print(f"  first compile (empty cache)        {med['cold_s']:7.2f} s")
    print(f"  again, kernels' object code cached {med['kernels_s']:7.2f} s   {summary['speedup_kernels']:5.1f}x faster")
    print(f"  again, whole model cached          {med['model_s']:7.2f} s   {summary['speedup_model']:5.1f}x faster")
    print("As separate processes (edgeopt.compile call / whole script with imports):")
    print(f"  first  {proc['cold_compile_s']:6.2f} s / {proc['cold_process_s']:6.2f} s")
    print(f"  second {proc['warm_compile_s']:6.2f} s / {proc['warm_process_s']:6.2f} s   "
          f"{summary['process_speedup_compile']:.1f}x / {summary['process_speedup_total']:.1f}x faster")
    print(f"results: {path}")
    return summary


if __name__ == "__main__":
    main()
