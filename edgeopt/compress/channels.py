"""Which channels of a graph must be removed together: the dependency analysis behind structured pruning.

Removing filter ``i`` of a conv is only consistent if everything that reads that channel loses it too: the
batch norm after it, the next conv's input slice ``[:, i]``, the other branch of a residual ``add`` (and the conv
that made it), a depthwise conv's filter ``i`` and its output channel, the linear columns a flatten maps it to.
``analyze(graph)`` follows every value's **channel axis** through the graph and joins the elements that are one
channel into **units** (a union-find over ``(value, index)`` and ``(weight, axis, index)``):

- convs (dense and depthwise), linears and constant matmul operands **make** channels: their output axis
  is one unit per filter / row;
- pointwise ops, batch norm, pools, transposes, reductions and softmax over other axes carry them through;
- a residual ``add`` or ``mul`` joins its inputs' channels; a ``concat`` on the channel axis offsets them;
- a reshape that splits the channel axis joins whole blocks (``[.., 384] -> [.., 12, 32]``: one unit per
  attention head); a flatten joins each channel with its ``H*W`` features;
- a matmul / attention carries channels on its batch axes (heads) and its output columns.

A unit is **blocked** (never removed) if it reaches a graph input or output, a normalization over the channel
axis (layer norm), a slice of it, or any op this analysis does not know: what it cannot prove safe, it keeps.

``prune_graph(graph, keep)`` then rebuilds the graph with only the kept channels: every weight sliced, every
shape re-inferred, depthwise ``groups`` and reshape targets updated. The result is a smaller graph, not a mask.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..ir import Graph, Node, Value
from ..ir.registry import get_op

#: ops that carry every axis through unchanged (their output element i reads element i of each input)
_SAME_SHAPE = {"copy", "cast"}
#: pools and resizes: NCHW, the channel axis (1) passes, the spatial axes change
_SPATIAL = {"max_pool2d", "avg_pool2d", "adaptive_avg_pool2d", "resize2d"}
_REDUCE = {"sum", "mean", "max", "min", "prod"}


@dataclass
class Unit:
    """One channel: what must go together. ``weights`` are ``(const name, axis, index)``; ``makers`` the subset
    that defines it (a conv filter, a linear row: what an importance score reads)."""

    weights: list[tuple[str, int, int]] = field(default_factory=list)
    makers: list[tuple[str, int, int]] = field(default_factory=list)
    values: list[tuple[str, int]] = field(default_factory=list)
    blocked: bool = False

    def space(self) -> tuple:
        """The tensors this unit touches: units with the same space are alternatives (channels of one layer or
        of one residual stream), among which pruning keeps the most important."""
        return tuple(sorted({(w, a) for w, a, _ in self.weights} | {(v, -1) for v, _ in self.values}))


@dataclass
class Channels:
    """``analyze``'s result: the units, and each value's channel axis (absent: no channel tracked)."""

    units: list[Unit]
    axis: dict[str, int]
    depthwise: set[str] = field(default_factory=set)  # outputs of the depthwise convs (groups = channels)

    def spaces(self) -> list[list[Unit]]:
        """Prunable units (not blocked, made by some weight) grouped by space, each space in the graph's order."""
        out: dict[tuple, list[Unit]] = {}
        for u in self.units:
            if not u.blocked and u.makers:
                out.setdefault(u.space(), []).append(u)
        return list(out.values())


