"""``edgeopt compare``: how far an artifact's numbers are from its PyTorch model, at the output and layer by layer.

    edgeopt compare model.edgeopt model.py:make                     # on the factory's example inputs
    edgeopt compare model.edgeopt model.py:make --data val.npz      # on real samples (one array per input)

The outputs are compared with PyTorch's (max error, cosine, SQNR; top-1 agreement for class scores). Layer by
layer, every kernel output of the artifact that the traced float graph also has (by value name) is compared with
the float graph's value (run on edgeopt's reference interpreter): the kernels' real outputs, copied as they run
(``Model.intermediates``), in the float graph's layout; a quantized kernel's integer output is dequantized with its
scale and zero point first. The worst layers come first, and the first layer whose SQNR drops below
``--threshold`` dB is named: where the error starts. CPU artifacts that run here.
"""

from __future__ import annotations

import json

import numpy as np


def add_parser(sub) -> None:
    import argparse

    p = sub.add_parser("compare", help="per-layer error of an artifact against its PyTorch model",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("artifact")
    p.add_argument("model", help="file.py:factory, package.module:factory or a .pt2 (as for edgeopt compile)")
    p.add_argument("--data", metavar="FILE", help="samples: .npz with one array per input (by the inputs' names or "
                                                  "in their order), samples along the first "
                                                  "axis (default: the example inputs)")
    p.add_argument("--input", action="append", metavar="FILE", help="example inputs, if the factory has none")
    p.add_argument("--top", type=int, default=12, help="layers to list (default 12)")
    p.add_argument("--threshold", type=float, default=30.0, help="SQNR (dB) below which a layer is called lossy")
    p.add_argument("--json", metavar="FILE", help="write every row as JSON")


def run(args) -> str:
    import edgeopt

    from ..frontend import from_exported, trace
    from ..quant.setup import calibration_batches
    from .sources import SourceError, load_model, load_named, load_stacks

    if args.model.endswith(".onnx"):
        raise SourceError("compare measures an artifact against its PyTorch model: give file.py:factory or a .pt2")
    model, example = load_model(args.model, load_named(args.input))
    compiled = edgeopt.load(args.artifact)
    ep = trace(model, example)
    float_graph = from_exported(ep)
    batches = [[x.numpy() for x in example]]
    if args.data:  # one stack per input, split into batches of the traced size, checked as calibration data is
        stacks = load_stacks(args.data, [v.name for v in float_graph.inputs])
        batches = calibration_batches([tuple(stacks)], float_graph, f"{args.data}: batch")
    outputs = output_errors(ep.module(), compiled, batches)
    with open(args.artifact, "rb") as f:
        scales = quantized_outputs(f.read(), compiled.ir)
    layers = layer_errors(float_graph, compiled, batches, scales)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"outputs": outputs, "layers": layers}, f, indent=1)
    return _text(outputs, layers, args, len(batches))


def output_errors(module, compiled, batches) -> list[dict]:
    """Per output: max abs error, error relative to the output's scale, cosine, SQNR; top-1 agreement for 2-D."""
    import torch

    from ..quant.compare import cosine, sqnr_db

    refs, gots = [], []
    with torch.no_grad():
        for b in batches:
            r = module(*[torch.from_numpy(np.asarray(a)) for a in b])
            r = r if isinstance(r, (tuple, list)) else (r,)
            g = compiled(*b)
            g = g if isinstance(g, tuple) else (g,)
            refs.append([np.asarray(x.detach().numpy() if hasattr(x, "detach") else x) for x in r])
            gots.append(list(g))
    rows = []
    for i, spec in enumerate(compiled.manifest["outputs"]):
        ref = np.concatenate([r[i].reshape(-1) for r in refs]).astype(np.float64)
        got = np.concatenate([g[i].reshape(-1) for g in gots]).astype(np.float64)
        row = {"output": spec["name"], "max_abs": float(np.abs(ref - got).max()) if ref.size else 0.0,
               "rel": float(np.abs(ref - got).max() / max(np.abs(ref).max(), 1e-12)) if ref.size else 0.0,
               "cosine": round(cosine(ref, got), 6), "sqnr_db": round(sqnr_db(ref, got), 2)}
        if len(spec["shape"]) == 2 and spec["shape"][-1] > 1:
            agree = [np.argmax(r[i], -1) == np.argmax(g[i], -1) for r, g in zip(refs, gots)]
            row["top1_agreement"] = float(np.mean(np.concatenate(agree)))
        rows.append(row)
    return rows


