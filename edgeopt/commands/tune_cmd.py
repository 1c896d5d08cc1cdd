"""``edgeopt tune``: search schedules for a model's kernels with MetaSchedule into a tuning database.

    edgeopt tune model.py:make --db model.tuning.json --trials 64
    edgeopt compile model.py:make -o m.edgeopt --tuning-db model.tuning.json     # then compile with it
    edgeopt tune-info model.tuning.json                                           # what it holds
    edgeopt tune model.py:make --db t.json --tracker 10.0.0.2:9190 --device-key epyc --workers 4   # on 4 boards

Tuning times kernels on this machine (target ``host``); minutes per kernel. Needs ``pip install 'edgeopt[tune]'``.
"""

from __future__ import annotations


def add_parser(sub) -> None:
    import argparse

    p = sub.add_parser("tune", help="tune a model's kernels (MetaSchedule) into a tuning database",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help="file.py:factory, package.module:factory or a .pt2 (as for edgeopt compile)")
    p.add_argument("--db", required=True, help="the tuning database (JSON; created or updated)")
    p.add_argument("--input", action="append", metavar="FILE", help="example inputs, if the factory has none")
    p.add_argument("--trials", type=int, default=64, help="candidates per kernel (default 64)")
    p.add_argument("--cost-model", choices=["xgb", "random"], default="xgb")
    p.add_argument("--strategy", choices=["evolutionary", "replay-trace"], default="evolutionary")
    p.add_argument("--min-speedup", type=float, default=1.0, help="record a schedule only if this much faster "
                                                                 "than the hand schedule (default 1.0)")
    p.add_argument("--retune", action="store_true", help="tune kernels the database already has")
    p.add_argument("--seed", type=int)
    p.add_argument("--tracker", metavar="HOST:PORT", help="time candidates on the boards registered with this TVM RPC "
                                                          "tracker (python -m tvm.exec.rpc_tracker)")
    p.add_argument("--device-key", help="the boards' key at the tracker (rpc_server --key)")
    p.add_argument("--workers", type=int, default=2, help="candidates timed at once (one per board; default 2)")


def run(args) -> str:
    import edgeopt

    from .sources import load_model, load_named

    model, example = load_model(args.model, load_named(args.input))
    rpc = None
    if args.tracker:
        from .run_cmd import _host_port
        from .sources import SourceError

        if not args.device_key:
            raise SourceError("--tracker needs --device-key: the key the boards registered under")
        rpc = edgeopt.RemoteTuning(_host_port(args.tracker), args.device_key, workers=args.workers)
    rows = edgeopt.tune(model, example, tuning_db=args.db, trials=args.trials, cost_model=args.cost_model,
                        strategy=args.strategy, retune=args.retune, seed=args.seed,
                        min_speedup=args.min_speedup, rpc=rpc)
    tuned = [r for r in rows if r["status"] == "tuned"]
    lines = [f"{args.db}: {len(rows)} kernels, {len(tuned)} with a faster schedule recorded"]
    for r in rows:
        speed = f"{r['speedup']:.2f}x" if r.get("speedup") else "-"
        lines.append(f"  {r['kernel']} ({r['op']}): {r['status']}, {r['trials']} trials, {speed}")
    return "\n".join(lines)
