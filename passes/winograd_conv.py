"""winograd_conv: compute blocked 3x3 stride-1 convolutions with Winograd F(m x m, 3 x 3) where that is faster.

A direct 3x3 conv does 9 multiply-adds per output pixel and channel pair. Winograd's minimal filtering
(``edgeopt/ir/ops/winograd.py``) does (m+2)^2 / m^2 of them, 2.25 (m = 2) or 4 (m = 4) times fewer, plus
transforms of the input and output tiles whose cost does not grow with the other side's channels. The
filter's transform ``U = G g G'`` is done here, once, and stored in the artifact instead of the filter.

Where it is used (``winograd_tile``, from what ``bench/winograd.py`` measured on x86 AVX2, each layer alone:
F4 2.2-2.5x faster than the direct conv on ResNet-18's 56x56x64 and 28x28x128 layers and 2.1x on 32x32x16;
on 14x14x256 F2 1.6x and F4 2.1x alone, but inside ResNet-18 F4 there was 0.95x of F2 (its 4x larger
transformed weights come from memory); on 7x7x512 both about 0.5x; whole ResNet-18 1.2x): a conv2d on
blocked NCHWc tensors with a constant fp32 3x3 packed weight, stride 1, dilation 1, groups 1, at least
``MIN_CHANNELS`` input and output channels (below that the transforms cost more than the products save),
and an output whose sides are multiples of the tile: m = 4 where both are multiples of 4 and at least 8,
m = 2 where both are even; any other conv is left direct.

Requires: ``nchwc_layout``, ``unfused`` (run it after nchwc_layout, before fusion).
Guarantees: ``winograd_convs`` (every conv that qualifies and gets a tile from ``winograd_tile`` is a
conv2d_winograd; the others are unchanged). Numerics: exact in exact arithmetic; in fp32 within about 1e-5 of
the output's scale with m = 4 and 2e-6 with m = 2 (the transformed filter is rounded to fp32). The tile
thresholds were measured on x86 (AVX2); the ARM target uses them too (numerics checked under emulation).

Before:
    const %w_OIHW8o: f32[8,64,3,3,8]
    %y: f32[1,8,56,56,8] = conv2d(%x, %w_OIHW8o, %b) {"layout": "NCHWc", "padding": [1, 1, 1, 1], ...}
After:
    const %w_winograd4: f32[36,8,64,8]
    %y: f32[1,8,56,56,8] = conv2d_winograd(%x, %w_winograd4, %b) {"tile": 4, "padding": [1, 1, 1, 1]}
"""

from __future__ import annotations

from edgeopt.ir import Graph, Node
from edgeopt.ir.ops.layout import BLOCKED
from edgeopt.ir.ops.nn import conv_weight_block, unpack_conv_weight
from edgeopt.ir.ops.winograd import TILES, transform_weight
from edgeopt.ir.registry import get_op
from edgeopt.pipeline import Pass, register_pass

#: fewer input or output channels than this: the direct conv is faster (the transforms dominate)
MIN_CHANNELS = 16


def winograd_tile(in_channels: int, out_channels: int, out_h: int, out_w: int) -> int:
    """The Winograd tile m for a 3x3 stride-1 conv of this shape, or 0 for the direct conv."""
    if min(in_channels, out_channels) < MIN_CHANNELS:
        return 0
    if out_h % 4 == 0 and out_w % 4 == 0 and min(out_h, out_w) >= 8:
        return 4
    if out_h % 2 == 0 and out_w % 2 == 0:
        return 2
    return 0


def _qualifies(g: Graph, n: Node) -> bool:
    if n.op != "conv2d":
        return False
    a, w = n.attrs, n.inputs[1]
    return (a["layout"] == BLOCKED and a["groups"] == 1 and a["stride"] == [1, 1]
            and a["dilation"] == [1, 1] and conv_weight_block(a) > 0 and g.is_const(w) and w.type.dtype == "f32"
            and tuple(w.type.shape[2:4]) == (3, 3))


@register_pass
class WinogradConv(Pass):
    name = "winograd_conv"
    requires = ("nchwc_layout", "unfused")
    guarantees = ("winograd_convs",)

    def __init__(self, tile: int | None = None):
        """``tile``: None picks each conv's tile with ``winograd_tile``; 2 or 4 forces it on every conv that
        qualifies (``bench/winograd.py`` compares them); 0 leaves every conv direct."""
        if tile not in (None, 0, *TILES):
            raise ValueError(f"winograd_conv: tile must be None, 0 or one of {list(TILES)}, got {tile!r}")
        self.tile = tile

    def run(self, g: Graph) -> dict:
        done: dict[tuple[str, int], object] = {}
        counts = {"winograd_f2": 0, "winograd_f4": 0}
        for n in g.nodes:
            if not _qualifies(g, n):
                continue
            x, w, y = n.inputs[0], n.inputs[1], n.outputs[0]
            channels = x.type.shape[1] * x.type.shape[4]
            m = self.tile if self.tile is not None else winograd_tile(
                channels, y.type.shape[1] * y.type.shape[4], y.type.shape[2], y.type.shape[3])
            if not m:
                continue
            v = conv_weight_block(n.attrs)
            if (w.name, m) not in done:
                u = transform_weight(unpack_conv_weight(g.const(w), v), m, v)
                done[w.name, m] = g.add_const(u, f"{w.name.removesuffix(f'_OIHW{v}o')}_winograd{m}")
            n.op = "conv2d_winograd"
            n.inputs[1] = done[w.name, m]
            n.attrs = get_op("conv2d_winograd").normalize_attrs({"tile": m, "padding": n.attrs["padding"]})
            counts[f"winograd_f{m}"] += 1
        g.remove_unused_constants()
        return counts
