"""target="cuda": the arch table, dlight-scheduled kernels, PTX + cubin compiled ahead of time with nvcc and stored
in the artifact, and the runtime's refusal on a machine without a GPU.

Codegen tests need only nvcc (and, for sm_87 / Jetson, the ARM cross compiler that links its aarch64 host library);
they are skipped with the reason where it is missing, or fail where ``EDGEOPT_REQUIRE_TARGETS`` names ``cuda``.
Tests that run kernels need an NVIDIA GPU with a CUDA 13 driver (found through ``libcuda.so.1``) and are skipped
without one: this machine and CI have none.
"""

from __future__ import annotations

import json
import re
import shutil
import struct

import numpy as np
import pytest
import torch
from edgeopt.targets import get_target
from edgeopt.targets.cuda import ARCHS, ARM_CC

import edgeopt
from edgeopt.errors import ArtifactError, TargetError
from edgeopt.pipeline import CPU_LAYOUT_PASSES, default_pipeline
from edgeopt.runtime.artifact import read_artifact
from edgeopt.runtime.tvm_cuda import gpu_compute_capability
from tests.conftest import as_list, rel_err, torch_outputs
from tests.targets import needs

pytestmark = pytest.mark.cuda
needs_nvcc = needs("cuda", bool(shutil.which("nvcc")), "nvcc is not installed (the CUDA 13 toolkit, or pip "
                   "nvidia-cuda-nvcc with its bin/ on PATH)")
needs_arm_cc = needs("cuda", bool(shutil.which(ARM_CC)), f"{ARM_CC} (the Jetson host library's linker) is not "
                     "installed (apt-get install gcc-aarch64-linux-gnu libc6-dev-arm64-cross)")
HAS_GPU = gpu_compute_capability() is not None
needs_gpu = pytest.mark.skipif(not HAS_GPU, reason="no CUDA GPU here (libcuda.so.1 finds no device)")
EM_CUDA, EM_X86_64, EM_AARCH64 = 190, 62, 183
GPU_TOL = 1e-3  # GPU reductions run in another order than PyTorch's CPU kernels
GPU_F16_TOL = 5e-3  # precision="fp16" (on Vulkan the same graphs measured 1e-3)


def tiny_cnn():
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(),
                            torch.nn.Linear(8 * 8 * 8, 16), torch.nn.GELU())
    return m.eval(), (torch.randn(1, 3, 8, 8),)


def _model(name):
    from tests.models.zoo import build

    return tiny_cnn() if name == "cnn" else build("minilm", small=True)


_TRACED: dict = {}
_BUILT: dict = {}


def built(name: str, arch: str, precision: str = "fp32"):
    """(model, inputs, compiled, manifest, members) for a model compiled for ``arch``; each model is traced once."""
    from edgeopt.api import compile_graph
    from edgeopt.frontend import from_torch

    if name not in _TRACED:
        model, inputs = _model(name)
        _TRACED[name] = (model, inputs, from_torch(model, inputs))
    if (name, arch, precision) not in _BUILT:
        model, inputs, graph = _TRACED[name]
        compiled = compile_graph(graph.clone(), get_target("cuda", arch=arch, precision=precision))
        _BUILT[name, arch, precision] = (model, inputs, compiled, *read_artifact(compiled._artifact))
    return _BUILT[name, arch, precision]


def _elf_machine(data: bytes) -> int:
    assert data[:4] == b"\x7fELF"
    return struct.unpack_from("<H", data, 18)[0]


def test_arch_table_and_aliases():
    t = get_target("cuda") if shutil.which("nvcc") else None
    if t is not None:
        assert t.arch == "sm_80" and t.tvm_target().attrs["arch"] == "sm_80"
        assert t.describe()["compute_capability"] == [8, 0] and t.runtime == "cuda"
    from edgeopt.targets.cuda import CudaTarget

    orin = CudaTarget(arch="jetson-orin")
    assert (orin.arch, orin.host_arch, orin.compute_capability) == ("sm_87", "aarch64", (8, 7))
    assert "aarch64" in str(orin.tvm_target().host)
    assert "sm_50" not in ARCHS  # CUDA 13 rejects it


