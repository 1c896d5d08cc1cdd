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
import logging
import os
import re

import numpy as np

from .fingerprint import pass_fingerprint, pass_name_fingerprint, versions
from .store import DiskCache, digest

KIND = "models"
log = logging.getLogger("edgeopt.cache")


def model_key(ep, example_inputs, target, **options) -> str | None:
    """The cache key of compiling exported program ``ep`` this way, or None when such a compile is not cached."""
    import torch

    try:
        tensors = []
        for name, t in sorted({**ep.state_dict, **ep.constants}.items()):
            if not isinstance(t, torch.Tensor) or t.layout != torch.strided or t.is_quantized \
                    or type(t) is not torch.Tensor and not isinstance(t, torch.nn.Parameter):
                return None  # a script object, a sparse, quantized or subclass tensor: no plain bytes to hash
            tensors.append([name, str(t.dtype), list(t.shape), _tensor_sha256(t)])
        inputs = [[n.name, list(n.meta["val"].shape), str(n.meta["val"].dtype)]  # the program's own input types
                  for n in ep.graph.nodes if n.op == "placeholder" and isinstance(n.meta.get("val"), torch.Tensor)]
    except (RuntimeError, TypeError, ValueError, KeyError, AttributeError):
        return None
    program = ["torch.export", ep.graph_module.code, str(ep.graph_signature), tensors, torch.__version__]
    return _key(program, inputs, target, **options)


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
    if quantize is not None or any(os.environ.get(v, "") not in ("", "0") for v in ("EDGEOPT_DEBUG",
                                                                                    "EDGEOPT_DEBUG_DIR")):
        return None
    pass_key = None
    if passes is not None:
        pass_key = []
        for p in passes:
            pass_key.append(pass_name_fingerprint(p) if isinstance(p, str) else pass_fingerprint(p))
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
    levels = [[lv, t.describe(), str(t.tvm_target())] for lv, t in getattr(target, "levels", None) or []]
    return digest("model", program, inputs, target.describe(), str(target.tvm_target()), levels,
                  _toolchains(target), options, versions())


def _toolchains(target) -> dict:
    """The compilers besides LLVM whose output an artifact for ``target`` holds (nvcc's cubin and PTX) or links."""
    from .fingerprint import toolchain

    out = {}
    if target.name == "cuda":
        from ..errors import TargetError
        from ..targets.cuda_aot import nvcc_version

        try:
            out["nvcc"] = nvcc_version()
        except TargetError:  # no nvcc: the compile itself says so
            out["nvcc"] = None
    if target.name == "arm" or getattr(target, "host_arch", "") == "aarch64":
        out["aarch64-linux-gnu-gcc"] = toolchain("aarch64-linux-gnu-gcc")
    return out


def _tensor_sha256(t) -> str:
    import torch

    flat = t.detach().cpu().contiguous().reshape(-1)
    return hashlib.sha256(flat.view(torch.uint8).numpy().data).hexdigest()


def lookup(store: DiskCache, key: str) -> tuple[bytes, str] | None:
    """(artifact bytes, final IR text) of a cached compile, or None."""
    hit = store.get(KIND, key)
    if hit is None or not isinstance(hit[1].get("ir"), str):
        return None
    return hit[0], hit[1]["ir"]


def store(cache: DiskCache, key: str, artifact: bytes, ir_text: str) -> None:
    cache.put(KIND, key, artifact, {"ir": ir_text})


_CONST = re.compile(r"^\s*const %([\w.]+): (\w+)\[")


def graph_from_artifact(artifact: bytes, ir_text: str):
    """The IR graph of a cached compile, rebuilt from its text and the artifact's weights (every level's)."""
    from ..ir.text import parse_graph
    from ..ir.types import parse_type
    from ..runtime.artifact import read_artifact
    from ..runtime.model import artifact_weights

    manifest, members = read_artifact(artifact, "cached artifact")
    levels = manifest["target"].get("levels") or [{}]  # best level first: the graph compile_graph returns
    weights = artifact_weights(manifest, members, levels[0], "cached artifact")
    declared = {}
    for line in ir_text.splitlines():  # a target may store a dtype in a wider one (bool as int32 on Vulkan)
        m = _CONST.match(line)
        if m:
            declared[m.group(1)] = line.split(": ", 1)[1].split(" = ", 1)[0].strip()
    consts = {k: (a.astype(parse_type(declared[k]).np_dtype) if k in declared else a) for k, a in weights.items()}
    return parse_graph(ir_text, consts)
