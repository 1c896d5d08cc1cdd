"""Fuzz the runtimes with randomly mutated artifacts (seeded; ``tests.fuzz_mutations``), every member's sha256
recomputed as an attacker would: each must be refused cleanly or run and give exactly what its plan means.

* **plan.json** (1000 mutations) through ``edgeopt.load`` and a call; 200 of them also through ``export_flat`` and
  the C++ runner;
* **manifest.json** (400 mutations) through ``edgeopt.load``;
* **plan.txt** (500 mutations of the flat form) through the C++ runner alone, which checks it on its own.

Refused cleanly: ``ArtifactError`` (``InputError`` at the call, when the plan now declares other inputs); the runner
exits 2 with a message. Ran: the outputs must equal bit for bit those of the same plan run with every tensor in a
buffer of its own (``run_isolated``): sharing the arena must never show. They must also equal the unmutated
answer: the Done-when of the issue, with one exception no check of a plan can close. A mutation that leaves every
tensor's record (``values``) as it was and changes only the program over them (arguments of one shape and dtype
swapped, a step's argument or an output pointed at another such tensor, steps reordered) can make another
well-formed program: the plan checks (each buffer written once, before it is read, within its lifetime) let it run,
and it must give exactly its own answer (the isolated run), which may differ from the unmutated one. Which layout
a host packs weights in decides whether a seed hits one (an AVX2-only host packs the tiny model's two weights in one
shape). Only a signature, ``edgeopt.sign``, rules these out.

A kernel name the library lacks, or a kernel given arguments of another shape or count than it was compiled for
(tvm-ffi checks them before the kernel touches memory), is an ``ArtifactError`` too (``Model`` turns tvm-ffi's
refusal into one).
"""

from __future__ import annotations

import random
import shutil
import subprocess
import traceback

import numpy as np
import pytest

import edgeopt
from edgeopt import cxx
from edgeopt.errors import ArtifactError, InputError
from edgeopt.ir_dtypes import NP_DTYPES
from edgeopt.runtime import tvm_cpu
from edgeopt.runtime.plan_check import check_plan
from tests.artifact_tools import members_of, repack, run_isolated, same_bytes, tiny_model
from tests.conftest import as_list
from tests.fuzz_mutations import mutate_flat, mutate_manifest, mutate_plan

pytestmark = pytest.mark.slow
SEED = 20_520
N_PLAN, N_VIA_FLAT, N_MANIFEST, N_FLAT = 1000, 200, 400, 500


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """The tiny model's artifact, plan, manifest, input and output, and a folder with the C++ runner."""
    model, inputs = tiny_model()
    compiled = edgeopt.compile(model, inputs)
    x = inputs[0].numpy()
    manifest, _ = members_of(compiled._artifact)
    d = tmp_path_factory.mktemp("fuzz")
    runner = None
    if shutil.which("g++"):
        runner = cxx.build_runner(d / "edgeopt_run", target="host")
        for lib_dir in cxx._runtime_files("host")[1]:
            for name in ("libtvm_runtime.so", "libtvm_ffi.so"):
                if (lib_dir / name).exists():
                    shutil.copy(lib_dir / name, d)
    return {"artifact": compiled._artifact, "plan": compiled.plan, "manifest": manifest, "x": x,
            "want": as_list(compiled(x)), "runner": runner, "dir": d}


class Tally:
    """Outcomes by kind, with the first mutation of each kind; ``bad`` collects the failures."""

    def __init__(self):
        self.counts: dict[str, int] = {}
        self.example: dict[str, str] = {}
        self.bad: list[str] = []

    def add(self, kind: str, what: str) -> None:
        self.counts[kind] = self.counts.get(kind, 0) + 1
        self.example.setdefault(kind, what)

    def fail(self, what: str, e: BaseException | None = None) -> None:
        where = ""
        if e is not None:
            frames = [f for f in traceback.extract_tb(e.__traceback__) if "/edgeopt/" in f.filename]
            where = f" at {frames[-1].filename.split('/edgeopt/')[-1]}:{frames[-1].lineno}" if frames else ""
            what = f"{what}: {type(e).__name__}{where}: {str(e)[:200]}"
        self.add("FAILED", what)
        self.bad.append(what)