def test_unknown_arch_is_a_target_error():
    with pytest.raises(TargetError, match=r"unknown CUDA arch 'sm_99'.*sm_80.*jetson-orin"):
        get_target("cuda", arch="sm_99")


def test_missing_nvcc_is_a_target_error(monkeypatch):
    import edgeopt.targets.cuda as cuda

    monkeypatch.setattr(cuda.shutil, "which", lambda name: None)
    with pytest.raises(TargetError, match="needs nvcc.*install"):
        get_target("cuda")


def test_cuda_pipeline_has_no_cpu_layouts():
    cuda, host = default_pipeline(2, "cuda"), default_pipeline(2, "host")
    assert not set(CPU_LAYOUT_PASSES) & set(cuda) and set(CPU_LAYOUT_PASSES) <= set(host)
    assert "fuse_epilogue" in cuda and "fuse_elementwise" in cuda


@needs_nvcc
def test_unscheduled_kernel_is_refused():
    """The notes' trap: an unscheduled PrimFunc compiled for CUDA silently becomes host code; it must not ship."""
    import tvm
    from edgeopt.targets.cuda_aot import cuda_source
    from tvm import te

    a = te.placeholder((64,), name="a")
    func = te.create_prim_func([a, te.compute((64,), lambda i: a[i] * 2.0, name="b")])
    ex = tvm.compile(tvm.IRModule({"k": func.with_attr("global_symbol", "k")}), target=get_target("cuda").tvm_target())
    with pytest.raises(TargetError, match="expected \\['cuda'\\]"):
        cuda_source(ex)


@pytest.mark.parametrize("arch", ["sm_80", pytest.param("sm_87", marks=needs_arm_cc)])
@pytest.mark.parametrize("name", ["cnn", "minilm"])
@needs_nvcc
def test_artifact_holds_device_code_for_the_arch(name, arch):
    _, _, compiled, manifest, members = built(name, arch)
    cc = arch.split("_")[1]
    target = manifest["target"]
    assert (target["runtime"], target["cuda_arch"], target["compute_capability"]) == ("cuda", arch, [int(cc[0]),
                                                                                                   int(cc[1])])
    info = json.loads(members["cuda/device_code.json"])
    assert info["arch"] == arch and info["cubin"] in members and info["ptx"] in members
    ptx, cubin = members[info["ptx"]], members[info["cubin"]]
    assert re.search(rb"^\.target\s+sm_" + cc.encode() + rb"\b", ptx, re.M)
    assert _elf_machine(cubin) == EM_CUDA
    assert (struct.unpack_from("<I", cubin, 48)[0] >> 8) & 0xFF == int(cc)  # e_flags: the SM version
    host = _elf_machine(members["kernels.so"])
    assert host == (EM_AARCH64 if arch == "sm_87" else EM_X86_64)
    # every kernel got a GPU schedule and is a __global__ function in the device code (none stayed host code)
    kernels = compiled.report["kernels"]
    assert kernels and all(k["schedule"].startswith("dlight(") for k in kernels), [k["schedule"] for k in kernels]
    entries = set(re.findall(rb"\.entry\s+(\w+)", ptx))
    for k in kernels:
        assert any(e == f"{k['name']}_kernel".encode() or e.startswith(f"{k['name']}_kernel_".encode())
                   for e in entries), k["name"]
    assert not any(op in json.dumps(compiled.report["passes"]) for op in CPU_LAYOUT_PASSES)


@needs_nvcc
@pytest.mark.parametrize("name", ["cnn", "minilm"])
def test_fp16_device_code(name):
    """precision="fp16": f16 weights, f16 arithmetic in the PTX, f32 accumulation, f32 at the boundary."""
    _, _, compiled, manifest, members = built(name, "sm_80", "fp16")
    assert manifest["target"]["precision"] == "fp16"
    info = json.loads(members["cuda/device_code.json"])
    ptx = members[info["ptx"]].decode()
    assert "cvt.rn.f16.f32" in ptx  # results stored as f16
    assert "cvt.f32.f16" in ptx and re.search(r"\b(fma\.rn|add)\.f32\b", ptx)  # f16 factors read as f32, summed
    if name == "cnn":  # its only products are the conv's and the linear's: none is rounded to f16
        assert "mul.f16" not in ptx and "fma.rn.f16" not in ptx
    values = compiled.plan["values"]
    assert all(v["dtype"] == "f16" for v in values.values() if v["kind"] == "const" and v["dtype"].startswith("f"))
    assert all(o["dtype"] != "f16" for o in compiled.plan["outputs"])
    assert compiled.report["pass_stats"]["to_fp16"]["weights"] > 0


