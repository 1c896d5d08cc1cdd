"""The runtime: torch-free and compiler-free, reusable, thread-safe, safetensors-compatible weights."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import numpy as np
import pytest

from edgeopt.ir_dtypes import NP_DTYPES
from tests.conftest import compile_zoo

_ISOLATED = r"""
import importlib.abc, sys
BLOCKED = ("torch", "tvm", "transformers", "edgeopt.frontend", "edgeopt.lower", "edgeopt.api",
           "edgeopt.pipeline", "edgeopt.passes", "edgeopt.targets", "edgeopt.ir")
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if any(name == b or name.startswith(b + ".") for b in BLOCKED):
            raise ImportError(f"blocked import of {name} (the runtime must not need it)")
sys.meta_path.insert(0, Block())
import numpy as np
import edgeopt.runtime
art, xs, ys = sys.argv[1], sys.argv[2], sys.argv[3]
m = edgeopt.runtime.load(art)
inputs = np.load(xs); expected = np.load(ys)
out = m(*[inputs[k] for k in sorted(inputs.files)])
out = out if isinstance(out, tuple) else (out,)
for i, o in enumerate(out):
    np.testing.assert_array_equal(o, expected[f"y{i}"])
loaded = [k for k in sys.modules if any(k == b or k.startswith(b + ".") for b in BLOCKED)]
assert not loaded, loaded
print("RUNTIME-OK", len(out))
"""


@pytest.mark.parametrize("name", ["mobilenet_v2", "minilm"])
def test_runtime_runs_without_torch_or_compiler(name, tmp_path):
    _, inputs, compiled = compile_zoo(name)
    art = tmp_path / "m.edgeopt"
    compiled.save(art)
    xs = {f"x{i}": x.numpy() for i, x in enumerate(inputs)}
    ys = compiled(*inputs)
    ys = ys if isinstance(ys, tuple) else (ys,)
    np.savez(tmp_path / "x.npz", **xs)
    np.savez(tmp_path / "y.npz", **{f"y{i}": y for i, y in enumerate(ys)})
    import tvm_ffi  # noqa: F401  (only to locate libtvm_runtime.so for the child, as a device would be set up)

    from edgeopt.runtime.tvm_cpu import _find_runtime_lib

    env = dict(os.environ, EDGEOPT_TVM_RUNTIME=_find_runtime_lib())
    script = tmp_path / "run.py"
    script.write_text(_ISOLATED)
    r = subprocess.run([sys.executable, str(script), str(art), str(tmp_path / "x.npz"), str(tmp_path / "y.npz")],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "RUNTIME-OK" in r.stdout


def test_two_threads_share_one_model():
    _, inputs, compiled = compile_zoo("resnet18")
    rng = np.random.default_rng(0)
    xs = [rng.standard_normal(inputs[0].shape).astype(np.float32) for _ in range(4)]
    expected = [compiled(x) for x in xs]
    errors = []

    def worker(k):
        try:
            for _ in range(10):
                for j in (k, k + 2):
                    np.testing.assert_array_equal(compiled(xs[j]), expected[j])
        except Exception as e:  # reported by the main thread
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(k,)) for k in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors


def test_repeated_calls_do_not_alias_outputs():
    _, inputs, compiled = compile_zoo("resnet18")
    x = inputs[0].numpy()
    a = compiled(x)
    b = compiled(x * 2)
    assert not np.shares_memory(a, b) and not np.array_equal(a, b)
    np.testing.assert_array_equal(a, compiled(x))


def test_named_inputs_and_torch_tensors():
    _, inputs, compiled = compile_zoo("minilm")
    ids, mask = inputs
    np.testing.assert_array_equal(compiled(ids, mask), compiled(attention_mask=mask.numpy(), input_ids=ids.numpy()))


def test_safetensors_compatible():
    safetensors = pytest.importorskip("safetensors.numpy")
    from edgeopt.runtime import safetensors_io

    tensors = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.array([1, -2], np.int64),
               "c": np.array(True), "d": np.zeros((0, 4), np.float16)}
    blob = safetensors_io.dumps(tensors)
    theirs = safetensors.load(blob)
    ours = safetensors_io.loads(safetensors.save(tensors))
    for k, v in tensors.items():
        np.testing.assert_array_equal(theirs[k], v)
        np.testing.assert_array_equal(ours[k], v)
        assert ours[k].dtype == v.dtype


def test_profile_times_every_step_and_leaves_the_model_usable():
    _, inputs, compiled = compile_zoo("mobilenet_v2")
    x = [t.numpy() for t in inputs]
    before = compiled(*x)
    rows = compiled.profile(*x, repeat=3)
    steps = compiled.plan["steps"]
    assert sorted(r["step"] for r in rows) == list(range(len(steps)))
    assert all(r["kernel"] == steps[r["step"]]["kernel"] and r["median_ms"] > 0 for r in rows)
    assert [r["median_ms"] for r in rows] == sorted((r["median_ms"] for r in rows), reverse=True)
    assert abs(sum(r["share"] for r in rows) - 1) < 1e-9
    np.testing.assert_array_equal(compiled(*x), before)  # steps re-run in place do not leak into the next call


def test_profile_times_each_step_on_what_a_real_call_gives_it():
    """Steps are timed inside whole calls: the first kernel reads the caller's image every time, although the memory
    plan lets a later kernel write over the image's bytes (timed alone after a call, it read that kernel's int8
    output as floats: denormals, 9x slower on an Intel Xeon)."""
    _, inputs, compiled = compile_zoo("mobilenet_v2")
    x = [t.numpy() for t in inputs]
    m = compiled._runtime_model()
    values, name = m.plan["values"], m.plan["inputs"][0]["name"]
    lo = values[name]["offset"]
    hi = lo + x[0].nbytes

    def writes_into_input(step):
        for v in (values[o] for o in step["args"][len(step["args"]) - step["num_outputs"]:]):
            size = int(np.prod(v["shape"])) * np.dtype(NP_DTYPES[v["dtype"]]).itemsize
            if "offset" in v and v["offset"] < hi and lo < v["offset"] + size:
                return True
        return False

    assert any(writes_into_input(s) for s in m.plan["steps"][1:])  # what makes timing a step alone wrong
    ctx = m._context()
    fn, targs = ctx.calls[0]
    seen = []
    ctx.calls[0] = (lambda *a: (seen.append(np.array_equal(ctx._arrays[name], x[0])), fn(*a)), targs)
    try:
        rows = m.profile(*x, repeat=3)
    finally:
        ctx.calls[0] = (fn, targs)
    assert len(seen) == 4 and all(seen) and len(rows) == len(m.plan["steps"])


def test_runtime_uses_every_core_unless_told(tmp_path):
    """TVM alone would start half the logical CPUs' threads (1 on a 2-vCPU machine); the runtime sizes its pool
    to the cores it may use, and ``TVM_NUM_THREADS`` still wins."""
    code = ("import os, edgeopt.runtime.tvm_cpu as t, tvm_ffi; t.ensure_runtime(); "
            "print(tvm_ffi.get_global_func('runtime.NumThreads')(), len(os.sched_getaffinity(0)))")
    env = {k: v for k, v in os.environ.items() if k != "TVM_NUM_THREADS"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    pool, cores = out.stdout.split()
    assert pool == cores
    out = subprocess.run([sys.executable, "-c", code], env={**env, "TVM_NUM_THREADS": "1"}, capture_output=True,
                         text=True, check=True)
    assert out.stdout.split()[0] == "1"
