"""ATen ops beyond the model zoo's (issue 22's list): each compiled and run against PyTorch on edge cases (rank 0,
negative and repeated dims, unbatched pooling, NaN and infinities, zeros, odd sizes), and the ops still missing
refused with one ``UnsupportedModelError`` that names them, never a crash."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import edgeopt
from edgeopt.errors import UnsupportedModelError

torch.manual_seed(0)
X = torch.randn(2, 6, 5, 3)
SPECIAL = torch.tensor([[0.0, -0.0, 1e-8, -1e-8, 0.5, -0.5, 3.0, -3.0, 30.0, -30.0, 100.0, -100.0,
                         math.inf, -math.inf, math.nan]])
IDX = torch.randint(0, 5, (2, 6, 4, 3))


def _assign(x, write):
    out = torch.zeros_like(x)
    write(out, x)
    return out


def _grouped_mm(x, w, offs):
    import transformers.integrations.moe  # noqa: F401  (registers the op)

    return torch.ops.transformers.grouped_mm_fallback(x, w, offs)


def _checked(i):
    torch._check(i.max().item() <= 5)
    return F.one_hot(i, 6).float()


class Spectral(torch.nn.Module):
    """A Fourier neural operator's spectral layer: complex weights on the lowest modes (a product, an einsum)."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.randn(6, 3, dtype=torch.cfloat))
        self.mix = torch.nn.Parameter(torch.randn(6, 4, 3, dtype=torch.cfloat) / 3)

    def forward(self, x):
        modes = torch.fft.rfft(x)[..., :3]
        return torch.fft.irfft(torch.einsum("bix,iox->box", modes * self.w, self.mix), n=x.shape[-1])


class PositionBuffer(torch.nn.Module):
    """Indexes at a buffer's value (``self.pos.item()``): a number the frontend folds, slices at it included."""

    def __init__(self):
        super().__init__()
        self.register_buffer("pos", torch.tensor(2))

    def forward(self, x):
        p = self.pos.item()
        return (x[:, p + 1] + x[:, self.pos] + x[p - 1:p + 2].sum(0)[:1]).reshape(-1)


class Fn(torch.nn.Module):
    def __init__(self, f):
        super().__init__()
        self.f = f

    def forward(self, *args):
        return self.f(*args)


