"""The int8 conv's register tile: two output-channel blocks x a run of pixels where they divide (4 with 8
accumulators, up to 8 with AVX-512's 16), numerics unchanged; its packed weight read in memory order."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from edgeopt.targets import get_target

import edgeopt
from edgeopt.ir import interpret
from edgeopt.lower.schedule_int8 import _conv_tile

from .tir_loops import loop_names


def _blocked_int8_conv(block: int, qmax: int, int8_dot: str):
    """A 3x3 int8 conv on a blocked u8 input [1, 2, block, block, block]: 2 blocks of ``block`` channels in and out,
    weights in [-qmax, qmax] packed OIHW<block>o4i for ``int8_dot``; returns (its unscheduled PrimFunc, its node)."""
    from edgeopt.ir import Graph, TensorType
    from edgeopt.ir.ops.nn import pack_conv_weight
    from edgeopt.lower.build import build_primfunc

    rng = np.random.default_rng(0)
    c = 2 * block
    g = Graph()
    x = g.add_input("x", TensorType((1, 2, block, block, block), "u8"))
    w = pack_conv_weight(rng.integers(-qmax, qmax + 1, (c, c, 3, 3)).astype(np.int8), block, 4)
    y = g.add("conv2d", [x, g.add_const(w, "w")], {"layout": "NCHWc", "weight_layout": f"OIHW{block}o4i",
                                                   "int8_dot": int8_dot, "padding": [1, 1, 1, 1]})
    g.set_outputs([y])
    node = g.nodes[-1]
    return build_primfunc(g, node)[0], node


def test_tile_takes_two_blocks_where_both_divide():
    assert _conv_tile(6, 112, 8) == (2, 4)  # MobileNetV2's 96 channels at 112 pixels a row
    assert _conv_tile(4, 56, 8) == (2, 4)
    assert _conv_tile(3, 56, 8) == (1, 8)  # an odd number of blocks: one block, 8 pixels
    assert _conv_tile(6, 7, 8) == (1, 7)  # rows of 7 would leave a 2 x 1 tile
    assert _conv_tile(6, 14, 8) == (1, 7)
    assert _conv_tile(6, 112, 4) == (1, 4)  # too few registers for 2 x 4


def test_avx512_tiles_take_sixteen_accumulators_on_rows_up_to_wide_row():
    """AVX-512's 32 registers: 2 blocks x 8 or 7 pixels (two vpdpbusd a cycle, 5 cycles each, need more than 8
    chains); rows wider than WIDE_ROW keep 8 accumulators (measured slower with 16)."""
    from edgeopt.lower.schedule_int8 import WIDE_ROW

    assert _conv_tile(4, 56, 16) == (2, 8)  # ResNet-18's layer1
    assert _conv_tile(8, 28, 16) == (2, 7)
    assert _conv_tile(6, 14, 16) == (2, 7)
    assert _conv_tile(6, 7, 16) == (2, 7)
    assert _conv_tile(9, 56, 16) == (1, 14)  # an odd number of blocks: one block, the longest run within 16
    assert WIDE_ROW < 112 and _conv_tile(6, 112, 16) == (2, 4)
    assert _conv_tile(1, 112, 16) == (1, 8)


@pytest.mark.parametrize("registers, tile", [(32, "u8,k2"), (16, "u4,k2")])
def test_int8_conv_schedule_takes_half_the_registers_as_accumulators(registers, tile):
    """schedule_kernel gives integer kernels half the target's registers, uncapped (AVX-512: 16), where float tiles
    stay at MAX_ACCUMULATORS (8); AVX2's 16 registers keep the 2 x 4 tile."""
    from edgeopt.lower.schedule_cpu import schedule_kernel

    func, node = _blocked_int8_conv(16, 127, "vnni512")
    _, desc = schedule_kernel(func, node.op, 16, node.attrs, registers=registers,
                              int8_dots=get_target("x86", cpu="znver4").int8_dots())
    assert desc.startswith(f"int8-tile({tile},v16,nchwc,vnni512"), desc


@pytest.mark.skipif(get_target("host").int8_dot() is None, reason="the host CPU has no int8 dot product")
def test_two_block_int8_conv_matches_interpreter_and_torch():
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3, 1, 1), torch.nn.ReLU(), torch.nn.Conv2d(16, 32, 3, 1, 1),
                            torch.nn.ReLU(), torch.nn.Conv2d(32, 32, 1)).eval()
    x = torch.randn(1, 3, 16, 16)
    c = edgeopt.compile(m, (x,), quantize="int8", calibration_data=[torch.randn(1, 3, 16, 16) for _ in range(4)])
    tiles = [k["schedule"] for k in c.report["kernels"] if k["schedule"].startswith("int8-tile(")]
    assert tiles and all(",k2," in t for t in tiles), tiles
    got = c(x.numpy())
    np.testing.assert_allclose(got, interpret(c.graph, [x.numpy()])[0], rtol=1e-4, atol=1e-4)
    with torch.no_grad():
        ref = m(x).numpy()
    assert float((ref * got).sum() / np.linalg.norm(ref) / np.linalg.norm(got)) > 0.995


@pytest.mark.skipif("avx2" not in get_target("host").features, reason="the host CPU has no AVX2")
def test_int8_conv_reads_the_packed_weight_in_memory_order():
    """Per input block, the groups of 4 input channels outside the window's taps: the OIHW8o4i weight ([O/8, I/4, KH,
    KW, 8, 4]) is then read front to back, one stream the prefetcher follows (with the taps outside, ResNet-18's
    512-channel convs ran 1.5x their warm time once other work had pushed their weights out of the caches)."""
    from edgeopt.lower.schedule_cpu import schedule_kernel

    func, node = _blocked_int8_conv(8, 64, "avx2-ubsw")
    target = get_target("host")
    func, desc = schedule_kernel(func, node.op, target.vector_lanes(32), node.attrs, int8_dots=target.int8_dots())
    assert desc.startswith("int8-tile(") and ",avx2-ubsw" in desc, desc
    loops = loop_names(func)
    order = [name for name in loops if name in ("rco", "rcq", "ry", "rx")]
    assert order == ["rco", "rcq", "ry", "rx"], loops
