"""``edgeopt.tune``: search faster schedules for a model's kernels with TVM MetaSchedule and keep the ones that
beat edgeopt's hand schedules in a tuning database that later compiles reuse.

    edgeopt.tune(model, inputs, tuning_db="model.tuning.json", trials=64)         # minutes per kernel
    compiled = edgeopt.compile(model, inputs, tuning_db="model.tuning.json")      # tuned kernels used

The model is traced and optimized exactly as ``edgeopt.compile`` does, so the kernels tuned are the ones a
compile builds (identical kernels once). Each is tuned from its unscheduled PrimFunc; then the best candidate
and the hand schedule are timed the same way (one worker process, the target's thread count, interleaved
rounds) and their outputs compared. A tuned schedule is recorded only when it computes the same results and
is faster than the hand one by more than ``min_speedup``; otherwise the record keeps both times and no
schedule, so tuning never makes a model slower and a later run skips the kernel (``retune=True`` redoes it).
The database is saved after every kernel. Tuning needs the ``tune`` extra (``pip install 'edgeopt[tune]'``).
"""

from __future__ import annotations

import datetime
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

from . import __version__
from .errors import TuningError


@dataclass
class RemoteTuning:
    """Time the candidates on boards instead of this machine: the TVM RPC servers registered with the tracker at
    ``tracker`` (host, port) under ``key`` (``python -m tvm.exec.rpc_server --tracker host:port --key KEY`` on each
    board). ``workers`` candidates are measured at once, each on a board the tracker hands out (MetaSchedule's
    ``RPCRunner``); give as many as there are boards. The boards need this machine's CPU kind: the tuned schedule's
    results are also checked here."""

    tracker: tuple[str, int]
    key: str
    workers: int = 2
    session_timeout: float = 120.0


def tune(model, example_inputs: Sequence, target="host", *, trials: int = 64,
         tuning_db: str | os.PathLike = "edgeopt-tuning.json", opt_level: int = 2, passes: Sequence | None = None,
         disable: Sequence[str] = (), cost_model: str = "xgb", strategy: str = "evolutionary",
         min_speedup: float = 1.0, retune: bool = False, progress: bool | None = None, seed: int | None = None,
         work_dir: str | None = None, rpc: RemoteTuning | None = None, **target_options) -> list[dict]:
    """Tune every distinct kernel of ``model`` (compiled for ``target`` at the shapes of ``example_inputs``)
    with ``trials`` MetaSchedule candidates each; records go to the JSON file ``tuning_db`` (created, or
    updated). Returns one dict per kernel: kernel, op, status, trials, hand_ms, tuned_ms, speedup, seconds.

    ``cost_model`` ("xgb", "random") and ``strategy`` ("evolutionary", "replay-trace") go to MetaSchedule;
    ``cost_model="random"`` needs no xgboost. ``work_dir`` keeps MetaSchedule's logs (default: a temp dir).
    ``opt_level``, ``passes``, ``disable`` and target options are those of ``edgeopt.compile``.
    ``rpc`` (a ``RemoteTuning``) times the candidates on boards through a TVM RPC tracker, several in parallel.
    """
    from .lower.metaschedule import check_dependencies

    if int(trials) < 1:
        raise ValueError(f"trials must be at least 1, got {trials}")
    check_dependencies(cost_model)
    from tqdm import tqdm

    from .progress import showing

    progress = showing(progress)
    from .api import optimize_graph
    from .compiled_model import cannot_run_here
    from .frontend import from_exported, trace
    from .lower.metaschedule import Tuner
    from .targets import get_target
    from .tuning_db import TuningDB

    tgt = get_target(target, **target_options)
    why = cannot_run_here(tgt.describe())
    if why or not getattr(tgt, "num_cores", None):
        raise TuningError(f"tuning times kernels on this machine, so it needs a target that runs here "
                          f"('host'); target {tgt.name!r} does not" + (f": {why}" if why else ""))
    db = TuningDB.load(tuning_db, missing_ok=True)  # a damaged file is an error, never overwritten
    if not isinstance(example_inputs, (tuple, list)):
        example_inputs = (example_inputs,)
    graph = from_exported(trace(model, example_inputs))
    optimize_graph(graph, tgt, opt_level=opt_level, passes=passes, disable=disable)
    kernels = _tunable_kernels(graph)
    results = []
    if rpc is not None and not isinstance(rpc, RemoteTuning):
        raise TuningError(f"rpc= takes an edgeopt.RemoteTuning(tracker=(host, port), key=...), got {rpc!r}")
    with Tuner(tgt.tvm_target(), tgt.num_cores, cost_model, strategy, seed, work_dir, rpc) as tuner:
        bar = tqdm(kernels, desc="tuning", unit="kernel", disable=not progress, file=sys.stderr)
        for name, key, node in bar:
            bar.set_postfix_str(name)
            res = _tune_kernel(tuner, db, graph, tgt, name, key, node, int(trials), min_speedup, retune)
            results.append(res)
            if progress:
                bar.write(_line(res), file=sys.stderr)
    if progress:
        won = [r for r in results if r["status"] == "tuned"]
        print(f"tuning: {len(won)} of {len(results)} kernels faster tuned; database {db.path}", file=sys.stderr)
    return results


