"""edgeopt on PyTorch's own OpInfo samples: how many of the samples of the inference ops it compiles and computes
right, and whether every miss is an ``UnsupportedModelError`` (issue 22).

    .venv/bin/python bench/opinfo.py [--samples 12]           # every op of OPS, 3 samples each (~10 min on 2 cores)
    .venv/bin/python bench/opinfo.py --ops topk nn.functional.gelu --json /tmp/opinfo.json

**The ops** (``OPS``, by OpInfo name, ``name.variant`` where the OpInfo has a ``variant_test_name``): the ops the
forward pass of common inference models (CNNs, vision and language transformers, detection and segmentation heads)
is made of -- elementwise math, comparisons and selection, activations, softmax and the normalizations, linear /
convolution / matrix products, pooling, resizing, embedding and padding, reductions, sorting and search, shape and
data movement, scatters and indexed writes. Left out: random ops (dropout, rand*), in-place variants, complex-only
ops, sparse ops, linear-algebra decompositions and solvers (svd, inv, eig, qr, cholesky...), FFTs and special
functions (erfc, erfinv, lgamma, digamma, Bessel functions), losses, ops whose output shape depends on the data
(nonzero, unique, masked_select), backward-only ops, training-mode ops (native_batch_norm) and tensor factories (no
tensor input).

**The samples**: for each op, ``op.sample_inputs("cpu", torch.float32, requires_grad=False)`` with torch, numpy
and ``random`` seeded with ``SEED`` just before (so one op's samples do not depend on the ops run before it), and
the first ``SAMPLES_PER_OP`` samples, in OpInfo's order, that are usable. A sample is skipped, and the skip is
recorded with its reason, when
- a tensor in it is not a float32 / int64 / bool CPU tensor (the dtypes inference graphs carry);
- PyTorch itself fails on it, or returns something other than tensors;
- it is training, not inference: it modifies one of its inputs in place (``instance_norm`` updating the running
  statistics it is given), or it says ``training=True`` (``batch_norm``, whose update of the running statistics
  with ``momentum=0.0`` leaves their values and version counter as they were);
- its output is not deterministic (two PyTorch runs differ). (``scaled_dot_product_attention(dropout_p=0.5)``'s
  samples can pass that check; edgeopt refuses them: dropout at inference is random at every call.)
Every other sample counts, including rank-0 and zero-size tensors and NaN-producing arguments (e.g. a negative
``eps``): those are what OpInfo tests.

**One sample** becomes an ``nn.Module`` whose ``forward`` calls ``op.op(input, *args, **kwargs)``; every tensor
of the sample (also weights, biases, indices and the tensors in a list such as ``cat``'s) is a module input,
other arguments are constants. PyTorch's output of that module is the reference. Then
``edgeopt.compile(module, inputs, target="host")`` and ``compiled(*numpy_inputs)``; the outcome is one of
- ``correct``: the same number of outputs, each of the same shape and kind of dtype (integers compare by value
  whatever their width: int64 vs int32), floats within ``|got - ref| <= RTOL * (|ref| + max(1, max|ref|))``
  (``RTOL`` relative to each element and to the output's scale), NaN exactly where the reference has NaN,
  infinities equal, bools and integers exact;
- ``wrong``: it compiled and ran, but an output differs (``reason`` and ``max_err``: the largest
  ``|got - ref| / (|ref| + max(1, max|ref|))``);
- ``unsupported``: ``edgeopt.UnsupportedModelError`` (a good miss); ``stage`` says whether ``torch.export``
  could not trace the sample (edgeopt rewords export failures as this error) or edgeopt refused it;
- ``crash``: any other exception, in ``compile`` or when running (``stage``); ``reason`` is its type and first line;
- ``torch_export_failed``: another exception where ``torch.export`` alone also fails on the module.

Prints the samples that are not correct and the summary line; writes bench/results/opinfo-<time>.json
(``--json PATH`` writes there instead) with the machine facts, the settings, the skipped samples and one record
per sample.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
import types
import unittest
import warnings

os.environ.setdefault("TVM_NUM_THREADS", "2")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402

SEED = 0
SAMPLES_PER_OP = 3
RTOL = 1e-4
#: samples of one op looked at, at most, to find SAMPLES_PER_OP usable ones
MAX_SCAN = 80
OUTCOMES = ("correct", "wrong", "unsupported", "crash", "torch_export_failed")

#: the inference ops, by family (OpInfo names; "name.variant" where the OpInfo has a variant_test_name)
OPS: dict[str, tuple[str, ...]] = {
    "elementwise unary": (
        "abs", "neg", "exp", "log", "log1p", "expm1", "sqrt", "rsqrt", "reciprocal", "sin", "cos", "tanh",
        "sigmoid", "erf", "floor", "ceil", "round", "trunc", "frac", "sign", "logical_not",
        "tan", "asin", "acos", "atan", "sinh", "cosh", "asinh", "acosh", "atanh", "log2", "log10", "exp2", "square",
        "nan_to_num", "isnan", "isinf", "isfinite", "isposinf", "isneginf", "logit", "sinc", "sgn", "positive",
        "deg2rad", "rad2deg", "signbit", "bitwise_not",
    ),
    "elementwise binary, comparison, selection": (
        "add", "sub", "mul", "div.no_rounding_mode", "pow", "maximum", "minimum", "fmod", "remainder", "atan2",
        "eq", "ne", "lt", "le", "gt", "ge", "logical_and", "logical_or", "where", "clamp", "masked_fill",
        "clamp_min", "clamp_max", "floor_divide", "div.trunc_rounding", "div.floor_rounding", "true_divide", "rsub",
        "float_power", "lerp", "addcmul", "addcdiv", "hypot", "copysign", "heaviside", "xlogy", "logaddexp",
        "logaddexp2", "fmax", "fmin", "logical_xor", "bitwise_and", "bitwise_or", "bitwise_xor",
        "bitwise_left_shift", "bitwise_right_shift", "fill",
    ),
    "activations": (
        "nn.functional.relu", "nn.functional.relu6", "nn.functional.gelu", "nn.functional.silu",
        "nn.functional.mish", "nn.functional.elu", "nn.functional.selu", "nn.functional.celu",
        "nn.functional.leaky_relu", "nn.functional.hardswish", "nn.functional.hardsigmoid",
        "nn.functional.hardtanh", "nn.functional.softplus", "nn.functional.logsigmoid",
        "nn.functional.prelu", "nn.functional.glu", "nn.functional.softsign", "nn.functional.tanhshrink",
        "nn.functional.hardshrink", "nn.functional.softshrink", "nn.functional.threshold",
    ),
    "softmax, normalization, attention": (
        "softmax", "log_softmax", "nn.functional.normalize", "nn.functional.layer_norm", "nn.functional.group_norm",
        "nn.functional.instance_norm", "nn.functional.batch_norm", "nn.functional.scaled_dot_product_attention",
        "softmax.with_dtype", "nn.functional.softmin", "nn.functional.local_response_norm", "nn.functional.rms_norm",
        "native_layer_norm", "nn.functional.multi_head_attention_forward",
    ),
    "linear, convolution, matrix products": (
        "nn.functional.linear", "nn.functional.conv2d", "nn.functional.conv_transpose2d", "matmul", "mm", "bmm",
        "addmm", "baddbmm",
        "nn.functional.conv1d", "nn.functional.conv3d", "nn.functional.conv_transpose1d",
        "nn.functional.conv_transpose3d", "nn.functional.bilinear", "einsum", "outer", "dot", "vdot", "mv", "addmv",
        "addbmm", "addr", "tensordot", "kron", "cross", "linalg.cross", "inner", "linalg.multi_dot",
    ),
    "pooling, resizing, embedding, padding": (
        "nn.functional.max_pool2d", "nn.functional.avg_pool2d", "nn.functional.adaptive_avg_pool2d",
        "nn.functional.interpolate.nearest", "nn.functional.interpolate.bilinear", "nn.functional.embedding",
        "nn.functional.pad.constant",
        "nn.functional.max_pool1d", "nn.functional.max_pool3d", "nn.functional.avg_pool1d", "nn.functional.avg_pool3d",
        "nn.functional.adaptive_avg_pool1d", "nn.functional.adaptive_avg_pool3d", "nn.functional.adaptive_max_pool1d",
        "nn.functional.adaptive_max_pool2d", "nn.functional.interpolate.linear", "nn.functional.interpolate.bicubic",
        "nn.functional.interpolate.trilinear", "nn.functional.interpolate.area",
        "nn.functional.interpolate.nearest-exact", "nn.functional.upsample_bilinear", "nn.functional.upsample_nearest",
        "nn.functional.pixel_shuffle", "nn.functional.pixel_unshuffle", "nn.functional.grid_sample",
        "nn.functional.unfold", "nn.functional.pad.reflect", "nn.functional.pad.replicate",
        "nn.functional.pad.circular", "nn.functional.embedding_bag", "nn.functional.one_hot",
        "nn.functional.channel_shuffle",
    ),
    "reductions": (
        "sum", "mean", "amax", "amin", "max.reduction_with_dim", "max.reduction_no_dim", "min.reduction_with_dim",
        "min.reduction_no_dim", "prod", "var", "std", "argmax", "argmin", "logsumexp", "any", "all", "cumsum",
        "linalg.vector_norm",
        "cumprod", "cummax", "cummin", "logcumsumexp", "median", "nanmedian", "nanmean", "nansum", "norm",
        "aminmax", "count_nonzero", "var_mean", "std_mean", "std.unbiased", "var.unbiased", "trace",
        "nn.functional.cosine_similarity", "nn.functional.pairwise_distance", "cdist", "linalg.matrix_norm",
    ),
    "sorting, selection and search": (
        "topk", "sort", "argsort", "msort", "kthvalue", "searchsorted", "bucketize",
    ),
    "shape and data movement": (
        "reshape", "view", "flatten", "transpose", "permute", "squeeze", "unsqueeze", "expand", "repeat", "tile",
        "flip", "cat", "stack", "split", "chunk", "narrow", "select", "index_select", "gather",
        "roll", "rot90", "tril", "triu", "diag", "diagonal", "diag_embed", "movedim", "unbind", "unflatten",
        "take_along_dim", "broadcast_to", "meshgrid.list_of_tensors", "full_like", "zeros_like", "ones_like",
        "new_zeros", "new_ones", "new_full", "clone", "contiguous", "t", "mT", "split_with_sizes", "hsplit",
        "vsplit", "tensor_split", "hstack", "vstack", "dstack", "column_stack", "atleast_1d", "atleast_2d",
        "atleast_3d", "squeeze.multiple", "unsafe_split", "expand_as", "view_as", "reshape_as",
    ),
    "scatter and indexed writes": (
        "scatter", "scatter_add", "scatter_reduce.sum", "scatter_reduce.prod", "scatter_reduce.mean",
        "scatter_reduce.amax", "scatter_reduce.amin", "index_add", "index_copy", "index_fill", "index_put",
    ),
}
ALL_OPS: tuple[str, ...] = tuple(name for names in OPS.values() for name in names)


def _op_db() -> dict:
    """OpInfo by name ("name.variant"). torch's test helpers import ``expecttest`` only for their TestCase base
    class; where that test-only package is not installed, a stub stands in (OpInfo's samples do not use it)."""
    try:
        import expecttest  # noqa: F401
    except ImportError:
        stub = types.ModuleType("expecttest")
        stub.TestCase = unittest.TestCase
        sys.modules["expecttest"] = stub
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from torch.testing._internal.common_methods_invocations import op_db
    return {op.name + (f".{op.variant_test_name}" if op.variant_test_name else ""): op for op in op_db}


# ------------------------------------------------------------------------------------------------ samples
class _Slot:
    """Where the i-th module input goes in a sample's arguments."""

    def __init__(self, i: int):
        self.i = i


def _has_tensor(a) -> bool:
    import torch

    if isinstance(a, torch.Tensor):
        return True
    if isinstance(a, (list, tuple)):
        return any(_has_tensor(x) for x in a)
    if isinstance(a, dict):
        return any(_has_tensor(x) for x in a.values())
    return False


def _strip(a, tensors: list):
    """``a`` with every tensor replaced by a ``_Slot`` (the tensor appended to ``tensors``)."""
    import torch

    if isinstance(a, torch.Tensor):
        tensors.append(a)
        return _Slot(len(tensors) - 1)
    if isinstance(a, (list, tuple)) and _has_tensor(a):
        return type(a)(_strip(x, tensors) for x in a) if type(a) in (list, tuple) else \
            [_strip(x, tensors) for x in a]
    if isinstance(a, dict) and _has_tensor(a):
        return {k: _strip(v, tensors) for k, v in a.items()}
    return a


def _fill(a, xs):
    if isinstance(a, _Slot):
        return xs[a.i]
    if isinstance(a, (list, tuple)) and any(isinstance(x, (_Slot, list, tuple, dict)) for x in a):
        return type(a)(_fill(x, xs) for x in a)
    if isinstance(a, dict):
        return {k: _fill(v, xs) for k, v in a.items()}
    return a


def _flat_outputs(out) -> list:
    import torch

    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, (list, tuple)):  # also torch.return_types (values, indices)
        return [t for o in out for t in _flat_outputs(o)]
    raise TypeError(f"the op returned a {type(out).__name__}, not tensors")


