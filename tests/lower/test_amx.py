"""Int8 convs and linear layers on AMX tiles (``edgeopt.lower.amx``): which layers take them, exact sums against
the interpreter where this CPU has AMX (the VNNI kernel elsewhere: the same weights and layout), a Sapphire Rapids
build's library on any x86 host, and the runtime's tile permission."""

from __future__ import annotations

import platform
import shutil

import numpy as np
import pytest
import torch
from edgeopt.targets import get_target

import edgeopt
from edgeopt.api import compile_graph
from edgeopt.errors import TargetError
from edgeopt.ir import Graph, TensorType, interpret
from edgeopt.ir.ops.linalg import pack_linear_weight_groups
from edgeopt.ir.ops.nn import pack_conv_weight
from edgeopt.lower.amx import amx_linear_tile, amx_tile, has_amx
from edgeopt.runtime.amx_permission import needs_tiles
from edgeopt.runtime.artifact import read_artifact
from tests.artifact_tools import disassemble

RNG = np.random.default_rng(11)
SAPPHIRE_RAPIDS = dict(target="x86", cpu="sapphirerapids")
x86_only = pytest.mark.skipif(platform.machine() != "x86_64", reason="x86-64 kernels")


def _conv(in_blocks: int, h: int, w: int, out: int, k: int, stride: int = 1) -> Graph:
    """An integer conv as the quantization passes leave it for a VNNI-512 CPU: u8 NCHW16c, "OIHW16o4i" weight."""
    g = Graph()
    x = g.add_input("x", TensorType((1, in_blocks, h, w, 16), "u8"))
    wt = pack_conv_weight(RNG.integers(-128, 128, (out, in_blocks * 16, k, k)).astype(np.int8), 16, 4)
    y = g.add("conv2d", [x, g.add_const(wt, "w")], {"layout": "NCHWc", "weight_layout": "OIHW16o4i",
                                                    "int8_dot": "vnni512", "padding": [k // 2] * 4,
                                                    "stride": [stride, stride]})
    g.set_outputs([y])
    return g


def test_tile_shapes():
    assert amx_tile(4, 56, 1, (1, 1), 16, 36) == (2, 14)  # 56 = 4 x 14 pixels, two output blocks a call
    assert amx_tile(32, 14, 1, (1, 1), 16, 36) == (2, 14)
    assert amx_tile(32, 7, 1, (1, 1), 16, 288) is None  # 7x7 maps: half-empty tiles
    assert amx_tile(3, 28, 2, (1, 1), 16, 36) == (1, 14)  # an odd number of blocks: one a call
    assert amx_tile(4, 16, 1, (1, 1), 16, 12) == (2, 16)
    assert amx_tile(4, 16, 1, (1, 1), 16, 6) is None  # a 1x1 conv of 6 input blocks: too short a reduction
    assert amx_tile(4, 34, 1, (1, 1), 16, 36) is None  # rows of 2 pixels (34 = 2 x 17) waste the unit
    assert amx_tile(4, 4, 1, (1, 1), 16, 36) is None  # so do 4-pixel maps
    assert amx_tile(4, 56, 1, (2, 2), 16, 36) is None  # dilated
    assert amx_tile(4, 56, 1, (1, 1), 4, 36) is None  # the image's 4-channel stage


def _linear(rows: int, k: int, out: int) -> Graph:
    """An integer linear layer as the quantization passes leave it for a VNNI-512 CPU: u8 rows, "oi16o4i" weight."""
    g = Graph()
    x = g.add_input("x", TensorType((1, rows, k), "u8"))
    wt = pack_linear_weight_groups(RNG.integers(-128, 128, (out, k)).astype(np.int8), 16, 4)
    y = g.add("linear", [x, g.add_const(wt, "w")], {"weight_layout": "oi16o4i", "int8_dot": "vnni512"})
    g.set_outputs([y])
    return g


def test_linear_tile_shapes():
    assert amx_linear_tile(128, 24, 384) == (2, 2)  # MiniLM: 2 x 16 rows, 2 x 16 columns a call
    assert amx_linear_tile(16, 3, 256) == (1, 1)
    assert amx_linear_tile(10, 24, 384) is None  # rows not a multiple of 16
    assert amx_linear_tile(128, 24, 352) is None  # inputs not a multiple of 64 (a tile row)
    assert amx_linear_tile(128, 24, 192) is None  # 3 steps: too short a reduction


def test_targets_with_amx():
    assert get_target(**SAPPHIRE_RAPIDS, check_toolchain=False).amx()
    assert not get_target(target="x86", cpu="znver4", check_toolchain=False).amx()
    assert not get_target(target="x86", cpu="sapphirerapids", mattr=["-amx-tile"], check_toolchain=False).amx()
    # this CPU without AMX (all else as the host target sees it), and mattr checked
    no_tiles = get_target("host", mattr=["-amx-tile", "-amx-int8"], check_toolchain=False)
    assert not no_tiles.amx() and no_tiles.mcpu == get_target("host", check_toolchain=False).mcpu
    with pytest.raises(TargetError, match="mattr takes LLVM features switched on or off"):
        get_target("host", mattr=["amx-tile"], check_toolchain=False)
    assert not get_target(target="x86-64-v4", check_toolchain=False).amx()
    assert not get_target(target="arm", cpu="cortex-a76", check_toolchain=False).amx()
    assert has_amx(["+amx-tile", "+amx-int8"]) and not has_amx(["amx-tile"])
    assert needs_tiles({"amx_tiles": True}) and not needs_tiles({"cpu_features": ["amx-tile"]})


#: (graph builder, shape) of each layer kind and tile case
LAYERS = pytest.mark.parametrize("layer", [
    (_conv, (2, 6, 14, 64, 3, 1)), (_conv, (12, 4, 28, 32, 1, 1)), (_conv, (2, 9, 16, 32, 3, 2)),
    (_conv, (4, 7, 14, 48, 3, 1)), (_linear, (32, 384, 64)), (_linear, (16, 256, 48)), (_linear, (48, 1536, 32))],
    ids=["conv-3x3", "conv-1x1-12-blocks", "conv-3x3-stride2", "conv-odd-blocks", "linear-2x2-tiles",
         "linear-1x1-tiles", "linear-long-k"])


@x86_only
@LAYERS
def test_every_layer_takes_tiles_in_a_sapphire_rapids_build(layer):
    """On any x86 host: each shape is tensorized on tiles (a refused tensorize would fall back to VNNI)."""
    make, shape = layer
    c = compile_graph(make(*shape), get_target(**SAPPHIRE_RAPIDS), opt_level=0)
    assert [",amx" in k["schedule"] for k in c.report["kernels"]] == [True], c.report["kernels"]


@x86_only
@LAYERS
def test_tile_kernels_are_exact(layer):
    """The kernel's int32 sums equal the interpreter's, on AMX where this CPU has it (else the VNNI kernel)."""
    make, shape = layer
    g = make(*shape)
    host = get_target("host")
    x = RNG.integers(0, 256, g.inputs[0].type.shape).astype(np.uint8)
    c = compile_graph(g.clone(), host, opt_level=0)
    (schedule,) = [k["schedule"] for k in c.report["kernels"]]
    assert (",amx" in schedule) == host.amx(), schedule
    assert np.array_equal(c(x), interpret(g, {"x": x})[0])


@x86_only
def test_a_sapphire_rapids_build_has_tile_code(tmp_path):
    """Built for Sapphire Rapids on any x86 host: its 3x3 conv and its 1x1 conv of 12 input blocks on tiles,
    ``tdpbusd`` in the library."""
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Conv2d(32, 192, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(192, 32, 1),
                            torch.nn.ReLU()).eval()
    x = torch.rand(1, 32, 14, 14)
    c = edgeopt.compile(m, (x,), **SAPPHIRE_RAPIDS, quantize="int8", calibration_data=[x])
    assert sum(",amx" in k["schedule"] for k in c.report["kernels"]) == 2, c.report["kernels"]
    if not shutil.which("objdump"):
        pytest.skip("objdump is not installed (binutils)")
    c.save(tmp_path / "m.edgeopt")
    manifest, members = read_artifact(str(tmp_path / "m.edgeopt"))[:2]
    assert manifest["target"]["amx_tiles"] is True  # the runtime asks Linux for the tile state before loading
    plain = edgeopt.compile(m, (x,), **SAPPHIRE_RAPIDS)  # fp32: no tile code, nothing to ask for
    plain.save(tmp_path / "f.edgeopt")
    assert "amx_tiles" not in read_artifact(str(tmp_path / "f.edgeopt"))[0]["target"]
    assert b"edgeopt_amx_tiles" in members["kernels.so"]  # the library asks for the tile state when loaded
    code = disassemble(members["kernels.so"])
    for op in ("ldtilecfg", "tileloadd", "tdpbusd", "tilestored"):
        assert any(i.startswith(op) for i in code), op


@x86_only
def test_int8_resnet_on_tiles_gives_the_vnni_builds_outputs():
    """A small int8 ResNet-18 on this CPU: where it has AMX, its convs on tiles, bit for bit the outputs of the same
    model built without AMX (the integer sums are exact either way)."""

    from tests.models.zoo import build

    host = get_target("host")
    if not host.amx():
        pytest.skip("this CPU has no AMX tiles")
    model, (x,) = build("resnet18", small=True)
    cal = [torch.randn_like(x) for _ in range(2)]
    q = edgeopt.QuantConfig(mode="int8", int8_image_convs=True)
    tiles = edgeopt.compile(model, (x,), target="host", quantize=q, calibration_data=cal)
    # this CPU as the host target sees it (a VM may hide features its name implies), less AMX
    plain = edgeopt.compile(model, (x,), target="host", mattr=["-amx-tile", "-amx-int8"], quantize=q,
                            calibration_data=cal)
    assert any(",amx" in k["schedule"] for k in tiles.report["kernels"])
    assert not any(",amx" in k["schedule"] for k in plain.report["kernels"])
    assert np.array_equal(tiles(x.numpy()), plain(x.numpy()))


def test_the_runtime_asks_linux_once_and_refuses_with_the_reason(monkeypatch):
    """``request_tiles``: one ``arch_prctl`` per process; a refusal is an ``ArtifactError`` saying why and what to
    do (a stub stands in for the syscall)."""
    import errno

    from edgeopt.errors import ArtifactError
    from edgeopt.runtime import amx_permission as perm

    calls = []

    class Libc:
        def __init__(self, result):
            self.result = result

        def syscall(self, *args):
            calls.append(args)
            return self.result

    monkeypatch.setattr(perm.platform, "machine", lambda: "x86_64")
    monkeypatch.setattr(perm, "_granted", False)
    monkeypatch.setattr(perm, "_refused", None)
    monkeypatch.setattr(perm.ctypes, "CDLL", lambda *a, **k: Libc(-1))
    monkeypatch.setattr(perm.ctypes, "get_errno", lambda: errno.EPERM)
    with pytest.raises(ArtifactError, match="seccomp.*mattr=\\['-amx-tile'"):
        perm.request_tiles()
    assert not perm.tiles_granted()  # the refusal is remembered: not asked again
    assert calls == [(perm.SYS_ARCH_PRCTL, perm.ARCH_REQ_XCOMP_PERM, perm.XFEATURE_XTILEDATA)]
    monkeypatch.setattr(perm, "_refused", None)
    monkeypatch.setattr(perm.ctypes, "CDLL", lambda *a, **k: Libc(0))
    perm.request_tiles()
    assert perm.tiles_granted()
    assert len(calls) == 2  # granted once: not asked again


def test_a_refused_tile_level_falls_back_to_the_next_level(monkeypatch):
    """A multi-level artifact whose best level runs on tiles: where Linux refuses them, the next level runs; a
    single-level one is refused with the reason; a level without tiles never asks."""
    from edgeopt.errors import ArtifactError
    from edgeopt.runtime import amx_permission as perm
    from edgeopt.runtime import tvm_cpu

    monkeypatch.setattr(perm, "_granted", False)
    monkeypatch.setattr(perm, "_refused", "Linux refused AMX tiles (stub)")
    arch = platform.machine()
    tiles = {"level": "sapphirerapids", "arch": arch, "cpu_features": [], "amx_tiles": True}
    v4 = {"level": "v4", "arch": arch, "cpu_features": []}
    target = {"name": "x86-64", "runtime": "cpu", "arch": arch, "levels": [tiles, v4]}
    assert tvm_cpu.check_device(target) is v4
    with pytest.raises(ArtifactError, match="stub"):
        tvm_cpu.chosen_level(target, "sapphirerapids")
    with pytest.raises(ArtifactError, match="stub"):
        tvm_cpu.check_device({"name": "host", "runtime": "cpu", "arch": arch, "cpu_features": [], "amx_tiles": True})
    assert tvm_cpu.check_device({"name": "host", "runtime": "cpu", "arch": arch, "cpu_features": []})["name"] == "host"


@x86_only
def test_a_tile_library_asks_for_the_tiles_itself(tmp_path):
    """Loaded by a process that never asked Linux (the runtime's own request switched off, as in a loader that does
    not read the manifest: an RPC server, the C++ runner), a library with tile kernels runs: it asked on load."""
    import subprocess
    import sys

    host = get_target("host")
    if not host.amx():
        pytest.skip("this CPU has no AMX tiles")
    g = _linear(32, 384, 64)
    c = compile_graph(g.clone(), host, opt_level=0)
    assert ",amx" in c.report["kernels"][0]["schedule"]
    c.save(tmp_path / "m.edgeopt")
    x = RNG.integers(0, 256, g.inputs[0].type.shape).astype(np.uint8)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "want.npy", interpret(g, {"x": x})[0])
    script = (
        "import numpy as np, sys, edgeopt\n"
        "from edgeopt.runtime import tvm_cpu\n"
        "tvm_cpu.request_tiles = lambda: None\n"
        "tvm_cpu.tiles_granted = lambda: True\n"
        f"m = edgeopt.load({str(tmp_path / 'm.edgeopt')!r})\n"
        f"got = m(np.load({str(tmp_path / 'x.npy')!r}))\n"
        f"sys.exit(0 if np.array_equal(got, np.load({str(tmp_path / 'want.npy')!r})) else 3)\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
