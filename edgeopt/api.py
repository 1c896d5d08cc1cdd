"""The compiler's public face: ``compile`` a torch model into a ``CompiledModel``."""

from __future__ import annotations

import os
import platform
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from . import __version__
from .errors import ArtifactError, TargetError
from .ir_dtypes import NP_DTYPES
from .progress import advance, expect, task
from .runtime.artifact import write_artifact
from .runtime.devices import check_device
from .runtime.model import Model
from .runtime.safetensors_io import dumps as safetensors_dumps


class CompiledModel:
    """A compiled model: call it, read its IR and report, save it as one artifact file.

    An artifact for a device this machine cannot run (e.g. ``target="arm"`` on x86-64) is never loaded here:
    ``save``, ``report``, ``ir`` and ``plan`` work, and calling it raises ``TargetError`` saying where to run it.
    """

    def __init__(self, artifact: bytes, graph, report: dict, target: dict | None = None,
                 plan_json: bytes | None = None, quantization=None):
        self._artifact = artifact
        self._quantization = quantization  # the quantization pass, with the graphs before and after it
        self._graph, self._ir_text = graph, None
        self.report = report
        self._not_here = _cannot_run_here(target) if target is not None else None
        self._model = None if self._not_here else Model(artifact, what="compiled artifact")
        self._plan_json, self._plan = plan_json, None

    @classmethod
    def from_cache(cls, artifact: bytes, ir_text: str, t0: float) -> CompiledModel:
        """A compile served whole by the model cache (``edgeopt.cache.models``): the artifact as first compiled;
        ``report`` is its report with this compile's time (since ``t0``, a ``perf_counter``) and
        ``report["cache"]["model"] == "hit"``; ``graph`` is rebuilt from the IR text and the artifact's weights when
        first read."""
        import io
        import json
        import zipfile

        with zipfile.ZipFile(io.BytesIO(artifact)) as z:  # the store checked the bytes' sha256; loading checks all
            manifest, plan_json = json.loads(z.read("manifest.json")), z.read("plan.json")
        report = {**manifest["report"], "cache": {"model": "hit", "kernels_reused": 0, "kernels_compiled": 0}}
        cm = cls(artifact, None, report, manifest["target"], plan_json)
        cm._ir_text = ir_text
        report["compile_seconds"] = round(time.perf_counter() - t0, 4)
        return cm

    @property
    def graph(self):
        """The IR graph after all passes."""
        if self._graph is None:
            from .cache.models import graph_from_artifact

            self._graph = graph_from_artifact(self._artifact, self._ir_text)
        return self._graph

    @graph.setter
    def graph(self, g) -> None:
        self._graph = g

    @property
    def ir(self) -> str:
        """The IR after all passes, as text."""
        return self._ir_text if self._graph is None else str(self._graph)

    @property
    def plan(self) -> dict:
        """The execution plan stored in the artifact (values, kernel steps)."""
        if self._model is not None:
            return self._model.plan
        if self._plan is None:  # a model that cannot run here: parse the plan the compiler wrote, once
            import json

            if self._plan_json is None:
                from .runtime.artifact import read_artifact

                self._plan_json = read_artifact(self._artifact, "compiled artifact")[1]["plan.json"]
            self._plan = json.loads(self._plan_json)
        return self._plan

    def _runtime_model(self) -> Model:
        if self._model is None:
            raise TargetError(self._not_here)
        return self._model

    def __call__(self, *args, **kwargs):
        return self._runtime_model()(*args, **kwargs)

    def profile(self, *args, repeat: int = 20, **kwargs) -> list[dict]:
        """Per-kernel times on these inputs, slowest first (see ``edgeopt.runtime.Model.profile``)."""
        return self._runtime_model().profile(*args, repeat=repeat, **kwargs)

    def compare(self, model=None, data=None) -> list[dict]:
        """Per-layer error of this quantized model against its float original, worst (lowest SQNR) first: for each
        conv / linear / matmul output its SQNR (dB), cosine and the SQNR the layer itself loses (``added_db``), on
        ``data`` (input batches like ``example_inputs``; default: up to 8 calibration batches). Given the float
        torch ``model``, a last row ``"output"`` compares this artifact's outputs with PyTorch's on ``data``."""
        from .quant.compare import cosine, layer_errors, sqnr_db
        from .quant.setup import calibration_batches

        p = self._quantization
        if p is None or not hasattr(p, "float_graph"):
            from .quant import QuantizationError

            raise QuantizationError("compare() is for models compiled with quantize=...")
        if data is not None:
            batches = calibration_batches(data, p.float_graph)
        elif getattr(p, "calibration", None):
            batches = p.calibration[:8]
        else:
            raise ValueError("compare() needs data: a list of input batches")
        rows = layer_errors(p.float_graph, p.quant_graph, batches)
        if model is not None:
            import torch

            with torch.inference_mode():
                ref = [model(*[torch.from_numpy(a) for a in b]) for b in batches]
            ref = np.concatenate([np.asarray(getattr(r, "last_hidden_state", r[0] if isinstance(r, tuple) else r))
                                  .reshape(-1) for r in ref])
            got = [self(*b) for b in batches]
            got = np.concatenate([np.asarray(g[0] if isinstance(g, tuple) else g).reshape(-1) for g in got])
            rows.append({"layer": "output", "op": "model", "source": None, "sqnr_db": round(sqnr_db(ref, got), 2),
                         "cosine": round(cosine(ref, got), 6)})
        return rows

    def save(self, path: str | os.PathLike) -> None:
        with open(path, "wb") as f:
            f.write(self._artifact)

    def __repr__(self) -> str:
        r = self.report
        return f"<CompiledModel target={r['target']} kernels={r['num_kernels']} weights={r['weight_bytes']}B>"


