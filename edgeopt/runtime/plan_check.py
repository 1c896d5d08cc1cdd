"""Validate a whole execution plan at load, before any library is loaded or any kernel runs.

A plan (``plan.json``; the format is in ``edgeopt/lower/build.py``) tells the runtime where every tensor lives and
which kernel writes which bytes. Its sha256 sits in the same zip, so anyone can rewrite it; ``check_plan`` refuses
every plan that could make a kernel touch memory it must not, or read memory nothing wrote, with one
``ArtifactError`` naming the value or step. Whatever the plan's shape (lists for dicts, bools for ints, huge ints,
deep nesting), it raises nothing else. What it proves:

* **schema**: every field present with the right JSON type; kinds and dtypes known; shapes are lists of
  non-negative ints with a bounded element count (``plan_schema``);
* **bytes**: every input and buffer lies inside the arena at a 64-byte-aligned offset (counted with its
  64-byte-rounded size, as the planner does); the arena is no larger than its tensors need; each view is a
  reshape of its source (same dtype and byte size) in a chain without cycles; each weight matches its array;
* **steps**: every argument names a value; ``num_outputs`` fits the arguments; steps that run the same kernel
  pass the same argument types; a kernel writes only buffers (never a weight or an input, not even through a
  view), each buffer exactly once, before any step reads it; every output is written (or is an input, a weight
  or a view of one), so a plan with no steps may only return those;
* **lifetimes**: each tensor's declared ``live`` range covers every step that writes or reads it, and no two
  tensors in use at the same step share arena bytes, except a step's declared in-place pair (``inplace``:
  the kernel writes its output over an input that dies there, read through that one argument only) — the
  planner's own guarantee (``edgeopt.memory``), re-derived here from the steps themselves.

It imports only the runtime's own modules: the device runs it without the compiler.
"""

from __future__ import annotations

from .plan_schema import ALIGN, Plan, check_schema, fail, show

__all__ = ["ALIGN", "check_plan"]

#: the arena may exceed what its tensors need by this much (a target may round sizes up to 256 bytes)
ARENA_SLACK = 256