def run_python(data: bytes, path, x, want, tally: Tally, what: str, values: dict | None = None):
    """Load and call ``data`` in the Python runtime, judge the outcome; returns the outputs when it ran. ``values``:
    the unmutated plan's tensor records; a plan with exactly these may be a rewired program with its own answer."""
    path.write_bytes(data)
    try:
        m = edgeopt.load(str(path))
    except ArtifactError:
        return tally.add("refused at load", what)
    except Exception as e:
        return tally.fail(what, e)
    try:
        got = as_list(m(x))
    except (ArtifactError, InputError):
        return tally.add("refused at call", what)
    except Exception as e:
        return tally.fail(what, e)
    if not same_bytes(got, run_isolated(m, [x])):
        return tally.fail(f"{what}: ran, and differs from the same plan without a shared arena")
    if not same_bytes(got, want):
        if values is not None and m.plan["values"] == values:
            tally.add("ran: a rewired program's own answer", what)
            return got
        return tally.fail(f"{what}: ran, and gives another answer than the unmutated artifact")
    tally.add("ran: the unmutated answer", what)
    return got


def run_flat(runner, flat, x, tally: Tally, what: str):
    """Run the C++ runner on ``flat``; judge its exit; returns its outputs' raw bytes when it ran."""
    for f in flat.glob("out_*.bin"):
        f.unlink()
    x.tofile(flat / "x.bin")
    try:
        proc = subprocess.run([str(runner), str(flat), str(flat / "out_"), str(flat / "x.bin")], capture_output=True,
                              text=True, errors="replace", timeout=60)
    except subprocess.TimeoutExpired:
        return tally.fail(f"{what}: the runner hung")
    if proc.returncode == 2 and proc.stderr.startswith("edgeopt_run: "):
        return tally.add("runner refused", what)
    if proc.returncode != 0:
        return tally.fail(f"{what}: the runner exited {proc.returncode}: {proc.stderr[-300:]}")
    tally.add("runner ran", what)
    return sorted(flat.glob("out_*.bin"))


def test_mutated_plans_are_refused_or_run_right(base, tmp_path):
    rng = random.Random(SEED)
    py, flat = Tally(), Tally()
    for i in range(N_PLAN):
        plan, what = mutate_plan(base["plan"], rng)
        data = repack(base["artifact"], plan)
        got = run_python(data, tmp_path / "m.edgeopt", base["x"], base["want"], py, f"plan #{i}: {what}",
                         values=base["plan"]["values"])
        if i >= N_VIA_FLAT or base["runner"] is None:
            continue
        out = tmp_path / "flat"
        shutil.rmtree(out, ignore_errors=True)
        try:
            cxx.export_flat(tmp_path / "m.edgeopt", out)
        except ArtifactError:
            flat.add("export refused", what)
            continue
        except Exception as e:
            flat.fail(f"plan #{i} export: {what}", e)
            continue
        ran = run_flat(base["runner"], out, base["x"], flat, f"plan #{i}: {what}")
        if ran and got is not None and [f.read_bytes() for f in ran] != [g.tobytes() for g in got]:
            flat.fail(f"plan #{i}: {what}: the runner's outputs differ from the Python runtime's")
    print("python:", py.counts, "\nexport + runner:", flat.counts, "\nexamples:", py.example)
    assert not py.bad and not flat.bad, "\n".join(py.bad[:20] + flat.bad[:20])
    assert py.counts.get("refused at load", 0) > N_PLAN // 2 and py.counts.get("ran: the unmutated answer", 0) > 10
    assert flat.counts.get("runner ran", 0) > 5 or base["runner"] is None


def test_mutated_manifests_are_refused_or_run_right(base, tmp_path):
    rng = random.Random(SEED + 1)
    tally = Tally()
    for i in range(N_MANIFEST):
        manifest, what = mutate_manifest(base["manifest"], rng)
        data = repack(base["artifact"], manifest=manifest, rehash=False)
        run_python(data, tmp_path / "m.edgeopt", base["x"], base["want"], tally, f"manifest #{i}: {what}")
    print("manifest:", tally.counts)
    assert not tally.bad, "\n".join(tally.bad[:30])
    assert tally.counts.get("refused at load", 0) > N_MANIFEST // 3


