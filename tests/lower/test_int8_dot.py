"""edgeopt.lower.int8_dot: the int8 x int8 -> int32 linear kernels are exact, and use the instruction they claim.

Each path runs only where this CPU can execute it (/proc/cpuinfo flags); the assembly checks need no such CPU.
Shapes are small: the whole file builds ~15 tiny kernels (< 0.3 s each) and never imports tvm.s_tir.tensor_intrin.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

tvm = pytest.importorskip("tvm")
D = pytest.importorskip("edgeopt.lower.int8_dot")


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for ln in f:
                if ln.startswith("flags"):
                    return set(ln.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


FLAGS = _cpu_flags()
#: path -> (mcpu to build for, cpuinfo flags needed to run it)
PATHS = {
    "vnni512": ("znver4", {"avx512_vnni", "avx512f"}),
    "vnni256": ("znver4", {"avx512_vnni", "avx512vl"}),  # the EVEX form; AVX-VNNI CPUs get the VEX one (asm test)
    "avx512-ubsw": ("skylake-avx512", {"avx512bw"}),  # 7-bit weights only (|w| <= 64)
    "avx2-ubsw": ("znver3", {"avx2"}),  # 7-bit weights only (|w| <= 64)
    "avx2": ("znver3", {"avx2"}),
    "avx2-x16": ("znver3", {"avx2"}),
    "plain": ("znver3", {"avx2"}),
}
SHAPES = [(5, 64, 48), (1, 64, 48), (3, 60, 40)]  # the last one pads K to the group and N to the lanes


def _target(mcpu: str):
    return tvm.target.Target({"kind": "llvm", "mcpu": mcpu, "num-cores": 2})


def _run(M, K, N, path, rng, w_max=None, **kw):
    """(kernel's y, exact reference, executable) for random u8 x and i8 w (|w| <= ``w_max``: the path's own limit
    by default), with the extremes in row 0 of x (255) and rows 0, 1 of w (-w_max and the largest positive)."""
    mcpu, need = PATHS[path]
    if not need <= FLAGS:
        pytest.skip(f"this CPU lacks {sorted(need - FLAGS)} (needed to run the {path} kernel)")
    if w_max is None:
        w_max = D.weight_limit(D._PATHS[path].name) if path != "plain" else 128
    x = rng.integers(0, 256, (M, K), dtype=np.uint8)
    top = min(w_max, 127)
    w = rng.integers(-w_max, top + 1, (N, K)).astype(np.int8)
    x[0, :] = 255  # the extremes: 255 * -w_max and 255 * top summed over K (+-64: vpmaddubsw's saturation edge)
    w[0, :] = -w_max
    w[1, :] = top
    ex, info = D.build_int8_linear(M, K, N, _target(mcpu), path, **kw)
    xp = np.zeros((M, info["Kp"]), info["x_dtype"])
    xp[:, :K] = x
    wp = D.pack_int8_weight(w, info["lanes"], info["group"])
    y = tvm.runtime.tensor(np.zeros((M, info["Np"]), np.int32))
    ex(tvm.runtime.tensor(xp), tvm.runtime.tensor(wp), y)
    ref = x.astype(np.int64) @ w.astype(np.int64).T
    return y.numpy()[:, :N], ref, ex


@pytest.mark.parametrize("M,K,N", SHAPES)
@pytest.mark.parametrize("path", list(PATHS))
def test_int8_linear_exact(path, M, K, N):
    got, ref, _ = _run(M, K, N, path, np.random.default_rng(M * 1000 + K + N))
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got.astype(np.int64), ref)


@pytest.mark.parametrize("path,rows,vectors", [("vnni512", 6, 2), ("avx2", 4, 1), ("vnni512", 3, 3),
                                               ("avx2-ubsw", 3, 4), ("avx512-ubsw", 3, 3)])
def test_int8_linear_other_tiles_exact(path, rows, vectors):
    """Row tails (M=7 with 6 or 3 rows) and a vectors count that does not divide N/lanes (reduced to one that does)."""
    got, ref, _ = _run(7, 32, 64, path, np.random.default_rng(7), rows=rows, vectors=vectors)
    np.testing.assert_array_equal(got.astype(np.int64), ref)


def _asm(path: str, mcpu: str) -> str:
    ex, _ = D.build_int8_linear(5, 64, 48, _target(mcpu), path)
    return D.assembly(ex)


def test_vnni_assembly_has_vpdpbusd():
    asm = _asm("vnni512", "znver4")
    assert re.search(r"vpdpbusd\s+%zmm", asm), "no zmm vpdpbusd in the VNNI kernel"


def test_avxvnni_uses_vex_encoding():
    """Alder Lake has AVX-VNNI but no AVX-512: the same LLVM intrinsic must come out as {vex} vpdpbusd (compile
    only; it is not run)."""
    asm = _asm("vnni256", "alderlake")
    assert re.search(r"\{vex\}\s+vpdpbusd\s+%ymm", asm)
    assert "zmm" not in asm


@pytest.mark.parametrize("path,mcpu", [("vnni512", "znver4"), ("vnni256", "alderlake"), ("avx2", "znver3"),
                                       ("avx2-ubsw", "znver3"), ("avx512-ubsw", "skylake-avx512")])
def test_intrinsics_allocate_no_workspace(path, mcpu):
    """The broadcast activation word stays a register: bound to a name in the intrinsic's TVMScript it became a
    4-byte workspace buffer, allocated and freed by a call in every parallel task (MobileNetV2's 16 -> 96 1x1
    conv at 112x112: 0.178 -> 0.076 ms without it)."""
    assert "TVMBackendAllocWorkspace" not in _asm(path, mcpu)


def test_avx2_assembly_has_no_vpdpbusd():
    asm = _asm("avx2", "znver3")
    assert "vpdpbusd" not in asm
    assert "vpmaddwd" in asm
    assert "vpmaddubsw" not in asm  # saturating: would not be exact for 8-bit weights


def test_avx2_ubsw_assembly():
    """7-bit weights: vpmaddubsw then vpmaddwd (by ones) per weight tile, ymm only, no VNNI."""
    asm = _asm("avx2-ubsw", "znver3")
    assert re.search(r"vpmaddubsw\s+[^\n]*%ymm", asm) and re.search(r"vpmaddwd\s+[^\n]*%ymm", asm)
    assert asm.count("vpmaddubsw") == asm.count("vpmaddwd")
    assert "vpdpbusd" not in asm and "zmm" not in asm


def test_avx512_ubsw_assembly():
    """AVX-512 without VNNI (Skylake-SP): the same pair of instructions on zmm registers, no VNNI."""
    asm = _asm("avx512-ubsw", "skylake-avx512")
    assert re.search(r"vpmaddubsw\s+[^\n]*%zmm", asm) and re.search(r"vpmaddwd\s+[^\n]*%zmm", asm)
    assert asm.count("vpmaddubsw") == asm.count("vpmaddwd")
    assert "vpdpbusd" not in asm and not re.search(r"vpmaddubsw\s+[^\n]*%ymm", asm)


@pytest.mark.parametrize("path", ["avx2-ubsw", "avx512-ubsw"])
def test_ubsw_saturates_past_its_weight_limit(path):
    """The 7-bit limit is real: with weights of -128 / 127 (a pair of 255 x 127 = 64 770 > 32 767) the kernel's
    int16 pair sums saturate and the result is wrong, which is why ``int8_weight_layout`` checks |w| <= 64."""
    got, ref, _ = _run(5, 64, 48, path, np.random.default_rng(3), w_max=128)
    assert not np.array_equal(got.astype(np.int64), ref)
    assert np.abs(got.astype(np.int64) - ref)[:2].max() > 1000  # the saturated rows are far off


def test_pick_int8_dot():
    assert D.pick_int8_dot(_target("znver4"))[1:] == (16, 4)
    assert D.pick_int8_dot(_target("alderlake"))[1:] == (8, 4)
    assert D.pick_int8_dot(_target("znver3"))[1:] == (8, 2)  # any int8 weight: vpmaddwd
    assert D.pick_int8_dot(_target("znver3"), weight_max=64)[0] == D.AVX2_PMADDUBSW.name  # 7-bit weights
    assert D.pick_int8_dot(_target("znver4"), weight_max=64)[0] == D.VNNI512.name
    assert D.pick_int8_dot(_target("skylake-avx512"), weight_max=64)[0] == D.AVX512_PMADDUBSW.name  # no VNNI
    assert D.pick_int8_dot(_target("skylake-avx512"))[1:] == (8, 2)  # 8-bit weights: still vpmaddwd
    assert D.pick_int8_dot(["avx512vnni", "avx512f"])[0] == D.VNNI512.name
    assert D.pick_int8_dot({"+avxvnni", "+avx2"})[0] == D.VNNI256.name
    assert D.pick_int8_dot(["avx512vnni", "avx512vl"])[0] == D.VNNI256.name  # no avx512f named: not the zmm one
    assert D.pick_int8_dot(["sse4.2"]) is None
    assert D.pick_int8_dot(tvm.target.Target({"kind": "llvm", "mtriple": "aarch64-linux-gnu"})) is None


def test_intrinsic_named_only_where_the_cpu_runs_it():
    """An IR layer's int8_dot names its instruction; a CPU without it gets None (plain vector code, never SIGILL)."""
    zen4 = D.usable_int8_dots(["avx512vnni", "avx512f", "avx512vl", "avx2"])
    zen3 = D.usable_int8_dots(["avx2", "fma"])
    assert D.intrinsic_named("vnni256", zen4) == D.VNNI256.name
    assert D.intrinsic_named("avx2-ubsw", zen4) == D.AVX2_PMADDUBSW.name
    assert D.intrinsic_named("vnni256", zen3) is None
    assert D.intrinsic_named("avx2-ubsw", zen3) == D.AVX2_PMADDUBSW.name
    assert D.intrinsic_named("", zen3) is None and D.intrinsic_named("avx2", []) is None
    assert [D.path_name(d[0]) for d in zen3] == ["avx2-ubsw", "avx2"]
    skx = D.usable_int8_dots(["avx512f", "avx512bw", "avx512vl", "avx2"])
    assert [D.path_name(d[0]) for d in skx] == ["avx512-ubsw", "avx2-ubsw", "avx2"]
    assert D.intrinsic_named("avx512-ubsw", zen3) is None


