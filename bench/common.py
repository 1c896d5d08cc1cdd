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
    """Write ``{"machine", **extra, "results": rows}`` to bench/results/<kind>-<time>.json; return its path."""
    import json

    out_dir = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
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
