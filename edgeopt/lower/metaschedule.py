"""TVM MetaSchedule, driven for one kernel at a time: search schedules for an unscheduled PrimFunc, then time
the best one against edgeopt's hand schedule the same way.

Three traps of TVM 0.27's MetaSchedule are avoided here:

* the default builder imports ``tvm.s_tir.tensor_intrin`` in every worker (30-54 s) and its timeout is 30 s:
  builds go through ``build_kernel`` (``tvm.tirx.build``, which returns the runtime Module the builder
  exports) with a 120 s timeout;
* ``TuneContext`` imports the whole ``tvm.s_tir.tensor_intrin`` package (CUDA, ROCm, Hexagon... intrinsics)
  once per process: ``cpu_intrinsics_only`` lets it import only this CPU's intrinsics module (x86: 0.7 s),
  the only ones the CPU schedule rules name;
* its FLOP counter fails the whole task on a ``Let`` (edgeopt's fast exp/tanh use them): ``_flops`` gives the
  count up front.

Candidates and the final comparison are timed by MetaSchedule's ``LocalRunner`` in one worker process
started with ``TVM_NUM_THREADS`` set to the target's core count (the thread count TVM picks by default is
half the logical CPUs on x86, 1 on a 2-vCPU machine, and ``runtime.config_threadpool`` cannot raise it in a
process that has started). With ``rpc`` (``edgeopt.tuning.RemoteTuning``) they are timed instead by
MetaSchedule's ``RPCRunner`` on the boards registered with a TVM RPC tracker under one key, several at once.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import logging
import os
import platform
import statistics
import sys
import tempfile
import types

import numpy as np

from ..errors import TuningError

BUILD_TIMEOUT_S = 120
_INTRIN = "tvm.s_tir.tensor_intrin"


def check_dependencies(cost_model: str) -> None:
    """Raise ``TuningError`` naming the pip install when a package tuning needs is missing."""
    need = ["psutil", "cloudpickle", "tqdm"] + (["xgboost"] if cost_model == "xgb" else [])
    missing = [m for m in need if importlib.util.find_spec(m) is None]
    if missing:
        pkgs = " ".join("xgboost-cpu" if m == "xgboost" else m for m in missing)
        extra = " (or tune with cost_model='random', which needs no xgboost)" if missing == ["xgboost"] else ""
        raise TuningError(f"tuning needs {', '.join(missing)}: pip install 'edgeopt[tune]' "
                          f"(or pip install {pkgs}){extra}")


def build_kernel(mod, target, _params):
    """The builder's f_build: compile the candidate as it is (no tensor-intrinsic import); a runtime Module."""
    import tvm

    return tvm.tirx.build(mod, target=target)


@contextlib.contextmanager
def cpu_intrinsics_only():
    """While tuning, ``import tvm.s_tir.tensor_intrin`` gives a package holding only this CPU's intrinsics
    (their module is imported for real and stays); afterwards the package imports in full again."""
    if _INTRIN in sys.modules:
        yield
        return
    import tvm.s_tir

    stub = types.ModuleType(_INTRIN, "tensor intrinsics of this CPU only (edgeopt tuning)")
    stub.__path__ = [os.path.join(os.path.dirname(tvm.s_tir.__file__), "tensor_intrin")]
    stub.__package__ = _INTRIN
    sys.modules[_INTRIN] = stub
    try:
        arch = platform.machine()
        if arch in ("x86_64", "AMD64", "aarch64", "arm64"):
            sub = "x86" if arch in ("x86_64", "AMD64") else "arm_cpu"
            setattr(stub, sub, importlib.import_module(f"{_INTRIN}.{sub}"))  # registered once per process
        yield
    finally:
        if sys.modules.get(_INTRIN) is stub:
            del sys.modules[_INTRIN]
        if getattr(tvm.s_tir, "tensor_intrin", None) is stub:
            delattr(tvm.s_tir, "tensor_intrin")


@contextlib.contextmanager
def _quiet_logs():
    """MetaSchedule logs its progress tables to stdout; keep its console to errors (its log files keep all).

    Each ``tune_tir`` rebuilds its logging config from the names of its logger's handlers, and fails on a handler it
    did not make (``'NoneType' object has no attribute 'format'``: pytest's capture handlers have no name): such
    handlers are taken off the logger while it runs, and put back."""
    name = "tvm.s_tir.meta_schedule"
    log = logging.getLogger(name)
    level = log.level
    foreign = [h for h in log.handlers if not (h.get_name() or "").startswith(name)]
    for h in foreign:
        log.removeHandler(h)
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)
        for h in foreign:
            log.addHandler(h)


@contextlib.contextmanager
def _env(name: str, value: str):
    """``os.environ[name] = value`` for the duration (processes started meanwhile inherit it)."""
    old = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old


