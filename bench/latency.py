"""Latency of edgeopt vs PyTorch eager per model (batch 1, 2 threads, medians after warm-up).

The two run in alternating short blocks (see ``bench.common.interleaved_ms``), with a short pause before
each block so torch's OpenMP workers stop spinning; the ratio is the median of the paired block ratios,
with a 95% bootstrap interval.

    .venv/bin/python bench/latency.py                 # full-size zoo models
    .venv/bin/python bench/latency.py --small resnet18 minilm

Prints a table and writes bench/results/latency-<time>.json.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench.common import interleaved_ms, paired_speedup, pin_threads, save_results  # noqa: E402

DEFAULT = ["resnet18", "mobilenet_v2", "efficientnet_lite0", "minilm", "vit", "unet", "gpt2"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="*", default=DEFAULT)
    ap.add_argument("--small", action="store_true", help="the small test shapes instead of full size")
    ap.add_argument("--rounds", type=int, default=40, help="rounds of one block of 4 calls each")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    pin_threads(args.threads)
    import numpy as np
    import torch

    import edgeopt
    from tests.models.zoo import build

    rows = []
    for name in args.models:
        model, inputs = build(name, small=args.small)
        t0 = time.perf_counter()
        compiled = edgeopt.compile(model, inputs)
        compile_s = time.perf_counter() - t0
        np_inputs = [x.numpy() for x in inputs]
        with torch.inference_mode():
            blocks = interleaved_ms({"edgeopt": lambda c=compiled, x=np_inputs: c(*x),
                                     "torch": lambda m=model, x=inputs: m(*x)}, (), args.rounds, pause=0.05)
            ref = model(*inputs)
        ratio, lo, hi = paired_speedup(blocks["edgeopt"], blocks["torch"])  # torch time / edgeopt time
        eo_ms, pt_ms = (statistics.median(t for b in blocks[k] for t in b) for k in ("edgeopt", "torch"))
        ref = (ref if isinstance(ref, torch.Tensor) else ref[0]).numpy()
        out = compiled(*np_inputs)
        out = out if isinstance(out, np.ndarray) else out[0]
        err = float(np.abs(ref - out).max() / max(np.abs(ref).max(), 1e-6))
        rows.append({"model": name, "small": args.small, "edgeopt_ms": eo_ms,
                     "torch_eager_ms": pt_ms, "ratio_edgeopt_over_torch": 1 / ratio,
                     "ratio_ci95": [1 / hi, 1 / lo],
                     "compile_s": compile_s, "num_kernels": compiled.report["num_kernels"],
                     "max_rel_err": err, "rounds": args.rounds})
        r = rows[-1]
        print(f"{name:20s} edgeopt {r['edgeopt_ms']:9.2f} ms   torch eager {r['torch_eager_ms']:9.2f} ms   "
              f"ratio {r['ratio_edgeopt_over_torch']:5.2f}x ({1 / hi:4.2f}-{1 / lo:4.2f})   "
              f"compile {compile_s:5.1f} s   err {err:.1e}", flush=True)
    save_results("latency", rows, threads=args.threads)


if __name__ == "__main__":
    main()
