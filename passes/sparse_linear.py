"""sparse_linear: run a linear layer whose weight is mostly zeros as a sparse kernel, where that is faster.

``linear(x, W, b)`` with a constant ``W [out, in]`` becomes ``sparse_linear(x, values, indices, b)``: each row's
non-zero weights and their columns, rows padded to the longest with zero values (a zero bias when there was
none). It fires only on CPU targets (the TIR kernel ``edgeopt.lower.sparse_linear``) and only at the sparsity where
that kernel beat the dense one on this project's machines (``bench/sparse.py``, MiniLM's FFN shape, 2 threads):
from 90% zeros with at least ``MANY_TOKENS`` rows of input (128 rows: 0.54x at 90%, 1.13x at 80%; whole MiniLM at 90%:
0.84x), from 97% with fewer (16 rows: 1.00x at 90%, 0.77x at 95%; one row, a matrix-vector product, where the dense
kernel is hardest to beat: 1.19x at 95%, 0.65x at 98%). Elsewhere the weight stays dense (the artifact still stores
it sparse).
``min_sparsity`` overrides both (to measure).

Requires: ``unfused``, plain "oi" weights (it runs with the compression passes, before the layout passes).
Guarantees: nothing new; the result is exactly the dense layer's up to summation order.

Before (a weight with 2 of 4 entries per row non-zero):
    const %w: f32[2,4] = [[0.0, -3.0, 0.0, 1.0], [2.0, 0.0, 0.0, -4.0]]
    %y: f32[1,2] = linear(%x, %w) {"weight_layout": "oi"}
After:
    const %w_values: f32[2,2] = [[-3.0, 1.0], [2.0, -4.0]]
    const %w_indices: i32[2,2] = [[1, 3], [0, 3]]
    const %w_bias: f32[2] = [0.0, 0.0]
    %y: f32[1,2] = sparse_linear(%x, %w_values, %w_indices, %w_bias) {"in_features": 4}
"""

from __future__ import annotations

import math

import numpy as np

from edgeopt.ir import Graph, Node
from edgeopt.pipeline import Pass, register_pass

#: from this many rows of input (tokens x batch) the sparse kernel wins from MANY_TOKENS_SPARSITY zeros
MANY_TOKENS, MANY_TOKENS_SPARSITY, FEW_TOKENS_SPARSITY = 32, 0.9, 0.97


@register_pass
class SparseLinear(Pass):
    name = "sparse_linear"
    requires = ("unfused",)

    def __init__(self, min_sparsity: float | None = None):
        self.min_sparsity = min_sparsity

    def run(self, g: Graph) -> dict:
        if self.target is not None and not (getattr(self.target, "tir_kernels", False)
                                            and getattr(self.target, "runtime", "cpu") == "cpu"):
            return {"sparse_layers": [], "skipped": "the target has no sparse kernel"}
        done, dense = [], []
        for n in list(g.nodes):
            if not _candidate(g, n):
                continue
            w = g.const(n.inputs[1])
            sparsity = float(1 - np.count_nonzero(w) / w.size)
            rows = math.prod(n.inputs[0].type.shape[:-1])
            need = self.min_sparsity if self.min_sparsity is not None else (
                MANY_TOKENS_SPARSITY if rows >= MANY_TOKENS else FEW_TOKENS_SPARSITY)
            if sparsity < need - 1e-3:  # (a weight pruned to 90% may count 89.99%)
                if sparsity >= 0.5:
                    dense.append({"layer": g.layer_name(n), "sparsity": round(sparsity, 4), "needs": need})
                continue
            done.append({"layer": g.layer_name(n), "sparsity": round(sparsity, 4)})
            _rewrite(g, n, w)
        return {"sparse_layers": done, "dense_layers": dense}


def _candidate(g: Graph, n: Node) -> bool:
    return (n.op == "linear" and n.attrs["weight_layout"] == "oi" and g.is_const(n.inputs[1])
            and g.const(n.inputs[1]).dtype in (np.float32, np.float16)
            and (len(n.inputs) == 2 or g.is_const(n.inputs[2])))


def _rewrite(g: Graph, n: Node, w: np.ndarray) -> None:
    nz = w != 0
    per_row = max(1, int(nz.sum(1).max()))
    values = np.zeros((w.shape[0], per_row), w.dtype)
    indices = np.zeros((w.shape[0], per_row), np.int32)
    for o in range(w.shape[0]):
        cols = np.flatnonzero(nz[o])
        values[o, :len(cols)], indices[o, :len(cols)] = w[o, cols], cols
    name = n.inputs[1].name
    bias = n.inputs[2] if len(n.inputs) == 3 else g.add_const(np.zeros(w.shape[0], w.dtype), f"{name}_bias")
    n.op, n.attrs = "sparse_linear", {"in_features": int(w.shape[1])}
    n.inputs = [n.inputs[0], g.add_const(values, f"{name}_values"), g.add_const(indices, f"{name}_indices"), bias]
