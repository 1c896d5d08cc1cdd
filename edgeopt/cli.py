"""The ``edgeopt`` command line. ``edgeopt <command> --help`` describes each command.

Compile and check (need the compiler: torch and TVM):
    edgeopt compile model.py:make -o model.edgeopt [--target arm --cpu cortex-a76] [--quantize int8 ...]
    edgeopt compile model.py:make -o model.edgeopt --graphs graphs/   # + the graph before / after the passes
    edgeopt compare model.edgeopt model.py:make [--data val.npz]     # error vs PyTorch, layer by layer
    edgeopt tune model.py:make --db model.tuning.json                 # MetaSchedule schedules for its kernels
    edgeopt cache info | clear                                        # the on-disk compile cache

Run and look (need only the runtime):
    edgeopt run model.edgeopt --input x.npy -o out/                  # outputs as .npy files
    edgeopt bench model.edgeopt [--kernels --png kernels.png] [--remote host:9090]   # latency and memory
    edgeopt inspect model.edgeopt [--memory] [--png arena.png] [--graph graph.html] [--ir]
    edgeopt tune-info tuning.json                                     # a tuning database: hand vs tuned times
    edgeopt keygen release.pem; edgeopt sign model.edgeopt --key release.pem; edgeopt verify model.edgeopt --key ...
    edgeopt generate smollm.edgeopt "What is the capital of France?"  # a language model's reply, as it comes

``-q`` / ``--quiet`` (before the command) turns progress bars off; they show only on a terminal anyway.
``-v`` shows edgeopt's log messages (cache hits and misses...). A model is ``file.py:factory`` (a function returning
``(model, example_inputs)``), ``package.module:factory``, or a ``.pt2`` file from ``torch.export.save``.
"""

from __future__ import annotations

import argparse
import json
import sys
import zipfile

from .errors import ArtifactError, EdgeoptError


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="edgeopt", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    ap.add_argument("-v", "--verbose", action="store_true", help="show edgeopt's log messages")
    sub = ap.add_subparsers(dest="command", required=True)
    from .commands import cache_cmd, compare_cmd, compile_cmd, run_cmd, tune_cmd

    compile_cmd.add_parser(sub)
    run_cmd.add_parsers(sub)
    compare_cmd.add_parser(sub)
    tune_cmd.add_parser(sub)
    cache_cmd.add_parser(sub)
    ins = sub.add_parser("inspect", help="describe a compiled artifact (verifies it first)")
    ins.add_argument("artifact")
    ins.add_argument("--memory", action="store_true", help="draw the activation arena over time")
    ins.add_argument("--png", metavar="PATH", help="save a picture of the arena")
    ins.add_argument("--ir", action="store_true", help="print the final IR")
    ins.add_argument("--graph", metavar="PATH", help="draw the final IR (fused kernels colored) as .svg or .html")
    tin = sub.add_parser("tune-info", help="summarise a tuning database written by edgeopt.tune")
    tin.add_argument("database")
    kg = sub.add_parser("keygen", help="write a new Ed25519 key pair (PEM) for signing artifacts")
    kg.add_argument("private", help="the private key's path (e.g. release.pem)")
    kg.add_argument("--public", help="the public key's path (default: <private without .pem>.pub.pem)")
    kg.add_argument("--force", action="store_true", help="overwrite existing key files")
    sg = sub.add_parser("sign", help="sign an artifact with an Ed25519 private key (in place, or -o)")
    sg.add_argument("artifact")
    sg.add_argument("--key", required=True, help="the private key (PEM file from edgeopt keygen)")
    sg.add_argument("-o", "--output", help="write the signed artifact here instead of in place")
    vf = sub.add_parser("verify", help="check an artifact's hashes and its signature or pinned sha256 (loads no code)")
    vf.add_argument("artifact")
    vf.add_argument("--key", action="append", help="a trusted public key (PEM); repeat for several")
    vf.add_argument("--sha256", help="the whole file's expected sha256")
    gen = sub.add_parser("generate", help="run a language model (edgeopt.llm.compile) on a prompt, printing as it goes")
    gen.add_argument("artifact")
    gen.add_argument("prompt")
    gen.add_argument("-n", "--max-new-tokens", type=int, default=64)
    gen.add_argument("--temperature", type=float, default=0.0, help="0 (the default): greedy")
    gen.add_argument("--top-k", type=int, default=None)
    gen.add_argument("--seed", type=int, default=None)
    gen.add_argument("--raw", action="store_true", help="the prompt as it is, without the model's chat template")
    gen.add_argument("--stats", action="store_true", help="print time to first token and decode speed after")
    args = ap.parse_args(argv)
    import logging
    import warnings

    warnings.filterwarnings("ignore", message=".*isinstance.treespec, LeafSpec.*")  # torch.export's own noise

    log = logging.getLogger("edgeopt")  # edgeopt's loggers only (main may run inside another program)
    if not any(h.get_name() == "edgeopt-cli" for h in log.handlers):
        handler = logging.StreamHandler()
        handler.set_name("edgeopt-cli")
        handler.setFormatter(logging.Formatter("edgeopt: %(message)s"))
        log.addHandler(handler)
    log.setLevel(logging.INFO if args.verbose else logging.WARNING)
    if args.quiet:
        from .progress import set_quiet

        set_quiet()
    commands = {"compile": compile_cmd.run, "run": run_cmd.run, "bench": run_cmd.bench, "compare": compare_cmd.run,
                "tune": tune_cmd.run, "cache": cache_cmd.run}
    try:
        if args.command in commands:
            print(commands[args.command](args))
        elif args.command == "generate":
            generate(args)
        elif args.command == "tune-info":
            print(tune_info(args.database))
        elif args.command == "keygen":
            print(keygen(args.private, args.public, args.force))
        elif args.command == "sign":
            print(sign(args.artifact, args.key, args.output))
        elif args.command == "verify":
            print(verify(args.artifact, args.key, args.sha256))
        else:
            print(inspect(args.artifact, memory=args.memory, png=args.png, ir=args.ir, graph=args.graph))
    except (EdgeoptError, ImportError, OSError) as e:
        print(f"edgeopt: {e}", file=sys.stderr)
        return 1
    return 0