@needs_nvcc
def test_device_code_is_keyed_by_the_source_hash():
    import hashlib

    from edgeopt.targets.cuda_aot import compile_device_code

    src = 'extern "C" __global__ void __launch_bounds__(32) k(float* a) { a[threadIdx.x] += 1.0f; }\n'
    out = compile_device_code(src, "sm_75")
    info = json.loads(out["cuda/device_code.json"])
    key = hashlib.sha256(src.encode()).hexdigest()
    assert info["source_sha256"] == key and info["kernels"] == ["k"]
    assert set(out) == {"cuda/device_code.json", f"cuda/{key}/sm_75.cubin", f"cuda/{key}/compute_75.ptx"}


@pytest.mark.skipif(HAS_GPU, reason="this machine has a GPU")
@needs_nvcc
def test_loading_without_a_gpu_is_a_clear_error(tmp_path):
    _, inputs, compiled, _, _ = built("cnn", "sm_80")
    with pytest.raises(TargetError, match="no CUDA device"):
        compiled(*inputs)
    compiled.save(tmp_path / "m.edgeopt")
    with pytest.raises(ArtifactError, match="no CUDA device.*compute capability 8.0"):
        edgeopt.load(str(tmp_path / "m.edgeopt"))


@needs_gpu
@needs_nvcc
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
@pytest.mark.parametrize("name", ["cnn", "minilm"])
def test_gpu_numerics_match_pytorch(name, precision, tmp_path):
    cap = gpu_compute_capability()
    arch = f"sm_{cap[0]}{cap[1]}"
    if arch not in ARCHS:
        pytest.skip(f"this GPU ({arch}) has no row in the arch table")
    model, inputs, compiled, _, _ = built(name, arch, precision)
    compiled.save(tmp_path / "m.edgeopt")
    m = edgeopt.load(str(tmp_path / "m.edgeopt"))
    for ref, got in zip(torch_outputs(model, inputs), as_list(m(*[x.numpy() for x in inputs]))):
        assert got.shape == ref.shape and np.isfinite(got).all()
        assert rel_err(ref, got) < (GPU_TOL if precision == "fp32" else GPU_F16_TOL)


@needs_nvcc
@pytest.mark.parametrize("mode, precision", [("int8", "fp32"), ("int8-dynamic", "fp32"), ("int8-weight", "fp32"),
                                             ("int4-weight", "fp32"), ("int8", "fp16"), ("int8-weight", "fp16")])
