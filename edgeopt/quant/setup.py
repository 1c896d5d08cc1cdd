"""From ``compile(quantize=..., calibration_data=...)`` to the configured quantization pass, its place in the
pipeline, and the ``quantization`` section of the compile report."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np

from .config import QuantConfig, QuantizationError, as_config

#: the report's precision of a kernel, from the dtypes of what it reads and the ops in it
_INT_DTYPES = ("i8", "u8")


def quantization_pass(quantize, calibration_data, graph, precision: str = "fp32"):
    """The pass that applies ``quantize`` to ``graph`` (None for no quantization) on a target computing in
    ``precision``. Checks the calibration data against the graph's inputs here, before any compile work."""
    from ..pipeline import get_pass

    cfg = as_config(quantize)
    if cfg is None:
        if calibration_data is not None:
            raise QuantizationError("calibration_data was given without quantize=: pass quantize=\"int8\" to use it")
        return None
    if precision == "fp16" and cfg.mode == "int8-dynamic":
        raise QuantizationError("quantize=\"int8-dynamic\" does not combine with precision=\"fp16\": its per-row "
                                "activation scales are computed in f32. Use quantize=\"int8-weight\" or "
                                "\"int4-weight\" (int8 / int4 weights, f16 compute), or precision=\"fp32\"")
    if cfg.static:
        return get_pass("quantize_static", cfg, calibration_batches(calibration_data, graph))
    if calibration_data is not None:
        raise QuantizationError(f"quantize={cfg.mode!r} needs no calibration_data (only static \"int8\" does)")
    return get_pass("quantize_dynamic" if cfg.mode == "int8-dynamic" else "quantize_weights", cfg)


def place(pipeline: list, p) -> None:
    """Insert the quantization pass ``p`` into ``pipeline`` (pass objects) at its mode's slot; static int8 and
    dynamic int8 are followed by ``fold_quantized`` and ``int8_weight_layout`` (integer kernels; on CPUs also
    ``depthwise_int8_taps``), unless the pipeline names them already or the target has no 8-bit integers. On such a
    target (a pass of it guarantees ``int32_only``) ``pack_int8_words`` and the widening pass follow the quantization
    pass instead."""
    from ..pipeline import FUSION, QUANT_PASSES, get_pass, insert_before

    before = QUANT_PASSES[p.config.mode][1]
    insert_before(pipeline, p, before)
    # a target without 8-bit integers (Vulkan's WGSL: ``wgsl_int_types`` guarantees "int32_only") widens the values
    # quantization makes, after it; its kernels dequantize them and compute in float (no 8-bit products to make).
    # The weights are first packed four to a 32-bit word, so that they stay a quarter of the float ones' size
    widen = [q.name for q in pipeline if "int32_only" in q.guarantees]
    if p.config.mode in ("int8", "int8-dynamic") and p.config.integer_kernels and not widen \
            and "fold_quantized" not in [q.name for q in pipeline]:
        insert_before(pipeline, get_pass("fold_quantized"), before)
        insert_before(pipeline, get_pass("int8_weight_layout"), before)
        insert_before(pipeline, get_pass("fold_requantize"), FUSION)
        if "nchwc_layout" in [q.name for q in pipeline]:  # CPUs: depthwise convs on window-tap dot products
            insert_before(pipeline, get_pass("depthwise_int8_taps"), FUSION)
    if widen:
        insert_before(pipeline, get_pass("pack_int8_words"), before)
    for name in widen:
        insert_before(pipeline, get_pass(name), before)


