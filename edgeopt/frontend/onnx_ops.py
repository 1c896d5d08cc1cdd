"""ONNX ops -> IR ops: ``CONVERTERS[op_type](ctx, node, attrs)`` returns the output value(s).

Covers the ops ONNX exporters emit for the test zoo's models (CNNs, MobileNets, EfficientNet, U-Net, BERT-style
encoders, GPT-2, ViT) across opsets 11-21: convolutions, pools, normalizations, activations, elementwise math,
matmul/Gemm, shape ops. A converter raises ``NotImplementedError`` (text: the case) for a use it does not cover;
the frontend lists it in the model's one ``UnsupportedModelError``.
"""

from __future__ import annotations

import numpy as np

from ..ir.types import dtype_from_numpy
from . import volumetric


def _ins(node) -> list[str]:
    return list(node.input)


def _opt(node, i: int) -> str | None:
    return node.input[i] if len(node.input) > i and node.input[i] else None


def _ints(ctx, node, attrs, name: str, index: int, default=None):
    """An int list given as attribute ``name`` (older opsets) or as constant input ``index`` (newer ones)."""
    if name in attrs:
        return [int(a) for a in attrs[name]]
    src = _opt(node, index)
    return [int(a) for a in ctx.const(src, name).reshape(-1)] if src else default


# ------------------------------------------------------------------------------------------------ elementwise


def _unary(op):
    return lambda ctx, node, a: ctx.add(op, [ctx.v(node.input[0])])


def _binary(op):
    return lambda ctx, node, a: ctx.add(op, [ctx.v(node.input[0]), ctx.v(node.input[1])])


def _variadic(op):
    def convert(ctx, node, a):
        vals = [ctx.v(i) for i in node.input if i]
        out = vals[0]
        for v in vals[1:]:
            out = ctx.add(op, [out, v])
        return out

    return convert


def _clip(ctx, node, a):
    lo = a.get("min") if "min" in a else (float(ctx.const(_opt(node, 1), "min")) if _opt(node, 1) else None)
    hi = a.get("max") if "max" in a else (float(ctx.const(_opt(node, 2), "max")) if _opt(node, 2) else None)
    return ctx.add("clamp", [ctx.v(node.input[0])], {"min": lo, "max": hi})


def _hardsigmoid(ctx, node, a):
    alpha, beta = a.get("alpha", 0.2), a.get("beta", 0.5)
    x = ctx.v(node.input[0])
    if abs(alpha - 1 / 6) < 1e-6 and abs(beta - 0.5) < 1e-6:
        return ctx.add("hardsigmoid", [x])
    y = ctx.add("add", [ctx.add("mul", [x, _scalar(ctx, alpha, x)]), _scalar(ctx, beta, x)])
    return ctx.add("clamp", [y], {"min": 0.0, "max": 1.0})


def _scalar(ctx, value, like):
    from ..ir.types import DTYPES

    return ctx.g.add_const(np.array(value, DTYPES[like.type.dtype]), "c")


def _cast(ctx, node, a):
    from onnx import helper

    dt = dtype_from_numpy(np.dtype(helper.tensor_dtype_to_np_dtype(a["to"])))
    return ctx.add("cast", [ctx.v(node.input[0])], {"dtype": dt})


def _gelu(ctx, node, a):
    return ctx.add("gelu", [ctx.v(node.input[0])], {"approximate": a.get("approximate", "none")})


def _not(ctx, node, a):
    return ctx.add("logical_not", [ctx.v(node.input[0])])


def _where(ctx, node, a):
    return ctx.add("where", [ctx.v(i) for i in node.input])


def _isnan(ctx, node, a):
    x = ctx.v(node.input[0])
    return ctx.add("ne", [x, x])  # only NaN differs from itself


def _identity(ctx, node, a):
    return ctx.env[node.input[0]]


# ---------------------------------------------------------------------------------------- contractions, nn


def _matmul(ctx, node, a):
    x, w = node.input[0], node.input[1]
    if ctx.is_const(w) and ctx.env[w].ndim == 2:  # a weight: a linear layer, [in, out]
        return ctx.add("linear", [ctx.v(x), ctx.v(w)], {"weight_layout": "io"})
    return ctx.add("matmul", [ctx.v(x), ctx.v(w)])


