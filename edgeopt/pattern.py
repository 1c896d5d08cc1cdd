"""The pattern language passes are written in: match a subgraph, rewrite it, or group it into one kernel.

Patterns describe the producer tree of a value:

    x, w = Any("x"), Const("w")
    conv = Op("conv2d", x, w, Any("b", optional=True), name="conv")
    bn = Op("batch_norm", conv, Const("mean"), Const("var"), Const("gamma"), Const("beta"))

``match(bn, value, g)`` returns a ``Match`` (``m["w"]`` is the bound Value, ``m.node("conv")`` the bound
Node) or None; ``explain(bn, value, g)`` says why it does not match. ``Op`` takes an op name, a set of
names, or ``kind=`` (registry kind), ``attrs=`` (attribute values, or predicates on them), an optional
``where=`` predicate on the node, and input patterns (none given: inputs are not looked at). Inner
``Op`` patterns only match values with exactly one reader (the rewrite may then delete them); pass
``shared=True`` to allow more. ``commutative=True`` also tries the two inputs swapped. ``Either(a, b)``
matches the first alternative that fits. ``Const(value=3.0)`` matches a constant whose every element is
3.0; ``Const(scalar=True)`` any single-element constant. Every argument is type-checked when the pattern
is built (op names against the registry), so a typo fails at once instead of matching nothing or anything.

Rewrites: ``rewrite(g, pattern, fn)`` calls ``fn(m, b)`` at every match (graph order); ``b`` is a
``Builder`` that inserts new nodes before the matched root; ``fn`` returns the replacement value (or
None to skip), which must have the matched value's shape and dtype. Dead nodes are removed afterwards.
A pattern that matches nothing in a graph but would match inside its fused kernels warns
(``PatternAfterFusionWarning``): the pass runs after the fusion passes that hid its ops.

Fusion: a ``FusionRule`` says which node anchors a kernel and which neighbours may join it;
``fuse(g, rule)`` grows groups greedily and turns each into one ``fused`` node (see ``edgeopt.ir.fused``).
A group never duplicates work (a joined producer has no reader outside the group) and never creates a
cycle (a joined consumer may read other values only if they do not depend on the group).

    EPILOGUE = FusionRule("epilogue", anchor=Op(kind="contraction"),
                          epilogue=Op(kind="elementwise", where=same_shape_as_anchor))
"""

from __future__ import annotations

import difflib
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np

from .ir import Graph, Node, Value
from .ir.fused import fuse_nodes
from .ir.registry import KINDS, all_ops, get_op


class PatternAfterFusionWarning(UserWarning):
    """A rewrite matched nothing in the graph but would have matched inside fused kernels."""


class Pattern:
    name: str | None = None
    optional: bool = False

    def _match(self, v: Value | None, ctx: _Ctx) -> bool:
        raise NotImplementedError


def _check_name(name, what: str) -> None:
    if name is not None and not isinstance(name, str):
        raise TypeError(f"{what}: name must be a string, got {name!r}" + (
            f" (for a literal, write {what}(value={name!r}))" if isinstance(name, (int, float)) else ""))


def _check_flag(value, flag: str, what: str) -> None:
    if not isinstance(value, bool):
        raise TypeError(f"{what}: {flag}= takes True or False, got {value!r}" + (
            f" (for a literal, write value={value!r})" if flag == "scalar" and isinstance(value, (int, float)) else ""))


def _check_callable(fn, what: str) -> None:
    if fn is not None and not callable(fn):
        raise TypeError(f"{what}: where= must be a function, got {fn!r}")


class Any(Pattern):
    """Any value (bound to ``name`` if given). ``optional=True`` also matches a missing trailing input."""

    def __init__(self, name: str | None = None, *, optional: bool = False,
                 where: Callable[[Value], bool] | None = None):
        _check_name(name, type(self).__name__)
        _check_flag(optional, "optional", type(self).__name__)
        _check_callable(where, type(self).__name__)
        self.name, self.optional, self.where = name, optional, where

    def _match(self, v, ctx):
        if v is None:
            return self.optional or ctx.fail(self, lambda: "the input is missing")
        if self.where is not None and not self.where(v):
            return ctx.fail(self, lambda: f"{_describe(v, ctx.g)}: where= is false")
        return ctx.bind(self, v)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})" if self.name else f"{type(self).__name__}()"


