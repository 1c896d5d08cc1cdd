"""Latency of edgeopt vs PyTorch eager per model (batch 1, 2 threads, medians after warm-up).

    .venv/bin/python bench/latency.py                 # full-size zoo models
    .venv/bin/python bench/latency.py --small resnet18 minilm

Prints a table and writes bench/results/latency-<time>.json.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench.common import median_ms, pin_threads, save_results  # noqa: E402

DEFAULT = ["resnet18", "mobilenet_v2", "efficientnet_lite0", "minilm", "vit", "unet", "gpt2"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="*", default=DEFAULT)
    ap.add_argument("--small", action="store_true", help="the small test shapes instead of full size")
    ap.add_argument("--runs", type=int, default=30)
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
        time.sleep(0.5)  # let torch's OpenMP spinners settle before timing TVM, and back
        eo = median_ms(lambda c=compiled, x=np_inputs: c(*x), args.runs)
        time.sleep(0.5)
        with torch.inference_mode():
            pt = median_ms(lambda m=model, x=inputs: m(*x), args.runs)
            ref = model(*inputs)
        ref = (ref if isinstance(ref, torch.Tensor) else ref[0]).numpy()
        out = compiled(*np_inputs)
        out = out if isinstance(out, np.ndarray) else out[0]
        err = float(np.abs(ref - out).max() / max(np.abs(ref).max(), 1e-6))
        rows.append({"model": name, "small": args.small, "edgeopt_ms": eo["median_ms"],
                     "torch_eager_ms": pt["median_ms"], "ratio_edgeopt_over_torch": eo["median_ms"] / pt["median_ms"],
                     "compile_s": compile_s, "num_kernels": compiled.report["num_kernels"],
                     "max_rel_err": err, "runs": args.runs})
        r = rows[-1]
        print(f"{name:20s} edgeopt {r['edgeopt_ms']:9.2f} ms   torch eager {r['torch_eager_ms']:9.2f} ms   "
              f"ratio {r['ratio_edgeopt_over_torch']:6.2f}x   compile {compile_s:5.1f} s   err {err:.1e}", flush=True)
    save_results("latency", rows, threads=args.threads)


if __name__ == "__main__":
    main()
