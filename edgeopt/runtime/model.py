"""The runtime's model: load a verified artifact, check inputs, run the plan. Imports no torch, no compiler.

All activations live in one arena whose layout the compiler planned (``edgeopt.memory``). Each thread
that calls the model gets its own arena (allocated once, on its first call), so calls reuse it and two
threads can run the same model at the same time.
"""

from __future__ import annotations

import io
import threading

import numpy as np

from ..errors import ArtifactError, InputError
from ..ir_dtypes import NP_DTYPES, fits
from . import safetensors_io, sparse_weights, strict_json, tvm_cpu
from .artifact import hash_only, read_artifact
from .backends import get_backend
from .plan_check import check_plan

SUPPORTED_TVM = "0.27"


class Model:
    """A loaded artifact. Call it with numpy arrays (or anything ``np.asarray`` takes)."""

    def __init__(self, source: str | bytes, what: str = "artifact", *, trusted_keys=None, sha256: str | None = None,
                 level: str | None = None):
        """``trusted_keys``, ``sha256``, ``level``: see ``load``."""

        def read_weights(stream):  # straight into 64-byte-aligned arrays: the bytes are never held twice
            return safetensors_io.read_into(stream, tvm_cpu.aligned_empty)

        def readers(manifest: dict) -> dict:  # called with the checked manifest, before any member is read
            target = manifest["target"]
            #: everything device-specific goes through the backend (``edgeopt.runtime.backends``)
            self._backend = backend = get_backend(target.get("runtime"), what)
            if backend.uses_tvm:
                check_tvm_version(manifest, what, "this runtime")
            #: which of the artifact's CPU levels runs here (the artifact itself when it has one): its members
            self.level = backend.pick_level(target, level, what)
            used = {self.level.get("plan", "plan.json"), self.level.get("library", "kernels.so"),
                    _ir_member(self.level)}
            for f in manifest.get("functions", {}).values():  # another entry point: a language model's prefill
                used.update(f[k] for k in ("plan", "library", "ir") if k in f)
            used.add(_tokenizer_member(manifest))  # text, for edgeopt.llm's runtime
            weights = {"weights.safetensors", sparse_weights.MEMBER, self.level.get("weights", "weights.safetensors")}
            # what this runtime does not use (another CPU level's plan, library, weights) is hashed, never kept
            return {name: read_weights if name in weights else hash_only
                    for name in manifest["members"] if name not in used and not backend.reads(name)}

        manifest, members = read_artifact(source, what, consumers=readers, trusted_keys=trusted_keys,
                                          sha256=sha256)  # the manifest's schema checked
        self.manifest = manifest
        self.info = _info(manifest["target"], self.level)
        try:
            weights = sparse_weights.decode(members["weights.safetensors"],  # already in 64-byte-aligned arrays
                                            members.get(sparse_weights.MEMBER, {}),
                                            manifest.get("sparse_weights", {}), tvm_cpu.aligned_empty, what)
            if self.level.get("weights"):  # a CPU level's own weights (those that differ from the baseline's)
                weights = {**weights, **members[self.level["weights"]]}
        except (KeyError, ValueError, OverflowError) as e:
            raise ArtifactError(f"{what}: plan or weights unreadable ({e})") from None
        self.plan = _checked_plan(members, self.level.get("plan", "plan.json"), manifest, weights, what)
        self.report = manifest.get("report", {})
        self.ir = (members.get(_ir_member(self.level)) or b"").decode(errors="replace")  # for people only
        self._bind_plan(self.plan, self.level, members, weights, what)
        self.functions = {name: self._function(name, spec, members, weights, what)
                          for name, spec in manifest.get("functions", {}).items()}
        tokenizer = _tokenizer_member(manifest)
        self.extras = {tokenizer: members[tokenizer]} if tokenizer in members else {}
        del members, weights
        self._state_local = threading.local()  # each thread's states, shared by the artifact's functions
        for f in self.functions.values():
            f._state_local = self._state_local

    def _bind_plan(self, plan: dict, level: dict, members: dict, weights: dict, what: str) -> None:
        """Load the kernels ``plan`` runs (from ``level``'s library) and take its weights."""
        self.plan = plan
        self._lib = self._backend.load(members, self.manifest, level, plan, what) if plan["steps"] else None
        if self._lib is not None:
            self.info.update(self._backend.start_threads(self._lib))
        self._funcs = {}
        for step in plan["steps"]:
            if step["kernel"] not in self._funcs:
                try:
                    self._funcs[step["kernel"]] = self._lib[step["kernel"]]
                except (AttributeError, KeyError, TypeError, RuntimeError):
                    raise ArtifactError(f"{what}: the plan runs kernel {step['kernel']!r}, which its kernel library "
                                        "does not hold (damaged)") from None
        # every planned constant is in ``weights`` with its shape and dtype (check_plan)
        self._consts = {name: weights[name] for name, info in plan["values"].items() if info["kind"] == "const"}
        self._local = threading.local()
        self.inputs = plan["inputs"]
        self.outputs = plan["outputs"]
        self._input_names = [i["name"] for i in self.inputs]

    def _function(self, name: str, spec: dict, members: dict, weights: dict, what: str) -> Model:
        """Another function of the artifact (a language model's prefill): the same weights and states, its own plan
        and kernels."""
        f = object.__new__(Model)
        f.__dict__.update({k: v for k, v in self.__dict__.items() if k != "functions"})
        f.functions = {}
        f.info = {k: v for k, v in self.info.items() if k not in ("thread_pool", "threads")}  # its own library's
        plan = _checked_plan(members, spec["plan"], spec, weights, f"{what} (function {name!r})")
        f.ir = (members.get(spec.get("ir", "")) or b"").decode(errors="replace")
        f._bind_plan(plan, {"library": spec["library"]}, members, weights, what)
        return f

    # -- state ---------------------------------------------------------------------------------------
    def state(self, name: str, info: dict) -> np.ndarray:
        """This thread's state ``name`` (a KV cache): zeros at first, then what the calls left in it."""
        states = self._states()
        arr = states.get(name)
        if arr is None:
            try:
                arr = states[name] = tvm_cpu.aligned_empty(info["shape"], NP_DTYPES[info["dtype"]])
            except MemoryError:
                raise ArtifactError(f"state {name!r} ({info['dtype']}{info['shape']}) does not fit in this machine's "
                                    "memory") from None
            arr[...] = 0
        elif list(arr.shape) != list(info["shape"]) or arr.dtype != NP_DTYPES[info["dtype"]]:
            raise ArtifactError(f"state {name!r} is {arr.dtype}{list(arr.shape)} in one function of the artifact and "
                                f"{info['dtype']}{info['shape']} in another (damaged)")
        return arr

    def _states(self) -> dict:
        states = getattr(self._state_local, "states", None)
        if states is None:
            states = self._state_local.states = {}
        return states

    def reset_state(self) -> None:
        """Zero this thread's states (a language model's KV cache): the next call starts a new sequence."""
        for arr in self._states().values():
            arr[...] = 0

    # -- execution ----------------------------------------------------------------------------------
    def _context(self):
        ctx = getattr(self._local, "ctx", None)
        if ctx is None:
            ctx = self._local.ctx = self._backend.context(self)
        return ctx

    def __call__(self, *args, **kwargs):
        """Run on inputs (positional in order, or by name); returns an array, or a tuple if several.

        Each input must have the compiled shape and dtype; an integer input also takes an array of another integer
        dtype whose values fit (int64 token ids for a model whose device holds them as int32)."""
        outs = self._context().run(self._bind(args, kwargs))
        return outs[0] if len(outs) == 1 else outs

    run = __call__

    def profile(self, *args, repeat: int = 20, **kwargs) -> list[dict]:
        """Time every step of the plan on these inputs: one dict per step (``step``, ``kernel``, ``median_ms``,
        ``share`` of the summed medians), slowest first. The model runs ``repeat`` whole calls (after one untimed),
        each step timed inside them: every step reads what a real call gives it, even where the memory plan has
        reused its input's bytes since, and finds the caches as a real call leaves them."""
        import statistics

        if not self._backend.profiles:
            raise ArtifactError("profile() times CPU kernels only (GPU launches are asynchronous): time whole calls")
        arrays = self._bind(args, kwargs)
        ctx = self._context()
        ctx.run(arrays)
        times = ctx.run_timed(arrays, repeat)
        rows = [{"step": i, "kernel": self.plan["steps"][i]["kernel"], "median_ms": statistics.median(t) * 1e3}
                for i, t in enumerate(times)]
        total = sum(r["median_ms"] for r in rows) or 1.0
        for r in rows:
            r["share"] = r["median_ms"] / total
        return sorted(rows, key=lambda r: -r["median_ms"])

    def intermediates(self, *args, names=None, **kwargs) -> dict[str, np.ndarray]:
        """The outputs of the plan's kernels on these inputs, by IR value name (``names``: only those), each copied
        right after its kernel ran: what the compiled code really computed, layer by layer (``edgeopt compare``)."""
        if not self._backend.profiles:
            raise ArtifactError("intermediates() reads CPU kernels' outputs; GPU artifacts give their outputs only")
        steps = self.plan["steps"]
        want = set(names) if names is not None else {a for s in steps
                                                     for a in s["args"][len(s["args"]) - s["num_outputs"]:]}
        return self._context().run_capturing(self._bind(args, kwargs), steps, want)

    def _bind(self, args, kwargs) -> list[np.ndarray]:
        names = self._input_names
        if len(args) > len(names):
            raise InputError(f"the model takes {len(names)} input(s) ({', '.join(names)}), got {len(args)}")
        given = dict(zip(names, args))
        for k, v in kwargs.items():
            if k not in names:
                raise InputError(f"unknown input {k!r}; the model's inputs are: {', '.join(names)}")
            if k in given:
                raise InputError(f"input {k!r} given twice")
            given[k] = v
        missing = [n for n in names if n not in given]
        if missing:
            raise InputError(f"missing input(s): {', '.join(missing)}")
        out = []
        for spec in self.inputs:
            want_dt = NP_DTYPES[spec["dtype"]]
            x = _as_array(given[spec["name"]], spec["name"], want_dt)
            if tuple(x.shape) != tuple(spec["shape"]):
                raise InputError(f"input {spec['name']!r}: expected shape {tuple(spec['shape'])}, got "
                                 f"{tuple(x.shape)}. The model was compiled for that static shape; "
                                 "recompile with example inputs of the new shape.")
            if x.dtype != want_dt and x.dtype.kind in "iu" and want_dt.kind in "iu":
                if not fits(x, want_dt):
                    raise InputError(f"input {spec['name']!r}: expected dtype {want_dt}, got {x.dtype} with values "
                                     f"outside {want_dt}'s range [{x.min()}, {x.max()}]")
                x = x.astype(want_dt)  # e.g. int64 token ids for a model whose device has 32-bit integers only
            if x.dtype != want_dt:
                raise InputError(f"input {spec['name']!r}: expected dtype {want_dt}, got {x.dtype} "
                                 f"(convert it with .astype(np.{want_dt}))")
            out.append(x)
        return out


