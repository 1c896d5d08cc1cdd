"""target="vulkan" on this machine's Vulkan device: agreement with PyTorch in fp32 and fp16, compile time, the
first call (shader and pipeline creation), per-call latency and memory, beside PyTorch eager on the CPU.

    .venv/bin/python bench/vulkan.py                                 # the CNNs and MiniLM, small shapes
    .venv/bin/python bench/vulkan.py resnet18 --full --calls 5
    .venv/bin/python bench/vulkan.py mobilenet_v2 minilm --quantize int8 int8-weight int4-weight

``--quantize`` adds quantized builds: their weight bytes beside fp32's (8-bit values are stored four to a 32-bit
word: WGSL has no 8-bit integers), time and error. An image model is measured on a real photo crop, and its static
int8 is calibrated on 8 others (MiniLM: 8 batches of real sentences).

On a machine without a GPU the device is Mesa's lavapipe, a software rasterizer that runs the shaders on the
CPU: its latencies say how a correctness target behaves, not how a GPU would, and the ratio to PyTorch is given
only so that the numbers have a scale. ``rel_err`` is the max abs difference to PyTorch's fp32 output, relative
to the output's scale. Writes bench/results/vulkan-<time>.json.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench.common import median_ms, pin_threads, save_results  # noqa: E402

MODELS = ["resnet18", "mobilenet_v2", "efficientnet_lite0", "minilm"]


def _crops(name: str, inputs):
    """Nine real photo crops shaped like an image model's input (None for other models): the first is measured, the
    other eight calibrate."""
    from bench.quant_data import photo_crops, to_array

    if not (len(inputs) == 1 and inputs[0].ndim == 4 and inputs[0].shape[1] == 3):
        return None
    size = inputs[0].shape[-1]
    return to_array(photo_crops(9, size, seed=3), "lite0" if name == "efficientnet_lite0" else "imagenet")


def measured(name: str, inputs) -> tuple:
    """The input every build is measured on: an image model's held-out photo crop (its int8 build is calibrated on
    the others: a random input lies outside the calibration data's ranges), else the zoo's example inputs."""
    import torch

    crops = _crops(name, inputs)
    return tuple(inputs) if crops is None else (torch.from_numpy(crops[:1]),)


def calibration(name: str, inputs) -> list:
    """Eight batches shaped like ``inputs``: real photo crops for an image model, real sentences for MiniLM."""
    import torch

    from bench.quant_data import english_sentences, minilm_batch

    crops = _crops(name, inputs)
    if crops is not None:
        return [torch.from_numpy(crops[i:i + 1]) for i in range(1, 9)]
    seq = inputs[0].shape[1]
    sentences = english_sentences(64)
    out = []
    for i in range(8):
        ids, mask = minilm_batch(sentences[8 * i:8 * i + inputs[0].shape[0]], seq)
        out.append(tuple(torch.from_numpy(a).to(x.dtype) for a, x in zip((ids, mask), inputs)))
    return out


def row(name: str, small: bool, calls: int, modes=()) -> dict:
    import numpy as np
    import torch

    import edgeopt
    from tests.models.zoo import build

    model, inputs = build(name, small=small)
    inputs = measured(name, inputs)
    xs = [x.numpy() for x in inputs]
    with torch.no_grad():
        ref = model(*inputs)
    ref = (ref if isinstance(ref, (tuple, list)) else (ref,))[0].numpy()
    out = {"model": name, "small": small,
           "torch_eager_ms": median_ms(lambda: model(*inputs), runs=calls, warmup=1)["median_ms"]}
    for precision in ("fp32", "fp16", *modes):
        t = time.perf_counter()
        if precision in modes:
            kw = {"quantize": precision, "calibration_data": calibration(name, inputs) if precision == "int8" else None}
        else:
            kw = {"precision": precision}
        compiled = edgeopt.compile(model, inputs, target="vulkan", **kw)
        compile_s = time.perf_counter() - t
        t = time.perf_counter()
        got = compiled(*xs)
        first_s = time.perf_counter() - t
        got = (got if isinstance(got, tuple) else (got,))[0]
        r = compiled.report
        out[precision] = {
            "compile_s": round(compile_s, 2), "first_call_s": round(first_s, 2),
            "ms": median_ms(lambda c=compiled: c(*xs), runs=calls, warmup=1)["median_ms"],
            "rel_err": float(np.abs(got.astype(np.float64) - ref).max() / max(np.abs(ref).max(), 1e-6)),
            "kernels": r["num_kernels"], "shaders": r["num_unique_kernels"], "weight_bytes": r["weight_bytes"],
            "arena_bytes": r["arena_bytes"], "naive_bytes": r["naive_bytes"]}
        out[precision]["weight_ratio"] = round(r["weight_bytes"] / out["fp32"]["weight_bytes"], 4)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="*", default=MODELS)
    ap.add_argument("--full", action="store_true", help="full-size models (slow on lavapipe)")
    ap.add_argument("--calls", type=int, default=10, help="timed calls per model and precision")
    ap.add_argument("--quantize", nargs="*", default=[], choices=["int8", "int8-dynamic", "int8-weight", "int4-weight"],
                    help="quantized builds to add")
    args = ap.parse_args()
    pin_threads()
    os.environ.setdefault("WGPU_BACKEND_TYPE", "Vulkan")
    from edgeopt.runtime.vulkan import adapter_description

    device = adapter_description()
    print("Vulkan device:", device)
    rows = []
    print(f"{'model':20s} {'torch ms':>9s} {'fp32 ms':>9s} {'fp32 err':>9s} {'fp16 ms':>9s} {'fp16 err':>9s} "
          f"{'compile s':>9s} {'1st call s':>10s} {'arena KB':>9s} {'naive KB':>9s}")
    for name in args.models:
        r = row(name, not args.full, args.calls, args.quantize)
        rows.append(r)
        a, b = r["fp32"], r["fp16"]
        print(f"{name:20s} {r['torch_eager_ms']:9.2f} {a['ms']:9.2f} {a['rel_err']:9.1e} {b['ms']:9.2f} "
              f"{b['rel_err']:9.1e} {a['compile_s']:9.1f} {a['first_call_s']:10.1f} {a['arena_bytes'] / 1e3:9.0f} "
              f"{a['naive_bytes'] / 1e3:9.0f}")
        for mode in args.quantize:
            q = r[mode]
            print(f"  {mode:18s} {q['ms']:9.2f} ms, error {q['rel_err']:.1e}, weights {q['weight_bytes'] / 1e3:.0f} KB "
                  f"= {q['weight_ratio']:.3f}x fp32's {a['weight_bytes'] / 1e3:.0f} KB")
    save_results("vulkan", rows, device=device, calls=args.calls)


if __name__ == "__main__":
    main()