def test_quantized_models_build_device_code(mode, precision):
    """Every quantize mode builds for CUDA (the kernels dequantize and compute in float, or in f16 with
    precision="fp16"), each kernel a __global__ function of the PTX; on a GPU, with the host build's numbers.
    int8-dynamic's row scale ``max(absmax, 1e-12)`` reached nvcc as a NaN test on a literal (``*(int *)&1e-12f``),
    which nvcc refused."""
    from tests.passes.test_quantize_passes import TinyCNN, TinyEncoder

    torch.manual_seed(0)
    if mode == "int8":
        model, x = TinyCNN().eval(), torch.randn(1, 3, 12, 12)
    else:  # int8-dynamic quantizes linear layers and matmuls
        model, x = TinyEncoder().eval(), torch.randint(0, 64, (2, 8))
    kw = {"calibration_data": [torch.randn(1, 3, 12, 12) for _ in range(4)]} if mode == "int8" else {}
    cap = gpu_compute_capability()
    arch = f"sm_{cap[0]}{cap[1]}" if HAS_GPU and f"sm_{cap[0]}{cap[1]}" in ARCHS else "sm_80"
    compiled = edgeopt.compile(model, [x], target=get_target("cuda", arch=arch, precision=precision), quantize=mode,
                               **kw)
    members = read_artifact(compiled._artifact)[1]
    ptx = members[json.loads(members["cuda/device_code.json"])["ptx"]]
    entries = set(re.findall(rb"\.entry\s+(\w+)", ptx))
    kernels = compiled.report["kernels"]
    assert kernels and all(k["schedule"].startswith("dlight(") for k in kernels), [k["schedule"] for k in kernels]
    assert all(any(e.startswith(f"{k['name']}_kernel".encode()) for e in entries) for k in kernels)
    assert compiled.report["quantization"]["layers_quantized"] >= 1
    if precision == "fp16":
        assert b"cvt.rn.f16.f32" in ptx  # f16 results
    if mode == "int8-weight":  # int8 weights in either precision (with fp16 they were once left f16)
        q = compiled.report["quantization"]
        assert q["weight_bytes"] < 0.3 * q["weight_bytes_float"], q
    if HAS_GPU and arch == f"sm_{cap[0]}{cap[1]}":
        host = edgeopt.compile(model, [x], quantize=edgeopt.QuantConfig(mode=mode, reduce_range=False), **kw)
        assert rel_err(host(x.numpy()), compiled(x.numpy())) < (GPU_TOL if precision == "fp32" else GPU_F16_TOL)


@needs_nvcc
def test_per_channel_conv_inputs_build_device_code():
    """Static int8 of an inverted residual whose conv inputs have a scale per channel (``QuantConfig
    .activation_scales``) builds PTX (nvcc), and on a GPU computes the host build's numbers."""
    from tests.quant.test_activation_scales import Block, _inputs

    model, x = Block().eval(), torch.from_numpy(_inputs(np.random.default_rng(9)))
    kw = {"calibration_data": [_inputs(np.random.default_rng(i)) for i in range(4)]}
    cap = gpu_compute_capability()
    arch = f"sm_{cap[0]}{cap[1]}" if HAS_GPU and f"sm_{cap[0]}{cap[1]}" in ARCHS else "sm_80"
    compiled = edgeopt.compile(model, [x], target=get_target("cuda", arch=arch), quantize="int8", **kw)
    assert compiled.report["quantization"]["per_channel_inputs"] == 3
    members = read_artifact(compiled._artifact)[1]
    assert b".entry" in members[json.loads(members["cuda/device_code.json"])["ptx"]]
    if HAS_GPU and arch == f"sm_{cap[0]}{cap[1]}":
        host = edgeopt.compile(model, [x], quantize=edgeopt.QuantConfig(reduce_range=False), **kw)
        assert rel_err(host(x.numpy()), compiled(x.numpy())) < GPU_TOL


def test_nvcc_failures_show_the_errors_not_the_warnings():
    from edgeopt.targets.cuda_aot import compiler_errors

    warnings = [f'k.cu({i}): warning #177-D: variable "v{i}" was declared but never referenced' for i in range(500)]
    error = ["k.cu(115): error: expression must be an lvalue", "    if (x < y) {", "        ^"]
    log = "\n".join(warnings + error + ['1 error detected in the compilation of "k.cu".'])
    got = compiler_errors(log)
    assert got.startswith("k.cu(115): error: expression must be an lvalue\n    if (x < y) {") and "warning" not in got
    assert compiler_errors("ld: cannot find -lfoo\n") == "ld: cannot find -lfoo\n"  # no error line: the tail


def test_device_context_logic_on_a_cpu_device():
    """The GPU runtime's buffers, weight copies, views and calls, run here with a CPU device and host kernels."""
    import tvm_ffi

    from edgeopt.runtime.tvm_cuda import CudaContext

    model, inputs = tiny_cnn()
    m = edgeopt.compile(model, inputs)._model
    xs = [x.numpy() for x in inputs]
    (got,) = CudaContext(m, device=tvm_ffi.device("cpu", 0)).run(xs)
    np.testing.assert_array_equal(got, m(*xs))