class Const(Any):
    """A constant (weight) value. ``value=``: every element equals it (a number), or the constant equals it (an
    array), within ``atol``; ``scalar=True``: a single-element constant; ``where=``: a predicate on the array."""

    def __init__(self, name: str | None = None, *, value=None, scalar: bool = False, optional: bool = False,
                 where: Callable[[np.ndarray], bool] | None = None, atol: float = 0.0):
        super().__init__(name, optional=optional)
        _check_flag(scalar, "scalar", "Const")
        _check_callable(where, "Const")
        if value is not None:
            value = np.asarray(value)
            if value.dtype.kind not in "biuf":
                raise TypeError(f"Const: value= must be a number or an array of numbers, got {value!r}")
        if not isinstance(atol, (int, float)) or atol < 0:
            raise TypeError(f"Const: atol= must be a number >= 0, got {atol!r}")
        self.scalar, self.pred, self.value, self.atol = scalar, where, value, float(atol)

    def _match(self, v, ctx):
        if v is None:
            return self.optional or ctx.fail(self, lambda: "the input is missing")
        if not ctx.g.is_const(v):
            return ctx.fail(self, lambda: f"{_describe(v, ctx.g)} is not a constant")
        if self.scalar and v.type.numel != 1:
            return ctx.fail(self, lambda: f"{_describe(v, ctx.g)} has {v.type.numel} elements, not one")
        if self.value is not None and not self._equal(ctx.g.const(v)):
            return ctx.fail(self, lambda: f"{_describe(v, ctx.g)} is not {self.value.tolist()}")
        if self.pred is not None and not bool(self.pred(ctx.g.const(v))):
            return ctx.fail(self, lambda: f"{_describe(v, ctx.g)}: where= is false")
        return ctx.bind(self, v)

    def _equal(self, array: np.ndarray) -> bool:
        if self.value.ndim and array.shape != self.value.shape:
            return False
        a, want = array.astype(np.float64), self.value.astype(np.float64)
        return array.size > 0 and bool(np.all(np.abs(a - want) <= self.atol))


def _names(x, what: str, known: Iterable[str], label: str) -> set[str] | None:
    if x is None:
        return None
    names = {x} if isinstance(x, str) else set(x) if isinstance(x, Iterable) else None
    if not names or not all(isinstance(n, str) for n in names):
        raise TypeError(f"{what}: {label} must be a name or names, got {x!r}")
    known = set(known)
    for n in sorted(names - known):
        close = difflib.get_close_matches(n, known, 3)
        raise ValueError(f"{what}: unknown {label} {n!r}" + (f"; did you mean {', '.join(close)}?" if close else ""))
    return names


