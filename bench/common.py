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