def _flat_as_plan(text: str, weights_bin: bytes) -> tuple[dict, dict]:
    """(plan, weights) a plan.txt the runner accepted stands for (so it is well formed)."""
    values, steps, inputs, outputs, weights, arena = {}, [], [], [], {}, 0
    for f in (ln.split() for ln in text.splitlines()[1:]):
        if not f:
            continue
        if f[0] == "arena":
            arena = int(f[1])
        elif f[0] == "value" and f[2] == "const":
            shape, dt = [int(d) for d in f[6 : 6 + int(f[5])]], NP_DTYPES[f[3]]
            n = int(np.prod(shape, dtype=np.int64))
            weights[f[1]] = tvm_cpu.aligned_empty(shape, dt)  # writable and aligned, as the kernels need
            weights[f[1]][...] = np.frombuffer(weights_bin, dt, n, int(f[4])).reshape(shape)
            values[f[1]] = {"shape": shape, "dtype": f[3], "kind": "const"}
        elif f[0] == "value":
            values[f[1]] = {"shape": [int(d) for d in f[8 : 8 + int(f[7])]], "dtype": f[3], "kind": f[2],
                            "offset": int(f[4]), "live": [int(f[5]), int(f[6])]}
        elif f[0] == "view":
            values[f[1]] = {"shape": [int(d) for d in f[5 : 5 + int(f[4])]], "dtype": f[3], "kind": "view", "of": f[2]}
        elif f[0] == "step":
            argc = int(f[3])
            pairs = f[5 + argc :]
            steps.append({"kernel": f[1], "num_outputs": int(f[2]), "args": f[4 : 4 + argc],
                          "inplace": [pairs[k : k + 2] for k in range(0, len(pairs), 2)]})
        else:
            (inputs if f[0] == "input" else outputs).append(f[1])
    io = [[{"name": n, "shape": values[n]["shape"], "dtype": values[n]["dtype"]} for n in names]
          for names in (inputs, outputs)]
    return {"inputs": io[0], "outputs": io[1], "values": values, "steps": steps, "arena_bytes": arena}, weights


def test_mutated_flat_plans_are_refused_or_run_right(base, tmp_path):
    """The runner checks plan.txt on its own: what it accepts, the Python check accepts too, and its outputs are
    the plan's meaning (every tensor in its own buffer, the same kernels)."""
    if base["runner"] is None:
        pytest.skip("g++ is not installed")
    (tmp_path / "m.edgeopt").write_bytes(base["artifact"])
    good = cxx.export_flat(tmp_path / "m.edgeopt", tmp_path / "good")
    text, weights_bin = (good / "plan.txt").read_text(), (good / "weights.bin").read_bytes()
    model = edgeopt.load(str(tmp_path / "m.edgeopt"))
    rng, tally = random.Random(SEED + 2), Tally()
    for i in range(N_FLAT):
        mutated, what = mutate_flat(text, rng)
        (good / "plan.txt").write_text(mutated)
        ran = run_flat(base["runner"], good, base["x"], tally, f"plan.txt #{i}: {what}")
        if not ran:
            continue
        plan, weights = _flat_as_plan(mutated, weights_bin)
        try:
            check_plan(plan, "flat", weights)
        except ArtifactError as e:
            tally.fail(f"plan.txt #{i}: {what}: the runner ran a plan the Python check refuses: {e}")
            continue
        model.plan, model._consts = plan, {**model._consts, **weights}
        want = [g.tobytes() for g in run_isolated(model, [base["x"]])]
        if [f.read_bytes() for f in ran] != want:
            tally.fail(f"plan.txt #{i}: {what}: the runner's outputs differ from the plan's meaning")
    print("plan.txt:", tally.counts)
    assert not tally.bad, "\n".join(tally.bad[:30])
    assert tally.counts.get("runner refused", 0) > N_FLAT // 2 and tally.counts.get("runner ran", 0) > 5
