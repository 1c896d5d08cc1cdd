"""edgeopt against every peer on the same inputs, in one run: PyTorch eager, torch.compile (with freezing),
ONNX Runtime, OpenVINO and ExecuTorch with XNNPACK (batch 1, 2 threads, fp32).

    .venv/bin/python bench/peers.py                               # the four issue models, full size
    .venv/bin/python bench/peers.py mobilenet_v2 --rounds 3
    .venv/bin/python bench/peers.py --peers edgeopt torch_eager onnxruntime --small resnet18
    .venv/bin/python bench/peers.py minilm --tuning-db bench/results/{model}.tuning.json   # edgeopt tuned

Method (the protocol of ``../shared/notes/peers.md`` §4):

- The inputs and PyTorch's fp32 output are saved once per model; every peer's output is checked against
  that output before it is timed (``max_abs_diff`` in the results). ONNX Runtime and OpenVINO read one
  ONNX export of the model; edgeopt's peer loads the saved artifact with its runtime (no torch).
- ExecuTorch lives in a venv of its own (``--executorch-venv``, default build/venvs/executorch, made by
  ``scripts/peer_venv_executorch.sh``; the peer is skipped without it). That venv's python rebuilds the zoo
  model, exports and lowers it to a ``.pte`` (XNNPACK partitioner) and runs it; a model whose export fails
  is recorded under ``failed`` in its results and the other peers go on.
- Each peer runs in a process of its own (``bench/peer_workers.py``), all loaded side by side. A round
  times every peer once, in an order that rotates every round, after a quiet gate (a 1-second CPU sample
  at least ``--min-idle`` % idle, waited for up to ``--quiet-timeout`` s); a round times 3 warm-up calls
  and ``--calls`` calls. Interleaving gives every peer the same machine state.
- Reported per peer: the best round median (the notes' convention), every round's median, and the
  ratio edgeopt / peer as the median of the per-round ratios (paired within a round). GFLOP/s use the
  model's FLOPs as counted by ``torch.utils.flop_counter`` (2 per multiply-add); % of peak divides by
  numpy's sgemm rate measured at the start of the same run.

Writes bench/results/peers-<time>.json and a bar chart peers-<time>.png beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from bench.common import machine, save_results  # noqa: E402

MODELS = ["resnet18", "mobilenet_v2", "efficientnet_lite0", "minilm"]
PEERS = ["edgeopt", "torch_eager", "torch_compile", "onnxruntime", "openvino", "executorch"]
NEEDS = {"onnxruntime": "onnxruntime", "openvino": "openvino"}
THREADS = 2
ET_VENV = os.path.join(ROOT, "build", "venvs", "executorch")


def worker_env() -> dict:
    env = dict(os.environ)
    for k in ("TVM_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[k] = str(THREADS)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    return env


class Worker:
    """A peer's process (``bench/peer_workers.py``): started, loaded and checked on construction."""

    def __init__(self, kind: str, model: str, workdir: str, small: bool, python: str = sys.executable):
        cmd = [python, os.path.join(ROOT, "bench", "peer_workers.py"), kind, model, workdir]
        self.kind = kind
        self.proc = subprocess.Popen(cmd + (["--small"] if small else []), stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, env=worker_env())
        self.ready = self._reply()

    def _reply(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"peer {self.kind} exited (code {self.proc.wait()}); see its stderr above")
        return json.loads(line)

    def time(self, calls: int, warmup: int = 3, max_s: float | None = None) -> list[float]:
        """``calls`` timed calls' ms (fewer when ``max_s`` seconds have passed, 5 at least)."""
        self.proc.stdin.write(f"time {calls} {warmup}" + (f" {max_s}" if max_s is not None else "") + "\n")
        self.proc.stdin.flush()
        return self._reply()["ms"]

    def close(self) -> None:
        try:
            self.proc.stdin.write("quit\n")
            self.proc.stdin.close()
        except OSError:
            pass
        self.proc.wait(timeout=60)


def wait_quiet(min_idle: float, timeout: float) -> float:
    """Wait for a 1-second CPU sample at least ``min_idle`` % idle (or ``timeout`` s); return the last idle %."""
    import psutil

    end = time.time() + timeout
    while True:
        idle = 100.0 - psutil.cpu_percent(interval=1.0)
        if idle >= min_idle or time.time() > end:
            return idle


def model_gflop(model, inputs) -> float:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter, torch.inference_mode():
        model(*inputs)
    return counter.get_total_flops() / 1e9


def export_executorch(name: str, small: bool, workdir: str, python: str) -> dict:
    """``model.pte`` made by the ExecuTorch venv's ``python``; its facts, or ``{"error": reason}``."""
    cmd = [python, os.path.join(ROOT, "bench", "peer_workers.py"), "export-executorch", name, workdir]
    try:
        p = subprocess.run(cmd + (["--small"] if small else []), capture_output=True, text=True, env=worker_env(),
                           timeout=1800)
    except subprocess.TimeoutExpired:
        return {"error": "export failed: timed out after 1800 s"}
    if p.returncode:
        return {"error": "export failed: " + (p.stderr.strip().splitlines() or [f"exit code {p.returncode}"])[-1]}
    return json.loads(p.stdout.strip().splitlines()[-1])


