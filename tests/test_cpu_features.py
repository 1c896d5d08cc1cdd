"""CPU features: artifacts for a CPU are accepted on it and refused on CPUs without its features, read from
recorded ``/proc/cpuinfo`` files of real machines (``tests/data/cpuinfo``), so these run on any machine."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from edgeopt.targets import get_target
from edgeopt.targets.arm import ArmTarget
from edgeopt.targets.host import host_mattr

import edgeopt
from edgeopt.errors import ArtifactError, TargetError
from edgeopt.runtime import cpu_features, tvm_cpu
from edgeopt.runtime.cpu_features import X86_LINUX_NAMES, missing_features, parse_cpuinfo

CPUINFO = Path(__file__).parent / "data" / "cpuinfo"


def flags(name: str) -> set[str]:
    return parse_cpuinfo((CPUINFO / f"{name}.txt").read_text())


ZEN3, ZEN4, ZEN5 = "zen3-epyc-7763-kvm", "zen4-epyc-9004-kvm", "zen5-ryzen-9950x"
SPR, ADL, IVB = "sapphirerapids-xeon-8480", "alderlake-i7-12700k", "ivybridge-i5-3570"
A76, A72 = "cortex-a76-raspberrypi5", "cortex-a72-raspberrypi4"
X86_MACHINES = [ZEN3, ZEN4, ZEN5, SPR, ADL, IVB]

#: (LLVM cpu of the machine, its cpuinfo, a machine that lacks some of its features, one such feature)
X86_CPUS = [
    ("znver3", ZEN3, IVB, "avx2"),
    ("znver4", ZEN4, ZEN3, "avx512vnni"),
    ("znver5", ZEN5, ZEN4, "avxvnni"),
    ("sapphirerapids", SPR, ZEN5, "avx512fp16"),
    ("alderlake", ADL, ZEN3, "avxvnni"),
]


def test_recorded_machines_parse():
    for name in X86_MACHINES:
        assert {"sse2", "sse4_2"} <= flags(name), name
    assert "avx512_vnni" in flags(ZEN4) and "avx512vnni" not in flags(ZEN4)  # the spelling that broke loading
    assert "avx_vnni" in flags(ADL) and "avx512f" not in flags(ADL)
    assert {"asimd", "asimddp", "fphp", "asimdhp"} <= flags(A76) and "asimddp" not in flags(A72)


def test_table_maps_the_names_that_differ():
    assert X86_LINUX_NAMES["avx512vnni"] == "avx512_vnni" and X86_LINUX_NAMES["avxvnni"] == "avx_vnni"
    assert X86_LINUX_NAMES["avx512bf16"] == "avx512_bf16" and X86_LINUX_NAMES["sse4.2"] == "sse4_2"
    assert X86_LINUX_NAMES["sse3"] == "pni" and X86_LINUX_NAMES["bmi"] == "bmi1" and X86_LINUX_NAMES["lzcnt"] == "abm"
    assert cpu_features.linux_names("fullfp16", "aarch64") == ("fphp", "asimdhp")
    assert cpu_features.linux_names("dotprod", "aarch64") == ("asimddp",)
    # every Linux name in the table is one that some recorded machine reports (no misspelling slips through)
    seen = set().union(*(flags(m) for m in X86_MACHINES))
    unseen = {llvm: linux for llvm, linux in X86_LINUX_NAMES.items() if linux not in seen}
    assert set(unseen) <= {"avxifma"}, unseen  # AVX-IFMA: Sierra Forest / Arrow Lake, none recorded here


@pytest.mark.parametrize("cpu, machine, lesser, feature", X86_CPUS)
def test_x86_cpu_accepted_on_itself_refused_without_its_features(cpu, machine, lesser, feature):
    req = get_target("x86", cpu=cpu).describe()
    assert req["cpu_features"] and feature in req["cpu_features"]
    assert tvm_cpu.select_level(req, "x86_64", flags(machine)) is req  # accepted on the machine it names
    assert feature in missing_features(req["cpu_features"], "x86_64", flags(lesser))
    with pytest.raises(ArtifactError, match=f"compiled for a CPU with .*{feature}.*mcpu={cpu}.*which this CPU lacks"):
        tvm_cpu.select_level(req, "x86_64", flags(lesser))


def test_levels_accepted_where_the_level_holds():
    v3, v4 = get_target("x86-64-v3").describe(), get_target("x86-64-v4").describe()
    for machine in X86_MACHINES:
        f = flags(machine)
        assert (not missing_features(v3["cpu_features"], "x86_64", f)) == (machine != IVB), machine
        assert (not missing_features(v4["cpu_features"], "x86_64", f)) == (machine in (ZEN4, ZEN5, SPR)), machine


@pytest.mark.parametrize("cpu, machine, lesser", [("cortex-a76", A76, A72), ("cortex-a72", A72, None)])
def test_arm_cpu_accepted_on_itself_refused_without_its_features(cpu, machine, lesser):
    req = ArmTarget(cpu).describe()
    assert tvm_cpu.select_level(req, "aarch64", flags(machine)) is req
    if lesser:
        assert missing_features(req["cpu_features"], "aarch64", flags(lesser)) == ["dotprod", "fullfp16", "rdm"]
    # an artifact of an earlier edgeopt recorded hwcap names: still checked by those names
    assert missing_features(["asimd", "asimddp"], "aarch64", flags(A72)) == ["asimddp"]


def test_host_mattr_follows_the_cpu_not_its_name():
    """A VM that names its CPU ``znver4`` but hides AVX-512 gets code without AVX-512 (no SIGILL), and a CPU with
    more than its name implies may use it."""
    import tvm

    off = host_mattr("znver4", flags(ZEN3))
    assert "-avx512f" in off and "-avx512vnni" in off and not any(m.startswith("+") for m in off)
    t = tvm.target.Target({"kind": "llvm", "mcpu": "znver4", "mattr": off})
    got = cpu_features.isa_features(tvm.target.codegen.llvm_get_cpu_features(t), "x86_64")
    assert not missing_features(got, "x86_64", flags(ZEN3))
    assert host_mattr("znver4", flags(ZEN4)) == []
    assert "+avxvnni" in host_mattr("znver4", flags(ZEN5))


def test_unknown_cpu_and_levels_are_target_errors():
    with pytest.raises(TargetError, match="unknown x86 cpu 'znver99'.*known cpus: .*znver3"):
        get_target("x86", cpu="znver99")
    with pytest.raises(TargetError, match="needs cpu="):
        get_target("x86")
    with pytest.raises(TargetError, match="levels must nest"):
        get_target("x86-64", levels=["alderlake", "x86-64-v4"])


def test_schedules_follow_the_target_not_the_build_machine():
    assert get_target("x86-64-v3").vector_lanes(32) == 8
    assert get_target("x86-64-v4").vector_lanes(32) == 16
    assert get_target("x86", cpu="znver3").vector_lanes(32) == 8
    assert get_target("x86", cpu="znver4").vector_lanes(32) == 16


# -- whole artifacts: compiled here for other CPUs, loaded with recorded CPU flags -----------------------------------
def _model():
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(),
                            torch.nn.Linear(8 * 6 * 6, 5)).eval()
    return m, torch.randn(1, 3, 6, 6)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """Artifacts for a few CPUs and the two-level one, saved once: {name: path}, and the model and input."""
    m, x = _model()
    d = tmp_path_factory.mktemp("cpus")
    paths = {}
    for name, target, opts in [("v3", "x86-64-v3", {}), ("znver4", "x86", {"cpu": "znver4"}),
                               ("spr", "x86", {"cpu": "sapphirerapids"}),
                               ("levels", "x86-64", {"levels": ["v3", "v4"]})]:
        paths[name] = d / f"{name}.edgeopt"
        edgeopt.compile(m, (x,), target=target, **opts).save(paths[name])
    return paths, m, x


_LOAD_LIBRARY = tvm_cpu.load_library


class _UnloadedLibrary:
    """Stands in for a kernel library built for features this machine's real CPU lacks: loading it (``dlopen``)
    could already run its instructions. Looks like one: ``lib[kernel]`` is a function, never called here."""

    def __getitem__(self, kernel):
        return lambda *args: pytest.fail(f"kernel {kernel} of a library this CPU cannot run was called")


def _load_as(monkeypatch, path, machine, level=None):
    """Load ``path`` as on ``machine`` (its recorded flags); a library this CPU cannot run is never dlopen'ed."""
    from edgeopt.runtime.artifact import read_artifact

    monkeypatch.setattr(tvm_cpu, "host_flags", lambda: flags(machine))
    try:
        picked = tvm_cpu.chosen_level(read_artifact(str(path))[0]["target"], level)
    except ArtifactError:
        picked = None  # refused: edgeopt.load says so below, before any library
    cannot_run = picked and missing_features(picked["cpu_features"], "x86_64", cpu_features.host_flags())
    monkeypatch.setattr(tvm_cpu, "load_library", (lambda data: _UnloadedLibrary()) if cannot_run else _LOAD_LIBRARY)
    return edgeopt.load(str(path), level=level)