def compile(model, example_inputs: Sequence | None = None, target="host", *, opt_level: int = 2,
            passes: Sequence | None = None, disable: Sequence[str] = (), dynamic_shapes=None,
            tuning_db: str | os.PathLike | None = None, quantize=None, calibration_data=None, compress=None,
            cache: bool = True, progress: bool | None = None, **target_options) -> CompiledModel:
    """Compile ``model`` (a torch.nn.Module, a ``torch.export.ExportedProgram``, or an ONNX model: a ``.onnx`` path or
    an ``onnx.ModelProto``) for ``target`` at the shapes of ``example_inputs`` (an ONNX model whose input shapes are
    all fixed needs none).

    ``passes`` replaces the pipeline that ``opt_level`` picks (pass names and ``Pass`` objects, or an
    ``edgeopt.Pipeline`` edited from the default one); ``disable`` removes passes from it.
    ``tuning_db`` (a file written by ``edgeopt.tune``) gives tuned schedules to the kernels it has records for.
    ``quantize`` is a mode ("int8", "int8-dynamic", "int8-weight", "int4-weight") or an ``edgeopt.QuantConfig``;
    static "int8" needs ``calibration_data``: an iterable of input batches like ``example_inputs`` (e.g. 64 images).
    ``compress`` (an ``edgeopt.Compress``) prunes channels and / or factors layers by low rank first, without
    retraining (``report["compression"]`` says what changed); quantization composes with it.
    ``cache`` (default True; ``EDGEOPT_CACHE=0`` turns it off everywhere) reuses earlier compiles from the on-disk
    cache (``edgeopt.cache``): each CPU kernel's object code, and the whole artifact when the exported program,
    target and options are the same (``report["cache"]`` says what was reused). The cache sees edgeopt's code
    files, not changes made to its modules in the running process: code that patches a lowering rule or schedule
    in-process (a benchmark of two formulations) passes ``cache=False``.
    ``progress``: a progress bar on stderr (default: on a terminal, unless ``EDGEOPT_QUIET=1``).
    """
    from .errors import UnsupportedModelError
    from .targets import get_target

    if dynamic_shapes is not None:
        raise UnsupportedModelError("dynamic shapes are not supported yet: compile for one static shape "
                                    "(e.g. pad sequences to a fixed length)")
    t0 = time.perf_counter()
    tgt = get_target(target, **target_options)
    if example_inputs is not None and not isinstance(example_inputs, (tuple, list)):
        example_inputs = (example_inputs,)
    with task("compile", progress):
        return _compile(model, example_inputs, tgt, t0, opt_level=opt_level, passes=passes, disable=disable,
                        tuning_db=tuning_db, quantize=quantize, calibration_data=calibration_data, compress=compress,
                        cache=cache, target_options=target_options)


