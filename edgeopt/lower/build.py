"""Lower an IR graph to one compiled TVM library plus a JSON execution plan.

Each node becomes a kernel (a TE compute from ``rules``, scheduled by ``schedule_cpu``; a ``fused`` node's
whole body is composed into one) in destination-passing style: ``kernel(*inputs, *outputs)``.
Identical kernels (same op, attributes and types) are built once. ``reshape`` nodes become views (no
kernel, no copy). Scalar constants are folded into the kernels as immediates; other constants are
passed as arguments (the weights). A few kernels are written directly in TIR (``TIR_KERNELS``: the
tiled online-softmax attention). A tuning database (``edgeopt.tuning_db``, written by ``edgeopt.tune``)
replaces the hand schedule of the kernels it has a valid record for with the tuned one.

The plan (``plan.json`` in the artifact) is all the runtime needs to know:

    {"inputs":  [{"name", "shape", "dtype"}], "outputs": [...],
     "values":  {name: {"shape", "dtype", "kind": input|const|buffer|view|state, "of": source (views),
                        "offset": byte offset in the arena, "live": [first, last step] (inputs and buffers)}},
     "steps":   [{"kernel": func name, "args": [value names...], "num_outputs": n, "node": IR value name,
                  "inplace": [[input, output]...] (pairs the kernel may share)}],
     "arena_bytes": size of the one activation arena (``edgeopt.memory``)}

A graph's states (``Graph.states``: a KV cache) are values of kind ``state``, held by the runtime outside the
arena; the ``index_copy`` that updates one writes in place, its output a view of the state.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field

import tvm
from tvm import te

from ..ir import Graph, Node, Value
from ..ir.registry import get_op
from ..ir.types import TVM_DTYPES
from ..memory import MemoryPlan, plan_arena
from .flash_attention import flash_attention
from .index_copy import index_copy_kernel
from .merge_sort import argtopk_kernel
from .object_cache import ObjectCache
from .objects import KernelObjects, compile_objects
from .rules import get_rule
from .rules._te import narrow
from .scan import cumsum_kernel
from .schedule_cpu import schedule_kernel
from .sparse_linear import sparse_linear_kernel

#: kernels written directly in TIR (already scheduled); each returns None for cases it does not cover, or (func,
#: description) where it has several forms
TIR_KERNELS = {"argtopk": (argtopk_kernel, "tir(merge sort)"),
               "attention": (flash_attention, "flash(online-softmax)"),
               "cumsum": (cumsum_kernel, "tir(running sum per line)"),
               "index_copy": (index_copy_kernel, "tir(copy, then rows)"),
               "sparse_linear": (sparse_linear_kernel, "tir(sparse rows, tokens in lanes)")}
#: (target, kernel key, tuned record id or None) -> (scheduled func, schedule description, tuned?)
_KERNEL_CACHE: dict[tuple[str, str, str | None], tuple[tvm.tirx.PrimFunc, str, bool]] = {}


@dataclass
class Lowered:
    executable: object
    plan: dict
    kernels: list[dict] = field(default_factory=list)  # one per unique kernel: name, op, schedule
    seconds: dict = field(default_factory=dict)
    memory: MemoryPlan | None = None
    tuning_ignored: list[str] = field(default_factory=list)  # kernels whose tuning record did not apply
    kernel_cache: dict | None = None  # {"hits", "compiled"}: kernels reused from / added to the disk cache


def _is_scalar_const(g: Graph, v: Value) -> bool:
    return g.is_const(v) and v.type.numel == 1


def kernel_key(g: Graph, n: Node) -> str:
    ins = [("scalar", v.type.text(), g.const(v).reshape(()).item()) if _is_scalar_const(g, v) else v.type.text()
           for v in n.inputs]
    body = _body_key(n.body) if n.body is not None else None
    return json.dumps([n.op, n.attrs, body, ins, [o.type.text() for o in n.outputs]], sort_keys=True)


def _body_key(body: Graph) -> list:
    """A fused body's structure without its value names: equal bodies give one kernel."""
    ids = {v: f"p{i}" for i, v in enumerate(body.inputs)}
    consts = []
    for name, arr in body.constants.items():
        ids[body.const_values[name]] = f"c{len(consts)}"
        consts.append([body.const_values[name].type.text(), arr.reshape(-1).tolist()])
    nodes = []
    for i, m in enumerate(body.nodes):
        nodes.append([m.op, m.attrs, [ids[v] for v in m.inputs], [o.type.text() for o in m.outputs]])
        ids.update({o: f"n{i}.{j}" for j, o in enumerate(m.outputs)})
    return [consts, nodes, [ids[v] for v in body.outputs]]


