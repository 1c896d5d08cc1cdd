"""The execution plan is checked whole at load (``edgeopt.runtime.plan_check``), before any library is loaded or
kernel runs: artifacts whose plan.json was rewritten (with the manifest's sha256 recomputed, as anyone can) are
refused with an ``ArtifactError`` naming the value or step, for each way such a plan could make a kernel write
out of bounds, over a live tensor or a weight, or return memory nothing wrote. Legit plans of several models and
targets pass."""

from __future__ import annotations

import copy
import json
import shutil

import numpy as np
import pytest

import edgeopt
from edgeopt import cxx
from edgeopt.errors import ArtifactError
from edgeopt.runtime import tvm_cpu
from edgeopt.runtime.plan_check import check_plan
from tests.artifact_tools import repack, tiny_model
from tests.targets import needs

needs_nvcc = needs("cuda", bool(shutil.which("nvcc")), "nvcc is not installed")


@pytest.fixture(scope="module")
def tiny():
    """(artifact bytes, plan, input, expected output) of ``tiny_model``, compiled for this host once."""
    model, inputs = tiny_model()
    compiled = edgeopt.compile(model, inputs)
    x = inputs[0].numpy()
    return compiled._artifact, compiled.plan, x, compiled(x)


@pytest.fixture
def no_kernels(monkeypatch):
    """Fail the test if the kernel library is loaded (so no kernel can have run)."""
    def refuse(*_a, **_k):
        pytest.fail("the kernel library was loaded: the plan was not refused before it")

    monkeypatch.setattr(tvm_cpu, "load_library", refuse)


def names(plan: dict) -> dict:
    """The tiny plan's values by role (found from the plan, not hard-coded)."""
    v, steps = plan["values"], plan["steps"]
    shared = next((a, b) for s in steps for a, b in s.get("inplace", []) if v[a]["offset"] == v[b]["offset"])
    unused = next((a, b) for s in steps for a, b in s.get("inplace", []) if v[a]["offset"] != v[b]["offset"])
    return {"input": plan["inputs"][0]["name"], "view": next(n for n in v if v[n]["kind"] == "view"),
            "weight": next(n for n in v if v[n]["kind"] == "const" and len(v[n]["shape"]) >= 2),
            "first": steps[0]["args"][-1], "shared": shared, "unused": unused}


def load(tmp_path, artifact: bytes):
    path = tmp_path / "m.edgeopt"
    path.write_bytes(artifact)
    return edgeopt.load(str(path))


def test_the_tiny_plan_has_what_the_attacks_need(tiny, tmp_path):
    artifact, plan, x, want = tiny
    n = names(plan)
    assert plan["values"][n["view"]]["of"] in [s["args"][-1] for s in plan["steps"]]  # the output is a view
    assert len(plan["steps"]) == 3 and n["shared"] != n["unused"]
    np.testing.assert_array_equal(load(tmp_path, repack(artifact, plan))(x), want)  # repacking alone is harmless
    check_plan(plan, "tiny", kernels={s["kernel"] for s in plan["steps"]})


def _set(path: list, value):
    def edit(plan, n):
        node = plan
        for key in path[:-1]:
            node = node[n[key] if isinstance(key, str) and key in n else key]
        last = path[-1]
        node[n[last] if isinstance(last, str) and last in n else last] = value(plan, n) if callable(value) else value
    return edit


def _view_of_weight(plan, n):  # the first kernel writes into a view of a weight: every call would change it
    plan["values"]["wview"] = {"shape": [64], "dtype": "f32", "kind": "view", "of": n["weight"]}
    plan["steps"][0]["args"][-1] = "wview"


def _overlap(plan, n):  # the first kernel's output placed over the input it reads
    plan["values"][n["first"]]["offset"] = plan["values"][n["input"]]["offset"]


def _forged_inplace(plan, n):  # share the bytes of a pair whose input is read again later
    a, b = n["unused"]
    plan["values"][b]["offset"] = plan["values"][a]["offset"]


def _write_twice(plan, n):
    plan["steps"][1]["args"][-1] = n["first"]
    del plan["steps"][1]["inplace"]


def _no_steps(plan, n):  # nothing would write the output: the runtime returned uninitialised memory
    plan["steps"] = []
    for info in plan["values"].values():
        if "live" in info:
            info["live"] = [0, 0]


def _swap_steps(plan, n):
    plan["steps"][0], plan["steps"][1] = plan["steps"][1], plan["steps"][0]


def _short_live(plan, n):
    a = n["shared"][0]
    plan["values"][a]["live"] = [0, 0]


def _other_kernels_args(plan, n):
    plan["steps"][2]["kernel"] = plan["steps"][0]["kernel"]


