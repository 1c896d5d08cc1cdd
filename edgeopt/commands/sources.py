"""Where the command line gets models and arrays from.

A model is ``file.py:factory`` (or ``package.module:factory``): ``factory()`` returns ``(model, example_inputs)``
or just the model, whose example inputs then come from ``--input`` files; or a ``.pt2`` file written by
``torch.export.save`` (its example inputs are stored in it); or an ``.onnx`` file (input shapes from the file or
from ``--input``). Arrays are ``.npy`` files (one array each) or ``.npz``
files (their arrays in order).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys

import numpy as np

from ..errors import EdgeoptError
from ..ir_dtypes import NP_DTYPES


class SourceError(EdgeoptError):
    """A model or data file given on the command line cannot be used as it is."""


def load_model(spec: str, inputs: list[np.ndarray] | None = None):
    """(model or ExportedProgram, example inputs as a tuple of torch tensors) from ``spec``."""
    import torch

    if spec.endswith(".onnx"):  # compiled by the ONNX frontend: its inputs' shapes are in the file, or --input
        if not os.path.isfile(spec):
            raise SourceError(f"no such file: {spec}")
        return spec, tuple(inputs) if inputs else None
    if spec.endswith(".pt2"):
        if not os.path.isfile(spec):
            raise SourceError(f"no such file: {spec}")
        ep = torch.export.load(spec)
        if inputs:
            return ep, tuple(torch.from_numpy(a) for a in inputs)
        stored = getattr(ep, "example_inputs", None)
        if not stored or not stored[0] or stored[1]:
            raise SourceError(f"{spec} holds no positional example inputs: give them with --input x.npy")
        return ep, tuple(stored[0])
    if ":" not in spec:
        raise SourceError(f"a model is 'file.py:factory', 'package.module:factory' or a .pt2 file, not {spec!r}")
    where, name = spec.rsplit(":", 1)
    factory = getattr(_module(where), name, None)
    if not callable(factory):
        raise SourceError(f"{where} has no function {name!r}")
    made = factory()
    model, example = made if isinstance(made, tuple) and len(made) == 2 else (made, None)
    if inputs:
        example = tuple(torch.from_numpy(a) for a in inputs)
    if example is None:
        raise SourceError(f"{spec} returned a model without example inputs: return (model, inputs) from it, or give "
                          "--input x.npy")
    if not isinstance(example, (tuple, list)):
        example = (example,)
    if isinstance(model, torch.nn.Module):
        model.eval()
    return model, tuple(torch.from_numpy(x) if isinstance(x, np.ndarray) else x for x in example)


def _module(where: str):
    if where.endswith(".py"):
        if not os.path.isfile(where):
            raise SourceError(f"no such file: {where}")
        name = "edgeopt_user_" + os.path.splitext(os.path.basename(where))[0]
        spec = importlib.util.spec_from_file_location(name, where)
        mod = importlib.util.module_from_spec(spec)
        folder = os.path.dirname(os.path.abspath(where))
        if folder not in sys.path:  # its imports of files beside it, also when the factory runs (kept: the
            sys.path.insert(0, folder)  # command is one short process)
        sys.modules[name] = mod
        spec.loader.exec_module(mod)
        return mod
    try:
        return importlib.import_module(where)
    except ImportError as e:
        raise SourceError(f"cannot import {where}: {e}") from None


def load_arrays(paths: list[str] | None) -> list[np.ndarray]:
    """The arrays in ``paths`` (.npy: one; .npz: all, in order), in order."""
    out = []
    for p in paths or []:
        if not os.path.isfile(p):
            raise SourceError(f"no such file: {p}")
        if p.endswith(".npz"):
            with np.load(p, allow_pickle=False) as z:
                out += [z[k] for k in z.files]
        else:
            out.append(np.load(p, allow_pickle=False))
    return out


def load_stacks(path: str, num_inputs: int | None) -> list[np.ndarray]:
    """A .npz's arrays (one per model input, in input order, samples along the first axis) or a .npy's (a one-input
    model's samples), checked to be one per input."""
    arrays = load_arrays([path])
    if num_inputs is not None and len(arrays) != num_inputs:
        raise SourceError(f"{path} holds {len(arrays)} array(s); the model takes {num_inputs} input(s): one array "
                          "per input, samples along the first axis")
    return arrays


def load_batches(path: str, num_inputs: int | None) -> list[list[np.ndarray]]:
    """Batches from ``load_stacks``' arrays: sample i of every array is batch i, kept with a batch axis of 1."""
    arrays = load_stacks(path, num_inputs)
    n = {a.shape[0] for a in arrays}
    if len(n) != 1:
        raise SourceError(f"{path}: the arrays hold different numbers of samples {sorted(n)}")
    return [[a[i:i + 1] for a in arrays] for i in range(n.pop())]


def random_inputs(io: list[dict], seed: int = 0) -> list[np.ndarray]:
    """Inputs of the artifact's shapes and dtypes: floats standard normal, integers and bools 0 or 1 (valid as token
    ids, masks and indices alike)."""
    rng = np.random.default_rng(seed)
    out = []
    for spec in io:
        dt = NP_DTYPES[spec["dtype"]]
        shape = tuple(spec["shape"])
        if dt.kind == "f":
            out.append(rng.standard_normal(shape).astype(dt))
        else:
            out.append(rng.integers(0, 2, shape).astype(dt))
    return out
