"""Complex tensors, as pairs of real IR values: FFTs (``torch.fft``, ``torch.stft``), their magnitudes and FNet's
token mixing, without a complex type in the IR.

A complex64 tensor in the traced graph becomes ``Complex(re, im)`` (two f32 values). The discrete Fourier transform
along an axis is two matmuls with constant cosine and sine matrices (O(n^2) per axis, as dense as a linear layer of
that width):

    X = FFT(a + ib) along an axis of n:  re = a C + b S,  im = b C - a S   (C[j, k] = cos(2 pi jk / n), S: sin)

(the inverse flips the sign of S). Shape ops apply to both parts; ``abs`` is the magnitude, ``view_as_real`` stacks
the parts. Any other op on a complex tensor, and a complex model output, is refused by name.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ...ir import Value
from .ctx import aten, norm_dim


@dataclass
class Complex:
    """A complex tensor as its real and imaginary parts (same shape, f32 or f64)."""

    re: Value
    im: Value


def is_complex(dt) -> bool:
    return dt in (torch.complex64, torch.complex128)


def _real_dtype(node) -> str:
    val = node.meta["val"]
    return "f64" if val.dtype in (torch.complex128, torch.float64) else "f32"


def complex_value(ctx, a) -> Complex | None:
    """``a`` as a Complex: a converted complex tensor, or a complex constant (a weight: its parts become two
    constants); None for anything else."""
    if not isinstance(a, torch.fx.Node):
        return None
    got = ctx.env.get(a.name)
    if isinstance(got, Complex):
        return got
    t = ctx.torch_consts.get(a.name)
    if isinstance(t, torch.Tensor) and is_complex(t.dtype):
        got = Complex(ctx.const(t.real, f"{a.name}_re"), ctx.const(t.imag, f"{a.name}_im"))
        ctx.env[a.name] = got
        return got
    return None


def _part(ctx, a) -> Complex:
    got = complex_value(ctx, a)
    if got is None:
        raise NotImplementedError("mixing complex and real tensors here")
    return got


def _to_complex(ctx, x, **kwargs):
    """``x.to(torch.complex64)`` of a real tensor: the tensor and zeros. A complex tensor to a real dtype: its real
    part, as torch (which warns that the imaginary part is discarded); to bool: nonzero in either part."""
    dt = _real_dtype(ctx.node)
    got = complex_value(ctx, x)
    if got is not None and not is_complex(ctx.node.meta["val"].dtype):
        if ctx.out_dtype() == "bool":  # torch: nonzero in either part
            zero = ctx.scalar(0.0, got.re.type.dtype)
            return ctx.add("logical_or", [ctx.add("ne", [got.re, zero]), ctx.add("ne", [got.im, zero])])
        return ctx.cast(got.re, ctx.out_dtype())
    if got is not None:
        return Complex(ctx.cast(got.re, dt), ctx.cast(got.im, dt))
    re = ctx.v(x, dt)
    return Complex(re, _zeros_like(ctx, re))


def _zeros_like(ctx, v):
    """Zeros of ``v``'s shape (not ``v * 0``: an infinite part would give NaN)."""
    return ctx.add("broadcast_to", [ctx.scalar(0.0, v.type.dtype)], {"shape": list(v.type.shape)})


def _dft_matrices(n: int, m: int, dtype: str) -> tuple[np.ndarray, np.ndarray]:
    """cos and sin of 2 pi jk / n for j < n, k < m (exact integer jk mod n before the angle)."""
    jk = (np.arange(n)[:, None] * np.arange(m)[None, :]) % n
    angle = 2 * np.pi * jk / n
    np_dt = np.float64 if dtype == "f64" else np.float32
    return np.cos(angle).astype(np_dt), np.sin(angle).astype(np_dt)