def kernel_args(g: Graph, n: Node) -> list[Value]:
    """The IR values a node's kernel takes as arguments, in order (scalar constants are folded in)."""
    return [v for v in n.inputs if not _is_scalar_const(g, v)]


def anchor_op(n: Node) -> str:
    """The op that picks the kernel's schedule: the node's op, or a fused kernel's anchor."""
    return n.attrs.get("anchor") or n.op if n.op == "fused" else n.op


def inplace_candidates(g: Graph, n: Node, args: list[Value]) -> list[list[str]]:
    """[input, output] pairs where the kernel may write its output over that input: the input has the output's
    type and everything computed from it inside the kernel is elementwise at the output's shape, so element i
    of the input is read only to compute element i of the output, just before it is written (a residual
    add in a conv's epilogue qualifies; an input of the conv itself does not). The memory planner shares
    the pair's storage when the input dies at this kernel."""
    if len(n.outputs) != 1 or get_op(n.op).view:
        return []
    out = n.outputs[0].type
    candidates = [v for v in args if v.type == out and not g.is_const(v) and args.count(v) == 1]
    if n.body is None:
        ok = get_op(n.op).kind == "elementwise"
        return [[v.name, n.outputs[0].name] for v in candidates] if ok else []
    params = dict(zip(n.inputs, n.body.inputs))
    return [[v.name, n.outputs[0].name] for v in candidates if _only_elementwise_after(n.body, params[v], out)]


def _only_elementwise_after(body: Graph, param: Value, out) -> bool:
    """Every node of ``body`` that depends on ``param`` is elementwise with the output's shape."""
    tainted = {param}
    for m in body.nodes:
        if any(v in tainted for v in m.inputs):
            if get_op(m.op).kind != "elementwise" or any(o.type.shape != out.shape for o in m.outputs):
                return False
            tainted.update(m.outputs)
    return True


def anchor_attrs(n: Node) -> dict:
    """The attributes of the node's anchor op (a fused kernel: of the first body node with that op)."""
    if n.body is None:
        return n.attrs
    op = anchor_op(n)
    return next((m.attrs for m in n.body.nodes if m.op == op), {})


def build_primfunc(g: Graph, n: Node, storage: dict[str, str] | None = None) -> tuple[tvm.tirx.PrimFunc, list[Value]]:
    """The node's TE compute (a fused node: its whole body) as a PrimFunc; returns it and its argument values.

    ``storage`` (a target's ``storage_dtypes``) maps IR dtypes to the dtype their buffers hold on the device: such
    arguments are converted on load and such outputs on store, inside the kernel."""
    storage = storage or {}
    args, te_ins = [], []
    for i, v in enumerate(n.inputs):
        dt = TVM_DTYPES[v.type.dtype]
        if _is_scalar_const(g, v):
            val = g.const(v).reshape(()).item()
            te_ins.append(te.compute(v.type.shape, _constant_body(val, dt), name=f"scalar{i}"))
        else:
            held = storage.get(v.type.dtype)
            ph = te.placeholder(v.type.shape, TVM_DTYPES[held] if held else dt, name=f"in{i}")
            te_ins.append(narrow(ph, dt, f"load{i}") if held else ph)
            args.append((ph, v))
    outs = _body_compute(n.body, te_ins) if n.body is not None else [_node_compute(n, te_ins)]
    outs = [narrow(t, TVM_DTYPES[storage[v.type.dtype]], f"store{i}") if v.type.dtype in storage else t
            for i, (t, v) in enumerate(zip(outs, n.outputs))]  # unique names: kernels bind buffers by name
    func = te.create_prim_func([ph for ph, _ in args] + outs)
    return func, [v for _, v in args]


