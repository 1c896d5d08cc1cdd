"""fold_batch_norm: fold inference-mode BatchNorm into the convolution or linear layer before it.

``bn(conv(x, w, b))`` with constant statistics is ``conv(x, w * s, (b - mean) * s + beta)`` where
``s = gamma / sqrt(var + eps)`` per output channel: one kernel and no BatchNorm at run time.

Requires: ``unfused``. Guarantees: ``batch_norm_folded`` (no BatchNorm that follows a foldable layer).
Folds only when the layer's weights and the BatchNorm's statistics are constants, the layer's result
has no other reader, and BatchNorm's channel axis (1) is the layer's output-channel axis (conv2d,
conv_transpose2d, and linear on [N, C]).

Before:
    %c: f32[1,8,4,4] = conv2d(%x, %w)
    %y: f32[1,8,4,4] = batch_norm(%c, %mean, %var, %gamma, %beta) {"eps": 1e-05}
After:
    %y: f32[1,8,4,4] = conv2d(%x, %w_folded, %b_folded)
"""

from __future__ import annotations

import numpy as np

from edgeopt.ir import Graph
from edgeopt.pattern import Any, Const, Op, rewrite
from edgeopt.pipeline import Pass, register_pass


def _plain_weight(n) -> bool:
    """Weights in the framework's layout (OIHW / IOHW / oi / io), not a packed kernel layout."""
    return n.attrs.get("weight_layout", "OIHW") in ("OIHW", "oi", "io")


LAYER = Op(("conv2d", "conv_transpose2d", "linear"), Any("x"), Const("w"), Const("b", optional=True), name="y",
           where=_plain_weight)
BATCH_NORM = Op("batch_norm", LAYER, Const("mean"), Const("var"), Const("gamma"), Const("beta"), name="out")


def channel_axis(op: str, rank: int) -> int:
    """The output-channel axis of a layer's result."""
    return rank - 1 if op == "linear" else 1


def rescale_layer(m, b, scale: np.ndarray, shift: np.ndarray, name: str):
    """A copy of the matched layer computing ``layer(x) * scale + shift`` (per output channel)."""
    layer = m.node("y")
    w = m.const("w").astype(np.float64)
    bias = m.get_const("b")
    bias = np.zeros(scale.shape) if bias is None else bias.astype(np.float64)
    if layer.op == "conv2d":
        w = w * scale[:, None, None, None]
    elif layer.op == "conv_transpose2d":
        groups = layer.attrs["groups"]
        cin, opg = w.shape[0], w.shape[1]
        w = (w.reshape(groups, cin // groups, opg, *w.shape[2:])
             * scale.reshape(groups, 1, opg, 1, 1)).reshape(w.shape)
    elif layer.attrs["weight_layout"] == "oi":
        w = w * scale[:, None]
    else:
        w = w * scale[None, :]
    dt = m.const("w").dtype
    w_new = b.const(w.astype(dt), f"{m['w'].name}_folded")
    if m["w"].name in b.g.param_names:  # still the model's layer (QAT's learned scales find it by this name)
        b.g.param_names[w_new.name] = b.g.param_names[m["w"].name]
    b_new = b.const((bias * scale + shift).astype(dt), f"{name}_bias")
    return b.add(layer.op, [m["x"], w_new, b_new], layer.attrs, name=name)


def _fold(m, b):
    layer = m.node("y")
    out = m["out"].producer
    if channel_axis(layer.op, len(m["y"].type.shape)) != 1:
        return None
    mean, var, gamma, beta = (m.const(k).astype(np.float64) for k in ("mean", "var", "gamma", "beta"))
    scale = gamma / np.sqrt(var + out.attrs["eps"])
    return rescale_layer(m, b, scale, beta - mean * scale, m["out"].name)


@register_pass
class FoldBatchNorm(Pass):
    name = "fold_batch_norm"
    requires = ("unfused",)
    guarantees = ("batch_norm_folded",)

    def run(self, g: Graph) -> dict:
        return {"folded": rewrite(g, BATCH_NORM, _fold)}
