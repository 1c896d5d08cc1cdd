"""The int8 conv's register tile: two output-channel blocks x four pixels where they divide, numerics unchanged."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from edgeopt.targets import get_target

import edgeopt
from edgeopt.ir import interpret
from edgeopt.lower.schedule_int8 import _conv_tile


def test_tile_takes_two_blocks_where_both_divide():
    assert _conv_tile(6, 112, 8) == (2, 4)  # MobileNetV2's 96 channels at 112 pixels a row
    assert _conv_tile(4, 56, 8) == (2, 4)
    assert _conv_tile(3, 56, 8) == (1, 8)  # an odd number of blocks: one block, 8 pixels
    assert _conv_tile(6, 7, 8) == (1, 7)  # rows of 7 would leave a 2 x 1 tile
    assert _conv_tile(6, 14, 8) == (1, 7)
    assert _conv_tile(6, 112, 4) == (1, 4)  # too few registers for 2 x 4


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
