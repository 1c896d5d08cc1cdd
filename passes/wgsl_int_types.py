"""wgsl_int_types: make every integer tensor 32-bit, for targets whose kernel language has no other integers.

WGSL (the ``vulkan`` target's kernels) has ``i32`` and ``u32`` only: TVM's WebGPU codegen stops at ``i64``, and
``i8``/``u8``/``i16`` do not exist in the language at all, neither in storage nor in registers. This pass
narrows ``i64`` values to ``i32`` and widens ``i8``, ``u8`` and ``i16`` values to ``i32`` (quantization
parameters kept): graph inputs and outputs, constants, every node's outputs (``cast`` targets included) and
the bodies of fused kernels. Values stay exact: a constant that does not fit in ``i32`` is an error naming it,
and the runtime refuses an input whose values do not fit (it converts the int64 ids a tokenizer returns).
``bool`` is left alone: it is a WGSL register type, and the lowering stores it as a 32-bit word.

Requires: nothing. Guarantees: ``int32_only``. Run first, before every other pass (the target adds it).

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
from edgeopt.ir import Graph
from edgeopt.ir.registry import get_op
from edgeopt.ir.types import TensorType
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


def _narrow(g: Graph) -> int:
    """Retype ``g`` in place (inputs, constants, then nodes in order); returns how many values changed."""
    changed = _narrow_constants(g)
    for v in g.inputs:
        if v.type.dtype in TO_INT32:
            v.type, changed = _retype(v.type), changed + 1
    for n in g.nodes:
        if n.attrs.get("dtype") in TO_INT32:
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
    return changed


@register_pass
class WgslIntTypes(Pass):
    name = "wgsl_int_types"
    guarantees = ("int32_only",)

    def run(self, g: Graph) -> dict:
        return {"retyped": _narrow(g)}
