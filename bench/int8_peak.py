"""How close int8 convs run to this CPU's int8 dot-product peak: the peak of the instruction edgeopt's int8 kernels
use here, and an int8 CNN's convs (each kernel timed alone) and whole calls as a share of it.

    .venv/bin/python bench/int8_peak.py [--model resnet18] [--threads 1 2] [--target x86-64-v3] [--small]

Peak: a C loop of 12 independent accumulators of the dot-product instruction (no loads), built with gcc and
OpenMP for this CPU: ``vpdpbusd zmm`` (AVX-512 VNNI: 64 u8 x i8 products a call), ``vpdpbusd ymm`` (AVX-VNNI: 32),
``vpmaddubsw ymm`` + ``vpmaddwd`` by ones + ``vpaddd`` (AVX2 on 7-bit weights: 32; ``zmm``, AVX-512 without VNNI:
64) or ``vpmaddwd ymm`` (AVX2 on 8-bit weights: 16 i16 products); best of 5 runs of ~0.2 s. ``--target`` (default:
this CPU) picks the build, and with it the instruction (``x86-64-v3``: AVX2's; ``x86-64-v4``: its zmm form). A
model's MACs are counted from its IR (each conv / linear: output elements x input channels per group x window),
the zoo's full-size weights (random; MobileNetV2's pretrained), calibrated on random data (speed only). Whole-call
time: median of 20 calls in each of 5 rounds, best round. Results: bench/results/int8_peak-<time>.json.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench.common import save_results  # noqa: E402

#: instruction -> (gcc flags, the statement on accumulator a{i}, MACs per statement, vector type, set1, reduce).
#: vpdpbusd reads its accumulator; vpmaddubsw / vpmaddwd do not, so each accumulator gets a weight register w{i} of
#: its own (on one shared x and w, gcc computed the product once an iteration and timed 12 vpaddd), and only the
#: vpaddd chains through it, as in the kernels
KERNELS = {
    "vpdpbusd-zmm": ("-mavx512f -mavx512vnni", "a{i} = _mm512_dpbusd_epi32(a{i}, x, w);", 64, "__m512i",
                     "_mm512_set1_epi32", "_mm512_reduce_add_epi32(a{i})"),
    "vpdpbusd-ymm": ("-mavx2 -mavxvnni", "a{i} = _mm256_dpbusd_avx_epi32(a{i}, x, w);", 32, "__m256i",
                     "_mm256_set1_epi32", "_mm256_extract_epi32(a{i}, 0)"),
    "vpmaddubsw-zmm": ("-mavx512bw", "a{i} = _mm512_add_epi32(a{i}, _mm512_madd_epi16(_mm512_maddubs_epi16(x, w{i}), "
                       "_mm512_set1_epi16(1)));", 64, "__m512i", "_mm512_set1_epi32", "_mm512_reduce_add_epi32(a{i})"),
    "vpmaddubsw-ymm": ("-mavx2", "a{i} = _mm256_add_epi32(a{i}, _mm256_madd_epi16(_mm256_maddubs_epi16(x, w{i}), "
                       "_mm256_set1_epi16(1)));", 32, "__m256i", "_mm256_set1_epi32", "_mm256_extract_epi32(a{i}, 0)"),
    "vpmaddwd-ymm": ("-mavx2", "a{i} = _mm256_add_epi32(a{i}, _mm256_madd_epi16(x, w{i}));", 16, "__m256i",
                     "_mm256_set1_epi32", "_mm256_extract_epi32(a{i}, 0)"),
}
#: edgeopt's int8_dot path -> the peak loop of its instruction
BY_PATH = {"vnni512": "vpdpbusd-zmm", "vnni256": "vpdpbusd-ymm", "avx512-ubsw": "vpmaddubsw-zmm",
           "avx2-ubsw": "vpmaddubsw-ymm", "avx2": "vpmaddwd-ymm"}
ACCUMULATORS = 12  # 6 where each needs a weight register too, in AVX2's 16 ymm


def _flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as f:
            return set(next((ln.split(":", 1)[1].split() for ln in f if ln.startswith("flags")), []))
    except OSError:
        return set()


def instruction(target: str = "host") -> str | None:
    """The dot-product instruction edgeopt's int8 convs use when built for ``target`` (its best int8 dot product;
    AVX2's with the 7-bit weights the quantizer gives it), if this CPU runs it."""
    from edgeopt.targets import get_target

    from edgeopt.lower.int8_dot import path_name

    dots = get_target(target).int8_dots()
    name = BY_PATH.get(path_name(dots[0][0])) if dots else None
    need = {"vpdpbusd-zmm": "avx512_vnni", "vpdpbusd-ymm": "avx_vnni", "vpmaddubsw-zmm": "avx512bw"}.get(name, "avx2")
    return name if name and (need in _flags() or name == "vpdpbusd-ymm" and "avx512_vnni" in _flags()) else None


def _source(name: str, iters: int) -> str:
    _, stmt, macs, vec, set1, reduce = KERNELS[name]
    own_w = "w{i}" in stmt
    n = ACCUMULATORS // 2 if own_w and vec == "__m256i" else ACCUMULATORS
    decl = " ".join(f"{vec} a{i} = {set1}({i});" + (f" {vec} w{i} = {set1}(0x02020202 + {i});" if own_w else "")
                    for i in range(n))
    body = " ".join(stmt.format(i=i) for i in range(n))
    red = " + ".join(reduce.format(i=i) for i in range(n))
    return f"""#include <immintrin.h>
#include <stdio.h>
#include <time.h>
#include <omp.h>
static double now(void) {{ struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec * 1e-9; }}
int main(void) {{
  double best = 0;
  for (int rep = 0; rep < 5; rep++) {{
    double t0 = now();
    #pragma omp parallel
    {{
      {decl}
      {vec} x = {set1}(0x01010101), w = {set1}(0x02020202);
      for (long n = 0; n < {iters}L; n++) {{ {body} __asm__ volatile("" : "+v"(x), "+v"(w)); }}
      if (({red}) == 42) printf("!");  /* the sums are used: the loop stays */
    }}
    double g = (double){iters}L * {n} * {macs} * omp_get_max_threads() / (now() - t0) / 1e9;
    if (g > best) best = g;
  }}
  printf("%.1f\\n", best);
  return 0;
}}
"""