def _compile(model, example_inputs, tgt, t0, *, opt_level, passes, disable, tuning_db, quantize, calibration_data,
             compress, cache, target_options) -> CompiledModel:
    from .cache import DiskCache, models

    _check_compress(compress, None)  # (before the cache key reads it)
    store = DiskCache.default() if cache else None
    options = dict(opt_level=opt_level, passes=passes, disable=disable, tuning_db=tuning_db, quantize=quantize,
                   compress=compress, target_options=target_options)
    expect(1, "frontend")
    if is_onnx(model):
        from .frontend.onnx_import import from_onnx, load_onnx

        proto = load_onnx(model)
        key = models.onnx_key(proto.SerializeToString(), example_inputs, tgt, **options) if store else None
        make_graph = lambda: from_onnx(proto, example_inputs)  # noqa: E731
    else:
        from .frontend import from_exported, trace
        from .frontend.torch_export import example_tensors

        if example_inputs is None:
            raise TypeError("edgeopt.compile(model, example_inputs): a torch model needs example inputs (a tensor or "
                            "a tuple of tensors) to trace it")
        tensors = example_tensors(example_inputs)
        ep = trace(model, tensors)
        if model is ep:
            _check_program_inputs(ep, tensors)
        key = models.model_key(ep, tensors, tgt, **options) if store else None
        make_graph = lambda: from_exported(ep)  # noqa: E731
    advance("traced")
    if key is not None:
        hit = models.lookup(store, key)
        if hit is not None:
            return CompiledModel.from_cache(*hit, t0=t0)
    graph = make_graph()
    compiled = compile_graph(graph, tgt, opt_level=opt_level, passes=passes, disable=disable,
                             frontend_seconds=time.perf_counter() - t0, tuning_db=tuning_db, quantize=quantize,
                             calibration_data=calibration_data, compress=compress, cache=cache)
    if key is not None:
        models.store(store, key, compiled._artifact, str(compiled.graph))
        compiled.report["cache"]["model"] = "miss"  # (the artifact's own report says "not cached": written before)
    return compiled


def _check_program_inputs(ep, example_inputs) -> None:
    """An ExportedProgram is compiled for the shapes it was exported with: example inputs must have them."""
    from .errors import InputError

    user = set(ep.graph_signature.user_inputs)
    want = [n.meta.get("val") for n in ep.graph.nodes if n.op == "placeholder" and n.name in user]
    got = list(example_inputs)
    if len(want) != len(got) or any(w is not None and (tuple(w.shape) != tuple(x.shape) or w.dtype != x.dtype)
                                    for w, x in zip(want, got)):
        raise InputError(f"the exported program takes {[(list(w.shape), str(w.dtype)) for w in want if w is not None]}"
                         f"; the example inputs are {[(list(x.shape), str(x.dtype)) for x in got]}. An exported "
                         "program keeps the shapes it was exported with: export it again for other shapes")


def is_onnx(model) -> bool:
    """An ONNX model: a path to a .onnx file, or an ``onnx.ModelProto``."""
    if isinstance(model, (str, os.PathLike)):
        return os.fspath(model).endswith(".onnx")
    return type(model).__name__ == "ModelProto" and type(model).__module__.startswith("onnx")


def _disable_quantization_passes(pipeline: list, quantization, disable: set) -> None:
    """``disable`` reaches the passes a quantize mode brings (``depthwise_int8_taps``, ``fold_requantize``...) too,
    except the ones the mode is: the quantization pass itself and the integer-kernel fold."""
    from .errors import PassError

    if quantization.name in disable:
        raise PassError(f"pass {quantization.name!r} cannot be disabled: it is quantize={quantization.config.mode!r}; "
                        "compile without quantize= instead")
    if "fold_quantized" in disable and "fold_quantized" in [q.name for q in pipeline]:
        raise PassError("pass 'fold_quantized' cannot be disabled: for float kernels on dequantized values use "
                        "quantize=QuantConfig(..., integer_kernels=False)")
    pipeline[:] = [q for q in pipeline if q.name not in disable]


