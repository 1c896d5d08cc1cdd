"""The ``edgeopt`` command line. Needs only the runtime (no torch, no compiler).

    edgeopt inspect model.edgeopt              # versions, target, inputs/outputs, kernels, memory figures
    edgeopt inspect model.edgeopt --memory     # + the activation arena over time, as text
    edgeopt inspect model.edgeopt --png a.png  # + the arena as a picture (needs matplotlib)
    edgeopt inspect model.edgeopt --ir         # + the final IR
    edgeopt tune-info tuning.json              # a tuning database (edgeopt.tune): kernels, hand vs tuned times
"""

from __future__ import annotations

import argparse
import json
import sys

from .errors import EdgeoptError


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="edgeopt", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    ins = sub.add_parser("inspect", help="describe a compiled artifact (verifies it first)")
    ins.add_argument("artifact")
    ins.add_argument("--memory", action="store_true", help="draw the activation arena over time")
    ins.add_argument("--png", metavar="PATH", help="save a picture of the arena")
    ins.add_argument("--ir", action="store_true", help="print the final IR")
    tin = sub.add_parser("tune-info", help="summarise a tuning database written by edgeopt.tune")
    tin.add_argument("database")
    args = ap.parse_args(argv)
    try:
        if args.command == "tune-info":
            print(tune_info(args.database))
        else:
            print(inspect(args.artifact, memory=args.memory, png=args.png, ir=args.ir))
    except (EdgeoptError, ImportError) as e:
        print(f"edgeopt: {e}", file=sys.stderr)
        return 1
    return 0


def inspect(path: str, memory: bool = False, png: str | None = None, ir: bool = False) -> str:
    """The text ``edgeopt inspect`` prints."""
    from .memory.render import arena_png, arena_text
    from .runtime.artifact import read_artifact

    manifest, members = read_artifact(path, f"artifact {path!r}", consumers={"weights.safetensors": _skip})
    plan = json.loads(members["plan.json"])
    r = manifest.get("report", {})
    lines = [f"{path}: edgeopt {manifest.get('edgeopt_version')} (TVM {manifest.get('tvm_version')}), "
             f"target {json.dumps(manifest.get('target'))}"]
    for kind in ("inputs", "outputs"):
        for io in plan[kind]:
            lines.append(f"  {kind[:-1]:6s} {io['name']}: {io['dtype']}{list(io['shape'])}")
    tuned = f" ({r['tuned_kernels']} tuned)" if r.get("tuned_kernels") else ""
    lines.append(f"  kernels: {r.get('num_kernels')} steps, {r.get('num_unique_kernels')} unique{tuned}; "
                 f"weights {r.get('weight_bytes')} bytes")
    if "arena_bytes" in r:
        lines.append(f"  activations: arena {r['arena_bytes']} bytes, lower bound {r['lower_bound_bytes']}, "
                     f"naive {r['naive_bytes']} ({r['naive_bytes'] / max(1, r['arena_bytes']):.2f}x the arena), "
                     f"plan {r['plan_algorithm']}")
    if memory:
        lines += ["", arena_text(plan)]
    if png:
        arena_png(plan, png)
        lines.append(f"arena picture: {png}")
    if ir:
        lines += ["", members.get("ir.txt", b"").decode()]
    return "\n".join(lines)


def tune_info(path: str) -> str:
    """The text ``edgeopt tune-info`` prints: per target, each kernel's trials, hand and tuned times and whether
    compiles use the tuned schedule."""
    from .tuning_db import TuningDB

    db = TuningDB.load(path)
    tuned = sum(isinstance(r.get("trace"), list) for recs in db.targets.values() for r in recs.values())
    lines = [f"{path}: {len(db)} kernel records, {tuned} with a tuned schedule, {len(db.targets)} target(s)"]
    for target, records in db.targets.items():
        lines.append(f"  target {target}")
        for r in sorted(records.values(), key=lambda r: str(r.get("kernel"))):
            hand, best = r.get("hand_ms"), r.get("tuned_ms")
            times = f"hand {hand:.4f} ms" if isinstance(hand, (int, float)) else "hand ?"
            if isinstance(best, (int, float)) and best > 0:
                times += f", tuned {best:.4f} ms ({hand / best:.2f}x)" if hand else f", tuned {best:.4f} ms"
            use = "uses tuned" if isinstance(r.get("trace"), list) else "keeps hand schedule"
            lines.append(f"    {r.get('kernel')} ({r.get('op')}): {r.get('trials')} trials, {times}: {use} "
                         f"[TVM {r.get('tvm_version')}, {r.get('tuned_at')}]")
    return "\n".join(lines)


def _skip(stream) -> None:
    """Read the weights only to verify their hash; keep nothing."""
    stream.drain()


if __name__ == "__main__":
    sys.exit(main())
