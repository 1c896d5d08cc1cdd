"""bench/relax_plan.py: TVM Relax's StaticPlanBlockMemory on an edgeopt execution plan.

The hand-made plans have expected numbers worked out from the planner's rules (src/relax/transform/
static_plan_block_memory.cc): a call's outputs are allocated before it and its inputs released after it;
a freed storage is reused whole, only by the same dtype and within a factor of 16 in size (the smallest big
enough one, else the largest smaller one, grown); returned tensors and graph inputs are not planned;
``R.reshape`` aliases its input."""

from __future__ import annotations

import numpy as np
import pytest

from bench.relax_plan import build_relax_module, edgeopt_intermediate_bytes, plan_memory, relax_planned_bytes
from edgeopt.memory import build_tokens, lower_bound
from edgeopt.memory.liveness import aligned, nbytes

K = 1024  # a value of K bytes is f32[256]


def mkplan(inputs, steps, outputs, sizes=None, dtypes=None, views=None) -> dict:
    """An execution plan as ``edgeopt.lower.build`` writes it. ``steps``: ``(ins, outs)``; every value is 1 KiB
    of its dtype (default f32) unless ``sizes`` (bytes) says otherwise; ``views``: name -> the value it reshapes
    (to shape [16, n / 16])."""
    sizes, dtypes, views = sizes or {}, dtypes or {}, views or {}

    def info(name, kind):
        dt = dtypes.get(name, "f32")
        return {"shape": [sizes.get(name, K) // {"f32": 4, "i64": 8, "bool": 1}[dt]], "dtype": dt, "kind": kind}

    values = {n: info(n, "input") for n in inputs}
    plan_steps = []
    for k, (ins, outs) in enumerate(steps):
        values.update({o: info(o, "buffer") for o in outs})
        plan_steps.append({"kernel": f"k{k}", "args": [*ins, *outs], "num_outputs": len(outs), "node": outs[0]})
    for v, base in views.items():
        values[v] = {**values[base], "kind": "view", "of": base, "shape": [16, values[base]["shape"][0] // 16]}
    io = [{"name": n, "shape": values[n]["shape"], "dtype": values[n]["dtype"]} for n in inputs]
    out = [{"name": n, "shape": values[n]["shape"], "dtype": values[n]["dtype"]} for n in outputs]
    return {"inputs": io, "outputs": out, "values": values, "steps": plan_steps}


def check_bounds(plan: dict, got: dict) -> None:
    """Bounds that hold for any plan whose sizes are multiples of 64 bytes: Relax needs at least edgeopt's
    lower bound (inputs and outputs included), and never more storage than one buffer per intermediate."""
    values = plan["values"]
    outputs = {o["name"] for o in plan["outputs"]}
    intermediates = [n for n, v in values.items() if v["kind"] == "buffer" and n not in outputs]
    assert got["total_bytes"] == got["storage_bytes"] + got["unplanned_bytes"] + got["input_bytes"]
    assert got["total_bytes"] >= lower_bound(build_tokens(plan, inplace=False))
    assert got["storage_bytes"] <= sum(aligned(nbytes(values[n])) for n in intermediates)
    # what edgeopt's planner needs for the same intermediates is a lower bound for Relax's storage
    inter = edgeopt_intermediate_bytes(plan)
    assert inter["lower_bound_bytes"] <= inter["arena_bytes"] <= got["storage_bytes"]


def test_chain_of_four_reuses_every_other_buffer():
    # x -> a -> b -> c -> y: a and b are alive together (b is written while a is read), c reuses a's storage
    plan = mkplan(["x"], [(["x"], ["a"]), (["a"], ["b"]), (["b"], ["c"]), (["c"], ["y"])], ["y"])
    got = relax_planned_bytes(plan)
    assert got["storage_bytes"] == 2 * K and got["num_storages"] == 2
    assert got["unplanned_bytes"] == K and got["num_unplanned"] == 1  # the output y
    assert got["input_bytes"] == K and got["total_bytes"] == 4 * K
    assert lower_bound(build_tokens(plan)) == 2 * K  # edgeopt's arena packs x and y in with the intermediates
    assert edgeopt_intermediate_bytes(plan) == {"arena_bytes": 2 * K, "lower_bound_bytes": 2 * K}
    check_bounds(plan, got)


def test_branch_keeps_the_shared_input_alive():
    # x -> a; a -> b; a -> c; (b, c) -> d: c cannot reuse anything (a is still read by c's own kernel)
    plan = mkplan(["x"], [(["x"], ["a"]), (["a"], ["b"]), (["a"], ["c"]), (["b", "c"], ["d"])], ["d"],
                  sizes={"x": 256, "b": 2 * K, "d": 2 * K})
    got = relax_planned_bytes(plan)
    assert got["storage_bytes"] == 4 * K and got["num_storages"] == 3
    assert got["unplanned_bytes"] == 2 * K
    assert got["total_bytes"] == 4 * K + 2 * K + 256
    # edgeopt's bound counts the output (b + c + d at the last step), which Relax leaves unplanned
    assert lower_bound(build_tokens(plan)) == 5 * K
    check_bounds(plan, got)


def test_views_alias_their_base():
    # a reshape between kernels costs nothing, and a returned view keeps its base unplanned
    plan = mkplan(["x"], [(["x"], ["a"]), (["v"], ["b"]), (["b"], ["c"])], ["w"], views={"v": "a", "w": "c"})
    got = relax_planned_bytes(plan)
    assert got["storage_bytes"] == 2 * K and got["num_storages"] == 2
    assert got["unplanned_bytes"] == K  # c, returned through the view w
    check_bounds(plan, got)
    # no reshape became a copy kernel: one PrimFunc call per plan step, and the views are R.reshape
    import tvm

    main = plan_memory(build_relax_module(plan))["main"]
    calls = [b.value for blk in main.body.blocks for b in blk.bindings if isinstance(b.value, tvm.relax.Call)]
    assert sum(isinstance(c.op, tvm.ir.GlobalVar) for c in calls) == len(plan["steps"])
    assert sum(isinstance(c.op, tvm.ir.Op) and c.op.name == "relax.reshape" for c in calls) == 2


def test_counts_match_the_vm_allocations_of_the_full_pipeline():
    # the rest of TVM's default build pipeline turns every planned storage and every unplanned tensor into one
    # vm.builtin.alloc_storage of the same bytes
    import tvm
    from tvm import relax

    plan = mkplan(["x"], [(["x"], ["a", "m"]), (["a"], ["b"]), (["v"], ["c"]), (["c", "m"], ["y"])], ["y"],
                  sizes={"b": 2 * K, "m": 512}, dtypes={"m": "bool"}, views={"v": "b"})
    got = relax_planned_bytes(plan)
    with tvm.target.Target("llvm"):
        main = relax.pipeline.default_build_pipeline()(build_relax_module(plan))["main"]
    op = tvm.ir.Op.get("relax.vm.alloc_storage")
    sizes = [int(b.value.args[0].values[0]) for blk in main.body.blocks for b in blk.bindings
             if isinstance(b.value, relax.Call) and b.value.op.same_as(op)]
    assert len(sizes) == got["num_storages"] + got["num_unplanned"]
    assert sum(sizes) == got["storage_bytes"] + got["unplanned_bytes"]


def test_storages_are_pooled_by_dtype():
    # a (f32) is free when c (i64, same bytes) is written, but only d (f32) may take its storage
    plan = mkplan(["x"], [(["x"], ["a"]), (["a"], ["b"]), (["b"], ["c"]), (["c"], ["d"]), (["d"], ["y"])], ["y"],
                  dtypes={"b": "i64", "c": "i64"})
    got = relax_planned_bytes(plan)
    assert got["storage_bytes_by_dtype"] == {"float32": K, "int64": 2 * K}
    assert got["num_storages"] == 3
    assert lower_bound(build_tokens(plan)) == 2 * K
    check_bounds(plan, got)


@pytest.mark.parametrize("c_bytes, storage", [
    (2 * K, 64 * K + K + 2 * K),  # 64 KiB is more than 16x 2 KiB: a new storage
    (4 * K, 64 * K + K),  # within 16x: reuses the 64 KiB storage
])
def test_reuse_only_within_a_factor_of_16(c_bytes, storage):
    plan = mkplan(["x"], [(["x"], ["a"]), (["a"], ["b"]), (["b"], ["c"]), (["c"], ["y"])], ["y"],
                  sizes={"a": 64 * K, "c": c_bytes})
    got = relax_planned_bytes(plan)
    assert got["storage_bytes"] == storage
    check_bounds(plan, got)


def test_a_smaller_free_storage_grows():
    # c (2 KiB) finds only a's 1 KiB storage free: it takes it and grows it to 2 KiB
    plan = mkplan(["x"], [(["x"], ["a"]), (["a"], ["b"]), (["b"], ["c"]), (["c"], ["y"])], ["y"],
                  sizes={"c": 2 * K})
    got = relax_planned_bytes(plan)
    assert got["storage_bytes"] == 3 * K and got["num_storages"] == 2
    check_bounds(plan, got)


def test_multi_output_step_and_mixed_outputs():
    # (a, m) = k(x); y = k(a, m); returns the input itself, y and the bool m: a is the only planned tensor
    plan = mkplan(["x"], [(["x"], ["a", "m"]), (["a", "m"], ["y"])], ["x", "y", "m"], sizes={"m": 256},
                  dtypes={"m": "bool"})
    got = relax_planned_bytes(plan)
    assert got["storage_bytes"] == K and got["num_storages"] == 1
    assert got["unplanned_bytes"] == K + 256 and got["num_unplanned"] == 2
    assert got["input_bytes"] == K


def test_compiled_tiny_graph():
    import torch

    import edgeopt

    class Tiny(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.fc2, self.fc3 = torch.nn.Linear(64, 256), torch.nn.Linear(256, 128), torch.nn.Linear(64, 32)

        def forward(self, x):
            h = torch.relu(self.fc2(torch.relu(self.fc1(x))))
            return self.fc3(h.reshape(2, 64)) + 1.0

    torch.manual_seed(0)
    x = torch.randn(1, 64)
    cm = edgeopt.compile(Tiny().eval(), (x,))
    plan = cm.plan
    got = relax_planned_bytes(plan)
    assert got["input_bytes"] == x.numel() * 4
    assert got["unplanned_bytes"] == 2 * 32 * 4  # the one output
    assert got["num_planned_tensors"] == len(plan["steps"]) - 1
    check_bounds(plan, got)
    assert got["total_bytes"] >= cm.report["lower_bound_bytes"]
    assert got["storage_bytes"] <= cm.report["naive_bytes"]


@pytest.mark.slow
def test_resnet18_plan():
    from tests.conftest import compile_zoo

    _, _, cm = compile_zoo("resnet18")
    got = relax_planned_bytes(cm.plan)
    r = cm.report
    assert got["unplanned_bytes"] == int(np.prod(cm.plan["outputs"][0]["shape"])) * 4
    assert got["total_bytes"] >= r["lower_bound_bytes"]
    assert got["storage_bytes"] + got["unplanned_bytes"] <= r["naive_bytes"]
    assert got["num_storages"] < len(cm.plan["steps"])  # it does reuse