def optimize_graph(graph, tgt, *, opt_level: int = 2, passes: Sequence | None = None,
                   disable: Sequence[str] = (), quantization=None, compress=None) -> list[dict]:
    """Verify the traced graph and run the pass pipeline on it (in place); returns the passes' records.
    ``quantization`` (``edgeopt.quant.setup.quantization_pass``) is the configured quantization pass, if any;
    ``compress`` (an ``edgeopt.Compress``) puts its passes first, where they see the traced layers."""
    from .ir import verify
    from .pipeline import resolve, run_passes

    verify(graph)
    pipeline = resolve(passes, disable, opt_level, tgt, tgt.legalize_passes, tgt.precision)
    if quantization is not None:
        from .quant.setup import place

        place(pipeline, quantization)
        _disable_quantization_passes(pipeline, quantization, set(disable))
    if compress is not None:
        pipeline[:0] = compress.passes(sparse_kernels=quantization is None)
    return run_passes(graph, pipeline, tgt)


def compile_graph(graph, target="host", *, opt_level: int = 2, passes: Sequence | None = None,
                  disable: Sequence[str] = (), frontend_seconds: float = 0.0,
                  tuning_db: str | os.PathLike | None = None, quantize=None, calibration_data=None,
                  compress=None, functions: dict | None = None, manifest_extra: dict | None = None,
                  extra_members: dict[str, bytes] | None = None, cache: bool = True) -> CompiledModel:
    """Run the pass pipeline on an IR graph (modified in place), lower it and package the artifact.

    A multi-level target (``target="x86-64", levels=[...]``) compiles the graph once per level (each with its own
    pipeline, vector width and kernels) into one artifact; ``graph`` ends as the most capable level's IR.

    ``functions`` (name -> Graph) are more entry points of the same artifact (a language model's prefill beside its
    decode step), compiled the same way: they share the weights (a weight equal in bytes is stored once) and the
    states (``Graph.states``, by name). ``manifest_extra`` adds keys to the manifest (what a runner needs to know),
    ``extra_members`` files to the artifact (JSON or text, never code: a language model's tokenizer.json)."""
    import tvm
    import tvm_ffi

    from .targets import get_target
    from .tuning_db import TuningDB

    t0 = time.perf_counter() - frontend_seconds
    tgt = get_target(target)
    from .cache import DiskCache
    from .quant.setup import quantization_pass

    tuning = None if tuning_db is None else TuningDB.load(tuning_db)  # a bad file fails before any work
    store = DiskCache.default() if cache else None
    quantization = quantization_pass(quantize, calibration_data, graph,  # bad settings fail before any work too
                                     getattr(tgt, "precision", "fp32"))
    _check_compress(compress, functions)
    traced_ops, float_weight_bytes = len(graph.nodes), graph.weight_bytes()
    levels = getattr(tgt, "levels", None) or [(None, tgt)]
    builds = [_build(graph if i == len(levels) - 1 else graph.clone(), t, opt_level, passes, disable, tuning,
                     quantization, compress, store) for i, (_, t) in enumerate(levels)]
    base, best = builds[0], builds[-1]
    report = _report(best, tgt, traced_ops, frontend_seconds, tuning)
    if quantization is not None:
        from .quant.setup import integer_kernels_report, quantization_report

        report["quantization"] = quantization_report(quantization, best.graph, best.records, float_weight_bytes,
                                                     report["weight_bytes"])
    if compress is not None:
        report["compression"] = _compression_report(compress, best.records)
    weights = base.consts
    members = {"plan.json": _json(base.lowered.plan), "weights.safetensors": b"",  # written last: _store_weights
               **({"kernels.so": base.lib} if base.lib is not None else {}), "ir.txt": str(base.graph).encode(),
               **base.device_code}
    described = {**tgt.describe(), **_tile_use(base)}
    if len(levels) > 1:
        described["levels"] = []
        for (name, t), b in reversed(list(zip(levels, builds))):  # best first: the runtime takes the first it runs
            described["levels"].append({"level": name, **t.device_requirements(), **_tile_use(b),
                                        **_level_members(name, b, base, members)})
        report["levels"] = [{"level": name, "mcpu": t.mcpu, "seconds": round(b.seconds, 4),
                             "num_kernels": len(b.lowered.plan["steps"]), "library_bytes": len(b.lib or b""),
                             "arena_bytes": b.lowered.plan.get("arena_bytes", 0),
                             **(integer_kernels_report(quantization, b.records) if quantization is not None else {})}
                            for (name, t), b in zip(levels, builds)]
    described["functions"] = {}
    function_builds: list[_Built] = []
    if functions:
        if len(levels) > 1:
            raise TargetError("an artifact with several functions is built for one CPU level: pick the target's CPU")
        if tgt.runtime != "cpu":
            raise TargetError(f"artifacts with several functions run on the CPU targets (host, arm) so far, not "
                              f"{tgt.name!r}")
        report["functions"] = {}
        weights = dict(base.consts)
        known = {_digest(a): k for k, a in weights.items()}  # every stored weight by its bytes, hashed once
        for name, fg in functions.items():
            fq = quantization_pass(quantize, calibration_data, fg)  # its own: a pass keeps the graphs it saw
            fb = _build(fg, tgt, opt_level, passes, disable, tuning, fq, store=store)
            function_builds.append(fb)
            plan = _share_weights(fb.lowered.plan, fb.consts, weights, known, name)
            members[f"functions/{name}/plan.json"] = _json(plan)
            members[f"functions/{name}/kernels.so"] = fb.lib or b""
            members[f"functions/{name}/ir.txt"] = str(fb.graph).encode()
            described["functions"][name] = {"plan": f"functions/{name}/plan.json",
                                            "library": f"functions/{name}/kernels.so", "ir": f"functions/{name}/ir.txt",
                                            "inputs": plan["inputs"], "outputs": plan["outputs"]}
            report["functions"][name] = {"num_kernels": len(plan["steps"]), "arena_bytes": plan.get("arena_bytes", 0),
                                         "seconds": round(fb.seconds, 4)}
        report["weight_bytes"] = int(sum(a.nbytes for a in weights.values()))
    stats = [b.lowered.kernel_cache for b in builds + function_builds if b.lowered.kernel_cache is not None]
    report["cache"] = {"model": "off" if store is None else "not cached",
                       "kernels_reused": sum(st["hits"] for st in stats),
                       "kernels_compiled": sum(st["compiled"] for st in stats)}
    functions_manifest = described.pop("functions")
    sparse_spec = _store_weights(weights, members, report)
    members.update(extra_members or {})
    report["compile_seconds"] = round(time.perf_counter() - t0, 4)
    manifest = {
        "edgeopt_version": __version__,
        "tvm_version": tvm.__version__,
        "tvm_ffi_version": tvm_ffi.__version__,
        "target": described,
        "inputs": best.lowered.plan["inputs"],
        "outputs": best.lowered.plan["outputs"],
        "report": report,
        **({"functions": functions_manifest} if functions_manifest else {}),
        **({"sparse_weights": sparse_spec} if sparse_spec else {}),
        **(manifest_extra or {}),
    }
    return CompiledModel(write_artifact(manifest, members), graph, report, manifest["target"], members["plan.json"],
                         quantization)


