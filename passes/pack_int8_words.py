"""pack_int8_words: store 8-bit weights four to a 32-bit word, for targets whose kernels have no 8-bit integers.

WGSL (the ``vulkan`` target's kernels) reads i32 and u32 only, so ``wgsl_int_types`` widens every i8 / u8 value to
an i32: a quantized weight then takes as many bytes as the f32 one it replaced. This pass keeps the weights'
size: each i8 / u8 constant that only ``dequantize`` nodes read (directly, or through a ``take`` of rows, as an
int8 embedding table is read) becomes i32 words holding four of its values along one axis, and those
``dequantize`` nodes unpack them in the kernel that reads the weight (``packed_axis`` / ``packed_dtype``: a shift
and a mask per value, and for i8 a sign extension, in registers). Packed int4 bytes are packed the same way, eight
nibbles a word.

The axis is the last one whose length is a multiple of 4 (a conv's input channels, a linear's inputs, a depthwise
conv's channels; after a ``take``'s axis). A weight with no such axis, or read by anything but a ``dequantize`` (a
zero point, a graph output), is left for ``wgsl_int_types`` to widen, and the stats say why.

Requires: nothing; runs after the quantization pass and before ``wgsl_int_types`` widens what is left.
Guarantees: ``int8_weights_in_words`` (no i8 / u8 constant that only dequantizes read, and has an axis of a
multiple of 4, is left unpacked).

Before:
    const %w_q: i8[16,8,3,3]
    %w: f32[16,8,3,3] = dequantize(%w_q, %w_scale)
After:
    const %w_q: i32[16,2,3,3]           (its 8 input channels four to a word)
    %w: f32[16,8,3,3] = dequantize(%w_q, %w_scale) {"packed_axis": -3, "packed_dtype": "i8"}
"""

from __future__ import annotations

from edgeopt.ir import Graph, Node, Value
from edgeopt.ir.ops.quant import pack_words
from edgeopt.ir.registry import get_op
from edgeopt.ir.types import TensorType
from edgeopt.pipeline import Pass, register_pass

BYTE_DTYPES = ("i8", "u8")


def _reads_only_q(n: Node, v: Value) -> bool:
    """Whether ``n`` is a ``dequantize`` of unpacked bytes that reads ``v`` as its values and nothing else."""
    return n.op == "dequantize" and n.attrs.get("packed_axis") is None and n.inputs[0] is v \
        and all(x is not v for x in n.inputs[1:])


def _readers(v: Value, users: dict, returned: set) -> tuple[list[Node], list[Node]] | str:
    """The ``dequantize`` nodes that read constant ``v`` and the ``take`` nodes between them, or why not: something
    else reads it (a zero point's reader), or a take of it, or it is ``returned`` (a graph output or state)."""
    if v in returned:
        return "a graph output"
    dequantizes, takes = [], []
    for n in users.get(v, []):
        if n.op == "take" and n.inputs[0] is v and n.inputs[1] is not v:
            rows = users.get(n.outputs[0], [])
            if n.outputs[0] in returned or not rows or not all(_reads_only_q(m, n.outputs[0]) for m in rows):
                return "a take of it is read by other ops than dequantize"
            takes.append(n)
            dequantizes += rows
        elif _reads_only_q(n, v):
            dequantizes.append(n)
        else:
            return f"read by {n.op} (as {'its values' if n.inputs[0] is v else 'a parameter'})"
    return (dequantizes, takes) if dequantizes else "not read"


def _packing_axis(shape: tuple[int, ...], takes: list[Node]) -> int | None:
    """The last axis of a multiple of 4 that every ``take`` keeps whole (one after its own axis), counted from
    the end (negative), so it names the same dimension in the rows a take gathers."""
    first = max((t.attrs["axis"] % len(shape) + 1 for t in takes), default=0)
    for ax in range(len(shape) - 1, first - 1, -1):
        if shape[ax] % 4 == 0:
            return ax - len(shape)
    return None


@register_pass
class PackInt8Words(Pass):
    name = "pack_int8_words"
    guarantees = ("int8_weights_in_words",)

    def run(self, g: Graph) -> dict:
        users, returned = g.users(), set(g.outputs) | set(g.state_updates.values())
        packed, left, saved = [], [], 0
        for name, v in list(g.const_values.items()):
            if v.type.dtype not in BYTE_DTYPES or not g.is_const(v) or not v.type.rank:
                continue
            found = _readers(v, users, returned)
            if isinstance(found, str):
                left.append(f"{name}: {found}")
                continue
            dequantizes, takes = found
            ax = _packing_axis(v.type.shape, takes)
            if ax is None:
                left.append(f"{name}: no axis of a multiple of 4 in {list(v.type.shape)}")
                continue
            dtype, arr = v.type.dtype, g.const(v)
            g.constants[name] = pack_words(arr, ax)  # the same value, retyped: its readers and name stay
            v.type = TensorType(g.constants[name].shape, "i32")
            saved += 3 * arr.nbytes  # against the i32 values wgsl_int_types would make
            for t in takes:
                t.outputs[0].type = get_op("take").infer([v.type, t.inputs[1].type], t.attrs)[0]
            for d in dequantizes:
                d.attrs.update(packed_axis=ax, packed_dtype=dtype)
            packed.append(name)
        return {"packed": len(packed), "left_widened": left, "bytes_saved": int(saved)}
