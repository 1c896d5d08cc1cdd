"""``edgeopt run`` and ``edgeopt bench``: an artifact on inputs from files; its latency and memory, here or on a board.

    edgeopt run model.edgeopt --input x.npy -o out/          # out/output_0.npy ...
    edgeopt bench model.edgeopt                              # random inputs of the artifact's shapes
    edgeopt bench model.edgeopt --input x.npy --kernels --png kernels.png --json bench.json
    edgeopt bench model.edgeopt --remote 192.168.1.7:9090    # on a board's TVM RPC server (edgeopt.remote)

These need only the runtime (numpy and the TVM runtime), not torch or the compiler.
"""

from __future__ import annotations

import json
import os
import statistics
import time

import numpy as np


def add_parsers(sub) -> None:
    import argparse

    raw = argparse.RawDescriptionHelpFormatter
    r = sub.add_parser("run", help="run an artifact on .npy / .npz inputs and save its outputs", description=__doc__,
                       formatter_class=raw)
    r.add_argument("artifact")
    r.add_argument("--input", action="append", metavar="FILE", help="input arrays (.npy, or .npz: all its arrays), "
                                                                   "by the inputs' names or in their order")
    r.add_argument("--random", action="store_true", help="random inputs of the artifact's shapes instead")
    r.add_argument("-o", "--output-dir", default=".", help="where output_<i>.npy go (default: here)")
    r.add_argument("--key", action="append", help="a trusted public key: refuse the artifact unless signed by it")
    b = sub.add_parser("bench", help="latency and memory of an artifact, here or on a remote board",
                       description=__doc__, formatter_class=raw)
    b.add_argument("artifact")
    b.add_argument("--input", action="append", metavar="FILE", help="inputs (default: random, the artifact's shapes)")
    b.add_argument("--repeat", type=int, default=50, help="timed calls (default 50)")
    b.add_argument("--warmup", type=int, default=5)
    b.add_argument("--kernels", action="store_true", help="also time every kernel (the slowest listed)")
    b.add_argument("--png", metavar="FILE", help="a bar chart of the time per kernel (needs matplotlib)")
    b.add_argument("--json", metavar="FILE", help="write the figures as JSON")
    b.add_argument("--remote", metavar="HOST:PORT", help="run on a board's RPC server (python -m tvm.exec.rpc_server)")
    b.add_argument("--tracker", metavar="HOST:PORT", help="or through an RPC tracker, with --device-key")
    b.add_argument("--device-key", help="the board's key at the tracker")


def _inputs(model_io: list[dict], paths, random: bool) -> list[np.ndarray]:
    from .sources import SourceError, load_named, match_inputs, random_inputs

    if paths:
        return match_inputs(load_named(paths), [io["name"] for io in model_io], "--input")
    if random:
        return random_inputs(model_io)
    wanted = ", ".join(f"{io['name']}: {io['dtype']}{list(io['shape'])}" for io in model_io)
    raise SourceError(f"give the inputs with --input x.npy (in order: {wanted}) or use --random")


def run(args) -> str:
    import edgeopt

    m = edgeopt.load(args.artifact, trusted_keys=args.key)
    outs = m(*_inputs(m.manifest["inputs"], args.input, args.random))
    outs = outs if isinstance(outs, tuple) else (outs,)
    os.makedirs(args.output_dir, exist_ok=True)
    lines = []
    for i, (o, spec) in enumerate(zip(outs, m.manifest["outputs"])):
        path = os.path.join(args.output_dir, f"output_{i}.npy")
        np.save(path, o)
        stats = (f"min {o.min():.4g}, max {o.max():.4g}, mean {o.astype(np.float64).mean():.4g}" if o.size else "empty")
        lines.append(f"{path}: {spec['name']} {o.dtype}{list(o.shape)} ({stats})")
    return "\n".join(lines)


def bench(args) -> str:
    from ..runtime.artifact import hash_only, read_artifact

    manifest = read_artifact(args.artifact, f"artifact {args.artifact!r}",
                             consumers={"weights.safetensors": hash_only})[0]
    inputs = _inputs(manifest["inputs"], args.input, True)
    result = _remote(args, inputs) if (args.remote or args.tracker) else _local(args, inputs)
    report = manifest.get("report", {})
    result.update({"artifact": args.artifact, "target": manifest["target"].get("name"),
                   "artifact_bytes": os.path.getsize(args.artifact), "weight_bytes": report.get("weight_bytes"),
                   "arena_bytes": report.get("arena_bytes"), "state_bytes": report.get("state_bytes", 0)})
    if args.png and result.get("kernels"):
        from ..runtime.profile_chart import kernel_chart

        kernel_chart(result["kernels"], report.get("kernels", []), args.png,
                     f"{os.path.basename(args.artifact)}: time per kernel ({result['where']})")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    return _text(result, args)