def quantized_outputs(artifact: bytes, ir_text: str) -> dict[str, tuple[np.ndarray, np.ndarray, str]]:
    """Kernel outputs of a quantized artifact that end in a ``quantize`` or ``requantize``: value name -> (scale, zero
    point, the float value it quantizes), from the artifact's IR and weights: what turns the integers back into the
    float value."""
    from ..cache.models import graph_from_artifact

    if "quantize(" not in ir_text:
        return {}
    g = graph_from_artifact(artifact, ir_text)
    out = {}
    for n in g.nodes:
        if n.body is None:
            continue
        inner = dict(zip(n.body.inputs, n.inputs))
        for pos, v in enumerate(n.body.outputs):
            m = next((b for b in n.body.nodes if v in b.outputs), None)
            if m is not None and m.op == "requantize" and v.name.endswith("_q"):  # fold_requantize: "<name>_q"
                out[n.outputs[pos].name] = (np.float32(m.attrs["scale"]), np.int32(m.attrs["zero_point"]),
                                            v.name[:-2])  # lists in channel order where one per channel
                continue
            if m is None or m.op != "quantize" or len(m.inputs) < 2:
                continue
            params = []
            for p in m.inputs[1:3]:
                top = inner.get(p)
                if top is not None and g.is_const(top):
                    params.append(g.const(top))
                elif n.body.is_const(p):
                    params.append(n.body.const(p))
            # one scale and zero point, or one per channel (a blocked [1, C/c, 1, 1, c] flattens in channel order)
            if len(params) == 2:
                out[n.outputs[pos].name] = (params[0], params[1], m.inputs[0].name)
    return out


def layer_errors(float_graph, compiled, batches, quantized: dict | None = None) -> list[dict]:
    """Per kernel output the float graph also computes: SQNR, cosine and max error over ``batches``, in plan order
    (``step``), with the op that makes it in the float graph (and a layer's module name, as ``keep_float`` takes it).
    A quantized output (``quantized``: from ``quantized_outputs``) is dequantized and compared with the float value
    it stands for (``name_q`` for ``name``)."""
    from ..ir import interpret
    from ..quant.compare import cosine, sqnr_db

    quantized = quantized or {}
    order = {n: i for i, n in enumerate(float_graph.nodes)}  # for _layer_module
    float_values = {o.name: (n, o) for n in float_graph.nodes for o in n.outputs}
    steps = compiled.plan["steps"]
    made = [a for s in steps for a in s["args"][len(s["args"]) - s["num_outputs"]:]]
    ref_of = {}  # kernel output -> the float value it is compared with
    for a in made:
        if a in float_values:
            ref_of[a] = a
        elif a in quantized and a.endswith("_q") and a[:-2] in float_values:
            ref_of[a] = a[:-2]
    names = list(ref_of)
    refs: dict[str, list] = {ref_of[n]: [] for n in names}
    gots: dict[str, list] = {n: [] for n in names}
    want = set(refs)
    for b in batches:
        got = compiled.intermediates(*b, names=set(names))

        def observe(v, x):
            if v.name in want:
                refs[v.name].append(np.asarray(x))

        interpret(float_graph, [np.asarray(a) for a in b], observe=observe)
        for n in names:
            gots[n].append(got[n])
    rows = []
    step_of = {a: i for i, s in enumerate(steps) for a in s["args"][len(s["args"]) - s["num_outputs"]:]}
    for n in names:
        ref = [r.astype(np.float64) for r in refs[ref_of[n]]]
        got = [_to_layout(g, r.shape) for g, r in zip(gots[n], ref)]
        if any(g is None for g in got):
            continue  # a layout this command cannot map back
        if n in quantized and ref_of[n] != n:
            got = [_dequantized(g, *quantized[n][:2]) for g in got]
            if any(g is None for g in got):
                continue
        r, g = np.concatenate([x.reshape(-1) for x in ref]), np.concatenate([x.reshape(-1) for x in got])
        node = float_values[ref_of[n]][0]
        module = _layer_module(float_graph, node, order)
        rows.append({"value": n, "step": step_of[n], "op": node.op, "module": module, "source": node.source,
                     "sqnr_db": round(sqnr_db(r, g), 2), "cosine": round(cosine(r, g), 6),
                     "max_abs": float(np.abs(r - g).max()) if r.size else 0.0})
    return rows


