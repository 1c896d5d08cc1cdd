"""``edgeopt.remote``: run and time an artifact on a board over TVM's RPC, from the machine that compiled it.

On the board, any TVM 0.27 RPC server (the Python one needs only the TVM runtime and numpy):

    python -m tvm.exec.rpc_server --host 0.0.0.0 --port 9090

On the host (directly, or through a tracker with ``tracker=("tracker-host", 9190), key="rk3588"``):

    r = edgeopt.remote.run("resnet18-arm.edgeopt", [x], host="192.168.1.20", port=9090)
    r.outputs          # the model's outputs, fetched back as numpy arrays
    r.latency_ms       # the sum of the kernels' median times on the board's clock (each kernel timed hot)
    r.kernels          # one row per step: kernel, median_ms, share (slowest first)

The artifact is verified here (manifest, sha256 of every member, TVM version) before anything is sent. Its kernel
library is uploaded and loaded on the board, the weights are copied once, every activation gets a buffer on
the board (a reshape is a view of its source), the plan's steps run in order, and the outputs are fetched.
Then every step is timed on the board with TVM's ``time_evaluator`` (``number`` calls per measurement, the
median of ``repeat``), so the network round trips are not in the latency. Each kernel is timed back to back on
its own, with its weights and inputs hot in cache, so the sum is a lower bound of a cold end-to-end pass;
edgeopt's runtime adds about 1% per call on top (``bench/overhead.py``). A tracker's ``request`` waits until a
board with that key is free. CPU artifacts (``host``, ``arm``) only, for now.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from .errors import EdgeoptError, InputError
from .ir_dtypes import NP_DTYPES

LIBRARY_NAME = "edgeopt_kernels.so"
SERVER_HINT = "start one on the board with: python -m tvm.exec.rpc_server --host 0.0.0.0 --port 9090"


class RemoteError(EdgeoptError):
    """The board could not be reached, or could not load or run the artifact."""


@dataclass
class RemoteResult:
    outputs: list[np.ndarray]
    latency_ms: float
    kernels: list[dict] = field(default_factory=list)  # step, kernel, median_ms, share; slowest first
    target: dict = field(default_factory=dict)  # the artifact's target, from its manifest


def run(artifact, inputs: Sequence, host: str = "127.0.0.1", port: int = 9090, *, tracker: tuple | None = None,
        key: str | None = None, number: int = 10, repeat: int = 5, session_timeout: int = 600,
        trusted_keys=None, sha256: str | None = None, level: str | None = None) -> RemoteResult:
    """Run the artifact (a path or its bytes) on the board's RPC server with ``inputs``; time its kernels there.
    ``trusted_keys``, ``sha256``: as for ``edgeopt.load``, checked here before anything is uploaded; ``level``: which
    level of a multi-level x86 artifact to run (default: its least demanding one)."""
    manifest, plan, weights, kernels = _read(artifact, trusted_keys=trusted_keys, sha256=sha256, level=level)
    arrays = _check_inputs(plan, inputs)
    if key and not tracker:
        raise RemoteError("key= names a board registered with a tracker: give tracker=(host, port) too")
    sess = _connect(host, port, tracker, key, session_timeout)
    lib = tensors = None
    try:
        try:
            sess.upload(bytearray(kernels), LIBRARY_NAME)
            lib = sess.load_module(LIBRARY_NAME)
        except Exception as e:  # noqa: BLE001 - the server's error arrives as a TVM RPC error of any type
            raise RemoteError(f"the board could not load the kernel library built for {_describe(manifest)}: "
                              f"{_last_line(e)}") from None
        try:
            dev = sess.cpu(0)
            tensors = _place(plan, weights, dev)
            for spec, x in zip(plan["inputs"], arrays):
                tensors[spec["name"]].copyfrom(x)
            calls = [(s["kernel"], [tensors[a] for a in s["args"]]) for s in plan["steps"]]
            for name, args in calls:
                lib[name](*args)
            outputs = [tensors[o["name"]].numpy() for o in plan["outputs"]]
            rows = []
            for i, (name, args) in enumerate(calls):
                res = lib.time_evaluator(name, dev, number=number, repeat=repeat)(*args)
                rows.append({"step": i, "kernel": name, "median_ms": statistics.median(res.results) * 1e3})
        except Exception as e:  # noqa: BLE001
            raise RemoteError(f"running the artifact on the board failed: {_last_line(e)}") from None
    finally:  # free the board's memory and the session now, not when this frame is collected
        tensors = lib = None
        try:
            sess.remove(LIBRARY_NAME)
        except Exception:  # noqa: BLE001 - a server that is gone has nothing left to remove
            pass
        del sess
    total = sum(r["median_ms"] for r in rows)
    for r in rows:
        r["share"] = r["median_ms"] / total if total else 0.0
    return RemoteResult(outputs, total, sorted(rows, key=lambda r: -r["median_ms"]), manifest["target"])


def _read(artifact, **options):
    from .runtime.model import read_cpu_artifact

    what = f"artifact {artifact!r}" if isinstance(artifact, str) else "artifact"
    return read_cpu_artifact(artifact, what, "edgeopt.remote", **options)


def _check_inputs(plan: dict, inputs: Sequence) -> list[np.ndarray]:
    specs = plan["inputs"]
    if len(inputs) != len(specs):
        raise InputError(f"the model takes {len(specs)} input(s) ({', '.join(s['name'] for s in specs)}), "
                         f"got {len(inputs)}")
    out = []
    for spec, x in zip(specs, inputs):
        if hasattr(x, "detach"):  # a torch tensor (on any device, with or without grad)
            x = x.detach().cpu().numpy()
        x = np.require(np.asarray(x), requirements="C")  # (np.ascontiguousarray would make a 0-d input 1-d)
        want = np.dtype(NP_DTYPES[spec["dtype"]])
        if list(x.shape) != list(spec["shape"]) or x.dtype != want:
            raise InputError(f"input {spec['name']!r}: expected {want}{list(spec['shape'])}, "
                             f"got {x.dtype}{list(x.shape)}")
        out.append(x)
    return out


def _connect(host, port, tracker, key, session_timeout):
    from tvm import rpc

    where = f"the tracker at {tracker[0]}:{tracker[1]} (key {key!r})" if tracker else f"{host}:{port}"
    try:
        if tracker:
            if not key:
                raise RemoteError("a tracker needs the board's key= (the one its server registered with)")
            return rpc.connect_tracker(*tracker).request(key, session_timeout=session_timeout)
        return rpc.connect(host, int(port), session_timeout=session_timeout)
    except RemoteError:
        raise
    except Exception as e:  # noqa: BLE001
        raise RemoteError(f"cannot reach the RPC server at {where}: {_last_line(e)}; {SERVER_HINT}") from None


def _place(plan: dict, weights: dict, dev) -> dict:
    """A tensor on the board for every value of the plan: the weights copied, the others allocated."""
    import tvm
    import tvm_ffi

    tensors = {}
    for name, info in plan["values"].items():
        if info["kind"] == "const":
            tensors[name] = tvm.runtime.tensor(np.ascontiguousarray(weights[name]), dev)
        elif info["kind"] in ("input", "buffer"):
            tensors[name] = tvm.runtime.empty(tuple(info["shape"]), NP_DTYPES[info["dtype"]], dev)
    # a view made here aliases the board's memory: an RPC tensor holds the board's data pointer, and only its shape
    # changes (the server's own CreateView cannot be called: an ffi Shape does not cross the RPC boundary)
    view = tvm_ffi.get_global_func("runtime.TVMTensorCreateView")

    def resolve(name):
        if name not in tensors:
            base = resolve(plan["values"][name]["of"])
            tensors[name] = view(base, tvm_ffi.Shape(plan["values"][name]["shape"]), base.dtype, 0)
        return tensors[name]

    for name, info in plan["values"].items():
        if info["kind"] == "view":
            resolve(name)
    return tensors


def _describe(manifest: dict) -> str:
    t = manifest.get("target", {})
    return " ".join(str(t[k]) for k in ("name", "cpu", "arch") if t.get(k)) or "an unknown target"


def _last_line(e: Exception) -> str:
    lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()]
    return f"{type(e).__name__}: {lines[-1] if lines else ''}"
