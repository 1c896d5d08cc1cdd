"""torch.export -> edgeopt IR.

The model is exported with static shapes, decomposed to core ATen except for the ops the IR keeps whole
(``KEEP_WHOLE``: linear, layer_norm, attention, activations...), then each ATen node is converted by the
table in ``aten/`` (one file per op family). Subgraphs that only read constants are evaluated with torch here.
Every unsupported op is collected (with its source line) and reported in ONE error before anything is
lowered.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Sequence

import numpy as np
import torch

from ..errors import UnsupportedModelError, UnsupportedOp
from ..ir import Graph, TensorType, Value
from ..ir.graph import fold_keeps_weights_small
from .aten import CONVERTERS, KEEP_WHOLE, Ctx, ir_dtype
from .aten import complex as complex_ops
from .aten.run_time_scalars import NUMBER_OPS
from .aten.select import NAMED as NAMED_CONVERTERS

_FRAME = re.compile(r'File "([^"]+)", line (\d+), in (\S+)(?:\n +([^\n]*))?')
_TORCH_DIR = torch.__file__.rsplit("/", 1)[0] + "/"


def source_line(fx_node, full: bool = True) -> str | None:
    """The user's code line that produced an fx node: 'path:line  code'."""
    trace = fx_node.meta.get("stack_trace") or ""
    frames = [f for f in _FRAME.findall(trace) if not f[0].startswith(_TORCH_DIR)]
    if not frames:
        return None
    path, line, _fn, code = frames[-1]
    if not full:
        path = path.rsplit("/", 1)[-1]
    return f"{path}:{line}  {code.strip()}"


def _check_model(model: torch.nn.Module) -> None:
    training = [name or type(model).__name__ for name, m in model.named_modules()
                if m.training and isinstance(m, (torch.nn.modules.batchnorm._BatchNorm, torch.nn.Dropout))]
    if training:
        raise UnsupportedModelError(
            "the model is in training mode (BatchNorm/Dropout layers in training mode: "
            f"{', '.join(training[:5])}{'...' if len(training) > 5 else ''}). Inference compiles need "
            "fixed statistics: call model.eval() before edgeopt.compile.")


def export(model: torch.nn.Module, example_inputs: Sequence) -> torch.export.ExportedProgram:
    """torch.export with static shapes; turns export failures into errors that say what to change."""
    try:
        with torch.no_grad():
            return torch.export.export(model, tuple(example_inputs), strict=False)
    except Exception as e:  # torch raises many types here; we only re-word them
        text = str(e)
        where = _user_frame(e)
        if "data-dependent" in text or "GuardOnDataDependent" in type(e).__name__ or "Could not guard" in text:
            # "extract specialized integer": a number read from a tensor where torch needs a Python int (an index)
            write = (", or writes at a position" if "specialized integer" in text else "")
            hint = (" Write at positions held in a 1-D tensor: y[:, p] = v with a 0-d tensor p as "
                    "y[:, p.reshape(1)] = v.unsqueeze(1), or y.index_copy(1, p.reshape(1), v.unsqueeze(1))."
                    if write else "")
            raise UnsupportedModelError(
                f"data-dependent control flow: the model branches (if/while) or sizes a tensor{write} on a tensor's "
                f"VALUE{where}. edgeopt compiles a static graph: replace the branch with torch.where, or compute the "
                f"condition from shapes only.{hint}\n  torch.export said: {text.splitlines()[0]}"
            ) from e
        if "Pending unbacked symbols" in text:
            raise UnsupportedModelError(
                f"a view at a position read from a tensor{where} (x.narrow(dim, p, n) or x[p:p + n] with p a tensor "
                "or p.item()): torch.export cannot trace it. Index with positions instead: "
                f"x.index_select(dim, p + torch.arange(n)).\n  torch.export said: {text.splitlines()[0]}") from e
        raise UnsupportedModelError(f"torch.export could not trace the model{where}: "
                                    f"{text.splitlines()[0] if text else type(e).__name__}") from e


def _user_frame(e: BaseException) -> str:
    tb, last = e.__traceback__, None
    while tb is not None:
        f = tb.tb_frame.f_code.co_filename
        if "/torch/" not in f and "/edgeopt/" not in f and "/site-packages/" not in f:
            last = f"{f}:{tb.tb_lineno}"
        tb = tb.tb_next
    m = re.search(r'File "([^"]+)", line (\d+)', str(e))
    if m and "/torch/" not in m.group(1):
        last = f"{m.group(1)}:{m.group(2)}"
    return f" at {last}" if last else ""


