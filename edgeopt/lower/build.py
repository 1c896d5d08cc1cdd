"""Lower an IR graph to one compiled TVM library plus a JSON execution plan.

Each node becomes a kernel (a TE compute from ``rules``, scheduled by ``schedule_cpu``) in
destination-passing style: ``kernel(*inputs, output)``. Identical kernels (same op, attributes and
types) are built once. ``reshape`` nodes become views (no kernel, no copy). Scalar constants are folded
into the kernels as immediates; other constants are passed as arguments (the weights).

The plan (``plan.json`` in the artifact) is all the runtime needs to know:

    {"inputs":  [{"name", "shape", "dtype"}], "outputs": [...],
     "values":  {name: {"shape", "dtype", "kind": input|const|buffer|view, "of": source (views)}},
     "steps":   [{"kernel": func name, "args": [value names...], "node": IR value name}]}
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field

import tvm
from tvm import te

from ..ir import Graph, Node, Value
from ..ir.types import TVM_DTYPES
from .rules import get_rule
from .schedule_cpu import schedule_kernel

VIEW_OPS = {"reshape"}
_KERNEL_CACHE: dict[tuple[str, str], tuple[tvm.tirx.PrimFunc, str]] = {}


@dataclass
class Lowered:
    executable: object
    plan: dict
    kernels: list[dict] = field(default_factory=list)  # one per unique kernel: name, op, schedule
    seconds: dict = field(default_factory=dict)


def _is_scalar_const(g: Graph, v: Value) -> bool:
    return g.is_const(v) and v.type.numel == 1


def kernel_key(g: Graph, n: Node) -> str:
    ins = [("scalar", v.type.text(), g.const(v).reshape(()).item()) if _is_scalar_const(g, v) else v.type.text()
           for v in n.inputs]
    return json.dumps([n.op, n.attrs, ins, [o.type.text() for o in n.outputs]], sort_keys=True)


def kernel_args(g: Graph, n: Node) -> list[Value]:
    """The IR values a node's kernel takes as arguments, in order (scalar constants are folded in)."""
    return [v for v in n.inputs if not _is_scalar_const(g, v)]


def build_primfunc(g: Graph, n: Node) -> tuple[tvm.tirx.PrimFunc, list[Value]]:
    """The node's TE compute as a PrimFunc; returns it and ``kernel_args(g, n)``."""
    args, te_ins = [], []
    for i, v in enumerate(n.inputs):
        dt = TVM_DTYPES[v.type.dtype]
        if _is_scalar_const(g, v):
            val = g.const(v).reshape(()).item()
            te_ins.append(te.compute(v.type.shape, _constant_body(val, dt), name=f"scalar{i}"))
        else:
            ph = te.placeholder(v.type.shape, dt, name=f"in{i}")
            te_ins.append(ph)
            args.append((ph, v))
    out = get_rule(n.op)([*te_ins], n.attrs, n.outputs[0].type, n.op)
    want = TVM_DTYPES[n.outputs[0].type.dtype]
    if out.dtype != want:
        raise AssertionError(f"lowering rule of {n.op} produced {out.dtype}, IR says {want}")
    func = te.create_prim_func([ph for ph, _ in args] + [out])
    return func, [v for _, v in args]


def _constant_body(val, dt):
    def body(*_):
        return tvm.tirx.const(val, dt)

    return body


def lower(g: Graph, target) -> Lowered:
    """Compile every kernel of ``g`` for ``target`` into one library; build the execution plan."""
    t0 = time.perf_counter()
    tkey = str(target.tvm_target())
    lanes = target.vector_lanes(32)
    funcs: dict[str, tvm.tirx.PrimFunc] = {}
    kernels: list[dict] = []
    values: dict[str, dict] = {}
    steps: list[dict] = []
    for v in g.inputs:
        values[v.name] = _vinfo(v, "input")
    for n in g.nodes:
        out = n.outputs[0]
        if n.op in VIEW_OPS:
            src = n.inputs[0]
            if g.is_const(src) and src.name not in values:  # a view of a weight: the weight must ship
                values[src.name] = _vinfo(src, "const")
            values[out.name] = {**_vinfo(out, "view"), "of": src.name}
            continue
        key = kernel_key(g, n)
        name = f"{n.op}_{hashlib.sha1(key.encode()).hexdigest()[:12]}"
        arg_values = kernel_args(g, n)
        if name not in funcs:  # TE is built and scheduled once per distinct kernel, not per node
            cached = _KERNEL_CACHE.get((tkey, key))
            if cached is None:
                cached = schedule_kernel(build_primfunc(g, n)[0], n.op, lanes)
                _KERNEL_CACHE[(tkey, key)] = cached
            funcs[name] = cached[0].with_attr("global_symbol", name)
            kernels.append({"name": name, "op": n.op, "schedule": cached[1]})
        for v in arg_values:
            if g.is_const(v) and v.name not in values:
                values[v.name] = _vinfo(v, "const")
        values[out.name] = _vinfo(out, "buffer")
        steps.append({"kernel": name, "args": [v.name for v in arg_values] + [out.name], "node": out.name})
    t1 = time.perf_counter()
    executable = tvm.compile(tvm.IRModule(funcs), target=target.tvm_target()) if funcs else None
    t2 = time.perf_counter()
    plan = {
        "inputs": [_io(v) for v in g.inputs],
        "outputs": [_io(v) for v in g.outputs],
        "values": values,
        "steps": steps,
    }
    return Lowered(executable, plan, kernels, {"schedule": t1 - t0, "codegen": t2 - t1})


def _vinfo(v: Value, kind: str) -> dict:
    return {"shape": list(v.type.shape), "dtype": v.type.dtype, "kind": kind}


def _io(v: Value) -> dict:
    return {"name": v.name, "shape": list(v.type.shape), "dtype": v.type.dtype}
