"""Fused attention vs the eager ops: accuracy, peak intermediate memory and latency per sequence length.

    .venv/bin/python bench/attention.py                 # seq 16 128 512 2048, 4 heads of 32
    .venv/bin/python bench/attention.py --seq 16 128 512

For each sequence length an eager attention block (QKᵀ, scale, additive padding mask, softmax, ·V)
is compiled twice: with ``fuse_attention`` (one tiled online-softmax kernel) and without it (the ops
as separate kernels; the other fusions stay on). Reported per build:

* ``max_err``: max |edgeopt - torch| relative to the output's scale;
* ``peak_intermediate_bytes``: the most bytes of intermediate tensors alive at once over the plan
  (inputs and outputs excluded), plus the kernels' own scratch: the fused kernel's per-thread tiles;
* ``rss_delta_bytes``: growth of the resident memory of a fresh process from just after loading the
  artifact to after its first run (measured: every buffer the runtime allocates and touches);
* ``ms``: median latency.

Writes bench/results/attention-<time>.json.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench.common import median_ms, pin_threads, save_results  # noqa: E402

HEADS, DIM = 4, 32

_RSS_PROBE = """
import os, sys, numpy as np
import edgeopt
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
m = edgeopt.load(sys.argv[1])
xs = [np.load(p) for p in sys.argv[2:]]
before = rss()
m(*xs)
print(rss() - before)
"""


def attention_block(seq: int):
    import torch

    class EagerAttention(torch.nn.Module):
        def forward(self, q, k, v, mask):
            s = torch.matmul(q, k.transpose(-1, -2)) / DIM ** 0.5
            return torch.matmul(torch.softmax(s + mask, dim=-1), v)

    g = torch.Generator().manual_seed(seq)
    q, k, v = (torch.randn(1, HEADS, seq, DIM, generator=g) for _ in range(3))
    mask = torch.zeros(1, 1, 1, seq)
    mask[..., seq - seq // 4:] = -1e9  # the last quarter is padding
    return EagerAttention().eval(), (q, k, v, mask)


def peak_intermediate_bytes(compiled, threads: int) -> int:
    """Most bytes of intermediates alive at once (liveness over the plan) + the kernels' scratch tiles."""
    from edgeopt.lower.flash_attention import scratch_bytes

    plan = compiled.plan
    io = {v["name"] for v in plan["inputs"] + plan["outputs"]}
    sizes = {n: 4 * _numel(v["shape"]) for n, v in plan["values"].items() if v["kind"] == "buffer" and n not in io}
    last = {}
    for i, s in enumerate(plan["steps"]):
        for a in s["args"]:
            last[a] = i
    live, peak = set(), 0
    for i, s in enumerate(plan["steps"]):
        live |= {a for a in s["args"] if a in sizes}
        peak = max(peak, sum(sizes[a] for a in live))
        live -= {a for a in live if last[a] <= i}
    seq = plan["inputs"][1]["shape"][-2]
    scratch = sum(scratch_bytes(HEADS, seq, DIM, DIM, threads)
                  for k in compiled.report["kernels"] if k["schedule"].startswith("flash"))
    return peak + scratch


def _numel(shape) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seq", type=int, nargs="*", default=[16, 128, 512, 2048])
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    pin_threads(args.threads)
    import numpy as np
    import torch

    import edgeopt

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for seq in args.seq:
            model, inputs = attention_block(seq)
            with torch.no_grad():
                ref = model(*inputs).numpy()
            xs = [t.numpy() for t in inputs]
            paths = []
            for i, x in enumerate(xs):
                paths.append(os.path.join(tmp, f"x{i}.npy"))
                np.save(paths[-1], x)
            for fused in (True, False):
                compiled = edgeopt.compile(model, inputs, disable=[] if fused else ["fuse_attention"])
                out = compiled(*xs)
                art = os.path.join(tmp, "a.edgeopt")
                compiled.save(art)
                rss = int(subprocess.run([sys.executable, "-c", _RSS_PROBE, art, *paths], capture_output=True,
                                         text=True, check=True, env={**os.environ}).stdout.split()[-1])
                r = {"seq": seq, "fused": fused, "num_kernels": compiled.report["num_kernels"],
                     "max_err": float(np.abs(out - ref).max() / np.abs(ref).max()),
                     "peak_intermediate_bytes": peak_intermediate_bytes(compiled, args.threads),
                     "rss_delta_bytes": rss, "ms": median_ms(lambda c=compiled, x=xs: c(*x), args.runs)["median_ms"]}
                rows.append(r)
                print(f"seq {seq:5d}  {'fused  ' if fused else 'unfused'}  kernels {r['num_kernels']:2d}  "
                      f"err {r['max_err']:.1e}  peak intermediates {r['peak_intermediate_bytes'] / 2**20:9.3f} MiB  "
                      f"RSS growth {r['rss_delta_bytes'] / 2**20:8.2f} MiB  {r['ms']:8.3f} ms", flush=True)
    save_results("attention", rows, threads=args.threads, heads=HEADS, dim=DIM)


if __name__ == "__main__":
    main()
