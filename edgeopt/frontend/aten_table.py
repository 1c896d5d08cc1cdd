"""The ATen -> IR conversion table. One small function per ATen op (or family).

A converter receives the ``Ctx`` and the fx node's args/kwargs (fx nodes for tensors, Python values for
the rest) and returns an IR Value (or a tuple for multi-output ATen ops). To support a new ATen op, add a
function here and list it in ``CONVERTERS``; if the op must not be decomposed by torch.export, add it
to ``KEEP_WHOLE``.
"""

from __future__ import annotations

import numpy as np
import torch

from ..ir import Graph, Value
from ..ir.types import dtype_from_numpy

aten = torch.ops.aten

#: ATen ops kept as they are (not decomposed to core ATen): the IR has a direct op for each.
KEEP_WHOLE = [
    aten.linear.default, aten.layer_norm.default, aten.scaled_dot_product_attention.default,
    aten.hardswish.default, aten.hardsigmoid.default, aten.gelu.default, aten.silu.default,
    aten.softmax.int, aten.log_softmax.int, aten.upsample_bilinear2d.vec, aten.upsample_nearest2d.vec,
    aten.hardtanh.default, aten.relu6.default, aten.matmul.default, aten.adaptive_avg_pool2d.default,
    aten.leaky_relu.default, aten.embedding.default,
]


def _np_dtype(dt: torch.dtype):
    return torch.empty((), dtype=dt).numpy().dtype


def ir_dtype(dt: torch.dtype) -> str:
    return dtype_from_numpy(_np_dtype(dt))


class Ctx:
    """Conversion state: the graph being built and the mapping from fx node names to IR values."""

    def __init__(self, g: Graph):
        self.g = g
        self.env: dict[str, Value | tuple] = {}
        self.torch_consts: dict[str, torch.Tensor] = {}
        self.poisoned: set[str] = set()
        self._const_values: dict[str, Value] = {}
        self._scalars: dict[tuple, Value] = {}
        self.source: str | None = None
        self.node = None

    # -- values -----------------------------------------------------------------------------------
    def const(self, t: torch.Tensor, name: str) -> Value:
        if name not in self._const_values:
            arr = t.detach().cpu().contiguous().numpy()
            self._const_values[name] = self.g.add_const(arr.copy(), name)
        return self._const_values[name]

    def scalar(self, value, dtype: str) -> Value:
        key = (repr(value), dtype)
        if key not in self._scalars:
            self._scalars[key] = self.g.add_const(np.array(value).astype(_IR_NP[dtype]), "c")
        return self._scalars[key]

    def v(self, a, dtype: str | None = None) -> Value:
        """An fx argument (node or Python scalar) as an IR value, cast to ``dtype`` if given."""
        if isinstance(a, torch.fx.Node):
            if a.name in self.torch_consts:
                val = self.const(self.torch_consts[a.name], a.name)
            else:
                val = self.env[a.name]
        else:
            if dtype is None:
                raise TypeError(f"scalar {a!r} needs a dtype")
            return self.scalar(a, dtype)
        return self.cast(val, dtype) if dtype else val

    def cast(self, v: Value, dtype: str) -> Value:
        return v if v.type.dtype == dtype else self.add("cast", [v], {"dtype": dtype})

    def add(self, op: str, inputs, attrs=None):
        return self.g.add(op, inputs, attrs, source=self.source)

    def out_dtype(self) -> str:
        val = self.node.meta["val"]
        val = val[0] if isinstance(val, (tuple, list)) else val
        return ir_dtype(val.dtype)

    def shape(self, a) -> tuple[int, ...]:
        return self.v(a).type.shape


_IR_NP = {"f32": np.float32, "f16": np.float16, "f64": np.float64, "i8": np.int8, "u8": np.uint8,
          "i16": np.int16, "i32": np.int32, "i64": np.int64, "bool": np.bool_}


def _meta_dtype(a):
    if isinstance(a, torch.fx.Node):
        return a.meta["val"].dtype
    return None


def _common_dtype(a, b) -> str:
    """torch's type promotion for two operands (tensor or Python scalar)."""
    da, db = _meta_dtype(a), _meta_dtype(b)
    if da is not None and db is not None:
        ta, tb = a.meta["val"], b.meta["val"]
        return ir_dtype(torch.result_type(ta, tb))
    t, s = (da, b) if da is not None else (db, a)
    return ir_dtype(torch.result_type(torch.empty((), dtype=t).expand(1), s))


