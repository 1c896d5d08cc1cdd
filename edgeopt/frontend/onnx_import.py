"""ONNX -> edgeopt IR: the second frontend (``edgeopt.compile("model.onnx", ...)``), on the ``onnx`` package.

    g = from_onnx("model.onnx")                         # static input shapes in the file
    g = from_onnx("model.onnx", [np.zeros((1, 3, 224, 224), np.float32)])   # or taken from example inputs

The graph is walked in order (ONNX graphs are topologically sorted). Initializers and ``Constant`` nodes are
constants; a node whose inputs are all constant is evaluated now with onnx's reference implementation (the shape
arithmetic exporters emit: ``Shape`` -> ``Gather`` -> ``Concat`` -> ``Reshape``), and ``Shape`` of a tensor is its
static shape. Every other node is converted by the table in ``onnx_ops`` into IR ops. Every unsupported op (or
unsupported use of an op) is collected, with the names of the nodes that use it, into ONE
``UnsupportedModelError`` before anything is compiled; ops that only read an unsupported op's output are checked
too.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence

import numpy as np

from ..errors import UnsupportedModelError, UnsupportedOp
from ..ir import Graph, TensorType, Value
from ..ir.types import dtype_from_numpy


class OnnxCtx:
    """Conversion state: the graph being built; each ONNX tensor name -> an IR value or a numpy constant."""

    def __init__(self, g: Graph, opset: int):
        self.g, self.opset = g, opset
        self.env: dict[str, Value | np.ndarray] = {}
        self._materialized: dict[int, Value] = {}
        self.node = None

    def v(self, name: str) -> Value:
        """The tensor as an IR value (a constant becomes a graph constant, once)."""
        x = self.env[name]
        if isinstance(x, Value):
            return x
        key = id(x)
        if key not in self._materialized:
            arr = np.ascontiguousarray(x)
            self._materialized[key] = self.g.add_const(arr, _ir_name(name) or "c")
        return self._materialized[key]

    def const(self, name: str, what: str = "this input") -> np.ndarray:
        """The tensor's value, which must be a constant (shapes, axes, pads...)."""
        x = self.env.get(name)
        if not isinstance(x, np.ndarray):
            raise NotImplementedError(f"{what} must be a constant")
        return x

    def is_const(self, name: str) -> bool:
        return isinstance(self.env.get(name), np.ndarray)

    def add(self, op: str, inputs: list[Value], attrs: dict | None = None):
        return self.g.add(op, inputs, attrs or {}, source=f"onnx node {self.node.name!r}" if self.node.name else None)

    def shape(self, name: str) -> tuple:
        x = self.env[name]
        return tuple(x.shape) if isinstance(x, np.ndarray) else x.type.shape


def _ir_name(name: str) -> str:
    return re.sub(r"[^\w.]", "_", name).strip("_.")


def load_onnx(model):
    """An ``onnx.ModelProto`` from a path, bytes or a ModelProto (external data read from beside the file)."""
    import onnx

    if isinstance(model, onnx.ModelProto):
        return model
    if isinstance(model, (bytes, bytearray)):
        return onnx.load_from_string(bytes(model))
    if not os.path.isfile(model):
        raise FileNotFoundError(f"no such ONNX file: {model}")
    return onnx.load(os.fspath(model))


def from_onnx(model, example_inputs: Sequence | None = None, name: str = "main") -> Graph:
    """An ONNX model (path, bytes or ModelProto) as an IR Graph. Input shapes come from ``example_inputs`` (arrays
    or tensors, in the graph's input order) or, without them, from the file, where every dimension must be fixed."""
    from onnx import helper, numpy_helper

    from .onnx_ops import CONVERTERS

    m = load_onnx(model)
    opset = max((o.version for o in m.opset_import if o.domain in ("", "ai.onnx")), default=13)
    g = Graph(name)
    ctx = OnnxCtx(g, opset)
    for init in m.graph.initializer:
        ctx.env[init.name] = numpy_helper.to_array(init)
    inputs = [i for i in m.graph.input if i.name not in ctx.env]
    _add_inputs(ctx, inputs, example_inputs, helper)
    unsupported: dict[str, UnsupportedOp] = {}
    poisoned: set[str] = set()
    for node in m.graph.node:
        ctx.node = node
        ins = [i for i in node.input if i]
        if any(i in poisoned for i in ins):
            poisoned.update(node.output)
            if node.domain not in ("", "ai.onnx") or node.op_type not in CONVERTERS:
                _unsupported(unsupported, _op_key(node), node)
            continue
        try:
            outs = _convert(ctx, node, CONVERTERS)
        except NotImplementedError as e:
            _unsupported(unsupported, f"{_op_key(node)} ({e})" if str(e) else _op_key(node), node)
            poisoned.update(node.output)
            continue
        for out_name, val in zip(node.output, outs):
            if out_name:
                ctx.env[out_name] = val
    if unsupported:
        raise UnsupportedModelError.from_ops(list(unsupported.values()))
    g.set_outputs([ctx.v(o.name) for o in m.graph.output])
    g.remove_unused_constants()
    return g