def _along(ctx, x: Value, axis: int, matrix: np.ndarray, name: str) -> Value:
    """``x`` times ``matrix`` ([n, m]) along ``axis`` (moved last and back)."""
    rank = x.type.rank
    perm = list(range(rank))
    perm[axis], perm[-1] = perm[-1], perm[axis]
    moved = x if axis == rank - 1 else ctx.add("transpose", [x], {"perm": perm})
    if moved.type.rank == 1:
        moved = ctx.add("reshape", [moved], {"shape": [1, moved.type.shape[0]]})
    y = ctx.add("matmul", [moved, ctx.g.add_const(matrix, name)])
    if rank == 1:
        y = ctx.add("reshape", [y], {"shape": [matrix.shape[1]]})
    return y if axis == rank - 1 else ctx.add("transpose", [y], {"perm": perm})


def _dft(ctx, re: Value, im: Value | None, axis: int, forward: bool, keep: int | None = None):
    """One axis's DFT of ``re + i im`` (``im`` None: a real input), keeping the first ``keep`` outputs."""
    n = re.type.shape[axis]
    c, s = _dft_matrices(n, keep or n, re.type.dtype)
    sign = 1.0 if forward else -1.0  # forward: e^{-i}: re' = a C + b S, im' = b C - a S
    a_c, a_s = _along(ctx, re, axis, c, "dft_cos"), _along(ctx, re, axis, s * sign, "dft_sin")
    if im is None:
        return a_c, ctx.add("neg", [a_s])
    b_c, b_s = _along(ctx, im, axis, c, "dft_cos"), _along(ctx, im, axis, s * sign, "dft_sin")
    return ctx.add("add", [a_c, b_s]), ctx.add("sub", [b_c, a_s])


def _normalize(ctx, parts, sizes: list[int], mode: int):
    """torch's fft normalization: 0 none, 1 by 1/sqrt(n), 2 by 1/n (n the transformed sizes' product)."""
    if mode == 0:
        return parts
    n = float(np.prod(sizes))
    f = 1.0 / (np.sqrt(n) if mode == 1 else n)
    return tuple(ctx.add("mul", [p, ctx.scalar(f, p.type.dtype)]) for p in parts)


def _fft_c2c(ctx, x, dim, normalization, forward):
    z = _part(ctx, x)
    re, im = z.re, z.im
    axes = [norm_dim(d, re.type.rank) for d in dim]
    for ax in axes:
        re, im = _dft(ctx, re, im, ax, forward)
    return Complex(*_normalize(ctx, (re, im), [z.re.type.shape[a] for a in axes], normalization))


