"""Static int8's accuracy check and budget (``QuantConfig.max_drop``): the quantized model is scored against the
float one on calibration batches; over budget, the layers that add the most error (``edgeopt.quant.compare``) stay
float, the fewest that meet it. Without a budget, a model whose outputs collapse gets a warning naming the layers
responsible.

    report, applied = meet_budget(config, float_graph, g, names, calibration, float_outputs, apply)
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

from ..ir import Graph
from .compare import METRICS, layer_errors, outputs
from .config import QuantConfig

#: the accuracy budget scores the model on this many calibration batches; without a budget, a quick check on
#: CHECK_BATCHES warns when the metric falls by more than COLLAPSE_DROP
BUDGET_BATCHES, CHECK_BATCHES, COLLAPSE_DROP = 64, 8, 0.25


def meet_budget(cfg: QuantConfig, float_graph: Graph, g: Graph, names: list[str], calibration: list,
                float_outputs: list, apply: Callable[[Graph, set], object]) -> tuple[dict, object]:
    """Score ``g`` (``float_graph`` with the layers ``names`` quantized) with ``cfg.metric`` against the float
    outputs of the calibration batches (``float_outputs``, in the same order). Over ``cfg.max_drop``, find the
    fewest of the layers adding the most error to keep float (a doubling then bisecting search; each trial is
    ``apply(clone of float_graph, names to quantize)``) and make ``g`` that trial's graph. Without a budget, warn,
    naming the noisiest layers, where the metric falls by more than ``COLLAPSE_DROP``. Returns the report (metric,
    scores, ``kept_for_budget``) and what ``apply`` returned for the adopted trial (None: ``g`` kept)."""
    metric = METRICS[cfg.metric] if isinstance(cfg.metric, str) else cfg.metric
    budget = cfg.max_drop is not None
    batches = calibration[:BUDGET_BATCHES if budget else CHECK_BATCHES]
    ref = float_outputs[:len(batches)]
    best = metric(ref, ref)
    score = metric(ref, outputs(g, batches))
    out = {"metric": cfg.metric if isinstance(cfg.metric, str) else getattr(cfg.metric, "__name__", "custom"),
           "score_float": round(best, 4), "score": round(score, 4)}
    if best - score <= (cfg.max_drop if budget else COLLAPSE_DROP):
        return out, None
    quantized = set(names)  # (a layer left float, or a product of two activations, reads noise but adds none)
    rows = sorted((r for r in layer_errors(float_graph, g, batches[:4]) if r["layer"] in quantized),
                  key=lambda r: -r["added_noise"])
    ranking = [r["layer"] for r in rows]
    if not budget:
        worst = list(dict.fromkeys(r["module"] or r["layer"] for r in rows))[:5]
        warnings.warn(f"int8 quantization lost {best - score:.3f} of {out['metric']} on the calibration data; "
                      f"the layers adding the most error: {', '.join(worst)} (keep them float with "
                      f"QuantConfig(keep_float={worst[:2]!r}) or set QuantConfig(max_drop=...))", stacklevel=2)
        return out, None

    def trial(k):
        t = float_graph.clone()
        applied = apply(t, set(names) - set(ranking[:k]))
        return t, metric(ref, outputs(t, batches)), applied

    lo, hi, found = 0, 1, None  # the fewest float layers that meet the budget: doubling, then bisection
    while found is None:
        t, score, applied = trial(hi)
        if best - score <= cfg.max_drop or hi >= len(ranking):
            found = (hi, t, score, applied)
        else:
            lo, hi = hi, min(2 * hi, len(ranking))
    while found[0] - lo > 1:
        mid = (lo + found[0]) // 2
        t, score, applied = trial(mid)
        if best - score <= cfg.max_drop:
            found = (mid, t, score, applied)
        else:
            lo = mid
    k, t, score, applied = found
    g.adopt(t)
    if best - score > cfg.max_drop:
        warnings.warn(f"int8 quantization could not meet max_drop={cfg.max_drop} even with every layer float "
                      f"({out['metric']} {score:.4f} vs {best:.4f})", stacklevel=2)
    return {**out, "score": round(score, 4), "kept_for_budget": ranking[:k]}, applied