def _axis(d, rank):
    return d % rank if rank else 0


# -- elementwise -------------------------------------------------------------------------------------
def _binary(op, compare=False):
    def convert(ctx: Ctx, a, b, alpha=None):
        dt = _common_dtype(a, b) if compare else ctx.out_dtype()
        x, y = ctx.v(a, dt), ctx.v(b, dt)
        if alpha is not None and alpha != 1:
            y = ctx.add("mul", [y, ctx.scalar(alpha, dt)])
        return ctx.add(op, [x, y])

    return convert


def _rsub(ctx, a, b, alpha=1):
    dt = ctx.out_dtype()
    x, y = ctx.v(a, dt), ctx.v(b, dt)
    if alpha != 1:
        x = ctx.add("mul", [x, ctx.scalar(alpha, dt)])
    return ctx.add("sub", [y, x])


def _div_mode(ctx, a, b, rounding_mode=None):
    dt = ctx.out_dtype()
    if rounding_mode is None:
        return ctx.add("div", [ctx.v(a, dt), ctx.v(b, dt)])
    fdt = dt if dt in ("f32", "f16", "f64") else "f32"
    q = ctx.add("div", [ctx.v(a, fdt), ctx.v(b, fdt)])
    q = ctx.add("floor" if rounding_mode == "floor" else "ceil", [q]) if rounding_mode == "floor" else \
        ctx.add("cast", [ctx.add("cast", [q], {"dtype": "i64"})], {"dtype": fdt})
    return ctx.cast(q, dt)


def _unary(op, **fixed):
    def convert(ctx: Ctx, a, *rest, **kw):
        x = ctx.v(a, ctx.out_dtype())
        attrs = dict(fixed)
        if op == "gelu":
            attrs["approximate"] = kw.get("approximate", rest[0] if rest else "none")
        if op == "leaky_relu":
            attrs["alpha"] = float(rest[0]) if rest else float(kw.get("negative_slope", 0.01))
        return ctx.add(op, [x], attrs)

    return convert


def _clamp(ctx, a, min=None, max=None):
    x = ctx.v(a, ctx.out_dtype())
    if min is None and max is None:
        return x
    if isinstance(min, torch.fx.Node) or isinstance(max, torch.fx.Node):
        if min is not None:
            x = ctx.add("maximum", [x, ctx.v(min, x.type.dtype)])
        if max is not None:
            x = ctx.add("minimum", [x, ctx.v(max, x.type.dtype)])
        return x
    return ctx.add("clamp", [x], {"min": None if min is None else float(min),
                                  "max": None if max is None else float(max)})


def _pow(ctx, a, b):
    dt = ctx.out_dtype()
    if not isinstance(b, torch.fx.Node):
        x = ctx.v(a, dt)
        if b == 2:
            return ctx.add("mul", [x, x])
        if b == 0.5:
            return ctx.add("sqrt", [x])
        if b == 1:
            return x
    return ctx.add("pow", [ctx.v(a, dt), ctx.v(b, dt)])


def _where(ctx, c, a, b):
    dt = ctx.out_dtype()
    return ctx.add("where", [ctx.v(c, "bool"), ctx.v(a, dt), ctx.v(b, dt)])


def _masked_fill(ctx, a, mask, value):
    dt = ctx.out_dtype()
    return ctx.add("where", [ctx.v(mask, "bool"), ctx.v(value, dt), ctx.v(a, dt)])


def _to_dtype(ctx, a, *args, **kw):
    return ctx.cast(ctx.v(a), ctx.out_dtype())


def _identity(ctx, a, *args, **kw):
    return ctx.v(a)


def _logical_not(ctx, a):
    return ctx.add("logical_not", [ctx.v(a, "bool")])


# -- reductions ----------------------------------------------------------------------------------------
def _reduce(op):
    def convert(ctx: Ctx, a, dim=None, keepdim=False, dtype=None):
        x = ctx.v(a)
        if dtype is not None or op == "mean":
            x = ctx.cast(x, ctx.out_dtype())
        axes = None if dim is None or dim == [] else [_axis(d, x.type.rank) for d in
                                                       (dim if isinstance(dim, (list, tuple)) else [dim])]
        return ctx.add(op, [x], {"axes": axes, "keepdims": bool(keepdim)})

    return convert


