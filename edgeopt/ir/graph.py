"""The IR's data structures: a ``Graph`` of ``Node``s over typed ``Value``s, with weights as constants.

A value is exactly one of: a graph input, a constant (its array lives in ``Graph.constants``) or the
output of one node. Nodes are kept in a valid execution (topological) order. Shapes are static.

    g = Graph("main")
    x = g.add_input("x", TensorType((1, 8), "f32"))
    w = g.add_const(np.ones((4, 8), np.float32), "w")
    y = g.add("linear", [x, w])
    g.set_outputs([g.add("relu", [y])])
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from .types import TensorType, dtype_from_numpy

_NAME_RE = re.compile(r"[^A-Za-z0-9_.]")
#: evaluating an op on constants at compile time may make its result at most this many bytes, or as big as its
#: biggest input: otherwise the op stays a kernel (a scalar broadcast to a big tensor, an int8 weight widened
#: to int32 for an integer matmul). The frontend and ``constant_folding`` both follow it.
MAX_FOLD_GROWTH_BYTES = 16384


def fold_keeps_weights_small(result_bytes: int, input_bytes: Iterable[int]) -> bool:
    """Whether a constant result of ``result_bytes`` from inputs of ``input_bytes`` may replace its op."""
    return result_bytes <= max(MAX_FOLD_GROWTH_BYTES, *input_bytes)


class Value:
    """An SSA value: a tensor of a static ``TensorType``."""

    __slots__ = ("name", "type", "producer")

    def __init__(self, name: str, type: TensorType, producer: Node | None = None):
        self.name, self.type, self.producer = name, type, producer

    def __repr__(self) -> str:
        return f"%{self.name}: {self.type}"


class Node:
    """One operation: ``outputs = op(*inputs, **attrs)``. ``source`` is the user's code line, if known."""

    __slots__ = ("op", "inputs", "attrs", "outputs", "source", "body")

    def __init__(self, op: str, inputs: Sequence[Value], attrs: dict[str, Any] | None = None,
                 source: str | None = None, body: Graph | None = None):
        self.op, self.inputs, self.attrs = op, list(inputs), dict(attrs or {})
        self.outputs: list[Value] = []
        self.source = source
        #: the subgraph of a ``fused`` node (one kernel); None for every other op
        self.body = body

    @property
    def output(self) -> Value:
        if len(self.outputs) != 1:
            raise ValueError(f"{self.op} has {len(self.outputs)} outputs")
        return self.outputs[0]

    def __repr__(self) -> str:
        outs = ", ".join(f"%{o.name}" for o in self.outputs)
        return f"{outs} = {self.op}({', '.join('%' + v.name for v in self.inputs)})"


