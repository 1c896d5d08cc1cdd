"""edgeopt's thread pool (edgeopt/runtime/thread_pool.c): every task of every launch runs exactly once, on any
number of threads, from concurrent callers, inside a task, after a fork; idle workers exit; unloading the library
joins them; and compiled CPU artifacts run their parallel loops on it."""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
import threading
import time

import numpy as np
import pytest

from edgeopt.lower.objects import THREAD_POOL_SOURCE

HERE = os.path.dirname(os.path.abspath(__file__))
THREADS = 3  # more threads than this machine's 2 cores: tasks are also preempted


def build(folder, name: str, idle_exit_ms: int = 600_000) -> str:
    """The pool and the harness in one library; its workers are named ``name`` (so that a test counts only
    them) and exit after ``idle_exit_ms`` idle (by default never, within a test)."""
    out = os.path.join(folder, f"{name}.so")
    subprocess.run(["gcc", "-std=gnu11", "-O2", "-fPIC", "-shared", "-pthread",
                    f"-DEDGEOPT_POOL_IDLE_EXIT_MS={idle_exit_ms}", f'-DEDGEOPT_POOL_THREAD_NAME="{name}"',
                    THREAD_POOL_SOURCE, os.path.join(HERE, "pool_harness.c"), "-o", out], check=True)
    return out


def threads_named(name: str) -> int:
    n = 0
    for t in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{t}/comm") as f:
                n += f.read().strip() == name
        except OSError:
            pass  # exited meanwhile
    return n


def eventually(predicate, seconds: float = 20) -> bool:
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


@pytest.fixture(scope="module")
def harness(tmp_path_factory):
    if not shutil.which("gcc"):
        pytest.skip("gcc is needed to build the pool's test harness")
    os.environ["TVM_NUM_THREADS"], old = str(THREADS), os.environ.get("TVM_NUM_THREADS")
    try:
        lib = ctypes.CDLL(build(tmp_path_factory.mktemp("pool"), "pool-main"))
        assert lib.install() == THREADS  # read at install and at the first launch
        yield lib
    finally:
        if old is None:
            del os.environ["TVM_NUM_THREADS"]
        else:
            os.environ["TVM_NUM_THREADS"] = old


def launch(lib, num_task=0, fail_task=-1, nested=0, cap=64):
    hits = (ctypes.c_int * (cap + 1))()
    seen, bad = ctypes.c_int(), ctypes.c_int()
    rc = lib.launch(num_task, hits, cap, fail_task, nested, ctypes.byref(seen), ctypes.byref(bad))
    return rc, list(hits), seen.value, bad.value


def test_every_task_runs_once_per_launch(harness):
    for i in range(2000):
        rc, hits, n, _ = launch(harness)
        assert rc == 0 and n == THREADS * 4, (i, rc, n)
        assert hits == [1] * n + [0] * (64 + 1 - n), (i, hits)


def test_a_given_task_count_is_kept(harness):
    for n in (1, 2, 5, 64):
        rc, hits, seen, _ = launch(harness, num_task=n)
        assert (rc, seen) == (0, n) and hits == [1] * n + [0] * (64 + 1 - n)


def test_a_failing_task_fails_the_launch_and_the_next_launch_is_clean(harness):
    rc, hits, n, _ = launch(harness, fail_task=5)
    assert rc == -1 and hits[:n] == [1] * n
    assert launch(harness)[0] == 0


def test_a_launch_inside_a_task_runs_inline(harness):
    rc, hits, n, bad = launch(harness, nested=1)
    assert (rc, bad) == (0, 0) and hits[:n] == [1] * n


def test_concurrent_callers_each_get_all_their_tasks(harness):
    errors = []

    def caller():
        for _ in range(300):  # ctypes releases the GIL: the two threads' launches overlap
            rc, hits, n, _ = launch(harness)
            if rc or hits[:n] != [1] * n or sum(hits) != n:
                errors.append((rc, hits))

    ts = [threading.Thread(target=caller) for _ in range(2)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errors, errors[:3]


def test_a_forked_child_starts_its_own_workers(harness):
    launch(harness)  # the parent's workers are running
    pid = os.fork()
    if pid == 0:  # the child: none of the parent's workers exist here
        ok = False
        try:
            ok = all(launch(harness)[0] == 0 and launch(harness)[1][:THREADS * 4] == [1] * (THREADS * 4)
                     for _ in range(200)) and threads_named("pool-main") == THREADS - 1
        finally:
            os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_idle_workers_exit_and_come_back(tmp_path, harness):
    lib = ctypes.CDLL(build(tmp_path, "pool-idle", idle_exit_ms=1000))  # 1 ms of spinning, then 1 s asleep
    assert lib.install() == THREADS
    launch(lib)
    assert threads_named("pool-idle") == THREADS - 1  # started (and named) before the launch returns
    assert eventually(lambda: threads_named("pool-idle") == 0)
    rc, hits, n, _ = launch(lib)
    assert rc == 0 and hits[:n] == [1] * n and threads_named("pool-idle") == THREADS - 1


def test_unloading_the_library_joins_its_workers(tmp_path, harness):
    import _ctypes

    lib = ctypes.CDLL(build(tmp_path, "pool-unload"))  # its own copy of the pool
    assert lib.install() == THREADS
    assert launch(lib)[0] == 0
    assert threads_named("pool-unload") == THREADS - 1
    _ctypes.dlclose(lib._handle)  # the destructor stops and joins them: no thread is left in unmapped code
    assert threads_named("pool-unload") == 0


def test_compiled_models_run_their_parallel_loops_on_it(tmp_path):
    import torch

    import edgeopt
    from edgeopt.runtime import load
    from edgeopt.runtime.artifact import read_artifact
    from tests.artifact_tools import newest_glibc

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 32, 3, padding=1), torch.nn.ReLU(),
                                torch.nn.Conv2d(32, 16, 3, padding=1)).eval()
    x = torch.randn(1, 3, 40, 40)
    path = str(tmp_path / "m.edgeopt")
    edgeopt.compile(model, (x,), target="host").save(path)
    m = load(path)
    assert m.info["thread_pool"] == "edgeopt"
    # the pool binds glibc's old pthread symbol versions: the library still loads on a glibc before 2.34
    assert newest_glibc(read_artifact(path)[1]["kernels.so"]) <= (2, 17)
    assert m.info["threads"] >= 1
    with torch.inference_mode():
        want = model(x).numpy()
    for _ in range(50):
        np.testing.assert_allclose(m.run(x.numpy()), want, rtol=1e-4, atol=1e-4)
