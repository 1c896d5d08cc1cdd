"""Validate a whole execution plan at load, before any library is loaded or any kernel runs.

A plan (``plan.json``; the format is in ``edgeopt/lower/build.py``) tells the runtime where every tensor lives and
which kernel writes which bytes. Its sha256 sits in the same zip, so anyone can rewrite it; ``check_plan`` refuses
every plan that could make a kernel touch memory it must not, or read memory nothing wrote, with one
``ArtifactError`` naming the value or step. Whatever the plan's shape (lists for dicts, bools for ints, huge ints,
deep nesting), it raises nothing else. What it proves:

* **schema**: every field present with the right JSON type; kinds and dtypes known; shapes are lists of
  non-negative ints with a bounded element count (``plan_schema``);
* **bytes**: every input and buffer lies inside the arena at a 64-byte-aligned offset (counted with its
  64-byte-rounded size, as the planner does); the arena is no larger than its tensors need: it ends at most
  ``ARENA_SLACK`` bytes after the last of them, and is no larger than all of them side by side, each rounded up to
  ``MAX_TARGET_ALIGN`` (what the planner's arena never exceeds, whatever it shares: so no plan can make the
  runtime allocate more than its tensors' own bytes); each view is a reshape of its source (same dtype and byte
  size) in a chain without cycles; each weight matches its array;
* **steps**: every argument names a value; ``num_outputs`` fits the arguments; steps that run the same kernel
  pass the same argument types; a kernel writes only buffers and states (never a weight or an input, not even
  through a view), each exactly once, a buffer before any step reads it (a state, the runtime's own storage that
  outlives the call, holds the last call's values until then); every output is written (or is an input, a weight
  or a view of one), so a plan with no steps may only return those;
* **lifetimes**: each tensor's declared ``live`` range covers every step that writes or reads it, and no two
  tensors in use at the same step share arena bytes, except a step's declared in-place pair (``inplace``:
  the kernel writes its output over an input that dies there, read through that one argument only) — the
  planner's own guarantee (``edgeopt.memory``), re-derived here from the steps themselves.

Every check takes O(n log n) time in the plan's size (a sweep over the steps with the live tensors ordered by
offset, not a comparison of every pair), so a crafted plan of ``plan_schema``'s largest size is checked in seconds.

It imports only the runtime's own modules: the device runs it without the compiler.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter

from .plan_schema import ALIGN, Plan, check_schema, fail, show

__all__ = ["ALIGN", "check_plan"]

#: the arena may exceed what its tensors need by this much (a target may round sizes up to 256 bytes)
ARENA_SLACK = 256
#: the largest alignment a target's memory plan uses (``buffer_alignment``: Vulkan/WebGPU's 256); the planner rounds
#: every tensor up to it and places each at most after all the others, so its arena is at most their sum
MAX_TARGET_ALIGN = 256


def aligned(nbytes: int, align: int = ALIGN) -> int:
    """The bytes the planner reserves for a tensor: its size rounded up to ``align``, at least ``align``."""
    return max(align, -(-nbytes // align) * align)


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
    need = unshared = 0
    for name in p.storage:
        off, size = p.values[name]["offset"], aligned(p.nbytes[name])
        if off % ALIGN:
            fail(p, f"value {show(name)}: offset {off} is not a multiple of {ALIGN}")
        if off + size > p.arena_bytes:
            fail(p, f"value {show(name)}: bytes [{off}, {off + size}) lie outside the arena of {p.arena_bytes} bytes")
        need = max(need, off + size)
        unshared += aligned(p.nbytes[name], MAX_TARGET_ALIGN)
    if p.arena_bytes > need + ARENA_SLACK:
        fail(p, f"arena_bytes {p.arena_bytes} is more than its tensors need ({need} bytes)")
    if p.arena_bytes > unshared:
        fail(p, f"arena_bytes {p.arena_bytes} is more than its tensors need: more than all {len(p.storage)} of them "
                f"side by side, each rounded up to {MAX_TARGET_ALIGN} bytes ({unshared} bytes)")


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
            if kind not in ("buffer", "state"):
                via = f"a view of {show(b)}, " if b != o else ""
                fail(p, f"{where} writes {show(o)}, {via}of kind {kind}: kernels may write buffers and states only")
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
        if not step.get("inplace"):
            continue
        reads = Counter(p.base[a] for a in p.split(step)[0])  # storage -> arguments of the step that read it
        for src, dst in step["inplace"]:
            u, v = p.base[src], p.base[dst]
            if u not in last or last[u] != i or writer.get(v) != i:
                continue
            if reads[u] != 1:
                continue
            if p.dtype(src) == p.dtype(dst) and p.values[src]["shape"] == p.values[dst]["shape"]:
                pairs.add((u, v))
    return pairs


def _check_overlap(p: Plan, first: dict[str, int], last: dict[str, int], pairs: set[tuple[str, str]]) -> None:
    """No two tensors in use at a common step share a byte (in-place ``pairs`` may share theirs exactly).

    A sweep over the steps, in O(n log n): tensors start in order of (first step, name); before each starts, those
    whose last step is past are dropped. The live ones are kept by offset, in groups of the same offset; the groups'
    byte ranges are pairwise disjoint (each member of a group has the same bytes: an in-place pair), so a new tensor
    shares bytes with a live one if and only if it does with the group at the largest offset below its end."""
    off = {n: p.values[n]["offset"] for n in p.storage}
    size = {n: aligned(p.nbytes[n]) for n in p.storage}
    ending: dict[int, list[str]] = {}
    for n in p.storage:
        ending.setdefault(last[n], []).append(n)
    groups: dict[int, list[str]] = {}  # offset -> the live tensors there (two: an in-place pair's input and output)
    occupied = _OffsetSet(off.values())
    swept = 0  # the tensors whose last step is before this one are dropped
    for t in sorted(p.storage, key=lambda n: (first[n], n)):
        for step in range(swept, first[t]):
            for a in ending.get(step, ()):
                group = groups[off[a]]
                group.remove(a)
                if not group:
                    del groups[off[a]]
                    occupied.discard(off[a])
        swept = max(swept, first[t])
        ot, st = off[t], size[t]
        oa = occupied.below(ot + st)
        if oa is None or oa + size[groups[oa][0]] <= ot:
            groups[ot] = [t]
            occupied.add(ot)
            continue
        for a in groups[oa]:
            same = oa == ot and p.nbytes[t] == p.nbytes[a]
            if not (same and ((a, t) in pairs or (t, a) in pairs)):
                sa = size[a]
                fail(p, f"values {show(a)} (steps {first[a]}..{last[a]}, bytes {oa}..{oa + sa}) and {show(t)} "
                        f"(steps {first[t]}..{last[t]}, bytes {ot}..{ot + st}) are in use at the same step and share "
                        "arena bytes")
        groups[ot].append(t)  # an in-place pair: the same bytes as every tensor of the group


class _OffsetSet:
    """A set of offsets drawn from a fixed universe, with the largest member below a bound: a Fenwick tree of
    counts over the universe's sorted keys; every operation is O(log n)."""

    def __init__(self, universe):
        self.keys = sorted(set(universe))
        self.rank = {k: i + 1 for i, k in enumerate(self.keys)}  # 1-based Fenwick indices
        self.tree = [0] * (len(self.keys) + 1)
        self.top = 1 << (len(self.keys).bit_length() - 1) if self.keys else 0

    def _update(self, key: int, delta: int) -> None:
        i, tree = self.rank[key], self.tree
        while i < len(tree):
            tree[i] += delta
            i += i & -i

    def add(self, key: int) -> None:
        self._update(key, 1)

    def discard(self, key: int) -> None:
        self._update(key, -1)

    def below(self, bound: int) -> int | None:
        """The largest member smaller than ``bound``, or None."""
        i, count, tree = bisect_left(self.keys, bound), 0, self.tree
        while i:  # members among the keys below bound
            count += tree[i]
            i -= i & -i
        if not count:
            return None
        pos, step, n = 0, self.top, len(tree)  # the count-th member: after the largest pos whose prefix holds fewer
        while step:
            if pos + step < n and tree[pos + step] < count:
                pos += step
                count -= tree[pos]
            step >>= 1
        return self.keys[pos]
