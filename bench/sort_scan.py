"""topk, sort, median (the IR's ``argtopk``) and cumsum: edgeopt's CPU TIR kernels (``edgeopt.lower.merge_sort``,
``edgeopt.lower.scan``) against PyTorch eager, and against the GPUs' TE rules built for the CPU (pairwise ranks,
masked sums: what CPUs ran before the TIR kernels) where those fit.

    .venv/bin/python bench/sort_scan.py                       # every case
    .venv/bin/python bench/sort_scan.py vocab_top50 moe_top2  # some

Each case is one op on one input, timed in the same process in alternating blocks (``bench.common.interleaved_ms``);
the ratios are medians over rounds of paired block medians, with 95% bootstrap intervals (below 1: edgeopt is
faster). Every build's output is checked against torch's first. Prints a table and writes
bench/results/sort_scan-<time>.json.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench.common import case_arguments, interleaved_ms, module_of, paired_speedup, save_results  # noqa: E402

#: the TE rules compare or add n x n elements per row: only rows up to this long
TE_RULE_MAX = 4096


def cases():
    import torch

    g = torch.Generator().manual_seed(0)

    def randn(*shape):
        return torch.randn(*shape, generator=g)

    top = {"moe_top2": (2, (512, 8)), "moe_top8_of_64": (8, (512, 64)), "vocab_top50": (50, (1, 32000)),
           "detector_top100": (100, (8, 8400)), "detr_top300": (300, (1, 24000))}
    table = {name: ("argtopk", lambda x, k=k: torch.topk(x, k), randn(*shape)) for name, (k, shape) in top.items()}
    table.update({  # name: (IR op, function, input)
        "sort_rows_1024": ("argtopk", lambda x: torch.sort(x, stable=True), randn(16, 1024)),
        "sort_5000": ("argtopk", lambda x: torch.sort(x, descending=True, stable=True), randn(4, 5000)),
        "median_rows_2048": ("argtopk", lambda x: torch.median(x, -1), randn(8, 2048)),
        "mask_positions_4096": ("cumsum", lambda m: m.long().cumsum(-1) * m - 1, torch.rand(4, 4096) > 0.1),
        "vocab_cumsum": ("cumsum", lambda p: p.cumsum(-1), torch.rand(1, 32000, generator=g)),
        "cumsum_inner_axis": ("cumsum", lambda x: x.cumsum(1), randn(8, 512, 64)),
    })
    # (IR op, model, input, the length of the axis it sorts or sums along)
    return {name: (op, module_of(fn), x, x.shape[1]) for name, (op, fn, x) in table.items()}


@contextlib.contextmanager
def te_rule_on_cpu(op: str):
    """Build ``op`` with its TE rule (the GPUs' form), not its CPU TIR kernel, inside this block."""
    from edgeopt.lower import build

    saved = build.TIR_KERNELS.pop(op)
    build._KERNEL_CACHE.clear()
    try:
        yield
    finally:
        build.TIR_KERNELS[op] = saved
        build._KERNEL_CACHE.clear()


def _check(name: str, build, x, want) -> None:
    """topk's and median's values are torch's and its positions hold them (torch orders ties its own way); a
    cumsum is torch's to 1e-5 of its scale (the TE rule sums float32 in float32, the TIR kernel and torch in double)."""
    import numpy as np

    got = build(x.numpy())
    if not isinstance(got, (list, tuple)):
        ref = want[0].numpy()
        np.testing.assert_allclose(got, ref, rtol=0, atol=1e-5 * float(np.abs(ref).max()), err_msg=name)
        return
    assert np.array_equal(got[0], want[0].numpy(), equal_nan=True), f"{name}: values differ from torch's"
    values, at = (v if v.ndim == x.ndim else v[..., None] for v in got[:2])  # median: one per row
    assert np.array_equal(np.take_along_axis(x.numpy(), at, -1), values, equal_nan=True), name


def main() -> None:
    args = case_arguments(__doc__, rounds=20)
    import numpy as np
    import torch

    import edgeopt

    all_cases = cases()
    rows = []
    print(f"{'case':20s} {'edgeopt ms':>10s} {'torch ms':>9s} {'edgeopt/torch':>14s}  95% interval    "
          f"{'TE rule ms':>10s} {'tir/TE rule':>11s}")
    for name in args.cases or list(all_cases):
        op, model, x, n = all_cases[name]
        with torch.no_grad():
            want = model(x)
            want = list(want) if isinstance(want, tuple) else [want]
        builds = {"edgeopt": edgeopt.compile(model.eval(), (x,), cache=False)}
        if n <= TE_RULE_MAX:
            with te_rule_on_cpu(op):  # patched code the compile cache cannot see: compile everything
                builds["te_rule"] = edgeopt.compile(model.eval(), (x,), cache=False)
        xs = (x.numpy(),)
        for b in builds.values():
            _check(name, b, x, want)

        def eager(m=model, t=x):
            with torch.no_grad():
                return m(t)

        t = interleaved_ms({**builds, "torch": lambda *_: eager()}, xs, args.rounds, args.block)
        med = {k: statistics.median(np.concatenate(v)) for k, v in t.items()}
        ratio, lo, hi = paired_speedup(t["torch"], t["edgeopt"])  # edgeopt / torch
        row = {"case": name, "op": op, "shape": list(x.shape), "edgeopt_ms": med["edgeopt"], "torch_ms": med["torch"],
               "edgeopt_over_torch": ratio, "interval": [lo, hi],
               "schedules": [k["schedule"] for k in builds["edgeopt"].report["kernels"]]}
        rule = ""
        if "te_rule" in builds:
            tir_over_te_rule = paired_speedup(t["te_rule"], t["edgeopt"])[0]
            row.update(te_rule_ms=med["te_rule"], tir_over_te_rule=tir_over_te_rule)
            rule = f"{med['te_rule']:10.3f} {tir_over_te_rule:11.4f}"
        print(f"{name:20s} {med['edgeopt']:10.3f} {med['torch']:9.3f} {ratio:14.3f}  [{lo:.3f}, {hi:.3f}]  {rule}")
        rows.append(row)
    save_results("sort_scan", rows, rounds=args.rounds, block=args.block, threads=args.threads)


if __name__ == "__main__":
    main()
