"""The execution plan's schema: check every field's presence, JSON type and range.

``check_schema`` turns an untrusted plan (any JSON: lists where dicts belong, bools, huge ints, junk) into a
``Plan`` whose fields can be used without further type checks, or raises ``ArtifactError`` naming the field. It
never formats the untrusted data itself into a message beyond a short excerpt (``show``), never recurses into it,
and resolves views iteratively, so no input makes it raise anything else. It bounds the counts of values, steps and
each step's arguments and in-place pairs (``MAX_VALUES``, ``MAX_STEPS``, ``MAX_ARGS``), and takes time linear in
the plan's size. The semantic checks (bytes, steps, lifetimes) are in ``plan_check``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import ArtifactError
from ..ir_dtypes import NP_DTYPES

#: every arena offset is a multiple of this (TVM's CPU kernels need 64-byte-aligned data)
ALIGN = 64
MAX_RANK = 32
#: elements of one tensor (2**40: 4 TiB of f32), so no size computation can overflow anywhere downstream
MAX_ELEMENTS = 1 << 40
#: a view of a view of ... (the runtimes resolve chains recursively)
MAX_VIEW_DEPTH = 64
#: the largest byte offset or arena size a plan may state
MAX_BYTES = 1 << 50
#: the most values (and model inputs, and model outputs) and steps a plan may have, and arguments (and in-place
#: pairs) one step may have: every check is O(n log n) in the plan's size; these keep its size sane too
MAX_VALUES = 1 << 20
MAX_STEPS = 1 << 20
MAX_ARGS = 1 << 20
KINDS = ("input", "const", "buffer", "view", "state")
#: (model input/output dtype, dtype its buffer holds) pairs a target may differ by (Vulkan stores bool as i32)
HELD_AS = {("bool", "i32")}


def show(x) -> str:
    """A short, safe rendering of an untrusted value for a message."""
    if isinstance(x, str):
        return repr(x[:60] + ("..." if len(x) > 60 else ""))
    if isinstance(x, bool) or x is None:
        return repr(x)
    if isinstance(x, int):
        return repr(x) if -(10**18) < x < 10**18 else "a huge int"
    if isinstance(x, float):
        return repr(x)
    return f"a JSON {'object' if isinstance(x, dict) else 'array' if isinstance(x, list) else type(x).__name__}"


def fail(p, msg: str):
    """Raise the plan's ``ArtifactError``; ``p`` is a ``Plan`` or the artifact's description."""
    raise ArtifactError(f"{p if isinstance(p, str) else p.what}: invalid execution plan: {msg}")


@dataclass
class Plan:
    """A plan whose schema has been checked: ``values`` name -> info (shape a list of ints, dtype and kind known;
    inputs and buffers have an int offset and a [first, last] live range; views a known ``of``)."""

    what: str
    values: dict
    steps: list
    inputs: list
    outputs: list
    arena_bytes: int
    storage: list[str] = field(default_factory=list)  # inputs and buffers: the tensors that live in the arena
    base: dict[str, str] = field(default_factory=dict)  # value -> the input, buffer or const it is (a view of)
    nbytes: dict[str, int] = field(default_factory=dict)
    depth: dict[str, int] = field(default_factory=dict)  # value -> views between it and its base

    def dtype(self, name: str) -> np.dtype:
        return NP_DTYPES[self.values[name]["dtype"]]

    @staticmethod
    def split(step: dict) -> tuple[list[str], list[str]]:
        """(inputs, outputs) of a step (destination-passing: outputs come last)."""
        n = len(step["args"]) - step["num_outputs"]
        return step["args"][:n], step["args"][n:]


def check_schema(plan, what: str = "artifact") -> Plan:
    """Check the plan's structure and types; returns it as a ``Plan`` (see the module docstring)."""
    _dict(plan, what, "the plan")
    for key in ("inputs", "outputs", "values", "steps", "arena_bytes"):
        if key not in plan:
            fail(what, f"no {key!r}")
    values, steps = _dict(plan["values"], what, "'values'"), _list(plan["steps"], what, "'steps'")
    p = Plan(what, values, steps, _list(plan["inputs"], what, "'inputs'"), _list(plan["outputs"], what, "'outputs'"),
             _int(plan["arena_bytes"], what, "'arena_bytes'", 0, MAX_BYTES))
    for key, items, cap in (("values", values, MAX_VALUES), ("steps", steps, MAX_STEPS),
                            ("inputs", p.inputs, MAX_VALUES), ("outputs", p.outputs, MAX_VALUES)):
        _cap(p, f"{key!r}", len(items), cap, "entries")
    for name, info in values.items():
        _check_value(p, name, info)
    for name in values:
        _resolve(p, name)
    _check_io(p, p.inputs, "input")
    _check_io(p, p.outputs, "output")
    for i, step in enumerate(steps):
        _check_step(p, i, step)
    return p


