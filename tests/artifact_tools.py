"""Helpers for tests that tamper with artifacts: a tiny model whose plan has every feature the plan checks care
about, rewriting a member of a saved artifact with its manifest entry recomputed (as an attacker would), and
running a loaded plan with every tensor in its own buffer (the reference a run in the shared arena must equal), and
the newest glibc a kernel library needs."""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import subprocess
import tempfile
import zipfile

import numpy as np


def tiny_model():
    """(model, example inputs) of a model whose host plan has 3 kernels, weights, an in-place pair the planner
    uses (the last kernel writes over the first one's output), one it cannot use, and an output that is a view."""
    import torch
    from torch import nn

    class Tiny(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.fc2 = nn.Linear(8, 8), nn.Linear(8, 8)

        def forward(self, x):
            h = self.fc1(x)
            y = self.fc2(torch.relu(h))
            return torch.sigmoid(torch.tanh(y) * h).reshape(16)

    torch.manual_seed(0)
    return Tiny().eval(), (torch.randn(2, 8),)


def members_of(artifact: bytes) -> tuple[dict, dict[str, bytes]]:
    """(manifest, {member: bytes}) of an artifact's zip, unverified."""
    with zipfile.ZipFile(io.BytesIO(artifact)) as z:
        members = {n: z.read(n) for n in z.namelist()}
    return json.loads(members.pop("manifest.json")), members


KEEP = object()


def repack(artifact: bytes, plan=KEEP, manifest=KEEP, rehash: bool = True) -> bytes:
    """``artifact`` with plan.json replaced by ``plan`` (any JSON) and/or its manifest replaced by ``manifest``; with
    ``rehash``, the manifest's sha256 and size of every member are recomputed, so only the content can refuse it."""
    old_manifest, members = members_of(artifact)
    members.pop("signature.json", None)
    manifest = old_manifest if manifest is KEEP else manifest
    if rehash and isinstance(manifest, dict):
        manifest = dict(manifest)
    if plan is not KEEP:
        members["plan.json"] = json.dumps(plan).encode()
    if rehash and isinstance(manifest, dict) and isinstance(manifest.get("members"), dict):
        manifest["members"] = {n: {"sha256": hashlib.sha256(d).hexdigest(), "size": len(d)} for n, d in members.items()}
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("manifest.json", json.dumps(manifest, indent=1))
        for name, data in members.items():
            z.writestr(name, data)
    return buf.getvalue()


def run_isolated(model, inputs: list[np.ndarray], poison: int = 0xFF) -> list[np.ndarray]:
    """Run a loaded CPU ``edgeopt.runtime.Model``'s plan with its own kernels, but every input and buffer in a
    buffer of its own filled with ``poison`` bytes (views reshape their base): what the plan means without the
    shared arena. A plan that passed the checks must give exactly this in the arena."""
    from edgeopt.ir_dtypes import NP_DTYPES
    from edgeopt.runtime import tvm_cpu

    plan = model.plan
    arrays = dict(model._consts)
    for name, info in plan["values"].items():
        if info["kind"] in ("input", "buffer"):
            a = tvm_cpu.aligned_empty(info["shape"], NP_DTYPES[info["dtype"]])
            a.reshape(-1).view(np.uint8)[:] = poison
            arrays[name] = a
    pending = [n for n, info in plan["values"].items() if info["kind"] == "view"]
    while pending:
        ready = [n for n in pending if plan["values"][n]["of"] in arrays]
        for n in ready:
            arrays[n] = arrays[plan["values"][n]["of"]].reshape(plan["values"][n]["shape"])
        pending = [n for n in pending if n not in ready]
    for spec, x in zip(plan["inputs"], inputs):
        np.copyto(arrays[spec["name"]], x)
    tensors = {n: tvm_cpu.as_tensor(a) for n, a in arrays.items()}
    for step in plan["steps"]:
        model._funcs[step["kernel"]](*[tensors[a] for a in step["args"]])
    return [arrays[o["name"]].copy() for o in plan["outputs"]]


def same_bytes(a: list[np.ndarray], b: list[np.ndarray]) -> bool:
    """Outputs equal bit for bit (NaNs included), shapes and dtypes too."""
    return len(a) == len(b) and all(x.shape == y.shape and x.dtype == y.dtype and x.tobytes() == y.tobytes()
                                    for x, y in zip(a, b))


def _objdump(library: bytes, objdump: str, flag: str) -> str:
    """``objdump <flag>`` of a shared library given as its bytes."""
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "lib.so")
        with open(path, "wb") as f:
            f.write(library)
        return subprocess.run([objdump, flag, path], capture_output=True, text=True, check=True).stdout


def newest_glibc(library: bytes, objdump: str = "objdump") -> tuple[int, ...]:
    """The newest GLIBC_x.y symbol version a shared library (its bytes) needs, read with ``objdump -T``."""
    out = _objdump(library, objdump, "-T")
    return max(tuple(int(p) for p in v.split(".")) for v in re.findall(r"GLIBC_([0-9.]+)\)", out))


def disassemble(library: bytes, objdump: str = "objdump") -> list[str]:
    """The mnemonic + operands of every instruction in a shared library (its bytes; ``objdump``: the one for its
    architecture, e.g. aarch64-linux-gnu-objdump)."""
    out = _objdump(library, objdump, "-d")
    return [" ".join(line.split("\t")[2:]) for line in out.splitlines() if line.count("\t") >= 2]
