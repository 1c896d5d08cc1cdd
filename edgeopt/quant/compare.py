"""How far a quantized graph is from its float original: per layer (SQNR and cosine of each layer's output, worst
first) and end to end (a metric on the model's outputs). Both graphs run on the reference interpreter.

``layer_errors`` is what ``CompiledModel.compare`` reports and what the accuracy budget ranks layers by;
``METRICS`` are the scores ``QuantConfig(max_drop=..., metric=...)`` keeps within budget.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from ..ir import Graph, interpret

LAYER_OPS = ("conv2d", "linear", "matmul")


def _flat(x: np.ndarray) -> np.ndarray:
    return np.asarray(x, np.float64).reshape(-1)


def sqnr_db(ref: np.ndarray, got: np.ndarray) -> float:
    """Signal-to-quantization-noise ratio of ``got`` against ``ref``, in dB (inf when equal)."""
    r, e = _flat(ref), _flat(got) - _flat(ref)
    noise = float(np.dot(e, e))
    return float("inf") if noise == 0 else 10.0 * np.log10(max(float(np.dot(r, r)), 1e-30) / noise)


def cosine(ref: np.ndarray, got: np.ndarray) -> float:
    a, b = _flat(ref), _flat(got)
    den = np.linalg.norm(a) * np.linalg.norm(b)
    return 1.0 if den == 0 else float(np.dot(a, b) / den)


def top1(float_outs: list, quant_outs: list) -> float:
    """Fraction of samples whose arg-max over the last axis of the first output agrees."""
    a = np.concatenate([o[0].reshape(-1, o[0].shape[-1]) for o in float_outs])
    b = np.concatenate([o[0].reshape(-1, o[0].shape[-1]) for o in quant_outs])
    return float(np.mean(a.argmax(-1) == b.argmax(-1)))


def mean_cosine(float_outs: list, quant_outs: list) -> float:
    """Mean over samples of the cosine between the first outputs."""
    return float(np.mean([cosine(a[0], b[0]) for a, b in zip(float_outs, quant_outs)]))


METRICS: dict[str, Callable[[list, list], float]] = {"top1": top1, "cosine": mean_cosine}


def layer_values(g: Graph) -> list:
    return [n.outputs[0] for n in g.nodes if n.op in LAYER_OPS]


def layer_errors(float_graph: Graph, quant_graph: Graph, batches: Sequence[Sequence[np.ndarray]]) -> list[dict]:
    """Every conv / linear / matmul output of ``float_graph`` that ``quant_graph`` still has (by value name; with its
    module name, as ``QuantConfig.keep_float`` takes it, for a layer with a weight; else None): its SQNR and cosine
    over ``batches``, and the error the layer adds itself (``added_noise``: the noise-to-signal power of its output
    minus that of the activation it reads). Worst (lowest SQNR) first."""
    layers = {n.outputs[0].name: n for n in float_graph.nodes if n.op in LAYER_OPS}
    qvalues = {o.name: o for n in quant_graph.nodes for o in n.outputs}
    qvalues.update({v.name: v for v in quant_graph.inputs})
    names = [k for k in layers if k in qvalues]
    inputs = {k: layers[k].inputs[0].name for k in names}
    watch = set(names) | {i for i in inputs.values() if i in qvalues}
    got_f: dict[str, list] = {k: [] for k in watch}
    got_q: dict[str, list] = {k: [] for k in watch}
    for batch in batches:
        interpret(float_graph, batch, observe=lambda v, x: got_f[v.name].append(x) if v.name in watch else None)
        interpret(quant_graph, batch, observe=lambda v, x: got_q[v.name].append(x) if v.name in watch else None)

    def stats(k):
        f, q = np.concatenate([_flat(a) for a in got_f[k]]), np.concatenate([_flat(a) for a in got_q[k]])
        return sqnr_db(f, q), cosine(f, q)

    out = []
    for k in names:
        if not got_q[k] or not got_f[k]:
            continue
        s, c = stats(k)
        i = inputs[k]
        s_in = stats(i)[0] if got_q.get(i) and got_f.get(i) else float("inf")
        n = layers[k]
        added = max(0.0, 10 ** (-s / 10) - 10 ** (-s_in / 10))  # noise power relative to the signal, 0 if none
        module = float_graph.layer_name(n) if float_graph.is_const(n.inputs[1]) else None  # not attention scores
        out.append({"layer": k, "module": module, "op": n.op, "source": n.source,
                    "sqnr_db": round(s, 2), "cosine": round(c, 6), "added_noise": float(f"{added:.3g}")})
    return sorted(out, key=lambda r: r["sqnr_db"])


def outputs(g: Graph, batches) -> list[list[np.ndarray]]:
    return [interpret(g, b) for b in batches]
