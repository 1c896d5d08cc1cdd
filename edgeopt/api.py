"""The compiler's public face: ``compile`` a torch model into a ``CompiledModel``."""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass

from . import __version__
from .artifact_members import compact_json, digest, level_members, share_weights, store_weights, tile_use
from .compiled_model import CompiledModel
from .errors import TargetError
from .ir_dtypes import NP_DTYPES
from .progress import advance, expect, task
from .runtime.artifact import write_artifact


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
    members = {"plan.json": compact_json(base.lowered.plan), "weights.safetensors": b"",  # written last: store_weights
               **({"kernels.so": base.lib} if base.lib is not None else {}), "ir.txt": str(base.graph).encode(),
               **base.device_code}
    described = {**tgt.describe(), **tile_use(base)}
    if len(levels) > 1:
        described["levels"] = []
        for (name, t), b in reversed(list(zip(levels, builds))):  # best first: the runtime takes the first it runs
            described["levels"].append({"level": name, **t.device_requirements(), **tile_use(b),
                                        **level_members(name, b, base, members)})
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
        known = {digest(a): k for k, a in weights.items()}  # every stored weight by its bytes, hashed once
        for name, fg in functions.items():
            fq = quantization_pass(quantize, calibration_data, fg)  # its own: a pass keeps the graphs it saw
            fb = _build(fg, tgt, opt_level, passes, disable, tuning, fq, store=store)
            function_builds.append(fb)
            plan = share_weights(fb.lowered.plan, fb.consts, weights, known, name)
            members[f"functions/{name}/plan.json"] = compact_json(plan)
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
    sparse_spec = store_weights(weights, members, report)
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


def _fused_groups(lowered) -> list[dict]:
    """Every fused kernel: its ops and how many steps of the plan run it."""
    uses: dict[str, int] = {}
    for s in lowered.plan["steps"]:
        uses[s["kernel"]] = uses.get(s["kernel"], 0) + 1
    return [{"kernel": k["name"], "ops": k["ops"], "count": uses[k["name"]]}
            for k in lowered.kernels if len(k["ops"]) > 1]