def _check_signature(ep: torch.export.ExportedProgram, state: bool = False) -> None:
    """In-place updates of inputs (and of buffers, unless ``state``) are an ``UnsupportedModelError``."""
    from torch.export.graph_signature import OutputKind

    sig = ep.graph_signature
    kinds = (OutputKind.USER_INPUT_MUTATION,) if state else (OutputKind.USER_INPUT_MUTATION, OutputKind.BUFFER_MUTATION)
    mutated = [s for s in sig.output_specs if s.kind in kinds]
    if not mutated:
        return
    lines = []
    producers = {n.name: n for n in ep.graph.nodes}
    for s in mutated:
        src = source_line(producers[s.arg.name]) if s.arg.name in producers else None
        what = "input" if s.kind == OutputKind.USER_INPUT_MUTATION else "buffer"
        lines.append(f"  {what} {s.target!r} is modified in place" + (f" at {src}" if src else ""))
    raise UnsupportedModelError(
        "the model mutates tensors in place, which a compiled inference graph cannot do:\n" + "\n".join(lines)
        + "\nUse out-of-place ops (y = x + 1 instead of x.add_(1)) and do not update buffers in forward().")


def _decompose(ep: torch.export.ExportedProgram) -> torch.export.ExportedProgram:
    table = torch.export.default_decompositions()
    for op in KEEP_WHOLE:
        table.pop(op, None)
    return ep.run_decompositions(table)


def from_torch(model: torch.nn.Module, example_inputs: Sequence, name: str = "main", state: bool = False) -> Graph:
    """Trace ``model`` on ``example_inputs`` into an IR Graph (static shapes, weights as constants).

    With ``state``, the buffers the model updates in place (``buf.index_copy_(...)``: a KV cache) become the
    graph's states (``Graph.states``) instead of an error; the rest of the buffers are constants."""
    return from_exported(trace(model, example_inputs), name, state)


def example_tensors(example_inputs: Sequence) -> tuple:
    """The example inputs as torch tensors (numpy arrays converted); anything else is a ``TypeError``."""
    example_inputs = tuple(torch.from_numpy(x) if isinstance(x, np.ndarray) else x for x in example_inputs)
    for i, x in enumerate(example_inputs):
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"example input {i} is a {type(x).__name__}; edgeopt takes tensors (or numpy arrays)")
    return example_inputs


def trace(model, example_inputs: Sequence) -> torch.export.ExportedProgram:
    """``model`` checked (eval mode) and exported on ``example_inputs``, not yet decomposed (``from_exported``); an
    ``ExportedProgram`` is returned as it is."""
    if isinstance(model, torch.export.ExportedProgram):
        return model
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"edgeopt.compile takes a torch.nn.Module, got {type(model).__name__}")
    example_inputs = example_tensors(example_inputs)
    _check_model(model)
    return export(model, example_inputs)


def from_exported(ep: torch.export.ExportedProgram, name: str = "main", state: bool = False) -> Graph:
    """An exported program (``trace``, or ``torch.export.load`` of a saved one) as an IR Graph."""
    ep = _decompose(ep)
    _check_signature(ep, state)  # in-place ops show up as mutations only after functionalization
    g = _convert(ep, name)
    if g.states:
        from ..ir import VerificationError, verify

        try:
            verify(g)
        except VerificationError as e:
            raise UnsupportedModelError("the model updates its buffers in a way edgeopt cannot run in place: "
                                        "update a state with one index_copy_ (cache.index_copy_(dim, positions, "
                                        f"new_rows)) and read the buffer only after it.\n{e}") from None
    return g


