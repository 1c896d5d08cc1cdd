"""One thread's execution context for CPU artifacts: the activation arena, views into it, the prebuilt calls."""

from __future__ import annotations

import time

import numpy as np

from ..errors import ArtifactError
from ..ir_dtypes import NP_DTYPES
from . import tvm_cpu


class CpuContext:
    """One thread's activation arena (one allocation, made on the thread's first call) and prebuilt call list.

    Every input and kernel output is a view at its planned offset in the arena (``plan["values"][v]["offset"]``);
    weights are the model's, shared by all threads; states (a KV cache) are the thread's (``Model.state``)."""

    def __init__(self, model):
        plan = model.plan
        arrays: dict[str, np.ndarray] = dict(model._consts)
        try:
            self.arena = tvm_cpu.aligned_empty((int(plan.get("arena_bytes", 0)),), np.uint8)
        except MemoryError:
            raise ArtifactError(f"the plan's activation arena of {plan.get('arena_bytes')} bytes does not fit in this "
                                "machine's memory") from None
        for name, info in plan["values"].items():
            if info["kind"] in ("input", "buffer"):
                arrays[name] = self._place(info)
            elif info["kind"] == "state":  # the thread's state, shared by the artifact's functions
                arrays[name] = model.state(name, info)
        for name, info in plan["values"].items():
            if info["kind"] == "view":
                arrays[name] = _resolve_view(name, plan["values"], arrays)
        tensors = {name: tvm_cpu.as_tensor(a) for name, a in arrays.items()}
        self.calls = [(model._funcs[s["kernel"]], [tensors[a] for a in s["args"]]) for s in plan["steps"]]
        self.input_arrays = [arrays[i["name"]] for i in plan["inputs"]]
        self.output_arrays = [arrays[o["name"]] for o in plan["outputs"]]
        self._arrays = arrays  # keep the memory alive while the tensors point at it

    def _load_inputs(self, arrays: list[np.ndarray]) -> None:
        for buf, arr in zip(self.input_arrays, arrays):
            np.copyto(buf, arr)

    def run(self, arrays: list[np.ndarray]) -> tuple[np.ndarray, ...]:
        self._load_inputs(arrays)
        try:
            for fn, targs in self.calls:
                fn(*targs)
        except (TypeError, ValueError) as e:  # a kernel refused its arguments (it checks them before any access)
            raise ArtifactError(f"a kernel refused the arguments the plan passes it (damaged plan): {e}") from None
        return tuple(a.copy() for a in self.output_arrays)

    def run_timed(self, arrays: list[np.ndarray], repeat: int) -> list[list[float]]:
        """``repeat`` whole runs on ``arrays``, each kernel timed by itself: seconds per step, one list per step."""
        times: list[list[float]] = [[] for _ in self.calls]
        for _ in range(repeat):
            self._load_inputs(arrays)
            for (fn, targs), t in zip(self.calls, times):
                start = time.perf_counter()
                fn(*targs)
                t.append(time.perf_counter() - start)
        return times

    def run_capturing(self, arrays: list[np.ndarray], steps: list[dict], names: set[str]) -> dict[str, np.ndarray]:
        """Run the plan step by step; a copy of each output in ``names`` right after the kernel that writes it (before
        the arena reuses its bytes)."""
        self._load_inputs(arrays)
        captured = {}
        for (fn, targs), step in zip(self.calls, steps):
            fn(*targs)
            for name in step["args"][len(step["args"]) - step["num_outputs"]:]:
                if name in names:
                    captured[name] = self._arrays[name].copy()
        return captured

    def _place(self, info: dict) -> np.ndarray:
        dtype = np.dtype(NP_DTYPES[info["dtype"]])
        if "offset" not in info:  # a plan without a memory plan: a buffer of its own
            return tvm_cpu.aligned_empty(info["shape"], dtype)
        count = int(np.prod(info["shape"], dtype=np.int64))
        off = int(info["offset"])
        if off % tvm_cpu.ALIGN or off + count * dtype.itemsize > self.arena.nbytes:
            raise ArtifactError(f"plan places a tensor at bytes {off}..{off + count * dtype.itemsize}, outside "
                                f"the arena of {self.arena.nbytes} bytes or misaligned")
        return self.arena[off : off + count * dtype.itemsize].view(dtype).reshape(info["shape"])


def _resolve_view(name, values, arrays):
    if name in arrays:
        return arrays[name]
    info = values[name]
    base = _resolve_view(info["of"], values, arrays)
    arrays[name] = base.reshape(info["shape"])
    return arrays[name]