def generate(args) -> None:
    """``edgeopt generate``: the reply printed piece by piece as the model makes it."""
    from .runtime.generate import load_llm

    lm = load_llm(args.artifact)
    lm.chat(args.prompt, args.max_new_tokens, chat=not args.raw, temperature=args.temperature, top_k=args.top_k,
            seed=args.seed, on_text=lambda piece: print(piece, end="", flush=True))
    print()
    if args.stats:
        s = lm.stats
        rate = f"{s['decode_tokens_per_s']:.1f} tokens/s" if s["decode_tokens_per_s"] else "-"
        print(f"[{s['prompt_tokens']} prompt tokens, {s['new_tokens']} new; time to first token "
              f"{1e3 * s['ttft_s']:.0f} ms; decode {rate}]", file=sys.stderr)


def inspect(path: str, memory: bool = False, png: str | None = None, ir: bool = False, graph: str | None = None) -> str:
    """The text ``edgeopt inspect`` prints."""
    from .memory.render import arena_png, arena_text
    from .runtime.artifact import hash_only, read_artifact

    what = f"artifact {path!r}"
    manifest, members = read_artifact(path, what, consumers={"weights.safetensors": hash_only})  # schema checked
    r = manifest.get("report", {})
    lines = [f"{path}: edgeopt {manifest['edgeopt_version']} (TVM {manifest['tvm_version']}), "
             f"target {json.dumps(manifest['target'])}"]
    for kind in ("inputs", "outputs"):
        for io in manifest[kind]:
            lines.append(f"  {kind[:-1]:6s} {io['name']}: {io['dtype']}{list(io['shape'])}")
    tuned = f" ({r['tuned_kernels']} tuned)" if r.get("tuned_kernels") else ""
    lines.append(f"  kernels: {r.get('num_kernels')} steps, {r.get('num_unique_kernels')} unique{tuned}; "
                 f"weights {r.get('weight_bytes')} bytes")
    if all(k in r for k in ("arena_bytes", "lower_bound_bytes", "naive_bytes", "plan_algorithm")):
        lines.append(f"  activations: arena {r['arena_bytes']} bytes, lower bound {r['lower_bound_bytes']}, "
                     f"naive {r['naive_bytes']} ({r['naive_bytes'] / max(1, r['arena_bytes']):.2f}x the arena), "
                     f"plan {r['plan_algorithm']}")
    ops: dict[str, int] = {}
    for k in r.get("kernels", []) if isinstance(r.get("kernels"), list) else []:
        if isinstance(k, dict) and isinstance(k.get("op"), str):
            ops[k["op"]] = ops.get(k["op"], 0) + 1
    if ops:
        lines.append("  distinct kernels by anchor op: " + ", ".join(f"{op} {n}" for op, n in sorted(ops.items(),
                                                                                         key=lambda kv: -kv[1])))
    groups = [g for g in r.get("fused_groups", []) if isinstance(g, dict)]
    if groups:
        kinds: dict[str, list[int]] = {}  # ops fused -> [distinct kernels, steps]
        for g in groups:
            k = kinds.setdefault("+".join(map(str, g.get("ops", []))), [0, 0])
            k[0], k[1] = k[0] + 1, k[1] + int(g.get("count", 1))
        lines.append(f"  fused kernels: {len(groups)} distinct, {sum(k[1] for k in kinds.values())} steps")
        lines += [f"    {ops}: {steps} steps, {n} distinct" for ops, (n, steps) in
                  sorted(kinds.items(), key=lambda kv: -kv[1][1])[:12]]
        if len(kinds) > 12:
            lines.append(f"    ... and {len(kinds) - 12} more fusions")
    sizes = manifest.get("members", {})
    lines.append("  members: " + ", ".join(f"{name} {info.get('size', 0):,} B" for name, info in sizes.items()
                                           if isinstance(info, dict)))
    if memory or png:
        plan = _plan(members["plan.json"], what)
        try:
            if memory:
                lines += ["", arena_text(plan)]
            if png:
                arena_png(plan, png)
                lines.append(f"arena picture: {png}")
        except (KeyError, IndexError, TypeError, ValueError) as e:
            raise ArtifactError(f"{what}: plan.json holds no valid memory plan ({type(e).__name__}: {e})") from None
    if graph:
        from .ir.picture import write_picture
        from .ir.text import ParseError, parse_graph

        if not graph.endswith((".svg", ".html", ".htm")):
            raise EdgeoptError(f"--graph writes an .svg or .html file, not {graph!r}")
        try:
            g = parse_graph(members.get("ir.txt", b"").decode(), placeholders=True)
        except (ParseError, KeyError, ValueError) as e:
            raise ArtifactError(f"{what}: ir.txt does not parse ({e})") from None
        write_picture(g, graph, f"{path}: {manifest['target'].get('name')}")
        lines.append(f"graph picture: {graph}")
    if ir:
        lines += ["", members.get("ir.txt", b"").decode(errors="replace")]
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


