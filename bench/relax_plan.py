"""edgeopt's activation arena against TVM Relax's own memory planner on the same graph and kernel order.

    .venv/bin/python bench/relax_plan.py                  # every zoo model, small test shapes
    .venv/bin/python bench/relax_plan.py resnet18 minilm

Method (``relax_planned_bytes``). The execution plan of a compiled model (see ``edgeopt.lower.build``) is
rebuilt as a Relax function with ``relax.BlockBuilder``:

- parameters: the plan's inputs, then every constant the steps read (the weights are parameters, so they
  are not activations and get no storage, as in edgeopt's arena);
- one ``relax.call_tir`` per plan step, in plan order, inside one dataflow block. Each calls a stub
  PrimFunc with the kernel's signature (input and output buffers of the right shapes and dtypes) whose
  body only writes zeros: the planner looks at the Relax calls, not at the kernel bodies. The stub reads
  none of its inputs so ``RewriteDataflowReshape`` can never mistake it for a reshape. A step with
  ``num_outputs`` > 1 returns a tuple, unpacked with ``TupleGetItem``;
- every ``view`` value (a reshape, no copy) becomes ``R.reshape`` of its source, bound to a dataflow
  variable. TVM's default build pipeline legalizes it to a ``call_tir`` of a copy kernel and then
  ``RewriteDataflowReshape`` turns that back into ``R.reshape``, which ``StaticPlanBlockMemory`` treats as
  an alias of its input's storage (``IsInplaceMemoryOp``), and which later lowers to
  ``vm.builtin.reshape`` (a view). So views cost nothing in either planner. (Only a reshape bound directly
  to a dataflow *output* variable would stay a copy; we never do that: every value is bound to a dataflow
  variable first and the function's results are emitted as outputs from those.)
- the function returns the plan's outputs (a tuple if there are several).

Then the prefix of ``tvm.relax.pipeline.default_build_pipeline`` up to the planner runs on it:
``LegalizeOps``, ``RewriteDataflowReshape``, ``ToNonDataflow``, ``RemovePurityChecking``, ``CallTIRRewrite``
(which turns every ``call_tir`` into ``R.builtin.alloc_tensor`` for each output plus a direct
destination-passing call) and ``StaticPlanBlockMemory``. We then add up the bytes of every
``R.memory.alloc_storage`` (the planned storage) and of every ``R.builtin.alloc_tensor`` left unplanned. The rest
of the default pipeline lowers each of the former to one ``vm.builtin.alloc_storage`` of the same bytes, and each
of the latter to one more (``LowerAllocTensor``), so storage + unplanned bytes are exactly what the VM bytecode
allocates (checked on resnet18: 4 planned storages plus one for the output; the module also compiles with
``tvm.compile`` and runs in the VM).

Fairness caveats, all from ``src/relax/transform/static_plan_block_memory.cc`` and checked on small
functions:

- **Graph inputs and outputs.** Relax plans neither: inputs are the caller's tensors (no allocation at all),
  and a tensor the function returns (or one a returned view aliases) keeps its own unplanned
  ``R.builtin.alloc_tensor``. edgeopt's arena holds the inputs (copied in) and the outputs too. So
  ``storage_bytes`` alone is *not* comparable to ``arena_bytes``; ``total_bytes`` = ``storage_bytes`` +
  ``unplanned_bytes`` + ``input_bytes`` is the activation memory a Relax VM run needs for the same plan,
  and is what ``main`` compares with the arena.
- **Separate storages, whole-block reuse.** Each planned storage is its own allocation; a tensor reuses a
  freed storage whole (offset 0), never a part of a bigger one or several adjacent ones. It picks the
  smallest free storage at least as big, else grows the largest smaller one, and only within a factor of
  16 in size (``match_range_``). edgeopt packs byte offsets in one arena.
- **dtype pools.** Storages are pooled per (scope, dtype): an ``f32`` tensor never reuses the storage of an
  ``i64`` or ``bool`` tensor. edgeopt's arena is untyped bytes.
- **No in-place.** Outputs are allocated before the call and its inputs are released after it, so a kernel's
  inputs and outputs never share storage. edgeopt may share them for in-place candidates (``inplace``).
- **Sizes.** Relax sizes are exact bytes (``bool`` is 1 byte); edgeopt rounds every token up to 64 bytes.
- **Static footprint.** The storages are summed as if all live for the whole call (that is how the plan is
  emitted; ``KillAfterLastUse`` later frees them after their last use, and the VM's pooled allocator may
  hand freed memory to a later unplanned output, which this count ignores).

``main`` compiles every zoo model with ``edgeopt.compile`` (small shapes unless ``--full``) and prints edgeopt's
arena, its lower bound, edgeopt's best arena without in-place sharing (``plan_arena(plan, inplace=False)``, the
closer match to Relax's rules), the Relax numbers and the ratios ``relax total / edgeopt arena`` (the headline)
and ``relax storage / edgeopt arena`` (storage only: an under-estimate of Relax's memory, see above). As a
like-for-like control it also plans, with edgeopt's algorithms, only what Relax plans (the intermediates: no
graph inputs or outputs, no in-place; ``edgeopt_intermediate_bytes``) and compares that with ``storage_bytes``.
It writes bench/results/relax-plan-<time>.json.

Result on the small zoo models (2026-11-25, bench/results/relax-plan-20261125-085151.json): edgeopt's arena met
its lower bound on every model; Relax needed 1.29-1.84x it in total (inputs + storage + outputs) and 1.14-1.44x
edgeopt's arena over the same intermediates. The gap comes from whole-storage reuse (a freed storage is reused
only whole and, when grown, keeps its largest size), not from dtypes: the zoo's intermediates are all f32 but one
256-byte bool mask.
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from bench.common import compiled_zoo, save_results  # noqa: E402

Sig = tuple[tuple[int, ...], str]  # (shape, TVM dtype name) of one buffer


def _tensor_type(info: dict):
    from tvm import relax

    from edgeopt.ir.types import TVM_DTYPES

    return relax.TensorType(tuple(int(d) for d in info["shape"]), TVM_DTYPES[info["dtype"]])


def _sig(info: dict) -> Sig:
    from edgeopt.ir.types import TVM_DTYPES

    return tuple(int(d) for d in info["shape"]), TVM_DTYPES[info["dtype"]]


def _zero(dtype: str):
    import tvm

    def body(*_):
        return tvm.tirx.const(0, dtype)

    return body


def stub_primfunc(ins: list[Sig], outs: list[Sig]):
    """A destination-passing PrimFunc ``f(*ins, *outs)`` that fills its outputs with zeros and reads no input."""
    from tvm import te

    phs = [te.placeholder(shape, dt, name=f"in{i}") for i, (shape, dt) in enumerate(ins)]
    res = [te.compute(shape, _zero(dt), name=f"out{j}") for j, (shape, dt) in enumerate(outs)]
    return te.create_prim_func(phs + res)


def build_relax_module(plan: dict):
    """The plan as a Relax IRModule: ``main`` (inputs + weights as parameters, one call_tir per step, views as
    ``R.reshape``) plus one stub PrimFunc per distinct kernel signature."""
    from tvm import relax

    from edgeopt.memory.liveness import split_args

    values, steps = plan["values"], plan["steps"]
    params = [relax.Var(io["name"], _tensor_type(io)) for io in plan["inputs"]]
    env = {io["name"]: p for io, p in zip(plan["inputs"], params)}
    for name, info in values.items():  # the weights the steps read (directly or through a view), in order
        if info["kind"] == "const" and name not in env:
            env[name] = relax.Var(name, _tensor_type(info))
            params.append(env[name])

    bb = relax.BlockBuilder()
    stubs: dict[tuple, object] = {}

    def get(name: str):
        """The Relax variable of a value; a view is emitted (as R.reshape of its source) on first use."""
        if name not in env:
            info = values[name]
            if info["kind"] != "view":
                raise ValueError(f"plan value {name!r} ({info['kind']}) is read before it is written")
            env[name] = bb.emit(relax.op.reshape(get(info["of"]), tuple(int(d) for d in info["shape"])))
        return env[name]

    with bb.function("main", params):
        with bb.dataflow():
            for step in steps:
                ins, outs = split_args(step)
                key = (tuple(_sig(values[a]) for a in ins), tuple(_sig(values[o]) for o in outs))
                if key not in stubs:
                    name = f"stub{len(stubs)}"
                    func = stub_primfunc(list(key[0]), list(key[1])).with_attr("global_symbol", name)
                    stubs[key] = bb.add_func(func, name)
                out_ty = [_tensor_type(values[o]) for o in outs]
                call = relax.call_tir(stubs[key], [get(a) for a in ins], out_ty if len(outs) > 1 else out_ty[0])
                result = bb.emit(call)
                if len(outs) == 1:
                    env[outs[0]] = result
                else:
                    for j, o in enumerate(outs):
                        env[o] = bb.emit(relax.TupleGetItem(result, j))
            results = [bb.emit_output(get(io["name"])) for io in plan["outputs"]]
        bb.emit_func_output(results[0] if len(results) == 1 else relax.Tuple(results))
    return bb.get()


def plan_memory(mod):
    """The passes of TVM's default build pipeline (``tvm.relax.pipeline.default_build_pipeline``) up to and
    including ``StaticPlanBlockMemory``."""
    import tvm
    from tvm.relax import transform

    return tvm.transform.Sequential([
        transform.LegalizeOps(),
        transform.RewriteDataflowReshape(),
        transform.ToNonDataflow(),
        transform.RemovePurityChecking(),
        transform.CallTIRRewrite(),
        transform.StaticPlanBlockMemory(),
    ])(mod)


def _dtype_bytes(dtype) -> int:
    import tvm

    dt = tvm.runtime.DataType(str(dtype))
    return (dt.bits * dt.lanes + 7) // 8


def count_allocations(func) -> dict:
    """Planned storages (``R.memory.alloc_storage``) and unplanned tensors (``R.builtin.alloc_tensor``) of a flat
    Relax function after ``StaticPlanBlockMemory``."""
    import tvm
    from tvm import relax

    alloc_storage = tvm.ir.Op.get("relax.memory.alloc_storage")
    alloc_tensor = tvm.ir.Op.get("relax.memory.alloc_tensor")
    builtin_alloc = tvm.ir.Op.get("relax.builtin.alloc_tensor")
    out = {"storage_bytes": 0, "num_storages": 0, "unplanned_bytes": 0, "num_unplanned": 0, "num_planned_tensors": 0,
           "storage_bytes_by_dtype": {}}
    assert isinstance(func.body, relax.SeqExpr)
    for block in func.body.blocks:
        for binding in block.bindings:
            call = binding.value
            if not isinstance(call, relax.Call):
                continue
            if call.op.same_as(alloc_storage):
                (size,) = call.args[0].values
                dtype = str(call.args[3].value)
                out["storage_bytes"] += int(size)
                out["num_storages"] += 1
                by = out["storage_bytes_by_dtype"]
                by[dtype] = by.get(dtype, 0) + int(size)
            elif call.op.same_as(alloc_tensor):
                out["num_planned_tensors"] += 1
            elif call.op.same_as(builtin_alloc):
                numel = int(np.prod([int(d) for d in call.args[0].values], dtype=np.int64))
                out["unplanned_bytes"] += numel * _dtype_bytes(call.args[1].value)
                out["num_unplanned"] += 1
    return out


def relax_planned_bytes(plan: dict) -> dict:
    """What TVM Relax's ``StaticPlanBlockMemory`` allocates for the plan's graph in the plan's kernel order.

    Returns ``storage_bytes`` (sum of the planned ``alloc_storage`` sizes: the intermediates), ``num_storages``,
    ``unplanned_bytes`` (``R.builtin.alloc_tensor`` left unplanned: the returned tensors), and, for a fair
    comparison with edgeopt's arena (which also holds inputs and outputs), ``input_bytes`` (the graph inputs,
    which Relax does not allocate) and ``total_bytes`` = storage + unplanned + input bytes. Also
    ``num_unplanned``, ``num_planned_tensors`` and ``storage_bytes_by_dtype``. See the module docstring."""
    mod = plan_memory(build_relax_module(plan))
    out = count_allocations(mod["main"])
    out["input_bytes"] = sum(int(np.prod(io["shape"], dtype=np.int64)) * _dtype_bytes(_sig(io)[1])
                             for io in plan["inputs"])
    out["total_bytes"] = out["storage_bytes"] + out["unplanned_bytes"] + out["input_bytes"]
    return out


def edgeopt_intermediate_bytes(plan: dict) -> dict:
    """edgeopt's planner restricted to what Relax plans: the arena for the intermediates only (graph inputs and
    the tokens of graph outputs left out), without in-place sharing; the smallest over ``ALGORITHMS``, with the
    lower bound of the same tokens. The like-for-like figure for ``storage_bytes``."""
    from edgeopt.memory import ALGORITHMS, build_tokens, check_plan, lower_bound
    from edgeopt.memory.liveness import base_of

    io = {i["name"] for i in plan["inputs"]} | {base_of(o["name"], plan["values"]) for o in plan["outputs"]}
    tokens = [t for t in build_tokens(plan, inplace=False) if not io & set(t.values)]
    best = None
    for algorithm in ALGORITHMS.values():
        offsets = algorithm(tokens)
        size = max((offsets[t.name] + t.size for t in tokens), default=0)
        check_plan(tokens, offsets, size)
        best = size if best is None else min(best, size)
    return {"arena_bytes": best, "lower_bound_bytes": lower_bound(tokens)}


def main() -> None:
    from edgeopt.memory import plan_arena
    rows = []
    for name, cm in compiled_zoo(__doc__):
        r = cm.report
        separate = plan_arena(cm.plan, inplace=False).arena_bytes  # edgeopt without in-place sharing, as Relax
        inter = edgeopt_intermediate_bytes(cm.plan)
        t = time.perf_counter()
        rx = relax_planned_bytes(cm.plan)
        seconds = time.perf_counter() - t
        arena = max(1, r["arena_bytes"])
        row = {"model": name, "input_shapes": [i["shape"] for i in cm.plan["inputs"]], "num_kernels": r["num_kernels"],
               "arena_bytes": r["arena_bytes"],
               "arena_no_inplace_bytes": separate, "lower_bound_bytes": r["lower_bound_bytes"],
               "naive_bytes": r["naive_bytes"], "plan_algorithm": r["plan_algorithm"],
               **{f"relax_{k}": v for k, v in rx.items()},
               "relax_total_over_arena": rx["total_bytes"] / arena,
               "relax_storage_over_arena": rx["storage_bytes"] / arena,
               "relax_total_over_arena_no_inplace": rx["total_bytes"] / max(1, separate),
               "intermediates_arena_bytes": inter["arena_bytes"],
               "intermediates_lower_bound_bytes": inter["lower_bound_bytes"],
               "relax_storage_over_intermediates_arena": rx["storage_bytes"] / max(1, inter["arena_bytes"]),
               "relax_seconds": round(seconds, 3)}
        rows.append(row)
        print(f"{name:18s} edgeopt arena {_kb(r['arena_bytes']):>10} LB {_kb(r['lower_bound_bytes']):>10} "
              f"(no in-place {_kb(separate):>10}) | "
              f"relax storage {_kb(rx['storage_bytes']):>10} ({rx['num_storages']:3d} storages) "
              f"+ outputs {_kb(rx['unplanned_bytes']):>9} + inputs {_kb(rx['input_bytes']):>9} "
              f"= {_kb(rx['total_bytes']):>10} | relax/edgeopt {row['relax_total_over_arena']:5.2f} "
              f"(storage only {row['relax_storage_over_arena']:5.2f}) | intermediates only: edgeopt "
              f"{_kb(inter['arena_bytes']):>10} relax {_kb(rx['storage_bytes']):>10} "
              f"({row['relax_storage_over_intermediates_arena']:5.2f})", flush=True)
    save_results("relax-plan", rows)


def _kb(n: int) -> str:
    return f"{n / 1024:.1f}K"


if __name__ == "__main__":
    main()