class Op(Pattern):
    """A value produced by a node whose op (or kind) matches, with ``attrs`` and inputs matching ``inputs``.

    ``attrs={"axis": -1}``: the node's attribute equals the value; a function as the value is a predicate on the
    attribute (``attrs={"groups": lambda g: g > 1}``)."""

    def __init__(self, op: str | Iterable[str] | None = None, *inputs: Pattern, kind: str | Iterable[str] | None = None,
                 attrs: dict | None = None, where: Callable[[Node], bool] | None = None, name: str | None = None,
                 shared: bool = False, commutative: bool = False, optional: bool = False):
        what = f"Op({op!r})"
        self.ops = _names(op, what, all_ops(), "op")
        self.kinds = _names(kind, what, KINDS, "kind")
        for i, p in enumerate(inputs):
            if not isinstance(p, Pattern):
                raise TypeError(f"{what}: input {i} must be a pattern (Any, Const, Op, Either), got {p!r}"
                                + (f"; for a literal, write Const(value={p!r})" if isinstance(p, (int, float)) else ""))
        if attrs is not None and not isinstance(attrs, dict):
            raise TypeError(f"{what}: attrs= must be a dict, got {attrs!r}")
        for key in attrs or {}:
            for o in self.ops or ():
                if key not in get_op(o).attrs:
                    raise ValueError(f"{what}: op {o!r} has no attribute {key!r}; its attributes: "
                                     f"{sorted(get_op(o).attrs)}")
        _check_callable(where, what)
        _check_name(name, "Op")
        for flag, v in (("shared", shared), ("commutative", commutative), ("optional", optional)):
            _check_flag(v, flag, what)
        attrs = {k: want if callable(want) else _plain(want) for k, want in (attrs or {}).items()}  # as nodes hold
        self.inputs, self.attrs, self.where, self.name = list(inputs), attrs, where, name
        self.shared, self.commutative, self.optional = shared, commutative, optional

    def test(self, n: Node) -> bool:
        """Does the node itself (ignoring inputs) match? (Every node of a graph meets this: no messages built.)"""
        if n.op == "fused" or (self.ops is not None and n.op not in self.ops):
            return False
        if self.kinds is not None and get_op(n.op).kind not in self.kinds:
            return False
        if any(not _attr_matches(n.attrs.get(k), want) for k, want in self.attrs.items()):
            return False
        return self.where is None or bool(self.where(n))

    def _why_not(self, n: Node) -> str:
        """Why ``test(n)`` is false, for ``explain``."""
        if n.op == "fused":
            return "it is a fused kernel"
        if self.ops is not None and n.op not in self.ops:
            return f"its op is {n.op}, not {' or '.join(sorted(self.ops))}"
        if self.kinds is not None and get_op(n.op).kind not in self.kinds:
            return f"{n.op} is {get_op(n.op).kind}, not {' or '.join(sorted(self.kinds))}"
        for key, want in self.attrs.items():
            have = n.attrs.get(key)
            if not _attr_matches(have, want):
                return f"attribute {key} is {have!r}" + ("" if callable(want) else f", not {want!r}")
        return "where= is false"

    def _match(self, v, ctx):
        if v is None:
            return self.optional or ctx.fail(self, lambda: "the input is missing")
        n = v.producer
        if n is None:
            return ctx.fail(self, lambda: f"{_describe(v, ctx.g)} is not produced by a node")
        if not self.test(n):
            return ctx.fail(self, lambda: f"{_describe(v, ctx.g)}: {self._why_not(n)}")
        if ctx.depth > 0 and not self.shared and ctx.readers(v) != 1:
            return ctx.fail(self, lambda: f"{_describe(v, ctx.g)} has {ctx.readers(v)} readers (an inner Op needs "
                                          "one, or shared=True)")
        if self.name is not None and not ctx.bind(self, v):
            return False
        if not self.inputs:
            return True
        orders = [n.inputs]
        if self.commutative and len(n.inputs) == 2:
            orders.append(n.inputs[::-1])
        for ins in orders:
            saved = dict(ctx.bound)
            if self._match_inputs(v, ins, ctx):
                return True
            ctx.bound = saved
        return False

    def _match_inputs(self, v, ins, ctx):
        if len(ins) > len(self.inputs):
            return ctx.fail(self, lambda: f"{_describe(v, ctx.g)} has {len(ins)} inputs, the pattern "
                                          f"{len(self.inputs)}")
        ctx.depth += 1
        ctx.path.append(v)
        try:
            return all(p._match(ins[i] if i < len(ins) else None, ctx) for i, p in enumerate(self.inputs))
        finally:
            ctx.depth -= 1
            ctx.path.pop()

    def __repr__(self) -> str:
        head = "|".join(sorted(self.ops)) if self.ops else f"kind={'|'.join(sorted(self.kinds or ['*']))}"
        return f"Op({head})"


class Either(Pattern):
    """The first of ``patterns`` that matches (e.g. an op with or without a scale before it)."""

    def __init__(self, *patterns: Pattern):
        if len(patterns) < 2 or not all(isinstance(p, Pattern) for p in patterns):
            raise TypeError(f"Either takes two or more patterns, got {patterns!r}")
        self.patterns = patterns

    def _match(self, v, ctx):
        for p in self.patterns:
            saved = dict(ctx.bound)
            if p._match(v, ctx):
                return True
            ctx.bound = saved
        return False

    def __repr__(self) -> str:
        return f"Either({', '.join(map(repr, self.patterns))})"


def _attr_matches(have, want) -> bool:
    return bool(want(have)) if callable(want) else have == want


def _plain(v):
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    return v.item() if isinstance(v, np.generic) else v


