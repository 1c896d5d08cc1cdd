"""NaN semantics on the GPU targets: the generated CUDA C and WGSL compute max/min/clamp/ReLU, max pools and
max reductions with ordered comparisons and selects (``edgeopt.lower.nan_math``), never CUDA's ``max``
(``fmaxf``, which drops NaN) or WGSL's ``max`` (NaN behaviour left to the implementation); and on a Vulkan
device (lavapipe in CI) the NaNs come out where torch has them.

The source checks need nvcc (``get_target("cuda")``) but no GPU; the WGSL checks need nothing; the run needs a
Vulkan device.
"""

from __future__ import annotations

import re
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import edgeopt
from edgeopt.runtime.artifact import read_artifact
from tests.targets import needs, vulkan_probe

needs_nvcc = needs("cuda", bool(shutil.which("nvcc")), "nvcc is not installed (the CUDA 13 toolkit)")


HAS_VULKAN, ADAPTER = vulkan_probe()
needs_vulkan = needs("vulkan", HAS_VULKAN, f"no Vulkan device: {ADAPTER}")


class MaxMin(torch.nn.Module):
    """One kernel per max/min-like op (the scalar makes ``maximum`` a kernel of its own)."""

    def forward(self, x):
        return (F.relu(x), F.relu6(x), torch.maximum(x, x * -0.5 + 1), F.max_pool2d(x, 3, 2, 1), x.amax(-1),
                torch.softmax(x, -1), torch.exp(x), F.hardsigmoid(x))


#: kernels whose whole body is a max/min-like op (no integer min/max either): no max( or min( at all
PURE = ("relu", "clamp", "maximum", "max_pool2d", "max_", "hardsigmoid")


def _example():
    x = torch.randn(2, 4, 8, 16, generator=torch.Generator().manual_seed(0))
    x[0, 1, 2, 3], x[1, 2, 5, 7], x[0, 3, 0, :] = float("nan"), float("inf"), float("-inf")
    return x


@pytest.mark.cuda
@needs_nvcc
def test_cuda_source_has_no_nan_dropping_max():
    from edgeopt.targets import get_target
    from edgeopt.targets.cuda_aot import cuda_source

    from edgeopt.api import optimize_graph
    from edgeopt.frontend import from_torch
    from edgeopt.lower.build import lower

    tgt = get_target("cuda")
    g = from_torch(MaxMin().eval(), (_example(),))
    optimize_graph(g, tgt)
    src = cuda_source(lower(g, tgt).executable)
    bodies = dict(re.findall(r"__global__ void __launch_bounds__\(\d+\) (\w+)_kernel\([^)]*\) \{(.*?)\n\}\n", src,
                             re.S))
    assert len(bodies) >= 7, list(bodies)
    for name, body in bodies.items():
        assert "fmaxf" not in body and "fminf" not in body, name
        if name.startswith(PURE):
            assert not re.search(r"\b(max|min)\(", body), (name, body)
            assert "<" in body, name
    softmax = next(b for n, b in bodies.items() if n.startswith("softmax"))
    # the cross-thread max: NaN from either lane survives the shuffle steps (the other lane's by its bits)
    assert re.search(r"2139095040 < .*\? t0\w*\[0\] : \(\(red_buf0\w*\[0\] < t0\w*\[0\]\) \? t0\w*\[0\] : "
                     r"red_buf0\w*\[0\]\)", softmax), softmax[:3000]


def _wgsl(members) -> dict[str, str]:
    return {k: v.decode() for k, v in members.items() if k.endswith(".wgsl")}


@pytest.mark.vulkan
def test_wgsl_has_no_nan_dropping_max():
    compiled = edgeopt.compile(MaxMin().eval(), (_example(),), target="vulkan")
    shaders = _wgsl(read_artifact(compiled._artifact)[1])
    assert len(shaders) >= 7
    for name, text in shaders.items():
        body = text.split("fn ", 1)[1]
        if any(f"/{p}" in name for p in PURE):
            assert not re.search(r"\b(max|min)\(", body), (name, body)
            assert "<" in body, name
        # exp's range clamp lets NaN through: only integer min/max remain (lavapipe folds x != x to false)
        assert not re.search(r"\b(max|min)\(fm", body), name