CASES = {
    # reductions: rank 0, all dims, negative and several dims, keepdim
    "sum_rank0_dim0": (lambda x: x.sum(0), [torch.tensor(2.5)]),
    "mean_rank0": (lambda x: x.mean(-1), [torch.tensor(2.5)]),
    "amax_rank0": (lambda x: x.amax(0), [torch.tensor(-1.5)]),
    "var": (lambda x: x.var(1), [X]),
    "var_all": (lambda x: x.var(), [X]),
    "var_correction0_keepdim": (lambda x: torch.var(x, (-1, 1), correction=0, keepdim=True), [X]),
    "std": (lambda x: x.std((2, 3), keepdim=True), [X]),
    "var_rank0": (lambda x: x.var(), [torch.tensor(2.0)]),
    "prod": (lambda x: x.prod(1), [X]),
    "var_mean_std_mean": (lambda x: torch.var_mean(x, (1, 2), keepdim=True)[0] + torch.std_mean(x, 1)[1].sum(), [X]),
    "prod_all_int": (lambda x: x.prod(), [torch.tensor([[1, -2, 3], [4, 1, -1]], dtype=torch.int32)]),
    "argmin": (lambda x: x.argmin(-2), [X]),
    "sum_of_bools_is_int64": (lambda x: (x > 0).sum(1), [X]),
    "sum_of_int32_is_int64": (lambda x: x.sum(), [torch.arange(-4, 8, dtype=torch.int32).reshape(3, 4)]),
    "argmin_all": (lambda x: x.argmin(), [X]),
    "argmin_nan": (lambda x: x.argmin(1), [torch.tensor([[1.0, math.nan, -1.0], [2.0, 0.0, -3.0]])]),
    "cumsum": (lambda x: x.cumsum(2), [X]),
    "cumsum_neg_dim_int": (lambda x: x.cumsum(-1), [torch.randint(-5, 5, (3, 7), dtype=torch.int32)]),
    "cumsum_of_a_long_row": (lambda x: x.reshape(-1).repeat(30).cumsum(0), [X]),
    "cumsum_positions_of_a_long_mask": (lambda m: m.long().cumsum(-1) * m - 1,  # OPT's learned positions
                                        [torch.rand(2, 4096) > 0.1]),
    "any": (lambda x: (x > 1.0).any(1), [X]),
    "all_all": (lambda x: (x > -9.0).all(), [X]),
    "vector_norm": (lambda x: torch.linalg.vector_norm(x, dim=1), [X]),
    "vector_norm_inf": (lambda x: torch.linalg.vector_norm(x, ord=math.inf, dim=(1, 2)), [X]),
    "vector_norm_p3": (lambda x: torch.linalg.vector_norm(x, ord=3, dim=-1, keepdim=True), [X]),
    "normalize": (lambda x: F.normalize(x, dim=1), [X]),
    # elementwise, on zeros, tiny and huge values, infinities and NaN
    "sign": (torch.sign, [SPECIAL]),
    "log1p": (lambda x: torch.log1p(x.abs()), [SPECIAL]),
    "expm1": (torch.expm1, [SPECIAL]),
    "trunc": (torch.trunc, [SPECIAL]),
    "frac": (torch.frac, [SPECIAL[:, :12]]),
    "elu": (F.elu, [SPECIAL]),
    "selu": (F.selu, [SPECIAL]),
    "celu": (lambda x: F.celu(x, 0.7), [SPECIAL]),
    "softplus": (F.softplus, [SPECIAL]),
    "mish": (F.mish, [SPECIAL]),
    "logsigmoid": (F.logsigmoid, [SPECIAL]),
    "fmod": (lambda x: torch.fmod(x, 0.7), [X]),
    "remainder": (lambda x: torch.remainder(x, -0.7), [X]),
    # bit operations on integers and bools; shifts out of [0, width) as torch (0, or the sign fill)
    "bitwise_i64": (lambda i, j: (i & j) * 3 + (i | 5) - (i ^ j) + ~i, [torch.tensor([5, -7, 0, 2**40 + 3, -1, 9]),
                                                                        torch.tensor([0, 1, 2, 63, 64, -1])]),
    "shifts_i64": (lambda i, j: (i << j) + (i >> j) * 7 + (i << 3) - (-i >> 65),
                   [torch.tensor([5, -7, 0, 2**40, -1, 9]), torch.tensor([0, 1, 2, 63, 64, -1])]),
    "scalar_shifted_by_tensor": (lambda i: (1 << i) + (3 >> i) + (6 & i) + (5 | i) + (9 ^ i),
                                 [torch.tensor([0, 1, 5, 62, 63, 64, -1])]),
    "bitwise_bool_u8_i16": (lambda b, u, s: (b ^ ~b.flip(0)).int() + (u >> 2).int() + ((s << 3) ^ ~s).int(),
                            [torch.rand(6) > 0.5, torch.randint(0, 255, (6,), dtype=torch.uint8),
                             torch.randint(-300, 300, (6,), dtype=torch.int16)]),
    "remainder_int": (lambda x: torch.remainder(x, 3), [torch.arange(-7, 8, dtype=torch.int32)]),
    "pow_int": (lambda x, e: x ** 3 + 2 ** e + x ** e, [torch.arange(-7, 8), torch.tensor([0, 1, 5, 40, -1] * 3)]),
    "pow_int8_wrapping": (lambda x, e: x ** e, [torch.arange(-7, 8, dtype=torch.int8),
                                                torch.tensor([1, 5, 64, 100, 127, -1, 9, 3, 0] * 2)[:15].char()]),
    "pow_scalar_base": (lambda x: 2.0 ** x + 0.5 ** x.abs(), [X]),
    "div_by_zero": (lambda x: x / 0.0 + x / -0.0 * 0.5, [SPECIAL]),
    "bool_compare": (lambda a, b: ((a > 0) != (b > 0)).float() + ((a > 0) == (b < 0)).float(), [X, X.flip(0)]),
    "bool_arithmetic": (lambda a: ((a > 0) * (a < 1)).float() + ((a > 1) + (a < -1)).float(), [X]),
    "atan2": (lambda a, b: torch.atan2(a, b), [SPECIAL, SPECIAL.flip(1)]),
    # inverse trigonometric and hyperbolic functions, written with the IR's (aten/composites.py)
    "atan": (torch.atan, [SPECIAL]),
    "asin_acos": (lambda x: torch.asin(x) + 2 * torch.acos(x), [torch.cat([SPECIAL, torch.tensor([[0.999, -1.]])], 1)]),
    "tan": (torch.tan, [X]),
    "sinh_cosh": (lambda x: torch.sinh(x) + torch.cosh(x) * 0.5, [SPECIAL]),
    "sinh_cosh_near_overflow": (lambda x: torch.sinh(x) / 1e30 + torch.cosh(x) / 1e30,
                                [torch.tensor([88.9, -89.3, 20.5])]),
    "asinh": (torch.asinh, [torch.cat([SPECIAL, torch.tensor([[1e10, -1e10, 1e-20]])], 1)]),
    "acosh": (torch.acosh, [torch.cat([SPECIAL, torch.tensor([[1.0, 1.0001, 1e10]])], 1)]),
    "atanh": (torch.atanh, [torch.cat([SPECIAL, torch.tensor([[0.999, -1.0, 1.0, -0.99999994, -0.999999]])], 1)]),
    "atan2_int_broadcast": (lambda a, b: torch.atan2(a, b), [torch.arange(-3, 3).reshape(2, 3), torch.tensor(2)]),
    # NaN tests: TVM folds x != x and x == x, and compares floats ordered
    "ne_eq_nan": (lambda a, b: (a != b).float() * 2 + (a == b).float() + (a != a).float() * 4,
                  [SPECIAL, SPECIAL.flip(1)]),
    "isnan_isinf": (lambda a: torch.isnan(a).float() + torch.isinf(a).float() * 2 + torch.isposinf(a).float() * 4
                    + torch.isneginf(a).float() * 8, [SPECIAL]),
    "isfinite": (lambda a: torch.isfinite(a), [SPECIAL]),
    "isnan_isinf_isfinite_int": (lambda i: torch.isnan(i).int() + torch.isinf(i).int() * 2
                                 + torch.isfinite(i).int() * 4, [torch.arange(-3, 5)]),
    "logical_of_floats": (lambda a, b: torch.logical_and(a, b).float() + torch.logical_or(a, b).float() * 2,
                          [SPECIAL, SPECIAL.flip(1)]),
    # selection: min over a dim with its index, topk (a merge sort's first k: NaN the largest)
    "min_dim": (lambda x: x.min(dim=2)[0] + x.min(dim=2)[1].float(), [X]),
    "argmax_rank0_keepdim": (lambda x: torch.argmax(x, 0, keepdim=True), [torch.tensor(2.5)]),
    "argmax_all_keepdim": (lambda x: torch.argmax(x, keepdim=True), [X]),
    "argmin_rank0": (lambda x: torch.argmin(x, 0, keepdim=True), [torch.tensor(2.5)]),
    "index_select_rank0": (lambda x, i: torch.index_select(x, 0, i), [torch.tensor(2.5), torch.tensor([0])]),
    "topk_values": (lambda x: torch.topk(x, 2)[0], [X]),
    "topk_indices_dim1_smallest": (lambda x: torch.topk(x, 3, dim=1, largest=False)[1], [X]),
    "topk_nan": (lambda x: torch.topk(x, 4)[0], [SPECIAL]),
    "topk_nan_smallest_indices": (lambda x: torch.topk(x, 5, largest=False)[1], [SPECIAL]),
    "topk_int": (lambda x: torch.topk(x, 2, dim=0)[1], [torch.tensor([[3, -1], [7, 2], [0, 9]])]),
    "topk_of_a_long_row": (lambda x: torch.topk(x.reshape(-1).repeat(40) + torch.arange(7200) * 1e-4, 100,
                                                largest=False)[1], [X]),
    "topk_of_a_long_row_with_nan_values": (lambda x: torch.topk(x.reshape(-1).repeat(40), 30)[0], [SPECIAL]),
    # sort: the top n of n (stable; NaN last ascending, first descending), argsort exports as sort
    "sort_values_nan": (lambda x: torch.sort(x)[0], [SPECIAL]),
    "sort_descending_indices_ties": (lambda x: torch.sort(x.round(), dim=1, descending=True, stable=True)[1], [X]),
    "sort_of_a_long_row_ties_and_nan": (lambda x: torch.sort(x.reshape(-1).repeat(300), stable=True)[1],
                                        [SPECIAL]),
    "kthvalue_of_a_long_row": (lambda x: torch.kthvalue(x.reshape(-1).repeat(30), 2500)[0], [X]),
    "histc": (lambda x: torch.histc(x, bins=7, min=-1.5, max=2.0), [torch.cat([X.reshape(-1), SPECIAL[0],
                                                                          torch.linspace(-1.5, 2.0, 8)])]),
    "histc_one_bin": (lambda x: torch.histc(x, bins=1, min=0.0, max=1.0), [X]),
    "histc_inexact_range": (lambda x: torch.histc(x, bins=13, min=-1.1, max=0.7), [torch.linspace(-1.1, 0.7, 131)]),
    "histc_expert_ids": (lambda i: torch.histc(i.float(), bins=4, min=0, max=3), [torch.randint(0, 4, (2, 9))]),
    "argsort_int_dim0": (lambda x: torch.argsort(x, dim=0, stable=True), [torch.randint(0, 3, (6, 4))]),
    # shapes
    "repeat": (lambda x: x.repeat(1, 2, 1, 3), [X]),
    "repeat_new_axes": (lambda x: x.repeat(2, 1, 1, 1, 2), [X]),
    "tile": (lambda x: x.tile((2, 1)), [X]),
    "flip": (lambda x: x.flip(1, -1), [X]),
    "cdist_p2_p1_inf_frac": (lambda a, b: torch.cdist(a, b) + torch.cdist(a, b, p=1) + torch.cdist(a, b, p=math.inf)
                             + torch.cdist(a, b, p=0.5), [torch.randn(2, 5, 3), torch.randn(2, 4, 3)]),
    "cdist_batch_broadcast": (lambda a, b: torch.cdist(a, b, p=1) + torch.cdist(a[0, 0], b, p=3),
                              [torch.randn(2, 1, 5, 3), torch.randn(1, 2, 4, 3)]),
    "cdist_p2_many_rows_as_torch_exports_it": (lambda a, b: torch.cdist(a, b), [torch.randn(30, 3), torch.randn(7, 3)]),
    "grouped_mm_rows_past_the_last_offset": (lambda x, w: _grouped_mm(x, w, torch.tensor([1, 3, 3, 4])),
                                             [torch.randn(6, 3), torch.randn(4, 3, 2)]),
    "embedding_bag_modes": (lambda i: sum(torch.nn.functional.embedding_bag(i, torch.arange(40.).reshape(10, 4) / 7,
                                                                            mode=m) for m in ("sum", "mean", "max")),
                            [torch.randint(0, 10, (3, 5))]),
    "diagonal": (lambda x: torch.diagonal(x, dim1=2, dim2=3), [X]),
    "diagonal_offsets": (lambda x: torch.diagonal(x, 2, 1, 3) + torch.diagonal(x, -3, -1, 0).sum(), [X]),
    "slice_empty_output": (lambda x: x[:, 3:3] * 2, [X]),
    # reductions over nothing (computed at compile time: a TVM reduction of no steps never writes its output)
    "reductions_over_nothing": (lambda x: torch.cat([x[:, :0].sum(1), x[:, :0].prod(1), x[:, :0].mean(1),
                                                     (x + x[:, :0].sum())[:, 0]]), [X]),
    "softmax_over_nothing": (lambda x: torch.softmax(x[:, :0] * 2, -1), [X]),
    # running products and extremes (masked reductions over every pair of positions)
    "cumprod": (lambda x: torch.cumprod(x, 1) + torch.cumprod(x, -1), [X]),
    "cumprod_int_rank0": (lambda i: torch.cumprod(i, 0) + torch.cumprod(i[0, 0], 0), [torch.tensor([[2, -3, 1, 0]])]),
    "cummax_values_and_indices": (lambda x: torch.cat([x.cummax(1)[0], x.cummax(1)[1].float()]), [X]),
    "cummin_ties_and_nan": (lambda x: torch.stack([x.cummin(0)[0], x.cummin(0)[1].float(), x.cummax(0)[0],
                                                   x.cummax(0)[1].float()]),
                            [torch.tensor([1.0, 3.0, 3.0, float("nan"), 0.0, float("nan"), -1.0])]),
    "cummax_int_ties": (lambda i: i.cummax(-1)[1] * 10 + i.cummax(-1)[0],
                        [torch.tensor([[1, 3, 3, 2, 5, 5], [0, 0, -1, 7, 7, 7]])]),
    "cummax_bool": (lambda x: (x > 0).cummax(1)[0].float() + (x > 0).cummin(1)[1], [X]),
    "cummax_signed_zero_ties": (lambda x: torch.stack([1 / x.cummax(0)[0], 1 / x.cummin(0)[0]]),
                                [torch.tensor([0.0, -0.0, 0.0, 1.0, -0.0])]),
    "cumprod_half": (lambda x: torch.cumprod(x.half() * 30, 0).float(), [torch.tensor([10.0, 10.0, 1 / 9000, 0.5])]),
    "attention_over_no_keys": (lambda x: F.scaled_dot_product_attention(x, x[:, :, :0], x[:, :, :0] * 2) + x, [X]),
    "attention_over_no_keys_masked": (lambda x: F.scaled_dot_product_attention(
        x, x[:, :, :0], x[:, :, :0], attn_mask=torch.ones(5, 0, dtype=torch.bool)) + 1, [X]),
    "attention_head_size_0": (lambda x: F.scaled_dot_product_attention(x[..., :0], x[..., :0], x) * 2, [X]),
    "attention_head_size_0_wide_values": (lambda x: F.scaled_dot_product_attention(x[..., :0], x[..., :0], x),
                                          [torch.randn(1, 2, 6, 8)]),
    "attention_head_size_0_causal_masked": (lambda x: F.scaled_dot_product_attention(
        x[..., :0], x[..., :0], x, is_causal=True) + F.scaled_dot_product_attention(
        x[..., :0], x[..., :0], x, attn_mask=torch.eye(5, dtype=torch.bool) | (x[0, 0, :, :1] > 0)), [X]),
    "max_pool2d_indices": (lambda x: F.max_pool2d(x, 2, return_indices=True)[1], [X]),
    "max_pool2d_indices_padding_stride_dilation": (lambda x: F.max_pool2d(
        x, 3, stride=(2, 1), padding=1, dilation=(1, 2), return_indices=True)[1], [torch.randn(2, 3, 9, 8)]),
    "max_pool2d_indices_ceil": (lambda x: F.max_pool2d(x, 3, stride=2, padding=1, ceil_mode=True,
                                                       return_indices=True)[1], [torch.randn(1, 2, 8, 7)]),
    "max_pool2d_indices_ties_nan_inf": (lambda x: F.max_pool2d(x, 2, stride=1, return_indices=True)[1], [
        torch.tensor([[[[1.0, 1.0, 0.0, float("nan")], [1.0, 0.0, float("nan"), float("nan")],
                        [float("-inf"), float("-inf"), 2.0, 2.0], [float("-inf"), float("-inf"), 2.0, 1.0]]]])]),
    "max_pool2d_indices_unbatched": (lambda x: F.max_pool2d(x, (2, 3), return_indices=True)[1], [X[0]]),
    "max_pool2d_values_and_indices": (lambda x: torch.stack(F.max_pool2d(x, 2, return_indices=True))[1] * 0.5 +
                                      F.max_pool2d(x, 2), [X]),
    "max_unpool2d": (lambda x: F.max_unpool2d(*F.max_pool2d(x, 2, return_indices=True), 2, output_size=x.shape[-2:]),
                     [torch.randn(2, 3, 7, 9)]),
    "max_unpool2d_padding_stride": (lambda x: F.max_unpool2d(
        *F.max_pool2d(x * 2, 2, stride=3, padding=1, return_indices=True), 2, stride=3, padding=1,
        output_size=x.shape[-2:]), [torch.randn(1, 2, 8, 10)]),
    "max_unpool2d_to_the_rows_the_windows_cover": (lambda x: F.max_unpool2d(
        *F.max_pool2d(x, 2, return_indices=True), 2, output_size=(4, 3)), [X]),
    "max_unpool2d_unbatched_default_size": (lambda x: F.max_unpool2d(*F.max_pool2d(x, 2, return_indices=True), 2),
                                            [torch.randn(3, 6, 8)]),
    **{f"scatter_reduce_{how}_{'self' if keep else 'no_self'}": (
        lambda x, how=how, keep=keep: x.scatter_reduce(2, (x[:, :, :3] > 0).long() * 2 + (x[:, :, :3] > 1),
                                                       x[:, :, :3] * 3, how, include_self=keep), [X])
       for how in ("sum", "mean", "prod", "amax", "amin") for keep in (True, False)},
    "scatter_reduce_nan_inf": (lambda x: torch.zeros(2, 4).scatter_reduce(
        1, torch.tensor([[0, 0, 1, 1, 2, 2, 3, 3, 0, 1, 2, 3, 0, 1, 2]] * 2), x.repeat(2, 1), "amax",
        include_self=False), [SPECIAL]),
    "scatter_reduce_int_mean_rounds_down": (lambda x: x.scatter_reduce(
        0, torch.tensor([0, 0, 1, 1, 2, 2, 3]), -x - 2, "mean"), [torch.tensor([3, 4, -7, 1, 0, -1, 5])]),
    "scatter_reduce_int_amin_no_self": (lambda x: x.scatter_reduce(
        0, (x > 0).long(), x * 3, "amin", include_self=False), [torch.tensor([3, 4, -7, 1, 0, -1, 5])]),
    "index_put_accumulate_run_time_index": (lambda x: x.index_put(
        ((x[:, 0, 0, 0] > 0).long() - 1,), x[:, :1] * 2, accumulate=True), [X]),
    "index_add_repeated_rows": (lambda x: x.index_add(1, (x[0, :, 0, 0] > 0).long() * 3, x * 0.5, alpha=2.0), [X]),
    "matmul_over_nothing": (lambda x: x[..., :0] @ x[..., :0].transpose(-1, -2) + 1, [X]),
    "linear_of_no_features": (lambda x: F.linear(x[..., :0], x[0, 0, :4, :0], torch.full((4,), 0.5)),
                              [X]),
    "unfold_windows": (lambda x: x.unfold(1, 3, 2) * 2, [X]),
    "unfold_rank0": (lambda x: x.unfold(0, 1, 1) + x.unfold(0, 0, 1).sum(), [torch.tensor(2.5)]),
    # complex tensors as pairs of real values: FFTs as DFT matmuls, spectrograms, FNet's mixing, filtering
    "fft_real_part": (lambda x: torch.fft.fft(x.to(torch.complex64)).real, [X]),
    "fftn_ortho_view_as_real": (lambda x: torch.view_as_real(torch.fft.fftn(x, dim=(0, 2), norm="ortho")), [X]),
    "fft2_imag_odd_sizes": (lambda x: torch.fft.fft2(x[:, :, :, :1].reshape(2, 6, 5)).imag, [X]),
    "stft_power": (lambda x: torch.stft(x, 16, hop_length=4, window=torch.hann_window(16), return_complex=True).abs()
                   ** 2, [torch.randn(2, 100)]),
    "rfft_filter_irfft": (lambda x: torch.fft.irfft(torch.fft.rfft(x, dim=1) * torch.linspace(1, 0, 4)[:, None, None]
                                                    - 0.5j * torch.fft.rfft(x, dim=1), n=6, dim=1), [X]),
    "irfftn_forward_odd": (lambda x: torch.fft.irfftn(torch.fft.rfftn(x, dim=(1, 2)), s=(6, 5), dim=(1, 2),
                                                      norm="forward") / 30, [X]),
    "fno_spectral_layer": (Spectral(), [torch.randn(2, 6, 10)]),
    "complex_to_real_casts": (lambda x: torch.fft.fft(x).to(torch.float32) + torch.fft.fft(x).to(torch.complex128).real,
                              [torch.randn(3, 8)]),
    "complex_to_bool": (lambda x: torch.view_as_complex(torch.stack([x * 0, x], -1)).to(torch.bool).int(),
                        [torch.tensor([1.5, -2.0, 0.0])]),
    "complex_minus_real_alpha_and_joined_weights": (lambda x: torch.view_as_real(torch.cat([
        torch.sub(torch.fft.fft(x), x, alpha=2), torch.full((1, 5), 1 - 2j).expand(2, 5)])), [torch.randn(3, 5)]),
    "fft_of_ifft_backward": (lambda x: torch.view_as_real(torch.fft.fft(torch.fft.ifft(x, dim=-1) * x[..., :1]
                                                                        + x, dim=1)), [X]),
    # scatters at constant positions (F.fold: index_put with accumulate), as a gather of each position's values
    "fold_overlapping": (lambda x: F.fold(x, (5, 6), kernel_size=3, stride=1), [torch.randn(2, 18, 12)]),
    "fold_strided_padded": (lambda x: F.fold(x, (7, 7), kernel_size=3, stride=2, padding=1), [torch.randn(1, 9, 16)]),
    "index_put_two_constant_indices": (lambda x: _assign(x, lambda o, y: o.__setitem__(
        (slice(None), torch.tensor([0, 2, 5]), torch.tensor([[1], [4]])), y[:, :3, 0] * 3)), [X]),
    "index_put_constant_2d_index": (lambda x: _assign(x, lambda o, y: o.__setitem__(torch.tensor([[1], [0]]),
                                                                                    y[:1] * 2)), [X]),
    # scatters along an axis with run-time indices: one-hot labels, sums of messages, the last write winning
    "scatter_one_hot": (lambda i: torch.zeros(4, 10).scatter(1, i, 1.0), [torch.tensor([[3], [0], [9], [3]])]),
    "scatter_add_repeated": (lambda x, i: x.scatter_add(1, i, x[:, :4] * 2), [torch.randn(3, 7),
                                                                             torch.tensor([[1, 1, 6, 0]] * 3)]),
    "scatter_src_last_write": (lambda x, i: x.scatter(-1, i, -x[:, :5]), [torch.randn(2, 6),
                                                                          torch.tensor([[2, 2, 5, 2, 0], [1] * 5])]),
    "scatter_add_block_dim0_int": (lambda i: torch.zeros(4, 6, dtype=torch.long).scatter_add(0, i, i * 10),
                                   [torch.tensor([[3, 1, 3], [0, 3, 2]])]),
    "index_put_accumulate_repeated": (lambda x: x.index_put((torch.tensor([1, 1, 4, 1]),), x[:4] * 2, accumulate=True),
                                      [torch.randn(6, 3)]),
    # writes at run-time positions on several axes (x[i, j] = v), adjacent or apart, and through a mask (x[m] = 0)
    "index_put_run_time_indices_broadcast": (lambda x, i, j: x.index_put((i, j), x[0, :1] * 3 + 1), [
        torch.randn(5, 6, 4), torch.tensor([0, -1, 3]), torch.tensor([[2], [5]])]),
    "index_put_run_time_indices_apart": (lambda x, i, j: _assign(x, lambda o, y: o.__setitem__(
        (i, slice(None), j), y[0, :, :1].T * 2)), [torch.randn(5, 6, 4), torch.tensor([4, 0, -2]),
                                                   torch.tensor([3, 1, 1], dtype=torch.int32)]),
    "index_put_accumulate_run_time_index_pairs_repeated": (lambda x, i, j: torch.ops.aten.index_put(
        x, [None, i, j], x[:, :4, 0] * 2, True), [torch.randn(3, 5, 6), torch.tensor([1, 4, 1, 1]),
                                                         torch.tensor([2, 0, 2, -4])]),
    "index_put_mask_zero": (lambda x: _assign(x, lambda o, y: (o.copy_(y), o.__setitem__(y < 0, 0.0))), [X]),
    "index_put_mask_rows_get_a_row": (lambda x: x.index_put((x.sum(-1) > 0,), x[0, 0, 0] * -5), [X]),
    "index_put_mask_after_axis_accumulate_int": (lambda x: torch.ops.aten.index_put(
        x, [None, x[0] % 3 == 0], torch.tensor(7), True), [torch.randint(-9, 9, (3, 4, 5))]),
    # rank-0 and empty edge cases (OpInfo's samples): softmax, max/min over dim 0 of a scalar, gather from a scalar,
    # stacks of empty tensors, and cat skipping a legacy [0] tensor
    "softmax_of_a_scalar": (lambda x: torch.softmax(x, 0) * 3 + torch.log_softmax(x, -1), [torch.tensor(2.5)]),
    "max_min_over_dim_of_a_scalar": (lambda x: torch.max(x, 0, keepdim=True)[0] - torch.min(x, -1)[0]
                                     + torch.max(x, 0)[1] * 2 + torch.min(x, 0, keepdim=True)[1], [torch.tensor(-1.5)]),
    "gather_from_a_scalar": (lambda x: torch.gather(x, 0, torch.tensor([0, 0, 0])) * 2, [torch.tensor(1.25)]),
    "stack_of_empty_tensors": (lambda x: torch.stack([x[:0], x[:0] * 2], -1), [X]),
    "cat_skips_a_legacy_empty_tensor": (lambda x: torch.cat([x[0, :2], torch.zeros(0), x[1, 3:]], 0) + 1, [X]),
    # elementwise ops written with the IR's (elementwise_composites.py), NaN, infinities and -0.0 included
    "log2_log10_exp2": (lambda x: torch.log2(x.abs() + 0.5) + torch.log10(x.abs() + 0.5) * 2 + torch.exp2(x), [X]),
    "floor_of_log2_log10_at_exact_powers": (lambda x: torch.floor(torch.log2(x))
                                            + torch.floor(torch.log10(x * 0 + 1e9)) * 1000,
                                            [torch.tensor([2.0 ** k for k in range(-126, 128)])]),
    "log2_exp2_of_integers": (lambda x: torch.log2(x) + torch.exp2(x), [torch.tensor([1, 2, 8, 1024])]),
    "hypot_infinities_nan_huge": (lambda x: torch.hypot(x, x.flip(0)), [SPECIAL[0]]),
    "copysign_signbit_negative_zero_nan": (lambda x: torch.copysign(torch.full_like(x, 2.0), x.flip(0))
                                           + torch.signbit(x).float() * 10, [SPECIAL[0]]),
    "fmax_fmin_take_the_number_beside_nan": (lambda x: torch.fmax(x, x.flip(0)) - torch.fmin(x, x.flip(0)) * 3,
                                             [SPECIAL[0]]),
    "times_zero_is_nan_for_inf_and_nan": (lambda x: x * 0.0 + torch.addr(x[:1, None] * 0, x, x, beta=0, alpha=0)[0],
                                          [SPECIAL[0]]),
    "var_std_of_nothing_is_nan": (lambda x: torch.var(x[:0], True) + torch.std(x[:0, 0], 0), [X]),
    "logical_xor": (lambda x: torch.logical_xor(x > 0, x[:, :1] * 0.5).int(), [X]),
    "addmv_scaled": (lambda b, m, v: torch.addmv(b, m, v, beta=0.5, alpha=2), [torch.randn(4), torch.randn(4, 7),
                                                                              torch.randn(7)]),
    "addmv_beta_zero_ignores_nan_input": (lambda b, m, v: torch.addmv(b, m, v, beta=0), [
        torch.full((1,), float("nan")), torch.randn(4, 7), torch.randn(7)]),
    "addbmm": (lambda b, p, q: torch.addbmm(b, p, q, beta=2, alpha=0.5), [torch.randn(3, 5), torch.randn(6, 3, 4),
                                                                          torch.randn(6, 4, 5)]),
    "scatter_number_with_reduce": (lambda x, i: x.scatter(0, i, 2.5, reduce="add") + x.scatter(0, i, 3.0,
                                                                                                  reduce="multiply"),
                                    [torch.randn(3, 5), torch.tensor([[0, 1, 0, 2, 0]])]),
    "scatter_with_reduce_string": (lambda x, i: x.scatter(1, i, x * 2, reduce="add")
                                   + x.scatter(1, i, x, reduce="multiply"), [torch.randn(4, 7),
                                                                             torch.randint(0, 7, (4, 7))]),
    "native_layer_norm_statistics": (lambda x, w, b: sum(torch.ops.aten.native_layer_norm(x, [3], w, b, 1e-5)),
                                     [X, torch.randn(3), torch.randn(3)]),
    "adaptive_max_pool_uneven_windows": (lambda x: F.adaptive_max_pool2d(x, (4, 2)) * 2, [X]),
    "adaptive_max_pool1d_uneven_rank3": (lambda x: F.adaptive_max_pool1d(x, 3), [torch.randn(3, 7)]),
    "logcumsumexp_far_apart_and_infinite": (lambda x: torch.logcumsumexp(x, 0), [
        torch.tensor([-200.0, 0.0, -math.inf, 5.0, math.inf, 1.0, math.nan, 2.0])]),
    "logcumsumexp_rows": (lambda x: torch.logcumsumexp(x * 40, 1), [X]),
    # order statistics (a sorted row's element) and binary search, with NaN as torch orders it
    "kthvalue_values_and_indices": (lambda x: sum(t.float() for t in torch.kthvalue(x, 2, 1)), [X]),
    "median_rows_with_nan": (lambda x: sum(t.float() for t in torch.median(x, 1, keepdim=True)), [
        torch.tensor([[1.0, float("nan"), 3.0, 0.5], [2.0, -1.0, 4.0, 7.0], [float("nan")] * 4])]),
    "nanmedian_rows": (lambda x: sum(t.float() for t in torch.nanmedian(x, 0)), [
        torch.tensor([[1.0, float("nan"), 3.0], [2.0, float("nan"), 4.0], [float("nan"), 5.0, -4.0]])]),
    "median_of_all_elements": (lambda x: torch.median(x) + torch.nanmedian(x), [X]),
    "searchsorted_nan_and_sides": (lambda s, v: torch.searchsorted(s, v) * 10 + torch.searchsorted(s, v, right=True), [
        torch.tensor([-1.0, 0.0, 0.5, 2.0, float("nan")]), torch.tensor([[0.0, -3.0, 0.7], [2.0, float("nan"), 9.0]])]),
    "searchsorted_rows_sorter_int32": (lambda s, v: torch.searchsorted(s, v, sorter=torch.argsort(s), out_int32=True), [
        torch.randn(3, 6), torch.randn(3, 4)]),
    "searchsorted_half_precision": (lambda s, v: torch.searchsorted(s.half(), v.half()), [
        torch.tensor([1.0, 2, 2, 3, 5, 8, 8, 13]), torch.tensor([[0.0, 1, 2, 2.5], [8, 13, 14, math.nan]])]),
    "bucketize_right": (lambda v: torch.bucketize(v, torch.tensor([-1.0, 0.0, 0.5, 2.0]), right=True), [X]),
    # a position read out of a tensor (p.item(), or x[:, p] with a 0-d tensor p) and Python arithmetic on it
    "select_at_run_time_positions": (lambda x, p: x[:, p] + x[p, p] * 2, [torch.randn(4, 6, 5), torch.tensor(-1)]),
    "select_at_position_arithmetic": (lambda x, p: x[:, (p.item() * 3 + 1) // 2 % 6] - x[-p.item() % 4, -p.item()], [
        torch.randn(4, 6, 5), torch.tensor(5, dtype=torch.int32)]),
    "item_compared_and_in_float_arithmetic": (lambda x, p: (x > p.item()).float() + x * (p.item() * 0.5)
                                              + x.clamp(max=p.item() - 2.5) + x * (p.item() / 2)
                                              + torch.where(x > 0, x, p.item()), [torch.randn(4, 6), torch.tensor(1)]),
    "item_of_a_buffer_indexes_and_slices": (PositionBuffer(), [torch.randn(6, 5, 3)]),
    "index_put_mask_values_per_row": (lambda x, v: torch.ops.aten.index_put(
        x, [None, torch.tensor([True, False, True, True, False])], v, False), [torch.randn(6, 5, 3),
                                                                               torch.randn(6, 1, 3)]),
    "item_of_a_float_scales": (lambda x, s: x * s.item() - s.item(), [torch.randn(4, 6), torch.tensor(1.5)]),
    "index_read_run_time_indices_apart": (lambda x, i, j: x[i, :, j] + x[:, i[:2, None], j[:2]].sum(), [
        torch.randn(5, 6, 4), torch.tensor([4, 0, -2]), torch.tensor([3, 1, 1])]),
    "slice_negative_start": (lambda x: x[:, -4:-1] + x[:, -7:2].sum(1, keepdim=True), [X]),
    "gather": (lambda x, i: torch.gather(x, 2, i), [X, IDX]),
    # writes into a preallocated tensor (torch.export makes them slice_scatter / select_scatter / copy)
    "slice_assign": (lambda x: _assign(x, lambda o, y: o.__setitem__((slice(None), slice(1, 4)), y[:, :3] * 2)), [X]),
    "select_assign_loop": (lambda x: _assign(x, lambda o, y: [o.__setitem__((slice(None), t), y[:, t] + t)
                                                              for t in range(6)]), [X]),
    "copy_broadcast": (lambda x: _assign(x, lambda o, y: o.copy_(y[:1, :1])), [X]),
    # convolutions written with padding="valid" / "same" (aten.convolution gets one padding value for both axes)
    "conv2d_padding_valid": (lambda x: F.conv2d(x, torch.ones(2, 6, 3, 3) / 9, padding="valid"), [X]),
    "conv2d_padding_same": (lambda x: F.conv2d(x, torch.ones(4, 6, 3, 1), padding="same"), [X]),
    # normalization and pooling
    "group_norm": (torch.nn.GroupNorm(3, 6), [X]),
    "instance_norm": (torch.nn.InstanceNorm2d(6, affine=True), [X]),
    "max_pool2d_unbatched": (lambda x: F.max_pool2d(x, 2), [X[0]]),
    "avg_pool2d_unbatched": (lambda x: F.avg_pool2d(x, (2, 1)), [X[0]]),
    "avg_pool2d_window_larger_than_input_ceil": (lambda x: F.avg_pool2d(x, 7, ceil_mode=True), [X]),
    "max_pool2d_window_larger_than_input_ceil": (lambda x: F.max_pool2d(x, (4, 9), ceil_mode=True), [X]),
    # runtime checks (torch._check, F.one_hot's range asserts) are not compiled: the example inputs passed them
    "one_hot_with_checks": (lambda x, i: _checked(i) * x.sum(), [X, torch.tensor([0, 2, 5])]),
    "adaptive_avg_pool2d_unbatched": (lambda x: F.adaptive_avg_pool2d(x, 1), [X[0]]),
    "grid_sample_bilinear_zeros": (lambda x, g: F.grid_sample(x, g, align_corners=False),
                                   [X, torch.rand(2, 4, 3, 2) * 2.8 - 1.4]),
    "grid_sample_nearest_reflection": (lambda x, g: F.grid_sample(x, g, mode="nearest", padding_mode="reflection",
                                                                  align_corners=True),
                                       [X, torch.rand(2, 3, 5, 2) * 5 - 2.5]),
    "adaptive_max_pool2d": (lambda x: F.adaptive_max_pool2d(x, (5, 1)) + F.adaptive_max_pool2d(x, 1), [X]),
    # resize: torch's nearest picks in float32 (26 -> 22: output 11 is x[12]), x2 sizes by shifting, and an axis
    # that keeps its size under a scale factor is copied
    "interpolate_nearest_size_f32_picks": (lambda x: F.interpolate(x, size=(3, 22)), [torch.randn(1, 2, 5, 26)]),
    "interpolate_nearest_scale_2.2_doubles": (lambda x: F.interpolate(x, scale_factor=2.2), [torch.randn(1, 2, 4, 5)]),
    "interpolate_bilinear_scale_keeps_width": (lambda x: F.interpolate(x, scale_factor=1.3, mode="bilinear"),
                                               [torch.randn(1, 2, 4, 2)]),
    "interpolate_nearest_scale_keeps_width": (lambda x: F.interpolate(x, scale_factor=1.3), [torch.randn(1, 2, 4, 2)]),
}


