"""``edgeopt compile``: a model (``file.py:factory``, an exported ``.pt2`` or an ``.onnx``) into an artifact.

    edgeopt compile model.py:make -o model.edgeopt
    edgeopt compile model.py:make -o m.edgeopt --target arm --cpu cortex-a76 --quantize int8 --calibration cal.npz
    edgeopt compile resnet.pt2 -o m.edgeopt --graphs graphs/     # + graphs/before.html and after.html
    edgeopt compile model.onnx -o m.edgeopt [--input x.npy]      # the ONNX frontend
"""

from __future__ import annotations

import argparse
import json
import os
import time


def add_parser(sub) -> None:
    p = sub.add_parser("compile", help="compile a model (file.py:factory, module:factory, a .pt2 or a .onnx) into an "
                                       "artifact", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help="file.py:factory, package.module:factory (returning (model, example_inputs) or a "
                                 "model), a .pt2 file from torch.export.save, or a .onnx file")
    p.add_argument("-o", "--output", required=True, help="the artifact to write (e.g. model.edgeopt)")
    p.add_argument("--input", action="append", metavar="FILE",
                   help="example input(s) (.npy, or .npz with one array per input, by the inputs' names or in "
                        "their order), instead of the factory's")
    p.add_argument("--target", default="host", help="host (default), x86-64-v3, x86-64-v4, x86, x86-64, arm, cuda, "
                                                   "vulkan")
    p.add_argument("--cpu", help="the target CPU (arm: cortex-a72, cortex-a76...; x86: znver3...)")
    p.add_argument("--arch", help="cuda: sm_80, sm_87, jetson-orin...")
    p.add_argument("--precision", choices=["fp32", "fp16"], help="cuda / vulkan: fp16 kernels")
    p.add_argument("--levels", help="x86-64: comma-separated CPU levels in one artifact (v3,v4)")
    p.add_argument("--quantize", choices=["int8", "int8-dynamic", "int8-weight", "int4-weight"])
    p.add_argument("--calibration", metavar="FILE", help="static int8: a .npz with one array per input (by the "
                                                         "inputs' names or in their order), samples along the first "
                                                         "axis (or a .npy for one input); split into batches of the "
                                                         "traced batch size")
    p.add_argument("--opt-level", type=int, default=2, choices=[0, 1, 2])
    p.add_argument("--disable", action="append", default=[], metavar="PASS", help="leave a pass out (repeatable)")
    p.add_argument("--tuning-db", help="a tuning database written by edgeopt tune")
    p.add_argument("--no-cache", action="store_true", help="compile everything again (ignore the compile cache)")
    p.add_argument("--graphs", metavar="DIR", help="also write DIR/before.html (as traced) and DIR/after.html (after "
                                                   "the passes, fused kernels colored); compiles past the whole-model "
                                                   "cache (kernels still come from it)")
    p.add_argument("--report", metavar="FILE", help="also write the compile report as JSON")


def run(args) -> str:
    from .. import api
    from .sources import input_names, load_model, load_named, load_stacks

    t0 = time.perf_counter()
    model, example = load_model(args.model, load_named(args.input))
    options = {k: v for k, v in (("cpu", args.cpu), ("arch", args.arch), ("precision", args.precision)) if v}
    if args.levels:
        options["levels"] = [lv.strip() for lv in args.levels.split(",") if lv.strip()]
    calibration = None
    if args.calibration:  # one stack of samples per input: compile splits it into batches of the traced size
        names = input_names(model, len(example) if example else None)
        calibration = [tuple(load_stacks(args.calibration, names))]
    kwargs = dict(opt_level=args.opt_level, disable=args.disable, tuning_db=args.tuning_db, quantize=args.quantize,
                  calibration_data=calibration, cache=not args.no_cache)
    if args.graphs:
        from ..progress import task

        with task("compile"):
            compiled = _compile_with_pictures(model, example, args.target, args.graphs, kwargs, options)
    else:
        compiled = api.compile(model, example, args.target, **kwargs, **options)
    compiled.save(args.output)
    if args.report:
        with open(args.report, "w") as f:
            json.dump(compiled.report, f, indent=1, default=str)
    return summary(compiled, args.output, time.perf_counter() - t0, args.graphs)


def _compile_with_pictures(model, example, target, out_dir: str, kwargs: dict, options: dict):
    """Compile through the frontend and ``compile_graph`` so the graph can be drawn before and after the passes."""
    from ..api import compile_graph, is_onnx
    from ..frontend import from_exported, trace
    from ..frontend.onnx_import import from_onnx
    from ..ir.picture import write_picture
    from ..targets import get_target

    os.makedirs(out_dir, exist_ok=True)
    tgt = get_target(target, **options)
    if is_onnx(model):
        graph = from_onnx(model, example)
    else:
        graph = from_exported(trace(model, example))
    write_picture(graph, os.path.join(out_dir, "before.html"), "as traced (before the passes)")
    compiled = compile_graph(graph, tgt, **kwargs)
    write_picture(compiled.graph, os.path.join(out_dir, "after.html"), f"after the passes ({tgt.name})")
    return compiled


def summary(compiled, path: str, seconds: float, graphs: str | None = None) -> str:
    r = compiled.report
    cache = r.get("cache", {})
    lines = [f"wrote {path} ({os.path.getsize(path):,} bytes) for target {r['target']} in {seconds:.1f} s",
             f"  {r['traced_ops']} traced ops -> {r['num_kernels']} kernel steps ({r['num_unique_kernels']} distinct, "
             f"{len(r['fused_groups'])} fused)",
             f"  weights {r['weight_bytes']:,} bytes; activations {r.get('arena_bytes', 0):,} bytes in one arena "
             f"({r.get('naive_bytes', 0):,} without planning)"]
    if cache:
        lines.append(f"  cache: model {cache.get('model')}, kernels reused {cache.get('kernels_reused', 0)}, "
                     f"compiled {cache.get('kernels_compiled', 0)}")
    if "quantization" in r:
        q = r["quantization"]
        lines.append(f"  quantized {q.get('mode')}: weights {q.get('weight_bytes_float', 0):,} -> "
                     f"{q.get('weight_bytes', 0):,} bytes")
    if graphs:
        lines.append(f"  graphs: {os.path.join(graphs, 'before.html')}, {os.path.join(graphs, 'after.html')}")
    return "\n".join(lines)