def _max_dim(ctx, a, dim, keepdim=False):
    x = ctx.v(a)
    ax = [_axis(dim, x.type.rank)]
    return (ctx.add("max", [x], {"axes": ax, "keepdims": keepdim}),
            ctx.add("argmax", [x], {"axes": ax, "keepdims": keepdim}))


def _argmax(ctx, a, dim=None, keepdim=False):
    x = ctx.v(a)
    if dim is None:
        x = ctx.add("reshape", [x], {"shape": [x.type.numel]})
        dim = 0
    return ctx.add("argmax", [x], {"axes": [_axis(dim, x.type.rank)], "keepdims": keepdim})


def _softmax(op):
    def convert(ctx, a, dim, *rest):
        x = ctx.v(a, ctx.out_dtype())
        return ctx.add(op, [x], {"axis": _axis(dim, x.type.rank)})

    return convert


def _layer_norm(ctx, a, normalized_shape, weight=None, bias=None, eps=1e-5, *rest):
    x = ctx.v(a)
    ins = [x] + ([ctx.v(weight)] if weight is not None else [])
    if bias is not None:
        if weight is None:
            ins.append(ctx.g.add_const(np.ones(normalized_shape, x.type.np_dtype), "ln_w"))
        ins.append(ctx.v(bias))
    return ctx.add("layer_norm", ins, {"normalized_ndim": len(normalized_shape), "eps": float(eps)})


# -- contractions --------------------------------------------------------------------------------------
def _linear(ctx, a, w, b=None):
    ins = [ctx.v(a), ctx.v(w)] + ([ctx.v(b)] if b is not None else [])
    return ctx.add("linear", ins)


def _matmul(ctx, a, b):
    x, y = ctx.v(a), ctx.v(b)
    sq = []
    if x.type.rank == 1:
        x = ctx.add("reshape", [x], {"shape": [1, x.type.shape[0]]})
        sq.append(-2)
    if y.type.rank == 1:
        y = ctx.add("reshape", [y], {"shape": [y.type.shape[0], 1]})
        sq.append(-1)
    out = ctx.add("matmul", [x, y])
    if sq:
        shape = [d for i, d in enumerate(out.type.shape) if i - out.type.rank not in sq]
        out = ctx.add("reshape", [out], {"shape": shape})
    return out


def _addmm(ctx, bias, a, b, beta=1, alpha=1):
    y = _matmul(ctx, a, b)
    if alpha != 1:
        y = ctx.add("mul", [y, ctx.scalar(alpha, y.type.dtype)])
    c = ctx.v(bias)
    if beta != 1:
        c = ctx.add("mul", [c, ctx.scalar(beta, c.type.dtype)])
    return ctx.add("add", [y, c])


def _convolution(ctx, x, w, b, stride, padding, dilation, transposed, output_padding, groups):
    xv, wv = ctx.v(x), ctx.v(w)
    if xv.type.rank != 4:
        return _conv1d(ctx, xv, wv, b, stride, padding, dilation, transposed, output_padding, groups)
    ins = [xv, wv] + ([ctx.v(b)] if b is not None else [])
    if transposed:
        return ctx.add("conv_transpose2d", ins, {"stride": list(stride), "padding": list(padding),
                                                 "output_padding": list(output_padding),
                                                 "dilation": list(dilation), "groups": groups})
    p = list(padding)
    return ctx.add("conv2d", ins, {"stride": list(stride), "padding": [p[0], p[1], p[0], p[1]],
                                   "dilation": list(dilation), "groups": groups})


