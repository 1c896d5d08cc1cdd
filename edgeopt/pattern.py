"""The pattern language passes are written in: match a subgraph, rewrite it, or group it into one kernel.

Patterns describe the producer tree of a value:

    x, w = Any("x"), Const("w")
    conv = Op("conv2d", x, w, Any("b", optional=True), name="conv")
    bn = Op("batch_norm", conv, Const("mean"), Const("var"), Const("gamma"), Const("beta"))

``match(bn, value, g)`` returns a ``Match`` (``m["w"]`` is the bound Value, ``m.node("conv")`` the bound
Node) or None. ``Op`` takes an op name, a set of names, or ``kind=`` (registry kind), an optional
``where=`` predicate on the node, and input patterns (none given: inputs are not looked at). Inner
``Op`` patterns only match values with exactly one reader (the rewrite may then delete them); pass
``shared=True`` to allow more. ``commutative=True`` also tries the two inputs swapped. ``Either(a, b)``
matches the first alternative that fits.

Rewrites: ``rewrite(g, pattern, fn)`` calls ``fn(m, b)`` at every match (graph order); ``b`` is a
``Builder`` that inserts new nodes before the matched root; ``fn`` returns the replacement value (or
None to skip). Dead nodes are removed afterwards. Returns the number of rewrites.

Fusion: a ``FusionRule`` says which node anchors a kernel and which neighbours may join it;
``fuse(g, rule)`` grows groups greedily and turns each into one ``fused`` node (see ``edgeopt.ir.fused``).
A group never duplicates work (a joined producer has no reader outside the group) and never creates a
cycle (a joined consumer may read other values only if they do not depend on the group).

    EPILOGUE = FusionRule("epilogue", anchor=Op(kind="contraction"),
                          epilogue=Op(kind="elementwise", where=same_shape_as_anchor))
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np

from .ir import Graph, Node, Value
from .ir.fused import fuse_nodes
from .ir.registry import get_op


class Pattern:
    name: str | None = None
    optional: bool = False

    def _match(self, v: Value | None, ctx: _Ctx) -> bool:
        raise NotImplementedError


class Any(Pattern):
    """Any value (bound to ``name`` if given). ``optional=True`` also matches a missing trailing input."""

    def __init__(self, name: str | None = None, *, optional: bool = False,
                 where: Callable[[Value], bool] | None = None):
        self.name, self.optional, self.where = name, optional, where

    def _match(self, v, ctx):
        if v is None:
            return self.optional
        return (self.where is None or self.where(v)) and ctx.bind(self.name, v)


class Const(Any):
    """A constant (weight) value; ``scalar=True``: a single-element constant."""

    def __init__(self, name: str | None = None, *, scalar: bool = False, optional: bool = False,
                 where: Callable[[np.ndarray], bool] | None = None):
        super().__init__(name, optional=optional)
        self.scalar, self.pred = scalar, where

    def _match(self, v, ctx):
        if v is None:
            return self.optional
        if not ctx.g.is_const(v) or (self.scalar and v.type.numel != 1):
            return False
        return (self.pred is None or bool(self.pred(ctx.g.const(v)))) and ctx.bind(self.name, v)


class Op(Pattern):
    """A value produced by a node whose op (or kind) matches, with inputs matching ``inputs``."""

    def __init__(self, op: str | Iterable[str] | None = None, *inputs: Pattern, kind: str | Iterable[str] | None = None,
                 where: Callable[[Node], bool] | None = None, name: str | None = None, shared: bool = False,
                 commutative: bool = False, optional: bool = False):
        self.ops = {op} if isinstance(op, str) else (set(op) if op is not None else None)
        self.kinds = {kind} if isinstance(kind, str) else (set(kind) if kind is not None else None)
        self.inputs, self.where, self.name = list(inputs), where, name
        self.shared, self.commutative, self.optional = shared, commutative, optional

    def test(self, n: Node) -> bool:
        """Does the node itself (ignoring inputs) match?"""
        if n.op == "fused":
            return False
        if self.ops is not None and n.op not in self.ops:
            return False
        if self.kinds is not None and get_op(n.op).kind not in self.kinds:
            return False
        return self.where is None or bool(self.where(n))

    def _match(self, v, ctx):
        if v is None:
            return self.optional
        n = v.producer
        if n is None or not self.test(n):
            return False
        if ctx.depth > 0 and not self.shared and ctx.readers(v) != 1:
            return False
        if self.name is not None and not ctx.bind(self.name, v):
            return False
        if not self.inputs:
            return True
        orders = [n.inputs]
        if self.commutative and len(n.inputs) == 2:
            orders.append(n.inputs[::-1])
        for ins in orders:
            saved = dict(ctx.bound)
            if self._match_inputs(ins, ctx):
                return True
            ctx.bound = saved
        return False

    def _match_inputs(self, ins, ctx):
        if len(ins) > len(self.inputs):
            return False
        ctx.depth += 1
        try:
            return all(p._match(ins[i] if i < len(ins) else None, ctx) for i, p in enumerate(self.inputs))
        finally:
            ctx.depth -= 1


class Either(Pattern):
    """The first of ``patterns`` that matches (e.g. an op with or without a scale before it)."""

    def __init__(self, *patterns: Pattern):
        self.patterns = patterns

    def _match(self, v, ctx):
        for p in self.patterns:
            saved = dict(ctx.bound)
            if p._match(v, ctx):
                return True
            ctx.bound = saved
        return False


@dataclass
class _Ctx:
    g: Graph
    users: dict
    bound: dict = field(default_factory=dict)
    depth: int = 0

    def readers(self, v: Value) -> int:
        return len(self.users.get(v, ())) + sum(o is v for o in self.g.outputs)

    def bind(self, name, v) -> bool:
        if name is None:
            return True
        if name in self.bound and self.bound[name] is not v:
            return False
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
        g.replace_uses(n.outputs[0], new)
        count += 1
    if count:
        remove_dead(g)
    return count


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
