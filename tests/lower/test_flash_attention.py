"""The tiled online-softmax attention kernel vs the reference interpreter, on awkward shapes and masks."""

from __future__ import annotations

import numpy as np
import pytest

from edgeopt.api import compile_graph
from edgeopt.ir import Graph, TensorType, interpret

RNG = np.random.default_rng(3)

CASES = {
    # id: (q shape, k shape, v shape, mask shape or None, mask dtype, causal, scale)
    "plain": ((1, 2, 16, 8), (1, 2, 16, 8), (1, 2, 16, 8), None, None, False, None),
    "rows_and_keys_not_multiples": ((2, 3, 5, 8), (2, 3, 13, 8), (2, 3, 13, 4), (2, 1, 5, 13), "f32", False, None),
    "bool_padding_mask": ((1, 4, 33, 16), (1, 4, 70, 16), (1, 4, 70, 16), (1, 1, 1, 70), "bool", False, 0.2),
    "causal_two_tiles": ((1, 2, 70, 16), (1, 2, 70, 16), (1, 2, 70, 8), None, None, True, 0.3),
    "rank3_full_mask": ((3, 50, 24), (3, 50, 24), (3, 50, 24), (50, 50), "f32", False, None),
    "mask_and_causal": ((1, 1, 9, 4), (1, 1, 9, 4), (1, 1, 9, 4), (9, 9), "f32", True, None),
    # key counts that fill whole tiles (no key padding: the scale and the mask are vector code)
    "whole_tiles_bool_mask": ((1, 3, 10, 32), (1, 3, 128, 32), (1, 3, 128, 32), (1, 1, 1, 128), "bool", False, None),
    "whole_tiles_mask_and_causal": ((2, 1, 64, 8), (2, 1, 64, 8), (2, 1, 64, 16), (2, 1, 64, 64), "f32", True, 0.4),
}


def _graph(case):
    qs, ks, vs, ms, mdt, causal, scale = case
    g = Graph()
    ins = [g.add_input(n, TensorType(s, "f32")) for n, s in (("q", qs), ("k", ks), ("v", vs))]
    if ms is not None:
        ins.append(g.add_input("mask", TensorType(ms, mdt)))
    g.set_outputs([g.add("attention", ins, {"scale": scale, "causal": causal})])
    return g


def _inputs(g):
    xs = []
    for v in g.inputs:
        if v.type.dtype == "bool":
            m = RNG.random(v.type.shape) > 0.4
            m[..., 0] = True  # no fully masked row
            xs.append(m)
        else:
            xs.append(RNG.standard_normal(v.type.shape).astype(np.float32))
    return xs


@pytest.mark.parametrize("name", sorted(CASES))
def test_flash_kernel_matches_interpreter(name):
    g = _graph(CASES[name])
    xs = _inputs(g)
    ref = interpret(g, xs)[0]
    compiled = compile_graph(g.clone(), "host", passes=[])
    assert [k["schedule"] for k in compiled.report["kernels"]] == ["flash(online-softmax)"]
    got = compiled(*xs)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5 * float(np.abs(ref).max()))


def test_broadcast_batch_falls_back_to_te_rule():
    """q with a broadcast batch dim is outside the kernel's cases: the TE rule compiles it, still correct."""
    g = _graph(((1, 1, 6, 8), (2, 1, 6, 8), (2, 1, 6, 8), None, None, False, None))
    xs = _inputs(g)
    compiled = compile_graph(g.clone(), "host", passes=[])
    assert not compiled.report["kernels"][0]["schedule"].startswith("flash")
    np.testing.assert_allclose(compiled(*xs), interpret(g, xs)[0], rtol=1e-5, atol=1e-6)


def test_task_buffers_live_on_the_stack(host_target):
    """Each task's scores and accumulator are stack buffers, not workspace allocations made in every task (TVM 0.27
    allocates a task's buffer of 1024 bytes or more from the workspace pool; then LLVM cannot keep the score
    accumulators in registers and the kernel took 1.5-2.2x its time). The call's one allocation is the transposed
    keys."""
    import tvm

    from edgeopt.lower.flash_attention import flash_attention

    for d in (32, 64):  # MiniLM's heads, BERT-base's
        q = TensorType((1, 2, 128, d), "f32")
        f = flash_attention([q, q, q, TensorType((1, 1, 128, 128), "f32")],
                            {"scale": None, "causal": False, "masked_rows": "nan"}, q)
        ex = tvm.compile(tvm.IRModule({"main": f}), target=host_target.tvm_target())
        ll = (ex.mod if hasattr(ex, "mod") else ex).inspect_source("ll")
        allocs = [line for line in ll.splitlines() if "load ptr, ptr @__TVMBackendAllocWorkspace" in line]
        assert len(allocs) == 1, (d, allocs)