def _conv1d(ctx, xv, wv, b, stride, padding, dilation, transposed, output_padding, groups):
    """conv1d as conv2d over a height-1 image."""
    if xv.type.rank != 3:
        raise NotImplementedError("only 1-D and 2-D convolutions are supported")
    n, c, length = xv.type.shape
    x4 = ctx.add("reshape", [xv], {"shape": [n, c, 1, length]})
    w4 = ctx.add("reshape", [wv], {"shape": list(wv.type.shape[:2]) + [1, wv.type.shape[2]]})
    ins = [x4, w4] + ([ctx.v(b)] if b is not None else [])
    if transposed:
        y = ctx.add("conv_transpose2d", ins, {"stride": [1, stride[0]], "padding": [0, padding[0]],
                                              "output_padding": [0, output_padding[0]],
                                              "dilation": [1, dilation[0]], "groups": groups})
    else:
        y = ctx.add("conv2d", ins, {"stride": [1, stride[0]], "padding": [0, padding[0], 0, padding[0]],
                                    "dilation": [1, dilation[0]], "groups": groups})
    s = y.type.shape
    return ctx.add("reshape", [y], {"shape": [s[0], s[1], s[3]]})


def _batch_norm(ctx, x, w, b, mean, var, momentum, eps):
    xv = ctx.v(x)
    c = xv.type.shape[1]
    wv = ctx.v(w) if w is not None else ctx.g.add_const(np.ones(c, xv.type.np_dtype), "bn_w")
    bv = ctx.v(b) if b is not None else ctx.g.add_const(np.zeros(c, xv.type.np_dtype), "bn_b")
    y = ctx.add("batch_norm", [xv, ctx.v(mean), ctx.v(var), wv, bv], {"eps": float(eps)})
    return (y, None, None)


# -- pooling and resizing ----------------------------------------------------------------------------------
def _pads(p):
    p = list(p) if isinstance(p, (list, tuple)) else [p, p]
    p = p * 2 if len(p) == 1 else p
    return [p[0], p[1], p[0], p[1]]


def _pair(v):
    v = list(v) if isinstance(v, (list, tuple)) else [v]
    return v * 2 if len(v) == 1 else v


def _max_pool(ctx, x, kernel, stride=(), padding=0, dilation=1, ceil_mode=False):
    y = ctx.add("max_pool2d", [ctx.v(x)], {"kernel": _pair(kernel), "stride": _pair(stride or kernel),
                                           "padding": _pads(padding), "dilation": _pair(dilation),
                                           "ceil_mode": bool(ceil_mode)})
    return (y, None)


def _avg_pool(ctx, x, kernel, stride=(), padding=0, ceil_mode=False, count_include_pad=True,
              divisor_override=None):
    return ctx.add("avg_pool2d", [ctx.v(x)], {"kernel": _pair(kernel), "stride": _pair(stride or kernel),
                                              "padding": _pads(padding), "ceil_mode": bool(ceil_mode),
                                              "count_include_pad": bool(count_include_pad),
                                              "divisor_override": divisor_override})


