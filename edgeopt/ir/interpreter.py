"""The reference interpreter: runs a Graph with each op's numpy reference. Independent of TVM and torch.

It is the oracle for every pass (interpret before vs after) and for the compiled kernels.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np

from ..ir_dtypes import fits
from .graph import Graph, Value
from .registry import get_op


def interpret(g: Graph, inputs: Sequence[np.ndarray] | Mapping[str, np.ndarray],
              observe: Callable[[Value, np.ndarray], None] | None = None,
              states: dict[str, np.ndarray] | None = None) -> list[np.ndarray]:
    """Evaluate ``g`` on numpy inputs (a list in input order or a dict by input name).

    ``states`` (name -> array) holds the graph's state: a state missing from it starts as zeros, and after the
    call the dict holds every state's new value (pass the same dict to the next call).

    An integer input also takes an array of another integer dtype whose values fit, as the runtime does (int64 token
    ids for a graph a target narrowed to int32).

    ``observe(value, array)`` is called with every graph input and every node output as it is computed (the
    calibration of quantization collects its statistics this way)."""
    if isinstance(inputs, Mapping):
        inputs = [inputs[v.name] for v in g.inputs]
    if len(inputs) != len(g.inputs):
        raise ValueError(f"graph takes {len(g.inputs)} inputs, got {len(inputs)}")
    env: dict[Value, np.ndarray] = {}
    for v, x in zip(g.inputs, inputs):
        x = _fitted(np.asarray(x), v.type.np_dtype)
        if x.shape != v.type.shape or x.dtype != v.type.np_dtype:
            raise ValueError(f"input %{v.name}: expected {v.type}, got {x.dtype}{list(x.shape)}")
        env[v] = x
        if observe is not None:
            observe(v, x)
    states = {} if states is None else states
    for v in g.states:
        if v.name not in states:
            states[v.name] = np.zeros(v.type.shape, v.type.np_dtype)
        env[v] = states[v.name]
    for name, arr in g.constants.items():
        env[g.const_values[name]] = arr
    last_use = {}
    for i, n in enumerate(g.nodes):
        for v in n.inputs:
            last_use[v] = i
    keep = set(g.live_outputs())
    for i, n in enumerate(g.nodes):
        args = [env[v] for v in n.inputs]
        outs = interpret(n.body, args) if n.body is not None else get_op(n.op).reference(args, n.attrs)
        for o, y in zip(n.outputs, outs):
            y = np.asarray(y)
            if y.shape != o.type.shape or y.dtype != o.type.np_dtype:
                raise AssertionError(f"reference of {n.op} gave {y.dtype}{list(y.shape)}, IR says {o.type}")
            env[o] = y
            if observe is not None:
                observe(o, y)
        for v in n.inputs:  # free intermediates early: full-size models stay within memory
            if last_use.get(v) == i and v not in keep and v.producer is not None:
                env.pop(v, None)
    states.update({k: env[v] for k, v in g.state_updates.items()})
    return [env[v] for v in g.outputs]


def _fitted(x: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """``x`` as ``dtype`` when both are integer types and every value fits; else ``x`` unchanged."""
    if x.dtype == dtype or x.dtype.kind not in "iu" or np.dtype(dtype).kind not in "iu" or not fits(x, dtype):
        return x
    return x.astype(dtype)