def _check_value(p: Plan, name, info) -> None:
    if not isinstance(name, str):
        fail(p, f"value name {show(name)} is not a string")
    where = f"value {show(name)}"
    _dict(info, p, where)
    for key in ("shape", "dtype", "kind"):
        if key not in info:
            fail(p, f"{where} has no {key!r}")
    kind, dtype = info["kind"], info["dtype"]
    if not isinstance(kind, str) or kind not in KINDS:
        fail(p, f"{where}: unknown kind {show(kind)} (known: {', '.join(KINDS)})")
    if not isinstance(dtype, str) or dtype not in NP_DTYPES:
        fail(p, f"{where}: unknown dtype {show(dtype)}")
    p.nbytes[name] = _shape(p, info["shape"], where) * NP_DTYPES[dtype].itemsize
    if kind == "view":
        if "of" not in info:
            fail(p, f"{where} is a view of nothing (no 'of')")
        if not isinstance(info["of"], str) or info["of"] not in p.values:
            fail(p, f"{where} is a view of {show(info['of'])}, which is not a value of the plan")
    elif kind in ("input", "buffer"):
        for key in ("offset", "live"):
            if key not in info:
                fail(p, f"{where} ({kind}) has no {key!r}")
        off = _int(info["offset"], p, f"{where}: offset", -MAX_BYTES, MAX_BYTES)
        if off < 0:
            fail(p, f"{where}: offset {off} is negative")
        live = _list(info["live"], p, f"{where}: live")
        if len(live) != 2:
            fail(p, f"{where}: live is not [first step, last step]")
        lo = _int(live[0], p, f"{where}: live[0]", 0, len(p.steps))
        hi = _int(live[1], p, f"{where}: live[1]", 0, len(p.steps))
        if lo > hi:
            fail(p, f"{where}: live range [{lo}, {hi}] ends before it starts")
        p.storage.append(name)


def _resolve(p: Plan, name: str) -> None:
    """Record the base of ``name`` (following views) and its depth; each view must keep its source's dtype and
    byte size, and chains end within ``MAX_VIEW_DEPTH`` views."""
    chain, cur = [], name
    while p.values[cur]["kind"] == "view" and cur not in p.base:
        if cur in chain:
            fail(p, f"view {show(name)}: its chain of sources is a cycle")
        src = p.values[cur]["of"]
        if p.values[src]["dtype"] != p.values[cur]["dtype"] or p.nbytes[src] != p.nbytes[cur]:
            fail(p, f"view {show(cur)} ({p.values[cur]['dtype']}, {p.nbytes[cur]} bytes) is not a reshape of "
                    f"{show(src)} ({p.values[src]['dtype']}, {p.nbytes[src]} bytes)")
        chain.append(cur)
        if len(chain) > MAX_VIEW_DEPTH:
            fail(p, f"view {show(name)}: its chain of sources is longer than {MAX_VIEW_DEPTH} views")
        cur = src
    base, depth = p.base.get(cur, cur), p.depth.get(cur, 0)
    p.base[cur], p.depth[cur] = base, depth
    for k, v in enumerate(reversed(chain), 1):
        if depth + k > MAX_VIEW_DEPTH:
            fail(p, f"view {show(name)}: its chain of sources is longer than {MAX_VIEW_DEPTH} views")
        p.base[v], p.depth[v] = base, depth + k