def kernel_name(n: Node, key: str) -> str:
    """The kernel's function name in the library: its op (a fused kernel: its name) and a hash of its key."""
    label = n.attrs["name"] if n.op == "fused" else n.op
    return f"{label}_{hashlib.sha1(key.encode()).hexdigest()[:12]}"


def hand_kernel(g: Graph, n: Node, lanes: int, target=None) -> tuple[tvm.tirx.PrimFunc, str]:
    """(func, schedule description) edgeopt builds for ``n`` without tuning: a hand-written TIR kernel, or the
    TE compute scheduled by ``schedule_kernel`` (by ``target.schedule`` when a target is given)."""
    tir = _tir_kernel(g, n) if target is None or target.tir_kernels else None
    schedule = schedule_kernel if target is None else target.schedule
    if tir:
        return tir
    func = build_primfunc(g, n, getattr(target, "storage_dtypes", None))[0]
    return schedule(func, anchor_op(n), lanes, anchor_attrs(n))


def is_tunable(g: Graph, n: Node) -> bool:
    """A kernel built from TE (views and hand-written TIR kernels are not tuned)."""
    return not get_op(n.op).view and _tir_kernel(g, n) is None


def _tuned_kernel(g: Graph, n: Node, record: dict,
                  storage: dict[str, str] | None = None) -> tuple[tvm.tirx.PrimFunc, str, bool] | None:
    """The kernel with the record's tuned schedule, or None when the record is stale (the unscheduled
    function changed since tuning) or its trace no longer applies."""
    from ..tuning_db import apply_trace, func_hash

    if not is_tunable(g, n):
        return None
    func = build_primfunc(g, n, storage)[0]
    if func_hash(func) != record["func_hash"]:
        return None
    try:
        tuned = apply_trace(func, record["trace"])
    except Exception:  # a trace from another edgeopt/TVM build that does not fit: keep the hand schedule
        return None
    best = record.get("tuned_ms")
    speed = f", {record['hand_ms'] / best:.2f}x" if isinstance(best, (int, float)) and best > 0 else ""
    return tuned, f"tuned(metaschedule, {record['trials']} trials{speed} vs {record.get('hand_schedule')})", True


def _tir_kernel(g: Graph, n: Node):
    """(func, schedule description) of a hand-written TIR kernel for ``n``, or None."""
    if n.body is not None or n.op not in TIR_KERNELS or any(_is_scalar_const(g, v) for v in n.inputs):
        return None
    make, desc = TIR_KERNELS[n.op]
    func = make([v.type for v in n.inputs], n.attrs, n.outputs[0].type)
    if isinstance(func, tuple):  # the kernel names the form it took
        func, desc = func
    return (func, desc) if func is not None else None


def _node_compute(n: Node, te_ins: list) -> te.Tensor:
    out = get_rule(n.op)(list(te_ins), n.attrs, n.outputs[0].type, n.op)
    if n.outputs[0].type.numel and _reduces_over_nothing(out):
        from ..errors import PassError

        raise PassError(f"{n.op} of {', '.join(str(v.type) for v in n.inputs)} reduces over zero elements, which a "
                        f"TVM kernel never writes (it initializes a reduction in its first step). The pass "
                        f"constant_folding computes such a node at compile time when its other inputs are constants: "
                        f"keep it enabled, or make this zero-size axis nonempty")
    want = TVM_DTYPES[n.outputs[0].type.dtype]
    if out.dtype != want:
        raise AssertionError(f"lowering rule of {n.op} produced {out.dtype}, IR says {want}")
    return out


