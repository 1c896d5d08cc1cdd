"""One process per runtime for ``bench/peers.py``: load a model one way, check its output, then time it on request.

Each peer (edgeopt, PyTorch eager, torch.compile, ONNX Runtime, OpenVINO, ExecuTorch) runs in a process of
its own so that no runtime's thread pool, allocator or JIT state touches another's (ExecuTorch's under the
python of its own venv, ``scripts/peer_venv_executorch.sh``, which also makes its ``model.pte``). The process
talks to the orchestrator over stdin/stdout, one JSON object per line:

    -> {"ready": true, "load_s": 1.2, "max_abs_diff": 3e-6}     (after loading and checking the output)
    <- "time 20 3"                                                (3 warm-up calls, then 20 timed calls)
    <- "time 1000 3 2.0"                                          (... at most 1000, stopping after 2 s)
    -> {"ms": [4.1, 4.0, ...]}
    <- "quit"

    python bench/peer_workers.py KIND MODEL WORKDIR [--small]
    python bench/peer_workers.py export-executorch MODEL WORKDIR [--small]     (writes WORKDIR/model.pte)

WORKDIR holds what the orchestrator prepared: ``inputs.npz`` (the inputs, in order), ``reference.npy`` (the
PyTorch eager fp32 output), ``model.onnx``, ``model.edgeopt`` and ``model.pte``. The torch peers rebuild the
model from the zoo (seeded, so the weights are the same) and are checked against the reference like the others.
"""

from __future__ import annotations

import json
import os
import sys
import time

THREADS = 2


def _inputs(workdir: str) -> list:
    import numpy as np

    with np.load(os.path.join(workdir, "inputs.npz")) as z:
        return [z[f"arg{i}"] for i in range(len(z.files))]


def _torch_model(name: str, small: bool):
    import torch

    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from tests.models.zoo import build

    torch.set_num_threads(THREADS)
    model, _ = build(name, small=small)
    return model


def load_edgeopt(name, workdir, small):
    """The saved artifact, run by edgeopt's runtime (no torch in this process)."""
    import edgeopt

    m = edgeopt.load(os.path.join(workdir, "model.edgeopt"))

    def run(xs):
        return m(*xs)

    run.info = {"thread_pool": m.info.get("thread_pool")}  # reported when ready
    return run


def load_edgeopt_tvm_pool(name, workdir, small):
    """The artifact with TVM's thread pool instead of edgeopt's (``EDGEOPT_THREAD_POOL=tvm``)."""
    os.environ["EDGEOPT_THREAD_POOL"] = "tvm"
    return load_edgeopt(name, workdir, small)


def load_torch_eager(name, workdir, small):
    import torch

    model = _torch_model(name, small)

    def run(xs):
        with torch.inference_mode():
            return model(*[torch.from_numpy(x) for x in xs])

    return run


def load_torch_compile(name, workdir, small):
    """torch.compile (inductor) with ``freezing``: weights constant-folded and convs prepacked, which the
    notes found necessary for CNN speed (without it ResNet-18 ran slower than eager). The first call,
    which compiles, happens during loading."""
    import torch
    import torch._inductor.config as inductor_config

    inductor_config.freezing = True
    model = torch.compile(_torch_model(name, small))

    def run(xs):
        with torch.inference_mode():
            return model(*[torch.from_numpy(x) for x in xs])

    return run


def load_onnxruntime(name, workdir, small):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = THREADS
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(os.path.join(workdir, "model.onnx"), so, providers=["CPUExecutionProvider"])
    names = [i.name for i in sess.get_inputs()]
    return lambda xs: sess.run(None, dict(zip(names, xs)))[0]


def load_openvino(name, workdir, small):
    """OpenVINO from the same ONNX file, latency hint, fp32 pinned (it would pick bf16 where the CPU has it)."""
    import openvino as ov

    core = ov.Core()
    cfg = {"INFERENCE_NUM_THREADS": THREADS, "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1,
           "INFERENCE_PRECISION_HINT": "f32"}
    req = core.compile_model(core.read_model(os.path.join(workdir, "model.onnx")), "CPU", cfg).create_infer_request()
    return lambda xs: req.infer(list(xs))[0]