def peak_gmacs(name: str, threads: int, iters: int = 20_000_000) -> float:
    """Best-of-5 GMAC/s of ``name`` on ``threads`` threads."""
    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        raise RuntimeError("no C compiler (gcc) to build the peak loop")
    with tempfile.TemporaryDirectory() as d:
        src, exe = os.path.join(d, "peak.c"), os.path.join(d, "peak")
        with open(src, "w") as f:
            f.write(_source(name, iters))
        subprocess.run([cc, "-O2", *KERNELS[name][0].split(), "-fopenmp", src, "-o", exe], check=True)
        out = subprocess.run([exe], check=True, capture_output=True, text=True,
                             env={**os.environ, "OMP_NUM_THREADS": str(threads)}).stdout
    return float(out.strip())


def _macs(n) -> int:
    """MACs of a conv2d / linear kernel (the anchor of fused node ``n``): output elements x its reduction."""
    body = n.body
    anchor = next((m for m in body.nodes if m.op in ("conv2d", "linear")), None) if body is not None else None
    if anchor is None:
        return 0
    out = anchor.outputs[0].type
    if anchor.op == "linear":
        return out.numel * anchor.inputs[0].type.shape[-1]
    x = anchor.inputs[0].type
    cin = x.shape[1] * (x.shape[4] if x.rank == 5 else 1)
    kh, kw = anchor.inputs[1].type.shape[2:4]
    return out.numel * (cin // anchor.attrs.get("groups", 1)) * kh * kw


def model_rows(name: str, threads: int, peak: float, small: bool = False,
               target: str = "host") -> tuple[list[dict], dict]:
    import numpy as np
    import torch

    import edgeopt
    from tests.models.zoo import build

    model, (x,) = build(name, small=small)
    cal = [torch.randn_like(x) for _ in range(4)]
    c = edgeopt.compile(model, (x,), target=target, calibration_data=cal,
                        quantize=edgeopt.QuantConfig(mode="int8", int8_image_convs=True))
    xs = x.numpy()
    by_name = {n.outputs[0].name: n for n in c.graph.nodes}
    rows = []
    profile = c.profile(xs, repeat=50)
    total_macs = 0
    for r in sorted(profile, key=lambda r: r["step"]):
        step = c.plan["steps"][r["step"]]
        node = by_name.get(step["node"])
        macs = _macs(node) if node is not None else 0
        total_macs += macs
        if macs:
            g = macs / r["median_ms"] / 1e6
            rows.append({"step": r["step"], "kernel": r["kernel"], "macs": macs, "median_ms": round(r["median_ms"], 4),
                         "gmacs": g, "share_of_peak": g / peak})
    for _ in range(10):
        c(xs)
    rounds = []
    for _ in range(5):
        t = []
        for _ in range(20):
            t0 = time.perf_counter()
            c(xs)
            t.append(time.perf_counter() - t0)
        rounds.append(statistics.median(t) * 1e3)
    whole = min(rounds)
    summary = {"model": name, "threads": threads, "macs": total_macs, "whole_call_ms": round(whole, 3),
               "whole_gmacs": round(total_macs / whole / 1e6, 1),
               "whole_share_of_peak": round(total_macs / whole / 1e6 / peak, 3),
               "ms_at_peak": round(total_macs / peak / 1e6, 3), "outputs_finite": bool(np.isfinite(c(xs)).all())}
    return rows, summary


def main(argv=None) -> str:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="resnet18")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--no-model", action="store_true", help="the peak only")
    ap.add_argument("--small", action="store_true", help="the zoo's small model (CI's smoke run)")
    ap.add_argument("--target", default="host", help="edgeopt target to build for (x86-64-v3: the AVX2 code)")
    args = ap.parse_args(argv)
    inst = instruction(args.target)
    if inst is None:
        raise SystemExit(f"no int8 dot-product instruction edgeopt uses for target {args.target!r} runs on this CPU")
    peaks = {t: peak_gmacs(inst, t) for t in args.threads}
    for t, p in peaks.items():
        print(f"{inst}: {t} thread(s) {p:.0f} GMAC/s")
    rows, summary = [], None
    if not args.no_model:
        t = max(args.threads)
        os.environ.setdefault("TVM_NUM_THREADS", str(t))
        rows, summary = model_rows(args.model, t, peaks[t], args.small, args.target)
        for r in sorted(rows, key=lambda r: -r["median_ms"])[:8]:
            print(f"  step {r['step']:3d} {r['kernel'][:44]:44s} {r['median_ms']:.3f} ms {r['gmacs']:6.0f} GMAC/s "
                  f"{r['share_of_peak']:.0%} of peak")
        print(f"{summary['model']} int8: {summary['macs'] / 1e9:.2f} GMAC, whole call {summary['whole_call_ms']} ms = "
              f"{summary['whole_gmacs']} GMAC/s, {summary['whole_share_of_peak']:.0%} of peak "
              f"({summary['ms_at_peak']} ms at peak)")
    path = save_results("int8_peak", rows, instruction=inst, target=args.target,
                        peak_gmacs={str(k): v for k, v in peaks.items()}, summary=summary)
    print("saved", path)
    return path


if __name__ == "__main__":
    main()