def calibration_batches(data, graph, what: str = "calibration batch") -> list[list[np.ndarray]]:
    """``data`` (an iterable of batches; a batch is one tensor/array, a tuple of them in input order, or a dict of
    them by input name) as lists of numpy arrays checked against the graph's inputs (shapes, dtypes, no NaN).

    A batch may also hold several of the traced batches stacked along the first axis (``calibration_data=[images]``
    with 64 images, for a model traced on one): it is split into batches of the traced size. For a model traced on
    one sample, a sample without its batch axis counts as one batch, so that iterating a stacked tensor works too
    (``calibration_data=images``). One dict alone (a tokenizer's output for many sentences) is one batch. Errors
    name the batch as ``what`` (``compare``'s data: "data batch")."""
    if data is None:
        raise QuantizationError("quantize=\"int8\" (static) needs calibration_data: an iterable of input batches "
                                "shaped like example_inputs, e.g. [images[i:i+1] for i in range(64)]")
    if not isinstance(data, Iterable):
        raise QuantizationError(f"calibration_data must be an iterable of input batches, got {type(data).__name__}")
    if isinstance(data, Mapping):  # one batch by input name (a tokenizer's output for many sentences): split below
        data = [data]
    out = []
    for i, batch in enumerate(data):
        if isinstance(batch, Mapping):  # by input name (a tokenizer's output); keys the model does not take unused
            names = [v.name for v in graph.inputs]
            missing = [k for k in names if k not in batch]
            if missing:
                raise QuantizationError(f"{what} {i} has no {missing} (its keys: {list(batch)}); the "
                                        f"model's inputs are {names}")
            items = [batch[k] for k in names]
        else:
            items = list(batch) if isinstance(batch, (tuple, list)) else [batch]
        arrays = [_numpy(a, what) for a in items]
        if len(arrays) != len(graph.inputs):
            raise QuantizationError(f"{what} {i} has {len(arrays)} inputs, the model takes "
                                    f"{len(graph.inputs)}")
        for part in _traced_batches(i, arrays, graph.inputs, what):
            for a, v in zip(part, graph.inputs):  # (infinities are data: an additive attention mask's -inf)
                if a.dtype.kind == "f" and np.isnan(a).any():
                    raise QuantizationError(f"{what} {i}: input %{v.name} has {int(np.isnan(a).sum())} NaN "
                                            f"values of {a.size}: calibration measures ranges on real data")
            out.append(part)
    if not out:
        raise QuantizationError("calibration_data is empty" if what == "calibration batch" else "the data is empty")
    return out


