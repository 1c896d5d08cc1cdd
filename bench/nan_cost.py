"""What torch's NaN semantics cost: each kernel built with ``edgeopt.lower.nan_math`` (NaN-propagating
max/min/clamp/ReLU and reductions) against the same kernel built with TVM's plain ``max``/``min`` (NaN -> 0),
timed in the same run.

    .venv/bin/python bench/nan_cost.py                    # every case
    .venv/bin/python bench/nan_cost.py relu conv_relu     # some

"plain" patches ``nan_math`` back to ``te.max``/``te.min`` and topi's identity (the flash attention kernel's
running max is a plain max in both: a NaN score makes its row NaN through its exponential), then compiles the same
model; everything else is identical. The two builds run in alternating blocks (``bench.common.interleaved_ms``);
the ratio is the median over rounds of plain/nan block medians with a 95% bootstrap interval (above 1: the
NaN-correct build is faster). Each build also runs an input with a few NaNs: the table counts the NaNs in torch's
output and in each build's (the "nan" build must match torch). Prints a table and writes
bench/results/nan_cost-<time>.json.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench.common import case_arguments, interleaved_ms, module_of, paired_speedup, save_results  # noqa: E402


def cases():
    import torch
    import torch.nn.functional as F

    torch.manual_seed(0)
    big = torch.randn(1, 64, 112, 112)
    conv3 = torch.nn.Sequential(torch.nn.Conv2d(64, 64, 3, padding=1), torch.nn.ReLU())
    conv1 = torch.nn.Sequential(torch.nn.Conv2d(64, 128, 1), torch.nn.ReLU6())
    attn = module_of(lambda x: F.scaled_dot_product_attention(x, x * 0.5, x))
    return {
        "relu": (module_of(F.relu), big),
        "hardtanh": (module_of(F.hardtanh), big),
        "hardswish": (module_of(F.hardswish), big),
        "maximum": (module_of(lambda x: torch.maximum(x, x * -0.5 + 1)), big),
        "max_pool": (module_of(lambda x: F.max_pool2d(x, 3, 2, 1)), big),
        "amax": (module_of(lambda x: x.amax(-1)), big),
        "softmax": (module_of(lambda x: torch.softmax(x, -1)), torch.randn(1, 12, 128, 128)),
        "conv3x3_relu": (conv3, torch.randn(1, 64, 56, 56)),
        "conv1x1_relu6": (conv1, torch.randn(1, 64, 56, 56)),
        "attention": (attn, torch.randn(1, 12, 128, 64)),
    }


@contextlib.contextmanager
def plain_max():
    """Build kernels with TVM's own max/min (the formulation before nan_math) inside this block."""
    import tvm
    from tvm import te

    from edgeopt.lower import build, nan_math

    saved = dict(vars(nan_math))
    old_max = te.comm_reducer(lambda a, b: te.max(a, b), lambda t: tvm.tirx.min_value(t), name="max")
    old_min = te.comm_reducer(lambda a, b: te.min(a, b), lambda t: tvm.tirx.max_value(t), name="min")
    patch = {"relu": lambda x: te.max(x, tvm.tirx.const(0, nan_math.dtype_of(x))),
             "lower_bound": te.max, "upper_bound": te.min, "maximum": te.max, "minimum": te.min,
             "max_reduce": old_max, "min_reduce": old_min, "lowest": lambda dt: tvm.tirx.min_value(dt),
             "reduce_max": nan_math._reduce(old_max, "max"), "reduce_min": nan_math._reduce(old_min, "min")}
    vars(nan_math).update(patch)
    build._KERNEL_CACHE.clear()
    try:
        yield
    finally:
        vars(nan_math).update(saved)
        build._KERNEL_CACHE.clear()


def main() -> None:
    args = case_arguments(__doc__, rounds=40)
    import numpy as np
    import torch

    import edgeopt

    all_cases = cases()
    rows = []
    print(f"{'case':16s} {'nan ms':>8s} {'plain ms':>9s} {'plain/nan':>10s}  95% interval    NaN outputs: torch  "
          "nan plain  schedule")
    for name in args.cases or list(all_cases):
        model, x = all_cases[name]
        nan_build = edgeopt.compile(model.eval(), (x,), cache=False)
        with plain_max():  # patched code the compile cache cannot see: compile everything
            plain_build = edgeopt.compile(model.eval(), (x,), cache=False)
        xs = (x.numpy(),)
        poisoned = x.clone()
        poisoned.view(-1)[:: max(1, x.numel() // 7)] = float("nan")  # a few NaNs: who keeps them?
        nans = {k: int(np.isnan(np.asarray(b(poisoned.numpy()))).sum()) for k, b in
                (("nan", nan_build), ("plain", plain_build))}
        with torch.no_grad():
            nans["torch"] = int(model(poisoned).isnan().sum())
        t = interleaved_ms({"nan": nan_build, "plain": plain_build}, xs, args.rounds, args.block)
        ratio, lo, hi = paired_speedup(t["nan"], t["plain"])
        med = {k: statistics.median(np.concatenate(v)) for k, v in t.items()}
        sched = ";".join(k["schedule"] for k in nan_build.report["kernels"])
        print(f"{name:16s} {med['nan']:8.3f} {med['plain']:9.3f} {ratio:10.3f}  [{lo:.3f}, {hi:.3f}]  "
              f"{nans['torch']:>5d} {nans['nan']:>5d} {nans['plain']:>5d}  {sched[:50]}")
        rows.append({"case": name, "nan_ms": med["nan"], "plain_ms": med["plain"], "plain_over_nan": ratio,
                     "interval": [lo, hi], "nan_outputs": nans, "schedules": sched})
    save_results("nan_cost", rows, rounds=args.rounds, block=args.block, threads=args.threads)


if __name__ == "__main__":
    main()