@dataclass
class _Built:
    """One target's compile: the lowered plan and kernels, the pass records, the library and the weights."""

    graph: object
    lowered: object
    records: list
    lib: bytes | None
    device_code: dict
    consts: dict
    seconds: float


def _build(graph, tgt, opt_level, passes, disable, tuning, quantization=None, compress=None, store=None) -> _Built:
    from .lower import lower

    t0 = time.perf_counter()
    records = optimize_graph(graph, tgt, opt_level=opt_level, passes=passes, disable=disable,
                             quantization=quantization, compress=compress)
    lowered = lower(graph, tgt, tuning, store)
    with tempfile.TemporaryDirectory(prefix="edgeopt-") as d:
        lib_path = os.path.join(d, "kernels.so")
        # device code beside the library (CUDA cubin/PTX), or instead of it (Vulkan's WGSL shaders)
        device_code, lib = {}, (b"" if tgt.has_library else None)
        if lowered.executable is not None:
            device_code = tgt.export_library(lowered.executable, lib_path) or {}
            if tgt.has_library:
                with open(lib_path, "rb") as f:
                    lib = f.read()
    # in the dtype the device stores them in (the plan's: a target's storage_dtypes, e.g. bool as i32 on Vulkan)
    consts = {name: graph.constants[name].astype(NP_DTYPES[v["dtype"]], copy=False)
              for name, v in lowered.plan["values"].items() if v["kind"] == "const"}
    return _Built(graph, lowered, records, lib, device_code, consts, time.perf_counter() - t0)


