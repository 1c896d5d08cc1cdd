"""Integer concatenations: a U-Net's int8 skips joined as u8 (each part's kernel stores u8 with the join's scale)
against the same model with float joins (each part stored f32, the join quantizing).

    .venv/bin/python bench/quant_concat.py            # U-Net, 3x224x224, random weights (~1 min on 2 cores)
    .venv/bin/python bench/quant_concat.py --small    # 64x64: a smoke run

The float joins come from ``QuantConfig(quantized_residuals=False)``, which leaves a concat's parts float; the zoo's
U-Net has no residual adds, so that is the only difference between the two builds. Batch 1, 2 threads, one
process; a round times each build once (order alternating); reported: best round medians, the median of the
per-round ratios, and the summed per-kernel time of the joins (concat kernels and layout transforms of their own)
from ``compiled.profile``. Writes bench/results/quant-concat-<time>.json.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench.common import median_ms, pin_threads, save_results  # noqa: E402


def _join_ms(compiled, x) -> float:
    """Time per run spent in kernels that join (a concat among their ops) or only move data between layouts."""
    ops = {k["name"]: k["ops"] for k in compiled.report["kernels"]}
    return sum(p["median_ms"] for p in compiled.profile(x, repeat=20)
               if "concat" in ops.get(p["kernel"], ()) or set(ops.get(p["kernel"], ())) == {"layout_transform"})


def main(argv=None) -> str:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--small", action="store_true", help="64x64 inputs: a smoke run")
    args = ap.parse_args(argv)
    pin_threads(2)
    import torch

    import edgeopt
    from tests.models.zoo import build

    model, (x,) = build("unet", small=args.small)
    torch.manual_seed(0)
    calibration = [(torch.rand_like(x) * 2 - 1,) for _ in range(8)]
    builds = {"fp32": edgeopt.compile(model, (x,), target="host", cache=False, progress=False)}
    for name, residuals in (("int8, integer joins", True), ("int8, float joins", False)):
        builds[name] = edgeopt.compile(model, (x,), target="host", cache=False, progress=False,
                                       quantize=edgeopt.QuantConfig(quantized_residuals=residuals),
                                       calibration_data=calibration)
    xn = x.numpy()
    times = {k: [] for k in builds}
    names = list(builds)
    for r in range(args.rounds):
        for k in names[r % len(names):] + names[:r % len(names)]:
            times[k].append(median_ms(lambda c=builds[k]: c(xn), runs=10 if args.small else 30)["median_ms"])
    a, b = "int8, integer joins", "int8, float joins"
    rows = [{"build": k, "best_median_ms": round(min(v), 3), "round_medians_ms": [round(t, 3) for t in v],
             "join_kernels_ms": round(_join_ms(builds[k], xn), 3) if k != "fp32" else None,
             "kernels": len(builds[k].report["kernels"])} for k, v in times.items()]
    ratio = round(statistics.median(x / y for x, y in zip(times[a], times[b])), 3)
    for row in rows:
        print(f"{row['build']:>20}: {row['best_median_ms']:8.2f} ms, joins {row['join_kernels_ms']} ms")
    print(f"integer joins / float joins: {ratio}")
    return save_results("quant-concat", rows, model="unet", input_shape=list(x.shape), rounds=args.rounds,
                        integer_over_float_joins=ratio)


if __name__ == "__main__":
    main()