def prepare(name: str, small: bool, workdir: str, peers: list[str], tuning_db: str | None = None,
            et_python: str | None = None) -> dict:
    """Save inputs, the torch reference, the ONNX export, the edgeopt artifact (compiled with the tuning
    database ``tuning_db.format(model=name)`` where that file exists) and the ExecuTorch ``.pte``; return
    model facts (``failed``: peer -> reason, for a peer that cannot run this model)."""
    import numpy as np
    import torch

    import edgeopt
    from tests.models.zoo import build

    torch.set_num_threads(THREADS)
    model, inputs = build(name, small=small)
    np.savez(os.path.join(workdir, "inputs.npz"), **{f"arg{i}": x.numpy() for i, x in enumerate(inputs)})
    with torch.inference_mode():
        ref = model(*inputs)
    np.save(os.path.join(workdir, "reference.npy"), (ref if isinstance(ref, torch.Tensor) else ref[0]).numpy())
    facts = {"gflop": model_gflop(model, inputs), "inputs": [list(x.shape) for x in inputs]}
    if any(p in peers for p in ("onnxruntime", "openvino")):
        t0 = time.perf_counter()
        names = [f"arg{i}" for i in range(len(inputs))]
        with warnings.catch_warnings():  # the TorchScript exporter's deprecation and tracer warnings
            warnings.simplefilter("ignore")
            torch.onnx.export(model, tuple(inputs), os.path.join(workdir, "model.onnx"), input_names=names,
                              output_names=["out"], dynamo=False, opset_version=17)
        facts["onnx_export_s"] = time.perf_counter() - t0
    if "edgeopt" in peers:
        t0 = time.perf_counter()
        db = tuning_db.format(model=name) if tuning_db else None
        db = db if db and os.path.exists(db) else None
        compiled = edgeopt.compile(model, inputs, tuning_db=db)
        facts["edgeopt_compile_s"] = time.perf_counter() - t0
        facts["edgeopt_tuning_db"] = db
        facts["edgeopt_tuned_kernels"] = compiled.report.get("tuned_kernels", 0)
        facts["edgeopt_kernels"] = compiled.report["num_kernels"]
        compiled.save(os.path.join(workdir, "model.edgeopt"))
    if "executorch" in peers:
        et = export_executorch(name, small, workdir, et_python)
        if "error" in et:
            facts.setdefault("failed", {})["executorch"] = et["error"]
            print(f"  {name}: executorch {et['error']}", flush=True)
        else:
            facts["executorch"] = et
    return facts


def bench_model(name: str, args, peers: list[str]) -> dict:
    with tempfile.TemporaryDirectory(prefix=f"peers-{name}-") as workdir:
        facts = prepare(name, args.small, workdir, peers, args.tuning_db, et_python(args))
        peers = [p for p in peers if p not in facts.get("failed", {})]
        workers = {}
        try:
            for p in peers:
                python = et_python(args) if p == "executorch" else sys.executable
                workers[p] = Worker(p, name, workdir, args.small, python)
                print(f"  {name}: {p} loaded in {workers[p].ready['load_s']:.1f} s, "
                      f"max |diff| vs torch {workers[p].ready['max_abs_diff']:.1e}", flush=True)
            rounds = {p: [] for p in peers}
            idle = []
            for r in range(args.rounds):
                order = peers[r % len(peers):] + peers[:r % len(peers)]
                for p in order:
                    idle.append(wait_quiet(args.min_idle, args.quiet_timeout))
                    rounds[p].append(workers[p].time(args.calls))
        finally:
            for w in workers.values():
                w.close()
    result = {"model": name, "small": args.small, **facts, "idle_percent": idle, "peers": {}}
    medians = {p: [statistics.median(t) for t in rounds[p]] for p in peers}
    for p in peers:
        best = min(medians[p])
        row = {"best_median_ms": best, "round_medians_ms": medians[p], "min_ms": min(min(t) for t in rounds[p]),
               "gflops": facts["gflop"] / best * 1e3, "max_abs_diff": workers[p].ready["max_abs_diff"],
               "load_s": workers[p].ready["load_s"]}
        row.update({k: v for k, v in workers[p].ready.items() if k not in ("ready", "load_s", "max_abs_diff")})
        if "edgeopt" in peers:
            row["edgeopt_over_peer"] = statistics.median(e / q for e, q in zip(medians["edgeopt"], medians[p]))
        result["peers"][p] = row
    return result


def all_peers(results: list[dict]) -> list[str]:
    """Every peer timed on some model, in order (one whose export failed is missing from that model's row)."""
    return list(dict.fromkeys(p for r in results for p in (*r["peers"], *r.get("failed", {}))))