def _reduces_over_nothing(t: te.Tensor) -> bool:
    """Whether computing ``t`` runs a reduction with a zero-extent axis (its result would be left unwritten)."""
    seen, todo = set(), [t.op]
    while todo:
        op = todo.pop()
        if op in seen:
            continue
        seen.add(op)
        if isinstance(op, te.ComputeOp) and any(int(r.dom.extent) == 0 for r in op.reduce_axis):
            return True
        todo.extend(x.op for x in op.input_tensors)
    return False


def _body_compute(body: Graph, te_ins: list) -> list[te.Tensor]:
    """Compose the rules of a fused body into one TE graph (its intermediates are never stored)."""
    env = dict(zip(body.inputs, te_ins))
    for i, (name, arr) in enumerate(body.constants.items()):
        v = body.const_values[name]
        env[v] = te.compute(v.type.shape, _constant_body(arr.reshape(()).item(), TVM_DTYPES[v.type.dtype]),
                            name=f"scalar_b{i}")
    for m in body.nodes:
        env[m.outputs[0]] = _node_compute(m, [env[v] for v in m.inputs])
    return [env[v] for v in body.outputs]


def _constant_body(val, dt):
    def body(*_):
        return tvm.tirx.const(val, dt)

    return body


def lower(g: Graph, target, tuning=None, cache=None) -> Lowered:
    """Compile every kernel of ``g`` for ``target`` into one library; build the execution plan.

    ``tuning`` (an ``edgeopt.tuning_db.TuningDB``) gives tuned schedules for the kernels it has records for.
    ``cache`` (an ``edgeopt.cache.DiskCache``) keeps each CPU kernel's object code for later compiles."""
    from ..tuning_db import record_id

    if g.states and getattr(target, "runtime", "cpu") != "cpu":
        from ..errors import TargetError

        raise TargetError(f"graphs with state (a language model's KV cache) compile for the CPU targets (host, arm) so "
                          f"far, not for {target.name!r}")
    t0 = time.perf_counter()
    tkey = str(target.tvm_target())
    lanes = target.vector_lanes(32)
    storage = getattr(target, "storage_dtypes", {})
    funcs: dict[str, tvm.tirx.PrimFunc] = {}  # the kernels to compile now
    seen: set[str] = set()
    objects = ObjectCache.for_target(target, cache)  # CPU targets: one object file per kernel, cached on disk
    kernels: list[dict] = []
    values: dict[str, dict] = {}
    steps: list[dict] = []
    ignored: list[str] = []  # kernels whose tuning record is stale
    for v in g.inputs:
        values[v.name] = _vinfo(v, "input", storage)
    for v in g.states:
        values[v.name] = _vinfo(v, "state", storage)
    updates = {v: k for k, v in g.state_updates.items()}  # new value -> the state it is written into
    for n in g.nodes:
        out = n.outputs[0]
        if out in updates:
            steps.append(_state_update_step(g, n, updates[out], target, funcs, kernels, values, storage))
            continue
        if get_op(n.op).view:
            src = n.inputs[0]
            if g.is_const(src) and src.name not in values:  # a view of a weight: the weight must ship
                values[src.name] = _vinfo(src, "const", storage)
            values[out.name] = {**_vinfo(out, "view", storage), "of": src.name}
            continue
        key = kernel_key(g, n)
        name = kernel_name(n, key)
        arg_values = kernel_args(g, n)
        if name not in seen:  # TE is built and scheduled once per distinct kernel, not per node
            seen.add(name)
            record = tuning.tuned(tkey, key) if tuning is not None else None
            rid = record_id(record) if record else None
            disk_key = objects.key(key, rid) if objects else None
            meta = objects.lookup(disk_key) if objects else None
            if meta is not None:  # compiled by an earlier compile: no TE, no schedule, no code generation
                schedule, tuned = meta["schedule"], meta["tuned"]
            else:
                cached = _KERNEL_CACHE.get((tkey, key, rid))
                if cached is None:
                    cached = ((record and _tuned_kernel(g, n, record, storage))
                              or (*hand_kernel(g, n, lanes, target), False))
                    _KERNEL_CACHE[(tkey, key, rid)] = cached
                funcs[name] = cached[0].with_attr("global_symbol", name)
                schedule, tuned = cached[1], cached[2]
                if objects:
                    objects.pending(name, disk_key, {"schedule": schedule, "tuned": tuned})
            ops = [m.op for m in n.body.nodes] if n.body is not None else [n.op]
            kernels.append({"name": name, "op": anchor_op(n), "ops": ops, "schedule": schedule, "tuned": tuned})
            if record and not tuned:
                ignored.append(name)
        for v in arg_values:
            if g.is_const(v) and v.name not in values:
                values[v.name] = _vinfo(v, "const", storage)
        for o in n.outputs:
            values[o.name] = _vinfo(o, "buffer", storage)
        step = {"kernel": name, "args": [v.name for v in arg_values] + [o.name for o in n.outputs],
                "num_outputs": len(n.outputs), "node": out.name}
        inplace = inplace_candidates(g, n, arg_values)
        if inplace:
            step["inplace"] = inplace
        steps.append(step)
    t1 = time.perf_counter()
    if objects:
        executable = objects.build(funcs)
    elif funcs and getattr(target, "object_code", False):  # no cache: the same objects, linked the same way
        executable = KernelObjects(compile_objects(target.tvm_target(), funcs))
    else:
        executable = target.build(funcs) if funcs else None
    t2 = time.perf_counter()
    plan = {
        "inputs": [_io(v) for v in g.inputs],
        "outputs": [_io(v) for v in g.outputs],
        "values": values,
        "steps": steps,
    }
    memory = plan_arena(plan, align=getattr(target, "buffer_alignment", 64))
    for tok in memory.tokens:
        for name in tok.values:
            values[name]["offset"] = memory.offsets[tok.name]
            values[name]["live"] = [tok.start, tok.end]
    plan["arena_bytes"] = memory.arena_bytes
    t3 = time.perf_counter()
    return Lowered(executable, plan, kernels, {"schedule": t1 - t0, "codegen": t2 - t1, "memory_plan": t3 - t2},
                   memory, ignored, objects.stats() if objects else None)