def compiled_matches_torch(f, args, atol: float = 2e-6):
    """``f`` on ``args`` compiled (host) gives PyTorch's shape, dtype and values (floats within tolerance, NaN where
    PyTorch has NaN; integers exactly)."""
    model = Fn(f).eval()
    with torch.no_grad():
        want = model(*args).numpy()
    compiled = edgeopt.compile(model, args)
    got = compiled(*[a.numpy() for a in args])
    assert got.shape == want.shape and got.dtype == want.dtype, (got.shape, want.shape, got.dtype, want.dtype)
    if want.dtype.kind == "f":
        np.testing.assert_allclose(got, want, rtol=2e-5, atol=atol, equal_nan=True)
    else:
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("name", sorted(CASES))
def test_op_matches_torch(name):
    compiled_matches_torch(*CASES[name])


@pytest.mark.parametrize("f, op", [
    (lambda x: x.reshape(-1).repeat(12).cumprod(0), r"aten::cumprod \(along 2160 elements"),
    (lambda x: torch.erfinv(x.clamp(-0.5, 0.5)), "aten::erfinv"),
    (lambda x: torch.view_as_real(1.0 / torch.fft.rfft(x)), r"aten::reciprocal \(on complex tensors"),
    (lambda x: torch.fft.fft(x.to(torch.complex64)).exp().real, r"aten::exp \(on complex tensors"),
    (lambda x: F.max_unpool2d(*F.max_pool2d(x, 3, stride=2, return_indices=True), 3, stride=2),
     r"aten::max_unpool2d \(after a pool whose windows overlap"),
    (lambda x: F.max_unpool2d(x, (x > 0).long(), 2), r"aten::max_unpool2d \(with indices that do not come"),
    (lambda x: F.max_unpool2d(*F.max_pool2d(x, 2, return_indices=True), 2, output_size=(3, 3)),
     r"aten::max_unpool2d \(to 3 rows, where the pool's windows reach row 3"),
    (lambda x: (x > 0).scatter_reduce(1, (x > 1).long(), x < 0, "amax"), r"'amax' of bool tensors"),
    (lambda x: torch.lgamma(x), r"aten::lgamma"),
    (lambda x: F.scaled_dot_product_attention(x, x, x, dropout_p=0.1), r"with dropout_p=0.1, which drops at random"),
    (lambda x: F.dropout(x, 0.2, training=True), r"aten::native_dropout \(dropout with training=True \(p=0.2"),
    (lambda x: x.index_put((x[:, 0, 0, 0] == x[:, 0, 0, 0],), x * 2),
     r"aten::index_put \(with a mask and values of shape \[2, 6, 5, 3\]: one value per selected element"),
    (lambda x: x.reshape(-1).repeat(6000).scatter_reduce(0, (x.reshape(-1).repeat(6000) > 0).long(),
                                                          x.reshape(-1).repeat(6000), "amax"),
     r"aten::scatter_reduce.two \(of 1080000 values over 1080000 positions \(it compares every pair"),
    (lambda x: torch.nn.functional.embedding_bag((x[0, :3, :2, 0] > 0).long(), x[0, 0], padding_idx=0),
     r"aten::_embedding_bag.* \(with offsets computed at run time, per-sample weights or a padding index"),
    (lambda x: x.index_put((torch.tensor([1, 1]), torch.tensor([0, 0])), x[0, :2]),
     r"aten::index_put \(with repeated positions and accumulate=False"),
])
def test_ops_still_missing_are_one_clear_error(f, op):
    with pytest.raises(UnsupportedModelError, match=op) as info:
        edgeopt.compile(Fn(f).eval(), [X])
    assert "test_op_breadth.py" in str(info.value)  # with the model's source line