def print_table(results: list[dict], peak: float) -> None:
    peers = all_peers(results)
    print(f"\nbest round median, ms (GFLOP/s, % of the {peak:.0f} GFLOP/s sgemm peak); "
          "edgeopt/peer = median of per-round ratios")
    print(f"{'model':20s}" + "".join(f"{p:>26s}" for p in peers))
    for r in results:
        cells = []
        for p in peers:
            row = r["peers"].get(p)
            if row is None:
                cells.append("failed" if p in r.get("failed", {}) else "-")
                continue
            ratio = f" x{row['edgeopt_over_peer']:.2f}" if p != "edgeopt" and "edgeopt_over_peer" in row else ""
            cells.append(f"{row['best_median_ms']:7.2f} ({row['gflops']:4.0f}, {row['gflops'] / peak:4.0%}){ratio}")
        print(f"{r['model']:20s}" + "".join(f"{c:>26s}" for c in cells))
    for r in results:
        for p, why in r.get("failed", {}).items():
            print(f"{r['model']:20s} {p}: {why}")
        others = {p: v["best_median_ms"] for p, v in r["peers"].items() if p != "edgeopt"}
        if "edgeopt" in r["peers"] and others:
            fastest = min(others, key=others.get)
            e = r["peers"]["edgeopt"]["best_median_ms"]
            print(f"{r['model']:20s} edgeopt {e:.2f} ms; fastest peer {fastest} {others[fastest]:.2f} ms: "
                  f"edgeopt is {e / others[fastest]:.2f}x its time")


def plot(results: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    peers = all_peers(results)
    fig, ax = plt.subplots(figsize=(2.2 * len(results) + 2, 4))
    width = 0.8 / len(peers)
    for i, p in enumerate(peers):
        xs = [j + i * width for j in range(len(results))]
        # each model's times relative to PyTorch eager (or to the first peer), so models share one axis
        base = "torch_eager" if "torch_eager" in peers else peers[0]
        ys = [r["peers"][p]["best_median_ms"] / r["peers"][base]["best_median_ms"] if p in r["peers"]
              else float("nan") for r in results]
        ax.bar(xs, ys, width, label=p)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(results))], [r["model"] for r in results])
    ax.set_ylabel(f"latency / {base} latency (lower is faster)")
    ax.axhline(1.0, color="grey", linewidth=0.5)
    ax.legend(fontsize=8)
    ax.set_title("batch 1, 2 threads, fp32: best round median")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    print("wrote", path)


def et_python(args) -> str:
    """The ExecuTorch venv's python (``--executorch-venv``), which exports and runs the ``executorch`` peer."""
    return os.path.join(os.path.abspath(args.executorch_venv), "bin", "python")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="*", default=MODELS)
    ap.add_argument("--peers", nargs="+", default=PEERS, choices=PEERS)
    ap.add_argument("--small", action="store_true", help="the small test shapes instead of full size")
    ap.add_argument("--tuning-db", metavar="PATH", help="compile edgeopt with this tuning database where it exists "
                    "({model} is replaced by the model's name), e.g. bench/results/{model}.tuning.json")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--calls", type=int, default=20, help="timed calls per round")
    ap.add_argument("--executorch-venv", metavar="PATH", default=ET_VENV,
                    help="the ExecuTorch peer's venv (made by scripts/peer_venv_executorch.sh)")
    ap.add_argument("--min-idle", type=float, default=90.0)
    ap.add_argument("--quiet-timeout", type=float, default=30.0)
    args = ap.parse_args()
    import importlib.util

    missing = {p: f"`pip install {NEEDS[p]}` to include it" for p in args.peers
               if p in NEEDS and not importlib.util.find_spec(NEEDS[p])}
    if "executorch" in args.peers and not os.path.exists(et_python(args)):
        missing["executorch"] = f"no venv at {args.executorch_venv}; scripts/peer_venv_executorch.sh makes it"
    peers = [p for p in args.peers if p not in missing]
    for p in sorted(missing):
        print(f"skipping {p}: {missing[p]}")
    peak = json.loads(subprocess.run([sys.executable, os.path.join(ROOT, "bench", "peer_workers.py"), "peak"],
                                     capture_output=True, text=True, check=True, env=worker_env()).stdout)
    print(f"machine fp32 peak (numpy sgemm 2048, {THREADS} threads): {peak['peak_gflops']:.0f} GFLOP/s", flush=True)
    results = [bench_model(name, args, peers) for name in args.models]
    print_table(results, peak["peak_gflops"])
    path = save_results("peers", results, threads=THREADS, peak_gflops=peak["peak_gflops"], rounds=args.rounds,
                        calls=args.calls, skipped=sorted(set(args.peers) - set(peers)))
    plot(results, path[:-5] + ".png")
    print(json.dumps(machine()))


if __name__ == "__main__":
    main()
