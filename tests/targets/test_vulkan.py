"""target="vulkan": WGSL shaders built per kernel, their calling convention, and artifacts run by wgpu on Vulkan.

Tests that run kernels need a Vulkan device that wgpu can open; CI has Mesa's software one (lavapipe). Without
one they are skipped with the reason, except where ``EDGEOPT_REQUIRE_TARGETS`` names ``vulkan`` (CI): there a
missing device fails. ``EDGEOPT_VULKAN_DEVICE`` (CI: ``llvmpipe``) must appear in the adapter's name, so a
machine that silently picked another device is noticed. lavapipe is slow: shapes are small.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from edgeopt.targets import get_target

import edgeopt
from edgeopt.errors import ArtifactError, InputError, PassError, TargetError
from edgeopt.lower.webgpu import KERNELS_JSON, legal_wgsl
from edgeopt.pipeline import CPU_LAYOUT_PASSES, default_pipeline
from edgeopt.runtime import vulkan
from edgeopt.runtime.artifact import read_artifact
from edgeopt.runtime.model import Model
from tests.conftest import compile_zoo, rel_err, torch_outputs
from tests.targets import needs, vulkan_probe

pytestmark = pytest.mark.vulkan
TOL = 1e-4  # max abs error relative to the output's scale, as for the CPU targets
F16_TOL = 5e-3  # precision="fp16": f16 weights and activations (measured: 1e-3 on the CNN and MiniLM)


HAS_VULKAN, ADAPTER = vulkan_probe()
needs_vulkan = needs("vulkan", HAS_VULKAN, f"no Vulkan device: {ADAPTER}")


def tiny_cnn():
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(),
                            torch.nn.Linear(8 * 8 * 8, 16), torch.nn.GELU())
    return m.eval(), (torch.randn(1, 3, 8, 8),)


_CNN: dict = {}


def cnn():
    """(model, inputs, compiled, manifest, members) of the tiny CNN for Vulkan, built once per process."""
    if not _CNN:
        model, inputs = tiny_cnn()
        compiled = edgeopt.compile(model, inputs, target="vulkan")
        _CNN["v"] = (model, inputs, compiled, *read_artifact(compiled._artifact))
    return _CNN["v"]


# -- the target and its artifact (no device needed) -----------------------------------------------------------
def test_target_and_pipeline():
    t = get_target("vulkan")
    assert t.runtime == "vulkan" and t.tvm_target().kind.name == "webgpu" and not t.tir_kernels
    assert t.legalize_passes == ("wgsl_int_types",) and t.storage_dtypes == {"bool": "i32"}
    pipeline = default_pipeline(2, "vulkan")
    assert not set(CPU_LAYOUT_PASSES) & set(pipeline) and "fuse_epilogue" in pipeline
    with pytest.raises(PassError, match="cannot be disabled"):
        edgeopt.compile(*tiny_cnn(), target="vulkan", disable=["wgsl_int_types"])


def test_artifact_holds_wgsl_and_its_calling_convention():
    _, _, compiled, manifest, members = cnn()
    assert manifest["target"]["name"] == "vulkan" and manifest["target"]["runtime"] == "vulkan"
    assert "kernels.so" not in members  # no host library: the runtime dispatches the shaders itself
    info = json.loads(members[KERNELS_JSON])
    steps = compiled.plan["steps"]
    assert {s["kernel"] for s in steps} == set(info["functions"])
    for name, f in info["functions"].items():
        assert f["dispatches"], name
        for d in f["dispatches"]:
            wgsl = members[d["shader"]].decode()
            assert f"fn {d['entry']}(" in wgsl and "@compute" in wgsl
            assert len(d["bindings"]) == len(d["write"]) == wgsl.count("var<storage")
            assert f"@binding({len(d['bindings'])}) var<uniform> podArgs" in wgsl  # the uniform comes last
            assert all(("param" in b) != ("workspace" in b) for b in d["bindings"])
            assert d["grid"][0] >= 1 and 1 <= np.prod(d["workgroup"]) <= info["max_workgroup_invocations"]
            assert "inff" not in wgsl  # GELU's infinity, respelled (WGSL has no literal for it)
    assert all(n.endswith((".json", ".safetensors", ".wgsl", ".txt")) for n in members)  # no pickle, no binary


def test_wgsl_special_float_literals():
    src = "let a : f32 = select(x, inff, c); let b = -inff; let inff2 = nanf; let v = y.inff;"
    out = legal_wgsl(src)
    assert out.count("bitcast<f32>(0x7f800000u)") == 2 and "bitcast<f32>(0x7fc00000u)" in out
    assert "inff2" in out and "y.inff" in out  # identifiers that merely contain the word are kept


def test_cpu_runners_refuse_a_vulkan_artifact(tmp_path):
    from edgeopt import cxx, remote

    path = tmp_path / "m.edgeopt"
    cnn()[2].save(path)
    with pytest.raises(ArtifactError, match="runs CPU artifacts.*'vulkan'"):
        cxx.export_flat(str(path), tmp_path / "flat")
    with pytest.raises(ArtifactError, match="runs CPU artifacts.*'vulkan'"):
        remote.run(str(path), [np.zeros((1, 3, 8, 8), np.float32)], "127.0.0.1", 9)


_NO_DEVICE = """
import sys, edgeopt
try:
    edgeopt.load(sys.argv[1])