def _check_io(p: Plan, entries: list, role: str) -> None:
    seen = set()
    for k, e in enumerate(entries):
        where = f"{role} {k}"
        _dict(e, p, where)
        for key in ("name", "shape", "dtype"):
            if key not in e:
                fail(p, f"{where} has no {key!r}")
        name = e["name"]
        if not isinstance(name, str) or name not in p.values:
            fail(p, f"{where} is {show(name)}, which is not a value of the plan")
        info = p.values[name]
        _shape(p, e["shape"], where)
        if e["shape"] != info["shape"]:
            fail(p, f"{where} {show(name)}: shape {e['shape']} differs from its value's {info['shape']}")
        dtype = e["dtype"]
        if not isinstance(dtype, str) or (dtype != info["dtype"] and (dtype, info["dtype"]) not in HELD_AS):
            fail(p, f"{where} {show(name)}: dtype {show(e['dtype'])} does not fit its value's {info['dtype']}")
        if role == "input":
            if info["kind"] != "input":
                fail(p, f"{where} {show(name)} is a {info['kind']}, not an input value")
            if name in seen:
                fail(p, f"{where} {show(name)} is listed twice")
            seen.add(name)
    if role == "input":
        unlisted = [n for n in p.storage if p.values[n]["kind"] == "input" and n not in seen]
        if unlisted:
            fail(p, f"input value {show(unlisted[0])} is not among the plan's inputs (nothing would fill it)")


def _check_step(p: Plan, i: int, step) -> None:
    where = f"step {i}"
    _dict(step, p, where)
    for key in ("kernel", "args", "num_outputs"):
        if key not in step:
            fail(p, f"{where} has no {key!r}")
    if not isinstance(step["kernel"], str) or not step["kernel"]:
        fail(p, f"{where}: kernel {show(step['kernel'])} is not a kernel name")
    args = _list(step["args"], p, f"{where}: args")
    _cap(p, f"{where}: args", len(args), MAX_ARGS, "arguments")
    for a in args:
        if not isinstance(a, str) or a not in p.values:
            fail(p, f"{where}: argument {show(a)} is not a value of the plan")
    _int(step["num_outputs"], p, f"{where}: num_outputs", 1, max(1, len(args)))
    if len(args) < step["num_outputs"]:
        fail(p, f"{where}: {step['num_outputs']} output(s) but {len(args)} argument(s)")
    if "node" in step and not isinstance(step["node"], str):
        fail(p, f"{where}: node {show(step['node'])} is not a name")
    pairs = _list(step.get("inplace", []), p, f"{where}: inplace")
    _cap(p, f"{where}: inplace", len(pairs), MAX_ARGS, "pairs")
    if not pairs:
        return
    ins, outs = Plan.split(step)
    ins, outs = set(ins), set(outs)  # membership in O(1): a step may have many pairs and many arguments
    for pair in pairs:
        if (not isinstance(pair, list) or len(pair) != 2 or not all(isinstance(n, str) for n in pair)
                or pair[0] not in ins or pair[1] not in outs):
            fail(p, f"{where}: inplace pair {show(pair)} is not [an input argument, an output argument]")


def _dict(x, p, where: str) -> dict:
    if not isinstance(x, dict):
        fail(p, f"{where} is {show(x)}, not a JSON object")
    return x


def _list(x, p, where: str) -> list:
    if not isinstance(x, list):
        fail(p, f"{where} is {show(x)}, not a JSON array")
    return x


def _cap(p, where: str, n: int, cap: int, what: str) -> None:
    if n > cap:
        fail(p, f"{where} has {n} {what} (at most {cap})")


def _int(x, p, where: str, lo: int, hi: int) -> int:
    if type(x) is not int or not lo <= x <= hi:
        fail(p, f"{where} is {show(x)}, not an integer in [{lo}, {hi}]")
    return x


def _shape(p: Plan, shape, where: str) -> int:
    """The element count of a checked shape: a list of at most ``MAX_RANK`` non-negative ints."""
    _list(shape, p, f"{where}: shape")
    if len(shape) > MAX_RANK:
        fail(p, f"{where}: shape has {len(shape)} dimensions (at most {MAX_RANK})")
    count = 1
    for d in shape:
        count *= _int(d, p, f"{where}: a dimension", 0, MAX_ELEMENTS)
        if count > MAX_ELEMENTS:
            fail(p, f"{where}: shape has more than {MAX_ELEMENTS} elements")
    return count