class SegNetBlock(torch.nn.Module):
    """SegNet's encoder-decoder step: the decoder unpools to the positions the encoder's max pool chose."""

    def __init__(self):
        super().__init__()
        self.enc = torch.nn.Conv2d(1, 8, 3, padding=1)
        self.mid = torch.nn.Conv2d(8, 8, 3, padding=1)
        self.dec = torch.nn.Conv2d(8, 2, 3, padding=1)

    def forward(self, x):
        y, where = F.max_pool2d(torch.relu(self.enc(x)), 2, return_indices=True)
        y = F.max_unpool2d(torch.relu(self.mid(y)), where, 2, output_size=x.shape[-2:])
        return self.dec(y)


def test_segnet_unpooling_on_a_real_photo_float_and_int8():
    from skimage import data

    torch.manual_seed(0)
    model = SegNetBlock().eval()
    photo = torch.from_numpy(data.camera()[::8, ::8].astype(np.float32) / 255)[None, None]  # 64 x 64
    with torch.no_grad():
        want = model(photo).numpy()
    got = edgeopt.compile(model, [photo])(photo.numpy())
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-5)
    crops = [torch.from_numpy(data.camera()[i::8, j::8].astype(np.float32) / 255)[None, None]
             for i in range(4) for j in range(4)]
    int8 = edgeopt.compile(model, [photo], quantize="int8", calibration_data=[(c,) for c in crops[1:]])
    got8 = int8(photo.numpy())
    cosine = (got8 * want).sum() / np.linalg.norm(got8) / np.linalg.norm(want)
    assert cosine > 0.99, cosine


def test_max_pool_indices_are_built_only_where_read():
    """torch.export makes every max_pool2d max_pool2d_with_indices: a model that never reads the indices compiles
    no kernel for them, even with no dead-code elimination (opt_level=0)."""
    model = torch.nn.Sequential(torch.nn.Conv2d(2, 4, 3), torch.nn.MaxPool2d(3, 2)).eval()
    compiled = edgeopt.compile(model, [torch.randn(1, 2, 12, 12)], opt_level=0)
    ops = {op for k in compiled.report["kernels"] for op in k["ops"]}
    assert "max_pool2d" in ops and not ops & {"where", "gt", "logical_or"}, ops