except edgeopt.errors.ArtifactError as e:
    print("REFUSED", e)
"""


@pytest.mark.parametrize("env", [{"VK_ICD_FILENAMES": "/nonexistent/icd.json"},
                                 {"VK_ICD_FILENAMES": "/nonexistent/icd.json", "WGPU_BACKEND_TYPE": None},
                                 {"WGPU_BACKEND_TYPE": "OpenGL"}], ids=["no-driver", "no-driver-unset", "gl"])
def test_no_vulkan_device_is_a_clear_error(tmp_path, env):
    """No Vulkan driver must never fall back to wgpu's OpenGL adapter: loading names what to install."""
    path = tmp_path / "m.edgeopt"
    cnn()[2].save(path)
    run_env = {**os.environ, "VK_LOADER_DEBUG": "none"}
    for k, v in env.items():
        if v is None:
            run_env.pop(k, None)
        else:
            run_env[k] = v
    r = subprocess.run([sys.executable, "-c", _NO_DEVICE, str(path)], capture_output=True, text=True, env=run_env,
                       timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "REFUSED" in r.stdout
    if "WGPU_BACKEND_TYPE" in env and env["WGPU_BACKEND_TYPE"]:
        assert "WGPU_BACKEND_TYPE is 'OpenGL'" in r.stdout
    else:
        assert "no Vulkan device found" in r.stdout and "mesa-vulkan-drivers libvulkan1" in r.stdout


# -- on the device ------------------------------------------------------------------------------------------
@needs_vulkan
def test_adapter_is_vulkan():
    info = vulkan.vulkan_adapter().info
    assert info["backend_type"] == "Vulkan", ADAPTER
    expected = os.environ.get("EDGEOPT_VULKAN_DEVICE")
    if expected:
        assert expected in info["device"], f"expected a {expected!r} Vulkan device, got {ADAPTER}"


@needs_vulkan
def test_cnn_saved_loaded_and_run_matches_torch(tmp_path):
    model, inputs, compiled, _, _ = cnn()
    path = tmp_path / "m.edgeopt"
    compiled.save(path)
    loaded = edgeopt.load(str(path))
    (want,) = torch_outputs(model, inputs)
    got = loaded(inputs[0].numpy())
    assert got.shape == want.shape and got.dtype == np.float32
    assert rel_err(want, got) < TOL
    assert np.array_equal(loaded(inputs[0].numpy()), got)  # a second call reuses the buffers
    with pytest.raises(InputError, match="expected shape"):
        loaded(np.zeros((1, 3, 4, 4), np.float32))


@needs_vulkan
@pytest.mark.models
@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2", "efficientnet_lite0", "minilm", "digits_int8"])
def test_zoo_model_matches_torch(name):
    model, inputs, compiled = compile_zoo(name, target="vulkan")
    want = torch_outputs(model, inputs)
    got = compiled(*[x.numpy() for x in inputs])  # MiniLM: int64 ids and mask, held as i32 on the device
    got = list(got) if isinstance(got, tuple) else [got]
    for w, g in zip(want, got):
        assert g.shape == w.shape and rel_err(w, g) < TOL, name
        if name == "digits_int8":  # int8 weights and activations, widened to i32 words: integer math is exact
            np.testing.assert_array_equal(g, w)
    if name == "minilm":  # its attention kernel launches several shaders with workspaces between them
        info = json.loads(read_artifact(compiled._artifact)[1][KERNELS_JSON])
        assert any(len(f["dispatches"]) > 1 and f["workspaces"] for f in info["functions"].values())


class _IntModel(torch.nn.Module):
    """Takes int64 ids, a uint8 image and an int8 tensor; returns f32, an int64 result and a bool mask."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.emb = torch.nn.Embedding(50, 4)

    def forward(self, ids, img, q):
        e = self.emb(ids)  # [1, 6, 4]
        scaled = img.float() / 255.0 * q.float()  # [1, 6]
        count = (ids * 2 + 1).sum(dim=1, keepdim=True)  # int64
        return e * scaled.unsqueeze(-1), count, scaled > 0


@needs_vulkan
def test_integer_and_bool_tensors():
    """WGSL has only 32-bit integers and no bool storage: i64 is narrowed, u8/i8 widened, bool held as i32."""
    model = _IntModel().eval()
    ids = torch.tensor([[1, 7, 0, 49, 3, 3]])
    img = torch.tensor([[0, 17, 128, 200, 255, 3]], dtype=torch.uint8)
    q = torch.tensor([[-128, -1, 5, 127, 0, 9]], dtype=torch.int8)
    compiled = edgeopt.compile(model, (ids, img, q), target="vulkan")
    assert [i["dtype"] for i in compiled.plan["inputs"]] == ["i32", "i32", "i32"]
    assert compiled.plan["values"][compiled.plan["outputs"][2]["name"]]["dtype"] == "i32"  # bool, as a word
    want = torch_outputs(model, (ids, img, q))
    got = compiled(ids.numpy(), img.numpy(), q.numpy())  # given as int64, uint8, int8: converted, values fit
    assert rel_err(want[0], got[0]) < TOL
    assert got[1].dtype == np.int32 and np.array_equal(got[1], want[1])
    assert got[2].dtype == np.bool_ and np.array_equal(got[2], want[2])
    with pytest.raises(InputError, match=r"outside int32's range"):
        compiled(ids.numpy() + 2**40, img.numpy(), q.numpy())


class _Sampler(torch.nn.Module):
    def forward(self, x, grid):
        reflected = torch.nn.functional.grid_sample(x, grid, padding_mode="reflection", align_corners=False)
        return reflected + torch.nn.functional.grid_sample(x, grid, mode="nearest", align_corners=True)


@needs_vulkan
def test_grid_sample_and_its_reflection_run_in_wgsl():
    """grid_sample's data-dependent reads, and its reflection written without fmodf (WGSL has none)."""
    x, grid = torch.randn(1, 2, 5, 6), torch.rand(1, 3, 4, 2) * 3 - 1.5
    compiled = edgeopt.compile(_Sampler().eval(), (x, grid), target="vulkan")
    assert rel_err(torch_outputs(_Sampler().eval(), (x, grid))[0], compiled(x.numpy(), grid.numpy())) < TOL


@needs_vulkan
def test_3d_convs_pools_and_unpooling_run_in_wgsl():
    """The 3-d ops (2-d kernels over depth slices, their slices read in the convs' prologues) and max_unpool2d's
    gather run as WGSL kernels."""
    from tests.test_op_breadth import SegNetBlock
    from tests.test_volumetric import Volumetric

    torch.manual_seed(0)
    for model, x in ((Volumetric().eval(), torch.randn(1, 3, 6, 10, 10)),
                     (SegNetBlock().eval(), torch.rand(1, 1, 12, 16))):
        compiled = edgeopt.compile(model, (x,), target="vulkan")
        assert rel_err(torch_outputs(model, (x,))[0], compiled(x.numpy())) < TOL, type(model).__name__


class _Unpack(torch.nn.Module):
    def forward(self, packed, small):
        return ((packed << 4) >> 4).float() + (~packed).float() + (small << 1).float()


@needs_vulkan
def test_bit_operations_on_narrow_integers_wrap_as_torch():
    """u8/i8 values are held in i32 here: a left shift or ~ is wrapped back into the narrow type (int4 unpacking)."""
    args = (torch.tensor([0x3A, 0xF1, 0x07], dtype=torch.uint8), torch.tensor([100, -100, 3], dtype=torch.int8))
    compiled = edgeopt.compile(_Unpack().eval(), args, target="vulkan")
    assert np.array_equal(compiled(*[a.numpy() for a in args]), _Unpack()(*args).numpy())


class _Remainders(torch.nn.Module):
    def forward(self, x):
        return torch.fmod(x, 0.7) + torch.remainder(x, -0.3)


class _HalfRemainders(torch.nn.Module):
    def forward(self, x):
        return torch.fmod(x, 0.75) + torch.remainder(x, -0.5)


@needs_vulkan
def test_fmod_runs_in_wgsl():
    """The fmod kernels call C's fmodf, which WGSL lacks: legal_wgsl defines it."""
    x = torch.randn(4, 5) * 5
    compiled = edgeopt.compile(_Remainders().eval(), (x,), target="vulkan")
    assert rel_err(torch_outputs(_Remainders().eval(), (x,))[0], compiled(x.numpy())) < TOL
    # fp16: after `enable f16;`. Values and divisors exact in f16 and off the divisors' multiples: a remainder
    # jumps at them, so inputs rounded to f16 near one would land on its other side
    exact = (torch.arange(-40, 40, dtype=torch.float32) / 8 + 1 / 16).reshape(8, 10)
    half = edgeopt.compile(_HalfRemainders().eval(), (exact,), target="vulkan", precision="fp16")
    assert rel_err(torch_outputs(_HalfRemainders().eval(), (exact,))[0], half(exact.numpy())) < F16_TOL


class _Logarithms(torch.nn.Module):
    def forward(self, x):
        return torch.log2(x) + torch.log10(x) * 3


@needs_vulkan
def test_log10_runs_in_wgsl():
    """log10 calls C's log10f, which WGSL lacks: legal_wgsl defines it (log2 is WGSL's own)."""
    x = torch.rand(4, 5) * 100 + 0.01
    compiled = edgeopt.compile(_Logarithms().eval(), (x,), target="vulkan")
    assert rel_err(torch_outputs(_Logarithms().eval(), (x,))[0], compiled(x.numpy())) < TOL


@needs_vulkan
def test_grid_split_over_z(monkeypatch):
    """Grids over the device's x limit are split over z; the shader's guard uses the true x size."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Tanh()).eval()
    x = torch.randn(1, 3000)
    compiled = edgeopt.compile(model, (x,), target="vulkan")
    info = json.loads(read_artifact(compiled._artifact)[1][KERNELS_JSON])
    (f,) = info["functions"].values()
    assert f["dispatches"][0]["grid"][0] >= 5
    monkeypatch.setattr(vulkan, "MAX_GROUPS_PER_DIM", 2)
    model_rt = Model(compiled._artifact)
    ((_, _, (bx, by, bz), _),) = model_rt._context().dispatches
    assert bx <= 2 and bz > 1 and bx * bz >= f["dispatches"][0]["grid"][0]
    np.testing.assert_allclose(model_rt(x.numpy()), torch.tanh(x).numpy(), rtol=1e-5, atol=1e-6)


@needs_vulkan
def test_missing_device_feature_is_refused():
    _, _, compiled, _, members = cnn()
    info = json.loads(members[KERNELS_JSON])
    info["features"] = ["shader-f16", "edgeopt-made-up-feature"]
    with pytest.raises(ArtifactError, match=r"lacks the feature\(s\) \[.*'edgeopt-made-up-feature'\]"):
        vulkan.VulkanLibrary({**members, KERNELS_JSON: json.dumps(info).encode()})
    info["features"], info["max_bindings"] = [], 10_000
    with pytest.raises(ArtifactError, match="max-storage-buffers-per-shader-stage >= 10000"):
        vulkan.VulkanLibrary({**members, KERNELS_JSON: json.dumps(info).encode()})


@needs_vulkan
def test_vulkan_runtime_needs_neither_torch_nor_tvm(tmp_path):
    """The device side is numpy + wgpu: torch, TVM, tvm_ffi and the compiler's modules are blocked."""
    from tests.test_runtime import _ISOLATED

    script = _ISOLATED.replace('"edgeopt.ir")', '"edgeopt.ir", "tvm_ffi")')
    assert script != _ISOLATED
    _, inputs, compiled, _, _ = cnn()
    compiled.save(tmp_path / "m.edgeopt")
    np.savez(tmp_path / "x.npz", x0=inputs[0].numpy())
    np.savez(tmp_path / "y.npz", y0=compiled(inputs[0].numpy()))
    (tmp_path / "run.py").write_text(script)
    r = subprocess.run([sys.executable, str(tmp_path / "run.py"), str(tmp_path / "m.edgeopt"), str(tmp_path / "x.npz"),
                        str(tmp_path / "y.npz")], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "RUNTIME-OK" in r.stdout


def test_precision_option():
    assert get_target("vulkan").precision == "fp32" and get_target("vulkan", precision="fp16").precision == "fp16"
    with pytest.raises(TargetError, match="unknown precision 'int4'; choose one of fp32, fp16"):
        get_target("vulkan", precision="int4")
    with pytest.raises(TargetError, match=r"target 'host' got unknown options \['precision'\]"):
        get_target("host", precision="fp16")


@needs_vulkan
@pytest.mark.parametrize("name", ["cnn", "minilm"])
def test_fp16_matches_torch(name):
    """precision="fp16": f16 weights and activations in shader-f16 WGSL; inputs and outputs stay float32."""
    if name == "cnn":
        model, inputs = tiny_cnn()
        compiled = edgeopt.compile(model, inputs, target="vulkan", precision="fp16")
    else:
        model, inputs, compiled = compile_zoo(name, target="vulkan", precision="fp16")
    manifest, members = read_artifact(compiled._artifact)
    assert manifest["target"]["precision"] == "fp16"
    info = json.loads(members[KERNELS_JSON])
    assert info["features"] == ["shader-f16"]
    assert any(b"enable f16;" in members[d["shader"]] for f in info["functions"].values() for d in f["dispatches"])
    weights = [v for v in compiled.plan["values"].values() if v["kind"] == "const" and v["dtype"].startswith("f")]
    assert weights and all(v["dtype"] == "f16" for v in weights)
    want = torch_outputs(model, inputs)
    got = compiled(*[x.numpy() for x in inputs])
    got = list(got) if isinstance(got, tuple) else [got]
    for w, g in zip(want, got):
        assert g.dtype == np.float32 and rel_err(w, g) < F16_TOL, name


def test_arena_bindings_are_declared_writable():
    wgsl = ("@group(0) @binding(0) var<storage, read> in0_ptr : array<f32>;\n"
            "@group(0) @binding(1) var<storage, read> in1_ptr : array<f32>;\n"
            "@group(0) @binding(12) var<storage, read> in2_ptr : array<f32>;\n")
    out = vulkan.writable(wgsl, [1, 12])
    assert out.count("read_write>") == 2 and "@binding(0) var<storage, read> in0_ptr" in out


@needs_vulkan
@pytest.mark.models
def test_activations_share_the_planned_arena():
    """The memory plan holds on Vulkan too: every activation is a 256-aligned range of one arena buffer."""
    _, inputs, compiled = compile_zoo("resnet18", target="vulkan")
    r, plan = compiled.report, compiled.plan
    assert r["arena_bytes"] < r["naive_bytes"] and r["arena_bytes"] <= 1.05 * r["lower_bound_bytes"]
    ctx = compiled._model._context()
    assert ctx.arena.size >= plan["arena_bytes"]
    for name, info in plan["values"].items():
        buf, off, size = ctx.where[name]
        if info["kind"] == "const":
            assert buf is not ctx.arena
        else:
            assert buf is ctx.arena and off % 256 == 0 and off + size <= ctx.arena.size, name
    shared = [(a, b) for s in plan["steps"] for a, b in s.get("inplace", []) if ctx.where[a] == ctx.where[b]]
    assert shared  # residual adds write over their input: one range bound twice in a dispatch, both writable


class _ViewsOnly(torch.nn.Module):
    def forward(self, x):
        return x.reshape(2, 8)


@needs_vulkan
def test_a_model_with_no_kernels():
    """A plan of views only: no shader and no library; the reshaped input comes back."""
    x = torch.arange(16, dtype=torch.float32).reshape(4, 4)
    compiled = edgeopt.compile(_ViewsOnly(), (x,), target="vulkan")
    _, members = read_artifact(compiled._artifact)
    assert "kernels.so" not in members
    np.testing.assert_array_equal(compiled(x.numpy()), x.numpy().reshape(2, 8))


@needs_vulkan
@pytest.mark.parametrize("mode", ["int8", "int8-dynamic", "int8-weight", "int4-weight"])
def test_quantized_models_run_with_the_hosts_numbers(mode):
    """Every quantize mode compiles for Vulkan (WGSL has no 8-bit integers: the weights are stored four bytes to an
    i32 word and unpacked in the kernels that read them; activations and a max-pool on quantized values are held
    one to a word, keeping their 8-bit range) and computes what the host build computes: the same quantized model,
    its products in float instead of integers."""
    from tests.passes.test_quantize_passes import TinyCNN, TinyEncoder

    torch.manual_seed(0)
    if mode in ("int8", "int8-dynamic"):
        model, x = TinyCNN().eval(), torch.randn(1, 3, 12, 12)
        model = torch.nn.Sequential(torch.nn.MaxPool2d(2), model) if mode == "int8" else model  # a u8 max-pool
    else:
        model, x = TinyEncoder().eval(), torch.randint(0, 64, (2, 8))
    kw = {"calibration_data": [torch.randn(1, 3, 12, 12) for _ in range(4)]} if mode == "int8" else {}
    # 8-bit weights on the host too (an AVX2-only host would give its vpmaddubsw layers 7-bit ones)
    host = edgeopt.compile(model, [x], quantize=edgeopt.QuantConfig(mode=mode, reduce_range=False), **kw)
    gpu = edgeopt.compile(model, [x], target="vulkan", quantize=mode, **kw)
    narrow = [n for n in gpu.graph.nodes if n.op == "quantize"] + [n for n in gpu.graph.nodes if n.op == "fused"
                                                                   and any(m.op == "quantize" for m in n.body.nodes)]
    if mode in ("int8", "int8-dynamic"):
        assert narrow  # it really is quantized...
    assert not [v for v in gpu.graph.const_values.values() if v.type.dtype in ("i8", "u8")]  # ...held in words
    # the weights four (int4: eight) to a word: as small as the host's (whose int8 convs keep i32 weight sums)
    assert gpu.report["weight_bytes"] <= 1.02 * host.report["weight_bytes"], (gpu.report["weight_bytes"],
                                                                             host.report["weight_bytes"])
    want, got = host(x.numpy()), gpu(x.numpy())
    assert rel_err(want, got) < 1e-3, mode
    assert rel_err(model(x).detach().numpy(), got) < (0.25 if mode == "int4-weight" else 0.1)  # int4: 16 levels


@needs_vulkan
def test_per_channel_conv_inputs_run_with_the_hosts_numbers():
    """Static int8 of an inverted residual whose conv inputs have a scale per channel (``QuantConfig
    .activation_scales``): the Vulkan build computes the host build's numbers."""
    from tests.quant.test_activation_scales import Block, _inputs

    model, x = Block().eval(), torch.from_numpy(_inputs(np.random.default_rng(9)))
    kw = {"calibration_data": [_inputs(np.random.default_rng(i)) for i in range(4)]}
    host = edgeopt.compile(model, [x], quantize=edgeopt.QuantConfig(reduce_range=False), **kw)
    gpu = edgeopt.compile(model, [x], target="vulkan", quantize="int8", **kw)
    assert gpu.report["quantization"]["per_channel_inputs"] == host.report["quantization"]["per_channel_inputs"] == 3
    assert rel_err(host(x.numpy()), gpu(x.numpy())) < 1e-3


@needs_vulkan
def test_static_int8_of_a_token_model_calibrates_on_int64_ids():
    """Static int8 of a model that takes int64 token ids: the Vulkan build narrows its input to i32 before the
    calibration runs it on the user's int64 batches (the interpreter takes integers that fit, as the runtime does),
    and gives the host build's numbers."""
    from tests.passes.test_quantize_passes import TinyEncoder

    torch.manual_seed(0)
    model, ids = TinyEncoder().eval(), torch.randint(0, 64, (2, 8))
    calib = [torch.randint(0, 64, (2, 8)) for _ in range(4)]
    host = edgeopt.compile(model, [ids], quantize=edgeopt.QuantConfig(mode="int8", reduce_range=False),
                           calibration_data=calib)
    gpu = edgeopt.compile(model, [ids], target="vulkan", quantize="int8", calibration_data=calib)
    assert gpu.graph.inputs[0].type.dtype == "i32" and gpu.report["quantization"]["layers_quantized"] >= 3
    assert rel_err(host(ids.numpy()), gpu(ids.numpy())) < 1e-3


@needs_vulkan
@pytest.mark.parametrize("mode", ["int8", "int8-weight", "int4-weight"])
def test_quantized_models_in_fp16(mode):
    """quantize= with precision="fp16": the weights stay int8 / int4 (they were f16 before: the weight-only pass
    ran after to_fp16 and found no f32 weight; static int8 crashed on its f16 scales), f16 compute on them, the
    fp32 quantized build's numbers within f16's error. int8-dynamic is refused with what to use instead."""
    from edgeopt.quant.config import QuantizationError
    from tests.passes.test_quantize_passes import TinyCNN, TinyEncoder

    torch.manual_seed(0)
    if mode == "int8":
        model, x = TinyCNN().eval(), torch.randn(1, 3, 12, 12)
    else:
        model, x = TinyEncoder().eval(), torch.randint(0, 64, (2, 8))
    kw = {"calibration_data": [torch.randn(1, 3, 12, 12) for _ in range(4)]} if mode == "int8" else {}
    f32 = edgeopt.compile(model, [x], target="vulkan", quantize=mode, **kw)
    f16 = edgeopt.compile(model, [x], target="vulkan", precision="fp16", quantize=mode, **kw)
    assert f16.report["weight_bytes"] < f32.report["weight_bytes"]  # the int8 weights and f16 biases
    packed = [n for n in f16.graph.nodes for m in (n.body.nodes if n.body else [n])
              if m.op == "dequantize" and m.attrs["packed_axis"] is not None]
    assert packed and all(m.attrs["dtype"] == "f16" for n in packed for m in (n.body.nodes if n.body else [n])
                          if m.op == "dequantize" and m.attrs["packed_axis"] is not None)
    assert rel_err(f32(x.numpy()), f16(x.numpy())) < F16_TOL
    if mode == "int8-weight":
        with pytest.raises(QuantizationError, match="int8-dynamic.*precision=\"fp16\".*int8-weight"):
            edgeopt.compile(model, [x], target="vulkan", precision="fp16", quantize="int8-dynamic")


@needs_vulkan
def test_dequantize_unpacks_words_in_wgsl():
    """The WGSL kernels read i8 (sign-extended), u8 and int4 values from 32-bit words as the interpreter does."""
    from tests.lower.test_kernels_vs_interpreter import check_cases, quant_cases

    cases = [c for c in quant_cases() if "_words" in c.id]
    assert len(cases) == 4
    check_cases(cases, get_target("vulkan"))


class _RunningSum(torch.nn.Module):
    def forward(self, x):
        return torch.cumsum(x, -1)


@needs_vulkan
def test_cumsum_in_fp16_sums_in_f32():
    """precision="fp16": a cumsum's f16 values are summed in f32 (as torch does on GPUs) and rounded once: 2.5e-4 of
    the scale from fp32's sums (numpy's model of it). Summed in f16, each of 1000 adds rounds to the sum's f16 step
    (0.25 to 0.5 past 256): 5e-3."""
    x = torch.rand(2, 1000, generator=torch.Generator().manual_seed(0))
    half = edgeopt.compile(_RunningSum().eval(), (x,), target="vulkan", precision="fp16")
    assert rel_err(torch_outputs(_RunningSum().eval(), (x,))[0], half(x.numpy())) < 1e-3