def _convert(ep: torch.export.ExportedProgram, name: str) -> Graph:
    from torch.export.graph_signature import InputKind, OutputKind

    g = Graph(name)
    ctx = Ctx(g)
    consts = {**ep.state_dict, **ep.constants}
    specs = {s.arg.name: s for s in ep.graph_signature.input_specs if hasattr(s.arg, "name")}
    mutated = {s.target for s in ep.graph_signature.output_specs if s.kind == OutputKind.BUFFER_MUTATION}
    state_of: dict[str, Value] = {}
    unsupported: dict[str, UnsupportedOp] = {}
    checks = _runtime_checks(ep.graph)
    for node in ep.graph.nodes:
        if node in checks:
            continue
        if node.op == "placeholder":
            spec = specs[node.name]
            if spec.kind == InputKind.USER_INPUT:
                val = node.meta["val"]
                if any(not isinstance(d, int) for d in val.shape):
                    raise UnsupportedModelError(
                        f"input {node.name!r} has a dynamic shape {tuple(val.shape)}; edgeopt needs static "
                        "shapes for now: compile for one fixed shape (e.g. pad sequences to a fixed length).")
                try:
                    t = TensorType(tuple(val.shape), ir_dtype(val.dtype))
                except NotImplementedError as e:
                    raise UnsupportedModelError(f"input {node.name!r}: {e}") from None
                ctx.env[node.name] = g.add_input(node.name, t)
            elif spec.target in mutated:  # a buffer the model updates: state, zeros until the first call
                val = node.meta["val"]
                init = consts.get(spec.target)
                if init is not None and bool(torch.any(init != 0)):
                    raise UnsupportedModelError(
                        f"buffer {spec.target!r} is updated in place and starts with values other than zeros; "
                        "edgeopt's states start as zeros: initialise it with torch.zeros")
                ctx.env[node.name] = state_of[spec.target] = g.add_state(
                    spec.target, TensorType(tuple(val.shape), ir_dtype(val.dtype)))
            else:
                ctx.torch_consts[node.name] = consts[spec.target]
                g.param_names[node.name] = spec.target
        elif node.op == "call_function":
            _convert_node(ctx, node, unsupported)
        elif node.op == "output":
            if unsupported:
                raise UnsupportedModelError.from_ops(list(unsupported.values()))
            user = [i for i, s in enumerate(ep.graph_signature.output_specs) if s.kind == OutputKind.USER_OUTPUT]
            g.set_outputs([_output_value(ctx, node.args[0][i]) for i in user])
            for s, a in zip(ep.graph_signature.output_specs, node.args[0]):
                if s.kind == OutputKind.BUFFER_MUTATION and s.target in state_of:
                    g.state_updates[state_of[s.target].name] = ctx.env[a.name]
    g.remove_unused_constants()
    g.param_names = {k: t for k, t in g.param_names.items() if k in g.constants}
    return g


def _convert_node(ctx: Ctx, node, unsupported: dict[str, UnsupportedOp]) -> None:
    target = node.target
    if any(_is_poisoned(ctx, a) for a in node.all_input_nodes):
        ctx.poisoned.add(node.name)  # an input could not be converted; its error is already recorded
        if isinstance(target, torch._ops.OpOverload) and target not in CONVERTERS:
            _unsupported(node, _op_name(target), unsupported)  # unsupported itself too: listed in the same error
        return
    if target is operator.getitem:
        src, idx = node.args
        if src.name in ctx.torch_consts:
            ctx.torch_consts[node.name] = ctx.torch_consts[src.name][idx]
        elif ctx.env[src.name][idx] is None:  # an output the converter does not compute (max_pool2d's indices)
            _unsupported(node, f"{_op_name(src.target)} (output {idx})", unsupported)
            ctx.poisoned.add(node.name)
        else:
            ctx.env[node.name] = ctx.env[src.name][idx]
        return
    constant_inputs = all(a.name in ctx.torch_consts for a in node.all_input_nodes)
    aten_op = isinstance(target, torch._ops.OpOverload)
    if constant_inputs and (target in NUMBER_OPS or aten_op and (target not in CONVERTERS
                                                                 or _fold_keeps_weights_small(ctx, node))):
        # a constant subgraph: fold it with torch now (one the IR has no op for, whatever its size; Python
        # arithmetic on numbers folded from constants, ``buffer.item() + 1``)
        ctx.torch_consts[node.name] = value = _evaluate(ctx, node)
        sym = node.meta.get("val")
        if isinstance(sym, (torch.SymInt, torch.SymFloat)) and sym.node.expr.is_Symbol:  # buffer.item(): u0 = 2
            ctx.sym_values[sym.node.expr] = value
        return
    conv = CONVERTERS.get(target) or NAMED_CONVERTERS.get(_op_name(target))
    if _touches_complex(ctx, node):  # complex tensors are pairs of real values (aten/complex.py)
        def conv(ctx, *args, **kwargs):
            return complex_ops.convert(ctx, node, CONVERTERS)
    if conv is None:
        _unsupported(node, _op_name(target), unsupported)
        ctx.poisoned.add(node.name)
        return
    ctx.source = source_line(node, full=False)
    ctx.node = node
    try:
        out = conv(ctx, *node.args, **node.kwargs)
    except NotImplementedError as e:  # a converter that handles only some of an op's arguments
        _unsupported(node, f"{_op_name(target)} ({e})" if str(e) else _op_name(target), unsupported)
        ctx.poisoned.add(node.name)
        return
    ctx.env[node.name] = out
    _check_types(ctx, node, out)


#: ops that only check the inputs at run time (an ``assert`` in the model, ``F.one_hot``'s range checks)
_CHECKS = {"_assert_async", "_assert_scalar", "_assert_tensor_metadata", "sym_constrain_range",
           "sym_constrain_range_for_size", "_functional_assert_async", "_functional_assert_scalar"}