def _tunable_kernels(graph) -> list[tuple[str, str, object]]:
    """(name, kernel key, node) of each distinct kernel built from TE, in graph order."""
    from .lower.build import is_tunable, kernel_key, kernel_name

    seen, out = set(), []
    for n in graph.nodes:
        if not is_tunable(graph, n):
            continue
        key = kernel_key(graph, n)
        if key not in seen:
            seen.add(key)
            out.append((kernel_name(n, key), key, n))
    return out


def _tune_kernel(tuner, db, graph, tgt, name: str, key: str, node, trials: int, min_speedup: float,
                 retune: bool) -> dict:
    """Tune one kernel, record it in ``db`` (saved) and return its result row."""
    import tvm

    from .lower.build import anchor_op, build_primfunc, hand_kernel
    from .lower.metaschedule import same_outputs
    from .tuning_db import encode_trace, func_hash

    t0 = time.perf_counter()
    tkey = str(tgt.tvm_target())
    func = build_primfunc(graph, node)[0]
    fhash = func_hash(func)
    row = {"kernel": name, "op": anchor_op(node), "trials": 0, "hand_ms": None, "tuned_ms": None, "speedup": None}
    old = db.get(tkey, key)
    if old and not retune and old["func_hash"] == fhash and old["tvm_version"] == tvm.__version__:
        return {**row, "status": "in database", "trials": old["trials"], "hand_ms": old["hand_ms"],
                "tuned_ms": old.get("tuned_ms"), "speedup": _speedup(old["hand_ms"], old.get("tuned_ms")),
                "seconds": 0.0}
    hand, hand_desc = hand_kernel(graph, node, tgt.vector_lanes(32), tgt)  # what compile builds
    try:
        sch, measured = tuner.search(func, name, trials)
        if sch is None:
            status, trace, (hand_ms,), tuned_ms = "no valid candidate", None, tuner.measure([hand]), None
        else:
            tuned = sch.mod["main"]
            hand_ms, tuned_ms = tuner.measure([hand, tuned])
            if not same_outputs(hand, tuned, tgt.tvm_target()):
                status, trace = "tuned outputs differ: kept the hand schedule", None
            elif hand_ms > tuned_ms * min_speedup:
                status, trace = "tuned", encode_trace(sch.trace)
            else:
                status, trace = "hand schedule faster", None
    except TuningError as e:
        return {**row, "status": f"failed: {e}", "seconds": round(time.perf_counter() - t0, 1)}
    except Exception as e:  # MetaSchedule refused this kernel; the others still get tuned
        return {**row, "status": f"failed: {type(e).__name__}: {str(e).strip().splitlines()[-1][:200]}",
                "seconds": round(time.perf_counter() - t0, 1)}
    db.put(tkey, key, {
        "kernel": name, "op": row["op"], "func_hash": fhash, "hand_schedule": hand_desc,
        "hand_ms": round(hand_ms, 6), "tuned_ms": None if tuned_ms is None else round(tuned_ms, 6),
        "trials": measured, "num_threads": tuner.num_threads, "tvm_version": tvm.__version__,
        "edgeopt_version": __version__,
        "tuned_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"), "trace": trace,
    })
    db.save()
    return {**row, "status": status, "trials": measured, "hand_ms": hand_ms, "tuned_ms": tuned_ms,
            "speedup": _speedup(hand_ms, tuned_ms), "seconds": round(time.perf_counter() - t0, 1)}


def _speedup(hand_ms, tuned_ms) -> float | None:
    return round(hand_ms / tuned_ms, 3) if hand_ms and tuned_ms else None


def _line(r: dict) -> str:
    """One kernel's progress line: name, trials, hand vs tuned time, what was recorded."""
    times = f"hand {r['hand_ms']:.4f} ms" if r["hand_ms"] is not None else "hand -"
    if r["tuned_ms"] is not None:
        times += f", tuned {r['tuned_ms']:.4f} ms ({r['speedup']:.2f}x)"
    return f"  {r['kernel']}: {r['trials']} trials, {times}: {r['status']} [{r['seconds']:.0f} s]"
