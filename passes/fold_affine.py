"""fold_affine: fold a per-channel constant scale or offset into the convolution or linear layer before it.

``conv(x, w, b) * c`` is ``conv(x, w * c, b * c)`` and ``conv(x, w, b) + c`` is ``conv(x, w, b + c)`` when
``c`` is constant per output channel (or a scalar): exact algebra, one kernel fewer. Division is left
alone (``x / c`` and ``x * (1/c)`` round differently).

Requires: ``unfused``. Guarantees: ``affine_folded``. Folds only when the layer's weights are constants,
its result has no other reader, and ``c`` does not broadcast the result to a bigger shape.

Before:
    %c: f32[1,8,4,4] = conv2d(%x, %w, %b)
    %y: f32[1,8,4,4] = mul(%c, %s)            # %s: f32[8,1,1]
After:
    %y: f32[1,8,4,4] = conv2d(%x, %w_folded, %y_bias)
"""

from __future__ import annotations

import numpy as np

from edgeopt.ir import Graph
from edgeopt.pattern import Const, Op, rewrite
from edgeopt.pipeline import Pass, register_pass

from .fold_batch_norm import LAYER, channel_axis, rescale_layer

AFFINE = Op(("mul", "add", "sub"), LAYER, Const("c"), name="out", commutative=True,
            where=lambda n: n.op != "sub" or n.inputs[1].producer is None)


def _per_channel(m) -> np.ndarray | None:
    """``c`` as one value per output channel, or None if it varies along another axis or broadcasts."""
    y, c = m["y"].type, m.const("c")
    if m["out"].type != y:
        return None
    axis = channel_axis(m.node("y").op, len(y.shape))
    shape = (1,) * (len(y.shape) - c.ndim) + c.shape
    if any(d != 1 for i, d in enumerate(shape) if i != axis):
        return None
    return np.broadcast_to(c.reshape(shape[axis]) if c.size > 1 else c.reshape(()), (y.shape[axis],))


def _fold(m, b):
    c = _per_channel(m)
    if c is None:
        return None
    c = c.astype(np.float64)
    op = m["out"].producer.op
    one, zero = np.ones_like(c), np.zeros_like(c)
    scale, shift = (c, zero) if op == "mul" else (one, c if op == "add" else -c)
    return rescale_layer(m, b, scale, shift, m["out"].name)


@register_pass
class FoldAffine(Pass):
    name = "fold_affine"
    requires = ("unfused",)
    guarantees = ("affine_folded",)

    def run(self, g: Graph) -> dict:
        return {"folded": rewrite(g, AFFINE, _fold)}