@pytest.mark.parametrize("name, accepted_on, refused_on", [
    ("v3", [ZEN3, ZEN4, ZEN5, SPR, ADL], [IVB]),
    ("znver4", [ZEN4, ZEN5], [ZEN3, ADL, IVB]),
    ("spr", [SPR], [ZEN3, ZEN4, ZEN5, ADL]),
])
def test_artifact_loads_only_where_it_can_run(saved, monkeypatch, name, accepted_on, refused_on):
    paths, _, _ = saved
    for machine in accepted_on:
        assert _load_as(monkeypatch, paths[name], machine).info["target"] in ("x86", "x86-64-v3")
    for machine in refused_on:
        with pytest.raises(ArtifactError, match="which this CPU lacks"):
            _load_as(monkeypatch, paths[name], machine)


def test_cross_compiled_v3_runs_here_and_matches(saved):
    paths, m, x = saved
    got = edgeopt.load(str(paths["v3"]))(x.numpy())
    np.testing.assert_allclose(got, m(x).detach().numpy(), rtol=1e-4, atol=1e-5)


def test_multi_level_artifact_picks_the_best_level(saved, monkeypatch):
    paths, m, x = saved
    ref = m(x).detach().numpy()
    for machine, level in [(ZEN4, "v4"), (ZEN5, "v4"), (SPR, "v4"), (ZEN3, "v3"), (ADL, "v3")]:
        loaded = _load_as(monkeypatch, paths["levels"], machine)
        assert loaded.info["level"] == level and loaded.info["levels"] == ["v4", "v3"], machine
        if not missing_features(loaded.level["cpu_features"], "x86_64", cpu_features.host_flags()):
            np.testing.assert_allclose(loaded(x.numpy()), ref, rtol=1e-4, atol=1e-5)  # runnable here: run it
    with pytest.raises(ArtifactError, match="avx2.*mcpu=x86-64-v3.*which this CPU lacks"):
        _load_as(monkeypatch, paths["levels"], IVB)