def _checked_plan(members: dict, member: str, io: dict, weights: dict, what: str) -> dict:
    """The plan in ``member``, checked whole (before any library is loaded or any kernel runs) and against the
    inputs and outputs ``io`` (the manifest, or its entry for a function) lists."""
    try:
        plan = strict_json.loads(members[member])
    except (KeyError, ValueError) as e:
        raise ArtifactError(f"{what}: plan or weights unreadable ({e})") from None
    check_plan(plan, what, weights)
    if [plan["inputs"], plan["outputs"]] != [io["inputs"], io["outputs"]]:
        raise ArtifactError(f"{what}: the plan's inputs or outputs differ from the manifest's (damaged)")
    return plan


def _tokenizer_member(manifest: dict) -> str | None:
    """The member holding a language model's tokenizer (``edgeopt.llm.compile(..., tokenizer=)``), if any."""
    llm = manifest.get("llm")
    name = llm.get("tokenizer") if isinstance(llm, dict) else None
    return name if isinstance(name, str) else None


def _ir_member(level: dict) -> str:
    """The member with the IR of the level that runs here (the artifact's own ``ir.txt`` for one level)."""
    ir = level.get("ir", "ir.txt")
    return ir if isinstance(ir, str) else "ir.txt"


def _info(target: dict, level: dict) -> dict:
    """What runs here: the target, and for a multi-level CPU artifact the level picked and the levels it has."""
    info = {"target": target.get("name"), "runtime": target.get("runtime")}
    if "levels" in target:
        info.update(level=level.get("level"), mcpu=level.get("mcpu"),
                    levels=[lv.get("level") for lv in target["levels"]])
    elif target.get("mcpu"):
        info["mcpu"] = target["mcpu"]
    return info


