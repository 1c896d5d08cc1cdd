"""Per-call overhead of edgeopt's runtime (Python dispatch, argument packing, input/output copies) as a share
of the model's latency.

    .venv/bin/python bench/overhead.py                      # MobileNetV2, full size
    .venv/bin/python bench/overhead.py resnet18 minilm --small

Method: the model is compiled and loaded from its artifact as usual; then a second copy of it gets a
*null* kernel library, one empty kernel per real kernel with the same name and the same buffer
parameters (shapes and dtypes), so each call still packs the same arguments and the kernel entry still
checks every buffer's shape, dtype and alignment, but computes nothing. A call of the null model is the
runtime's whole overhead: input check and copy into the arena, one FFI call per plan step, output copy.
The two models run in alternating paired blocks (``bench.common.interleaved_ms``); the overhead share
is null time / real time, median of the paired ratios with a 95% interval.

Writes bench/results/overhead-<time>.json.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench.common import interleaved_ms, paired_speedup, pin_threads, save_results  # noqa: E402


def null_library(plan: dict, target) -> bytes:
    """A kernel library with one empty PrimFunc per kernel of ``plan``, with the kernel's buffer signature."""
    import tvm
    from tvm import tirx

    funcs = {}
    for step in plan["steps"]:
        if step["kernel"] in funcs:
            continue
        params = [tirx.decl_buffer(plan["values"][a]["shape"], plan["values"][a]["dtype"], name=f"arg{i}")
                  for i, a in enumerate(step["args"])]
        funcs[step["kernel"]] = tirx.PrimFunc(params, tirx.Evaluate(0)).with_attr(
            {"global_symbol": step["kernel"], "tir.noalias": True})
    executable = tvm.compile(tvm.IRModule(funcs), target=target.tvm_target())
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "null.so")
        target.export_library(executable, path)
        with open(path, "rb") as f:
            return f.read()


def with_null_kernels(model, library: bytes):
    """A copy of the loaded runtime model ``model`` whose kernels are those of ``library``."""
    import copy

    from edgeopt.runtime import tvm_cpu

    null = copy.copy(model)
    lib = tvm_cpu.load_library(library)
    null._lib = lib
    null._funcs = {k: lib[k] for k in model._funcs}
    null._local = threading.local()  # a fresh arena and call list, built from the null functions
    return null


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="*", default=["mobilenet_v2"])
    ap.add_argument("--small", action="store_true")
    ap.add_argument("--rounds", type=int, default=60)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    pin_threads(args.threads)
    from edgeopt.targets import get_target

    import edgeopt
    from tests.models.zoo import build

    rows = []
    for name in args.models:
        model, inputs = build(name, small=args.small)
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "m.edgeopt")
            edgeopt.compile(model, inputs).save(path)
            real = edgeopt.load(path)
        null = with_null_kernels(real, null_library(real.plan, get_target("host")))
        xs = [x.numpy() for x in inputs]
        runs = {"real": lambda m=real, x=xs: m(*x), "null": lambda m=null, x=xs: m(*x)}
        blocks = interleaved_ms(runs, (), args.rounds)
        ratio, lo, hi = paired_speedup(blocks["null"], blocks["real"])  # real time / null time
        real_ms, null_ms = (statistics.median(t for b in blocks[k] for t in b) for k in ("real", "null"))
        steps = len(real.plan["steps"])
        rows.append({"model": name, "small": args.small, "latency_ms": real_ms, "overhead_ms": null_ms,
                     "overhead_share": 1 / ratio, "overhead_share_ci95": [1 / hi, 1 / lo], "steps": steps,
                     "overhead_us_per_step": null_ms * 1e3 / steps, "rounds": args.rounds})
        print(f"{name:20s} latency {real_ms:7.2f} ms   runtime overhead {null_ms * 1e3:7.1f} us "
              f"({1 / ratio:.1%}, 95% CI {1 / hi:.1%}-{1 / lo:.1%})   {steps} steps, "
              f"{null_ms * 1e3 / steps:.2f} us/step", flush=True)
    save_results("overhead", rows, threads=args.threads)


if __name__ == "__main__":
    main()
