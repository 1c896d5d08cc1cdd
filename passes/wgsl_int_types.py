"""wgsl_int_types: make every integer tensor 32-bit, for targets whose kernel language has no other integers.

WGSL (the ``vulkan`` target's kernels) has ``i32`` and ``u32`` only: TVM's WebGPU codegen stops at ``i64``, and
``i8``/``u8``/``i16`` do not exist in the language at all, neither in storage nor in registers. This pass
narrows ``i64`` values to ``i32`` and widens ``i8``, ``u8`` and ``i16`` values to ``i32`` (quantization
parameters kept): graph inputs and outputs, constants, every node's outputs (``cast`` targets included) and
the bodies of fused kernels. A ``quantize`` keeps its 8-bit range and holds its values in i32 (``storage``);
the pipeline runs this pass again after the quantization passes, which make 8-bit values. A cast *to* a narrow
type keeps its wrap-around (``(x + 10).to(uint8)``): the pass adds the modulo arithmetic after it, as after a
left shift or a ``~`` of a narrow type (``(packed << 4) >> 4`` unpacks int4). A constant
that does not fit in ``i32`` is an error naming it, and the runtime refuses an input whose values do not fit
(it converts the int64 ids a tokenizer returns). What cannot be kept: i64 arithmetic whose intermediate values
leave int32's range (hashes, large products) wraps at 32 bits; index and id arithmetic, the i64 of real models,
stays far inside it; and 8- and 16-bit add, sub and mul that overflow their type do not wrap. ``bool`` is left
alone: it is a WGSL register type, and the lowering stores it as a 32-bit word.

Requires: nothing. Guarantees: ``int32_only``. Run first, before every other pass (the target adds it), and
again after quantization.

Before:
    graph main(%ids: i64[1,4]) {
      const %table: f32[100,8]
      %e: f32[1,4,8] = take(%table, %ids) {"axis": 0}
      %n: i64[1,4] = cast(%e) {"dtype": "i64"}
After:
    graph main(%ids: i32[1,4]) {
      %e: f32[1,4,8] = take(%table, %ids) {"axis": 0}
      %n: i32[1,4] = cast(%e) {"dtype": "i32"}
"""

from __future__ import annotations

import numpy as np

from edgeopt.errors import PassError
from edgeopt.ir import Graph, Node, Value
from edgeopt.ir.registry import get_op
from edgeopt.ir.types import TensorType
from edgeopt.ir_dtypes import NP_DTYPES
from edgeopt.pipeline import Pass, register_pass

#: integer dtypes WGSL lacks -> the 32-bit type that holds them
TO_INT32 = {"i64": "i32", "i8": "i32", "u8": "i32", "i16": "i32"}
_I32 = np.iinfo(np.int32)


def _retype(t: TensorType) -> TensorType:
    return TensorType(t.shape, TO_INT32[t.dtype], t.quant) if t.dtype in TO_INT32 else t


def _narrow_constants(g: Graph) -> int:
    changed = 0
    for name, arr in list(g.constants.items()):
        v = g.const_values[name]
        if v.type.dtype not in TO_INT32:
            continue
        if arr.size and (arr.min() < _I32.min or arr.max() > _I32.max):
            raise PassError(f"constant %{name} ({v.type}) holds values outside int32 "
                            f"[{arr.min()}, {arr.max()}]: this target has 32-bit integers only")
        g.constants[name] = np.array(arr, dtype=np.int32)
        v.type = _retype(v.type)
        changed += 1
    return changed


#: narrow type -> (its number of values, whether it is signed)
_WRAP = {"i8": (256, True), "u8": (256, False), "i16": (65536, True)}


def _range(dtype: str) -> tuple[float, float]:
    if dtype == "bool":
        return 0, 1
    if dtype.startswith(("i", "u")):
        info = np.iinfo(np.dtype(NP_DTYPES[dtype]))
        return info.min, info.max
    return -np.inf, np.inf


