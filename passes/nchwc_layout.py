"""nchwc_layout: run convolutions, window pools and the elementwise ops between them on blocked NCHW<b>c.

A conv kernel computes a vector of ``v`` output channels for a run of pixels. In NCHW those ``v`` channels
lie ``H*W`` elements apart, so its store (and a fused ReLU or residual add) touches ``v`` planes a few
pixels at a time. In ``NCHW<v>c`` (``[N, C/v, H, W, v]``) they are one contiguous vector: loads and
stores are whole vectors, and an input pixel's channels are read in a row.

The layout is chosen once per region: a conv with a packed weight (groups=1) or a depthwise conv
produces a blocked tensor; pools (a global average pool too: a mean over H and W), elementwise ops and channel
concats (when the block divides each part's channels: a U-Net skip, a DenseNet block) whose activation inputs are
blocked stay blocked (their constants are
re-laid out at compile time: a per-channel bias [1,C,1,1] becomes [1,C/v,1,1,v]);
every other reader, and every graph output, gets one ``layout_transform`` back to NCHW. A conv whose
input is plain gets one ``layout_transform`` to blocked (a 3-channel image: block 3). Depthwise weights
are packed here (``OIHW<v>o`` with one input channel), with the block of the conv's input.

Requires: ``conv_weights_packed``, ``unfused``. Guarantees: ``nchwc_layout`` (no layout_transform pair cancels: a
value is converted at most once each way). Numerics are unchanged: only where values are stored moves.

Before:
    %c: f32[1,16,8,8] = conv2d(%x, %w_OIHW8o, %b) {"layout": "NCHW", "weight_layout": "OIHW8o", ...}
    %r: f32[1,16,8,8] = relu(%c)
    %y: f32[1,16,8,8] = add(%r, %x)
After:
    %x_b: f32[1,2,8,8,8] = layout_transform(%x) {"src_layout": "NCHW", "dst_layout": "NCHW8c"}
    %c: f32[1,2,8,8,8] = conv2d(%x_b, %w_OIHW8o, %b) {"layout": "NCHWc", ...}
    %r: f32[1,2,8,8,8] = relu(%c)
    %y: f32[1,2,8,8,8] = add(%r, %x_b)
    %y_nchw: f32[1,16,8,8] = layout_transform(%y) {"src_layout": "NCHW8c", "dst_layout": "NCHW"}
"""

from __future__ import annotations

from edgeopt.ir import Graph, Node, Value
from edgeopt.ir.ops.layout import BLOCKED, PLAIN, block_nchw
from edgeopt.ir.ops.nn import conv_weight_block, conv_weight_group, pack_conv_weight
from edgeopt.ir.registry import get_op
from edgeopt.pipeline import Pass, register_pass

from .conv_weight_layout import DEFAULT_LANES, block_size


@register_pass
class NCHWcLayout(Pass):
    name = "nchwc_layout"
    requires = ("conv_weights_packed", "unfused")
    guarantees = ("nchwc_layout",)

    def run(self, g: Graph) -> dict:
        return _Rewriter(g, self.target.vector_lanes(32) if self.target is not None else DEFAULT_LANES).run()


