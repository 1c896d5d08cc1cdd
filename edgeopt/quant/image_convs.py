"""An image's first conv under static int8 (``QuantConfig.int8_image_convs``): a dense conv on fewer than 4 input
channels, which reads 8-bit pixels where the calibration data shows them (``edgeopt.quant.lattice``).

    too_narrow(n)                         # an RGB image's first conv?
    lattices = pixel_lattices(g, layers, calibration)   # image inputs that hold 8-bit pixels, by name
    x_steps = quantize_pixels(g, x, lattices["x"], "u8")   # u8 = the pixel, read in units of each channel's step
    add_residual_conv(g, conv, q_rest, s_rest)             # "split": a second int8 conv for the rounding residual
"""

from __future__ import annotations

import math

import numpy as np

from ..ir import Graph, Node, Value
from .lattice import pixel_lattice

#: ``int8_image_convs="auto"``: the fewest inputs per output (channels x kernel area) of an image conv it quantizes
IMAGE_CONV_MIN_PATCH = 64


def too_narrow(n: Node) -> bool:
    """A dense conv with fewer than 4 input channels (an RGB image's first layer): quantized only as
    ``QuantConfig.int8_image_convs`` says, and only where the target has an int8 dot product (without one, plain
    integer code is slower than the float kernel; with one, ``int8_weight_layout`` pads its channels to a whole
    group)."""
    return n.op == "conv2d" and n.attrs["groups"] == 1 and n.inputs[0].type.rank == 4 and n.inputs[0].type.shape[1] < 4


def pixel_lattices(g: Graph, layers: list[Node], calibration: list) -> dict:
    """The image inputs of ``g`` (rank 4, read by a dense conv among ``layers``) whose values in ``calibration``
    (batches of inputs in graph order) are 8-bit pixels, with their lattices (``edgeopt.quant.lattice``), by name."""
    found = {}
    for n in layers:
        v = n.inputs[0]
        if v in g.inputs and v.name not in found and v.type.rank == 4 and v.type.dtype == "f32" \
                and n.op == "conv2d" and n.attrs["groups"] == 1:
            i = g.inputs.index(v)
            found[v.name] = pixel_lattice([np.asarray(b[i]) for b in calibration])
    return {k: lattice for k, lattice in found.items() if lattice is not None}


def stays_float(n: Node, reads_pixels: bool, takes_pixels: bool, gptq_levels: bool) -> str:
    """``int8_image_convs="auto"``: why image conv ``n`` stays float, or "" where it is quantized: where it reads
    8-bit pixels (``reads_pixels``) and can take them exactly (``takes_pixels``: no scales learned for it by QAT),
    its levels can be GPTQ's (``gptq_levels``: per-channel weights it did not learn by QAT) and it sums at least
    ``IMAGE_CONV_MIN_PATCH`` inputs per output (ResNet-18's 7x7 stem, 147: 0.38 instead of 1.5 ms; a 3x3 stem, 27,
    gains nothing: MobileNetV2 1.40 against 1.41 ms)."""
    patch = math.prod(n.inputs[1].type.shape[1:])
    if not takes_pixels:
        return "scales learned by QAT" if reads_pixels else "not 8-bit pixels"
    if not gptq_levels:
        return "per-tensor weights: no GPTQ levels"
    if patch < IMAGE_CONV_MIN_PATCH:
        return f"{patch} inputs per output, under {IMAGE_CONV_MIN_PATCH}: no faster in int8"
    return ""


def quantize_pixels(g: Graph, v: Value, lattice, dtype: str) -> Value:
    """8-bit pixels ``v`` quantized without loss: the level of each value, ``(x - origin) / step`` (shifted by -128
    for i8), and, for the convs that read them, the values in units of their channel's step (``x / step``: the
    steps are folded into those convs' weights), ``q + origin / step - zero_point`` (a dequantize with a f32
    minimum)."""
    zp = -128 if dtype == "i8" else 0
    per_channel = (1, -1, 1, 1)
    origin = g.add_const(lattice.origin.reshape(per_channel), f"{v.name}_origin")
    step = g.add_const(lattice.step.reshape(per_channel), f"{v.name}_step")
    src = v.producer.source if v.producer is not None else None
    shifted = g.add("sub", [v, origin], source=src, name=f"{v.name}_from_origin")
    q = g.add("quantize", [shifted, step, g.add_const(np.int32(zp), f"{v.name}_zp")], {"dtype": dtype},
              source=src, name=f"{v.name}_q")
    lowest = (lattice.origin / lattice.step - zp).astype(np.float32).reshape(per_channel)
    return g.add("dequantize", [q, g.add_const(np.float32(1.0), f"{v.name}_unit"),
                                g.add_const(lowest, f"{v.name}_lowest")], source=src, name=f"{v.name}_steps")


def add_residual_conv(g: Graph, n: Node, q: np.ndarray, s: np.ndarray) -> None:
    """``y = conv(x, w)`` becomes ``conv(x, w_q) + conv(x, rest_q)`` (``int8_image_convs="split"``): a second int8
    conv (no bias) on the same input for the weight's rounding residual (levels ``q``, scales ``s``), the sum taking
    the layer's output name."""
    out, at = n.outputs[0], g.nodes.index(n)
    w = g.add("dequantize", [g.add_const(q, f"{out.name}_rest_q"), g.add_const(s, f"{out.name}_rest_scale")],
              source=n.source, name=f"{out.name}_rest_dq", index=at + 1)
    rest = g.add("conv2d", [n.inputs[0], w], dict(n.attrs), source=n.source, name=f"{out.name}_rest", index=at + 2)
    total = g.add("add", [out, rest], source=n.source, name=f"{out.name}_total", index=at + 3)
    g.replace_uses(out, total)
    total.producer.inputs[0] = out
    total.name, out.name = out.name, total.name  # the sum is the layer's output (``compare`` reads it by name)