def _describe(v: Value, g: Graph) -> str:
    if g.is_const(v):
        a = g.const(v)
        return f"%{v.name} (constant {a.reshape(-1)[0].item()!r})" if a.size == 1 else f"%{v.name} (constant)"
    return f"%{v.name} ({v.producer.op})" if v.producer is not None else f"%{v.name} (graph input)"


@dataclass
class _Ctx:
    g: Graph
    users: dict
    bound: dict = field(default_factory=dict)
    depth: int = 0
    path: list = field(default_factory=list)  # the values from the root to the one being matched
    failures: list | None = None  # collected by ``explain``

    def readers(self, v: Value) -> int:
        return len(self.users.get(v, ())) + sum(o is v for o in self.g.outputs)

    def fail(self, p: Pattern, reason: Callable[[], str]) -> bool:
        """False; ``explain`` records why (the message is built only then: matching runs at every node)."""
        if self.failures is not None:
            self.failures.append(" > ".join([*(_describe(v, self.g) for v in self.path), f"{p!r}: {reason()}"]))
        return False

    def bind(self, p: Pattern, v) -> bool:
        name = p.name
        if name is None:
            return True
        if name in self.bound and self.bound[name] is not v:
            return self.fail(p, lambda: f"{name!r} is already %{self.bound[name].name}, here it would be %{v.name}")
        self.bound[name] = v
        return True


class Match(dict):
    """name -> bound Value; ``node(name)`` is the node that produced it, ``const(name)`` its array."""

    def __init__(self, bound: dict, g: Graph):
        super().__init__(bound)
        self.g = g

    def node(self, name: str) -> Node:
        return self[name].producer

    def const(self, name: str) -> np.ndarray:
        return self.g.const(self[name])

    def get_const(self, name: str) -> np.ndarray | None:
        return self.const(name) if self.get(name) is not None else None


def match(pattern: Pattern, v: Value, g: Graph, users: dict | None = None) -> Match | None:
    ctx = _Ctx(g, users if users is not None else g.users())
    return Match(ctx.bound, g) if pattern._match(v, ctx) else None


def explain(pattern: Pattern, v: Value, g: Graph) -> str:
    """Why ``pattern`` does not match at ``v`` (one line per failed check, the path from the root first), or
    "matches". For debugging a pass: ``print(explain(SWISH, node.outputs[0], g))``."""
    ctx = _Ctx(g, g.users(), failures=[])
    if pattern._match(v, ctx):
        return "matches"
    return "\n".join(dict.fromkeys(ctx.failures)) or "does not match"


class Builder:
    """Adds nodes and constants to ``g`` just before node ``at`` (so they precede the matched root)."""

    def __init__(self, g: Graph, at: Node):
        self.g, self.at = g, at

    def add(self, op: str, inputs, attrs=None, *, name: str | None = None) -> Value:
        return self.g.add(op, inputs, attrs, source=self.at.source, name=name, index=self.g.nodes.index(self.at))

    def const(self, array, name: str = "c") -> Value:
        return self.g.add_const(array, name)


def rewrite(g: Graph, pattern: Pattern, fn: Callable[[Match, Builder], Value | None]) -> int:
    """Apply ``fn`` at every match of ``pattern`` (rooted at node outputs, in graph order)."""
    count = 0
    for n in list(g.nodes):
        if n not in g.nodes or len(n.outputs) != 1:
            continue
        m = match(pattern, n.outputs[0], g)
        if m is None:
            continue
        new = fn(m, Builder(g, n))
        if new is None or new is n.outputs[0]:
            continue
        old = n.outputs[0]
        if not isinstance(new, Value) or (new.type.shape, new.type.dtype) != (old.type.shape, old.type.dtype):
            got = new.type if isinstance(new, Value) else repr(new)
            raise TypeError(f"rewrite of {n!r} by {pattern!r}: the replacement is {got}, but the matched value is "
                            f"{old.type}; a rewrite must keep the shape and dtype")
        g.replace_uses(old, new)
        count += 1
    if count:
        remove_dead(g)
    elif _matches_inside_fused(g, pattern):
        warnings.warn(f"{pattern!r} matched nothing in graph {g.name!r} but matches inside its fused kernels: the "
                      "pass runs after the fusion passes that grouped those ops; insert it before them (e.g. "
                      "Pipeline.insert(p, before=\"fuse_horizontal\"))", PatternAfterFusionWarning, stacklevel=2)
    return count