class Graph:
    """A function: inputs, constants, nodes in execution order, outputs.

    **State** (a language model's KV cache) is a tensor that outlives a call: ``states`` are read like inputs,
    their storage is owned by the runtime (zeros at first, shared by the functions of one artifact), and
    ``state_updates[name]`` is the value the state ``name`` holds after the call. An update is written in place:
    the value must be an ``index_copy`` of the state itself, which nothing else reads (the verifier checks)."""

    def __init__(self, name: str = "main"):
        self.name = name
        self.inputs: list[Value] = []
        self.states: list[Value] = []
        self.state_updates: dict[str, Value] = {}
        self.outputs: list[Value] = []
        self.nodes: list[Node] = []
        self.constants: dict[str, np.ndarray] = {}
        self.const_values: dict[str, Value] = {}
        #: const name -> the name of the torch parameter or buffer it came from (set by the frontend)
        self.param_names: dict[str, str] = {}
        self._names: set[str] = set()

    # -- construction -------------------------------------------------------------------------------
    def fresh_name(self, hint: str = "v") -> str:
        base = _NAME_RE.sub("_", hint) or "v"
        name, i = base, 0
        while name in self._names:
            i += 1
            name = f"{base}_{i}"
        self._names.add(name)
        return name

    def add_input(self, name: str, type: TensorType) -> Value:
        v = Value(self.fresh_name(name), type)
        self.inputs.append(v)
        return v

    def add_state(self, name: str, type: TensorType) -> Value:
        v = Value(self.fresh_name(name), type)
        self.states.append(v)
        return v

    def live_outputs(self) -> list[Value]:
        """What a call must compute: the outputs and the states' new values."""
        return self.outputs + list(self.state_updates.values())

    def add_const(self, array, name: str = "c") -> Value:
        """Add a constant tensor (a weight). The array is stored as given; never mutate it later."""
        arr = np.asarray(array)
        if not arr.flags.c_contiguous:
            arr = np.ascontiguousarray(arr)
        v = Value(self.fresh_name(name), TensorType(tuple(arr.shape), dtype_from_numpy(arr.dtype)))
        self.constants[v.name] = arr
        self.const_values[v.name] = v
        return v

    def add(self, op: str, inputs: Sequence[Value], attrs: dict[str, Any] | None = None, *,
            source: str | None = None, name: str | None = None, index: int | None = None):
        """Append (or insert at ``index``) a node; its output types are inferred from the op's schema.

        Returns the output value, or a tuple of them for multi-output ops.
        """
        from .registry import get_op  # local: registry imports the op files, which import this module

        opdef = get_op(op)
        attrs = opdef.normalize_attrs(attrs or {})
        node = Node(op, inputs, attrs, source)
        types = opdef.infer([v.type for v in inputs], attrs)
        hint = name or op
        node.outputs = [Value(self.fresh_name(hint), t, node) for t in types]
        if index is None:
            self.nodes.append(node)
        else:
            self.nodes.insert(index, node)
        return node.outputs[0] if len(types) == 1 else tuple(node.outputs)

    def set_outputs(self, values: Iterable[Value]) -> None:
        self.outputs = list(values)

    # -- queries -------------------------------------------------------------------------------------
    def is_const(self, v: Value) -> bool:
        return v.name in self.constants and self.const_values.get(v.name) is v

    def const(self, v: Value) -> np.ndarray:
        return self.constants[v.name]

    def users(self) -> dict[Value, list[Node]]:
        """For every value, the nodes that read it (in order; a node appears once per use)."""
        out: dict[Value, list[Node]] = {}
        for n in self.nodes:
            for v in n.inputs:
                out.setdefault(v, []).append(n)
        return out

    def layer_name(self, n: Node) -> str:
        """The model's name of layer ``n`` (a conv / linear / matmul, or an embedding's ``take``): its weight's
        parameter name without ``.weight`` (``encoder.layer.0.intermediate.dense``), else the weight's constant name."""
        w = n.inputs[0].name if n.op == "take" else n.inputs[1].name if len(n.inputs) > 1 else n.outputs[0].name
        return self.param_names.get(w, w).removesuffix(".weight")

    def weight_bytes(self) -> int:
        return int(sum(a.nbytes for a in self.constants.values()))

    # -- mutation helpers for passes -------------------------------------------------------------------
    def replace_uses(self, old: Value, new: Value) -> int:
        """Make every reader of ``old`` (nodes and graph outputs) read ``new``; returns the use count."""
        count = 0
        for n in self.nodes:
            for i, v in enumerate(n.inputs):
                if v is old:
                    n.inputs[i] = new
                    count += 1
        for i, v in enumerate(self.outputs):
            if v is old:
                self.outputs[i] = new
                count += 1
        for k, v in self.state_updates.items():
            if v is old:
                self.state_updates[k] = new
                count += 1
        return count

    def remove_dead_nodes(self) -> int:
        """Drop nodes whose outputs reach no graph output; returns how many were dropped."""
        live = set(self.live_outputs())
        kept = []
        for n in reversed(self.nodes):
            if any(o in live for o in n.outputs):
                kept.append(n)
                live.update(n.inputs)
        removed = len(self.nodes) - len(kept)
        self.nodes = kept[::-1]
        return removed

    def remove_unused_constants(self) -> int:
        used = {v.name for n in self.nodes for v in n.inputs} | {v.name for v in self.live_outputs()}
        dead = [k for k in self.constants if k not in used]
        for k in dead:
            del self.constants[k]
            del self.const_values[k]
            self._names.discard(k)
        return len(dead)

    def adopt(self, other: Graph) -> None:
        """Become ``other`` (its inputs, states, nodes, constants and outputs): how a pass that rebuilds the graph
        (pruning, calibration's swap) rewrites it in place."""
        self.inputs, self.outputs, self.nodes = other.inputs, other.outputs, other.nodes
        self.states, self.state_updates = other.states, other.state_updates
        self.constants, self.const_values, self._names = other.constants, other.const_values, other._names
        self.param_names = other.param_names

    def clone(self) -> Graph:
        """A structural copy (new Values and Nodes); constant arrays are shared, not copied."""
        g = Graph(self.name)
        g._names = set(self._names)
        g.param_names = dict(self.param_names)
        vmap: dict[Value, Value] = {}
        for v in self.inputs:
            vmap[v] = Value(v.name, v.type)
            g.inputs.append(vmap[v])
        for v in self.states:
            vmap[v] = Value(v.name, v.type)
            g.states.append(vmap[v])
        for k, arr in self.constants.items():
            old = self.const_values[k]
            vmap[old] = Value(old.name, old.type)
            g.constants[k] = arr
            g.const_values[k] = vmap[old]
        for n in self.nodes:
            m = Node(n.op, [vmap[v] for v in n.inputs], dict(n.attrs), n.source,
                     n.body.clone() if n.body is not None else None)
            for o in n.outputs:
                vmap[o] = Value(o.name, o.type, m)
                m.outputs.append(vmap[o])
            g.nodes.append(m)
        g.outputs = [vmap[v] for v in self.outputs]
        g.state_updates = {k: vmap[v] for k, v in self.state_updates.items()}
        return g

    def toposort(self) -> None:
        """Restore a valid execution order after a rewrite, keeping the current order where it is valid."""
        producer = {o: n for n in self.nodes for o in n.outputs}
        order, state = [], {}

        def visit(n: Node) -> None:
            stack = [(n, iter(n.inputs))]
            state[n] = 1
            while stack:
                node, it = stack[-1]
                for v in it:
                    p = producer.get(v)
                    if p is not None and p not in state:
                        state[p] = 1
                        stack.append((p, iter(p.inputs)))
                        break
                    if p is not None and state[p] == 1:
                        raise ValueError(f"cycle through %{v.name}")
                else:
                    stack.pop()
                    state[node] = 2
                    order.append(node)

        for n in self.nodes:
            if n not in state:
                visit(n)
        self.nodes = order

    def op_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for n in self.nodes:
            counts[n.op] = counts.get(n.op, 0) + 1
        return counts

    def __str__(self) -> str:
        from .text import print_graph

        return print_graph(self)