def _local(args, inputs) -> dict:
    import edgeopt

    from ..runtime import tvm_cpu

    try:  # the TVM runtime loaded first, so that the RSS growth measured is the model's
        tvm_cpu.ensure_runtime()
    except (edgeopt.EdgeoptError, OSError, ImportError):  # none here: edgeopt.load says what is missing
        pass
    rss0 = _rss()
    t = time.perf_counter()
    m = edgeopt.load(args.artifact)
    load_ms = (time.perf_counter() - t) * 1e3
    for _ in range(max(1, args.warmup)):
        m(*inputs)
    times = []
    for _ in range(max(1, args.repeat)):
        t = time.perf_counter()
        m(*inputs)
        times.append((time.perf_counter() - t) * 1e3)
    times.sort()
    out = {"where": "here", "median_ms": statistics.median(times), "p10_ms": times[len(times) // 10],
           "p90_ms": times[min(len(times) - 1, len(times) * 9 // 10)], "calls": len(times), "load_ms": load_ms,
           "rss_growth_bytes": max(0, _rss() - rss0), "peak_rss_bytes": _peak_rss()}
    if args.kernels or args.png:
        try:
            out["kernels"] = m.profile(*inputs, repeat=max(3, min(args.repeat, 20)))
        except edgeopt.ArtifactError as e:  # GPU targets: whole calls only
            out["kernels_note"] = str(e)
    return out


def _remote(args, inputs) -> dict:
    from .. import remote

    host, port = _host_port(args.remote or "127.0.0.1:9090")
    tracker = _host_port(args.tracker) if args.tracker else None
    r = remote.run(args.artifact, inputs, host=host, port=port, tracker=tracker, key=args.device_key,
                   repeat=max(1, args.repeat // 10))
    where = f"tracker {args.tracker}, key {args.device_key}" if tracker else f"{host}:{port}"
    return {"where": where, "median_ms": r.latency_ms, "kernels": r.kernels,
            "note": "the sum of the kernels' medians on the board's clock"}


def _host_port(text: str) -> tuple[str, int]:
    from .sources import SourceError

    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise SourceError(f"expected HOST:PORT, got {text!r}")
    return host, int(port)


def _rss() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def _peak_rss() -> int:
    """VmHWM: this process's own peak (ru_maxrss would keep a forking parent's peak across exec)."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))
    except (OSError, ValueError, StopIteration):
        return 0


def _text(r: dict, args) -> str:
    mb = 2 ** 20
    lines = [f"{r['artifact']} ({r['target']}), {r['where']}:"]
    if "p10_ms" in r:
        lines.append(f"  latency: median {r['median_ms']:.3f} ms (p10 {r['p10_ms']:.3f}, p90 {r['p90_ms']:.3f}) over "
                     f"{r['calls']} calls; load {r['load_ms']:.0f} ms")
    else:
        lines.append(f"  latency: {r['median_ms']:.3f} ms ({r['note']})")
    lines.append(f"  memory: weights {(r['weight_bytes'] or 0) / mb:.2f} MiB, activation arena "
                 f"{(r['arena_bytes'] or 0) / mb:.2f} MiB" + (f", state {r['state_bytes'] / mb:.2f} MiB"
                                                             if r.get("state_bytes") else "")
                 + (f"; process grew {r['rss_growth_bytes'] / mb:.1f} MiB loading and running it (peak RSS "
                    f"{r['peak_rss_bytes'] / mb:.0f} MiB)" if "rss_growth_bytes" in r else ""))
    kernels = r.get("kernels") or []
    if kernels:
        lines.append("  slowest kernels:")
        lines += [f"    {k['median_ms']:8.3f} ms {100 * k['share']:5.1f}%  step {k['step']:3d}  {k['kernel']}"
                  for k in kernels[:10]]
    if args.png and kernels:
        lines.append(f"  chart: {args.png}")
    if args.json:
        lines.append(f"  figures: {args.json}")
    return "\n".join(lines)
