"""Whole compiled models in the on-disk cache: a second ``edgeopt.compile`` of the same model skips everything after
``torch.export``.

The key is what decides the artifact, read from the exported program before any edgeopt code runs on it:

- the program: its graph's code (ops, arguments and the source lines recorded for them), its signature, and every
  parameter, buffer and constant (name, dtype, shape, sha256 of the bytes);
- the example inputs' shapes and dtypes (shapes are static);
- the target (``describe()`` and the TVM target string: CPU, features, cores, precision);
- the options: opt level, passes (names, or a custom pass's class, source file hash and settings), disabled passes,
  the tuning database's bytes, ``Compress`` settings;
- the versions of torch, edgeopt, TVM, tvm-ffi and LLVM, and edgeopt's code (``fingerprint``).

What is not cached: quantized compiles (``compiled.compare`` needs the float and quantized graphs in memory), and
compiles with a custom pass that cannot be pinned down (``fingerprint.pass_fingerprint``) or with
``EDGEOPT_DEBUG`` set (which prints the IR as passes run). The kernel cache still serves them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import logging
import os
import re

import numpy as np

from .fingerprint import pass_fingerprint, versions
from .store import DiskCache, digest

KIND = "models"
log = logging.getLogger("edgeopt.cache")


def model_key(ep, example_inputs, target, **options) -> str | None:
    """The cache key of compiling exported program ``ep`` this way, or None when such a compile is not cached."""
    import torch

    tensors = []
    for name, t in sorted({**ep.state_dict, **ep.constants}.items()):
        if not isinstance(t, torch.Tensor):
            return None  # a script object: no stable bytes to hash
        tensors.append([name, str(t.dtype), list(t.shape), _tensor_sha256(t)])
    program = ["torch.export", ep.graph_module.code, str(ep.graph_signature), tensors, torch.__version__]
    return _key(program, [[list(x.shape), str(x.dtype)] for x in example_inputs], target, **options)


def onnx_key(model_bytes: bytes, example_inputs, target, **options) -> str | None:
    """The cache key of compiling the ONNX model serialized as ``model_bytes`` (with its shapes from
    ``example_inputs``, if given) this way, or None when such a compile is not cached."""
    import onnx

    inputs = None if example_inputs is None else [[list(np.shape(x)), str(np.asarray(x).dtype)]
                                                   for x in example_inputs]
    program = ["onnx", hashlib.sha256(model_bytes).hexdigest(), onnx.__version__]
    return _key(program, inputs, target, **options)


def _key(program: list, inputs, target, *, opt_level, passes, disable, tuning_db, quantize, compress,
         target_options: dict) -> str | None:
    if quantize is not None or os.environ.get("EDGEOPT_DEBUG", "") not in ("", "0"):
        return None
    pass_key = None
    if passes is not None:
        pass_key = []
        for p in passes:
            pass_key.append(p if isinstance(p, str) else pass_fingerprint(p))
            if pass_key[-1] is None:
                return None
    tuning = None
    if tuning_db is not None:
        try:
            with open(tuning_db, "rb") as f:
                tuning = hashlib.sha256(f.read()).hexdigest()
        except OSError:
            return None  # compile_graph reports the missing file
    options = {"opt_level": opt_level, "passes": pass_key, "disable": sorted(disable),
               "tuning_db": tuning, "compress": dataclasses.asdict(compress) if compress is not None else None,
               "target_options": {k: repr(v) for k, v in sorted(target_options.items())}}
    return digest("model", program, inputs, target.describe(), str(target.tvm_target()), options, versions())


def _tensor_sha256(t) -> str:
    import torch

    flat = t.detach().cpu().contiguous().reshape(-1)
    return hashlib.sha256(flat.view(torch.uint8).numpy().data).hexdigest()


def lookup(store: DiskCache, key: str) -> tuple[bytes, str] | None:
    """(artifact bytes, final IR text) of a cached compile, or None."""
    data = store.get(KIND, key)
    meta = store.meta(KIND, key) if data is not None else None
    if data is None or not isinstance(meta, dict) or not isinstance(meta.get("ir"), str):
        return None
    return data, meta["ir"]


def store(cache: DiskCache, key: str, artifact: bytes, ir_text: str) -> None:
    cache.put(KIND, key, artifact, {"ir": ir_text})


_CONST = re.compile(r"^\s*const %([\w.]+): (\w+)\[")


def graph_from_artifact(artifact: bytes, ir_text: str):
    """The IR graph of a cached compile, rebuilt from its text and the artifact's weights (every level's)."""
    from ..ir.text import parse_graph
    from ..ir.types import parse_type
    from ..runtime import safetensors_io, sparse_weights
    from ..runtime.artifact import read_artifact

    manifest, members = read_artifact(artifact, "cached artifact")
    weights = safetensors_io.read_into(io.BytesIO(members["weights.safetensors"]), np.empty)
    if sparse_weights.MEMBER in members:
        weights = sparse_weights.decode(weights, safetensors_io.read_into(io.BytesIO(members[sparse_weights.MEMBER]),
                                                                          np.empty),
                                        manifest.get("sparse_weights", {}), np.empty, "cached artifact")
    for name, blob in members.items():
        if name.startswith("levels/") and name.endswith("weights.safetensors"):
            weights.update(safetensors_io.read_into(io.BytesIO(blob), np.empty))
    declared = {}
    for line in ir_text.splitlines():  # a target may store a dtype in a wider one (bool as int32 on Vulkan)
        m = _CONST.match(line)
        if m:
            declared[m.group(1)] = line.split(": ", 1)[1].split(" = ", 1)[0].strip()
    consts = {k: (a.astype(parse_type(declared[k]).np_dtype) if k in declared else a) for k, a in weights.items()}
    return parse_graph(ir_text, consts)
