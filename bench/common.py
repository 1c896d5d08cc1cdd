"""Timing helpers shared by the benchmarks: medians after warm-up, machine facts for the results JSON."""

from __future__ import annotations

import os
import platform
import statistics
import time


def pin_threads(n: int = 2) -> None:
    """Both TVM's pool and torch's use ``n`` threads (call before loading either)."""
    os.environ["TVM_NUM_THREADS"] = str(n)
    os.environ["OMP_NUM_THREADS"] = str(n)
    import torch

    torch.set_num_threads(n)


def case_arguments(doc: str, rounds: int):
    """Parse a benchmark over named cases (``[cases...] --rounds --block --threads``) and pin its threads."""
    import argparse

    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("cases", nargs="*")
    ap.add_argument("--rounds", type=int, default=rounds)
    ap.add_argument("--block", type=int, default=6)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    pin_threads(args.threads)
    return args


def module_of(fn):
    """A ``torch.nn.Module`` in eval mode whose forward is ``fn`` (a function of one tensor)."""
    import torch

    class Fn(torch.nn.Module):
        def forward(self, x):
            return fn(x)

    return Fn().eval()


def median_ms(fn, runs: int = 30, warmup: int = 5) -> dict:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e3)
    return {"median_ms": statistics.median(times), "min_ms": min(times), "runs": runs}


def machine() -> dict:
    import torch

    cpu = ""
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), "")
    except OSError:
        pass
    import tvm

    return {"cpu": cpu, "llvm_cpu": tvm.target.codegen.llvm_get_system_cpu(), "machine": platform.machine(),
            "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "load_average": os.getloadavg(), "torch": torch.__version__, "tvm": tvm.__version__,
            "time": time.strftime("%Y-%m-%dT%H:%M:%S")}


def save_results(kind: str, rows: list, **extra) -> str:
    """Write ``{"machine", **extra, "results": rows}`` to bench/results/<kind>-<time>.json (or the folder
    ``$EDGEOPT_BENCH_RESULTS``); return its path."""
    import json

    out_dir = os.environ.get("EDGEOPT_BENCH_RESULTS") or os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                                      "results")
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, f"{kind}-{time.strftime('%Y%m%d-%H%M%S')}.json")
    with open(path, "w") as f:
        json.dump({"machine": machine(), **extra, "results": rows}, f, indent=1)
    print("wrote", path)
    return path


def compiled_zoo(doc: str):
    """Parse ``[models...] [--full]`` (default: every zoo model, small test shapes) and yield
    ``(name, compiled model)`` for each, compiled with the default pipeline."""
    import argparse

    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="*")
    ap.add_argument("--full", action="store_true", help="full-size models instead of the small test shapes")
    args = ap.parse_args()
    import edgeopt
    from tests.models.zoo import ZOO, build

    for name in args.models or list(ZOO):
        model, inputs = build(name, small=not args.full)
        yield name, edgeopt.compile(model, inputs)


def interleaved_ms(models: dict, x, rounds: int, block: int = 4, warmup: int = 5, pause: float = 0.0) -> dict:
    """Per-block lists of per-call times (ms) of each model: ``rounds`` rounds, each running every model for a
    block of ``block`` back-to-back calls (order flipped every round), so that drift in machine speed hits
    every model alike. The first call of each block, which runs on caches the other model left, is not
    counted: a deployed model runs back to back, and that steady state is what is timed. ``pause`` seconds
    of sleep before each block let another runtime's spinning worker threads (torch's OpenMP) go idle."""
    for _ in range(warmup):
        for m in models.values():
            m(*x)
    times = {k: [] for k in models}
    keys = list(models)
    for i in range(rounds):
        for k in (keys if i % 2 else keys[::-1]):
            if pause:
                time.sleep(pause)
            models[k](*x)  # the block's first call: caches still hold the other model's data
            calls = []
            for _ in range(block - 1):
                t = time.perf_counter()
                models[k](*x)
                calls.append((time.perf_counter() - t) * 1e3)
            times[k].append(calls)
    return times


def paired_speedup(on_blocks: list, off_blocks: list, resamples: int = 2000) -> tuple[float, float, float]:
    """Median over rounds of (off block median / on block median), with a 95% bootstrap interval: each ratio
    compares two blocks run next to each other, so slow phases of the machine cancel out."""
    import numpy as np


    ratios = np.array([statistics.median(b) / statistics.median(a) for a, b in zip(on_blocks, off_blocks)])
    rng = np.random.default_rng(0)
    boot = np.median(rng.choice(ratios, (resamples, len(ratios))), axis=1)
    return float(np.median(ratios)), float(np.percentile(boot, 2.5)), float(np.percentile(boot, 97.5))