def test_a_level_can_be_forced_where_the_cpu_runs_it(saved, monkeypatch):
    paths, m, x = saved
    best = _load_as(monkeypatch, paths["levels"], ZEN4)
    v3 = edgeopt.load(str(paths["levels"]), level="v3")
    assert (best.info["level"], best.level["library"]) == ("v4", "levels/v4/kernels.so")
    assert (v3.info["level"], v3.level["library"]) == ("v3", "kernels.so")  # the baseline is the artifact's own
    with pytest.raises(ArtifactError, match="no CPU level 'v9'.*its levels: \\['v4', 'v3'\\]"):
        edgeopt.load(str(paths["levels"]), level="v9")
    monkeypatch.setattr(tvm_cpu, "host_flags", lambda: flags(ZEN3))
    with pytest.raises(ArtifactError, match="avx512.*which this CPU lacks"):
        edgeopt.load(str(paths["levels"]), level="v4")
    with pytest.raises(ArtifactError, match="has one level"):
        edgeopt.load(str(paths["v3"]), level="v3")


def test_isa_extensions_the_table_lacks_are_switched_off():
    """A CPU whose LLVM model has extensions the runtime cannot check (APX's extra registers, AVX10, AVX-VNNI-INT8)
    gets code without them: no artifact needs a feature that loading does not check."""
    import tvm
    from edgeopt.targets.x86 import unrecorded_isa

    for cpu, dropped in [("diamondrapids", "egpr"), ("arrowlake", "avxvnniint8")]:
        t = get_target("x86", cpu=cpu)
        assert dropped in tvm.target.codegen.llvm_get_cpu_features(tvm.target.Target({"kind": "llvm", "mcpu": cpu}))
        used = tvm.target.codegen.llvm_get_cpu_features(t.tvm_target())
        assert dropped not in used and not [f for f in used if unrecorded_isa(f)], cpu
    assert "avx512f" in get_target("x86", cpu="diamondrapids").features  # what it keeps: the recorded AVX-512