def _traced_batches(i: int, arrays: list[np.ndarray], inputs, what: str) -> list[list[np.ndarray]]:
    """Calibration batch ``i`` (one array per graph input) as batches of the traced shapes: itself, one sample
    given without the batch axis of a model traced on one, or ``k >= 1`` traced batches stacked along the first axis
    (every input with a batch axis alike; an input of rank 0 is the same in each)."""
    if all(a.shape == v.type.shape and a.dtype == v.type.np_dtype for a, v in zip(arrays, inputs)):
        return [arrays]

    def mismatch(a, v, hint=""):
        return QuantizationError(f"{what} {i}: input %{v.name} is {a.dtype}{list(a.shape)}, the model was "
                                 f"traced with {v.type} ({hint or 'batches must match example_inputs'})")

    for a, v in zip(arrays, inputs):
        if a.dtype != v.type.np_dtype:
            raise mismatch(a, v, "convert it: batches must match example_inputs")
        if not v.type.shape and a.shape:
            raise mismatch(a, v)
    batched = [(a, v.type.shape) for a, v in zip(arrays, inputs) if v.type.shape]
    if all(s[0] == 1 and a.shape == s[1:] for a, s in batched):  # one sample, no batch axis
        return [[a[None] if v.type.shape else a for a, v in zip(arrays, inputs)]]
    counts = []
    for a, v in zip(arrays, inputs):
        s = v.type.shape
        if not s:
            continue
        if a.ndim != len(s) or a.shape[1:] != s[1:] or not s[0] or a.shape[0] % s[0]:
            stack = f"batches must match example_inputs, or stack several of them along the first axis: {s[0]} x k rows"
            raise mismatch(a, v, stack if s[0] else "")
        counts.append((v, a.shape[0] // s[0]))
    if len({k for _, k in counts}) > 1:
        held = ", ".join(f"%{v.name} {k}" for v, k in counts)
        raise QuantizationError(f"{what} {i} stacks a different number of traced batches in each input "
                                f"({held}): every input must hold the same number")
    k = counts[0][1]
    if k == 0:
        raise QuantizationError(f"{what} {i} holds no rows: it is empty")
    return [[a[j * v.type.shape[0]:(j + 1) * v.type.shape[0]] if v.type.shape else a for a, v in zip(arrays, inputs)]
            for j in range(k)]


def _numpy(a, what: str) -> np.ndarray:
    if hasattr(a, "detach"):
        a = a.detach().cpu().numpy()
    try:
        out = np.asarray(a)
    except ValueError as e:  # a ragged list: token ids without padding
        raise QuantizationError(f"a {what} holds a ragged {type(a).__name__} ({e}): pad it to the traced "
                                "shape") from None
    if out.dtype.kind not in "biuf":
        raise QuantizationError(f"a {what} holds a {type(a).__name__}, not a tensor or array of numbers: "
                                "a batch is one tensor / array per model input (a tuple of them, or a dict by input "
                                "name, for several)")
    return out


def quantization_report(p, graph, records, float_weight_bytes: int, weight_bytes: int) -> dict:
    stats = next((r["stats"] for r in records if r["name"] == p.name), {})
    cfg: QuantConfig = p.config
    extra = integer_kernels_report(p, records)
    return {**cfg.describe(), "pass": p.name, "weight_bytes_float": int(float_weight_bytes),
            "weight_bytes": int(weight_bytes), "weight_ratio": round(weight_bytes / max(float_weight_bytes, 1), 4),
            "layers_quantized": stats.get("quantized", 0), "kept_float": stats.get("kept_float", []),
            **({"per_channel_inputs": stats["per_channel_inputs"]} if "per_channel_inputs" in stats else {}),
            "kernels_by_precision": kernels_by_precision(graph), **extra,
            **({"accuracy_check": {k: stats[k] for k in ("metric", "score_float", "score", "kept_for_budget")
                                   if k in stats}} if "metric" in stats else {})}


def integer_kernels_report(p, records) -> dict:
    """What one build's integer layers run on (a multi-level artifact has one per level): ``weight_levels`` (127, or
    64: 7-bit weights for the layers AVX2's vpmaddubsw runs), ``gptq_layers`` (layers whose levels GPTQ chose) and
    ``int8_instructions`` (layers per int8 dot product, e.g. ``{"avx2-ubsw": 21}``)."""
    stats = next((r["stats"] for r in records if r["name"] == p.name), {})
    layout = next((r["stats"] for r in records if r["name"] == "int8_weight_layout"), {})
    out = {k: stats[k] for k in ("weight_levels", "gptq_layers") if k in stats}
    if layout.get("instructions"):
        from ..lower.int8_dot import path_name

        out["int8_instructions"] = {path_name(k): v for k, v in layout["instructions"].items()}
    return out


def kernels_by_precision(graph) -> dict[str, int]:
    """How many kernels compute on int4, int8 or float data (a kernel is int8 when it reads or makes int8 values
    or dequantizes inside)."""
    counts: dict[str, int] = {}
    for n in graph.nodes:
        if n.op == "reshape":
            continue
        nodes = n.body.nodes if n.body is not None else [n]
        if any(m.op == "dequantize" and m.attrs.get("bits") == 4 for m in nodes):
            kind = "int4"
        elif any(m.op in ("quantize", "dequantize", "requantize") for m in nodes) or any(
                v.type.dtype in _INT_DTYPES for v in n.inputs):
            kind = "int8"
        else:
            kind = n.outputs[0].type.dtype
        counts[kind] = counts.get(kind, 0) + 1
    return counts
