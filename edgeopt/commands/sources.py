"""Where the command line gets models and arrays from.

A model is ``file.py:factory`` (or ``package.module:factory``): ``factory()`` returns ``(model, example_inputs)``
or just the model, whose example inputs then come from ``--input`` files; or a ``.pt2`` file written by
``torch.export.save`` (its example inputs are stored in it); or an ``.onnx`` file (input shapes from the file or
from ``--input``). Arrays are ``.npy`` files (one array each, named by the file's stem) or ``.npz`` files (their
arrays, named by their keys). They are matched to the model's inputs by name where every input has one
(``np.savez("x.npz", **tokenizer_output)``; arrays the model does not take, such as ``token_type_ids``, are left
out), else in order (``np.savez("x.npz", ids, mask)``).
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


def load_model(spec: str, arrays: list[tuple[str, np.ndarray]] | None = None):
    """(model or ExportedProgram or .onnx path, example inputs) from ``spec``; ``arrays`` (from ``load_named``), if
    given, are the example inputs, matched to the model's inputs (torch tensors; numpy arrays for ONNX)."""
    import torch

    if spec.endswith((".onnx", ".pt2")) and not os.path.isfile(spec):
        raise SourceError(f"no such file: {spec}")
    if spec.endswith(".onnx"):  # compiled by the ONNX frontend: its inputs' shapes are in the file, or --input
        return spec, tuple(match_inputs(arrays, input_names(spec), "--input")) if arrays else None
    if spec.endswith(".pt2"):
        model = torch.export.load(spec)
        stored = getattr(model, "example_inputs", None)
        example = tuple(stored[0]) if stored and stored[0] and not stored[1] else None
        if example is None and not arrays:
            raise SourceError(f"{spec} holds no positional example inputs: give them with --input x.npy")
    elif ":" not in spec:
        raise SourceError(f"a model is 'file.py:factory', 'package.module:factory' or a .pt2 file, not {spec!r}")
    else:
        model, example = _from_factory(spec)
        if example is None and not arrays:
            raise SourceError(f"{spec} returned a model without example inputs: return (model, inputs) from it, or "
                              "give --input x.npy")
    if arrays:
        matched = match_inputs(arrays, input_names(model), "--input", required_inputs(model))
        example = tuple(torch.from_numpy(a) for a in matched)
    return model, example


def _from_factory(spec: str):
    """``file.py:factory``'s model (in eval mode) and example inputs as a tuple of tensors (None if it gave none)."""
    import torch

    where, name = spec.rsplit(":", 1)
    factory = getattr(_module(where), name, None)
    if not callable(factory):
        raise SourceError(f"{where} has no function {name!r}")
    made = factory()
    model, example = made if isinstance(made, tuple) and len(made) == 2 else (made, None)
    if isinstance(model, torch.nn.Module):
        model.eval()
    if example is None:
        return model, None
    if not isinstance(example, (tuple, list)):
        example = (example,)
    return model, tuple(torch.from_numpy(x) if isinstance(x, np.ndarray) else x for x in example)


def input_names(model, count: int | None = None) -> list[str] | None:
    """The names of ``model``'s inputs as edgeopt's graph names them, the first ``count`` of them if given (None
    where they cannot be told before tracing: ``*args``): a module's forward's positional parameters, an
    ExportedProgram's user inputs, an ONNX file's graph inputs."""
    import inspect

    import torch

    if isinstance(model, str):
        import onnx

        from ..frontend.onnx_import import _ir_name

        g = onnx.load(model, load_external_data=False).graph  # the names only, not the weights
        weights = {i.name for i in g.initializer}
        names = [_ir_name(i.name) or f"input{k}" for k, i in enumerate(x for x in g.input if x.name not in weights)]
    elif isinstance(model, torch.export.ExportedProgram):
        from torch.export.graph_signature import InputKind

        names = [s.arg.name for s in model.graph_signature.input_specs if s.kind == InputKind.USER_INPUT]
    elif isinstance(model, torch.nn.Module):
        params = list(inspect.signature(model.forward).parameters.values())
        if any(p.kind == p.VAR_POSITIONAL for p in params):
            return None
        names = [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    else:
        return None
    return names[:count] if count is not None else names


def required_inputs(model) -> int | None:
    """How many of a module's positional inputs have no default (the others may be left out of a call); None for
    other models (every input is required)."""
    import inspect

    import torch

    if not isinstance(model, torch.nn.Module):
        return None
    params = inspect.signature(model.forward).parameters.values()
    return sum(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty for p in params)


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


def load_named(paths: list[str] | None) -> list[tuple[str, np.ndarray]]:
    """The arrays in ``paths``, in order, each with its name: a .npy's file stem, a .npz's keys (``arr_0``, ... when
    saved without names)."""
    out = []
    for p in paths or []:
        if not os.path.isfile(p):
            raise SourceError(f"no such file: {p}")
        if p.endswith(".npz"):
            with np.load(p, allow_pickle=False) as z:
                out += [(k, z[k]) for k in z.files]
        else:
            out.append((os.path.splitext(os.path.basename(p))[0], np.load(p, allow_pickle=False)))
    return out


def match_inputs(arrays: list[tuple[str, np.ndarray]], names: list[str] | None, what: str,
                 required: int | None = None) -> list[np.ndarray]:
    """``arrays`` (``load_named``'s) as one per input, in the order of the inputs named ``names``, of which the first
    ``required`` (default all) must be given and the rest may be left off the end (a forward's defaults).

    By name when the inputs up to the last one named are all there and no array bears the name of an input left
    off (the other arrays are not used: a tokenizer's ``token_type_ids`` for a model that does not take it). Else in
    order, one array per input, where no array bears another input's name (that order would be wrong). ``names``
    None (not known): in order."""
    keys = [k for k, _ in arrays]
    if names is None:
        return [a for _, a in arrays]
    repeated = sorted({k for k in keys if keys.count(k) > 1 and k in names})
    if repeated:
        raise SourceError(f"{what}: several arrays are named {', '.join(repeated)}: give each input one array")
    need = len(names) if required is None else required
    given = 0
    while given < len(names) and keys.count(names[given]) == 1:
        given += 1
    if given >= max(need, 1) and not set(keys) & set(names[given:]):
        by_name = dict(arrays)
        return [by_name[n] for n in names[:given]]
    if not need <= len(arrays) <= len(names):
        count = str(len(names)) if need == len(names) else f"{need} to {len(names)}"
        raise SourceError(f"{what}: {len(arrays)} array(s) ({', '.join(keys)}) for the model's {count} input(s) "
                          f"({', '.join(names)}): give one array per input, named as the inputs or in their order")
    misplaced = [f"{k!r} is input {names.index(k)}" for i, k in enumerate(keys) if k in names and names[i] != k]
    if misplaced:
        raise SourceError(f"{what}: arrays {', '.join(keys)} are matched in order to inputs "
                          f"{', '.join(names[:len(keys)])}, but {'; '.join(misplaced)}: name every array as its "
                          "input, or give them in the inputs' order")
    return [a for _, a in arrays]


def load_stacks(path: str, names: list[str] | None) -> list[np.ndarray]:
    """A .npz's arrays (one per model input, samples along the first axis) or a .npy's (a one-input model's
    samples), matched to the inputs named ``names`` (``match_inputs``)."""
    return match_inputs(load_named([path]), names, path)


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