def _fft_r2c(ctx, x, dim, normalization, onesided):
    xv = ctx.v(x, _real_dtype(ctx.node))
    axes = [norm_dim(d, xv.type.rank) for d in dim]
    last = axes[-1]  # torch: the one-sided half is of the last transformed axis, which goes first
    re, im = _dft(ctx, xv, None, last, True, xv.type.shape[last] // 2 + 1 if onesided else None)
    for ax in axes[:-1]:
        re, im = _dft(ctx, re, im, ax, True)
    return Complex(*_normalize(ctx, (re, im), [xv.type.shape[a] for a in axes], normalization))


def _fft_c2r(ctx, x, dim, normalization, last_dim_size):
    """The inverse of ``_fft_r2c``: a one-sided spectrum (``n // 2 + 1`` along the last axis) to ``n`` real values.
    Its other axes first (complex inverse DFTs), then the last: ``sum_k w_k (re_k cos - im_k sin)`` with ``w`` 2 for
    the terms that stand for a conjugate pair, 1 for the mean (and, for even ``n``, the middle)."""
    z = _part(ctx, x)
    re, im = z.re, z.im
    axes = [norm_dim(d, re.type.rank) for d in dim]
    for ax in axes[:-1]:
        re, im = _dft(ctx, re, im, ax, False)
    last, n = axes[-1], int(last_dim_size)
    m = re.type.shape[last]
    k = np.arange(m)
    weight = np.where((k == 0) | ((n % 2 == 0) & (k == n // 2)), 1.0, 2.0)[:, None]
    c, s = _dft_matrices(n, m, re.type.dtype)  # [n, m]: transposed, the [m, n] map from m terms to n values
    out = ctx.add("sub", [_along(ctx, re, last, (weight * c.T).astype(c.dtype), "idft_cos"),
                          _along(ctx, im, last, (weight * s.T).astype(s.dtype), "idft_sin")])
    sizes = [z.re.type.shape[a] for a in axes[:-1]] + [n]
    return _normalize(ctx, (out,), sizes, normalization)[0]


def _view_as_real(ctx, x):
    z = _part(ctx, x)
    shape = list(z.re.type.shape) + [1]
    parts = [ctx.add("reshape", [p], {"shape": shape}) for p in (z.re, z.im)]
    return ctx.add("concat", parts, {"axis": len(shape) - 1})


def _view_as_complex(ctx, x):
    xv = ctx.v(x)
    last = xv.type.rank - 1
    return Complex(*[ctx.add("reshape", [ctx.add("slice", [xv], {"axis": last, "start": k, "end": k + 1, "step": 1})],
                                {"shape": list(xv.type.shape[:-1])}) for k in (0, 1)])


def _abs(ctx, x):
    z = _part(ctx, x)
    return ctx.add("sqrt", [ctx.add("add", [ctx.add("mul", [z.re, z.re]), ctx.add("mul", [z.im, z.im])])])


def _operand(ctx, a, dt: str):
    """A complex operand as Complex, a real one (tensor or Python number) as a real Value of ``dt``."""
    got = complex_value(ctx, a)
    if got is not None:
        return got
    if isinstance(a, complex):
        return Complex(ctx.scalar(a.real, dt), ctx.scalar(a.imag, dt))
    return ctx.v(a, dt)


def _add_sub(op):
    def convert(ctx, a, b, alpha=1):
        dt = _real_dtype(ctx.node)
        x, y = _operand(ctx, a, dt), _operand(ctx, b, dt)
        if isinstance(alpha, complex):
            raise NotImplementedError("with a complex alpha")
        if alpha != 1:
            y = _mul_parts(ctx, y, ctx.scalar(float(alpha), dt)) if isinstance(y, Complex) else \
                ctx.add("mul", [y, ctx.scalar(float(alpha), dt)])
        if not isinstance(x, Complex):  # real +- complex
            x = Complex(x, _zeros_like(ctx, y.im))
        if not isinstance(y, Complex):
            return Complex(ctx.add(op, [x.re, y]), x.im)
        return Complex(ctx.add(op, [x.re, y.re]), ctx.add(op, [x.im, y.im]))

    return convert


def _mul_parts(ctx, x, y):
    """x * y for Complex or real Values (at least one Complex)."""
    if not isinstance(x, Complex):
        x, y = y, x
    if not isinstance(y, Complex):
        return Complex(ctx.add("mul", [x.re, y]), ctx.add("mul", [x.im, y]))
    return Complex(ctx.add("sub", [ctx.add("mul", [x.re, y.re]), ctx.add("mul", [x.im, y.im])]),
                   ctx.add("add", [ctx.add("mul", [x.re, y.im]), ctx.add("mul", [x.im, y.re])]))


def _mul(ctx, a, b):
    dt = _real_dtype(ctx.node)
    return _mul_parts(ctx, _operand(ctx, a, dt), _operand(ctx, b, dt))


def _matmul(ctx, a, b):
    """Complex (or mixed) matrix products: four real ones, ``(ar br - ai bi) + i (ar bi + ai br)``."""
    dt = _real_dtype(ctx.node)
    x, y = _operand(ctx, a, dt), _operand(ctx, b, dt)
    if any((v.re if isinstance(v, Complex) else v).type.rank < 2 for v in (x, y)):
        raise NotImplementedError("of a vector (reshape it to a matrix)")
    x = x if isinstance(x, Complex) else Complex(x, None)
    y = y if isinstance(y, Complex) else Complex(y, None)

    def mm(p, q):
        return None if p is None or q is None else ctx.add("matmul", [p, q])

    def combine(op, p, q):
        return q if p is None else p if q is None else ctx.add(op, [p, q])

    re = combine("sub", mm(x.re, y.re), mm(x.im, y.im))
    im = combine("add", mm(x.re, y.im), mm(x.im, y.re))
    return Complex(re, im if im is not None else _zeros_like(ctx, re))


def _div(ctx, a, b):
    dt = _real_dtype(ctx.node)
    x, y = _operand(ctx, a, dt), _operand(ctx, b, dt)
    if isinstance(y, Complex):
        raise NotImplementedError("dividing by a complex tensor")
    return Complex(ctx.add("div", [x.re, y]), ctx.add("div", [x.im, y]))


def _conj(ctx, x):
    z = _part(ctx, x)
    return Complex(z.re, ctx.add("neg", [z.im]))


def _real(ctx, x):
    return ctx.add("copy", [_part(ctx, x).re])


def _imag(ctx, x):
    return ctx.add("copy", [_part(ctx, x).im])


#: ops with a complex input or output, converted here
CONVERTERS = {
    aten._to_copy.default: _to_complex, aten._fft_c2c.default: _fft_c2c, aten._fft_r2c.default: _fft_r2c,
    aten._fft_c2r.default: _fft_c2r,
    aten.view_as_real.default: _view_as_real, aten.view_as_complex.default: _view_as_complex,
    aten.abs.default: _abs, aten.real.default: _real, aten.imag.default: _imag,
    aten.add.Tensor: _add_sub("add"), aten.sub.Tensor: _add_sub("sub"), aten.mul.Tensor: _mul,
    aten.mul.Scalar: _mul, aten.div.Tensor: _div, aten.div.Scalar: _div,
    aten._conj.default: _conj, aten.conj_physical.default: _conj,
    aten.mm.default: _matmul, aten.bmm.default: _matmul, aten.matmul.default: _matmul,
    aten.resolve_conj.default: _part, aten.resolve_neg.default: _part,  # (the pair is already materialized)
}

#: ops that move or copy elements without arithmetic: applied to each part with the real converter
PARTWISE = {
    aten.view.default, aten._unsafe_view.default, aten.reshape.default, aten.permute.default, aten.transpose.int,
    aten.unsqueeze.default, aten.squeeze.dim, aten.squeeze.dims, aten.squeeze.default, aten.slice.Tensor,
    aten.select.int, aten.clone.default, aten.alias.default, aten.expand.default, aten.flip.default,
    aten.constant_pad_nd.default, aten.cat.default,
}


def convert(ctx, node, real_converters: dict):
    """``node``, which reads or makes a complex tensor: a Complex, a real Value, or NotImplementedError."""
    target = node.target
    if target in CONVERTERS:
        return CONVERTERS[target](ctx, *node.args, **node.kwargs)
    if target == aten.constant_pad_nd.default and (node.args[2:] or [0])[0] != 0:
        raise NotImplementedError("padding a complex tensor with a value other than 0")
    if target in PARTWISE and target in real_converters:
        ins = [a for a in node.all_input_nodes if complex_value(ctx, a) is not None]
        if len(ins) != len(node.all_input_nodes):
            raise NotImplementedError("joining complex and real tensors")
        saved = {a.name: complex_value(ctx, a) for a in ins}
        folded = {a.name: ctx.torch_consts.pop(a.name) for a in ins if a.name in ctx.torch_consts}
        val = node.meta.get("val")
        parts = []
        try:  # each part in the complex inputs' place (a complex constant's torch tensor hidden meanwhile), the
            if isinstance(val, torch.Tensor) and is_complex(val.dtype):  # node's recorded type that of a part
                node.meta["val"] = val.real
            for which in ("re", "im"):
                for a in ins:
                    ctx.env[a.name] = getattr(saved[a.name], which)
                parts.append(real_converters[target](ctx, *node.args, **node.kwargs))
        finally:
            ctx.env.update(saved)
            ctx.torch_consts.update(folded)
            node.meta["val"] = val
        return Complex(*parts)
    raise NotImplementedError("on complex tensors (FFTs, their parts, magnitudes and shape ops are covered)")