def _gemm(ctx, node, a):
    alpha, beta = a.get("alpha", 1.0), a.get("beta", 1.0)
    if a.get("transA", 0):
        raise NotImplementedError("transA=1")
    x, w = ctx.v(node.input[0]), ctx.v(node.input[1])
    ins = [x, w]
    bias = _opt(node, 2)
    if bias is not None and beta != 0:
        if not ctx.is_const(bias) or ctx.env[bias].ndim > 1 or alpha != 1.0:
            y = ctx.add("linear", ins, {"weight_layout": "oi" if a.get("transB", 0) else "io"})
            y = ctx.add("mul", [y, _scalar(ctx, alpha, y)]) if alpha != 1.0 else y
            b = ctx.v(bias)
            return ctx.add("add", [y, ctx.add("mul", [b, _scalar(ctx, beta, b)]) if beta != 1.0 else b])
        ins.append(ctx.g.add_const(np.ascontiguousarray(ctx.env[bias].reshape(-1) * beta), "bias"))
    y = ctx.add("linear", ins, {"weight_layout": "oi" if a.get("transB", 0) else "io"})
    return ctx.add("mul", [y, _scalar(ctx, alpha, y)]) if alpha != 1.0 else y


def _given_pads(a, axes: int) -> tuple[str, list[int] | None]:
    """``auto_pad`` and the pads it fixes without the shapes (all the begins, then all the ends): the ``pads``
    attribute (NOTSET) or none (VALID); None for SAME_UPPER / SAME_LOWER, which the op computes."""
    auto = a.get("auto_pad", b"NOTSET")
    auto = auto.decode() if isinstance(auto, bytes) else auto
    if auto in ("NOTSET", ""):
        return auto, [int(v) for v in a.get("pads", [0] * (2 * axes))]
    return auto, [0] * (2 * axes) if auto == "VALID" else None


