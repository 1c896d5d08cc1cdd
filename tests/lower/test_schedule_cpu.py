"""Structure of the CPU schedules that the speed of the kernels rests on, each beside its numerics.

* a tiled kernel's accumulator is a stack buffer (LLVM keeps it in registers), never a workspace allocation
  made in every parallel task (that made 1x1 convs 2x slower);
* a blocked depthwise conv or window pool pads its input inside each parallel task, not as a padded copy of
  the whole input (3x slower on MobileNetV2's depthwise layers);
* the blocked dense conv reads its packed weight in memory order (input channel, then window).
* a per-row quantize (int8-dynamic) is vectorized by TVM, its rounding included (not gathers and byte stores).
"""

from __future__ import annotations

import numpy as np
import pytest
import tvm

from edgeopt.api import compile_graph
from edgeopt.ir import Graph, TensorType, interpret
from edgeopt.ir.ops.nn import pack_conv_weight
from edgeopt.lower.build import anchor_attrs, anchor_op, build_primfunc
from edgeopt.lower.schedule_cpu import schedule_kernel

from .tir_loops import loop_names

RNG = np.random.default_rng(0)


def rand(*shape):
    return RNG.uniform(-1, 1, shape).astype(np.float32)


def blocked_conv(g, x, cin, cout, k, stride=1, groups=1, b=8):
    w = pack_conv_weight(rand(cout, cin // groups, k, k), b)
    attrs = {"layout": "NCHWc", "weight_layout": f"OIHW{b}o", "stride": [stride, stride], "groups": groups,
             "padding": [k // 2] * 4}
    return g.add("conv2d", [x, g.add_const(w, f"w{len(g.nodes)}"), g.add_const(rand(cout), f"b{len(g.nodes)}")],
                 attrs)


def only_node_graph(build):
    g = Graph()
    x = g.add_input("x", TensorType((1, 2, 8, 8, 8), "f32"))
    g.set_outputs([build(g, x)])
    return g, g.nodes[-1]


def llvm_ir(g, node, host_target) -> tuple[str, str]:
    """(schedule description, LLVM IR) of ``node``'s kernel (a fused one: scheduled by its anchor)."""
    func, desc = schedule_kernel(build_primfunc(g, node)[0], anchor_op(node), host_target.vector_lanes(32),
                                 anchor_attrs(node))
    ex = tvm.compile(tvm.IRModule({"main": func}), target=host_target.tvm_target())
    mod = ex.mod if hasattr(ex, "mod") else ex
    return desc, mod.inspect_source("ll")


@pytest.mark.parametrize("case", ["conv1x1", "linear", "matmul"])  # no pad stage: any workspace is the accumulator
def test_tiled_accumulator_is_not_a_workspace_allocation(case, host_target):
    def build(g, x):
        if case == "conv1x1":
            return blocked_conv(g, x, 16, 32, 1)
        a = g.add("reshape", [x], {"shape": [16, 64]})
        if case == "linear":
            return g.add("linear", [a, g.add_const(rand(48, 64), "w")])
        return g.add("matmul", [a, g.add_const(rand(64, 48), "w")])

    g, node = only_node_graph(build)
    desc, ll = llvm_ir(g, node, host_target)
    assert desc.startswith("tile("), desc
    assert "@__TVMBackendAllocWorkspace" not in ll, f"{case}: the accumulator is heap-allocated per task"


@pytest.mark.parametrize("op,stride", [("depthwise", 1), ("depthwise", 2), ("max_pool2d", 2), ("avg_pool2d", 1)])
def test_blocked_window_ops_pad_inside_each_task(op, stride):
    g = Graph()
    x = g.add_input("x", TensorType((1, 3, 11, 12, 8), "f32"))
    if op == "depthwise":
        y = blocked_conv(g, x, 24, 24, 3, stride=stride, groups=24)
    else:
        y = g.add(op, [x], {"kernel": [3, 3], "stride": [stride, stride], "padding": [1, 1, 1, 1],
                            "layout": "NCHWc"})
    g.set_outputs([g.add("relu", [y])])
    xs = [rand(1, 3, 11, 12, 8)]
    expected = interpret(g, xs)[0]
    compiled = compile_graph(g.clone(), opt_level=0)
    (kernel,) = [k for k in compiled.report["kernels"] if k["op"] in ("conv2d", op)]
    assert "pad@task(pad)" in kernel["schedule"], kernel["schedule"]
    np.testing.assert_allclose(compiled(*xs), expected, rtol=1e-5, atol=1e-5)


def test_blocked_conv_reads_the_packed_weight_in_memory_order(host_target):
    g, node = only_node_graph(lambda g, x: blocked_conv(g, x, 16, 16, 3))
    func, _ = schedule_kernel(build_primfunc(g, node)[0], node.op, host_target.vector_lanes(32), node.attrs)
    loops = loop_names(func)
    order = [name for name in loops if name in ("rco", "rci", "ry", "rx")]
    assert order == ["rco", "rci", "ry", "rx"], order


def test_image_pad_stores_without_scatters(host_target):
    """The first conv's input (3 channels, blocked and padded in the kernel) is written with its 3 channels unrolled
    inside the image's width: LLVM vectorizes the width with the 3 stores interleaved in registers. With the width
    innermost, each store had a stride of 3 and became a scatter (``vscatterqps``, microcoded on Zen 4)."""
    import torch

    import edgeopt
    from edgeopt.lower.build import anchor_attrs, anchor_op

    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3, 2, 1), torch.nn.ReLU6(), torch.nn.Conv2d(16, 8, 1)).eval()
    x = torch.randn(1, 3, 64, 64)  # (at 32x32 LLVM still scatters the padded rows of 34)
    compiled = edgeopt.compile(m, [x])
    first = compiled.report["kernels"][0]
    assert first["ops"][0] == "layout_transform" and "par(short-axis-unrolled)" in first["schedule"], first
    g = compiled.graph
    node = next(n for n in g.nodes if n.body is not None and anchor_op(n) == "conv2d")
    func, _ = schedule_kernel(build_primfunc(g, node)[0], anchor_op(node), host_target.vector_lanes(32),
                              anchor_attrs(node))
    ex = tvm.compile(tvm.IRModule({"main": func}), target=host_target.tvm_target())
    ll = (ex.mod if hasattr(ex, "mod") else ex).inspect_source("ll")
    assert "store" in ll and "masked.scatter" not in ll
    with torch.no_grad():
        np.testing.assert_allclose(compiled(x.numpy()), m(x).numpy(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("width", [48, 256, 384])
def test_layer_norm_sums_rows_as_vectors(width):
    """LayerNorm's mean and variance as one vector of partial sums per row (rfactor), whatever the number of
    vectors in a row (256 = 16 vectors of 16: the reduction loop as long as the lane loop), and the same numbers."""
    g = Graph()
    x = g.add_input("x", TensorType((6, width), "f32"))
    g.set_outputs([g.add("layer_norm", [x, g.add_const(rand(width), "w"), g.add_const(rand(width), "b")],
                         {"normalized_ndim": 1, "eps": 1e-5})])
    data = rand(6, width)
    want = interpret(g, [data])[0]
    compiled = compile_graph(g, "host")
    (kernel,) = compiled.report["kernels"]
    assert kernel["schedule"] == "rows(one-loop),vector-partials=2", kernel
    np.testing.assert_allclose(compiled(data), want, rtol=1e-5, atol=1e-5)


def test_store_run_unroll_leaves_the_parallel_loop_of_a_one_row_linear(host_target):
    """The store's pixel run is unrolled (else LLVM re-vectorizes it across pixels with gathers), but only a loop of
    the store's own: a matrix-vector product's column panels are its parallel tasks and stay so."""
    g = Graph()
    x = g.add_input("x", TensorType((1, 256), "f32"))
    g.set_outputs([g.add("linear", [x, g.add_const(rand(128, 256), "w")])])
    node = g.nodes[-1]
    func, _ = schedule_kernel(build_primfunc(g, node)[0], node.op, host_target.vector_lanes(32), node.attrs)
    assert "T.parallel" in func.script()
    data = rand(1, 256)
    np.testing.assert_allclose(compile_graph(g, "host")(data), interpret(g, [data])[0], rtol=1e-4, atol=1e-4)


def test_per_row_quantize_is_vectorized(host_target):
    """int8-dynamic's per-row quantize (absmax of each row, then round(x / scale)) is TVM-vectorized: one vector
    store of u8 per vector of values. Its rounding was ``tirx.nearbyint``, which TVM 0.27 does not mark vectorizable:
    TVM scalarized the loop, and LLVM vectorized it across rows instead (gathers in, a store per byte: MiniLM 52
    instead of 8-18 us a call) on AVX-512, or as one 64-byte store per 4 vectors on AVX2."""
    import torch

    import edgeopt

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 16)).eval()
    x = torch.randn(32, 64)
    c = edgeopt.compile(model, (x,), quantize="int8-dynamic")
    rows = [n for n in c.graph.nodes if n.op == "fused" and n.attrs.get("name") == "quantize_rows"]
    assert rows, [n.attrs.get("name") for n in c.graph.nodes]
    desc, ll = llvm_ir(c.graph, rows[0], host_target)
    lanes = host_target.vector_lanes(32)
    assert desc.startswith("rows(one-loop)"), desc
    assert f"store <{lanes} x i8>" in ll and "masked.gather" not in ll and "masked.scatter" not in ll, desc
    np.testing.assert_allclose(c(x.numpy()), interpret(c.graph, [x.numpy()])[0], rtol=1e-5, atol=1e-5)
