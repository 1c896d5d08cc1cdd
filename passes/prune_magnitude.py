"""prune_magnitude: unstructured pruning. Sets the ``sparsity`` fraction of each conv / linear / matmul weight
with the smallest magnitudes to zero (``Compress(sparsity=0.8)``), per layer.

Shapes do not change; the artifact stores each mostly-zero weight as its non-zero values and a bitmask
(``edgeopt.runtime.sparse_weights``: at 80% zeros a float weight takes 23% of its bytes) and the runtime makes it
dense at load. The kernels stay dense: ``bench/sparse.py`` measures a sparse matrix product against them.

Requires: ``unfused`` (plain weights: it runs first). Guarantees: nothing new. Layers whose module names match
``layers`` (globs) are pruned; weights under 1024 elements are left whole.

Before (sparsity=0.5):
    const %w: f32[2,4] = [[0.1, -3.0, 0.2, 1.0], [2.0, -0.05, 0.5, -4.0]]
    %y: f32[1,2] = linear(%x, %w) {"weight_layout": "oi"}
After:
    const %w: f32[2,4] = [[0.0, -3.0, 0.0, 1.0], [2.0, 0.0, 0.0, -4.0]]
"""

from __future__ import annotations

import numpy as np

from edgeopt.compress.config import matches
from edgeopt.ir import Graph
from edgeopt.pipeline import Pass, register_pass

MIN_ELEMENTS = 1024


@register_pass
class PruneMagnitude(Pass):
    name = "prune_magnitude"
    requires = ("unfused",)

    def __init__(self, sparsity: float = 0.5, layers=("*",), min_elements: int = MIN_ELEMENTS):
        self.sparsity, self.layers, self.min_elements = sparsity, tuple(layers), min_elements

    def run(self, g: Graph) -> dict:
        done, zeros, total = [], 0, 0
        readers = g.users()
        for n in g.nodes:
            if n.op not in ("conv2d", "linear", "matmul") or len(n.inputs) < 2 or not g.is_const(n.inputs[1]):
                continue
            w = g.const(n.inputs[1])
            if w.dtype.kind != "f" or w.size < self.min_elements or not matches(g.layer_name(n), self.layers):
                continue
            k = int(w.size * self.sparsity)
            flat = np.abs(w).reshape(-1)
            cut = np.argpartition(flat, k)[:k] if k else np.array([], np.int64)
            pruned = w.copy().reshape(-1)
            pruned[cut] = 0
            if len(readers[n.inputs[1]]) == 1:
                g.constants[n.inputs[1].name] = pruned.reshape(w.shape)
            else:  # shared (a tied embedding): only this layer's copy loses weights
                n.inputs[1] = g.add_const(pruned.reshape(w.shape), f"{n.inputs[1].name}_pruned")
            done.append(g.layer_name(n))
            zeros += int((pruned == 0).sum())
            total += w.size
        return {"layers": done, "sparsity": round(zeros / max(total, 1), 4)}