def _as_array(x, name: str, want: np.dtype) -> np.ndarray:
    """``x`` (a torch tensor, an array, nested lists) as a numpy array of numbers or bools; ``InputError`` saying the
    dtype expected when it cannot be one (a torch dtype numpy lacks, e.g. bfloat16; ragged lists; objects, text)."""
    if hasattr(x, "detach") and hasattr(x, "numpy"):  # a torch tensor (the runtime never imports torch)
        try:
            return x.detach().cpu().numpy()
        except (TypeError, RuntimeError, ValueError) as e:
            raise InputError(f"input {name!r}: expected dtype {want}, got a torch tensor of {x.dtype}, which numpy "
                             f"cannot hold ({e}); convert it with .to(torch.{want})") from None
    try:
        arr = np.asarray(x)
    except (TypeError, ValueError, RuntimeError, OverflowError) as e:
        raise InputError(f"input {name!r}: expected an array of dtype {want}, got a {type(x).__name__} that is not "
                         f"one ({str(e)[:200]})") from None
    if arr.dtype.kind not in "biuf":
        raise InputError(f"input {name!r}: expected an array of dtype {want}, got {type(x).__name__} {str(x)[:40]!r}, "
                         f"which is an array of {arr.dtype}")
    return arr


def check_tvm_version(manifest: dict, what: str, user: str) -> None:
    """``ArtifactError`` unless the artifact's kernels were built by the TVM version ``user`` runs."""
    tvm_version = str(manifest.get("tvm_version", ""))
    if not tvm_version.startswith(SUPPORTED_TVM):
        raise ArtifactError(f"{what} was compiled with TVM {tvm_version}; {user} runs TVM {SUPPORTED_TVM}.x "
                            "kernels: recompile the model")


