"""GPU schedules for one kernel (a PrimFunc made from TE): TVM's dlight rules, tried in order per kernel.

The rules are ``Matmul``, ``GEMV``, ``Reduction``, ``GeneralReduction`` and ``Fallback`` (last: it binds every
remaining loop nest to blocks and threads). The first rule that applies and succeeds schedules the kernel; a
rule that raises is skipped. A kernel no rule could schedule is an error, never host code: an unscheduled
PrimFunc compiled for CUDA silently becomes a CPU function working on device pointers.
"""

from __future__ import annotations

import tvm
from tvm.s_tir import dlight as dl


def _rules():
    return [("matmul", dl.gpu.Matmul()), ("gemv", dl.gpu.GEMV()), ("reduction", dl.gpu.Reduction()),
            ("general-reduction", dl.gpu.GeneralReduction()), ("fallback", dl.gpu.Fallback())]


def schedule_gpu(func: tvm.tirx.PrimFunc, op: str, tvm_target,
                 attrs: dict | None = None) -> tuple[tvm.tirx.PrimFunc, str]:
    """Schedule ``func`` (one kernel; ``op`` is its anchor IR op) for ``tvm_target``; returns (func, description)."""
    func = func.with_attr("global_symbol", "main")
    failed = []
    with tvm_target:
        for name, rule in _rules():
            try:
                sch = rule.apply(func, tvm_target, False)
            except Exception as e:  # this rule does not fit this kernel: try the next one
                failed.append(f"{name}: {type(e).__name__}")
                continue
            if sch is None:
                continue
            sch = sch[-1] if isinstance(sch, list) else sch
            if not sch:
                continue
            out = sch.mod["main"].with_attr("tirx.is_scheduled", True)
            if not has_thread_bindings(out):
                failed.append(f"{name}: no thread bindings")
                continue
            return out, f"dlight({name})" + (f" after {', '.join(failed)}" if failed else "")
    raise RuntimeError(f"no GPU schedule applies to this {op} kernel ({'; '.join(failed) or 'no rule matched'})")


def has_thread_bindings(func: tvm.tirx.PrimFunc) -> bool:
    """Whether ``func`` binds a loop to a GPU thread axis (``blockIdx``/``threadIdx``)."""
    return "T.thread_binding(" in func.script()