def _module(fn, template):
    import torch

    class Sample(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fn, self.template = fn, template

        def forward(self, *xs):
            inp, args, kwargs = _fill(self.template, xs)
            outs = _flat_outputs(self.fn(inp, *args, **kwargs))
            return outs[0] if len(outs) == 1 else tuple(outs)

    return Sample().eval()


def _same(a: list, b: list) -> bool:
    import torch

    return len(a) == len(b) and all(x.shape == y.shape and x.dtype == y.dtype and torch.equal(
        torch.nan_to_num(x, 0.0) if x.is_floating_point() else x, torch.nan_to_num(y, 0.0) if y.is_floating_point()
        else y) and torch.equal(x.isnan(), y.isnan()) for x, y in zip(a, b))


def _describe(tensors: list, sample) -> str:
    def short(a):
        if isinstance(a, _Slot):
            t = tensors[a.i]
            return f"T{list(t.shape)}" + ("" if str(t.dtype) == "torch.float32" else ":" + str(t.dtype)[6:])
        if isinstance(a, (list, tuple)):
            return "(" + ", ".join(short(x) for x in a) + ")"
        return repr(a)

    inp, args, kwargs = _strip((sample.input, sample.args, sample.kwargs), [])
    parts = [short(inp)] + [short(a) for a in args] + [f"{k}={short(v)}" for k, v in kwargs.items()]
    return ", ".join(parts)


class Case:
    """One usable sample of one op: the module, its inputs, PyTorch's outputs."""

    def __init__(self, op: str, index: int, opinfo_index: int, module, inputs: list, ref: list, desc: str):
        self.op, self.index, self.opinfo_index = op, index, opinfo_index
        self.module, self.inputs, self.ref, self.desc = module, inputs, ref, desc


def cases(name: str, opinfo, skipped: list | None = None, per_op: int = SAMPLES_PER_OP) -> list[Case]:
    """The first ``per_op`` usable samples of one op (seeded); the others looked at go to ``skipped``."""
    import torch

    torch.manual_seed(SEED)
    random.seed(SEED)
    np.random.seed(SEED)
    allowed = (torch.float32, torch.int64, torch.bool)
    out: list[Case] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        samples = iter(opinfo.sample_inputs("cpu", torch.float32, requires_grad=False))
        for j in range(MAX_SCAN):
            try:
                sample = next(samples)
            except StopIteration:
                break
            tensors: list = []
            template = _strip((sample.input, sample.args, sample.kwargs), tensors)
            desc = _describe(tensors, sample)
            reason = _unusable(tensors, allowed)
            if reason is None and sample.kwargs.get("training") is True:
                # batch_norm's running statistics update (not flagged as a write when momentum=0.0)
                reason = "training=True (training, not inference)"
            if reason is None:
                inputs = [t.detach().clone().contiguous() for t in tensors]
                module = _module(opinfo.op, template)
                reason, ref = _reference(module, inputs)
            if reason is not None:
                if skipped is not None:
                    skipped.append({"op": name, "opinfo_index": j, "sample": desc, "reason": reason})
                continue
            out.append(Case(name, len(out), j, module, inputs, ref, desc))
            if len(out) == per_op:
                break
    if not out and skipped is not None:
        skipped.append({"op": name, "opinfo_index": None, "sample": None, "reason": "no usable sample"})
    return out


def _unusable(tensors: list, allowed) -> str | None:
    import torch

    for t in tensors:
        if t.dtype not in allowed or t.device.type != "cpu" or t.layout != torch.strided:
            return f"a {t.dtype} {t.layout} tensor on {t.device} (float32 / int64 / bool CPU tensors only)"
    return None


def _reference(module, inputs: list):
    """(None, outputs) or (why the sample is skipped, None)."""
    import torch

    before = [t.clone() for t in inputs]
    versions = [t._version for t in inputs]  # bumped by an in-place write, also one that keeps the values
    try:
        with torch.no_grad():
            ref = _flat_outputs(module(*inputs))
            again = _flat_outputs(module(*[t.clone() for t in before]))
    except Exception as e:  # torch itself refuses the sample
        return f"PyTorch fails: {type(e).__name__}: {_first_line(e)}", None
    if [t._version for t in inputs] != versions or not _same(before, inputs):
        return "modifies an input in place (training, not inference)", None
    if not _same(ref, again):
        return "not deterministic (two PyTorch runs differ)", None
    return None, [r.detach().clone() for r in ref]


# ------------------------------------------------------------------------------------------------ one case
def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:300] if text else ""


