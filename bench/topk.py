"""topk, sort and median (the IR's ``argtopk``): edgeopt's CPU merge sort against PyTorch eager, and against the
pairwise-rank form (the GPU rule, which the frontend used on CPUs too before the merge sort) where that fits.

    .venv/bin/python bench/topk.py                       # every case
    .venv/bin/python bench/topk.py vocab_top50 moe_top2  # some

Each case is one op on one input, timed in the same process in alternating blocks (``bench.common.interleaved_ms``);
the ratios are medians over rounds of paired block medians, with 95% bootstrap intervals (below 1: edgeopt is
faster). Every build's output is checked against torch's first. Prints a table and writes
bench/results/topk-<time>.json.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench.common import interleaved_ms, paired_speedup, pin_threads, save_results  # noqa: E402

#: the pairwise form compares n x n elements per row: only rows up to this long
PAIRWISE_MAX = 2048


def cases():
    import torch

    class Fn(torch.nn.Module):
        def __init__(self, fn):
            super().__init__()
            self.fn = fn

        def forward(self, x):
            return self.fn(x)

    g = torch.Generator().manual_seed(0)
    return {  # name: (model, input, row length)
        "moe_top2": (Fn(lambda x: torch.topk(x, 2)), torch.randn(512, 8, generator=g), 8),
        "moe_top8_of_64": (Fn(lambda x: torch.topk(x, 8)), torch.randn(512, 64, generator=g), 64),
        "vocab_top50": (Fn(lambda x: torch.topk(x, 50)), torch.randn(1, 32000, generator=g), 32000),
        "detector_top100": (Fn(lambda x: torch.topk(x, 100)), torch.randn(8, 8400, generator=g), 8400),
        "detr_top300": (Fn(lambda x: torch.topk(x, 300)), torch.randn(1, 24000, generator=g), 24000),
        "sort_rows_1024": (Fn(lambda x: torch.sort(x, stable=True)), torch.randn(16, 1024, generator=g), 1024),
        "sort_5000": (Fn(lambda x: torch.sort(x, descending=True, stable=True)),
                      torch.randn(4, 5000, generator=g), 5000),
        "median_rows_2048": (Fn(lambda x: torch.median(x, -1)), torch.randn(8, 2048, generator=g), 2048),
    }


@contextlib.contextmanager
def pairwise_on_cpu():
    """Build argtopk with the pairwise-rank TE rule (no merge sort) inside this block."""
    from edgeopt.lower import build

    saved = build.TIR_KERNELS.pop("argtopk")
    build._KERNEL_CACHE.clear()
    try:
        yield
    finally:
        build.TIR_KERNELS["argtopk"] = saved
        build._KERNEL_CACHE.clear()


def _same(got, want) -> bool:
    import numpy as np

    got = got if isinstance(got, (list, tuple)) else [got]
    return all(np.array_equal(np.asarray(a), b.numpy(), equal_nan=b.is_floating_point()) for a, b in zip(got, want))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("cases", nargs="*")
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--block", type=int, default=6)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    pin_threads(args.threads)
    import numpy as np
    import torch

    import edgeopt

    all_cases = cases()
    rows = []
    print(f"{'case':18s} {'edgeopt ms':>10s} {'torch ms':>9s} {'edgeopt/torch':>14s}  95% interval    "
          f"{'pairwise ms':>11s} {'merge/pairwise':>14s}")
    for name in args.cases or list(all_cases):
        model, x, n = all_cases[name]
        with torch.no_grad():
            want = list(model(x))
        builds = {"edgeopt": edgeopt.compile(model.eval(), (x,), cache=False)}
        if n <= PAIRWISE_MAX:
            with pairwise_on_cpu():  # patched code the compile cache cannot see: compile everything
                builds["pairwise"] = edgeopt.compile(model.eval(), (x,), cache=False)
        xs = (x.numpy(),)
        # torch.topk orders ties its own way: the values must match, the positions hold those values
        for k, b in builds.items():
            got = b(*xs)
            assert _same(got[:1], want[:1]), f"{name}: {k} values differ from torch's"
            values, at = (v if v.ndim == x.ndim else v[..., None] for v in got[:2])  # median: one per row
            assert np.array_equal(np.take_along_axis(x.numpy(), at, -1), values, equal_nan=True), name

        def eager(m=model, t=x):
            with torch.no_grad():
                return m(t)

        t = interleaved_ms({**builds, "torch": lambda *_: eager()}, xs, args.rounds, args.block)
        med = {k: statistics.median(np.concatenate(v)) for k, v in t.items()}
        ratio, lo, hi = paired_speedup(t["torch"], t["edgeopt"])  # edgeopt / torch
        row = {"case": name, "shape": list(x.shape), "edgeopt_ms": med["edgeopt"], "torch_ms": med["torch"],
               "edgeopt_over_torch": ratio, "interval": [lo, hi],
               "schedules": [k["schedule"] for k in builds["edgeopt"].report["kernels"]]}
        pair = ""
        if "pairwise" in builds:
            merge_over_pairwise = paired_speedup(t["pairwise"], t["edgeopt"])[0]
            row.update(pairwise_ms=med["pairwise"], merge_over_pairwise=merge_over_pairwise)
            pair = f"{med['pairwise']:11.3f} {merge_over_pairwise:14.3f}"
        print(f"{name:18s} {med['edgeopt']:10.3f} {med['torch']:9.3f} {ratio:14.3f}  [{lo:.3f}, {hi:.3f}]  {pair}")
        rows.append(row)
    save_results("topk", rows, rounds=args.rounds, block=args.block, threads=args.threads)


if __name__ == "__main__":
    main()