def aligned(nbytes: int) -> int:
    """The bytes the planner reserves for a tensor: its size rounded up to ``ALIGN``, at least ``ALIGN``."""
    return max(ALIGN, -(-nbytes // ALIGN) * ALIGN)


def check_plan(plan, what: str = "artifact", weights: dict | None = None, kernels=None) -> None:
    """Raise ``ArtifactError`` unless ``plan`` is safe to run (see the module docstring).

    ``weights`` (name -> array): each constant of the plan must be there with the plan's shape and dtype.
    ``kernels`` (names): when given, every step's kernel must be one of them."""
    p = check_schema(plan, what)
    _check_weights(p, weights)
    _check_arena(p)
    writer = _check_steps(p, kernels)
    first, last = _lifetimes(p, writer)
    _check_live(p, first, last)
    _check_overlap(p, first, last, _inplace_pairs(p, writer, last))


def _check_weights(p: Plan, weights: dict | None) -> None:
    if weights is None:
        return
    for name, info in p.values.items():
        if info["kind"] != "const":
            continue
        arr = weights.get(name)
        shape, dtype = getattr(arr, "shape", None), getattr(arr, "dtype", None)
        if arr is None or shape is None or list(shape) != info["shape"] or dtype != p.dtype(name):
            fail(p, f"weight {show(name)} is missing from the weights or does not match the plan "
                    f"({info['dtype']}{info['shape']})")


def _check_arena(p: Plan) -> None:
    need = 0
    for name in p.storage:
        off, size = p.values[name]["offset"], aligned(p.nbytes[name])
        if off % ALIGN:
            fail(p, f"value {show(name)}: offset {off} is not a multiple of {ALIGN}")
        if off + size > p.arena_bytes:
            fail(p, f"value {show(name)}: bytes [{off}, {off + size}) lie outside the arena of {p.arena_bytes} bytes")
        need = max(need, off + size)
    if p.arena_bytes > need + ARENA_SLACK:
        fail(p, f"arena_bytes {p.arena_bytes} is more than its tensors need ({need} bytes)")


def _check_steps(p: Plan, kernels) -> dict[str, int]:
    """Check every step's kernel and arguments in order; returns {buffer: the step that writes it}. Every buffer
    must be written, so every output is: a buffer, or an input, a weight or a view of one (which need no step)."""
    known = set(kernels) if kernels is not None else None
    signature: dict[str, tuple] = {}
    writer: dict[str, int] = {}
    for i, step in enumerate(p.steps):
        where = f"step {i} (kernel {show(step['kernel'])})"
        if known is not None and step["kernel"] not in known:
            fail(p, f"{where}: the kernel library has no such kernel")
        sig = (step["num_outputs"], tuple((p.dtype(a), tuple(p.values[a]["shape"])) for a in step["args"]))
        if signature.setdefault(step["kernel"], sig) != sig:
            fail(p, f"{where}: its arguments' number, shapes or dtypes differ from another step of that kernel")
        ins, outs = p.split(step)
        for a in ins:
            b = p.base[a]
            if p.values[b]["kind"] == "buffer" and b not in writer:
                fail(p, f"{where} reads {show(a)} before any step writes it")
        for o in outs:
            b = p.base[o]
            kind = p.values[b]["kind"]
            if kind != "buffer":
                via = f"a view of {show(b)}, " if b != o else ""
                fail(p, f"{where} writes {show(o)}, {via}of kind {kind}: kernels may write buffers only")
            if b in writer:
                fail(p, f"{where} writes {show(o)}, whose storage {show(b)} step {writer[b]} already wrote")
            writer[b] = i
    unwritten = [n for n in p.storage if p.values[n]["kind"] == "buffer" and n not in writer]
    if unwritten:
        fail(p, f"buffer {show(unwritten[0])} is written by no step ({len(p.steps)} steps)")
    return writer


def _lifetimes(p: Plan, writer: dict[str, int]) -> tuple[dict[str, int], dict[str, int]]:
    """({tensor: first step}, {tensor: last step}) of every input and buffer, from the steps: an input is there at
    step 0, a buffer from the step that writes it; each lasts to its last reader (a view's reader reads its
    base), a model output to ``len(steps)``, when it is copied out."""
    first = {n: writer.get(n, 0) for n in p.storage}
    last = dict(first)
    for i, step in enumerate(p.steps):
        for a in p.split(step)[0]:
            b = p.base[a]
            if b in last:
                last[b] = max(last[b], i)
    for o in p.outputs:
        b = p.base[o["name"]]
        if b in last:
            last[b] = len(p.steps)
    return first, last


def _check_live(p: Plan, first: dict[str, int], last: dict[str, int]) -> None:
    for name in p.storage:
        lo, hi = p.values[name]["live"]
        if first[name] < lo or last[name] > hi:
            fail(p, f"value {show(name)} is used at steps {first[name]}..{last[name]}, outside its declared "
                    f"live range [{lo}, {hi}]")


def _inplace_pairs(p: Plan, writer: dict[str, int], last: dict[str, int]) -> set[tuple[str, str]]:
    """The (input tensor, output tensor) pairs that may share bytes: a step's declared in-place pair whose input
    dies at that step (no later reader, not a model output), is read there through that one argument only, and
    has the output's shape and dtype."""
    pairs = set()
    for i, step in enumerate(p.steps):
        ins = p.split(step)[0]
        for src, dst in step.get("inplace", []):
            u, v = p.base[src], p.base[dst]
            if u not in last or last[u] != i or writer.get(v) != i:
                continue
            if sum(p.base[a] == u for a in ins) != 1:
                continue
            if p.dtype(src) == p.dtype(dst) and p.values[src]["shape"] == p.values[dst]["shape"]:
                pairs.add((u, v))
    return pairs


def _check_overlap(p: Plan, first: dict[str, int], last: dict[str, int], pairs: set[tuple[str, str]]) -> None:
    """No two tensors in use at a common step share a byte (in-place ``pairs`` may share theirs exactly).
    A sweep over the steps: each tensor is compared with those still alive when it starts."""
    alive: list[str] = []
    for t in sorted(p.storage, key=lambda n: (first[n], n)):
        alive = [a for a in alive if last[a] >= first[t]]
        ot, st = p.values[t]["offset"], aligned(p.nbytes[t])
        for a in alive:
            oa, sa = p.values[a]["offset"], aligned(p.nbytes[a])
            if ot >= oa + sa or oa >= ot + st:
                continue
            same = ot == oa and p.nbytes[t] == p.nbytes[a]
            if same and ((a, t) in pairs or (t, a) in pairs):
                continue
            fail(p, f"values {show(a)} (steps {first[a]}..{last[a]}, bytes {oa}..{oa + sa}) and {show(t)} "
                    f"(steps {first[t]}..{last[t]}, bytes {ot}..{ot + st}) are in use at the same step and share "
                    "arena bytes")
        alive.append(t)

