"""edgeopt's own x86 int8 dot-product tensor intrinsics and a tensorized int8 "linear" kernel.

Contract
--------
The kernel computes, exactly (int32 wrap-around never happens for K < 2**31 / (255 * 128) ~ 65 000)::

    y_i32[M, Np] = sum_k int32(x_u8[M, Kp]) * int32(w_i8[n, k])

with the weight pre-packed by :func:`pack_int8_weight` into ``wp[Np / lanes, Kp / group, lanes, group]``:
``wp[n // lanes, k // group, n % lanes, k % group] = w[n, k]``. ``Np`` and ``Kp`` are ``N`` and ``K`` rounded up to
``lanes`` and ``group``; the packer zero-pads the weight, so the caller must give ``x`` with ``Kp`` columns (any values
in the padding columns: they meet zero weights) and ignore output columns ``>= N``. Activations are **unsigned** 8-bit
(u8, as VNNI's ``vpdpbusd`` wants; a signed int8 activation becomes u8 by adding 128, and the caller then subtracts
``128 * sum_k w[n, k]`` per output column) and weights **signed** 8-bit. ``M`` is free: the accumulating block runs
on M rounded up to the register tile's rows, the extra rows re-reading row M-1, and only M rows are stored (a
predicated row tail cannot be tensorized).

Intrinsics (registered lazily, once per process, by :func:`register_int8_intrinsics`; this module never imports
``tvm.s_tir.tensor_intrin``, whose import costs 30-70 s):

=================  =====  =====  =======================================  ======================================
name               lanes  group  LLVM intrinsic                           needs (LLVM feature names)
=================  =====  =====  =======================================  ======================================
VNNI512            16     4      ``llvm.x86.avx512.vpdpbusd.512``         avx512vnni (+avx512f)
VNNI256            8      4      ``llvm.x86.avx512.vpdpbusd.256``         avxvnni, or avx512vnni + avx512vl
AVX512_PMADDUBSW   16     4      ``llvm.x86.avx512.pmaddubs.w.512``       avx512bw; weights with |w| <= 64
                                 then ``llvm.x86.avx512.pmaddw.d.512``
AVX2_PMADDUBSW     8      4      ``llvm.x86.avx2.pmadd.ub.sw``            avx2; weights with |w| <= 64 (7 bits)
                                 then ``llvm.x86.avx2.pmadd.wd``
AVX2_PMADDWD       8      2      ``llvm.x86.avx2.pmadd.wd``               avx2
AVX2_PMADDWD_X16   8      2      ``llvm.x86.avx2.pmadd.wd``               avx2; x given as int16 (0..255), not u8
VNNI512_DW         16     4      a shuffle (``vpermb``) of each operand,  avx512vnni, avx512vbmi (+avx512f);
                                 then ``llvm.x86.avx512.vpdpbusd.512``    depthwise convs
SDOT_DW            4      4      a shuffle (``tbl``) of each operand,     dotprod (+neon); depthwise convs, x i8
                                 then ``llvm.aarch64.neon.sdot``
=================  =====  =====  =======================================  ======================================

Each dense one computes ``C[lanes] += sum_{g < group} int32(A[g]) * int32(B[lanes, g])`` with ``A`` a u8 ``[group]``
slice of one row of ``x``, ``B`` one ``[lanes, group]`` tile of ``wp`` (contiguous: ``lanes * group`` bytes) and ``C``
``lanes`` contiguous int32 accumulators. The depthwise ones compute ``C[c] += sum_{t < 4} int32(A[t, c]) *
int32(B[t, c])`` for ``lanes`` channels ``c``: ``A`` is 4 neighbouring pixels of one row of an NCHW<lanes>c input
(``4 * lanes`` contiguous bytes), ``B`` the 4 window taps of an "OIHW<lanes>o" weight whose width is a multiple of 4
(``depthwise_int8_taps``).

* The VNNI ones use ``vpdpbusd`` (u8 x i8 products summed in groups of 4 into int32, no saturation). In LLVM 22 (the
  one inside the TVM 0.27 wheel) its operands are ``<64 x i8>`` / ``<32 x i8>`` vectors, not ``<16 x i32>`` as in
  older LLVMs and in TVM's own ``tvm.s_tir.tensor_intrin.x86`` (which therefore fails LLVM verification in 0.27).
  The 256-bit form is the same LLVM intrinsic for AVX-VNNI and AVX512-VL: LLVM emits ``{vex} vpdpbusd`` when the
  target has avxvnni but no avx512vl.
* AVX2 without VNNI has two. ``vpmaddubsw`` multiplies u8 by i8 and sums each pair into int16, **saturating**:
  255*127*2 = 64 770 > 32 767. With weights limited to |w| <= 64 a pair stays within 255*128 = 32 640, so
  AVX2_PMADDUBSW is exact for such weights only (``weight_max``); ``vpmaddwd`` by ones then sums the int16 pairs into
  int32: 32 products in three instructions, twice AVX2_PMADDWD's speed (MiniLM's 128x384x1536: 0.66 against
  1.35 ms on a Zen 4 running AVX2 code). The quantizer gives AVX2 targets such 7-bit weights (``QuantConfig
  .reduce_range``, ONNX Runtime's ``reduce_range`` for the same instruction), and ``int8_weight_layout`` checks
  every layer's weights before choosing it. AVX2_PMADDWD is exact for any int8 weight: it widens the u8 pair of
  ``x`` and the i8 weights to int16 and uses ``vpmaddwd`` (int16 x int16 products summed in pairs into int32).
* AVX-512 without VNNI (Skylake-SP, ``x86-64-v4``) runs the same two instructions on zmm registers
  (AVX512_PMADDUBSW, AVX512BW): 16 lanes, the ``OIHW16o4i`` / ``oi16o4i`` tiles VNNI-512 reads, twice the ymm form's
  work per instruction (as fast as the ymm form on Zen 4, which splits zmm instructions into two halves).

:func:`pick_int8_dot` chooses the intrinsic for a target; :func:`build_int8_linear` builds the kernel (register-tiled
tensorized schedule, or the plain vectorized fallback of the same compute with ``path="plain"``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tvm
from tvm import te
from tvm.s_tir import Schedule, TensorIntrin
from tvm.script import tirx as T

__all__ = ["INTRINSICS", "DEPTHWISE_INTRINSICS", "Int8Dot", "register_int8_intrinsics", "pick_int8_dot",
           "pack_int8_weight", "int8_linear_func", "schedule_int8_linear", "default_tile", "schedule_linear_plain",
           "build_int8_linear", "assembly", "target_features", "weight_limit", "intrinsic_named", "path_name",
           "usable_int8_dots", "is_depthwise", "activation_dtype"]


@dataclass(frozen=True)
class Int8Dot:
    name: str  # TensorIntrin name
    path: str  # short name: a build_int8_linear path and the IR's ``int8_dot`` attribute (ir.ops._common.INT8_DOTS)
    lanes: int  # int32 outputs per call
    group: int  # k values summed per output per call
    needs: tuple  # alternatives: any one tuple of LLVM feature names, all of which the target must have
    x_dtype: str = "uint8"  # the activation's dtype in the kernel (weights are always int8)
    weight_max: int = 128  # exact only for weights with |w| <= weight_max (128: any int8)
    depthwise: bool = False  # sums ``group`` window taps of each of ``lanes`` channels (a depthwise conv), not inputs


VNNI512 = Int8Dot("edgeopt_x86_vnni512_u8i8i32_16x4", "vnni512", 16, 4, (("avx512vnni", "avx512f"),))
VNNI256 = Int8Dot("edgeopt_x86_vnni256_u8i8i32_8x4", "vnni256", 8, 4, (("avxvnni",), ("avx512vnni", "avx512vl")))
#: AVX2 on 7-bit weights: ``vpmaddubsw`` sums u8 x i8 pairs into int16 (saturating: exact while |w| <= 64, since
#: 255 * 64 * 2 = 32 640 < 32 767), ``vpmaddwd`` by ones sums those pairs into int32: 32 products in 3 instructions
AVX2_PMADDUBSW = Int8Dot("edgeopt_x86_avx2_pmaddubsw_u8i7i32_8x4", "avx2-ubsw", 8, 4, (("avx2",),), weight_max=64)
#: the same on zmm registers (AVX512BW): AVX-512 CPUs without VNNI (Skylake-SP)
AVX512_PMADDUBSW = Int8Dot("edgeopt_x86_avx512_pmaddubsw_u8i7i32_16x4", "avx512-ubsw", 16, 4, (("avx512bw",),),
                           weight_max=64)
AVX2_PMADDWD = Int8Dot("edgeopt_x86_avx2_pmaddwd_u8i8i32_8x2", "avx2", 8, 2, (("avx2",),))
#: AVX2 with the activation already widened to int16 (values 0..255) by its producer: one broadcast per row and
#: k pair instead of four widening instructions (an option for a compiler whose quantize step can emit int16)
AVX2_PMADDWD_X16 = Int8Dot("edgeopt_x86_avx2_pmaddwd_i16i8i32_8x2", "avx2-x16", 8, 2, (("avx2",),), "int16")
#: ARMv8.2 dot product (Cortex-A76/A55, Neoverse N1): ``sdot`` sums 4 i8 x i8 products into each of 4 int32 lanes;
#: it takes signed activations (x86's take unsigned), so targets with it quantize activations to i8
SDOT = Int8Dot("edgeopt_arm_sdot_i8i8i32_4x4", "sdot", 4, 4, (("dotprod", "neon"),), "int8")
#: by preference, best first (the ones pick_int8_dot chooses from)
INTRINSICS = (VNNI512, VNNI256, AVX512_PMADDUBSW, AVX2_PMADDUBSW, AVX2_PMADDWD, SDOT)
#: a depthwise conv's window on ``vpdpbusd``: 4 taps along a row of each of 16 channels, summed into the channel's
#: int32 lane. NCHW16c holds a row's 4 neighbouring pixels as one [4 taps, 16 channels] run of 64 bytes, and the
#: weight tile likewise; ``vpermb`` (AVX512-VBMI) transposes each to the [16 channels, 4 taps] that ``vpdpbusd`` reads
VNNI512_DW = Int8Dot("edgeopt_x86_vnni512_depthwise_u8i8i32_16x4", "vnni512-dw", 16, 4,
                     (("avx512vnni", "avx512f", "avx512vbmi"),), depthwise=True)
#: the same on ARM's ``sdot`` (4 channels x 4 taps: 16 bytes, transposed by one ``tbl``), i8 activations
SDOT_DW = Int8Dot("edgeopt_arm_sdot_depthwise_i8i8i32_4x4", "sdot-dw", 4, 4, (("dotprod", "neon"),), "int8",
                  depthwise=True)
DEPTHWISE_INTRINSICS = (VNNI512_DW, SDOT_DW)
_ALL = (*INTRINSICS, AVX2_PMADDWD_X16, *DEPTHWISE_INTRINSICS)
_BY_NAME = {d.name: d for d in _ALL}
_PATHS = {d.path: d for d in _ALL}


# ---------------------------------------------------------------------------------------------------- intrinsics
def _desc(lanes: int, group: int, a_dtype: str = "uint8"):
    @T.prim_func(s_tir=True)
    def desc(A: T.Buffer((group,), a_dtype, offset_factor=1), B: T.Buffer((lanes, group), "int8", offset_factor=1),
             C: T.Buffer((lanes,), "int32", offset_factor=1)) -> None:
        with T.sblock("root"):
            T.reads(C[0:lanes], A[0:group], B[0:lanes, 0:group])
            T.writes(C[0:lanes])
            for i, k in T.grid(lanes, group):
                with T.sblock("update"):
                    vi, vk = T.axis.remap("SR", [i, k])
                    C[vi] = C[vi] + T.Cast("int32", A[vk]) * T.Cast("int32", B[vi, vk])

    return desc


def _vnni_impl(lanes: int):
    llvm_name = {16: "llvm.x86.avx512.vpdpbusd.512", 8: "llvm.x86.avx512.vpdpbusd.256"}[lanes]
    nbytes = lanes * 4

    @T.prim_func(s_tir=True)
    def impl(A: T.Buffer((4,), "uint8", offset_factor=1), B: T.Buffer((lanes, 4), "int8", offset_factor=1),
             C: T.Buffer((lanes,), "int32", offset_factor=1)) -> None:
        with T.sblock("root"):
            T.reads(C[0:lanes], A[0:4], B[0:lanes, 0:4])
            T.writes(C[0:lanes])
            # the 4 bytes of x as one int32, copied to every lane (inline: bound to a name in TVMScript, the int32
            # became a 4-byte workspace buffer, allocated and freed by a call in every parallel task)
            C[T.ramp(T.int32(0), 1, lanes)] = T.call_llvm_pure_intrin(
                T.llvm_lookup_intrinsic_id(llvm_name),
                C.vload([0], dtype=f"int32x{lanes}"),
                T.reinterpret(T.broadcast(T.reinterpret(A.vload([0], "uint8x4"), dtype="int32"), lanes),
                              dtype=f"uint8x{nbytes}"),
                B.vload([0, 0], dtype=f"int8x{nbytes}"),
                dtype=f"int32x{lanes}")

    return impl


def _pmaddwd_impl(x_dtype: str):
    """AVX2: the pair of x (u8 widened to int16, or already int16) times 8 weight pairs, summed pairwise."""
    @T.prim_func(s_tir=True)
    def impl(A: T.Buffer((2,), x_dtype, offset_factor=1), B: T.Buffer((8, 2), "int8", offset_factor=1),
             C: T.Buffer((8,), "int32", offset_factor=1)) -> None:
        with T.sblock("root"):
            T.reads(C[0:8], A[0:2], B[0:8, 0:2])
            T.writes(C[0:8])
            C[T.ramp(T.int32(0), 1, 8)] = C.vload([0], dtype="int32x8") + T.call_llvm_pure_intrin(
                T.llvm_lookup_intrinsic_id("llvm.x86.avx2.pmadd.wd"),
                T.reinterpret(T.broadcast(T.reinterpret(T.Cast("int16x2", A.vload([0], f"{x_dtype}x2")),
                                                        dtype="int32"), 8), dtype="int16x16"),  # (x0, x1) as int16
                T.Cast("int16x16", B.vload([0, 0], dtype="int8x16")),  # vpmovsxbw
                dtype="int32x8")

    return impl


def _pmaddubsw_impl(lanes: int):
    """7-bit weights: the 4 bytes of x (broadcast as one int32) times ``lanes`` weight quads: ``vpmaddubsw`` gives
    2 x ``lanes`` int16 pair sums, ``vpmaddwd`` by ones adds neighbouring pairs into ``lanes`` int32, ``vpaddd``
    accumulates (ymm with AVX2: 8 lanes; zmm with AVX512BW: 16)."""
    ubsw, wd = {8: ("llvm.x86.avx2.pmadd.ub.sw", "llvm.x86.avx2.pmadd.wd"),
                16: ("llvm.x86.avx512.pmaddubs.w.512", "llvm.x86.avx512.pmaddw.d.512")}[lanes]
    nbytes, pairs = lanes * 4, lanes * 2

    @T.prim_func(s_tir=True)
    def impl(A: T.Buffer((4,), "uint8", offset_factor=1), B: T.Buffer((lanes, 4), "int8", offset_factor=1),
             C: T.Buffer((lanes,), "int32", offset_factor=1)) -> None:
        with T.sblock("root"):
            T.reads(C[0:lanes], A[0:4], B[0:lanes, 0:4])
            T.writes(C[0:lanes])
            C[T.ramp(T.int32(0), 1, lanes)] = C.vload([0], dtype=f"int32x{lanes}") + T.call_llvm_pure_intrin(
                T.llvm_lookup_intrinsic_id(wd),
                T.call_llvm_pure_intrin(
                    T.llvm_lookup_intrinsic_id(ubsw),
                    T.reinterpret(T.broadcast(T.reinterpret(A.vload([0], "uint8x4"), dtype="int32"), lanes),
                                  dtype=f"uint8x{nbytes}"),
                    B.vload([0, 0], dtype=f"int8x{nbytes}"),
                    dtype=f"int16x{pairs}"),
                T.broadcast(T.int16(1), pairs),
                dtype=f"int32x{lanes}")

    return impl


@T.prim_func(s_tir=True)
def _sdot_impl(A: T.Buffer((4,), "int8", offset_factor=1), B: T.Buffer((4, 4), "int8", offset_factor=1),
               C: T.Buffer((4,), "int32", offset_factor=1)) -> None:
    with T.sblock("root"):
        T.reads(C[0:4], A[0:4], B[0:4, 0:4])
        T.writes(C[0:4])
        C[T.ramp(T.int32(0), 1, 4)] = T.call_llvm_pure_intrin(
            T.llvm_lookup_intrinsic_id("llvm.aarch64.neon.sdot.v4i32.v16i8"),
            C.vload([0], dtype="int32x4"),
            B.vload([0, 0], dtype="int8x16"),
            # the 4 bytes of x as one int32, copied to every lane (inline, as for VNNI)
            T.reinterpret(T.broadcast(T.reinterpret(A.vload([0], "int8x4"), dtype="int32"), 4), dtype="int8x16"),
            dtype="int32x4")


def _taps_to_lanes(lanes: int) -> list[int]:
    """Byte j of a [lanes, 4] tile comes from byte lanes * (j % 4) + j // 4 of the [4, lanes] one (a transpose)."""
    return [lanes * (j % 4) + j // 4 for j in range(4 * lanes)]


def _depthwise_desc(lanes: int, x_dtype: str):
    @T.prim_func(s_tir=True)
    def desc(A: T.Buffer((4, lanes), x_dtype, offset_factor=1), B: T.Buffer((4, lanes), "int8", offset_factor=1),
             C: T.Buffer((lanes,), "int32", offset_factor=1)) -> None:
        with T.sblock("root"):
            T.reads(C[0:lanes], A[0:4, 0:lanes], B[0:4, 0:lanes])
            T.writes(C[0:lanes])
            for i, k in T.grid(lanes, 4):
                with T.sblock("update"):
                    vi, vk = T.axis.remap("SR", [i, k])
                    C[vi] = C[vi] + T.Cast("int32", A[vk, vi]) * T.Cast("int32", B[vk, vi])

    return desc


def _depthwise_impl(lanes: int, x_dtype: str, llvm_name: str):
    """4 taps x ``lanes`` channels of x and of the weight (contiguous bytes each), transposed to ``lanes`` x 4 by a
    constant shuffle (x86: one ``vpermb``; ARM: one ``tbl``; the weight's is loop-invariant over a run of pixels),
    then one dot product of x (u8 for ``vpdpbusd``, i8 for ``sdot``) and the i8 weight."""
    n = 4 * lanes
    idx = _taps_to_lanes(lanes)

    @T.prim_func(s_tir=True)
    def impl(A: T.Buffer((4, lanes), x_dtype, offset_factor=1), B: T.Buffer((4, lanes), "int8", offset_factor=1),
             C: T.Buffer((lanes,), "int32", offset_factor=1)) -> None:
        with T.sblock("root"):
            T.reads(C[0:lanes], A[0:4, 0:lanes], B[0:4, 0:lanes])
            T.writes(C[0:lanes])
            C[T.ramp(T.int32(0), 1, lanes)] = T.call_llvm_pure_intrin(
                T.llvm_lookup_intrinsic_id(llvm_name),
                C.vload([0], dtype=f"int32x{lanes}"),
                T.Shuffle([A.vload([0, 0], dtype=f"{x_dtype}x{n}")], idx),
                T.Shuffle([B.vload([0, 0], dtype=f"int8x{n}")], idx),
                dtype=f"int32x{lanes}")

    return impl


_REGISTERED = False


def register_int8_intrinsics() -> None:
    """Register edgeopt's intrinsics with TVM (idempotent; milliseconds)."""
    global _REGISTERED
    if _REGISTERED:
        return
    impls = {VNNI512.name: lambda: _vnni_impl(16), VNNI256.name: lambda: _vnni_impl(8),
             AVX512_PMADDUBSW.name: lambda: _pmaddubsw_impl(16), AVX2_PMADDUBSW.name: lambda: _pmaddubsw_impl(8),
             AVX2_PMADDWD.name: lambda: _pmaddwd_impl("uint8"),
             AVX2_PMADDWD_X16.name: lambda: _pmaddwd_impl("int16"),
             SDOT.name: lambda: _sdot_impl,
             VNNI512_DW.name: lambda: _depthwise_impl(16, "uint8", "llvm.x86.avx512.vpdpbusd.512"),
             SDOT_DW.name: lambda: _depthwise_impl(4, "int8", "llvm.aarch64.neon.sdot.v4i32.v16i8")}
    for d in _ALL:
        if TensorIntrin.get(d.name, allow_missing=True) is None:  # e.g. this module was reloaded
            desc = _depthwise_desc(d.lanes, d.x_dtype) if d.depthwise else _desc(d.lanes, d.group, d.x_dtype)
            TensorIntrin.register(d.name, desc, impls[d.name]())
    _REGISTERED = True


# ---------------------------------------------------------------------------------------------------- choice
def target_features(target) -> set[str]:
    """The x86 feature names this module cares about that ``target`` (a tvm Target) has."""
    names = {f for d in _ALL for alt in d.needs for f in alt}
    return {f for f in names if tvm.target.codegen.target_has_features(f, target)}


def pick_int8_dot(features, weight_max: int = 128) -> tuple[str, int, int] | None:
    """``(intrin_name, lanes, group)`` of the best intrinsic for ``features`` (a tvm Target, or an iterable of LLVM
    feature names such as "avx512vnni", "avx512vl", "avxvnni", "avx2") that is exact for weights with
    ``|w| <= weight_max`` (128: any int8); None if none applies (non-x86 or pre-AVX2: use the plain schedule)."""
    if isinstance(features, tvm.target.Target):
        if features.kind.name != "llvm" or "aarch64" in str(features.attrs.get("mtriple", "")):
            return None
        features = target_features(features)
    return next((d for d in usable_int8_dots(features) if weight_limit(d[0]) >= weight_max and not is_depthwise(d[0])),
                None)


def activation_dtype(name: str) -> str:
    """The IR dtype ("u8" or "i8") of the activations intrinsic ``name`` multiplies."""
    return "i8" if _BY_NAME[name].x_dtype == "int8" else "u8"


def is_depthwise(name: str) -> bool:
    """Whether intrinsic ``name`` sums a depthwise conv's window taps (``VNNI512_DW``, ``SDOT_DW``), not a dense
    layer's inputs."""
    return _BY_NAME[name].depthwise


def weight_limit(name: str) -> int:
    """The largest ``|w|`` intrinsic ``name`` is exact for (128: any int8 weight; 64: ``vpmaddubsw``, ymm or zmm)."""
    return _BY_NAME[name].weight_max


def intrinsic_named(path: str, dots) -> str | None:
    """The intrinsic an IR layer's ``int8_dot`` attribute ``path`` names ("vnni256", "avx2-ubsw"...), if a CPU with
    ``dots`` (its ``usable_int8_dots``) runs it, else None (the layer then runs as plain vector code)."""
    d = _PATHS.get(path)
    return d.name if d is not None and d.name in [name for name, _, _ in dots] else None


def path_name(name: str) -> str:
    """The short name of intrinsic ``name`` (a ``build_int8_linear`` path and the IR's ``int8_dot``: "vnni512",
    "avx2-ubsw", "sdot"...)."""
    return _BY_NAME[name].path


def usable_int8_dots(features) -> list[tuple[str, int, int]]:
    """Every intrinsic ``features`` (LLVM feature names) can run, as ``(name, lanes, group)``: the dense layers' best
    first (a layer whose output count the widest one's lanes do not divide can use a narrower one: VNNI-256 beside
    VNNI-512), then the depthwise convs' (``is_depthwise(name)``)."""
    feats = {f.lstrip("+") for f in features}
    return [(d.name, d.lanes, d.group) for d in (*INTRINSICS, *DEPTHWISE_INTRINSICS)
            if any(all(f in feats for f in alt) for alt in d.needs)]


# ---------------------------------------------------------------------------------------------------- kernel
def _round_up(n: int, m: int) -> int:
    return -(-n // m) * m


def pack_int8_weight(w_nk: np.ndarray, lanes: int, group: int) -> np.ndarray:
    """``w[N, K]`` -> ``wp[Np/lanes, Kp/group, lanes, group]`` (zero-padded to Np, Kp); same dtype as ``w``."""
    n, k = w_nk.shape
    npad, kpad = _round_up(n, lanes), _round_up(k, group)
    w = np.zeros((npad, kpad), w_nk.dtype)
    w[:n, :k] = w_nk
    return np.ascontiguousarray(w.reshape(npad // lanes, lanes, kpad // group, group).transpose(0, 2, 1, 3))


def int8_linear_func(M: int, K: int, N: int, lanes: int, group: int, rows: int = 1, x_dtype: str = "uint8",
                     w_dtype: str = "int8", acc_dtype: str = "int32") -> tvm.tirx.PrimFunc:
    """PrimFunc ``main(x[M, K], wp[N/lanes, K/group, lanes, group], y[M, N])`` (K, N already padded: multiples of
    group and lanes). Block "Y" accumulates ``Mp`` = M rounded up to ``rows`` rows (the rows past M re-read x's last
    row, so a register tile of ``rows`` rows never needs a predicate, which ``tensorize`` cannot match); block
    "Y_out" copies the first M rows to ``y``. With float32 dtypes it is the fp32 linear of the same layout."""
    assert K % group == 0 and N % lanes == 0, (K, group, N, lanes)
    mp = _round_up(M, rows)
    x = te.placeholder((M, K), x_dtype, name="x")
    w = te.placeholder((N // lanes, K // group, lanes, group), w_dtype, name="wp")
    k = te.reduce_axis((0, K), name="k")
    row = (lambda i: te.min(i, M - 1)) if mp != M else (lambda i: i)
    acc = te.compute((mp, N), lambda i, j: te.sum(
        x[row(i), k].astype(acc_dtype) * w[j // lanes, k // group, j % lanes, k % group].astype(acc_dtype), axis=k),
        name="Y")
    y = te.compute((M, N), lambda i, j: acc[i, j], name="Y_out")
    return te.create_prim_func([x, w, y])


def _tile(sch: Schedule, rows: int, vectors: int, lanes: int, group: int):
    """Split and order block "Y" as (jo, io, ko, ii, jv, ji, ki); the copy-out block goes under io; returns loops."""
    blk = sch.get_sblock("Y", func_name="main")
    i, j, k = sch.get_loops(blk)
    n_vec = sch.get(j).extent.value // lanes
    vectors = max(v for v in range(1, vectors + 1) if n_vec % v == 0)  # the tensorized loop must not be predicated
    mp = sch.get(i).extent.value
    rows = max(r for r in range(1, min(rows, mp) + 1) if mp % r == 0)
    jo, jv, ji = sch.split(j, [None, vectors, lanes])
    io, ii = sch.split(i, [None, rows])
    ko, ki = sch.split(k, [None, group])
    sch.reorder(jo, io, ko, ii, jv, ji, ki)
    out = sch.get_sblock("Y_out", func_name="main")
    sch.reverse_compute_at(out, io)  # Y is then only live inside one io iteration: compacted to rows x tile
    sch.parallel(sch.fuse(jo, io))
    return blk, out, ko, ii, jv, ji, ki, rows, vectors


def _finish(sch: Schedule, out) -> None:
    for b in (sch.get_sblock("Y_init", func_name="main"), out):
        loops = sch.get_loops(b)
        jo, ji = sch.split(loops[-1], [None, 16])
        sch.vectorize(ji)
        sch.unroll(jo)
        if sch.get(loops[-2]).extent.value <= 16:
            sch.unroll(loops[-2])


def schedule_int8_linear(func, intrin: str, rows: int = 4, vectors: int = 2):
    """Tensorize ``func`` (from :func:`int8_linear_func` with the intrinsic's lanes and group): a register tile of
    ``rows`` x ``vectors * lanes`` int32 accumulators, reduction outside the tile, one intrinsic call per (row,
    vector, k-group), column panels then row blocks in parallel. Returns ``(func, rows, vectors)`` actually used."""
    register_int8_intrinsics()
    d = _BY_NAME[intrin]
    sch = Schedule(tvm.IRModule({"main": func}))
    blk, out, ko, ii, jv, ji, ki, rows, vectors = _tile(sch, rows, vectors, d.lanes, d.group)
    sch.unroll(ii)
    sch.unroll(jv)
    sch.decompose_reduction(blk, ko)  # after parallel; the init block lands above ko
    sch.tensorize(ji, d.name)  # the update block's ji: ji x ki now is exactly the intrinsic's desc
    _finish(sch, out)
    return sch.mod["main"], rows, vectors


def schedule_linear_plain(func, vec: int = 16, rows: int = 4, vectors: int = 2):
    """The untensorized fallback: the same tile (rows x vectors*vec accumulators), columns vectorized ``vec`` wide
    (``vec`` must equal the packed ``lanes``), the packed group's k unrolled. Returns ``(func, rows, vectors)``."""
    group = int(func.params[1].shape[3])  # 0.27: PrimFunc params are the buffers (no buffer_map)
    sch = Schedule(tvm.IRModule({"main": func}))
    blk, out, ko, ii, jv, ji, ki, rows, vectors = _tile(sch, rows, vectors, vec, group)
    sch.reorder(ki, ii, jv, ji)
    sch.vectorize(ji)
    sch.unroll(jv)
    sch.unroll(ii)
    sch.unroll(ki)
    sch.decompose_reduction(blk, ko)
    _finish(sch, out)
    return sch.mod["main"], rows, vectors


def default_tile(path: str, M: int, N: int, target=None) -> tuple[int, int]:
    """(rows, vectors) register tile for ``path``, from bench/int8_dot.py sweeps on a Zen 4 VM (2 threads, other jobs
    running; see /tmp/probe_int8/REPORT.md), rounded to the rules they suggest:

    * M > 1: vnni512 4x2 (4x4, 6x2, 8x2 within noise); vnni256 4x4 when the target has AVX-512's 32 registers,
      else 6x2 (12 of AVX-VNNI's 16 ymm); avx2 (u8) 4x4 (it reuses each widened x pair 4 times); avx2-x16 6x2;
      plain 4x2 (4x3 with 8-lane ymm vectors, when N/8 allows: 12 accumulators); avx2-ubsw 4x2 (3x4 and 4x3 within
      4%, scratch runs at 128x384x1536); avx512-ubsw as vnni512.
    * M == 1 (GEMV): one accumulator chain per vector, so more vectors: 8 (4 when that leaves under 4 parallel
      tasks for the zmm kernel); 1x1 and 1x2 were 2-4x slower.
    """
    lanes = 16 if path in ("vnni512", "avx512-ubsw") or (path == "plain" and target is not None and
                                        tvm.target.codegen.target_has_features("avx512f", target)) else 8
    if M == 1:
        vecs = N // lanes
        return 1, (8 if vecs // 8 >= 4 or path not in ("vnni512", "avx512-ubsw", "plain") else 4)
    if path == "vnni256":
        wide = target is not None and tvm.target.codegen.target_has_features("avx512f", target)
        return (4, 4) if wide else (6, 2)
    if path == "plain" and lanes == 8:
        return 4, (3 if (N // 8) % 3 == 0 else 2)
    return {"vnni512": (4, 2), "avx2": (4, 4), "avx2-x16": (6, 2), "avx2-ubsw": (4, 2)}.get(path, (4, 2))


def build_int8_linear(M: int, K: int, N: int, target, path: str = "auto", rows: int | None = None,
                      vectors: int | None = None, plain_group: int | None = None):
    """Build the kernel for ``x[M, K] (u8) @ w[N, K].T (i8)``; returns ``(executable, info)``.

    ``path``: "auto" (:func:`pick_int8_dot` on ``target``, for any int8 weight, else "plain"), "vnni512",
    "vnni256", "avx512-ubsw" / "avx2-ubsw" (weights with |w| <= 64 only), "avx2", "avx2-x16" (x given as int16,
    0..255) or "plain" (``plain_group``: the packed k group, default 4). ``rows``/``vectors`` default to
    :func:`default_tile`.
    ``info`` has the intrinsic, lanes/group (for :func:`pack_int8_weight`), padded Kp/Np and the tile. Call the
    executable as ``ex["main"](x[M, Kp], wp, y[M, Np])`` or ``ex(x, wp, y)``."""
    if path == "auto":
        pick = pick_int8_dot(target)
        path = next((p for p, d in _PATHS.items() if pick and d.name == pick[0]), "plain")
    if path == "plain":  # one int32 vector register per vector: zmm with AVX-512, else ymm
        wide = tvm.target.codegen.target_has_features("avx512f", target)
        lanes, group, x_dtype = (16 if wide else 8), (plain_group or 4), "uint8"
        intrin = None
    else:
        d = _PATHS.get(path)
        if d is None or d.depthwise:
            raise ValueError(f"build_int8_linear: unknown path {path!r}; one of auto, plain, "
                             f"{', '.join(p for p, e in _PATHS.items() if not e.depthwise)}")
        lanes, group, intrin, x_dtype = d.lanes, d.group, d.name, d.x_dtype
    kp, np_ = _round_up(K, group), _round_up(N, lanes)
    d_rows, d_vectors = default_tile(path, M, np_, target)
    rows = d_rows if rows is None else rows
    vectors = d_vectors if vectors is None else vectors
    func = int8_linear_func(M, kp, np_, lanes, group, rows=min(rows, M), x_dtype=x_dtype)
    if intrin is None:
        func, rows, vectors = schedule_linear_plain(func, vec=lanes, rows=rows, vectors=vectors)
    else:
        func, rows, vectors = schedule_int8_linear(func, intrin, rows=rows, vectors=vectors)
    ex = tvm.compile(tvm.IRModule({"main": func}), target=target)
    return ex, {"path": path, "intrin": intrin, "x_dtype": x_dtype, "lanes": lanes, "group": group, "Kp": kp, "Np": np_,
                "rows": rows, "vectors": vectors}


def assembly(ex) -> str:
    """Assembly text of a built executable (``tvm.compile`` result) or runtime module."""
    mod = getattr(ex, "mod", ex)
    return mod.inspect_source("asm")
