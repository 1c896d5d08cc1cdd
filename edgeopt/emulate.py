"""Run saved ``target="arm"`` artifacts on an emulated aarch64 CPU (qemu-user) from an x86-64 machine.

    outputs = edgeopt.emulate.run("m.edgeopt", [x], cpu="cortex-a72")   # a list of numpy arrays

The emulated device has what a board needs and nothing more: the arm64 CPython 3.11, numpy, apache-tvm-ffi
and ``libtvm_runtime.so`` that ``scripts/arm_sysroot.sh`` builds (into ``build/arm64`` of this repository, or
the folder ``$EDGEOPT_ARM_SYSROOT`` names), and edgeopt's runtime files only (``RUNTIME_FILES``, copied by
``stage_runtime``): no torch, no TVM compiler. ``qemu-aarch64 -cpu <cpu>`` exposes exactly that CPU's
features, so the runtime's device check refuses an artifact built for a richer CPU, as a board would.

One emulated Python start costs seconds: ``run_many`` runs several artifacts in one process. Errors: a
missing qemu or sysroot is a ``TargetError``; an error the runtime raised on the device is re-raised here
with its own class (e.g. ``ArtifactError``); a crash or timeout is a ``DeviceError``.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from . import errors

QEMU = "qemu-aarch64"
#: edgeopt ARM cpu names that qemu 7.2 does not model -> the qemu model with the same features
QEMU_CPUS = {"cortex-a55": "cortex-a76"}
#: what the device needs of edgeopt (relative to the package): the runtime and the modules it imports
RUNTIME_FILES = ("__init__.py", "errors.py", "ir_dtypes.py", "runtime")
DEVICE_PYTHON = "usr/bin/python3.11"

_DEVICE_SCRIPT = """\
import json, sys
import numpy as np
import edgeopt.runtime
from edgeopt.errors import EdgeoptError
for job in json.load(open(sys.argv[1])):
    try:
        m = edgeopt.runtime.load(job["artifact"])
        x = np.load(job["inputs"])
        out = m(**{k: x[k] for k in x.files}) if job["by_name"] else m(*[x[f"x{i}"] for i in range(len(x.files))])
        np.savez(job["outputs"], *(out if isinstance(out, tuple) else (out,)))
        res = {"ok": True, "info": m.info}
    except EdgeoptError as e:
        res = {"ok": False, "error": type(e).__name__, "message": str(e)}
    json.dump(res, open(job["result"], "w"))
    print("finished", job["artifact"], flush=True)
"""


def sysroot_dir() -> Path:
    """Where the emulated device's files are: ``$EDGEOPT_ARM_SYSROOT``, else ``build/arm64`` in this repository."""
    env = os.environ.get("EDGEOPT_ARM_SYSROOT")
    return Path(env) if env else Path(__file__).resolve().parent.parent / "build" / "arm64"


def check_emulator(build: str | os.PathLike | None = None) -> Path:
    """The sysroot folder, after checking that qemu and the device files are there (``TargetError`` if not)."""
    if not shutil.which(QEMU):
        raise errors.TargetError(f"{QEMU} is not installed: `apt-get install qemu-user` "
                                 "(or run scripts/arm_sysroot.sh)")
    b = Path(build) if build is not None else sysroot_dir()
    need = [b / "sysroot" / DEVICE_PYTHON, b / "dev-site" / "tvm_ffi", b / "dev-site" / "numpy",
            b / "dev-tvmrt" / "libtvm_runtime.so"]
    missing = [str(p) for p in need if not p.exists()]
    if missing:
        raise errors.TargetError(f"the arm64 sysroot is incomplete (missing {', '.join(missing)}): build it with "
                                 f"scripts/arm_sysroot.sh {b}")
    return b


_GENERATE_SCRIPT = """\
import json, sys
import edgeopt.runtime.generate as g
from edgeopt.errors import EdgeoptError
job = json.load(open(sys.argv[1]))
try:
    lm = g.load_llm(job["artifact"])
    res = {"ok": True, "tokens": [lm.generate(p, job["max_new_tokens"], stop=job["stop"]) for p in job["prompts"]]}
except EdgeoptError as e:
    res = {"ok": False, "error": type(e).__name__, "message": str(e)}
json.dump(res, open(job["result"], "w"))
"""


def generate(artifact: str | os.PathLike, prompts: Sequence[Sequence[int]], max_new_tokens: int = 4,
             cpu: str = "cortex-a72", stop: Sequence[int] | None = None, build: str | os.PathLike | None = None,
             timeout: float = 1800) -> list[list[int]]:
    """Greedy generation with a saved language model (``edgeopt.llm.compile(..., target="arm")``) on emulated
    ``cpu``: the new token ids for each prompt (token ids), in one emulated process."""
    with _device(build) as (b, d):
        job = {"artifact": str(Path(artifact).resolve()), "prompts": [[int(t) for t in p] for p in prompts],
               "max_new_tokens": int(max_new_tokens), "stop": None if stop is None else [int(t) for t in stop],
               "result": str(d / "res.json")}
        proc = _run_script(b, d, cpu, _GENERATE_SCRIPT, job, timeout)
        if not (d / "res.json").exists():
            raise _crash(proc, cpu, job["artifact"])
        r = json.loads((d / "res.json").read_text())
        if not r["ok"]:
            raise getattr(errors, r["error"], errors.EdgeoptError)(f"on the emulated {cpu}: {r['message']}")
        return r["tokens"]