def _unsupported_reason(e) -> tuple[str, str]:
    """(stage, reason) of an UnsupportedModelError."""
    text = str(e)
    if text.startswith("torch.export could not trace") or text.startswith("data-dependent"):
        return "torch.export", _first_line(e)
    if getattr(e, "ops", None):
        return "frontend", "unsupported op(s): " + ", ".join(sorted(u.op for u in e.ops))
    return "edgeopt", _first_line(e)


def compare(ref: list, got) -> tuple[bool, str | None, float]:
    """(outputs match, why not, max error relative to scale) -- the rule in the module docstring."""
    got = list(got) if isinstance(got, (tuple, list)) else [got]
    if len(got) != len(ref):
        return False, f"{len(got)} outputs, PyTorch has {len(ref)}", float("nan")
    worst, why = 0.0, None
    for k, (r, g) in enumerate(zip(ref, got)):
        r = r.numpy()
        g = np.asarray(g)
        if g.shape != r.shape:
            return False, f"output {k}: shape {g.shape}, PyTorch {r.shape}", float("nan")
        kind = {"b": "bool", "i": "int", "u": "int", "f": "float"}
        if kind.get(g.dtype.kind) != kind.get(r.dtype.kind):
            return False, f"output {k}: dtype {g.dtype}, PyTorch {r.dtype}", float("nan")
        if r.size == 0:
            continue
        if r.dtype.kind != "f":
            bad = int((g.astype(np.int64) != r.astype(np.int64)).sum())
            if bad:
                why = why or f"output {k}: {bad} of {r.size} values differ"
                worst = max(worst, float(np.abs(g.astype(np.float64) - r.astype(np.float64)).max()))
            continue
        r64, g64 = r.astype(np.float64), g.astype(np.float64)
        rnan, gnan = np.isnan(r64), np.isnan(g64)
        if (rnan != gnan).any():
            why = why or (f"output {k}: NaN at {int((gnan & ~rnan).sum())} places PyTorch has none, "
                          f"none at {int((rnan & ~gnan).sum())} of PyTorch's NaN")
            worst = max(worst, float("inf"))
        rinf, ginf = np.isinf(r64), np.isinf(g64)
        if (rinf != ginf).any() or (r64[rinf] != g64[rinf]).any():
            why = why or f"output {k}: infinities differ from PyTorch's"
            worst = max(worst, float("inf"))
        fin = ~(rnan | gnan | rinf | ginf)
        if fin.any():
            scale = max(1.0, float(np.abs(r64[fin]).max()))
            err = np.abs(g64[fin] - r64[fin]) / (np.abs(r64[fin]) + scale)
            e = float(err.max())
            worst = max(worst, e)
            if e > RTOL:
                why = why or f"output {k}: max error {e:.3g} (relative to |ref| + max(1, max|ref|)) > {RTOL:g}"
    return why is None, why, worst


