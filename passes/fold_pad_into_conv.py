"""fold_pad_into_conv: a zero pad of H and W that only feeds a conv2d becomes the conv's own padding.

TensorFlow-style "same" padding is traced as an explicit, often asymmetric, ``pad`` before the conv
(EfficientNet-Lite's strided depthwise convs). The conv already pads [top, left, bottom, right] by
any amounts, so the pad op, a full copy of its input, goes away: exact, one kernel fewer.

Requires: ``unfused``. Guarantees: ``pads_folded``. Folds only a pad with value 0, no negative (cropping)
amounts, nothing added on the batch or channel axes, and no reader but the conv.

Before:
    %p: f32[1,8,11,11] = pad(%x) {"pads": [0, 0, 0, 0, 0, 1, 0, 1], "value": 0.0}
    %y: f32[1,8,5,5] = conv2d(%p, %w) {"padding": [0, 0, 0, 0], "stride": [2, 2], "groups": 8, ...}
After:
    %y: f32[1,8,5,5] = conv2d(%x, %w) {"padding": [0, 0, 1, 1], "stride": [2, 2], "groups": 8, ...}
"""

from __future__ import annotations

from edgeopt.ir import Graph
from edgeopt.pattern import Any, Op, rewrite
from edgeopt.pipeline import Pass, register_pass


def _zero_spatial_pad(n) -> bool:
    p = n.attrs["pads"]
    return (n.attrs["value"] == 0 and len(p) == 8 and not any(p[:4]) and min(p) >= 0
            and n.outputs[0].type.dtype in ("f32", "f16"))


CONV = Op("conv2d", Op("pad", Any("x"), name="pad", where=_zero_spatial_pad), Any("w"), Any("b", optional=True),
          name="conv", where=lambda n: n.attrs["layout"] == "NCHW")


def _fold(m, b):
    conv, pad = m.node("conv"), m.node("pad").attrs["pads"]
    top, left, bottom, right = conv.attrs["padding"]
    attrs = dict(conv.attrs, padding=[top + pad[4], left + pad[6], bottom + pad[5], right + pad[7]])
    inputs = [m["x"], m["w"]] + ([m["b"]] if m.get("b") is not None else [])
    return b.add("conv2d", inputs, attrs, name=m["conv"].name)


@register_pass
class FoldPadIntoConv(Pass):
    name = "fold_pad_into_conv"
    requires = ("unfused",)
    guarantees = ("pads_folded",)

    def run(self, g: Graph) -> dict:
        return {"folded": rewrite(g, CONV, _fold)}