class Tuner:
    """One builder and one runner, shared by every kernel of a tuning run (a context manager; the worker
    processes start with the first kernel that needs them)."""

    def __init__(self, tvm_target, num_threads: int, cost_model: str = "xgb", strategy: str = "evolutionary",
                 seed: int | None = None, work_dir: str | None = None, rpc=None):
        self.target, self.num_threads, self.rpc = tvm_target, num_threads, rpc
        self.cost_model, self.strategy, self.seed = cost_model, strategy, seed
        self._stack = contextlib.ExitStack()
        self._work_dir = work_dir
        self.builder = self.runner = None
        self._exported = 0

    def __enter__(self) -> Tuner:
        return self

    def __exit__(self, *exc) -> None:
        self._stack.close()

    def _start(self) -> None:
        if self.runner is not None:
            return
        from tvm.s_tir import meta_schedule as ms

        stack = self._stack
        stack.enter_context(cpu_intrinsics_only())
        # worker processes inherit the environment when they start (below, and per build batch)
        stack.enter_context(_env("TVM_NUM_THREADS", str(self.num_threads)))
        if self._work_dir is None:
            self._work_dir = stack.enter_context(tempfile.TemporaryDirectory(prefix="edgeopt-tune-"))
        self._scratch = stack.enter_context(tempfile.TemporaryDirectory(prefix="edgeopt-measure-"))
        if self.rpc is None:
            self.runner = ms.runner.LocalRunner(timeout_sec=60)
        else:  # MetaSchedule's RPC runner: each candidate on a board the tracker hands out, ``workers`` at once
            host, port = self.rpc.tracker
            config = ms.runner.RPCConfig(tracker_host=host, tracker_port=int(port), tracker_key=self.rpc.key,
                                         session_timeout_sec=self.rpc.session_timeout)
            self.runner = ms.runner.RPCRunner(config, max_workers=self.rpc.workers)

    def search(self, func, name: str, trials: int):
        """(schedule, candidates measured): the best ``s_tir.Schedule`` MetaSchedule finds for ``func`` in at
        most ``trials`` measured candidates (None when none built and ran)."""
        from tvm.s_tir import meta_schedule as ms

        self._start()
        if self.builder is None:
            self.builder = ms.builder.LocalBuilder(f_build=build_kernel, timeout_sec=BUILD_TIMEOUT_S)
        func = func.with_attr("estimated_flops", _flops(func))
        work = os.path.join(self._work_dir, name)
        db = ms.database.MemoryDatabase()
        with _quiet_logs():  # each tune_tir reconfigures MetaSchedule's loggers from this level
            ms.tune_tir(func, self.target, work_dir=work, max_trials_global=trials,
                        num_trials_per_iter=min(trials, 64), builder=self.builder, runner=self.runner,
                        database=db, cost_model=self.cost_model, strategy=self.strategy,
                        num_tuning_cores=self.num_threads, seed=self.seed)
        return ms.tir_integration.compile_tir(db, func, self.target), len(db.get_all_tuning_records())

    def measure(self, funcs: list, rounds: int = 5) -> list[float]:
        """Median milliseconds of each scheduled PrimFunc (same signature), timed in the runner's worker in
        interleaved rounds on the same random inputs."""
        import tvm
        from tvm.s_tir import meta_schedule as ms

        self._start()
        paths = []
        for f in funcs:
            lib = build_kernel(tvm.IRModule({"main": f.with_attr("global_symbol", "main")}), self.target, None)
            # a new name for every library: the worker's dlopen would hand back an earlier one at the same path
            self._exported += 1
            paths.append(os.path.join(self._scratch, f"kernel{self._exported}.so"))
            lib.export_library(paths[-1])
        info = ms.arg_info.ArgInfo.from_prim_func(funcs[0])
        times: list[list[float]] = [[] for _ in funcs]
        for _ in range(rounds):
            inputs = [ms.runner.RunnerInput(p, "cpu", info) for p in paths]
            for i, fut in enumerate(self.runner.run(inputs)):
                res = fut.result()
                if res.error_msg:
                    raise TuningError(f"timing a kernel failed: {res.error_msg.strip().splitlines()[-1]}")
                times[i] += [float(s) for s in res.run_secs]
        return [statistics.median(t) * 1e3 for t in times]


def _flops(func) -> int:
    """The kernel's FLOP count for MetaSchedule's task table, given up front: its own estimator cannot visit
    ``Let`` expressions (edgeopt's fast exp / tanh bind shared subexpressions with them) and fails the whole
    task. Such kernels get one per element of their last argument (the output), a placeholder: the count
    only labels the GFLOP/s MetaSchedule logs and weighs tasks against each other (there is one per run)."""
    import tvm
    from tvm.s_tir import meta_schedule as ms
    from tvm.s_tir.analysis import estimate_tir_flops

    try:
        return max(1, int(estimate_tir_flops(tvm.IRModule({"main": func}))))
    except Exception:
        return max(1, int(np.prod([int(d) for d in ms.arg_info.ArgInfo.from_prim_func(func)[-1].shape])))


def same_outputs(func_a, func_b, target) -> bool:
    """Whether two schedules of one kernel compute the same results on random inputs (here, in-process)."""
    import tvm

    libs = [build_kernel(tvm.IRModule({"main": f.with_attr("global_symbol", "main")}), target, None)
            for f in (func_a, func_b)]
    args = _random_args(func_a, np.random.default_rng(0))
    results = []
    for lib in libs:
        tensors = [tvm.runtime.tensor(a.copy()) for a in args]
        lib["main"](*tensors)
        results.append([t.numpy() for t in tensors])
    for a, b in zip(*results):
        if a.dtype.kind == "f":
            scale = max(1.0, float(np.nanmax(np.abs(a))) if a.size else 1.0)
            if not np.allclose(a, b, rtol=1e-3, atol=1e-4 * scale, equal_nan=True):
                return False
        elif not np.array_equal(a, b):
            return False
    return True


def _random_args(func, rng) -> list[np.ndarray]:
    """Random arrays for every parameter of ``func`` (floats in [-1, 1], integers in [0, 4))."""
    from tvm.s_tir import meta_schedule as ms

    out = []
    for info in ms.arg_info.ArgInfo.from_prim_func(func):
        shape, dtype = [int(d) for d in info.shape], np.dtype(str(info.dtype))
        if dtype.kind == "f":
            out.append(rng.uniform(-1, 1, shape).astype(dtype))
        else:
            out.append(rng.integers(0, 4, shape).astype(dtype))
    return out