def run_case(case: Case) -> dict:
    """Compile and run one sample; its record (see the module docstring for the outcomes)."""
    import torch

    import edgeopt

    rec = {"op": case.op, "sample": case.index, "opinfo_index": case.opinfo_index, "inputs": case.desc,
           "outcome": None, "stage": None, "reason": None, "max_err": None}
    t0 = time.perf_counter()
    stage = "compile"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            compiled = edgeopt.compile(case.module, [t.clone() for t in case.inputs], target="host")
            stage = "run"
            got = compiled(*[t.numpy().copy() for t in case.inputs])
    except edgeopt.UnsupportedModelError as e:
        rec["outcome"] = "unsupported"
        rec["stage"], rec["reason"] = _unsupported_reason(e)
    except Exception as e:
        rec["outcome"], rec["stage"] = "crash", stage
        rec["reason"] = f"{type(e).__name__}: {_first_line(e)}"
        if stage == "compile":
            try:
                with warnings.catch_warnings(), torch.no_grad():
                    warnings.simplefilter("ignore")
                    torch.export.export(case.module, tuple(case.inputs), strict=False)
            except Exception as ee:
                rec["outcome"], rec["stage"] = "torch_export_failed", "torch.export"
                rec["reason"] = f"{type(ee).__name__}: {_first_line(ee)}"
    else:
        ok, why, err = compare(case.ref, got)
        rec["outcome"], rec["reason"] = ("correct", None) if ok else ("wrong", why)
        rec["max_err"] = None if np.isnan(err) else err
    rec["seconds"] = round(time.perf_counter() - t0, 3)
    return rec