def _may_wrap(cast: Node) -> bool:
    """Whether ``cast`` (to a narrow int type) can receive values outside its type: not when its input's type, or
    the bounds of a ``clamp`` that made it (quantization's ``clamp(round(x / s), -127, 127)``), fit."""
    if cast.attrs["dtype"] not in _WRAP:
        return False
    lo, hi = _range(cast.attrs["dtype"])
    x = cast.inputs[0]
    have = _range(x.type.dtype)
    if x.producer is not None and x.producer.op == "clamp":
        lo_c, hi_c = x.producer.attrs.get("min"), x.producer.attrs.get("max")
        have = (have[0] if lo_c is None else max(have[0], lo_c), have[1] if hi_c is None else min(have[1], hi_c))
    return not (lo <= have[0] and have[1] <= hi)


def _wrap(g: Graph, x: Value, dtype: str, source: str | None) -> Value:
    """``x`` (i32) wrapped into ``dtype``'s range as a cast to it would: ``x mod 2^bits``, then signed."""
    size, signed = _WRAP[dtype]
    m = g.add_const(np.array(size, np.int32), "wrap")
    zero = g.add_const(np.array(0, np.int32), "zero")
    def op(name: str, *inputs: Value) -> Value:  # appended to g.nodes, which _narrow is rebuilding in order
        return g.add(name, inputs, source=source)

    r = op("sub", x, op("mul", op("div", x, m), m))  # in (-m, m): integer division truncates
    r = op("where", op("lt", r, zero), op("add", r, m), r)
    if signed:
        top = g.add_const(np.array(size // 2 - 1, np.int32), "wrap_top")
        r = op("where", op("gt", r, top), op("sub", r, m), r)
    return r


def _narrow(g: Graph) -> int:
    """Retype ``g`` in place (inputs, constants, then nodes in order); returns how many values changed."""
    wrapping = {n: n.attrs["dtype"] for n in g.nodes if n.op == "cast" and _may_wrap(n)}  # before any retyping
    wrapping.update({n: n.outputs[0].type.dtype for n in g.nodes  # bits shifted past the width, ~ of a u8
                     if n.op in ("shift_left", "bitwise_not") and n.outputs[0].type.dtype in _WRAP})
    changed = _narrow_constants(g)
    for v in g.inputs:
        if v.type.dtype in TO_INT32:
            v.type, changed = _retype(v.type), changed + 1
    nodes, g.nodes = g.nodes, []
    now: dict[Value, Value] = {}  # a cast's result -> its wrapped value, which readers use instead
    for n in nodes:
        n.inputs = [now.get(v, v) for v in n.inputs]
        if n.op == "quantize" and n.attrs["dtype"] in TO_INT32:  # the values keep their 8-bit range, held in i32
            n.attrs["storage"] = TO_INT32[n.attrs["dtype"]]
        elif n.attrs.get("dtype") in TO_INT32:
            n.attrs["dtype"] = TO_INT32[n.attrs["dtype"]]
        if n.body is not None:  # its parameters take the (new) types of the node's inputs
            for param, arg in zip(n.body.inputs, n.inputs):
                param.type = arg.type
            changed += _narrow(n.body)
            types = [o.type for o in n.body.outputs]
        else:
            types = get_op(n.op).infer([v.type for v in n.inputs], n.attrs)
        for o, t in zip(n.outputs, types):
            if t.dtype in TO_INT32:  # an op whose result type is fixed (argmax: i64)
                raise PassError(f"{n.op} produces {t} (at {n.source or 'an unknown line'}), and this target has "
                                "32-bit integers only")
            if o.type != t:
                o.type, changed = t, changed + 1
        g.nodes.append(n)
        if n in wrapping:
            now[n.outputs[0]] = _wrap(g, n.outputs[0], wrapping[n], n.source)
    g.outputs = [now.get(v, v) for v in g.outputs]
    return changed


@register_pass
class WgslIntTypes(Pass):
    name = "wgsl_int_types"
    guarantees = ("int32_only",)

    def run(self, g: Graph) -> dict:
        return {"retyped": _narrow(g)}
