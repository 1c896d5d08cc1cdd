"""winograd_conv and conv2d_winograd: the tile choice, Before/Expected IR, refusals, the op's reference against
PyTorch, numerics before vs after the pass (interpreter) and compiled (kernel vs interpreter, models vs torch),
and the structure of the kernel's schedule."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from edgeopt.passes.winograd_conv import MIN_CHANNELS, WinogradConv, winograd_tile

import edgeopt
from edgeopt.api import compile_graph
from edgeopt.ir import Graph, OpError, TensorType, interpret, parse_graph, print_graph, verify
from edgeopt.ir.ops.layout import block_nchw, unblock_nchw
from edgeopt.ir.ops.nn import pack_conv_weight, unpack_conv_weight
from edgeopt.ir.ops.winograd import matrices, transform_weight
from edgeopt.ir.registry import get_op
from tests.passes.fusion_harness import assert_close

RNG = np.random.default_rng(7)


def rand(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


def blocked_conv_graph(cin=32, cout=32, size=8, k=3, stride=1, dilation=1, groups=1, pads=(1, 1, 1, 1),
                       bias=True, batch=1, const_weight=True):
    """A blocked (NCHW8c) conv2d, as nchwc_layout leaves it, followed by a ReLU."""
    g = Graph()
    x = g.add_input("x", TensorType((batch, cin // 8, size, size, 8), "f32"))
    wshape = (cout, cin // groups, k, k)
    w = pack_conv_weight(rand(*wshape) / np.float32(np.sqrt(cin * k * k)), 8)
    wv = g.add_const(w, "w_OIHW8o") if const_weight else g.add_input("w", TensorType(w.shape, "f32"))
    ins = [x, wv] + ([g.add_const(rand(cout), "b")] if bias else [])
    y = g.add("conv2d", ins, {"layout": "NCHWc", "weight_layout": "OIHW8o", "stride": [stride, stride],
                              "dilation": [dilation, dilation], "groups": groups, "padding": list(pads)})
    g.set_outputs([g.add("relu", [y])])
    return g


def run_pass(g, tile=None) -> dict:
    stats = WinogradConv(tile).run(g)
    verify(g)
    return stats


@pytest.mark.parametrize("cin,cout,h,w,tile", [
    (64, 64, 56, 56, 4), (128, 128, 28, 28, 4), (256, 256, 14, 14, 2), (512, 512, 7, 7, 0),
    (32, 32, 8, 8, 4), (32, 48, 4, 4, 2), (32, 32, 6, 10, 2), (32, 32, 9, 8, 0), (16, 16, 32, 32, 4),
    (8, 16, 32, 32, 0),
    (MIN_CHANNELS - 8, 64, 56, 56, 0), (64, MIN_CHANNELS - 8, 56, 56, 0)])
def test_tile_choice(cin, cout, h, w, tile):
    assert winograd_tile(cin, cout, h, w) == tile


def test_matrices_compute_a_3x3_correlation_exactly():
    for m in (2, 4):
        bt, g, at = matrices(m)
        d, k = RNG.standard_normal((m + 2, m + 2)), RNG.standard_normal((3, 3))
        y = at @ ((g @ k @ g.T) * (bt @ d @ bt.T)) @ at.T
        direct = np.array([[np.sum(d[i:i + 3, j:j + 3] * k) for j in range(m)] for i in range(m)])
        np.testing.assert_allclose(y, direct, rtol=0, atol=1e-12)


@pytest.mark.parametrize("m,size,pads,batch", [(4, 8, (1, 1, 1, 1), 1), (2, 6, (1, 1, 1, 1), 2),
                                               (4, 7, (0, 2, 1, 0), 1), (2, 5, (2, 0, 0, 1), 1)])
def test_reference_matches_torch_conv(m, size, pads, batch):
    x, w, b = rand(batch, 16, size, size + 1), rand(8, 16, 3, 3), rand(8)
    (y,) = get_op("conv2d_winograd").reference(
        [block_nchw(x, 8), transform_weight(w, m, 4), b], {"tile": m, "padding": list(pads)})
    t, left, bottom, right = pads
    xp = torch.nn.functional.pad(torch.from_numpy(x).double(), (left, right, t, bottom))
    ref = torch.nn.functional.conv2d(xp, torch.from_numpy(w).double(), torch.from_numpy(b).double()).numpy()
    assert y.shape == (batch, 2, ref.shape[2], ref.shape[3], 4)
    np.testing.assert_allclose(unblock_nchw(y), ref, rtol=0, atol=1e-4 * np.abs(ref).max())


def test_before_expected_ir():
    g = blocked_conv_graph(cin=32, cout=32, size=8)
    w = g.const(g.nodes[0].inputs[1])
    assert run_pass(g) == {"winograd_f2": 0, "winograd_f4": 1}
    expected = """
    graph main(%x: f32[1,4,8,8,8]) {
      const %b: f32[32]
      const %w_winograd4: f32[36,4,32,8]
      %conv2d: f32[1,4,8,8,8] = conv2d_winograd(%x, %w_winograd4, %b) {"tile": 4, "padding": [1, 1, 1, 1]}
      %relu: f32[1,4,8,8,8] = relu(%conv2d)
      return %relu
    }"""
    consts = {"b": g.const(g.nodes[0].inputs[2]), "w_winograd4": g.const(g.nodes[0].inputs[1])}
    assert print_graph(g) == print_graph(parse_graph(expected, consts))
    assert list(g.constants) == ["b", "w_winograd4"]  # the packed direct weight is gone
    np.testing.assert_array_equal(g.const(g.nodes[0].inputs[1]), transform_weight(unpack_conv_weight(w, 8), 4, 8))


@pytest.mark.parametrize("change", [dict(stride=2), dict(k=1, pads=(0, 0, 0, 0)), dict(k=5, pads=(2, 2, 2, 2)),
                                    dict(dilation=2, pads=(2, 2, 2, 2)), dict(groups=32),
                                    dict(const_weight=False), dict(cin=8), dict(cout=8), dict(size=7)])
def test_leaves_other_convs_direct(change):
    g = blocked_conv_graph(**change)
    before = print_graph(g)
    assert sum(run_pass(g).values()) == 0
    assert print_graph(g) == before


def test_forced_tiles_and_bad_tile():
    g = blocked_conv_graph(size=7)  # odd: the heuristic leaves it direct, a forced tile crops its last tiles
    assert run_pass(g, tile=2) == {"winograd_f2": 1, "winograd_f4": 0}
    assert run_pass(blocked_conv_graph(), tile=0) == {"winograd_f2": 0, "winograd_f4": 0}
    with pytest.raises(ValueError, match="tile must be"):
        WinogradConv(3)


def test_verifier_rejects_a_wrong_weight_shape():
    g = blocked_conv_graph()
    run_pass(g)
    n = g.nodes[0]
    n.attrs["tile"] = 2  # a 4-tile weight [36, ...] under tile 2 (needs [16, ...])
    with pytest.raises(Exception, match=r"tile 2 needs u = \[16"):
        verify(g)
    with pytest.raises(OpError, match="tile must be one of"):
        matrices(3)


@pytest.mark.parametrize("tile,size,pads,batch", [(4, 8, (1, 1, 1, 1), 1), (2, 8, (1, 1, 1, 1), 2),
                                                  (2, 7, (1, 1, 1, 1), 1), (4, 10, (1, 1, 1, 1), 1),
                                                  (4, 9, (0, 1, 2, 1), 1)])
def test_interpreter_before_vs_after_and_compiled_kernel(tile, size, pads, batch):
    """Forced tiles on every shape (odd sizes and uneven pads crop the last tiles): the interpreter after the pass
    agrees with the direct conv before it, and the compiled kernel with the interpreter."""
    g = blocked_conv_graph(cin=16, cout=24, size=size, pads=pads, batch=batch)
    before = g.clone()
    run_pass(g, tile=tile)
    xs = [rand(*g.inputs[0].type.shape)]
    direct = interpret(before, xs)[0]
    after = interpret(g, xs)[0]
    assert_close(direct, after, rtol=1e-5)
    compiled = compile_graph(g.clone(), opt_level=0)
    (kernel,) = [k for k in compiled.report["kernels"] if k["op"] == "conv2d_winograd"]
    assert kernel["schedule"].startswith(f"winograd(F{tile}x{tile}"), kernel["schedule"]
    assert_close(after, compiled(*xs), rtol=1e-5)


class ResidualBlock(torch.nn.Module):
    """A ResNet basic block: conv-bn-relu, conv-bn, residual add, relu."""

    def __init__(self, c):
        super().__init__()
        self.c1, self.b1 = torch.nn.Conv2d(c, c, 3, padding=1, bias=False), torch.nn.BatchNorm2d(c)
        self.c2, self.b2 = torch.nn.Conv2d(c, c, 3, padding=1, bias=False), torch.nn.BatchNorm2d(c)

    def forward(self, x):
        return torch.relu(x + self.b2(self.c2(torch.relu(self.b1(self.c1(x))))))


@pytest.mark.parametrize("channels,size,tile", [(32, 16, 4), (32, 6, 2)])
def test_model_with_fused_epilogues_matches_torch(channels, size, tile):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, channels, 3, padding=1), ResidualBlock(channels)).eval()
    for bn in (net[1].b1, net[1].b2):  # trained-looking statistics, so BatchNorm folding changes the weights
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
    x = torch.randn(1, 3, size, size)
    compiled = edgeopt.compile(net, [x])
    wino = [k for k in compiled.report["kernels"] if k["op"] == "conv2d_winograd"]
    assert len(wino) == 2 and all(k["schedule"].startswith(f"winograd(F{tile}x{tile}") for k in wino), wino
    assert any("add" in k["ops"] for k in wino)  # the residual add is in the second conv's epilogue
    with torch.no_grad():
        assert_close(net(x).numpy(), compiled(x.numpy()), rtol=1e-5)
    direct = edgeopt.compile(net, [x], disable=["winograd_conv"])
    assert not any(k["op"] == "conv2d_winograd" for k in direct.report["kernels"])


def scheduled_winograd(host_target, g):
    from edgeopt.lower.build import anchor_attrs, anchor_op, build_primfunc
    from edgeopt.lower.schedule_cpu import schedule_kernel

    node = next(n for n in g.nodes if anchor_op(n) == "conv2d_winograd")
    return schedule_kernel(build_primfunc(g, node)[0], "conv2d_winograd", host_target.vector_lanes(32),
                           anchor_attrs(node))


def test_transform_rows_are_unrolled_so_their_coefficients_are_constants(host_target):
    """Every loop over a transform's rows or a tile's pixels (extent m+2 or m) is unrolled: the rule's Select over
    the row becomes a constant case per copy, so no row sum is computed and then thrown away."""
    import tvm
    from tvm.s_tir import Schedule

    g = blocked_conv_graph(cin=64, cout=64, size=8, bias=False)  # no other loop has extent 4 or 6 here
    run_pass(g)
    func, desc = scheduled_winograd(host_target, g)
    assert desc.startswith("winograd(F4x4"), desc
    sch = Schedule(tvm.IRModule({"main": func}))
    for stage in ("wino_rows", "wino_in", "wino_cols", "conv2d_winograd"):
        loops = [sch.get(lp) for lp in sch.get_loops(sch.get_sblock(stage, func_name="main"))]
        rowlike = [lp for lp in loops if int(lp.extent) in (4, 6)]
        assert rowlike and all(lp.kind == tvm.tirx.ForKind.UNROLLED for lp in rowlike), (stage, loops)


def test_kernel_is_vectorized(host_target):
    """Every multiply of the kernel is a vector op: the channel block is the vector in all five stages."""
    import tvm

    g = blocked_conv_graph(size=8, bias=False)
    run_pass(g)
    func, desc = scheduled_winograd(host_target, g)
    ll = tvm.compile(tvm.IRModule({"main": func}), target=host_target.tvm_target()).mod.inspect_source("ll")
    lanes = 8  # the graph's channel block (NCHW8c) is the vector, whatever the host's widest vector (AVX-512: 16)
    scalar = re.findall(r"fmul float |fmuladd\.f32\(", ll)
    vector = re.findall(rf"fmul <{lanes} x float> |fmuladd\.v{lanes}f32\(", ll)
    assert vector and not scalar, (len(vector), len(scalar))


class ScaledConv(torch.nn.Module):
    """Epilogues with scalar constants (after a ReLU, so no pass folds them into the weights) and a plain NCHW
    model input of 32 channels, so the first Winograd kernel reads it through a layout-transform prologue."""

    def __init__(self):
        super().__init__()
        self.a, self.b = torch.nn.Conv2d(32, 32, 3, padding=1), torch.nn.Conv2d(32, 32, 3, padding=1)

    def forward(self, x):
        return torch.relu(self.b(torch.relu(self.a(x)) * 0.5 + 3.0)) - 1.0


def test_scalar_epilogues_and_a_plain_input_keep_the_winograd_schedule():
    torch.manual_seed(0)
    net, x = ScaledConv().eval(), torch.randn(1, 32, 8, 8)
    compiled = edgeopt.compile(net, [x])
    wino = [k for k in compiled.report["kernels"] if k["op"] == "conv2d_winograd"]
    assert len(wino) == 2, compiled.report["kernels"]
    assert all(k["schedule"].startswith("winograd(F4x4") for k in wino), wino  # not the fallback
    assert wino[0]["ops"][0] == "layout_transform"  # the prologue from plain NCHW
    assert "mul" in wino[0]["ops"] and "sub" in wino[1]["ops"], wino
    with torch.no_grad():
        assert_close(net(x).numpy(), compiled(x.numpy()), rtol=1e-5)


def test_prime_tile_count_gets_a_four_row_register_tile():
    g = blocked_conv_graph(size=44, bias=False)  # 11 tiles per row: no divisor between 2 and 7
    before = g.clone()
    run_pass(g)
    xs = [rand(*g.inputs[0].type.shape)]
    compiled = compile_graph(g.clone(), opt_level=0)
    (kernel,) = [k for k in compiled.report["kernels"] if k["op"] == "conv2d_winograd"]
    assert "rows4" in kernel["schedule"], kernel["schedule"]
    assert_close(interpret(before, xs)[0], compiled(*xs), rtol=1e-5)