def load_executorch(name, workdir, small):
    """ExecuTorch's ``model.pte`` (from ``export_executorch``) in its pybindings runtime, XNNPACK threadpool
    reset to THREADS threads; the count the pool reports goes into the ready line."""
    import torch
    from executorch.extension.pybindings import portable_lib as et

    et._unsafe_reset_threadpool(THREADS)
    rt = et._load_for_executorch(os.path.join(workdir, "model.pte"))

    def run(xs):
        return rt.forward([torch.from_numpy(x) for x in xs])[0]

    run.info = {"xnnpack_threads": et._threadpool_get_thread_count()}
    return run


def export_executorch(name, workdir, small) -> dict:
    """torch.export of the zoo model on the saved inputs, lowered with the XNNPACK partitioner, written to
    ``WORKDIR/model.pte``; returns the export time, the file size and which ops stayed outside XNNPACK."""
    import torch
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    model, args = _torch_model(name, small), tuple(torch.from_numpy(x) for x in _inputs(workdir))
    t0 = time.perf_counter()
    edge = to_edge_transform_and_lower(torch.export.export(model, args), partitioner=[XnnpackPartitioner()])
    ops = [getattr(n.target, "__name__", str(n.target)) for n in edge.exported_program().graph.nodes
           if n.op == "call_function"]
    buf = edge.to_executorch().buffer
    with open(os.path.join(workdir, "model.pte"), "wb") as f:
        f.write(buf)
    return {"export_s": time.perf_counter() - t0, "pte_mb": len(buf) / 1e6,
            "xnnpack_delegates": ops.count("executorch_call_delegate"),
            "outside_xnnpack": sorted(set(ops) - {"executorch_call_delegate", "getitem"})}


LOADERS = {"edgeopt": load_edgeopt, "edgeopt_tvm_pool": load_edgeopt_tvm_pool, "torch_eager": load_torch_eager,
           "torch_compile": load_torch_compile, "onnxruntime": load_onnxruntime, "openvino": load_openvino,
           "executorch": load_executorch}


def _first(out):
    import numpy as np

    if isinstance(out, (tuple, list)):
        out = out[0]
    if hasattr(out, "detach"):
        out = out.detach().numpy()
    return np.asarray(out)


def serve(kind: str, name: str, workdir: str, small: bool) -> None:
    import numpy as np

    os.environ.setdefault("TVM_NUM_THREADS", str(THREADS))
    xs = _inputs(workdir)
    t0 = time.perf_counter()
    run = LOADERS[kind](name, workdir, small)
    out = _first(run(xs))
    load_s = time.perf_counter() - t0
    ref = np.load(os.path.join(workdir, "reference.npy"))
    diff = float(np.abs(out.astype(np.float64) - ref).max()) if out.shape == ref.shape else float("inf")
    info = getattr(run, "info", {})  # a loader's own facts (ExecuTorch: its threadpool size)
    print(json.dumps({"ready": True, "load_s": load_s, "max_abs_diff": diff, **info}), flush=True)
    for line in sys.stdin:
        cmd = line.split()
        if not cmd or cmd[0] == "quit":
            break
        calls, warmup = int(cmd[1]), int(cmd[2])
        max_s = float(cmd[3]) if len(cmd) > 3 else float("inf")  # stop after this long (5 calls at least)
        for _ in range(warmup):
            run(xs)
        ms, end = [], time.perf_counter() + max_s
        for _ in range(calls):
            t = time.perf_counter()
            run(xs)
            ms.append((time.perf_counter() - t) * 1e3)
            if len(ms) >= 5 and t > end:
                break
        print(json.dumps({"ms": ms}), flush=True)


def peak_gflops(seconds: float = 3.0) -> float:
    """The machine's practical fp32 peak on THREADS threads: numpy's (OpenBLAS) sgemm of 2048x2048."""
    import numpy as np

    n = 2048
    a, b = (np.random.default_rng(0).standard_normal((n, n), dtype=np.float32) for _ in range(2))
    c = np.empty((n, n), np.float32)
    np.matmul(a, b, out=c)
    calls, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        np.matmul(a, b, out=c)
        calls += 1
    return 2 * n**3 * calls / (time.perf_counter() - t0) / 1e9


if __name__ == "__main__":
    if sys.argv[1] == "peak":
        print(json.dumps({"peak_gflops": peak_gflops()}), flush=True)
    elif sys.argv[1] == "export-executorch":
        print(json.dumps(export_executorch(sys.argv[2], sys.argv[3], "--small" in sys.argv[4:])), flush=True)
    else:
        serve(sys.argv[1], sys.argv[2], sys.argv[3], "--small" in sys.argv[4:])
