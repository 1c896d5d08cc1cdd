"""CPU features: one table between LLVM's feature names (what an artifact's code was built with) and the names
Linux reports (what the CPU running it has), for x86-64 and aarch64.

An artifact records the features its kernels may use under their **LLVM** names (``avx512vnni``, ``dotprod``);
this CPU's features come from Linux (x86: the ``flags`` line of ``/proc/cpuinfo``, which spells the same feature
``avx512_vnni``; aarch64: the kernel's hwcap bits, named as in ``/proc/cpuinfo``'s ``Features`` line, e.g.
``asimddp``). ``missing_features`` compares the two through the table, so no spelling difference can refuse an
artifact on a CPU that runs it (or admit one on a CPU that cannot).

Only ISA extensions that compiled kernels can contain are listed: SIMD sets, FMA, F16C, BMI, GFNI (LLVM uses it
for byte shifts) and the like. Not listed: system features (``rdpid``, ``clzero``, ``pku``), which a hypervisor
may hide; crypto extensions (``aes``, ``sha``, ``pclmul``), which no kernel contains; and LLVM's tuning flags
(``fast-lzcnt``), which are not instructions. This module imports neither torch nor TVM.
"""

from __future__ import annotations

import ctypes
import platform

#: x86-64: LLVM feature name -> the /proc/cpuinfo flag of the same instructions (arch/x86/include/asm/cpufeatures.h)
X86_LINUX_NAMES = {
    "sse": "sse", "sse2": "sse2", "sse3": "pni", "ssse3": "ssse3", "sse4.1": "sse4_1", "sse4.2": "sse4_2",
    "popcnt": "popcnt", "lzcnt": "abm", "bmi": "bmi1", "bmi2": "bmi2", "movbe": "movbe", "cx16": "cx16",
    "avx": "avx", "avx2": "avx2", "fma": "fma", "f16c": "f16c", "avxvnni": "avx_vnni", "avxifma": "avx_ifma",
    "avx512f": "avx512f", "avx512cd": "avx512cd", "avx512bw": "avx512bw", "avx512dq": "avx512dq",
    "avx512vl": "avx512vl", "avx512ifma": "avx512ifma", "avx512vbmi": "avx512vbmi", "avx512vbmi2": "avx512_vbmi2",
    "avx512bitalg": "avx512_bitalg", "avx512vpopcntdq": "avx512_vpopcntdq", "avx512vnni": "avx512_vnni",
    "avx512bf16": "avx512_bf16", "avx512fp16": "avx512_fp16", "avx512vp2intersect": "avx512_vp2intersect",
    "gfni": "gfni", "amx-tile": "amx_tile", "amx-int8": "amx_int8", "amx-bf16": "amx_bf16",
}

#: aarch64: LLVM feature name -> the hwcap names (arch/arm64/include/uapi/asm/hwcap.h) the CPU must report;
#: LLVM's ``fullfp16`` is both the scalar (``fphp``) and the vector (``asimdhp``) half-precision instructions.
#: Not listed: ``aes``/``sha2``/``crc``, which LLVM's ``cortex-a72`` claims but a Raspberry Pi 4 lacks, and which
#: no kernel uses; ``lse``/``rcpc`` (atomics, which kernels do not contain).
AARCH64_LINUX_NAMES = {
    "fp-armv8": ("fp",), "neon": ("asimd",), "fullfp16": ("fphp", "asimdhp"), "rdm": ("asimdrdm",),
    "dotprod": ("asimddp",), "fp16fml": ("asimdfhm",), "sve": ("sve",), "sve2": ("sve2",), "i8mm": ("i8mm",),
    "bf16": ("bf16",),
}

_AT_HWCAP, _AT_HWCAP2 = 16, 26
#: aarch64 hwcap name -> (auxv entry, bit) (arch/arm64/include/uapi/asm/hwcap.h)
AARCH64_HWCAP_BITS = {
    "fp": (_AT_HWCAP, 0), "asimd": (_AT_HWCAP, 1), "fphp": (_AT_HWCAP, 9), "asimdhp": (_AT_HWCAP, 10),
    "asimdrdm": (_AT_HWCAP, 12), "asimddp": (_AT_HWCAP, 20), "sve": (_AT_HWCAP, 22), "asimdfhm": (_AT_HWCAP, 23),
    "sve2": (_AT_HWCAP2, 1), "i8mm": (_AT_HWCAP2, 13), "bf16": (_AT_HWCAP2, 14),
}


def linux_names(llvm_feature: str, arch: str) -> tuple[str, ...]:
    """The Linux flags that must all be present for ``llvm_feature`` on ``arch``; a name the table does not know is
    taken as already being a Linux name (artifacts of earlier versions recorded aarch64 hwcap names)."""
    if arch == "x86_64":
        return (X86_LINUX_NAMES[llvm_feature],) if llvm_feature in X86_LINUX_NAMES else (llvm_feature,)
    return AARCH64_LINUX_NAMES.get(llvm_feature, (llvm_feature,))


def isa_features(llvm_features, arch: str) -> list[str]:
    """The features in ``llvm_features`` (e.g. ``llvm_get_cpu_features`` of a target) that the table lists for
    ``arch``: the ones an artifact records and a CPU must have."""
    table = X86_LINUX_NAMES if arch == "x86_64" else AARCH64_LINUX_NAMES
    return sorted(f for f in llvm_features if f in table)


def missing_features(required, arch: str, cpu_flags: set[str]) -> list[str]:
    """The LLVM features of ``required`` that a CPU reporting the Linux ``cpu_flags`` lacks."""
    return sorted(f for f in required if not set(linux_names(str(f), arch)) <= cpu_flags)


def parse_cpuinfo(text: str) -> set[str]:
    """The feature flags of the first CPU in a ``/proc/cpuinfo`` text (x86 ``flags``, aarch64 ``Features``)."""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return set(value.split())
    return set()


def host_flags() -> set[str]:
    """This CPU's Linux feature flags. aarch64: from the hwcap bits (``getauxval``), not ``/proc/cpuinfo``, which
    under qemu-user shows the host's CPU rather than the emulated one."""
    if platform.machine() == "aarch64":
        return _aarch64_hwcaps()
    try:
        with open("/proc/cpuinfo") as f:
            return parse_cpuinfo(f.read())
    except OSError:
        return set()


def _aarch64_hwcaps() -> set[str]:
    libc = ctypes.CDLL(None)
    libc.getauxval.restype = ctypes.c_ulong
    libc.getauxval.argtypes = [ctypes.c_ulong]
    words = {a: libc.getauxval(a) for a in (_AT_HWCAP, _AT_HWCAP2)}
    return {name for name, (a, bit) in AARCH64_HWCAP_BITS.items() if words[a] >> bit & 1}
