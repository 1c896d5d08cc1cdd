"""TE rule for ``argtopk``: every element's rank is how many elements come before it, and output slot ``r`` is the
position whose rank is ``r``. Two reductions over the row (``n^2`` compares), all of them independent: the form for
GPUs. CPUs run the merge sort of ``edgeopt.lower.merge_sort`` instead, whose integer keys this rule shares."""

from __future__ import annotations

import tvm
from tvm import te

from ...ir.types import TVM_DTYPES
from ..merge_sort import sort_key
from . import rule


@rule("argtopk")
def argtopk(ins, attrs, out, op):
    x = ins[0]
    n = int(x.shape[-1])
    key = te.compute(x.shape, lambda *i: sort_key(x(*i), str(x.dtype), attrs["largest"]), name="sort_key")
    j = te.reduce_axis((0, n), name="j")

    def rank(*i):
        other, mine = key(*i[:-1], j), key(*i)
        before = tvm.tirx.Or(other < mine, tvm.tirx.And(other == mine, j < i[-1]))  # ties: the smaller position
        return te.sum(before.astype("int32"), axis=j)

    ranks = te.compute(x.shape, rank, name="rank")
    p = te.reduce_axis((0, n), name="p")
    ot = TVM_DTYPES[out.dtype]
    return te.compute(tuple(out.shape),
                      lambda *o: te.sum(tvm.tirx.Select(ranks(*o[:-1], p) == o[-1], p.astype(ot),
                                                        tvm.tirx.const(0, ot)), axis=p), name="argtopk")