def _matches_inside_fused(g: Graph, pattern: Pattern) -> bool:
    for n in g.nodes:
        if n.body is None:
            continue
        users = n.body.users()
        if any(len(b.outputs) == 1 and match(pattern, b.outputs[0], n.body, users) for b in n.body.nodes):
            return True
    return False


def remove_dead(g: Graph) -> int:
    """Remove nodes no output needs, then unused constants; returns the number of nodes removed."""
    removed = g.remove_dead_nodes()
    g.remove_unused_constants()
    return removed


# ---- fusion ------------------------------------------------------------------------------------------------


@dataclass
class FusionRule:
    """Which node anchors a kernel, which producers (``prologue``) and consumers (``epilogue``) may join.

    ``epilogue`` nodes join one at a time along a chain: the group's last value must have exactly one
    reader, and that reader must match (its other inputs may come from anywhere that does not depend on
    the group). ``prologue`` nodes join when every reader of their output is already in the group.
    ``where(group, candidate)`` can veto any join (e.g. a size limit).
    """

    name: str
    anchor: Op
    epilogue: Op | None = None
    prologue: Op | None = None
    where: Callable[[list[Node], Node], bool] | None = None
    min_size: int = 2


def fuse(g: Graph, rule: FusionRule) -> list[Node]:
    """Group nodes by ``rule`` and replace every group of ``min_size``+ nodes by a fused node."""
    groups = plan_groups(g, rule)
    fused = []
    for group, anchor in groups:
        label = "_".join(dict.fromkeys(n.op for n in group))
        fused.append(fuse_nodes(g, group, label, anchor))
    if fused:
        g.remove_unused_constants()  # scalar constants now live in the bodies
    return fused


def plan_groups(g: Graph, rule: FusionRule) -> list[tuple[list[Node], Node]]:
    users = g.users()
    outputs = set(g.outputs)
    index = {n: i for i, n in enumerate(g.nodes)}
    taken: set[Node] = set()
    groups = []
    for n in g.nodes:
        if n in taken or not rule.anchor.test(n):
            continue
        group = [n]
        members = {n}
        changed = True
        while changed:
            changed = _grow_prologue(group, members, rule, users, outputs, taken, index)
            changed |= _grow_epilogue(group, members, rule, users, outputs, taken, index)
        if len(group) >= rule.min_size:
            taken |= members
            groups.append((sorted(group, key=index.__getitem__), n))
    return groups


def _allowed(rule, group, cand) -> bool:
    return rule.where is None or bool(rule.where(group, cand))


def _grow_prologue(group, members, rule, users, outputs, taken, index) -> bool:
    if rule.prologue is None:
        return False
    grew = False
    for n in list(group):
        for v in n.inputs:
            p = v.producer
            if (p is None or p in members or p in taken or not rule.prologue.test(p) or len(p.outputs) != 1
                    or v in outputs or any(u not in members for u in users.get(v, ()))
                    or not _allowed(rule, group, p)):
                continue
            lo = min(index[m] for m in members)
            if any(_depends_on(u, members, lo, index) for u in p.inputs):
                continue
            group.append(p)
            members.add(p)
            grew = True
    return grew


def _grow_epilogue(group, members, rule, users, outputs, taken, index) -> bool:
    if rule.epilogue is None:
        return False
    grew = False
    while True:
        tail = max(group, key=index.__getitem__)
        if len(tail.outputs) != 1:
            return grew
        v = tail.outputs[0]
        readers = set(users.get(v, []))
        if v in outputs or len(readers) != 1:
            return grew
        c = readers.pop()
        if c in taken or c in members or not rule.epilogue.test(c) or not _allowed(rule, group, c):
            return grew
        lo = min(index[m] for m in members)
        if any(_depends_on(u, members, lo, index) for u in c.inputs if u.producer not in members):
            return grew
        group.append(c)
        members.add(c)
        grew = True


def _depends_on(v: Value, members: set, lo: int, index: dict) -> bool:
    """Is ``v`` computed (transitively) from a member? Nodes before index ``lo`` cannot be."""
    stack, seen = [v], set()
    while stack:
        p = stack.pop().producer
        if p is None or p in seen or index.get(p, -1) < lo:
            continue
        if p in members:
            return True
        seen.add(p)
        stack.extend(p.inputs)
    return False