def _store_weights(weights: dict, members: dict, report: dict) -> dict:
    """Write ``weights`` into ``members``: mostly-zero ones (magnitude pruning) as mask and values in their own
    member (``edgeopt.runtime.sparse_weights``), the rest dense; returns the manifest's ``sparse_weights``."""
    from .runtime import sparse_weights

    dense, sparse, spec = sparse_weights.encode(weights)
    members["weights.safetensors"] = safetensors_dumps(dense)
    if spec:
        members[sparse_weights.MEMBER] = safetensors_dumps(sparse)
        report["sparse_weights"] = {"count": len(spec),
                                    "dense_bytes": int(sum(weights[k].nbytes for k in spec)),
                                    "stored_bytes": int(sum(a.nbytes for a in sparse.values()))}
    return spec


def _check_compress(compress, functions) -> None:
    from .compress import Compress, CompressionError

    if compress is None:
        return
    if not isinstance(compress, Compress):
        raise CompressionError(f"compress= takes an edgeopt.Compress(...), got {type(compress).__name__}")
    if functions:
        raise CompressionError("compress= applies to one function; prune or factor a multi-function model with "
                               "the torch-side edgeopt.compress functions before compiling it")


def _compression_report(compress, records) -> dict:
    """The compression passes' stats: MACs and weights before and after, what each pass changed."""
    import dataclasses

    out = {"config": dataclasses.asdict(compress)}
    for r in records:
        if r["name"] in ("prune_channels", "low_rank", "prune_magnitude", "sparse_linear"):
            out[r["name"]] = r["stats"]
    stats = [r for r in records if r["name"] in ("prune_channels", "low_rank")]
    if stats:
        out["macs_before"], out["macs_after"] = stats[0]["stats"]["macs_before"], stats[-1]["stats"]["macs_after"]
        out["params_before"] = stats[0]["stats"]["params_before"]
        out["params_after"] = stats[-1]["stats"]["params_after"]
    return out


def _level_members(name: str | None, b: _Built, base: _Built, members: dict) -> dict:
    """Add a CPU level's plan, library and weights to ``members`` (the baseline's are the artifact's own
    ``plan.json``, ``kernels.so``, ``weights.safetensors``; another level stores only the weights whose name or
    bytes differ from the baseline's); returns the level's member names for the manifest."""
    if b is base:
        return {"plan": "plan.json", "library": "kernels.so"}
    own = {k: a for k, a in b.consts.items()
           if k not in base.consts or base.consts[k].dtype != a.dtype or base.consts[k].shape != a.shape
           or not np.array_equal(base.consts[k], a)}
    out = {"plan": f"levels/{name}/plan.json", "library": f"levels/{name}/kernels.so", "ir": f"levels/{name}/ir.txt"}
    members[out["plan"]], members[out["library"]] = _json(b.lowered.plan), b.lib
    members[out["ir"]] = str(b.graph).encode()
    if own:
        out["weights"] = f"levels/{name}/weights.safetensors"
        members[out["weights"]] = safetensors_dumps(own)
    return out


def _digest(a: np.ndarray) -> tuple:
    import hashlib

    return a.dtype.str, a.shape, hashlib.sha256(np.ascontiguousarray(a).view(np.uint8).data).hexdigest()