# ------------------------------------------------------------------------------------------------ the run
def run(ops=None, *, per_op: int = SAMPLES_PER_OP, skipped: list | None = None, progress=None) -> list[dict]:
    """One record per sample (up to ``per_op`` of each op) of ``ops`` (OpInfo names; default ``ALL_OPS``), in
    order; skipped samples are appended to ``skipped``; ``progress(record)`` is called after each sample."""
    db = _op_db()
    ops = list(ops or ALL_OPS)
    unknown = [n for n in ops if n not in db]
    if unknown:
        raise ValueError(f"no OpInfo named {', '.join(unknown)}")
    records = []
    for name in ops:
        for case in cases(name, db[name], skipped, per_op):
            rec = run_case(case)
            records.append(rec)
            if progress is not None:
                progress(rec)
    return records


def summary(records: list[dict]) -> dict:
    counts = {o: sum(r["outcome"] == o for r in records) for o in OUTCOMES}
    return {"samples": len(records), "ops": len({r["op"] for r in records}), **counts,
            "other_failures": counts["crash"] + counts["torch_export_failed"]}


def summary_line(records: list[dict]) -> str:
    s = summary(records)
    return (f"opinfo: {s['samples']} samples of {s['ops']} ops: {s['correct']} correct, {s['wrong']} wrong, "
            f"{s['unsupported']} unsupported (UnsupportedModelError), {s['other_failures']} other failures")


