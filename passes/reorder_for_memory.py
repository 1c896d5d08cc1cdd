"""reorder_for_memory: reorder independent kernels when that lowers the peak of activation memory.

The node order is the kernel order, and the memory planner packs the arena against it: with branches
(an Inception block, a U-Net skip, parallel heads before a concat) the order decides how many
branch results are alive at once. This pass list-schedules the graph greedily: of the nodes whose
inputs are ready, it runs next the one that adds the fewest live bytes (its outputs minus the inputs
whose last reader it is), ties in the current order. The new order is kept only if its peak of live
bytes is strictly lower than the current order's; otherwise nothing changes. The kernels themselves
are the same either way, so no work is added or removed; only independent kernels swap places.

Run it last: after fusion, the nodes are the kernels. Sizes are counted as the memory planner counts
them: every activation rounded up to 64 bytes, reshapes are views of their input, weights are not
activations, graph inputs are alive from the start and outputs to the end.

Requires: nothing. Guarantees: ``memory_order``.

Before (peak: a, b and c alive together with x):
    %a = conv2d(%x, %w1)      %b = conv2d(%x, %w2)      %c = conv2d(%x, %w3)
    %pa = max_pool2d(%a)      %pb = max_pool2d(%b)      %pc = max_pool2d(%c)
    %y = concat(%pa, %pb, %pc)
After (each branch pooled as soon as it is computed):
    %a = conv2d(%x, %w1)      %pa = max_pool2d(%a)      %b = conv2d(%x, %w2)
    %pb = max_pool2d(%b)      %c = conv2d(%x, %w3)      %pc = max_pool2d(%c)
    %y = concat(%pa, %pb, %pc)
"""

from __future__ import annotations

from edgeopt.ir import Graph, Node, Value
from edgeopt.ir.registry import get_op
from edgeopt.memory.liveness import aligned
from edgeopt.pipeline import Pass, register_pass


def _size(v: Value) -> int:
    return aligned(v.type.nbytes)


class _Storage:
    """Which storage every value lives in (views share their base's) and its size."""

    def __init__(self, g: Graph):
        self.base: dict[Value, Value | None] = {}
        for v in g.inputs:
            self.base[v] = v
        for n in g.nodes:
            for o in n.outputs:
                if get_op(n.op).view:
                    src = n.inputs[0]
                    self.base[o] = None if g.is_const(src) else self.base.get(src, src)
                else:
                    self.base[o] = o

    def of(self, v: Value) -> Value | None:
        return self.base.get(v)


def peak_bytes(g: Graph, order: list[Node]) -> int:
    """Most bytes alive at one step of ``order`` (the memory planner's lower bound, without in-place)."""
    st = _Storage(g)
    last: dict[Value, int] = {}
    for i, n in enumerate(order):
        for v in n.inputs:
            b = st.of(v)
            if b is not None:
                last[b] = i
    end = len(order)
    for v in g.outputs:
        b = st.of(v)
        if b is not None:
            last[b] = end
    live = sum(_size(v) for v in g.inputs)
    peak = live
    for i, n in enumerate(order):
        if not get_op(n.op).view:
            live += sum(_size(o) for o in n.outputs)
            for o in n.outputs:
                last.setdefault(o, i)
        peak = max(peak, live)
        for b in {st.of(v) for v in n.inputs} | set(n.outputs):
            if b is not None and last.get(b) == i:
                live -= _size(b)
    return peak


def greedy_order(g: Graph) -> list[Node]:
    """List scheduling: next, the ready node that adds the fewest live bytes (ties: the current order)."""
    st = _Storage(g)
    producer = {o: n for n in g.nodes for o in n.outputs}
    readers: dict[Value, set[Node]] = {}
    for n in g.nodes:
        for v in n.inputs:
            b = st.of(v)
            if b is not None:
                readers.setdefault(b, set()).add(n)
    outputs = {st.of(v) for v in g.outputs}
    position = {n: i for i, n in enumerate(g.nodes)}
    waiting = {n: len({producer[v] for v in n.inputs if v in producer}) for n in g.nodes}
    users: dict[Node, set[Node]] = {}
    for n in g.nodes:
        for v in n.inputs:
            if v in producer:
                users.setdefault(producer[v], set()).add(n)
    ready = {n for n, k in waiting.items() if k == 0}
    done: set[Node] = set()
    order = []

    def delta(n: Node) -> int:
        grow = 0 if get_op(n.op).view else sum(_size(o) for o in n.outputs)
        freed = sum(_size(b) for b in {st.of(v) for v in n.inputs} - {None}
                    if b not in outputs and readers.get(b, set()) - done == {n})
        return grow - freed

    while ready:
        n = min(ready, key=lambda m: (delta(m), position[m]))
        ready.remove(n)
        done.add(n)
        order.append(n)
        for u in users.get(n, ()):
            waiting[u] -= 1
            if waiting[u] == 0:
                ready.add(u)
    return order


@register_pass
class ReorderForMemory(Pass):
    name = "reorder_for_memory"
    guarantees = ("memory_order",)

    def run(self, g: Graph) -> dict:
        before = peak_bytes(g, g.nodes)
        order = greedy_order(g)
        after = peak_bytes(g, order)
        if after < before and order != g.nodes:
            moved = sum(a is not b for a, b in zip(order, g.nodes))
            g.nodes[:] = order
            return {"peak_before": before, "peak_after": after, "moved": moved}
        return {"peak_before": before, "peak_after": before, "moved": 0}