def _adaptive_avg(ctx, x, output_size):
    xv = ctx.v(x)
    out = _pair(output_size)
    h, w = xv.type.shape[2:]
    if out == [1, 1]:
        return ctx.add("mean", [xv], {"axes": [2, 3], "keepdims": True})
    if h % out[0] == 0 and w % out[1] == 0:
        k = [h // out[0], w // out[1]]
        return ctx.add("avg_pool2d", [xv], {"kernel": k, "stride": k})
    return ctx.add("adaptive_avg_pool2d", [xv], {"output_size": out})


def _upsample(mode):
    def convert(ctx, x, output_size=None, *rest):
        align = rest[0] if mode == "bilinear" else False
        scales = rest[1] if mode == "bilinear" else rest[0]
        xv = ctx.v(x)
        size = list(ctx.node.meta["val"].shape[2:])
        return ctx.add("resize2d", [xv], {"size": [int(s) for s in size], "mode": mode,
                                          "align_corners": bool(align),
                                          "scales": [float(s) for s in scales] if scales else None})

    return convert


def _constant_pad(ctx, x, pad, value=0.0):
    xv = ctx.v(x)
    pads = [0] * (2 * xv.type.rank)
    for i in range(len(pad) // 2):  # torch lists (before, after) from the LAST axis backwards
        ax = xv.type.rank - 1 - i
        pads[2 * ax], pads[2 * ax + 1] = pad[2 * i], pad[2 * i + 1]
    return ctx.add("pad", [xv], {"pads": pads, "value": float(value)})


# -- shapes ------------------------------------------------------------------------------------------------
def _view(ctx, x, shape):
    xv = ctx.v(x)
    out = [int(d) for d in ctx.node.meta["val"].shape]
    if list(xv.type.shape) == out:
        return xv
    return ctx.add("reshape", [xv], {"shape": out})


def _permute(ctx, x, dims):
    xv = ctx.v(x)
    perm = [_axis(d, xv.type.rank) for d in dims]
    return xv if perm == sorted(perm) else ctx.add("transpose", [xv], {"perm": perm})


def _transpose(ctx, x, d0, d1):
    xv = ctx.v(x)
    perm = list(range(xv.type.rank))
    a, b = _axis(d0, xv.type.rank), _axis(d1, xv.type.rank)
    perm[a], perm[b] = perm[b], perm[a]
    return xv if a == b else ctx.add("transpose", [xv], {"perm": perm})


def _t(ctx, x):
    xv = ctx.v(x)
    return xv if xv.type.rank < 2 else ctx.add("transpose", [xv], {"perm": [1, 0]})


def _expand(ctx, x, size, implicit=False):
    xv = ctx.v(x)
    out = [int(d) for d in ctx.node.meta["val"].shape]
    if list(xv.type.shape) == out:
        return xv
    if xv.type.rank < len(out):
        xv = ctx.add("reshape", [xv], {"shape": [1] * (len(out) - xv.type.rank) + list(xv.type.shape)})
    return ctx.add("broadcast_to", [xv], {"shape": out})


def _slice(ctx, x, dim=0, start=None, end=None, step=1):
    xv = ctx.v(x)
    ax = _axis(dim, xv.type.rank)
    n = xv.type.shape[ax]
    start, end = 0 if start is None else start, n if end is None else end
    rng = range(*slice(start, end, step).indices(n))
    if rng.start == 0 and rng.stop >= n and step == 1:
        return xv
    return ctx.add("slice", [xv], {"axis": ax, "start": rng.start, "end": rng.start + len(rng) * step,
                                   "step": step})


def _select(ctx, x, dim, index):
    xv = ctx.v(x)
    ax = _axis(dim, xv.type.rank)
    i = index % xv.type.shape[ax]
    s = ctx.add("slice", [xv], {"axis": ax, "start": i, "end": i + 1, "step": 1})
    return ctx.add("reshape", [s], {"shape": [d for k, d in enumerate(xv.type.shape) if k != ax]})


def _cat(ctx, tensors, dim=0):
    vals = [ctx.v(t, ctx.out_dtype()) for t in tensors]
    vals = [v for v in vals if v.type.numel > 0] or vals[:1]
    return vals[0] if len(vals) == 1 else ctx.add("concat", vals, {"axis": _axis(dim, vals[0].type.rank)})


def _split_sizes(ctx, x, sizes, dim=0):
    xv = ctx.v(x)
    ax = _axis(dim, xv.type.rank)
    outs, start = [], 0
    for s in sizes:
        outs.append(ctx.add("slice", [xv], {"axis": ax, "start": start, "end": start + s, "step": 1}))
        start += s
    return tuple(outs)


def _split(ctx, x, split_size, dim=0):
    n = ctx.shape(x)[_axis(dim, len(ctx.shape(x)))]
    return _split_sizes(ctx, x, [min(split_size, n - i) for i in range(0, n, split_size)], dim)


def _unbind(ctx, x, dim=0):
    xv = ctx.v(x)
    ax = _axis(dim, xv.type.rank)
    return tuple(_select(ctx, x, ax, i) for i in range(xv.type.shape[ax]))


def _squeeze(ctx, x, dims=None):
    return _view(ctx, x, None)


def _embedding(ctx, w, ids, *rest):
    return ctx.add("take", [ctx.v(w), ctx.v(ids)], {"axis": 0})


def _index_select(ctx, x, dim, index):
    xv = ctx.v(x)
    return ctx.add("take", [xv, ctx.v(index)], {"axis": _axis(dim, xv.type.rank)})


def _index(ctx, x, indices):
    """x[i0, i1, ...] (advanced indexing) with index tensors on consecutive axes, others ':'.

    The indexed axes are flattened into one and the index tensors combined into one linear index
    (broadcast like numpy), so it becomes a single ``take``.
    """
    xv = ctx.v(x)
    pos = [i for i, t in enumerate(indices) if t is not None]
    if pos != list(range(pos[0], pos[-1] + 1)):
        raise NotImplementedError("advanced indexing with index tensors on non-adjacent axes")
    a, b = pos[0], pos[-1] + 1
    shape = xv.type.shape
    idx = [ctx.v(indices[i]) for i in pos]
    if any(i.type.dtype == "bool" for i in idx):
        raise NotImplementedError("boolean mask indexing (its result shape depends on the data)")
    idx = [ctx.cast(i, "i64") for i in idx]
    lin = None
    for k, i in zip(range(a, b), idx):
        n = shape[k]
        i = ctx.add("where", [ctx.add("lt", [i, ctx.scalar(0, "i64")]), ctx.add("add", [i, ctx.scalar(n, "i64")]), i])
        stride = int(np.prod(shape[k + 1 : b], dtype=np.int64))
        term = i if stride == 1 else ctx.add("mul", [i, ctx.scalar(stride, "i64")])
        lin = term if lin is None else ctx.add("add", [lin, term])
    if b - a > 1:
        flat = list(shape[:a]) + [int(np.prod(shape[a:b], dtype=np.int64))] + list(shape[b:])
        xv = ctx.add("reshape", [xv], {"shape": flat})
    return ctx.add("take", [xv, lin], {"axis": a})


def _no_op(ctx, *args, **kw):
    return None


def _sdpa(ctx, q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
    if enable_gqa:
        raise NotImplementedError("scaled_dot_product_attention(enable_gqa=True)")
    ins = [ctx.v(q), ctx.v(k), ctx.v(v)]
    if attn_mask is not None:
        m = ctx.v(attn_mask)
        ins.append(m if m.type.dtype == "bool" else ctx.cast(m, ins[0].type.dtype))
    return ctx.add("attention", ins, {"scale": None if scale is None else float(scale),
                                      "causal": bool(is_causal)})


def _scalar_tensor_like(ctx, x, value, *args, **kw):
    """full_like / zeros_like / ones_like of a non-constant tensor: the result only depends on the shape."""
    meta = ctx.node.meta["val"]
    arr = torch.full(tuple(meta.shape), value, dtype=meta.dtype)
    return ctx.const(arr, ctx.node.name)


CONVERTERS = {
    aten.add.Tensor: _binary("add"), aten.add.Scalar: _binary("add"),
    aten.sub.Tensor: _binary("sub"), aten.sub.Scalar: _binary("sub"), aten.rsub.Scalar: _rsub,
    aten.rsub.Tensor: _rsub,
    aten.mul.Tensor: _binary("mul"), aten.mul.Scalar: _binary("mul"),
    aten.div.Tensor: _binary("div"), aten.div.Scalar: _binary("div"), aten.div.Tensor_mode: _div_mode,
    aten.pow.Tensor_Scalar: _pow, aten.pow.Tensor_Tensor: _pow,
    aten.maximum.default: _binary("maximum"), aten.minimum.default: _binary("minimum"),
    aten.eq.Tensor: _binary("eq", True), aten.eq.Scalar: _binary("eq", True),
    aten.ne.Tensor: _binary("ne", True), aten.ne.Scalar: _binary("ne", True),
    aten.lt.Tensor: _binary("lt", True), aten.lt.Scalar: _binary("lt", True),
    aten.le.Tensor: _binary("le", True), aten.le.Scalar: _binary("le", True),
    aten.gt.Tensor: _binary("gt", True), aten.gt.Scalar: _binary("gt", True),
    aten.ge.Tensor: _binary("ge", True), aten.ge.Scalar: _binary("ge", True),
    aten.logical_and.default: _binary("logical_and", True), aten.logical_or.default: _binary("logical_or", True),
    aten.bitwise_and.Tensor: _binary("logical_and", True), aten.bitwise_or.Tensor: _binary("logical_or", True),
    aten.logical_not.default: _logical_not, aten.bitwise_not.default: _logical_not,
    aten.where.self: _where, aten.masked_fill.Scalar: _masked_fill, aten.masked_fill.Tensor: _masked_fill,
    aten.neg.default: _unary("neg"), aten.abs.default: _unary("abs"), aten.exp.default: _unary("exp"),
    aten.log.default: _unary("log"), aten.sqrt.default: _unary("sqrt"), aten.rsqrt.default: _unary("rsqrt"),
    aten.reciprocal.default: _unary("reciprocal"), aten.sin.default: _unary("sin"),
    aten.cos.default: _unary("cos"), aten.tanh.default: _unary("tanh"), aten.erf.default: _unary("erf"),
    aten.floor.default: _unary("floor"), aten.ceil.default: _unary("ceil"), aten.round.default: _unary("round"),
    aten.sigmoid.default: _unary("sigmoid"), aten.relu.default: _unary("relu"),
    aten.gelu.default: _unary("gelu"), aten.silu.default: _unary("silu"),
    aten.hardswish.default: _unary("hardswish"), aten.hardsigmoid.default: _unary("hardsigmoid"),
    aten.leaky_relu.default: _unary("leaky_relu"),
    aten.hardtanh.default: lambda ctx, a, lo=-1.0, hi=1.0: _clamp(ctx, a, lo, hi),
    aten.relu6.default: lambda ctx, a: _clamp(ctx, a, 0.0, 6.0),
    aten.clamp.default: _clamp, aten.clamp.Tensor: _clamp,
    aten.clamp_min.default: lambda ctx, a, lo: _clamp(ctx, a, lo, None),
    aten.clamp_max.default: lambda ctx, a, hi: _clamp(ctx, a, None, hi),
    aten._to_copy.default: _to_dtype, aten.to.dtype: _to_dtype, aten.type_as.default: _to_dtype,
    aten.clone.default: _identity, aten.alias.default: _identity, aten.detach.default: _identity,
    aten.contiguous.default: _identity, aten.lift_fresh_copy.default: _identity,
    aten.dropout.default: _identity, aten._assert_tensor_metadata.default: _no_op,
    aten.sum.dim_IntList: _reduce("sum"), aten.sum.default: _reduce("sum"), aten.mean.dim: _reduce("mean"),
    aten.mean.default: _reduce("mean"), aten.amax.default: _reduce("max"), aten.amin.default: _reduce("min"),
    aten.max.dim: _max_dim, aten.argmax.default: _argmax,
    aten.softmax.int: _softmax("softmax"), aten._softmax.default: _softmax("softmax"),
    aten.log_softmax.int: _softmax("log_softmax"), aten._log_softmax.default: _softmax("log_softmax"),
    aten.layer_norm.default: _layer_norm,
    aten.linear.default: _linear, aten.matmul.default: _matmul, aten.mm.default: _matmul,
    aten.bmm.default: _matmul, aten.addmm.default: _addmm,
    aten.convolution.default: _convolution,
    aten._native_batch_norm_legit_no_training.default: _batch_norm,
    aten.max_pool2d_with_indices.default: _max_pool, aten.max_pool2d.default: lambda *a, **k: _max_pool(*a, **k)[0],
    aten.avg_pool2d.default: _avg_pool, aten.adaptive_avg_pool2d.default: _adaptive_avg,
    aten._adaptive_avg_pool2d.default: _adaptive_avg,
    aten.upsample_bilinear2d.vec: _upsample("bilinear"), aten.upsample_nearest2d.vec: _upsample("nearest"),
    aten.constant_pad_nd.default: _constant_pad,
    aten.view.default: _view, aten._unsafe_view.default: _view, aten.reshape.default: _view,
    aten.squeeze.dim: _squeeze, aten.squeeze.dims: _squeeze, aten.squeeze.default: _squeeze,
    aten.unsqueeze.default: _view, aten.flatten.using_ints: _view,
    aten.permute.default: _permute, aten.transpose.int: _transpose, aten.t.default: _t,
    aten.expand.default: _expand, aten.slice.Tensor: _slice, aten.select.int: _select,
    aten.cat.default: _cat, aten.split.Tensor: _split, aten.split_with_sizes.default: _split_sizes,
    aten.unbind.int: _unbind,
    aten.embedding.default: _embedding, aten.index_select.default: _index_select, aten.index.Tensor: _index,
    aten.scaled_dot_product_attention.default: _sdpa,
    aten.full_like.default: _scalar_tensor_like,
    aten.zeros_like.default: lambda ctx, x, *a, **k: _scalar_tensor_like(ctx, x, 0),
    aten.ones_like.default: lambda ctx, x, *a, **k: _scalar_tensor_like(ctx, x, 1),
}