def _share_weights(plan: dict, consts: dict, weights: dict, known: dict, prefix: str) -> dict:
    """``plan`` with each weight renamed to the one in ``weights`` with the same bytes (stored once: ``known`` maps
    ``_digest`` to name), or, when its name is taken by other bytes, to a name of its own (``prefix``.name); adds the
    weights it keeps to ``weights`` and ``known``."""
    rename = {}
    for name, arr in consts.items():
        d = _digest(arr)
        if d in known:
            rename[name] = known[d]
            continue
        new = name
        while new in weights or (new != name and new in plan["values"]):
            new = f"{prefix}.{new}"
        weights[new] = arr
        known[d] = rename[name] = new
    values = {rename.get(k, k): ({**v, "of": rename.get(v["of"], v["of"])} if "of" in v else v)
              for k, v in plan["values"].items()}
    if len(values) != len(plan["values"]):
        raise AssertionError(f"edgeopt bug: sharing weights with function {prefix!r} renamed a weight onto a value")
    steps = [{**st, "args": [rename.get(a, a) for a in st["args"]]} for st in plan["steps"]]
    return {**plan, "values": values, "steps": steps}


def _tile_use(built: _Built) -> dict:
    """``{"amx_tiles": True}`` where a kernel of ``built`` runs on AMX tiles (``edgeopt.lower.amx``): the runtime
    then asks Linux for the tile state before it loads the library (``edgeopt.runtime.amx_permission``)."""
    return {"amx_tiles": True} if any(",amx" in k.get("schedule", "") for k in built.lowered.kernels) else {}


def _report(built: _Built, tgt, traced_ops: int, frontend_seconds: float, tuning) -> dict:
    lowered, records, consts = built.lowered, built.records, built.consts
    report = {
        "target": tgt.name,
        "num_kernels": len(lowered.plan["steps"]),
        "num_unique_kernels": len(lowered.kernels),
        "traced_ops": traced_ops,
        "weight_bytes": int(sum(a.nbytes for a in consts.values())),
        "passes": [{"name": r["name"], "seconds": r["seconds"]} for r in records],
        "pass_stats": {r["name"]: r["stats"] for r in records},
        "frontend_seconds": round(frontend_seconds, 4),
        "lower_seconds": round(lowered.seconds["schedule"], 4),
        "codegen_seconds": round(lowered.seconds["codegen"], 4),
        "kernels": lowered.kernels,
        "tuned_kernels": sum(k["tuned"] for k in lowered.kernels),
        "fused_groups": _fused_groups(lowered),
        **lowered.memory.report(),
        "memory_plan_seconds": round(lowered.seconds["memory_plan"], 4),
    }
    if built.graph.states:  # held by the runtime beside the arena, allocated once (a language model's KV cache)
        report["state_bytes"] = int(sum(v.type.nbytes for v in built.graph.states))
    if tuning is not None:
        report["tuning_db"] = tuning.path
        report["tuning_ignored"] = lowered.tuning_ignored  # records that were stale for this build
    return report


def _cannot_run_here(target: dict) -> str | None:
    """Why this machine cannot run an artifact for ``target`` (the runtime's own device check), or None."""
    try:
        check_device(target)
    except ArtifactError as e:
        cpu, arch = target.get("mcpu") or target.get("cuda_arch"), target.get("arch")
        why = f"this machine is {platform.machine()}" if arch and arch != platform.machine() else str(e)
        emulated = (f", or emulated here with edgeopt.emulate.run('m.edgeopt', inputs, cpu={cpu!r})"
                    if target.get("name") == "arm" else "")
        which = f" ({arch}, {cpu})" if arch or cpu else ""
        return (f"this model was compiled for target {target.get('name')!r}{which} and cannot run here "
                f"({why}). Save it with compiled.save('m.edgeopt') and run the artifact on the device with "
                f"edgeopt.load('m.edgeopt'){emulated}")
    return None


def _fused_groups(lowered) -> list[dict]:
    """Every fused kernel: its ops and how many steps of the plan run it."""
    uses: dict[str, int] = {}
    for s in lowered.plan["steps"]:
        uses[s["kernel"]] = uses.get(s["kernel"], 0) + 1
    return [{"kernel": k["name"], "ops": k["ops"], "count": uses[k["name"]]}
            for k in lowered.kernels if len(k["ops"]) > 1]


def _json(obj) -> bytes:
    import json

    return json.dumps(obj, separators=(",", ":")).encode()
