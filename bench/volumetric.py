"""3-d CNNs (video): edgeopt's 3-d convs and pools (2-d kernels over depth slices) against PyTorch eager and ONNX
Runtime, in one run.

    .venv/bin/python bench/volumetric.py [--rounds 15] [--models c3d video_net]

Models (random weights: speed only): ``c3d``, a C3D-style network on a 16-frame 56x56 clip (five 3x3x3 convs, 64-256
channels, max pools over space and time); ``video_net``, the tests' small network (``tests/test_volumetric.py``) on
an 8-frame 24x24 clip. Each runs as edgeopt fp32, edgeopt static int8 (calibrated on 8 random clips), PyTorch eager
and ONNX Runtime fp32 (its TorchScript export), 2 threads each, in alternating blocks of back-to-back calls
(``bench.common.interleaved_ms``); ratios are the median over rounds of each block pair's ratio to edgeopt fp32.
Results: bench/results/volumetric-<time>.json.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench.common import interleaved_ms, paired_speedup, pin_threads, save_results  # noqa: E402


def c3d():
    import torch.nn as nn

    return nn.Sequential(nn.Conv3d(3, 32, 3, padding=1), nn.ReLU(), nn.MaxPool3d((1, 2, 2)),
                         nn.Conv3d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool3d(2),
                         nn.Conv3d(64, 128, 3, padding=1), nn.ReLU(), nn.Conv3d(128, 128, 3, padding=1), nn.ReLU(),
                         nn.MaxPool3d(2), nn.Conv3d(128, 256, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool3d(1),
                         nn.Flatten(), nn.Linear(256, 10))


def models():
    from tests.test_volumetric import video_net

    return {"c3d": (c3d, (1, 3, 16, 56, 56)), "video_net": (video_net, (1, 3, 8, 24, 24))}


def runners(build, shape) -> dict:
    import numpy as np
    import onnxruntime as ort
    import torch

    import edgeopt

    torch.manual_seed(0)
    model = build().eval()
    x = torch.randn(*shape)
    calib = [(torch.randn(*shape),) for _ in range(8)]
    fp32 = edgeopt.compile(model, (x,))
    int8 = edgeopt.compile(model, (x,), quantize="int8", calibration_data=calib)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "m.onnx")
        torch.onnx.export(model, (x,), path, dynamo=False, opset_version=17)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads, opts.inter_op_num_threads = 2, 1
        session = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    xn = x.numpy()
    with torch.no_grad():
        want = model(x).numpy()
    err = float(np.abs(fp32(xn) - want).max())

    def eager(a):
        with torch.no_grad():
            return model(torch.from_numpy(a))

    return {"edgeopt fp32": fp32, "edgeopt int8": int8, "pytorch": eager,
            "onnxruntime": lambda a: session.run(None, {name: a})}, xn, err


def main(argv=None) -> str:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="*", default=["c3d", "video_net"])
    ap.add_argument("--rounds", type=int, default=15)
    args = ap.parse_args(argv)
    pin_threads(2)
    rows = []
    for name in args.models:
        build, shape = models()[name]
        run, x, err = runners(build, shape)
        blocks = interleaved_ms(run, (x,), args.rounds, pause=0.05)
        base = blocks["edgeopt fp32"]
        for k, b in blocks.items():
            ratio, lo, hi = paired_speedup(b, base)  # edgeopt fp32's block time / this one's: invert for "x fp32"
            row = {"model": name, "runtime": k, "median_ms": statistics.median(statistics.median(r) for r in b),
                   "time_vs_edgeopt_fp32": round(1 / ratio, 3), "ci95": [round(1 / hi, 3), round(1 / lo, 3)]}
            if k == "edgeopt fp32":
                row["max_abs_diff_vs_pytorch"] = err
            rows.append(row)
            print(f"{name:10s} {k:13s} {row['median_ms']:8.2f} ms  {row['time_vs_edgeopt_fp32']:.2f}x edgeopt fp32")
    return save_results("volumetric", rows, rounds=args.rounds, threads=2)


if __name__ == "__main__":
    main()