def keygen(private: str, public: str | None = None, force: bool = False) -> str:
    """``edgeopt keygen``: write the pair; the text says where and the key id."""
    from .signer import _public_path
    from .signer import keygen as make

    kid = make(private, public, overwrite=force)
    return (f"private key: {private} (keep it secret)\npublic key:  {public or _public_path(private)} (give it to "
            f"edgeopt.load(..., trusted_keys=[...]))\nkey id:      {kid}")


def sign(path: str, key: str, out: str | None = None) -> str:
    """``edgeopt sign``."""
    from .signer import sign as sign_artifact

    kid = sign_artifact(path, key, out)
    return f"signed {out or path} with key {kid}"


def verify(path: str, keys: list[str] | None = None, sha256: str | None = None) -> str:
    """``edgeopt verify``: every hash, and the signature (``keys``) or the pinned file hash, without loading any
    library; with neither, it lists who signed the artifact (unverified)."""
    from .runtime.artifact import every_member, hash_only, read_artifact
    from .runtime.manifest_check import SIGNATURE
    from .runtime.signing import decode

    what = f"artifact {path!r}"
    read_artifact(path, what, consumers=every_member(hash_only), trusted_keys=keys or None, sha256=sha256)
    checked = [x for x, given in (("signature", keys), ("sha256", sha256)) if given]
    text = f"{path}: intact (hashes of every member match its manifest)"
    if checked:
        return text + f"; {' and '.join(checked)} verified"
    with zipfile.ZipFile(path) as z:
        if SIGNATURE not in z.namelist():
            return text + "; not signed (a hash in the file proves no origin: sign it, or pin its sha256)"
        signers = [kid for kid, _ in decode(z.read(SIGNATURE), what)]
    return text + f"; signed by {', '.join(signers)} (not verified: give --key)"


def _plan(data: bytes, what: str) -> dict:
    from .runtime.manifest_check import json_object

    return json_object(data, what, "plan.json")


if __name__ == "__main__":
    sys.exit(main())