def _conv_pads(ctx, node, a, x_shape, kernel, stride, dilation) -> list[int]:
    auto, given = _given_pads(a, len(kernel))
    if given is not None:
        return given
    pads = []
    for size, k, s, d in zip(x_shape[2:], kernel, stride, dilation):
        out = -(-size // s)
        total = max(0, (out - 1) * s + (k - 1) * d + 1 - size)
        pads.append((total // 2, total - total // 2) if auto == "SAME_UPPER" else (total - total // 2, total // 2))
    return [p[0] for p in pads] + [p[1] for p in pads]  # all the begins, then all the ends


def _conv(ctx, node, a):
    x, w = ctx.v(node.input[0]), ctx.v(node.input[1])
    if x.type.rank not in (4, 5):
        raise NotImplementedError(f"{x.type.rank - 2}-d convolution")
    kernel = list(w.type.shape[2:])
    ones = [1] * len(kernel)
    stride, dilation = list(a.get("strides", ones)), list(a.get("dilations", ones))
    bias = ctx.v(_opt(node, 2)) if _opt(node, 2) else None
    if x.type.rank == 5:
        return volumetric.conv3d(ctx, x, w, bias, stride, _conv_pads(ctx, node, a, x.type.shape, kernel, stride,
                                                                     dilation), dilation, int(a.get("group", 1)))
    ins = [x, w] + ([bias] if bias is not None else [])
    return ctx.add("conv2d", ins, {"stride": stride, "padding": _conv_pads(ctx, node, a, x.type.shape, kernel, stride,
                                                                            dilation),
                                   "dilation": dilation, "groups": int(a.get("group", 1))})


def _conv_transpose_pads(a, x_shape, kernel, stride, dilation, output_padding) -> list[int]:
    """ConvTranspose's pads, all the begins then all the ends: given, or from ``auto_pad`` (SAME_*: the output is the
    input times the stride; SAME_UPPER puts the odd one at the end, SAME_LOWER at the beginning)."""
    auto, given = _given_pads(a, len(kernel))
    if given is not None:
        return given
    begins, ends = [], []
    for size, k, s, d, op in zip(x_shape[2:], kernel, stride, dilation, output_padding):
        total = s * (size - 1) + op + (k - 1) * d + 1 - size * s
        if total < 0:
            raise NotImplementedError(f"auto_pad {auto} with a negative total padding ({total})")
        small, large = total // 2, total - total // 2
        begins.append(small if auto == "SAME_UPPER" else large)
        ends.append(large if auto == "SAME_UPPER" else small)
    return begins + ends


def _conv_transpose(ctx, node, a):
    x, w = ctx.v(node.input[0]), ctx.v(node.input[1])
    if x.type.rank not in (4, 5) or "output_shape" in a:
        raise NotImplementedError("only 2-d and 3-d, without output_shape")
    axes = x.type.rank - 2
    ones, zeros = [1] * axes, [0] * axes
    stride, dilation = list(a.get("strides", ones)), list(a.get("dilations", ones))
    output_padding, groups = list(a.get("output_padding", zeros)), int(a.get("group", 1))
    pads = _conv_transpose_pads(a, x.type.shape, list(w.type.shape[2:]), stride, dilation, output_padding)
    both = [min(b, e) for b, e in zip(pads[:axes], pads[axes:])]  # the ops pad both sides alike: crop the rest
    bias = ctx.v(_opt(node, 2)) if _opt(node, 2) else None
    if axes == 3:
        y = volumetric.conv_transpose3d(ctx, x, w, bias, stride, both, output_padding, dilation, groups)
    else:
        y = ctx.add("conv_transpose2d", [x, w] + ([bias] if bias is not None else []),
                    {"stride": stride, "padding": both, "output_padding": output_padding, "dilation": dilation,
                     "groups": groups})
    for i, (b, e, p) in enumerate(zip(pads[:axes], pads[axes:], both)):
        if b != e:
            size = y.type.shape[2 + i] - (b - p) - (e - p)
            y = ctx.add("slice", [y], {"axis": 2 + i, "start": b - p, "end": b - p + size})
    return y


def _batch_norm(ctx, node, a):
    x, scale, bias, mean, var = (ctx.v(i) for i in node.input[:5])
    return ctx.add("batch_norm", [x, mean, var, scale, bias], {"eps": float(a.get("epsilon", 1e-5))})


def _layer_norm(ctx, node, a):
    x = ctx.v(node.input[0])
    axis = int(a.get("axis", -1)) % x.type.rank
    ins = [x] + [ctx.v(i) for i in node.input[1:3] if i]
    return ctx.add("layer_norm", ins, {"normalized_ndim": x.type.rank - axis, "eps": float(a.get("epsilon", 1e-5))})


def _pool(op):
    def convert(ctx, node, a):
        x = ctx.v(node.input[0])
        if x.type.rank not in (4, 5):
            raise NotImplementedError(f"{x.type.rank - 2}-d pooling")
        kernel = [int(k) for k in a["kernel_shape"]]
        ones = [1] * len(kernel)
        stride = [int(s) for s in a.get("strides", ones)]
        dilation = [int(d) for d in a.get("dilations", ones)]
        pads = _conv_pads(ctx, node, a, x.type.shape, kernel, stride, dilation)
        ceil_mode = bool(a.get("ceil_mode", 0))
        if op == "max_pool2d" and len(node.output) > 1 and node.output[1]:
            raise NotImplementedError("the Indices output")
        if op != "max_pool2d" and dilation != ones:
            raise NotImplementedError("dilations")
        include_pad = bool(a.get("count_include_pad", 0))
        if x.type.rank == 5:
            if op == "max_pool2d":
                return volumetric.max_pool3d(ctx, x, kernel, stride, pads, dilation, ceil_mode)
            return volumetric.avg_pool3d(ctx, x, kernel, stride, pads, ceil_mode, include_pad)
        attrs = {"kernel": kernel, "stride": stride, "padding": pads, "ceil_mode": ceil_mode}
        if op == "max_pool2d":
            return ctx.add(op, [x], {**attrs, "dilation": dilation})
        return ctx.add(op, [x], {**attrs, "count_include_pad": include_pad})

    return convert


def _global_pool(op):
    return lambda ctx, node, a: ctx.add(op, [ctx.v(node.input[0])],
                                        {"axes": list(range(2, ctx.v(node.input[0]).type.rank)), "keepdims": True})


def _softmax(op):
    def convert(ctx, node, a):
        x = ctx.v(node.input[0])
        axis = int(a.get("axis", -1 if ctx.opset >= 13 else 1)) % x.type.rank
        if ctx.opset < 13 and axis != x.type.rank - 1:
            raise NotImplementedError("opset < 13 softmax over several axes")
        return ctx.add(op, [x], {"axis": axis})

    return convert


def _reduce(op):
    def convert(ctx, node, a):
        x = ctx.v(node.input[0])
        axes = _ints(ctx, node, a, "axes", 1)
        if axes is None and a.get("noop_with_empty_axes", 0):
            return x
        axes = sorted(int(ax) % x.type.rank for ax in axes) if axes else list(range(x.type.rank))
        return ctx.add(op, [x], {"axes": axes, "keepdims": bool(a.get("keepdims", 1))})

    return convert


def _resize(ctx, node, a):
    x = ctx.v(node.input[0])
    mode = a.get("mode", b"nearest")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    coord = a.get("coordinate_transformation_mode", b"half_pixel")
    coord = coord.decode() if isinstance(coord, bytes) else coord
    nearest = a.get("nearest_mode", b"round_prefer_floor")
    nearest = nearest.decode() if isinstance(nearest, bytes) else nearest
    if x.type.rank not in (4, 5):
        raise NotImplementedError("only 4-d and 5-d inputs")
    sizes = _opt(node, 3)
    scales = _opt(node, 2) if ctx.opset >= 11 else _opt(node, 1)
    if sizes:
        out = [int(s) for s in ctx.const(sizes, "sizes")][2:]
        sc = None
    else:
        s = [float(v) for v in ctx.const(scales, "scales")]
        out = [int(np.floor(d * f)) for d, f in zip(x.type.shape[2:], s[2:])]
        sc = s[2:]
    if list(x.type.shape[2:]) == out:  # ONNX Runtime copies an input whose shape the resize keeps, whatever the scales
        return ctx.add("copy", [x])
    if mode == "nearest" and coord == "asymmetric" and nearest == "floor":  # ONNX's own picks (no torch shortcuts):
        y = x  # floor(dst / scale) in float32, per axis, as a take of constant positions
        for axis, (n_in, n_out) in enumerate(zip(x.type.shape[2:], out), start=2):
            scale = np.float32(sc[axis - 2] if sc else np.float32(n_out) / np.float32(n_in))
            src = np.floor(np.arange(n_out, dtype=np.float32) / scale).astype(np.int64)
            src = np.clip(src, 0, n_in - 1)
            if n_in != n_out or not np.array_equal(src, np.arange(n_out)):
                y = ctx.add("take", [y, ctx.g.add_const(src, "resize_src")], {"axis": axis})
        return y if y is not x else ctx.add("copy", [x])
    if mode == "linear" and sc and any(n == m and s != 1.0 for n, m, s in zip(x.type.shape[2:], out, sc)):
        raise NotImplementedError("linear resize of an axis that keeps its size under a scale other than 1")
    if mode == "linear" and coord == "pytorch_half_pixel" and 1 in out:  # an axis resized to 1 reads source 0
        for axis in [i for i, n in enumerate(out) if n == 1 and x.type.shape[2 + i] > 1]:
            x = ctx.add("slice", [x], {"axis": 2 + axis, "start": 0, "end": 1})
            sc = None if sc is None else [1.0 if i == axis else f for i, f in enumerate(sc)]
        if list(x.type.shape[2:]) == out:
            return x
    if mode == "linear" and coord in ("half_pixel", "pytorch_half_pixel", "align_corners"):
        if x.type.rank == 5:  # trilinear: bilinear over the depth slices, then along depth
            return volumetric.resize3d(ctx, x, out, "linear", coord == "align_corners",
                                       None if coord == "align_corners" else sc)
        return ctx.add("resize2d", [x], {"size": out, "mode": "bilinear", "align_corners": coord == "align_corners",
                                         "scales": None if coord == "align_corners" else sc})
    raise NotImplementedError(f"mode={mode}, coordinate_transformation_mode={coord}, nearest_mode={nearest}")


# ------------------------------------------------------------------------------------------------- shapes


def _reshape(ctx, node, a):
    x = ctx.v(node.input[0])
    shape = [int(s) for s in ctx.const(node.input[1], "the shape")]
    if not a.get("allowzero", 0):
        shape = [x.type.shape[i] if s == 0 else s for i, s in enumerate(shape)]
    if -1 in shape:
        known = int(np.prod([s for s in shape if s != -1]))
        shape[shape.index(-1)] = x.type.numel // max(known, 1)
    return ctx.add("reshape", [x], {"shape": shape})


def _flatten(ctx, node, a):
    x = ctx.v(node.input[0])
    axis = int(a.get("axis", 1))
    axis = axis + x.type.rank if axis < 0 else axis  # 0..rank (rank: everything in the leading dimension)
    lead = int(np.prod(x.type.shape[:axis]))
    return ctx.add("reshape", [x], {"shape": [lead, x.type.numel // max(lead, 1)]})


def _squeeze(ctx, node, a):
    x = ctx.v(node.input[0])
    axes = _ints(ctx, node, a, "axes", 1)
    axes = {ax % x.type.rank for ax in axes} if axes else {i for i, d in enumerate(x.type.shape) if d == 1}
    return ctx.add("reshape", [x], {"shape": [d for i, d in enumerate(x.type.shape) if i not in axes]})


def _unsqueeze(ctx, node, a):
    x = ctx.v(node.input[0])
    axes = _ints(ctx, node, a, "axes", 1)
    rank = x.type.rank + len(axes)
    axes = sorted(ax % rank for ax in axes)
    shape = list(x.type.shape)
    for ax in axes:
        shape.insert(ax, 1)
    return ctx.add("reshape", [x], {"shape": shape})


def _transpose(ctx, node, a):
    x = ctx.v(node.input[0])
    perm = [int(p) for p in a.get("perm", list(range(x.type.rank))[::-1])]
    return ctx.add("transpose", [x], {"perm": perm})


def _concat(ctx, node, a):
    vals = [ctx.v(i) for i in node.input if i]
    return ctx.add("concat", vals, {"axis": int(a["axis"]) % vals[0].type.rank})


def _slice(ctx, node, a):
    x = ctx.v(node.input[0])
    starts, ends = _ints(ctx, node, a, "starts", 1), _ints(ctx, node, a, "ends", 2)
    axes = _ints(ctx, node, a, "axes", 3, list(range(len(starts))))
    steps = _ints(ctx, node, a, "steps", 4, [1] * len(starts))
    for s, e, ax, st in zip(starts, ends, axes, steps):
        n = x.type.shape[ax % x.type.rank]
        if st < 0:
            raise NotImplementedError("negative steps")
        x = ctx.add("slice", [x], {"axis": ax % x.type.rank, "start": max(-n, min(s, n)), "end": max(-n, min(e, n)),
                                   "step": st})
    return x


def _split(ctx, node, a):
    x = ctx.v(node.input[0])
    axis = int(a.get("axis", 0)) % x.type.rank
    sizes = _ints(ctx, node, a, "split", 1)
    if sizes is None:
        n = len(node.output)
        chunk = -(-x.type.shape[axis] // n)
        sizes = [min(chunk, x.type.shape[axis] - i * chunk) for i in range(n)]
    outs, start = [], 0
    for s in sizes:
        outs.append(ctx.add("slice", [x], {"axis": axis, "start": start, "end": start + s, "step": 1}))
        start += s
    return outs


def _gather(ctx, node, a):
    data, idx = node.input[0], node.input[1]
    x = ctx.v(data)
    axis = int(a.get("axis", 0)) % x.type.rank
    if ctx.is_const(idx) and ctx.env[idx].ndim == 0:  # one index: a slice, then the axis dropped
        i = int(ctx.env[idx]) % x.type.shape[axis]
        y = ctx.add("slice", [x], {"axis": axis, "start": i, "end": i + 1, "step": 1})
        return ctx.add("reshape", [y], {"shape": [d for k, d in enumerate(x.type.shape) if k != axis]})
    if ctx.is_const(idx) and (ctx.env[idx] < 0).any():
        ctx.env[idx] = ctx.env[idx] % x.type.shape[axis]
    return ctx.add("take", [x, ctx.v(idx)], {"axis": axis})


def _gather_elements(ctx, node, a):
    x = ctx.v(node.input[0])
    idx = node.input[1]
    if ctx.is_const(idx) and (ctx.env[idx] < 0).any():
        raise NotImplementedError("negative indices")
    return ctx.add("gather", [x, ctx.v(idx)], {"axis": int(a.get("axis", 0)) % x.type.rank})


def _pad(ctx, node, a):
    x = ctx.v(node.input[0])
    mode = a.get("mode", b"constant")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    if mode != "constant":
        raise NotImplementedError(f"mode={mode}")
    pads = _ints(ctx, node, a, "pads", 1)
    axes = _ints(ctx, node, a, "axes", 3, list(range(x.type.rank)))
    value = a.get("value", 0.0)
    if _opt(node, 2):
        value = float(ctx.const(node.input[2], "the pad value").reshape(-1)[0])
    ir = [0] * (2 * x.type.rank)
    half = len(pads) // 2
    for k, ax in enumerate(axes):
        ir[2 * (ax % x.type.rank)], ir[2 * (ax % x.type.rank) + 1] = pads[k], pads[half + k]
    return ctx.add("pad", [x], {"pads": ir, "value": float(value)})


def _expand(ctx, node, a):
    x = ctx.v(node.input[0])
    shape = [int(s) for s in ctx.const(node.input[1], "the shape")]
    out = list(np.broadcast_shapes(tuple(x.type.shape), tuple(shape)))
    return x if out == list(x.type.shape) else ctx.add("broadcast_to", [x], {"shape": out})


def _constant_of_shape(ctx, node, a):
    from onnx import numpy_helper

    value = numpy_helper.to_array(a["value"]) if "value" in a else np.zeros(1, np.float32)
    return np.full([int(s) for s in ctx.const(node.input[0], "the shape")], value.reshape(-1)[0], value.dtype)


CONVERTERS = {
    **{k: _unary(v) for k, v in {"Relu": "relu", "Sigmoid": "sigmoid", "Tanh": "tanh", "Exp": "exp", "Log": "log",
                                 "Sqrt": "sqrt", "Neg": "neg", "Abs": "abs", "Reciprocal": "reciprocal",
                                 "Floor": "floor", "Ceil": "ceil", "Round": "round", "Erf": "erf", "Sin": "sin",
                                 "Cos": "cos", "HardSwish": "hardswish"}.items()},
    **{k: _binary(v) for k, v in {"Add": "add", "Sub": "sub", "Mul": "mul", "Div": "div", "Pow": "pow",
                                  "Equal": "eq", "Less": "lt", "Greater": "gt", "LessOrEqual": "le",
                                  "GreaterOrEqual": "ge", "And": "logical_and", "Or": "logical_or"}.items()},
    "Max": _variadic("maximum"), "Min": _variadic("minimum"), "Sum": _variadic("add"),
    "Clip": _clip, "HardSigmoid": _hardsigmoid, "Cast": _cast, "Gelu": _gelu, "Not": _not, "Where": _where,
    "IsNaN": _isnan,
    "LeakyRelu": lambda ctx, node, a: ctx.add("leaky_relu", [ctx.v(node.input[0])], {"alpha": a.get("alpha", 0.01)}),
    "Identity": _identity, "Dropout": _identity,
    "MatMul": _matmul, "Gemm": _gemm, "Conv": _conv, "ConvTranspose": _conv_transpose,
    "BatchNormalization": _batch_norm, "LayerNormalization": _layer_norm,
    "MaxPool": _pool("max_pool2d"), "AveragePool": _pool("avg_pool2d"),
    "GlobalAveragePool": _global_pool("mean"), "GlobalMaxPool": _global_pool("max"),
    "Softmax": _softmax("softmax"), "LogSoftmax": _softmax("log_softmax"),
    "ReduceMean": _reduce("mean"), "ReduceSum": _reduce("sum"), "ReduceMax": _reduce("max"),
    "ReduceMin": _reduce("min"), "ReduceProd": _reduce("prod"),
    "Resize": _resize,
    "Reshape": _reshape, "Flatten": _flatten, "Squeeze": _squeeze, "Unsqueeze": _unsqueeze,
    "Transpose": _transpose, "Concat": _concat, "Slice": _slice, "Split": _split, "Gather": _gather, "Pad": _pad,
    "GatherElements": _gather_elements,
    "Expand": _expand, "ConstantOfShape": _constant_of_shape,
}