def test_multi_level_artifact_keeps_each_levels_ir(saved, monkeypatch):
    from edgeopt.runtime.artifact import read_artifact

    paths, _, _ = saved
    _, members = read_artifact(str(paths["levels"]))
    assert _load_as(monkeypatch, paths["levels"], ZEN3).ir == members["ir.txt"].decode()
    assert _load_as(monkeypatch, paths["levels"], ZEN4).ir == members["levels/v4/ir.txt"].decode()


def test_host_mattr_on_aarch64_follows_the_hwcaps():
    """On an ARM board the host target, too, uses what the kernel reports: a Pi 4 named as an A76 gets no dot
    product, fp16 or rdm; a Pi 5 (an A76) keeps its name's features."""
    assert host_mattr("cortex-a76", flags(A72), "aarch64") == ["-dotprod", "-fullfp16", "-rdm"]
    assert host_mattr("cortex-a76", flags(A76), "aarch64") == []
    assert host_mattr("cortex-a72", flags(A76), "aarch64") == ["+dotprod", "+fullfp16", "+rdm"]


def test_register_tiles_follow_the_targets_registers():
    """The schedules size register tiles from the target's vector registers (half of them accumulators, at most the
    measured best 8), never from the build machine's: a target with 8 registers gets smaller pixel runs."""
    from edgeopt.lower.schedule_cpu import _tile_shape

    assert get_target("x86-64-v3").vector_registers() == 16 and get_target("x86-64-v4").vector_registers() == 32
    blocked = {"layout": "NCHWc", "groups": 4}  # a depthwise-like blocked kernel: a run of output pixels unrolled
    ext = [1, 4, 14, 16, 8]
    assert _tile_shape("conv2d", blocked, ext, 8, accumulators=8)[2] == [(3, 8)]
    assert _tile_shape("conv2d", blocked, ext, 8, accumulators=4)[2] == [(3, 4)]


def test_targets_pass_their_registers_to_the_schedule(monkeypatch):
    import edgeopt.lower.schedule_cpu as schedule_cpu

    seen = []
    from edgeopt.lower.int8_dot import path_name

    monkeypatch.setattr(schedule_cpu, "schedule_kernel", lambda func, op, lanes, attrs, registers, dots, amx:
                        seen.append((lanes, registers, [path_name(d[0]) for d in dots], amx)) or (func, ""))
    for t in (get_target("x86-64-v3"), get_target("x86-64-v4"), get_target("x86", cpu="znver4"),
              get_target("x86", cpu="sapphirerapids")):
        t.schedule(None, "relu", t.vector_lanes(32))
    dots = ["vnni512", "vnni256", "avx512-ubsw", "avx2-ubsw", "avx2", "vnni512-dw"]
    assert seen == [(8, 16, ["avx2-ubsw", "avx2"], False),  # its int8 dot products: AVX-512 without VNNI has
                    (16, 32, ["avx512-ubsw", "avx2-ubsw", "avx2"], False),  # vpmaddubsw on zmm registers too
                    (16, 32, dots, False),  # and VBMI: depthwise convs on window taps
                    (16, 32, dots, True)]  # and AMX tiles