def _far_buffer(plan, n):  # inside an arena of 32 TiB: every load allocated it (MemoryError)
    plan["values"][n["first"]]["offset"] = 1 << 45
    plan["arena_bytes"] = (1 << 45) + 64


ATTACKS = {  # name: (edit, what the message says)
    "view larger than its base": (_set(["values", "view", "shape"], [32]), "is not a reshape"),
    "view with another dtype": (_set(["values", "view", "dtype"], "i32"), "is not a reshape"),
    "view of itself": (_set(["values", "view", "of"], lambda p, n: n["view"]), "cycle"),
    "negative offset": (_set(["values", "first", "offset"], -4096), "offset -4096 is negative"),
    "misaligned offset": (_set(["values", "first", "offset"], 32), "not a multiple of 64"),
    "offset past the arena": (_set(["values", "first", "offset"], lambda p, n: p["arena_bytes"]), "outside the arena"),
    "huge offset": (_set(["values", "first", "offset"], 10**19), "not an integer"),
    "live tensors overlap": (_overlap, "share arena bytes"),
    "in-place pair whose input lives on": (_forged_inplace, "share arena bytes"),
    "output is a view of a weight": (_view_of_weight, "of kind const: kernels may write buffers and states only"),
    "output is a weight": (_set(["steps", 0, "args", -1], lambda p, n: n["weight"]), "of kind const"),
    "output is the input": (_set(["steps", 0, "args", -1], lambda p, n: n["input"]), "of kind input"),
    "no steps, buffer output": (_no_steps, "written by no step (0 steps)"),
    "buffer written twice": (_write_twice, "already wrote"),
    "read before written": (_swap_steps, "before any step writes it"),
    "live range misses a read": (_short_live, "outside its declared live range"),
    "unknown argument": (_set(["steps", 1, "args", 0], "nope"), "'nope' is not a value"),
    "too many outputs": (_set(["steps", 0, "num_outputs"], 9), "num_outputs is 9"),
    "no outputs": (_set(["steps", 0, "num_outputs"], 0), "num_outputs is 0"),
    "bool for an int": (_set(["steps", 0, "num_outputs"], True), "num_outputs is True"),
    "one kernel, two signatures": (_other_kernels_args, "differ from another step of that kernel"),
    "unknown dtype": (_set(["values", "first", "dtype"], "f33"), "unknown dtype 'f33'"),
    "unknown kind": (_set(["values", "first", "kind"], "scratch"), "unknown kind 'scratch'"),
    "weight of another shape": (_set(["values", "weight", "shape"], [8, 9]), "does not match"),
    "arena far too large": (_set(["arena_bytes"], 1 << 45), "more than its tensors need"),
    "far buffer, arena to match": (_far_buffer, "more than all 4 of them side by side"),
    "input not listed": (_set(["inputs"], []), "not among the plan's inputs"),
    "output of another shape": (_set(["outputs", 0, "shape"], [17]), "differs from its value's"),
    "values is a list": (_set(["values"], []), "'values' is a JSON array, not a JSON object"),
    "nested junk for a shape": (_set(["values", "first", "shape"], [[[[[2]]]]]), "a dimension is a JSON array"),
    "missing field": (_set(["steps", 0], {"kernel": "k", "num_outputs": 1}), "step 0 has no 'args'"),
}


@pytest.mark.parametrize("attack", list(ATTACKS))
def test_a_tampered_plan_is_refused_before_any_kernel_runs(attack, tiny, tmp_path, no_kernels):
    artifact, plan, _, _ = tiny
    edit, message = ATTACKS[attack]
    bad = copy.deepcopy(plan)
    edit(bad, names(bad))
    with pytest.raises(ArtifactError, match="invalid execution plan") as e:
        load(tmp_path, repack(artifact, bad))
    assert message in str(e.value)


def test_export_flat_refuses_a_tampered_plan_and_writes_nothing(tiny, tmp_path):
    artifact, plan, _, _ = tiny
    bad = copy.deepcopy(plan)
    bad["values"][names(bad)["view"]]["shape"] = [1 << 20]  # the C++ runner used to write past the arena
    (tmp_path / "m.edgeopt").write_bytes(repack(artifact, bad))
    with pytest.raises(ArtifactError, match="is not a reshape"):
        cxx.export_flat(tmp_path / "m.edgeopt", tmp_path / "flat")
    assert not (tmp_path / "flat").exists()


def test_a_plan_that_is_not_an_object_is_refused(tiny, tmp_path, no_kernels):
    artifact, _, _, _ = tiny
    for junk in ([], "plan", 7, None):
        with pytest.raises(ArtifactError, match="the plan is"):
            load(tmp_path, repack(artifact, junk))