@pytest.mark.vulkan
@needs_vulkan
def test_vulkan_run_keeps_nan_where_torch_has_it():
    model = MaxMin().eval()
    x = _example()
    compiled = edgeopt.compile(model, (x,), target="vulkan")
    with torch.no_grad():
        want = model(x)
    for i, (g, w) in enumerate(zip(compiled(x), want)):
        w = w.numpy()
        assert np.isnan(w).any(), i
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6, equal_nan=True, err_msg=f"output {i}")


@pytest.mark.vulkan
@needs_vulkan
def test_vulkan_fp16_keeps_nan_and_infinities():
    """precision="fp16": the max reductions start from an f16 -inf, which the WGSL spells through f32 (naga
    rejects a component of a vec2<f16> bit cast); NaN and infinities land where torch's fp32 has them."""
    model = MaxMin().eval()
    x = _example()
    compiled = edgeopt.compile(model, (x,), target="vulkan", precision="fp16")
    assert any("f16(bitcast<f32>(0x7f800000u))" in t for t in _wgsl(read_artifact(compiled._artifact)[1]).values())
    with torch.no_grad():
        want = model(x)
    for i, (g, w) in enumerate(zip(compiled(x), want)):
        w = w.numpy()
        np.testing.assert_array_equal(np.isnan(g), np.isnan(w), err_msg=f"output {i}")
        np.testing.assert_array_equal(np.isinf(g) & (g > 0), np.isinf(w) & (w > 0), err_msg=f"output {i}")
        finite = np.isfinite(w)
        np.testing.assert_allclose(g[finite], w[finite], rtol=2e-2, atol=2e-2, err_msg=f"output {i}")


@pytest.mark.parametrize("value, nan", [(1e-12, False), (float("nan"), True), (float("inf"), False)])
def test_isnan_of_a_constant_is_a_constant(value, nan):
    """A NaN test on a constant (an immediate, or a graph's scalar constant read as a tensor before it is inlined)
    is decided at compile time: CUDA's codegen reinterprets a float through its address, which a literal lacks
    (int8-dynamic's ``max(absmax, 1e-12)`` failed in nvcc). No nvcc needed: the expression is checked."""
    import tvm
    from tvm import te

    from edgeopt.lower.nan_math import isnan

    scalar = te.compute((), lambda: tvm.tirx.const(value, "float32"), name="scalar0")
    for x in (tvm.tirx.const(value, "float32"), scalar()):
        got = isnan(x)
        assert isinstance(got, tvm.tirx.IntImm) and bool(got.value) == nan
    x = te.placeholder((4,), "float32", name="x")
    assert "reinterpret" in str(isnan(x[0]))  # a value read from memory is tested from its bits


class Orders(torch.nn.Module):
    """topk and a stable sort (the IR's argtopk): pairwise ranks on the GPU targets."""

    def forward(self, x):
        values, indices = torch.topk(x, 4, dim=-1)
        ordered, order = torch.sort(x, dim=0, descending=True, stable=True)
        return values, indices, ordered, order


def _orderable():
    """Ties, NaN, signed zeros and infinities: every rule of torch's order."""
    x = torch.randint(-4, 5, (5, 24), generator=torch.Generator().manual_seed(0)).float() / 2
    x[0, 3] = x[2, 0] = x[4, 7] = float("nan")
    x[1, 2], x[3, 5], x[0, 9], x[2, 11] = -0.0, 0.0, float("inf"), float("-inf")
    return x


@pytest.mark.cuda
@needs_nvcc
def test_sort_and_topk_build_cuda_code():
    compiled = edgeopt.compile(Orders().eval(), (_orderable(),), target="cuda")
    assert any(k["name"].startswith("argtopk") for k in compiled.report["kernels"]), compiled.report["kernels"]


@pytest.mark.vulkan
@needs_vulkan
def test_sort_and_topk_on_vulkan_are_torchs_order():
    """The positions come out as torch's stable order (i32 on WGSL), NaN first when descending, and -0.0 equal to
    0.0; the values are the elements at them. (torch.topk's order of ties is its own: its positions are compared
    with the stable sort's first 4.)"""
    x = _orderable()
    compiled = edgeopt.compile(Orders().eval(), (x,), target="vulkan")
    with torch.no_grad():
        want = list(Orders()(x))
    want[1] = torch.sort(x, dim=-1, descending=True, stable=True).indices[:, :4]
    for i, (got, w) in enumerate(zip(compiled(x), want)):
        np.testing.assert_array_equal(got, w.numpy().astype(got.dtype), err_msg=f"output {i}")
