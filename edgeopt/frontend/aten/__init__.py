"""The ATen -> IR conversion table, one file per op family (mirroring ``edgeopt/ir/ops``).

A converter receives the ``Ctx`` and the fx node's args/kwargs (fx nodes for tensors, Python values for
the rest) and returns an IR Value (or a tuple for multi-output ATen ops). To support a new ATen op, add a
function to the family's file and list it in that file's ``CONVERTERS``; if torch.export must not
decompose the op, add it to ``KEEP_WHOLE``.
"""

from __future__ import annotations

from . import (
    advanced_index,
    composites,
    elementwise,
    elementwise_composites,
    nn,
    pool_indices,
    reduce,
    run_time_scalars,
    scatter,
    select,
    shape,
)
from .ctx import Ctx, aten, ir_dtype

#: ATen ops kept as they are (not decomposed to core ATen): the IR has a direct op for each.
KEEP_WHOLE = [
    aten.linear.default, aten.layer_norm.default, aten.scaled_dot_product_attention.default,
    aten.hardswish.default, aten.hardsigmoid.default, aten.gelu.default, aten.silu.default,
    aten.softmax.int, aten.log_softmax.int, aten.upsample_bilinear2d.vec, aten.upsample_nearest2d.vec,
    aten.hardtanh.default, aten.relu6.default, aten.matmul.default, aten.adaptive_avg_pool2d.default,
    aten.leaky_relu.default, aten.embedding.default,
    aten.upsample_trilinear3d.vec, aten.upsample_nearest3d.vec, aten.adaptive_avg_pool3d.default,
    aten.max_unpool2d.default,
]

CONVERTERS = {**elementwise.CONVERTERS, **reduce.CONVERTERS, **nn.CONVERTERS, **shape.CONVERTERS,
              **select.CONVERTERS, **composites.CONVERTERS, **scatter.CONVERTERS, **pool_indices.CONVERTERS,
              **advanced_index.CONVERTERS, **run_time_scalars.CONVERTERS,
              **elementwise_composites.CONVERTERS}

__all__ = ["CONVERTERS", "KEEP_WHOLE", "Ctx", "ir_dtype"]
