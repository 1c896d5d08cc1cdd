"""Winograd against the direct conv: each 3x3 stride-1 layer shape alone, then whole models, timed in one run.

    .venv/bin/python bench/winograd.py                     # layer shapes, then resnet18
    .venv/bin/python bench/winograd.py --layers-only --rounds 20
    .venv/bin/python bench/winograd.py --models resnet18 --rounds 50

Layers: a 1x1 conv + ReLU, then the layer (C -> C, 3x3, padding 1) + ReLU, compiled three times, with
``winograd_conv`` forced to the direct conv (tile 0), to F(2x2, 3x3) and to F(4x4, 3x3); only the 3x3 layer's
kernel is timed, reading the blocked activation the 1x1 conv wrote, as inside a model (a model input would
reach it through a layout-transform prologue). The three run in alternating blocks of back-to-back calls
(its weights hot in cache: inside a model they may come from memory), and each speed-up is the median over
rounds of the paired ratio direct / Winograd (``bench.common.paired_speedup``), with a 95% bootstrap
interval. ``chosen`` is the tile the default pipeline picks for the shape (``winograd_tile``).
Models: the default pipeline against the same pipeline with ``winograd_conv`` disabled, timed the same way
(whole model calls, twice ``--rounds``).
Prints tables and writes bench/results/winograd-<time>.json.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench.common import interleaved_ms, paired_speedup, pin_threads, save_results  # noqa: E402

#: (channels, height = width): ResNet-18's 3x3 stride-1 layers and two narrow ones (the MIN_CHANNELS cut)
LAYERS = [(64, 56), (128, 28), (256, 14), (512, 7), (16, 32), (32, 16)]


def conv_kernel_call(compiled):
    """A no-argument call of the compiled model's last conv kernel alone (its buffers hold the last run's data)."""
    model = compiled._runtime_model()
    ctx = model._context()
    i = max(i for i, s in enumerate(model.plan["steps"]) if "conv2d" in s["kernel"])
    fn, args = ctx.calls[i]
    return lambda: fn(*args)


def layer_row(channels: int, size: int, rounds: int, block: int) -> dict:
    import numpy as np
    import torch
    from edgeopt.passes.winograd_conv import WinogradConv, winograd_tile

    import edgeopt
    from edgeopt.pipeline import default_pipeline

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(channels, channels, 1), torch.nn.ReLU(),
                              torch.nn.Conv2d(channels, channels, 3, padding=1), torch.nn.ReLU()).eval()
    x = torch.randn(1, channels, size, size)
    with torch.inference_mode():
        ref = net(x).numpy()
    calls, errors = {}, {}
    for tile in (0, 2, 4):
        passes = [WinogradConv(tile) if p == "winograd_conv" else p for p in default_pipeline(2)]
        compiled = edgeopt.compile(net, (x,), passes=passes)
        y = compiled(x.numpy())
        errors[tile] = float(np.abs(y - ref).max() / np.abs(ref).max())
        calls[tile] = conv_kernel_call(compiled)
    blocks = interleaved_ms({t: (lambda f=f: f()) for t, f in calls.items()}, [], rounds, block)
    row = {"channels": channels, "size": size, "chosen_tile": winograd_tile(channels, channels, size, size),
           "rel_err": errors, "rounds": rounds, "block": block}
    for t in (0, 2, 4):
        row[f"tile{t}_ms"] = statistics.median(c for b in blocks[t] for c in b)
    for t in (2, 4):
        s, lo, hi = paired_speedup(blocks[t], blocks[0])
        row[f"speedup_f{t}"], row[f"speedup_f{t}_ci95"] = s, [lo, hi]
    return row


def model_row(name: str, small: bool, rounds: int, block: int) -> dict:
    import numpy as np

    import edgeopt
    from edgeopt.lower.build import anchor_op
    from tests.models.zoo import build

    model, inputs = build(name, small=small)
    x = [t.numpy() for t in inputs]
    on = edgeopt.compile(model, inputs)
    off = edgeopt.compile(model, inputs, disable=["winograd_conv"])
    used = sum(anchor_op(n) == "conv2d_winograd" for n in on.graph.nodes)
    diff = float(np.abs(on(*x) - off(*x)).max())
    blocks = interleaved_ms({"on": on, "off": off}, x, rounds, block)
    s, lo, hi = paired_speedup(blocks["on"], blocks["off"])
    return {"model": name, "small": small, "winograd_convs": used, "max_abs_diff_vs_direct": diff,
            "on_ms": statistics.median(c for b in blocks["on"] for c in b),
            "off_ms": statistics.median(c for b in blocks["off"] for c in b),
            "speedup": s, "speedup_ci95": [lo, hi], "rounds": rounds, "block": block}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="*", default=["resnet18"])
    ap.add_argument("--layers-only", action="store_true")
    ap.add_argument("--small", action="store_true", help="the models' small test shapes")
    ap.add_argument("--rounds", type=int, default=40)
    ap.add_argument("--block", type=int, default=6)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    pin_threads(args.threads)
    layers, models = [], []
    print(f"{'layer':>12s} {'direct ms':>10s} {'F2 ms':>8s} {'F4 ms':>8s} {'F2 speed-up (95% CI)':>24s} "
          f"{'F4 speed-up (95% CI)':>24s} chosen")
    for c, s in LAYERS:
        r = layer_row(c, s, args.rounds, args.block)
        layers.append(r)
        ci = {t: "{:.2f}x ({:.2f}-{:.2f})".format(r[f"speedup_f{t}"], *r[f"speedup_f{t}_ci95"]) for t in (2, 4)}
        print(f"{c:>5d}@{s:<3d}x{s:<3d}{r['tile0_ms']:10.3f} {r['tile2_ms']:8.3f} {r['tile4_ms']:8.3f} "
              f"{ci[2]:>24s} {ci[4]:>24s} F{r['chosen_tile'] or '-'}", flush=True)
    for name in [] if args.layers_only else args.models:
        r = model_row(name, args.small, args.rounds * 2, args.block)
        models.append(r)
        print(f"{name}: {r['winograd_convs']} Winograd convs; {r['on_ms']:.2f} ms vs direct {r['off_ms']:.2f} ms: "
              "speed-up {:.3f}x (95% CI {:.3f}-{:.3f}); max |diff| {:.2e}".format(
                  r["speedup"], *r["speedup_ci95"], r["max_abs_diff_vs_direct"]), flush=True)
    save_results("winograd", layers, models=models, threads=args.threads)


if __name__ == "__main__":
    main()
