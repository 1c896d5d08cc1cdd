"""The quantize / dequantize ops: reference semantics against PyTorch's, int4 packing, type checks, text form."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edgeopt.ir import Graph, TensorType, interpret, parse_graph, print_graph, verify
from edgeopt.ir.ops.quant import pack_int4, pack_words, unpack_int4, unpack_words
from edgeopt.ir.registry import OpError, get_op

RNG = np.random.default_rng(7)


def _ref(op, xs, **attrs):
    d = get_op(op)
    return d.reference(xs, d.normalize_attrs(attrs))[0]


@pytest.mark.filterwarnings("ignore:torch.quantize_per_tensor")
def test_quantize_per_tensor_matches_torch_ties_and_saturation():
    """rint(x * (1 / scale)) + zero_point; torch.quantize_per_tensor rounds x * (1 / scale) + zero_point, which agrees
    at ties only for an even zero point (2.5 + 3 rounds to 6, 2 + 3 is 5), so the check uses even ones."""
    x = np.array([0.25, 0.75, -0.25, 1.25, -1.75, 100.0, -100.0, 0.0], np.float32)
    for dtype, tdt, zp in (("u8", torch.quint8, 128), ("i8", torch.qint8, 2)):
        got = _ref("quantize", [x, np.float32(0.5), np.int32(zp)], dtype=dtype)
        want = torch.quantize_per_tensor(torch.from_numpy(x), 0.5, zp, tdt).int_repr().numpy()
        np.testing.assert_array_equal(got, want)


def _near_ties(rng, scales, n):
    """Values whose quotient by their scale lands on or next to a half-integer, where x / scale and x * (1 / scale)
    can round apart: [n, len(scales)]."""
    k = rng.integers(-60, 60, (n, len(scales))).astype(np.float32) + np.float32(0.5)
    return (k * scales).astype(np.float32)


@pytest.mark.parametrize("zp", [0, 3, 128])
def test_quantize_rounds_as_pytorchs_fake_quantize_bit_for_bit(zp):
    """quantize is torch.fake_quantize_per_tensor_affine / _per_channel_affine (what quantization-aware training
    rounds with) exactly, odd zero points and near-ties included, where a division (ONNX's QuantizeLinear) differs;
    the compiled kernel (a multiply by the reciprocal) agrees with the interpreter on the same values."""
    from edgeopt.api import compile_graph

    rng = np.random.default_rng(0)
    scales = rng.uniform(0.003, 0.05, 16).astype(np.float32)
    x = _near_ties(rng, scales, 64)  # [64, 16]: channel axis 1
    division = np.rint(x / scales) != np.rint(x * (np.float32(1) / scales))
    assert division.any()  # the values do tell the two roundings apart
    zps = np.full(16, zp, np.int32)
    got_t = _ref("quantize", [x, scales[0], np.int32(zp)], dtype="u8")
    want_t = torch.fake_quantize_per_tensor_affine(torch.from_numpy(x), float(scales[0]), zp, 0, 255).numpy()
    np.testing.assert_array_equal(got_t, np.rint(want_t * (np.float32(1) / scales[0])) + zp)
    got_c = _ref("quantize", [x, scales, zps], dtype="u8")
    want_c = torch.fake_quantize_per_channel_affine(torch.from_numpy(x), torch.from_numpy(scales),
                                                    torch.from_numpy(zps), 1, 0, 255).numpy()
    np.testing.assert_array_equal(got_c, np.rint(want_c * (np.float32(1) / scales)) + zp)
    g = Graph()
    v = g.add_input("x", TensorType((64, 16), "f32"))
    q = g.add("quantize", [v, g.add_const(scales, "s"), g.add_const(zps, "z")], {"dtype": "u8"})
    g.set_outputs([q])
    compiled = compile_graph(g, "host", passes=[])
    np.testing.assert_array_equal(compiled(x), got_c)


@pytest.mark.filterwarnings("ignore:torch.quantize_per_tensor")
def test_quantize_per_channel_matches_torch():
    x = RNG.standard_normal((4, 6)).astype(np.float32)
    s = RNG.uniform(0.01, 0.05, 4).astype(np.float32)
    got = _ref("quantize", [x, s[:, None], np.zeros((4, 1), np.int32)], dtype="i8")
    zeros = torch.zeros(4, dtype=torch.long)
    want = torch.quantize_per_channel(torch.from_numpy(x), torch.from_numpy(s).double(), zeros, 0,
                                      torch.qint8).int_repr().numpy()
    np.testing.assert_array_equal(got, want)


@pytest.mark.filterwarnings("ignore:torch.quantize_per_tensor")
def test_dequantize_matches_torch_per_channel_with_zero_points():
    q = RNG.integers(0, 256, (3, 5)).astype(np.uint8)
    s, z = RNG.uniform(0.01, 0.1, 3).astype(np.float32), RNG.integers(0, 256, 3)
    tq = torch._make_per_channel_quantized_tensor(torch.from_numpy(q), torch.from_numpy(s).double(),
                                                  torch.from_numpy(z), 0)
    got = _ref("dequantize", [q, s[:, None], z[:, None].astype(np.int32)])
    np.testing.assert_allclose(got, tq.dequantize().numpy(), rtol=1e-6)


def test_dequantize_inverts_quantize_within_half_a_step():
    x = RNG.uniform(-1, 3, (3, 5)).astype(np.float32)
    s, z = np.float32(4 / 255), np.int32(64)
    y = _ref("dequantize", [_ref("quantize", [x, s, z], dtype="u8"), s, z])
    assert y.dtype == np.float32 and np.abs(y - x).max() <= s / 2 + 1e-7


def test_int4_pack_roundtrip_and_grouped_dequantize():
    nib = RNG.integers(0, 16, (3, 8)).astype(np.uint8)
    packed = pack_int4(nib)
    assert packed.shape == (3, 4) and packed.dtype == np.uint8
    np.testing.assert_array_equal(unpack_int4(packed), nib)
    np.testing.assert_array_equal(unpack_int4(pack_int4(nib.T, 0), 0), nib.T)  # along the first axis
    scale = RNG.uniform(0.1, 1, (3, 2)).astype(np.float32)
    zp = RNG.integers(0, 16, (3, 2)).astype(np.uint8)
    got = _ref("dequantize", [packed, scale, zp], bits=4, group_size=4)
    want = (nib.astype(np.float32) - np.repeat(zp, 4, 1)) * np.repeat(scale, 4, 1)
    np.testing.assert_allclose(got, want, rtol=1e-6)


def test_dequantize_with_a_float_minimum():
    nib = RNG.integers(0, 16, (3, 8)).astype(np.uint8)
    scale = RNG.uniform(0.1, 1, (3, 2)).astype(np.float32)
    lo = RNG.uniform(-2, 0, (3, 2)).astype(np.float32)
    got = _ref("dequantize", [pack_int4(nib), scale, lo], bits=4, group_size=4)
    np.testing.assert_allclose(got, nib * np.repeat(scale, 4, 1) + np.repeat(lo, 4, 1), rtol=1e-6)


@pytest.mark.parametrize("bits", [4, 8])
def test_affine_groups_give_back_weights_from_q4_1_blocks_exactly(bits):
    """Weights dequantized from GGUF Q4_1 blocks (q * d + m, q hitting 0 and 15 in each block of 32) come back
    from int4 and from per-group int8 (whose codes are 17 q) up to float rounding."""
    from edgeopt.quant.weights import affine_groups

    q = RNG.integers(0, 16, (6, 64))
    q[:, ::32], q[:, 1::32] = 0, 15
    d = RNG.uniform(0.001, 0.05, (6, 2)).astype(np.float32)
    m = RNG.uniform(-0.4, -0.01, (6, 2)).astype(np.float32)
    w = (q * np.repeat(d, 32, 1) + np.repeat(m, 32, 1)).astype(np.float32)
    codes, scale, lo = affine_groups(w, 1, 32, bits)
    back = _ref("dequantize", [codes, scale, lo], bits=bits, group_size=32, group_axis=1)
    assert np.abs(back - w).max() <= 4 * np.finfo(np.float32).eps * np.abs(w).max()
    assert np.abs(back - w).max() < np.repeat(d, 32, 1).min() / 100  # far below one step of the grid


def test_per_group_int8_picks_the_form_the_weights_came_in():
    """Q8_0 blocks (q * d, |q| <= 127, 127 hit) come back exactly from the symmetric form; Q4_1 blocks from the one
    with a minimum."""
    from edgeopt.quant.weights import best_int8_groups

    q = RNG.integers(-127, 128, (4, 64))
    q[:, ::32] = 127
    d = RNG.uniform(0.001, 0.05, (4, 2)).astype(np.float32)
    w = (q * np.repeat(d, 32, 1)).astype(np.float32)
    codes, scale, lo = best_int8_groups(w, 1, 32)
    assert lo is None and codes.dtype == np.int8
    back = _ref("dequantize", [codes, scale], group_size=32, group_axis=1)
    assert np.abs(back - w).max() <= 4 * np.finfo(np.float32).eps * np.abs(w).max()
    w4 = (RNG.integers(0, 16, (4, 64)) * 0.01 - 0.3).astype(np.float32)
    assert best_int8_groups(w4, 1, 32)[2] is not None


def test_words_hold_four_bytes_low_first_and_dequantize_reads_them():
    """``packed_axis``: i32 words holding four i8 / u8 values along an axis (targets without 8-bit integers)."""
    q = RNG.integers(-128, 128, (3, 8, 2)).astype(np.int8)
    q.flat[:4] = [-128, -1, 127, 0]
    words = pack_words(q, 1)
    assert words.shape == (3, 2, 2) and words.dtype == np.int32
    b = [int(v) for v in q[0, :4, 0].view(np.uint8)]
    assert int(words[0, 0, 0]) % 2**32 == b[0] + (b[1] << 8) + (b[2] << 16) + (b[3] << 24)  # low byte first
    np.testing.assert_array_equal(unpack_words(words, 1, "i8"), q)
    np.testing.assert_array_equal(unpack_words(words, -2, "u8"), q.view(np.uint8))  # the same bytes, unsigned
    s = RNG.uniform(0.01, 0.1, (3, 1, 1)).astype(np.float32)
    np.testing.assert_array_equal(_ref("dequantize", [words, s], packed_axis=-2), _ref("dequantize", [q, s]))
    u = RNG.integers(0, 256, (4, 5)).astype(np.uint8)
    z = np.int32(100)
    np.testing.assert_array_equal(_ref("dequantize", [pack_words(u, 0), np.float32(0.5), z], packed_axis=0,
                                       packed_dtype="u8"), _ref("dequantize", [u, np.float32(0.5), z]))
    nib = RNG.integers(0, 16, (3, 16)).astype(np.uint8)  # int4 bytes, eight nibbles a word
    s4 = RNG.uniform(0.1, 1, (3, 4)).astype(np.float32)
    np.testing.assert_array_equal(
        _ref("dequantize", [pack_words(pack_int4(nib)), s4, np.int32(8)], bits=4, group_size=4, packed_axis=-1,
             packed_dtype="u8"),
        _ref("dequantize", [pack_int4(nib), s4, np.int32(8)], bits=4, group_size=4))
    with pytest.raises(ValueError, match="multiple of 4"):
        pack_words(q, 2)


@pytest.mark.parametrize("types, attrs, msg", [
    ([TensorType((4, 2), "i8"), TensorType((), "f32")], {"packed_axis": -1}, "i32 words"),
    ([TensorType((4, 2), "i32"), TensorType((), "f32")], {"packed_axis": -1, "packed_dtype": "i16"}, "i32 words"),
    ([TensorType((4, 2), "i32"), TensorType((4, 2), "f32")], {"bits": 4, "group_size": 4, "packed_axis": -1},
     r"u8 for bits=4"),
    ([TensorType((4, 2), "i32"), TensorType((), "f32")], {"packed_axis": 2}, "out of range"),
    ([TensorType((4, 2), "i32"), TensorType((4, 2), "f32")], {"packed_axis": -1}, "does not broadcast"),
    ([TensorType((4, 6), "i16"), TensorType((), "f32")], {}, "i8, u8 or i32"),
    ([TensorType((4, 6), "i8"), TensorType((3, 1), "f32")], {}, "does not broadcast"),
    ([TensorType((4, 6), "i8"), TensorType((), "f64")], {}, "scale must be f32"),
    ([TensorType((4, 6), "i8"), TensorType((4, 2), "f32")], {"bits": 4, "group_size": 6}, r"u8 \(packed int4\)"),
    ([TensorType((4, 6), "u8"), TensorType((4, 2), "f32")], {"bits": 4, "group_size": 5}, "does not divide"),
])
def test_dequantize_rejects_bad_types(types, attrs, msg):
    d = get_op("dequantize")
    with pytest.raises(OpError, match=msg):
        d.infer(types, d.normalize_attrs(attrs))


def test_quantize_rejects_integer_input_and_bad_dtype():
    d = get_op("quantize")
    with pytest.raises(OpError, match="must be float"):
        d.infer([TensorType((2,), "i32"), TensorType((), "f32")], d.normalize_attrs({}))
    with pytest.raises(OpError, match="dtype must be one of"):
        d.infer([TensorType((2,), "f32"), TensorType((), "f32")], d.normalize_attrs({"dtype": "i16"}))


def test_text_form_round_trips_and_verifies():
    g = Graph("q")
    x = g.add_input("x", TensorType((2, 16), "f32"))
    s, z = g.add_const(np.float32(0.1), "s"), g.add_const(np.int32(3), "z")
    wq = g.add_const(pack_int4(RNG.integers(0, 16, (4, 16)).astype(np.uint8)), "wq")
    ws, wz = g.add_const(np.ones((4, 2), np.float32), "ws"), g.add_const(np.full((4, 2), 8, np.uint8), "wz")
    xd = g.add("dequantize", [g.add("quantize", [x, s, z], {"dtype": "u8"}), s, z])
    w = g.add("dequantize", [wq, ws, wz], {"bits": 4, "group_size": 8})
    w8 = g.add("dequantize", [g.add_const(pack_words(RNG.integers(-128, 128, (16, 4)).astype(np.int8), 0), "w8"), s],
               {"packed_axis": -2, "packed_dtype": "i8"})
    g.set_outputs([g.add("linear", [xd, w]), g.add("matmul", [xd, w8])])
    verify(g)
    text = print_graph(g)
    g2 = parse_graph(text, g.constants)
    assert print_graph(g2) == text
    inp = [RNG.standard_normal((2, 16)).astype(np.float32)]
    for a, b in zip(interpret(g, inp), interpret(g2, inp)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.filterwarnings("ignore:torch.quantize_per_tensor")
def test_requantize_is_the_epilogue_chain_it_replaces():
    """requantize(acc, m, c, zp) with m = s / s_out, c = b / s_out + z_out and the ReLU6 as integer bounds
    gives the levels torch's dequantize -> bias -> clamp -> quantize_per_tensor chain gives (i32 sums of a conv)."""
    acc = RNG.integers(-40000, 40000, (2, 4, 5, 5)).astype(np.int32)
    s = RNG.uniform(1e-4, 3e-4, (1, 4, 1, 1)).astype(np.float32)
    zp = RNG.integers(-3000, 3000, (1, 4, 1, 1)).astype(np.int32)
    b = RNG.uniform(-1, 1, (1, 4, 1, 1)).astype(np.float32)
    s_out, z_out = 0.0235, 0
    real = torch.clamp((torch.from_numpy(acc) - torch.from_numpy(zp)).float() * torch.from_numpy(s) +
                       torch.from_numpy(b), 0.0, 6.0)
    want = torch.quantize_per_tensor(real, s_out, z_out, torch.quint8).int_repr().numpy()
    m = (s.astype(np.float64) / s_out).astype(np.float32)
    c = (b.astype(np.float64) / s_out + z_out).astype(np.float32)
    got = _ref("requantize", [acc, m, c, zp], dtype="u8", min=0, max=int(np.rint(np.float32(6.0) / np.float32(s_out))))
    assert got.dtype == np.uint8 and (got == 0).any()  # the ReLU's bottom
    diff = np.abs(got.astype(int) - want.astype(int))
    assert diff.max() <= 1 and (diff == 0).mean() > 0.999, (diff.max(), (diff == 0).mean())
    assert got.max() == int(np.rint(6.0 / s_out))  # the ReLU6's top, as an integer bound


def test_requantize_checks_its_bounds_and_types():
    g = Graph()
    a = g.add_input("a", TensorType((2, 3), "i32"))
    m, c = g.add_const(np.ones(3, np.float32), "m"), g.add_const(np.zeros(3, np.float32), "c")
    with pytest.raises(OpError, match="min <= max"):
        g.add("requantize", [a, m, c], {"dtype": "i8", "min": -128, "max": 200})
    with pytest.raises(OpError, match="i32 sums"):
        g.add("requantize", [g.add_input("f", TensorType((2, 3), "f32")), m, c])
    with pytest.raises(OpError, match="does not broadcast"):
        g.add("requantize", [a, g.add_const(np.ones(4, np.float32), "m4"), c])
    g.set_outputs([g.add("requantize", [a, m, c], {"dtype": "u8", "min": 0, "max": 255, "scale": 0.5})])
    verify(g)
    assert print_graph(parse_graph(print_graph(g))) == print_graph(g)
