"""int8 x int8 -> int32 linear kernels on x86 (edgeopt.lower.int8_dot) against fp32, on MiniLM's linear shapes.

    .venv/bin/python bench/int8_dot.py [--processes 3] [--rounds 15] [--sweep] [--shapes all|big|gemv]

Kernels (all on weights packed beforehand; activations already u8 (or int16 for avx2-x16); output int32 / fp32):
  fp32-numpy    numpy/OpenBLAS ``x @ w.T`` (same thread count)
  fp32-tvm      fp32 linear, the same compute and tile as int8 "plain-g1" (16-lane fp32 FMA, weight [N/16, K, 16]),
                target znver4 (znver3 on a CPU without AVX-512)
  fp32-tvm-avx2 the same built for znver3 with 8 lanes, weight [N/8, K, 8] (ymm FMA: the fp32 figure to hold the
                AVX2 int8 paths against)
  vnni512       tensorized vpdpbusd zmm (16 lanes x 4), target znver4
  vnni256       tensorized vpdpbusd ymm (8 lanes x 4; EVEX here, {vex} on AVX-VNNI CPUs), target znver4
  avx2-ubsw     tensorized vpmaddubsw + vpmaddwd by ones (8 lanes x 4), exact for 7-bit weights (|w| <= 64: its
                weights are the same ones clipped to that range), target znver3
  avx512-ubsw   the same on zmm registers (16 lanes x 4; AVX-512 without VNNI), target skylake-avx512
  avx2          tensorized vpmaddwd (8 lanes x 2, exact for any int8 weight), target znver3 (it runs on Zen 4 too)
  avx2-x16      the same with the activation handed over as int16 (0..255), widened by its producer (not timed)
  plain-g4      untensorized, vectorized, the same packed weight as vnni512 ([N/16, K/4, 16, 4]), target znver4
  plain-g1      untensorized, weight [N/16, K, 16] (k-major panel), target znver4
  plain-g1-avx2 the same built for znver3 (8 lanes, weight [N/8, K, 8])
``--sweep`` adds other register tiles (rows x vectors) of vnni512, vnni256, avx512-ubsw, avx2-ubsw, avx2, avx2-x16 as
"<kernel>-<r>x<v>".

Timing: 2 threads (TVM_NUM_THREADS=2, OPENBLAS_NUM_THREADS=2; ``--threads 1`` for one). In each process every kernel
of a shape is built and checked first, then timed in ``--rounds`` interleaved rounds (each round times every kernel
once, as the mean of enough calls to fill ~10 ms), so load from other jobs hits all kernels alike (numpy is timed
after them, in its own phase: OpenBLAS's spinning workers would otherwise steal the cores TVM's pool needs); a
kernel's figure for that process is the median over its rounds. ``--processes`` fresh processes do this; the JSON
keeps every process's median, and the printed/stored ``median_ms`` is the median over processes, with their min..max
(``gops_range``) and the best process (``gops_best_process``: on a shared 2-core VM a 2-thread kernel stalls
whenever another job holds a core, so the spread is mostly other jobs). GOP/s = 2*M*N*K / median_ms. The 1-min load
average is stored per process. Before each process the driver waits (at most ``--quiet-timeout`` s) for a 1-s sample
with ``--min-idle`` % idle CPU, and stores the idle % it saw.
Results: bench/results/int8_dot-<YYYYMMDD-HHMMSS>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

SHAPES = [(128, 384, 384), (128, 384, 1536), (128, 1536, 384), (1, 384, 384), (1, 384, 1536), (1, 1536, 384)]
#: name -> (path for build_int8_linear, mcpu, extra keyword arguments)
INT8_KERNELS = {
    "vnni512": ("vnni512", "znver4", {}),
    "vnni256": ("vnni256", "znver4", {}),
    "avx512-ubsw": ("avx512-ubsw", "skylake-avx512", {}),
    "avx2-ubsw": ("avx2-ubsw", "znver3", {}),
    "avx2": ("avx2", "znver3", {}),
    "avx2-x16": ("avx2-x16", "znver3", {}),
    "plain-g4": ("plain", "znver4", {"plain_group": 4}),
    "plain-g1": ("plain", "znver4", {"plain_group": 1}),
    "plain-g1-avx2": ("plain", "znver3", {"plain_group": 1}),
}
SWEEP_BIG = [(2, 2), (4, 1), (4, 2), (4, 4), (6, 2), (6, 4), (8, 2)]
SWEEP_GEMV = [(1, 1), (1, 2), (1, 4), (1, 8)]


def cpuinfo() -> dict:
    """model name / family / model / stepping and the x86 flags that matter here, from /proc/cpuinfo."""
    info, keys = {}, {"model name", "cpu family", "model", "stepping", "flags"}
    with open("/proc/cpuinfo") as f:
        for ln in f:
            k, _, v = ln.partition(":")
            k = k.strip()
            if k in keys and k not in info:
                info[k] = v.strip()
            if not ln.strip() and info:
                break
    flags = set(info.pop("flags", "").split())
    info["flags"] = sorted(flags & {"avx2", "avx512f", "avx512vl", "avx512bw", "avx512_vnni", "avx_vnni", "fma"})
    return info


# ------------------------------------------------------------------------------------------------ one process
def _target(mcpu: str):
    import tvm

    return tvm.target.Target({"kind": "llvm", "mcpu": mcpu, "num-cores": 2})


def _build_int8(name, path, mcpu, kw, M, K, N, x, w, ref):
    import numpy as np
    import tvm

    from edgeopt.lower import int8_dot as D

    t0 = time.perf_counter()
    ex, info = D.build_int8_linear(M, K, N, _target(mcpu), path, **kw)
    build_s = time.perf_counter() - t0
    limit = D.weight_limit(info["intrin"]) if info["intrin"] else 128
    if limit < 128:  # 7-bit weights: the same ones, clipped
        w = np.clip(w, -limit, limit).astype(np.int8)
        ref = x.astype(np.int64) @ w.astype(np.int64).T
    xp = np.zeros((M, info["Kp"]), info["x_dtype"])
    xp[:, :K] = x
    y = tvm.runtime.tensor(np.zeros((M, info["Np"]), np.int32))
    args = [tvm.runtime.tensor(xp), tvm.runtime.tensor(D.pack_int8_weight(w, info["lanes"], info["group"])), y]
    ex.mod["main"](*args)
    asm = D.assembly(ex)
    meta = {"exact": bool(np.array_equal(y.numpy()[:, :N], ref)), "build_s": round(build_s, 3), "mcpu": mcpu,
            "rows": info["rows"], "vectors": info["vectors"], "lanes": info["lanes"], "group": info["group"],
            "asm_vpdpbusd": asm.count("vpdpbusd"), "asm_vpmaddwd": asm.count("vpmaddwd"),
            "asm_vpmaddubsw": asm.count("vpmaddubsw"),
            "asm_rsp_refs": asm.count("(%rsp)")}
    return ex.mod, args, meta


def _build_fp32(M, K, N, x, w, mcpu):
    import numpy as np
    import tvm

    from edgeopt.lower import int8_dot as D

    lanes = 16 if mcpu == "znver4" else 8  # one zmm / ymm per vector
    rows, vectors = D.default_tile("plain", M, N, _target(mcpu))
    func = D.int8_linear_func(M, K, N, lanes, 1, rows=min(rows, M), x_dtype="float32", w_dtype="float32",
                              acc_dtype="float32")
    func, rows, vectors = D.schedule_linear_plain(func, vec=lanes, rows=rows, vectors=vectors)
    ex = tvm.compile(tvm.IRModule({"main": func}), target=_target(mcpu))
    xf, wf = x.astype(np.float32), w.astype(np.float32)
    y = tvm.runtime.tensor(np.zeros((M, N), np.float32))
    args = [tvm.runtime.tensor(xf), tvm.runtime.tensor(D.pack_int8_weight(wf, lanes, 1)), y]
    ex.mod["main"](*args)
    ref = xf.astype(np.float64) @ wf.astype(np.float64).T
    err = float(np.abs(y.numpy() - ref).max() / max(np.abs(ref).max(), 1e-6))
    return ex.mod, args, {"rel_err": err, "rows": rows, "vectors": vectors, "lanes": lanes, "mcpu": mcpu}


class _NumpyTimer:
    def __init__(self, x, w):
        import numpy as np

        self.x, self.wt = x.astype(np.float32), np.ascontiguousarray(w.astype(np.float32).T)
        self.out = np.empty((x.shape[0], w.shape[0]), np.float32)

    def __call__(self, number):
        import numpy as np

        t = time.perf_counter()
        for _ in range(number):
            np.matmul(self.x, self.wt, out=self.out)
        return (time.perf_counter() - t) / number


def _tvm_timer(mod, args):
    import tvm

    def run(number):
        return mod.time_evaluator("main", tvm.cpu(), number=number, repeat=1)(*args).mean

    return run


def one_process(shapes, rounds: int, sweep: bool, only: set | None) -> list:
    import numpy as np

    flags = set(cpuinfo()["flags"])
    runs = {"znver4": {"avx512_vnni", "avx512vl", "avx512f"} <= flags,
            "skylake-avx512": {"avx512bw", "avx512vl", "avx512f"} <= flags}
    rng = np.random.default_rng(0)
    rows_out = []
    for M, K, N in shapes:
        x = rng.integers(0, 256, (M, K), dtype=np.uint8)
        w = rng.integers(-128, 128, (N, K), dtype=np.int8)
        ref = x.astype(np.int64) @ w.astype(np.int64).T
        specs = dict(INT8_KERNELS)
        if sweep:
            for r, v in (SWEEP_GEMV if M == 1 else SWEEP_BIG):
                for base in ("vnni512", "vnni256", "avx512-ubsw", "avx2-ubsw", "avx2", "avx2-x16"):
                    path, mcpu, _ = INT8_KERNELS[base]
                    specs[f"{base}-{r}x{v}"] = (path, mcpu, {"rows": r, "vectors": v})
        names = ["fp32-numpy", "fp32-tvm", "fp32-tvm-avx2", *specs]
        if only:
            names = [n for n in names if n in only or n.split("-")[0] in only]
        cases = {}
        for name in names:
            if name in specs and not runs.get(specs[name][1], True):
                continue  # would die with SIGILL here
            try:
                if name == "fp32-numpy":
                    cases[name] = (_NumpyTimer(x, w), {})
                elif name.startswith("fp32-tvm"):
                    mcpu = "znver4" if runs["znver4"] and name == "fp32-tvm" else "znver3"
                    mod, args, meta = _build_fp32(M, K, N, x, w, mcpu)
                    cases[name] = (_tvm_timer(mod, args), meta)
                else:
                    path, mcpu, kw = specs[name]
                    mod, args, meta = _build_int8(name, path, mcpu, kw, M, K, N, x, w, ref)
                    cases[name] = (_tvm_timer(mod, args), meta)
            except Exception as e:  # keep going: one failing kernel should not lose the others' figures
                rows_out.append({"kernel": name, "M": M, "K": K, "N": N,
                                 "error": f"{type(e).__name__}: {str(e)[-300:]}"})
        number = {}
        for name, (timer, _) in cases.items():  # calibrate: ~10 ms per sample
            for _ in range(3):
                timer(1)
            number[name] = max(1, int(0.010 / max(timer(3), 1e-7)))
        time.sleep(0.5)  # let OpenBLAS's workers (calibrated above) go to sleep
        samples = {name: [] for name in cases}
        order = [n for n in cases if n != "fp32-numpy"]
        for r in range(rounds):
            for name in order[r % len(order):] + order[:r % len(order)]:  # rotate who goes first
                samples[name].append(cases[name][0](number[name]) * 1e3)
        if "fp32-numpy" in cases:  # its own phase: OpenBLAS's spinning workers would steal TVM's cores
            time.sleep(0.5)
            for _ in range(rounds):
                samples["fp32-numpy"].append(cases["fp32-numpy"][0](number["fp32-numpy"]) * 1e3)
            time.sleep(0.5)
        for name, (_, meta) in cases.items():
            ts = samples[name]
            rows_out.append({"kernel": name, "M": M, "K": K, "N": N, "median_ms": statistics.median(ts),
                             "min_ms": min(ts), "max_ms": max(ts), "number": number[name], "rounds": rounds, **meta})
    return rows_out


# ------------------------------------------------------------------------------------------------ driver
def _idle_pct(seconds: float = 1.0) -> float:
    """CPU idle % over ``seconds`` (all cores), from /proc/stat."""
    def sample():
        with open("/proc/stat") as f:
            vals = [int(v) for v in f.readline().split()[1:]]
        return vals[3] + vals[4], sum(vals)  # idle + iowait, total

    i0, t0 = sample()
    time.sleep(seconds)
    i1, t1 = sample()
    return 100.0 * (i1 - i0) / max(t1 - t0, 1)


def wait_quiet(min_idle: float, timeout: float) -> float:
    """Wait (at most ``timeout`` s) for a 1-s sample with >= ``min_idle`` % idle CPU; return the last idle %."""
    end = time.time() + timeout
    idle = _idle_pct()
    while idle < min_idle and time.time() < end:
        idle = _idle_pct()
    return idle


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--processes", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--sweep", action="store_true", help="also time other register tiles")
    ap.add_argument("--shapes", default="all", choices=["all", "big", "gemv"])
    ap.add_argument("--only", default="", help="comma-separated kernel names (or their first word) to run")
    ap.add_argument("--threads", type=int, default=2, choices=[1, 2],
                    help="threads for TVM and OpenBLAS (1 is less disturbed by other jobs on a 2-core machine)")
    ap.add_argument("--min-idle", type=float, default=90.0, help="quiet gate: CPU idle %% wanted before a process")
    ap.add_argument("--quiet-timeout", type=float, default=30.0, help="quiet gate: max wait per process (s)")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    for var in ("TVM_NUM_THREADS", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"):  # before tvm / numpy load them
        os.environ[var] = str(args.threads)
    shapes = [s for s in SHAPES if args.shapes == "all" or (s[0] == 1) == (args.shapes == "gemv")]
    only = set(filter(None, args.only.split(",")))
    if args.child:
        print(json.dumps(one_process(shapes, args.rounds, args.sweep, only)))
        return
    per_process, loads, idles = [], [os.getloadavg()[0]], []
    for p in range(args.processes):
        idles.append(round(wait_quiet(args.min_idle, args.quiet_timeout), 1))
        cmd = [sys.executable, os.path.abspath(__file__), "--child", "--threads", str(args.threads),
               "--rounds", str(args.rounds), "--shapes",
               args.shapes, "--only", args.only] + (["--sweep"] if args.sweep else [])
        out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        if out.returncode != 0:
            print(out.stderr[-3000:], file=sys.stderr)
            raise SystemExit(f"process {p} failed ({out.returncode})")
        per_process.append(json.loads(out.stdout.strip().splitlines()[-1]))
        loads.append(os.getloadavg()[0])
        print(f"process {p + 1}/{args.processes} done (idle {idles[-1]}% before it; load average "
              f"{loads[-1]:.2f} after)", file=sys.stderr, flush=True)
    merged = []
    for i, row in enumerate(per_process[0]):
        runs = [pp[i] for pp in per_process]
        assert all(r["kernel"] == row["kernel"] and r["M"] == row["M"] for r in runs)
        r = dict(row)
        if "median_ms" in row:
            meds = [x["median_ms"] for x in runs]
            gop = 2.0 * r["M"] * r["N"] * r["K"] / 1e9
            r.update(median_ms=statistics.median(meds), process_medians_ms=meds, min_ms=min(x["min_ms"] for x in runs),
                     max_ms=max(x["max_ms"] for x in runs), processes=len(runs),
                     gops=round(gop / (statistics.median(meds) / 1e3), 1),
                     gops_range=[round(gop / (max(meds) / 1e3), 1), round(gop / (min(meds) / 1e3), 1)],
                     gops_best_process=round(gop / (min(meds) / 1e3), 1),
                     load_average_after=os.getloadavg()[0])
            if "exact" in row:
                r["exact"] = all(x["exact"] for x in runs)
        merged.append(r)
        if "median_ms" in r:
            print(f"M={r['M']:4d} K={r['K']:5d} N={r['N']:5d} {r['kernel']:18s} {r['median_ms']:8.4f} ms "
                  f"{r['gops']:7.1f} GOP/s [{r['gops_range'][0]:.0f}-{r['gops_range'][1]:.0f}]"
                  + (f" exact={r['exact']}" if "exact" in r else "")
                  + (f" rel_err={r['rel_err']:.1e}" if "rel_err" in r else "")
                  + (f" tile {r['rows']}x{r['vectors']}" if "rows" in r else ""), flush=True)
        else:
            print(f"M={r['M']:4d} K={r['K']:5d} N={r['N']:5d} {r['kernel']:18s} ERROR {r.get('error')}", flush=True)
    from bench.common import save_results

    save_results("int8_dot", merged, cpuinfo=cpuinfo(), threads=args.threads, load_averages_1min=loads,
                 idle_pct_before_each_process=idles,
                 processes=args.processes, rounds=args.rounds, sweep=args.sweep,
                 ops="GOP = 2*M*N*K; int8 results are exact int32 (checked against numpy int64 in every process)")


if __name__ == "__main__":
    main()