class _Analysis:
    def __init__(self, g: Graph):
        self.g = g
        self.parent: dict[tuple, tuple] = {}
        self.blocked: set[tuple] = set()
        self.makers: set[tuple] = set()
        self.axis: dict[Value, int] = {}  # value -> its tracked channel axis

    # -- union-find --------------------------------------------------------------------------------
    def find(self, k: tuple) -> tuple:
        self.parent.setdefault(k, k)
        root = k
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[k] != root:
            self.parent[k], k = root, self.parent[k]
        return root

    def union(self, a: tuple, b: tuple) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[rb] = ra

    # -- channels ----------------------------------------------------------------------------------
    def track(self, v: Value, axis: int) -> None:
        self.axis[v] = axis
        for i in range(v.type.shape[axis]):
            self.find(("v", v.name, i))

    def block(self, v: Value) -> None:
        if v in self.axis:
            self.blocked.update(("v", v.name, i) for i in range(v.type.shape[self.axis[v]]))

    def link(self, a: Value, b: Value) -> None:
        """Channel i of ``a`` is channel i of ``b`` (both tracked, same size)."""
        for i in range(a.type.shape[self.axis[a]]):
            self.union(("v", a.name, i), ("v", b.name, i))

    def link_weight(self, v: Value, w: Value, waxis: int, maker: bool = False) -> bool:
        """Channel i of ``v`` is slice i of weight ``w`` along ``waxis``; False (and ``v`` blocked) if ``w`` is
        not a constant."""
        if not self.g.is_const(w):
            self.block(v)
            return False
        self.linked.add((id(self.node), w.name))
        for i in range(v.type.shape[self.axis[v]]):
            key = ("c", w.name, waxis, i)
            self.union(("v", v.name, i), key)
            if maker:
                self.makers.add(key)
        return True

    def new_channels(self, out: Value, axis: int, w: Value, waxis: int, bias: Value | None) -> None:
        """``out``'s channel axis is made by weight ``w`` (a conv's filters, a linear's rows)."""
        self.track(out, axis)
        if not self.link_weight(out, w, waxis, maker=True):
            return
        if bias is not None:
            self.link_weight(out, bias, 0)

    # -- ops ----------------------------------------------------------------------------------------
    def run(self) -> Channels:
        self.linked: set[tuple[int, str]] = set()  # (node, weight) pairs a rule sliced with the channels
        self.depthwise: set[int] = set()  # the convs whose groups follow their channels
        for n in self.g.nodes:
            self.node = n
            self.a = get_op(n.op).normalize_attrs(n.attrs)  # the op's attributes, defaults filled in
            rule = getattr(self, "_" + n.op, None)
            if rule is None:
                rule = self._pointwise if get_op(n.op).pointwise else self._unknown
            rule(n)
        for v in self.g.live_outputs():
            self.block(v)
        # a weight that some reader uses without slicing it with the channels (a gather, an op with no rule)
        # cannot lose any of its slices
        unsliced = {v.name for n in self.g.nodes for v in n.inputs
                    if self.g.is_const(v) and (id(n), v.name) not in self.linked}
        for k in list(self.parent):
            if k[0] == "c" and k[1] in unsliced:
                self.blocked.add(k)
        return self._units()

    def tracked(self, n: Node) -> list[Value]:
        return [v for v in n.inputs if v in self.axis]

    def _unknown(self, n: Node) -> None:
        for v in self.tracked(n):
            self.block(v)

    def _pointwise(self, n: Node) -> None:
        out = n.outputs[0]
        rank = out.type.rank
        axes = {rank - v.type.rank + self.axis[v] for v in self.tracked(n)}
        if len(axes) != 1 or len(n.outputs) != 1:
            return self._unknown(n)
        axis = axes.pop()
        size = out.type.shape[axis]
        self.track(out, axis)
        for v in n.inputs:
            vaxis = axis - (rank - v.type.rank)
            if vaxis < 0 or v.type.shape[vaxis] == 1 and size != 1:
                continue  # broadcast along the channels: nothing to slice
            if v in self.axis:
                self.link(out, v)
            elif not self._link_const_operand(out, v, vaxis):
                self.block(out)
                for t in self.tracked(n):
                    self.block(t)

    def _link_const_operand(self, out: Value, v: Value, vaxis: int) -> bool:
        """A constant operand with one entry per channel (a bias, a scale) is sliced with them."""
        return self.g.is_const(v) and self.link_weight(out, v, vaxis)

    def _batch_norm(self, n: Node) -> None:
        x = n.inputs[0]
        if self.axis.get(x) != 1:
            return self._unknown(n)
        out = n.outputs[0]
        self.track(out, 1)
        self.link(out, x)
        for w in n.inputs[1:]:
            if not self.link_weight(out, w, 0):
                self.block(x)

    def _conv2d(self, n: Node) -> None:
        x, w = n.inputs[:2]
        b = n.inputs[2] if len(n.inputs) > 2 else None
        a = self.a
        out = n.outputs[0]
        if a["layout"] != "NCHW" or a["weight_layout"] != "OIHW" or not self.g.is_const(w):
            return self._unknown(n)
        cin, cout = x.type.shape[1], out.type.shape[1]
        if a["groups"] == 1:
            if self.axis.get(x) == 1:
                self.link_weight(x, w, 1)
            elif x in self.axis:
                self.block(x)
            self.new_channels(out, 1, w, 0, b)
        elif a["groups"] == cin == cout and w.type.shape[1] == 1:  # depthwise: channel i in, channel i out
            self.depthwise.add(out.name)
            self.new_channels(out, 1, w, 0, b)
            if self.axis.get(x) == 1:
                self.link(out, x)
            else:
                self.block(x)
                self.block(out)
        else:  # grouped: its groups would need pruning as blocks
            self._unknown(n)

    def _linear(self, n: Node) -> None:
        x, w = n.inputs[:2]
        b = n.inputs[2] if len(n.inputs) > 2 else None
        out = n.outputs[0]
        layout = self.a["weight_layout"]
        if layout not in ("oi", "io") or not self.g.is_const(w):
            return self._unknown(n)
        in_axis, out_axis = (1, 0) if layout == "oi" else (0, 1)
        if self.axis.get(x) == x.type.rank - 1:
            self.link_weight(x, w, in_axis)
        elif x in self.axis:  # channels on another axis pass through a linear over the last one
            self.track(out, self.axis[x])
            self.link(out, x)
            return
        self.new_channels(out, out.type.rank - 1, w, out_axis, b)

    def _matmul(self, n: Node) -> None:
        a, b = n.inputs
        out = n.outputs[0]
        if self.g.is_const(b) and b.type.rank == 2:  # a weight [in, out]
            if self.axis.get(a) == a.type.rank - 1:
                self.link_weight(a, b, 0)
            elif a in self.axis:
                self.track(out, self.axis[a])
                self.link(out, a)
                return
            self.track(out, out.type.rank - 1)
            self.link_weight(out, b, 1, maker=True)
            return
        ra, rb, ro = a.type.rank, b.type.rank, out.type.rank
        ta, tb = self.axis.get(a), self.axis.get(b)
        if ta is not None and tb is not None and ta == ra - 1 and tb == rb - 2:  # the contraction: both lose it
            self.link(a, b)
            return
        got = False
        for v, t, rank, passes in ((a, ta, ra, {ra - 2: ro - 2}), (b, tb, rb, {rb - 1: ro - 1})):
            if t is None:
                continue
            oaxis = passes.get(t, ro - rank + t if t < rank - 2 else None)
            if oaxis is None or got and self.axis.get(out) != oaxis:
                self.block(v)
                continue
            if not got:
                self.track(out, oaxis)
                got = True
            self.link(out, v)
        if got and self.axis[out] < ro - 2:  # a batch axis (heads): the other operand must carry it too
            for v in (a, b):
                vaxis = self.axis[out] - (ro - v.type.rank)
                if self.axis.get(v) != vaxis and vaxis >= 0 and v.type.shape[vaxis] != 1:
                    self.block(out)  # (an operand tracked on another axis was blocked, not linked)

    def _attention(self, n: Node) -> None:
        q, k, v = n.inputs[:3]
        out = n.outputs[0]
        ro = out.type.rank
        axes = {}
        for x in n.inputs:
            if x in self.axis:
                axes[x] = ro - x.type.rank + self.axis[x]
        batch = {o for o in axes.values() if o < ro - 2}
        if axes.get(v) == ro - 1 and len(axes) == 1:  # value columns: the output's columns
            self.track(out, ro - 1)
            self.link(out, v)
            return
        if len(batch) != 1 or any(o >= ro - 2 for o in axes.values()):
            return self._unknown(n)
        axis = batch.pop()
        self.track(out, axis)
        for x in n.inputs:
            xaxis = axis - (ro - x.type.rank)
            if x in self.axis:
                self.link(out, x)
            elif xaxis >= 0 and x.type.shape[xaxis] != 1:
                self.block(out)

    def _layer_norm(self, n: Node) -> None:
        x = n.inputs[0]
        if x in self.axis and self.axis[x] < x.type.rank - self.a["normalized_ndim"]:
            self._carry(n, self.axis[x])
        else:
            self._unknown(n)

    def _carry(self, n: Node, out_axis: int) -> None:
        x, out = n.inputs[0], n.outputs[0]
        self.track(out, out_axis)
        self.link(out, x)

    def _same(self, n: Node) -> None:
        x = n.inputs[0]
        if x in self.axis:
            self._carry(n, self.axis[x])

    _copy = _cast = _same

    def _spatial(self, n: Node) -> None:
        x = n.inputs[0]
        if self.axis.get(x) == 1 and self.a.get("layout", "NCHW") == "NCHW":
            self._carry(n, 1)
        else:
            self._unknown(n)

    _max_pool2d = _avg_pool2d = _adaptive_avg_pool2d = _resize2d = _spatial

    def _reduce(self, n: Node) -> None:
        x = n.inputs[0]
        if x not in self.axis:
            return
        t = self.axis[x]
        axes = self.a["axes"]
        axes = list(range(x.type.rank)) if axes is None else [a % x.type.rank for a in axes]
        if t in axes:
            return self._unknown(n)
        self._carry(n, t if self.a["keepdims"] else t - sum(a < t for a in axes))

    _sum = _mean = _max = _min = _prod = _reduce

    def _softmax(self, n: Node) -> None:
        x = n.inputs[0]
        if x in self.axis and self.axis[x] != self.a["axis"] % x.type.rank:
            self._carry(n, self.axis[x])
        else:
            self._unknown(n)

    _log_softmax = _softmax

    def _pad(self, n: Node) -> None:
        x = n.inputs[0]
        if x in self.axis and not any(self.a["pads"][2 * self.axis[x]:2 * self.axis[x] + 2]):
            self._carry(n, self.axis[x])
        else:
            self._unknown(n)

    def _transpose(self, n: Node) -> None:
        x = n.inputs[0]
        if x in self.axis:
            self._carry(n, list(self.a["perm"]).index(self.axis[x]))

    def _broadcast_to(self, n: Node) -> None:
        x, out = n.inputs[0], n.outputs[0]
        if x in self.axis:
            t = out.type.rank - x.type.rank + self.axis[x]
            if out.type.shape[t] == x.type.shape[self.axis[x]]:
                return self._carry(n, t)
        self._unknown(n)

    def _concat(self, n: Node) -> None:
        out = n.outputs[0]
        axis = self.a["axis"] % out.type.rank
        tracked = self.tracked(n)
        if not tracked:
            return
        if any(self.axis[v] != self.axis[tracked[0]] for v in tracked):
            return self._unknown(n)
        t = self.axis[tracked[0]]
        self.track(out, t)
        offset = 0
        for v in n.inputs:
            if t == axis:  # channels side by side: input k's channel i is the output's offset_k + i
                for i in range(v.type.shape[axis]):
                    if v in self.axis:
                        self.union(("v", out.name, offset + i), ("v", v.name, i))
                    else:
                        self.blocked.add(("v", out.name, offset + i))
                offset += v.type.shape[axis]
            elif v in self.axis:
                self.link(out, v)
            else:
                self.block(out)

    def _reshape(self, n: Node) -> None:
        x, out = n.inputs[0], n.outputs[0]
        if x not in self.axis:
            return
        t, s_in, s_out = self.axis[x], x.type.shape, out.type.shape
        prefix, c = math.prod(s_in[:t]), s_in[t]
        j = next((j for j in range(len(s_out) + 1) if math.prod(s_out[:j]) == prefix), None)
        while j is not None and j < len(s_out) and s_out[j] == 1 and c != 1:
            j += 1  # a new axis of 1 before the channels
        if j is None or j == len(s_out):
            return self._unknown(n)
        d, inner_in = s_out[j], math.prod(s_in[t + 1:])
        if d % c == 0 and inner_in % (d // c) == 0:  # kept, or merged with (part of) what follows it
            inner = d // c
            self.track(out, j)
            for i in range(d):
                self.union(("v", out.name, i), ("v", x.name, i // inner))
        elif c % d == 0:  # split: out index h is the block of c/d input channels [h*c/d, (h+1)*c/d)
            block = c // d
            self.track(out, j)
            for i in range(c):
                self.union(("v", out.name, i // block), ("v", x.name, i))
        else:
            self._unknown(n)

    # -- result --------------------------------------------------------------------------------------
    def _units(self) -> Channels:
        units: dict[tuple, Unit] = {}
        for k in list(self.parent):
            u = units.setdefault(self.find(k), Unit())
            if k[0] == "v":
                u.values.append((k[1], k[2]))
            else:
                u.weights.append(k[1:])
                if k in self.makers:
                    u.makers.append(k[1:])
            if k in self.blocked:
                u.blocked = True
        return Channels(list(units.values()), {v.name: a for v, a in self.axis.items()}, self.depthwise)


def analyze(g: Graph) -> Channels:
    """The channel units of ``g`` (see the module docstring). ``g`` is not changed."""
    return _Analysis(g).run()


def unit_scores(units: list[Unit], g: Graph, score: str = "l1", grads: dict[str, np.ndarray] | None = None
                ) -> np.ndarray:
    """Importance of each unit: the L1 or L2 norm of the weights that make it (its filters / rows), or
    ``"taylor"``: sum of |w * dL/dw| over every weight slice in it (``grads``: const name -> gradient)."""
    if score not in ("l1", "l2", "taylor"):
        raise ValueError(f"score must be 'l1', 'l2' or 'taylor', got {score!r}")
    if score == "taylor" and grads is None:
        raise ValueError("score='taylor' needs gradients (give data to prune)")
    per_slice: dict[tuple[str, int], np.ndarray] = {}  # (weight, axis) -> the score of each of its slices

    def slices(w: str, a: int) -> np.ndarray:
        if (w, a) not in per_slice:
            arr = g.constants[w].astype(np.float64)
            elem = np.abs(arr * grads[w]) if score == "taylor" else np.abs(arr) if score == "l1" else arr ** 2
            per_slice[w, a] = elem.sum(axis=tuple(i for i in range(arr.ndim) if i != a))
        return per_slice[w, a]

    out = np.zeros(len(units))
    for i, u in enumerate(units):
        if score == "taylor":
            out[i] = sum(float(slices(w, a)[j]) for w, a, j in u.weights if w in grads)
        else:
            total = sum(float(slices(w, a)[j]) for w, a, j in u.makers)
            out[i] = total if score == "l1" else math.sqrt(total)
    return out


def choose(ch: Channels, g: Graph, ratio: float, score: str = "l1", round_to: int = 1,
           grads: dict[str, np.ndarray] | None = None) -> list[Unit]:
    """The units to remove: in each space, the ``ratio`` least important (keeping at least one, and a multiple
    of ``round_to`` channels where the space has that many)."""
    if not 0 <= ratio < 1:
        raise ValueError(f"pruning ratio must be in [0, 1), got {ratio}")
    drop = []
    for space in ch.spaces():
        n = len(space)
        keep = max(1, n - int(n * ratio))
        w, a, _ = space[0].makers[0]
        width = sum(1 for m in space[0].makers if m[:2] == (w, a))  # channels a unit is (an attention head: many)
        step = max(1, round_to // width)  # keep a multiple of round_to channels
        if step > 1 and n >= step:
            keep = min(n, -(-keep // step) * step)
        if keep == n:
            continue
        order = np.argsort(unit_scores(space, g, score, grads), kind="stable")
        drop += [space[i] for i in order[:n - keep]]
    return drop


def prune_graph(g: Graph, ch: Channels, drop: list[Unit]) -> tuple[Graph, dict[str, dict[int, np.ndarray]]]:
    """A new graph without the channels of ``drop``, and the kept indices: const name -> {axis: indices}."""
    gone_v: dict[str, set[int]] = {}
    gone_w: dict[tuple[str, int], set[int]] = {}
    for u in drop:
        for v, i in u.values:
            gone_v.setdefault(v, set()).add(i)
        for w, a, i in u.weights:
            gone_w.setdefault((w, a), set()).add(i)
    kept: dict[str, dict[int, np.ndarray]] = {}
    for (w, a), gone in gone_w.items():
        kept.setdefault(w, {})[a] = np.array([i for i in range(g.constants[w].shape[a]) if i not in gone])

    def new_shape(v: Value) -> tuple[int, ...]:
        shape = list(v.type.shape)
        if v.name in gone_v:
            shape[ch.axis[v.name]] -= len(gone_v[v.name])
        return tuple(shape)

    out = Graph(g.name)
    out.param_names = dict(g.param_names)
    vmap: dict[Value, Value] = {}
    for v in g.inputs:
        vmap[v] = out.add_input(v.name, v.type)
    for v in g.states:
        vmap[v] = out.add_state(v.name, v.type)
    for name, arr in g.constants.items():
        for a, idx in kept.get(name, {}).items():
            arr = np.take(arr, idx, axis=a)
        vmap[g.const_values[name]] = out.add_const(arr, name)
    for n in g.nodes:
        attrs = get_op(n.op).normalize_attrs(n.attrs)
        if n.op in ("reshape", "broadcast_to"):
            attrs["shape"] = list(new_shape(n.outputs[0]))
        elif n.op == "conv2d" and n.outputs[0].name in ch.depthwise:
            attrs["groups"] = new_shape(n.outputs[0])[1]
        res = out.add(n.op, [vmap[v] for v in n.inputs], attrs, source=n.source, name=n.outputs[0].name)
        for old, new in zip(n.outputs, res if isinstance(res, tuple) else (res,)):
            if new.type.shape != new_shape(old):
                raise AssertionError(f"edgeopt bug: pruning {n.op} made %{old.name} {new.type.shape}, "
                                     f"expected {new_shape(old)}")
            vmap[old] = new
    out.set_outputs([vmap[v] for v in g.outputs])
    out.state_updates = {k: vmap[v] for k, v in g.state_updates.items()}
    return out, kept