def artifact_weights(manifest: dict, members: dict[str, bytes], level: dict, what: str) -> dict[str, np.ndarray]:
    """The weights a level of an artifact runs with, from its members' bytes: the dense ones, the sparse ones decoded,
    and the level's own (those that differ from the baseline's)."""
    weights = safetensors_io.read_into(io.BytesIO(members["weights.safetensors"]), np.empty)
    if sparse_weights.MEMBER in members:
        weights = sparse_weights.decode(
            weights, safetensors_io.read_into(io.BytesIO(members[sparse_weights.MEMBER]), np.empty),
            manifest.get("sparse_weights", {}), np.empty, what)
    if level.get("weights"):
        weights.update(safetensors_io.read_into(io.BytesIO(members[level["weights"]]), np.empty))
    return weights


def read_cpu_artifact(source, what: str, user: str, *, trusted_keys=None, sha256: str | None = None,
                      level: str | None = None) -> tuple[dict, dict, dict[str, np.ndarray], bytes]:
    """(manifest, plan, weights, kernel library bytes) of a verified CPU artifact, for the runners that do not load it
    here (``edgeopt.remote``, ``edgeopt.cxx``; ``user`` names them in errors): manifest and sha256 checked, TVM
    version checked, every planned constant present. A CUDA artifact is an ``ArtifactError``. ``trusted_keys``,
    ``sha256``: as for ``load``. ``level``: which level of a multi-level artifact (default: the least demanding one,
    which runs wherever the artifact runs); this machine's CPU is not checked, the runner's device is elsewhere."""
    manifest, members = read_artifact(source, what, trusted_keys=trusted_keys, sha256=sha256)
    check_tvm_version(manifest, what, user)
    if manifest["target"].get("runtime") != "cpu":
        raise ArtifactError(f"{user} runs CPU artifacts (targets 'host' and 'arm'); {what} is for "
                            f"{manifest['target'].get('name')!r}")
    chosen = tvm_cpu.named_level(manifest["target"], level)
    try:
        plan = strict_json.loads(members[chosen.get("plan", "plan.json")])
        weights = artifact_weights(manifest, members, chosen, what)
        lib = members[chosen.get("library", "kernels.so")]
    except (KeyError, ValueError, OverflowError) as e:
        raise ArtifactError(f"{what}: plan, weights or kernel library unreadable ({e})") from None
    check_plan(plan, what, weights)  # types, bytes, steps and lifetimes, every weight present: safe for any runner
    return manifest, plan, weights, lib


def load(path: str, *, trusted_keys=None, sha256: str | None = None, level: str | None = None) -> Model:
    """Load an artifact written by ``CompiledModel.save``; verifies hashes, versions and the device.

    Loading runs the artifact's native code (its kernel library is dlopen'ed): load only artifacts you trust. The
    hashes inside catch accidental damage, not deliberate changes; for those give ``trusted_keys`` (Ed25519 public
    keys: PEM text or bytes, paths to PEM files, or 32 raw bytes; the artifact must be signed by one of them, see
    ``edgeopt.sign``) or ``sha256`` (the whole file's hex digest, checked before anything in it is read). Either is
    checked before any library is loaded; a failure is an ``ArtifactError``, as is every damaged artifact.

    A multi-level CPU artifact (``target="x86-64", levels=[...]``) runs the best level this CPU has; ``level`` picks
    one (e.g. to compare them), an ``ArtifactError`` if the artifact lacks it or this CPU cannot run it."""
    return Model(path, what=f"artifact {path!r}", trusted_keys=trusted_keys, sha256=sha256, level=level)