def test_ir_names_match_the_intrinsics():
    """The IR's table of int8_dot instructions (what the verifier checks weights against) agrees with the kernels."""
    from edgeopt.ir.ops._common import DEPTHWISE_INT8_DOTS, INT8_DOTS

    every = (*D.INTRINSICS, *D.DEPTHWISE_INTRINSICS)
    assert set(INT8_DOTS) == {d.path for d in every}
    assert DEPTHWISE_INT8_DOTS == {d.path for d in D.DEPTHWISE_INTRINSICS}
    for d in every:
        assert INT8_DOTS[d.path] == (d.lanes, d.group, D.activation_dtype(d.name), d.weight_max)
    assert not any(d.depthwise for d in D.INTRINSICS) and all(d.depthwise for d in D.DEPTHWISE_INTRINSICS)


def test_register_is_idempotent():
    D.register_int8_intrinsics()
    D.register_int8_intrinsics()
    for d in D.INTRINSICS:
        assert tvm.s_tir.TensorIntrin.get(d.name) is not None


def test_pack_int8_weight_layout():
    w = np.arange(6 * 5, dtype=np.int64).reshape(6, 5).astype(np.int8)
    wp = D.pack_int8_weight(w, lanes=4, group=2)
    assert wp.shape == (2, 3, 4, 2) and wp.dtype == np.int8
    for n in range(8):
        for k in range(6):
            want = w[n, k] if n < 6 and k < 5 else 0
            assert wp[n // 4, k // 2, n % 4, k % 2] == want


def test_auto_path_on_this_cpu_is_exact():
    """path="auto" on the build machine's own CPU (what a compiler's host build does) picks a path and is exact."""
    tgt = _target(tvm.target.codegen.llvm_get_system_cpu())
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, (2, 32), dtype=np.uint8)
    w = rng.integers(-128, 128, (32, 32), dtype=np.int8)
    ex, info = D.build_int8_linear(2, 32, 32, tgt, "auto")
    assert info["path"] in ("vnni512", "vnni256", "avx2", "plain")
    y = tvm.runtime.tensor(np.zeros((2, info["Np"]), np.int32))
    ex(tvm.runtime.tensor(x), tvm.runtime.tensor(D.pack_int8_weight(w, info["lanes"], info["group"])), y)
    np.testing.assert_array_equal(y.numpy()[:, :32].astype(np.int64), x.astype(np.int64) @ w.astype(np.int64).T)
