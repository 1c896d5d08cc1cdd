"""Latency beside a busy process: edgeopt on its own thread pool and on TVM's, and ONNX Runtime, same run.

    .venv/bin/python bench/contention.py                      # int8 ResNet-18 and MobileNetV2 (~4 min)
    .venv/bin/python bench/contention.py --small --rounds 1   # a smoke run (CI's bench test)

A device rarely runs the model alone: a phone has background work, a board a camera pipeline. Each model runs,
batch 1 on 2 threads, each runtime in its own process (``bench/peer_workers.py``), in four situations:

- ``quiet``: nothing else running;
- ``nice19``: one process spinning at the lowest priority (``nice 19``), free to run on any core;
- ``busy``: one process spinning at normal priority, free to run on any core;
- ``busy_core``: one process spinning at normal priority on the last core only.

Variants: ``edgeopt`` (its pool, ``edgeopt/runtime/thread_pool.c``), ``edgeopt_tvm_pool`` (the same artifact,
``EDGEOPT_THREAD_POOL=tvm``) and ``onnxruntime`` (static QDQ int8, per-channel, 16 calibration crops, as
``bench/quant.py``). Every round times each variant in each situation (order rotated by round) for ``--seconds``
of calls, to span many of the scheduler's time slices (40 calls of MobileNetV2 last 60 ms, and such a run
sometimes went at its quiet speed beside a busy process). Reported: the median of the round medians, and per
situation the ratios edgeopt / ONNX Runtime and edgeopt / edgeopt on TVM's pool (medians of the rounds' ratios).
Writes bench/results/contention-<time>.json.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import numpy as np  # noqa: E402

from bench import quant_data as qd  # noqa: E402
from bench.common import save_results  # noqa: E402

SITUATIONS = ("quiet", "nice19", "busy", "busy_core")
VARIANTS = ("edgeopt", "edgeopt_tvm_pool", "onnxruntime")


def start_load(situation: str) -> subprocess.Popen | None:
    """The busy process of ``situation`` (None when quiet)."""
    if situation == "quiet":
        return None
    last = max(os.sched_getaffinity(0))

    def setup():
        import ctypes
        import signal

        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG: it dies with the bench, however that ends
        if situation == "nice19":
            os.nice(19)
        if situation == "busy_core":
            os.sched_setaffinity(0, {last})

    proc = subprocess.Popen([sys.executable, "-c", "while True: pass"], preexec_fn=setup)
    time.sleep(0.3)  # running before the first timed call
    return proc


def prepare(name: str, small: bool, root: str) -> str:
    """A work folder (``bench/peer_workers.py``'s layout) with the int8 artifact and ONNX Runtime's int8 model."""
    import torch

    import edgeopt
    from bench.quant_peers import export_legacy, quantize_static_qdq
    from tests.models.zoo import build

    model, (x,) = build(name, small=small)
    n = 4 if small else 16
    if small:
        calib = np.concatenate([x.numpy()] * n)
    else:
        calib = qd.calibration_and_eval(n, 16, norm="imagenet")[0]
    d = os.path.join(root, name)
    os.makedirs(d)
    c = edgeopt.compile(model, (x,), target="host", quantize="int8",
                        calibration_data=[torch.from_numpy(calib[i:i + 1]) for i in range(n)])
    c.save(os.path.join(d, "model.edgeopt"))
    np.savez(os.path.join(d, "inputs.npz"), arg0=x.numpy())
    out = c(x.numpy())
    np.save(os.path.join(d, "reference.npy"), out[0] if isinstance(out, (list, tuple)) else out)
    fp32 = os.path.join(d, "fp32.onnx")
    export_legacy(model, (x,), fp32, ["x"], {"x": {0: "b"}, "y": {0: "b"}})
    quantize_static_qdq(fp32, os.path.join(d, "model.onnx"), [{"x": calib[i:i + 4]} for i in range(0, n, 4)])
    return d


def measure(name: str, workdir: str, args) -> dict:
    from bench.peers import Worker

    workers = {v: Worker(v, name, workdir, args.small) for v in VARIANTS}
    times = {s: {v: [] for v in VARIANTS} for s in SITUATIONS}
    try:
        for r in range(args.rounds):
            for s in SITUATIONS:
                load = None
                try:
                    load = start_load(s)
                    for v in VARIANTS[r % 3:] + VARIANTS[:r % 3]:
                        times[s][v].append(statistics.median(workers[v].time(100_000, max_s=args.seconds)))
                finally:
                    if load:
                        load.kill()
                        load.wait()
                time.sleep(0.5)
    finally:
        for w in workers.values():
            w.close()
    row = {"model": name, "variant_check": {v: w.ready for v, w in workers.items()}, "round_medians_ms": times,
           "median_ms": {s: {v: round(statistics.median(t), 3) for v, t in times[s].items()} for s in SITUATIONS},
           "ratios": {}}
    for s in SITUATIONS:
        t = times[s]
        row["ratios"][s] = {
            "edgeopt / onnxruntime": round(statistics.median(a / b for a, b in zip(t["edgeopt"], t["onnxruntime"])), 3),
            "edgeopt / edgeopt_tvm_pool": round(statistics.median(
                a / b for a, b in zip(t["edgeopt"], t["edgeopt_tvm_pool"])), 3)}
    return row


def table(rows: list[dict]) -> str:
    lines = ["| model | situation | edgeopt | edgeopt, TVM's pool | ONNX Runtime | edgeopt / ORT "
             "| edgeopt / TVM pool |", "|---|---|---|---|---|---|---|"]
    for row in rows:
        for s in SITUATIONS:
            m, r = row["median_ms"][s], row["ratios"][s]
            lines.append(f"| {row['model']} | {s} | {m['edgeopt']:.2f} ms | {m['edgeopt_tvm_pool']:.2f} ms | "
                         f"{m['onnxruntime']:.2f} ms | {r['edgeopt / onnxruntime']:.2f} | "
                         f"{r['edgeopt / edgeopt_tvm_pool']:.2f} |")
    return "\n".join(lines)


def main(argv=None) -> str:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("models", nargs="*", default=["resnet18", "mobilenet_v2"])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seconds", type=float, default=2.0, help="timed calls per variant, situation and round, "
                   "for about this long (5 calls at least)")
    p.add_argument("--small", action="store_true", help="small shapes (a smoke run)")
    args = p.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory(prefix="contention-") as root:
        for name in args.models:
            rows.append(measure(name, prepare(name, args.small, root), args))
            print(f"[contention] {name}: " + ", ".join(
                f"{s} {rows[-1]['median_ms'][s]['edgeopt']:.2f} ms" for s in SITUATIONS), flush=True)
    print(table(rows))
    return save_results("contention", rows, args=vars(args), cpus=len(os.sched_getaffinity(0)))


if __name__ == "__main__":
    main()