def _add_inputs(ctx: OnnxCtx, inputs, example_inputs, helper) -> None:
    if example_inputs is not None and len(example_inputs) != len(inputs):
        raise UnsupportedModelError(f"the ONNX model takes {len(inputs)} input(s) "
                                    f"({', '.join(i.name for i in inputs)}); {len(example_inputs)} example input(s) "
                                    "were given")
    for k, inp in enumerate(inputs):
        tt = inp.type.tensor_type
        dtype = np.dtype(helper.tensor_dtype_to_np_dtype(tt.elem_type))
        dims = [d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim]
        if example_inputs is not None:
            x = np.asarray(example_inputs[k].numpy() if hasattr(example_inputs[k], "numpy") else example_inputs[k])
            if len(x.shape) != len(dims) or any(d is not None and d != s for d, s in zip(dims, x.shape)):
                raise UnsupportedModelError(f"example input {k} ({inp.name}) has shape {list(x.shape)}; the ONNX model "
                                            f"declares {[d if d is not None else '?' for d in dims]}")
            if x.dtype != dtype:
                raise UnsupportedModelError(f"example input {k} ({inp.name}) is {x.dtype}; the ONNX model takes "
                                            f"{dtype}")
            dims = list(x.shape)
        elif any(d is None for d in dims):
            shown = [d if d is not None else "?" for d in dims]
            raise UnsupportedModelError(f"ONNX input {inp.name!r} has dimensions that are not fixed ({shown}): give "
                                        "example inputs (edgeopt.compile('model.onnx', [x])) to fix them")
        ctx.env[inp.name] = ctx.g.add_input(_ir_name(inp.name) or f"input{k}",
                                            TensorType(tuple(int(d) for d in dims), dtype_from_numpy(dtype)))


def _convert(ctx: OnnxCtx, node, converters) -> list:
    if node.domain not in ("", "ai.onnx"):
        raise NotImplementedError(f"domain {node.domain}")
    ins = [i for i in node.input if i]
    if node.op_type == "Shape":
        return [_shape(ctx, node)]
    if all(ctx.is_const(i) for i in ins) and node.op_type not in ("RandomNormal", "RandomUniform"):
        if node.op_type in _NUMPY_FOLDS:  # where onnx's reference implementation is wrong
            return [_NUMPY_FOLDS[node.op_type]([ctx.env[i] for i in ins], _attrs(node))]
        return _evaluate(ctx, node)  # constant arithmetic (shapes, folded weights): numpy, now
    conv = converters.get(node.op_type)
    if conv is None:
        raise NotImplementedError("")
    out = conv(ctx, node, _attrs(node))
    return list(out) if isinstance(out, (list, tuple)) else [out]


def _gather_elements(ins, a):
    data, idx = ins
    axis = int(a.get("axis", 0)) % data.ndim
    return np.take_along_axis(data, np.where(idx < 0, idx + data.shape[axis], idx), axis)


#: constant folds done here in numpy: onnx 1.23's reference GatherElements fails on [1, 512] data and [1, 16] indices
_NUMPY_FOLDS = {"GatherElements": _gather_elements}


def _shape(ctx: OnnxCtx, node) -> np.ndarray:
    shape = np.array(ctx.shape(node.input[0]), np.int64)
    a = _attrs(node)
    start, end = a.get("start", 0), a.get("end", len(shape))
    return shape[start:end]


def _evaluate(ctx: OnnxCtx, node) -> list[np.ndarray]:
    from onnx import helper
    from onnx.reference import ReferenceEvaluator

    names = [i for i in node.input if i]
    feeds = {n: ctx.env[n] for n in names}
    graph = helper.make_graph([node], "fold", [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(
        feeds[n].dtype), feeds[n].shape) for n in names],
        [helper.make_tensor_value_info(o, 0, None) for o in node.output if o])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", ctx.opset)])
    try:
        outs = ReferenceEvaluator(model).run(None, feeds)
    except Exception as e:  # noqa: BLE001 - onnx's evaluator raises anything; the op is then unsupported here
        raise NotImplementedError(f"evaluating it on constants failed: {type(e).__name__}: {e}") from None
    return [np.asarray(o) for o in outs]


def _attrs(node) -> dict:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _op_key(node) -> str:
    return f"onnx::{node.op_type}" if node.domain in ("", "ai.onnx") else f"{node.domain}::{node.op_type}"


def _unsupported(unsupported: dict, key: str, node) -> None:
    u = unsupported.setdefault(key, UnsupportedOp(key))
    u.count += 1
    where = f"node {node.name!r}" if node.name else f"node {node.op_type} -> {list(node.output)}"
    if where not in u.sources:
        u.sources.append(where)