def table(records: list[dict]) -> str:
    rows = [r for r in records if r["outcome"] != "correct"]
    rows.sort(key=lambda r: (OUTCOMES.index(r["outcome"]), r["op"], r["sample"]))
    w = max([len(r["op"]) for r in rows] + [2])
    lines = [f"{'op':<{w}}  #  {'outcome':<19} {'stage':<12} reason"]
    for r in rows:
        reason = r["reason"] or ""
        lines.append(f"{r['op']:<{w}}  {r['sample']}  {r['outcome']:<19} {r['stage'] or '':<12} {reason}")
        lines.append(f"{'':<{w}}     inputs: {r['inputs'][:200]}")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ops", nargs="+", metavar="NAME", help="OpInfo names (default: every op of OPS)")
    ap.add_argument("--json", metavar="PATH", help="write the results here (default bench/results/opinfo-<time>.json)")
    ap.add_argument("--samples", type=int, default=SAMPLES_PER_OP, metavar="N",
                    help=f"usable samples per op, at most (default {SAMPLES_PER_OP})")
    ap.add_argument("-v", "--verbose", action="store_true", help="print every sample's outcome as it runs")
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore")

    def progress(r):
        if args.verbose:
            print(f"{r['op']}[{r['sample']}] {r['outcome']} {r['seconds']:.2f}s {r['reason'] or ''}", flush=True)

    t0 = time.perf_counter()
    skipped: list = []
    records = run(args.ops, per_op=args.samples, skipped=skipped, progress=progress)
    seconds = time.perf_counter() - t0
    if any(r["outcome"] != "correct" for r in records):
        print(table(records))
    if skipped:
        print(f"skipped {len(skipped)} sample(s) while looking for {args.samples} usable ones per op:")
        for s in skipped:
            print(f"  {s['op']}[opinfo #{s['opinfo_index']}] {s['reason']}")
    line = summary_line(records)
    print(f"{line} ({seconds:.0f} s)")
    extra = {"summary": {**summary(records), "line": line, "seconds": round(seconds, 1)},
             "settings": {"seed": SEED, "samples_per_op": args.samples, "rtol": RTOL, "dtype": "float32",
                          "ops": list(args.ops or ALL_OPS)},
             "skipped": skipped}
    if args.json:
        from bench.common import machine

        with open(args.json, "w") as f:
            json.dump({"machine": machine(), **extra, "results": records}, f, indent=1)
        print("wrote", args.json)
    else:
        from bench.common import save_results

        save_results("opinfo", records, **extra)
    return 0


if __name__ == "__main__":
    sys.exit(main())