class _Rewriter:
    def __init__(self, g: Graph, lanes: int):
        self.g, self.lanes = g, lanes
        self.block: dict[Value, int] = {}  # blocked value -> its channel block
        self.to_blocked: dict[tuple[Value, int], Value] = {}
        self.to_plain: dict[Value, Value] = {}
        self.consts: dict[str, Value] = {}  # re-laid-out constants by their new name
        self.order: list[Node] = []
        self.stats = {"blocked_ops": 0, "to_blocked": 0, "to_plain": 0}

    def run(self) -> dict:
        g = self.g
        for n in list(g.nodes):
            if not self._try_block(n):
                n.inputs = [self._plain(v, n) if v in self.block else v for v in n.inputs]
            self.order.append(n)
        outputs = [self._plain(v, None) if v in self.block else v for v in g.outputs]
        g.nodes = self.order
        g.set_outputs(outputs)
        g.remove_unused_constants()
        return self.stats

    # -- per op ---------------------------------------------------------------------------------------
    def _try_block(self, n: Node) -> bool:
        if len(n.outputs) != 1 or n.outputs[0].type.rank != 4:
            return False
        if n.op == "conv2d":
            b = self._conv(n)
        elif get_op(n.op).blocked_layout:  # window pools
            b = self.block.get(n.inputs[0], 0) if n.attrs["layout"] == PLAIN else 0
            if b:
                n.attrs["layout"] = BLOCKED
        elif get_op(n.op).pointwise:
            b = self._elementwise(n)
        elif n.op == "concat" and n.attrs["axis"] % 4 == 1:
            b = self._channel_concat(n)
        elif n.op == "mean":
            b = self._spatial_mean(n)
        else:
            b = 0
        if b:
            out = n.outputs[0]
            out.type = get_op(n.op).infer([v.type for v in n.inputs], n.attrs)[0]
            self.block[out] = b
            self.stats["blocked_ops"] += 1
        return bool(b)

    def _conv(self, n: Node) -> int:
        a, (x, w) = n.attrs, n.inputs[:2]
        if a["layout"] != PLAIN or (x.type.rank != 4 and x not in self.block):
            return 0
        channels = x.type.shape[1] * self.block.get(x, 1)
        out_channels = n.outputs[0].type.shape[1]
        if a["groups"] == 1:
            v, grp = conv_weight_block(a), conv_weight_group(a) or 1
            fits = [d for d in range(grp, self.lanes + 1, grp) if channels % d == 0]  # blocks of whole int8 groups
            if not v or not fits or self.block.get(x, grp) % grp:
                return 0
            b = self.block.get(x) or max(fits)
        elif a["groups"] == channels == out_channels and a["weight_layout"] == "OIHW" and self.g.is_const(w) \
                and w.type.dtype in ("f32", "i8"):
            v = b = self.block.get(x) or block_size(channels, self.lanes)
            if not v:
                return 0
            n.inputs[1] = self._const(w, lambda arr: pack_conv_weight(arr, v), f"{w.name}_OIHW{v}o")
            a["weight_layout"] = f"OIHW{v}o"
        else:
            return 0
        n.inputs[0] = self._blocked(x, b, n)
        a["layout"] = BLOCKED
        return v

    def _elementwise(self, n: Node) -> int:
        blocks = {self.block[v] for v in n.inputs if v in self.block}
        if len(blocks) != 1:
            return 0
        b = blocks.pop()
        channels = n.outputs[0].type.shape[1]
        if channels % b:
            return 0
        convertible = [v in self.block or self.g.is_const(v) or (v.type.rank == 4 and v.type.shape[1] == channels)
                       for v in n.inputs]
        if not all(convertible):  # e.g. a [N,1,H,W] activation: the op stays plain
            return 0
        n.inputs = [v if v in self.block else self._blocked_const(v, b) if self.g.is_const(v)
                    else self._blocked(v, b, n) for v in n.inputs]
        return b

    def _channel_concat(self, n: Node) -> int:
        """A concat of channels stays blocked when its blocked inputs share a block that divides every input's
        channels: [N, C1/b, H, W, b] and [N, C2/b, H, W, b] join along axis 1 (a U-Net skip, a DenseNet block)."""
        blocks = {self.block[v] for v in n.inputs if v in self.block}
        if len(blocks) != 1:
            return 0
        b = blocks.pop()
        if any(v not in self.block and (self.g.is_const(v) or v.type.shape[1] % b) for v in n.inputs):
            return 0  # a plain part that does not fill whole blocks (or a constant)
        n.inputs = [self._blocked(v, b, n) for v in n.inputs]
        n.attrs["axis"] = 1
        return b

    def _spatial_mean(self, n: Node) -> int:
        """A global average pool (a mean over H and W, keepdims) of a blocked tensor stays blocked: it reads whole
        channel vectors, and its [N, C/b, 1, 1, b] result goes back to NCHW for b floats a block instead of the
        whole feature map (MobileNetV2's 1280 x 7 x 7 head output)."""
        x, axes = n.inputs[0], n.attrs.get("axes")
        if x not in self.block or not n.attrs.get("keepdims") or axes is None or sorted(a % 4 for a in axes) != [2, 3]:
            return 0
        n.attrs["axes"] = [2, 3]
        return self.block[x]

    # -- conversions ------------------------------------------------------------------------------------
    def _blocked(self, v: Value, b: int, before: Node) -> Value:
        if v in self.block:
            return v
        if (v, b) not in self.to_blocked:
            self.to_blocked[v, b] = self._emit("layout_transform", v, PLAIN, f"NCHW{b}c", before, f"{v.name}_b")
            self.stats["to_blocked"] += 1
        return self.to_blocked[v, b]

    def _plain(self, v: Value, before: Node | None) -> Value:
        if v not in self.to_plain:
            self.to_plain[v] = self._emit("layout_transform", v, f"NCHW{self.block[v]}c", PLAIN, before,
                                          f"{v.name}_nchw")
            self.stats["to_plain"] += 1
        return self.to_plain[v]

    def _emit(self, op: str, v: Value, src: str, dst: str, before: Node | None, name: str) -> Value:
        out = self.g.add(op, [v], {"src_layout": src, "dst_layout": dst}, name=name,
                         source=before.source if before is not None else None)
        self.order.append(self.g.nodes.pop())  # g.add appended it; it runs just before ``before``
        return out

    def _blocked_const(self, v: Value, b: int) -> Value:
        """A constant operand of a blocked elementwise op, laid out to broadcast against [N, C/b, H, W, b]."""
        shape = v.type.shape
        if all(d == 1 for d in shape):
            return v  # a scalar broadcasts in any layout

        def relayout(arr):
            arr = arr.reshape((1,) * (4 - arr.ndim) + arr.shape)
            if arr.shape[1] == 1:
                return arr.reshape(*arr.shape, 1)
            return block_nchw(arr, b)

        return self._const(v, relayout, f"{v.name}_NCHW{b}c")

    def _const(self, v: Value, fn, name: str) -> Value:
        """``fn`` of constant ``v`` as a new constant ``name`` (made once, however many ops read it)."""
        if name not in self.consts:
            self.consts[name] = self.g.add_const(fn(self.g.const(v)), name)
        return self.consts[name]