JUNK = [None, True, -1, 0, 7, 2**70, 1.5, "", "x y", [], {}, [[[]]], {"a": [1]}]


def _paths(node, path=()):
    yield path
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for k, v in items:
        yield from _paths(v, (*path, k))


def test_junk_anywhere_in_a_plan_raises_artifact_error_or_passes(tiny):
    """Every position of the plan replaced by each junk value (or deleted), and a nesting far deeper than Python's
    recursion limit: check_plan raises ArtifactError or accepts, nothing else."""
    plan = tiny[1]
    deep = []
    for _ in range(50_000):
        deep = [deep]
    refused = accepted = 0
    for path in list(_paths(plan))[1:]:
        for junk in [*JUNK, deep, "<delete>"]:
            bad = copy.deepcopy(plan)
            node = bad
            for k in path[:-1]:
                node = node[k]
            if junk == "<delete>":
                del node[path[-1]]
            else:
                node[path[-1]] = junk
            try:
                check_plan(bad, "junk")
                accepted += 1
            except ArtifactError:
                refused += 1
    assert refused > 10 * accepted > 0  # e.g. a step's "node" name may be anything


def test_kernels_outside_the_library_are_refused(tiny):
    with pytest.raises(ArtifactError, match="no such kernel"):
        check_plan(tiny[1], "tiny", kernels={"another"})