def stage_runtime(dest: str | os.PathLike) -> Path:
    """Copy edgeopt's device-side files (``RUNTIME_FILES``) into ``dest/edgeopt``; returns ``dest``.

    Put ``dest`` on the device's PYTHONPATH (this is also what to copy to a real board)."""
    src, pkg = Path(__file__).resolve().parent, Path(dest) / "edgeopt"
    pkg.mkdir(parents=True, exist_ok=True)
    for name in RUNTIME_FILES:
        if (src / name).is_dir():
            shutil.copytree(src / name, pkg / name, ignore=shutil.ignore_patterns("__pycache__"), dirs_exist_ok=True)
        else:
            shutil.copy2(src / name, pkg / name)
    return Path(dest)


def run(artifact: str | os.PathLike, inputs, cpu: str = "cortex-a72", **kwargs) -> list[np.ndarray]:
    """Run one saved artifact on emulated ``cpu`` with ``inputs`` (a sequence in input order, or a dict by
    input name; numpy arrays or torch tensors); returns its outputs. See ``run_many`` for the options."""
    return run_many([(artifact, inputs)], cpu, **kwargs)[0]


def run_many(jobs: Sequence[tuple], cpu: str = "cortex-a72", build: str | os.PathLike | None = None,
             timeout: float = 600, infos: list | None = None) -> list[list[np.ndarray]]:
    """Run ``(artifact, inputs)`` jobs in order in ONE emulated Python process on ``cpu``; their outputs.

    ``build`` is the sysroot folder (default ``sysroot_dir()``); ``infos``, a list, receives each job's
    ``Model.info`` on the device (the level it picked, its thread pool). The first failing job raises (see the module
    docstring); a crash stops every job after it, so run an artifact expected to crash on its own."""
    with _device(build) as (b, d):
        specs = []
        for i, (artifact, inputs) in enumerate(jobs):
            by_name = isinstance(inputs, Mapping)
            arrays = {str(k): _numpy(v) for k, v in inputs.items()} if by_name else {
                f"x{j}": _numpy(v) for j, v in enumerate(inputs)}
            np.savez(d / f"in{i}.npz", **arrays)
            specs.append({"artifact": str(Path(artifact).resolve()), "inputs": str(d / f"in{i}.npz"),
                          "by_name": by_name, "outputs": str(d / f"out{i}.npz"), "result": str(d / f"res{i}.json")})
        proc = _run_script(b, d, cpu, _DEVICE_SCRIPT, specs, timeout)
        results = []
        for spec in specs:
            res = Path(spec["result"])
            if not res.exists():
                raise _crash(proc, cpu, spec["artifact"])
            r = json.loads(res.read_text())
            if not r["ok"]:
                cls = getattr(errors, r["error"], errors.EdgeoptError)
                raise cls(f"on the emulated {cpu} ({spec['artifact']}): {r['message']}")
            with np.load(spec["outputs"]) as z:
                results.append([z[f"arr_{k}"] for k in range(len(z.files))])
            if infos is not None:
                infos.append(r.get("info"))
        return results


@contextlib.contextmanager
def _device(build):
    """(sysroot folder, a scratch folder with edgeopt's runtime staged in ``py/``), the scratch removed after."""
    b = check_emulator(build)
    with tempfile.TemporaryDirectory(prefix="edgeopt-emu-") as d:
        stage_runtime(Path(d) / "py")
        yield b, Path(d)


def _run_script(b: Path, d: Path, cpu: str, script: str, job, timeout: float) -> subprocess.CompletedProcess:
    """Run ``script`` on the emulated ``cpu`` with the JSON file of ``job`` as its argument."""
    (d / "job.json").write_text(json.dumps(job))
    (d / "device.py").write_text(script)
    return _qemu(b, cpu, [str(d / "device.py"), str(d / "job.json")], d / "py", timeout)


def _numpy(x) -> np.ndarray:
    return x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)


def _qemu(b: Path, cpu: str, args: list[str], pythonpath: Path, timeout: float) -> subprocess.CompletedProcess:
    """The device Python under ``qemu-aarch64 -cpu``, with a clean environment and no core files."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8", "PYTHONNOUSERSITE": "1",
           "PYTHONPATH": f"{pythonpath}:{b / 'dev-site'}",
           "EDGEOPT_TVM_RUNTIME": str(b / "dev-tvmrt" / "libtvm_runtime.so")}
    env.update({k: os.environ[k] for k in ("TVM_NUM_THREADS", "OMP_NUM_THREADS") if k in os.environ})
    cmd = [QEMU, "-cpu", QEMU_CPUS.get(cpu, cpu), "-L", str(b / "sysroot"), str(b / "sysroot" / DEVICE_PYTHON), *args]
    try:
        return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout,
                              preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_CORE, (0, 0)))
    except subprocess.TimeoutExpired:
        raise errors.DeviceError(f"the emulated {cpu} run did not finish within {timeout:.0f} s") from None


def _crash(proc: subprocess.CompletedProcess, cpu: str, artifact: str) -> errors.DeviceError:
    rc = proc.returncode
    what = f"died with signal {-rc}" if rc < 0 else f"exited with status {rc}"
    hint = (" (an instruction this CPU lacks: was the artifact compiled for another cpu?)"
            if rc == -signal.SIGILL else "")
    return errors.DeviceError(f"the emulated {cpu} process {what}{hint} before finishing {artifact}; "
                              f"stderr: {proc.stderr[-2000:]}")