def _state_update_step(g: Graph, n: Node, state: str, target, funcs: dict, kernels: list, values: dict,
                       storage: dict) -> dict:
    """The step of an ``index_copy`` that updates ``state`` in place: a kernel that writes the new rows only (the TE
    rule, which writes every element, on targets without TIR kernels); its output is a view of the state."""
    key = json.dumps([n.op, n.attrs, [v.type.text() for v in n.inputs], "inplace"])
    name = kernel_name(n, key)
    if name not in funcs:  # (lower() admits states on CPU targets only, which all have TIR kernels)
        func = index_copy_kernel([v.type for v in n.inputs], n.attrs, n.outputs[0].type, inplace=True)
        desc = "tir(rows in place)"
        funcs[name] = func.with_attr("global_symbol", name)
        kernels.append({"name": name, "op": n.op, "ops": [n.op], "schedule": desc, "tuned": False})
    args = list(n.inputs)  # the TIR kernel takes every input, one-element constants too
    for v in args:
        if g.is_const(v) and v.name not in values:
            values[v.name] = _vinfo(v, "const", storage)
    out = n.outputs[0]
    values[out.name] = {**_vinfo(out, "view", storage), "of": state}
    return {"kernel": name, "args": [v.name for v in args] + [out.name], "num_outputs": 1, "node": out.name}


def _vinfo(v: Value, kind: str, storage: dict[str, str]) -> dict:
    """A value's plan entry; ``dtype`` is what its buffer holds (``storage``: the target's ``storage_dtypes``)."""
    return {"shape": list(v.type.shape), "dtype": storage.get(v.type.dtype, v.type.dtype), "kind": kind}


def _io(v: Value) -> dict:
    return {"name": v.name, "shape": list(v.type.shape), "dtype": v.type.dtype}