def _runtime_checks(graph) -> set:
    """The call nodes that only feed runtime checks: the checks, and what only they read (``x.max().item()`` of
    ``assert lengths.max().item() <= n``). A compiled model does not run them: the example inputs passed them,
    and the model is compiled for their shapes (as inference runtimes drop asserts)."""
    checks: set = set()
    for node in reversed(list(graph.nodes)):
        if node.op != "call_function":
            continue
        name = getattr(node.target, "__name__", "")
        if name.split(".")[0] in _CHECKS or (node.users and all(u in checks for u in node.users)):
            checks.add(node)
    return checks


def _op_name(target) -> str:
    return str(getattr(target, "_name", None) or getattr(target, "__name__", target))


def _unsupported(node, key: str, unsupported: dict[str, UnsupportedOp]) -> None:
    """Record one use of an unsupported op (or of an unsupported case of an op) at ``node``'s source line."""
    u = unsupported.setdefault(key, UnsupportedOp(key))
    u.count += 1
    src = source_line(node)
    if src and src not in u.sources:
        u.sources.append(src)


def _fold_keeps_weights_small(ctx: Ctx, node) -> bool:
    """Folding ``node`` does not grow the weights (the rule of ``edgeopt.ir.graph.fold_keeps_weights_small``)."""
    vals = node.meta.get("val")
    vals = vals if isinstance(vals, (tuple, list)) else (vals,)
    ins = [t.nbytes for a in node.all_input_nodes if isinstance(t := ctx.torch_consts[a.name], torch.Tensor)]
    if not ins:  # a factory (full, arange...): there is nothing smaller to keep
        return True
    return all(fold_keeps_weights_small(v.numel() * v.element_size(), ins) for v in vals if isinstance(v, torch.Tensor))


def _evaluate(ctx: Ctx, node):
    def sub(a):
        if isinstance(a, torch.fx.Node):
            return ctx.torch_consts[a.name]
        if isinstance(a, (list, tuple)):
            return type(a)(sub(x) for x in a)
        return a

    args, kwargs = sub(node.args), {k: sub(v) for k, v in node.kwargs.items()}
    if "device" in kwargs:
        kwargs["device"] = torch.device("cpu")
    with torch.no_grad():
        return node.target(*args, **kwargs)


def _is_poisoned(ctx: Ctx, a) -> bool:
    return a.name in ctx.poisoned


def _touches_complex(ctx: Ctx, node) -> bool:
    """``node`` reads a complex value or makes a complex tensor."""
    val = node.meta.get("val")
    vals = val if isinstance(val, (tuple, list)) else (val,)
    def is_complex(a) -> bool:
        t = ctx.torch_consts.get(a.name)
        return isinstance(ctx.env.get(a.name), complex_ops.Complex) or \
            (isinstance(t, torch.Tensor) and complex_ops.is_complex(t.dtype))

    return any(is_complex(a) for a in node.all_input_nodes) or \
        any(isinstance(v, torch.Tensor) and complex_ops.is_complex(v.dtype) for v in vals)


def _check_types(ctx: Ctx, node, out) -> None:
    """The converted value must have the shape and dtype torch recorded for the node. A size torch.export left as a
    new symbol (a slice at ``buffer.item()``, whose value the frontend folded) takes the converted value's size."""
    val = node.meta.get("val")
    outs = out if isinstance(out, tuple) else (out,)
    vals = val if isinstance(val, (tuple, list)) else (val,)
    for o, v in zip(outs, vals):
        if isinstance(o, Value) and isinstance(v, torch.Tensor):
            for d, got in zip(v.shape, o.type.shape):
                if not isinstance(d, int) and d.node.expr.is_Symbol and d.node.expr not in ctx.sym_values:
                    ctx.sym_values[d.node.expr] = got
            want = TensorType(tuple(ctx.static_shape(v.shape)), ir_dtype(v.dtype))
            if o.type.shape != want.shape or o.type.dtype != want.dtype:
                raise AssertionError(f"edgeopt frontend bug: {node.target} at {ctx.source} gave {o.type}, "
                                     f"torch says {want}")


def _output_value(ctx: Ctx, a) -> Value:
    if not isinstance(a, torch.fx.Node):
        raise UnsupportedModelError(f"model output {a!r} is not a tensor; return tensors only")
    if a.name in ctx.torch_consts:
        return ctx.g.add("copy", [ctx.const(ctx.torch_consts[a.name], a.name)])
    v = ctx.env[a.name]
    if isinstance(v, complex_ops.Complex):
        raise UnsupportedModelError(f"model output {a.name!r} is a complex tensor; return its parts (x.real, x.imag, "
                                    "torch.view_as_real(x)) or its magnitude (x.abs())")
    if v.producer is None:  # an output that is an input (or a constant) gets its own buffer
        v = ctx.g.add("copy", [v])
    return v