def _layer_module(g, node, order: dict, hops: int = 4) -> str | None:
    """The module name (as ``keep_float`` takes it) of the layer whose kernel makes ``node``'s value: ``node`` itself,
    or the conv / linear / matmul that the elementwise ops making it (its epilogue: bias, activation, residual add)
    start from. Through an op of several inputs it follows the one made last (a residual add's branch, not its skip,
    whichever the code wrote first: ``order`` gives each node's place in ``g``); None when there is no layer within
    ``hops``."""
    from ..ir.registry import get_op
    from ..quant.compare import LAYER_OPS

    for _ in range(hops + 1):
        if node is None:
            return None
        if node.op in LAYER_OPS and len(node.inputs) > 1 and g.is_const(node.inputs[1]):
            return g.layer_name(node)
        if get_op(node.op).kind != "elementwise":
            return None
        made = [v.producer for v in node.inputs if v.producer is not None]
        node = max(made, key=order.__getitem__, default=None)
    return None


def _dequantized(q: np.ndarray, scale: np.ndarray, zero: np.ndarray) -> np.ndarray | None:
    """Integer values ``q`` (in the float graph's layout) as the float values they stand for: one scale and zero point,
    or one per channel (``calibrate.channel_axis``: axis 1 of NCHW, the features of rank 2 and 3); None when the
    parameters fit neither."""
    from ..quant.calibrate import channel_axis

    scale, zero = np.asarray(scale, np.float64).reshape(-1), np.asarray(zero, np.float64).reshape(-1)
    if scale.size == 1 and zero.size == 1:
        return (q - zero[0]) * scale[0]
    axis = channel_axis(q.ndim)
    if axis is None or {scale.size, zero.size} - {1, q.shape[axis]}:
        return None
    shape = tuple(-1 if i == axis else 1 for i in range(q.ndim))
    return (q - zero.reshape(shape)) * scale.reshape(shape)


def _to_layout(got: np.ndarray, shape: tuple) -> np.ndarray | None:
    """``got`` in the float graph's layout ``shape``: as it is, or from the blocked NCHW<c>c layout of the CPU
    passes ([N, C/c, H, W, c], channels padded up to a multiple of c); None when it is neither."""
    from ..ir.ops.layout import unblock_nchw

    got = np.asarray(got, np.float64)
    if got.shape == tuple(shape):
        return got
    if got.ndim == 5 and len(shape) == 4 and got.shape[0] == shape[0] and got.shape[2:4] == tuple(shape[2:]) \
            and got.shape[1] * got.shape[4] >= shape[1]:
        return unblock_nchw(got)[:, :shape[1]]
    return None


def _text(outputs: list[dict], layers: list[dict], args, batches: int) -> str:
    lines = [f"{args.artifact} vs {args.model} on {batches} batch(es) of the traced shapes",
             "outputs (against PyTorch):"]
    for r in outputs:
        top1 = f", top-1 agreement {100 * r['top1_agreement']:.1f}%" if "top1_agreement" in r else ""
        lines.append(f"  {r['output']}: max |err| {r['max_abs']:.3g} ({r['rel']:.2g} of its scale), cosine "
                     f"{r['cosine']:.6f}, SQNR {r['sqnr_db']:.1f} dB{top1}")
    if not layers:
        lines.append("layers: none of the artifact's kernel outputs match a traced value by name")
        return "\n".join(lines)
    lossy = [r for r in sorted(layers, key=lambda r: r["step"]) if r["sqnr_db"] < args.threshold]
    lines.append(f"layers ({len(layers)} kernel outputs matched to the traced float graph; worst first):")
    lines.append(f"  {'SQNR dB':>8} {'cosine':>9} {'max |err|':>10}  step  value (op, module)  source")
    for r in sorted(layers, key=lambda r: r["sqnr_db"])[:args.top]:
        op = f"{r['op']}, {r['module']}" if r.get("module") else r["op"]  # the module: what keep_float takes
        lines.append(f"  {r['sqnr_db']:8.1f} {r['cosine']:9.6f} {r['max_abs']:10.3g}  {r['step']:4d}  {r['value']} "
                     f"({op})  {r['source'] or ''}")
    if lossy:
        first = lossy[0]
        op = f"{first['op']}, {first['module']}" if first.get("module") else first["op"]
        lines.append(f"the error starts at step {first['step']}: {first['value']} ({op}), SQNR "
                     f"{first['sqnr_db']:.1f} dB < {args.threshold:g}" + (f", at {first['source']}"
                                                                          if first["source"] else ""))
    else:
        lines.append(f"every matched layer is above {args.threshold:g} dB SQNR")
    return "\n".join(lines)