class _Passthrough:  # outputs that are the input, a view of it and a weight: the compiler copies or views them
    @staticmethod
    def model():
        import torch

        class M(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.w = torch.nn.Parameter(torch.randn(3, 4))

            def forward(self, x):
                return x, x.reshape(16), self.w

        torch.manual_seed(0)
        return M().eval(), (torch.randn(2, 8),)


@pytest.mark.parametrize("name", ["tiny", "passthrough", "digits_int8", "gpt2"])
def test_plans_the_compiler_writes_pass(name, tiny):
    """Plans of several small models: in-place sharing, a view output, outputs that are the input or a weight, int8,
    attention. (Every compile loads its artifact, so every model of the other tests passes the check too.)"""
    from tests.conftest import compile_zoo

    if name == "tiny":
        plan = tiny[1]
    elif name == "passthrough":
        model, inputs = _Passthrough.model()
        compiled = edgeopt.compile(model, inputs)
        x = inputs[0].numpy()
        got = compiled(x)
        np.testing.assert_array_equal(got[0], x)
        np.testing.assert_array_equal(got[1], x.reshape(16))
        np.testing.assert_array_equal(got[2], model.w.detach().numpy())
        plan = compiled.plan
        assert any(v["kind"] == "view" and v["of"] == "x" for v in plan["values"].values())
    else:
        plan = compile_zoo(name)[2].plan
    check_plan(json.loads(json.dumps(plan)), name)  # as read back from plan.json
    # passthrough has no kernels to share memory; digits_int8's requantization chains fuse into the epilogues of its
    # integer matmuls (an i32 sum may be cast, scaled and requantized there), leaving no elementwise kernel
    assert any(s.get("inplace") for s in plan["steps"]) or name in ("passthrough", "digits_int8")


@pytest.mark.parametrize("target", ["vulkan", pytest.param("cuda", marks=[pytest.mark.cuda, needs_nvcc])])
def test_gpu_plans_pass(target, tiny):
    """The GPU targets' plans (Vulkan: offsets multiples of 256; bool held as i32) pass the same check, which
    ``Model`` runs for every runtime before it loads anything. Compiled here without a device."""
    import torch

    class Mixed(torch.nn.Module):
        def forward(self, x):
            return torch.relu(x) * 2, (x > 0).reshape(16)

    for model, inputs in (tiny_model(), (Mixed().eval(), (torch.randn(2, 8),))):
        plan = edgeopt.compile(model, inputs, target=target).plan
        check_plan(json.loads(json.dumps(plan)), target)
        if target == "vulkan":
            assert all(v["offset"] % 256 == 0 for v in plan["values"].values() if "offset" in v)


def many_live_plan(n: int) -> dict:
    """A crafted plan: ``n`` buffers, each written by one step and all model outputs, so all are in use together
    (the comparison of every pair of live tensors took 19 s at n = 8k)."""
    t = {"shape": [16], "dtype": "f32"}
    values = {"x": {**t, "kind": "input", "offset": 0, "live": [0, n]}}
    values.update({f"b{i}": {**t, "kind": "buffer", "offset": 64 * (i + 1), "live": [i, n]} for i in range(n)})
    return {"inputs": [{"name": "x", **t}], "outputs": [{"name": f"b{i}", **t} for i in range(n)], "values": values,
            "steps": [{"kernel": "k", "args": ["x", f"b{i}"], "num_outputs": 1} for i in range(n)],
            "arena_bytes": 64 * (n + 1)}


def many_pairs_plan(n: int) -> dict:
    """A crafted plan: one step of ``n`` inputs and ``n`` outputs, each output in place over its input (``n``
    declared pairs, each found among ``2n`` arguments)."""
    t = {"shape": [16], "dtype": "f32"}
    values = {f"x{i}": {**t, "kind": "input", "offset": 64 * i, "live": [0, 0]} for i in range(n)}
    values.update({f"y{i}": {**t, "kind": "buffer", "offset": 64 * i, "live": [0, 1]} for i in range(n)})
    step = {"kernel": "k", "args": [*(f"x{i}" for i in range(n)), *(f"y{i}" for i in range(n))], "num_outputs": n,
            "inplace": [[f"x{i}", f"y{i}"] for i in range(n)]}
    return {"inputs": [{"name": f"x{i}", **t} for i in range(n)], "outputs": [{"name": f"y{i}", **t} for i in range(n)],
            "values": values, "steps": [step], "arena_bytes": 64 * n}


CRAFTED = {"live buffers": many_live_plan, "in-place pairs": many_pairs_plan}


def _seconds(check, plans: list, repeat: int = 5) -> list[float]:
    """The best of ``repeat`` timings of ``check`` on each plan, the plans timed in turn within each repeat (so that a
    burst of load from a neighbouring test process slows all of them, not only the last ones timed)."""
    import gc
    import time

    best = [float("inf")] * len(plans)
    for _ in range(repeat):
        for i, plan in enumerate(plans):
            gc.collect()
            t0 = time.perf_counter()
            check(plan)
            best[i] = min(best[i], time.perf_counter() - t0)
    return best


@pytest.mark.parametrize("kind", list(CRAFTED))
def test_a_large_crafted_plan_is_checked_in_n_log_n_time(kind):
    """A guard against quadratic checks (a denial of service: a plan deflating to 110 KB took 19 s, one of 100k
    buffers would take an hour): 4x the tensors may take at most 8x the time (quadratic: 16x), and 20k well under
    the 2 minutes the quadratic check took."""
    small, large = CRAFTED[kind](5_000), CRAFTED[kind](20_000)
    t_small, t_large = _seconds(lambda p: check_plan(p, kind), [small, large])
    assert t_large < 8 * t_small + 0.05 and t_large < 10, (t_small, t_large)
    bad = CRAFTED[kind](20_000)  # and the sweep still finds an overlap among them: the last one over the first
    last = max(bad["values"], key=lambda n: bad["values"][n]["offset"])
    bad["values"][last]["offset"] = 64 if kind == "live buffers" else 128
    with pytest.raises(ArtifactError, match="share arena bytes"):
        check_plan(bad, kind)


def test_a_far_buffer_cannot_make_the_arena_huge():
    """A buffer at 2^45 with an arena to match lay inside it, so the first call allocated 32 TiB (MemoryError): the
    arena may be no larger than all its tensors side by side (each rounded up to 256 bytes, Vulkan's alignment)."""
    plan = many_live_plan(4)
    check_plan(plan, "far")
    plan["values"]["b3"]["offset"] = 1 << 45
    plan["arena_bytes"] = (1 << 45) + 64
    with pytest.raises(ArtifactError, match=r"arena_bytes 35184372088896 is more than its tensors need: more than all "
                                            r"5 of them side by side, each rounded up to 256 bytes \(1280 bytes\)"):
        check_plan(plan, "far")
    plan["values"]["b3"]["offset"], plan["arena_bytes"] = 1024, 1280  # as far as the naive plan goes: accepted
    check_plan(plan, "far")


@pytest.mark.parametrize("edit, message", [
    (lambda p: p.__setitem__("steps", [p["steps"][0]] * ((1 << 20) + 1)), "'steps' has 1048577 entries"),
    (lambda p: p["steps"][0].__setitem__("args", ["x"] * ((1 << 20) + 1)), "step 0: args has 1048577 arguments"),
    (lambda p: p["steps"][0].__setitem__("inplace", [["x", "b0"]] * ((1 << 20) + 1)), "1048577 pairs"),
    (lambda p: p["values"].update({f"v{i}": p["values"]["x"] for i in range(1 << 20)}), "'values' has 1048578"),
    (lambda p: p.__setitem__("outputs", p["outputs"] * ((1 << 20) + 1)), "'outputs' has 1048577 entries"),
])
def test_counts_are_capped(edit, message):
    """Values (and model inputs and outputs), steps, and each step's arguments and in-place pairs: at most 2^20."""
    plan = many_live_plan(1)
    edit(plan)
    with pytest.raises(ArtifactError, match=r"\(at most 1048576\)") as e:
        check_plan(plan, "big")
    assert message in str(e.value)
