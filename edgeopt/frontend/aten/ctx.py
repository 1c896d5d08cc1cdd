"""Conversion state shared by the ATen converters: the graph being built, fx name -> IR value, dtypes."""

from __future__ import annotations

import numpy as np
import torch

from ...ir import Graph, Value
from ...ir.types import DTYPES as NP_DTYPES
from ...ir.types import dtype_from_numpy

aten = torch.ops.aten


def np_dtype(dt: torch.dtype):
    return torch.empty((), dtype=dt).numpy().dtype


def ir_dtype(dt: torch.dtype) -> str:
    """The IR dtype of a torch dtype; one the IR lacks (complex, float64...) is an unsupported case of the op being
    converted (``NotImplementedError``, which the frontend reports as an ``UnsupportedModelError``)."""
    try:
        return dtype_from_numpy(np_dtype(dt))
    except TypeError as e:
        raise NotImplementedError(f"tensors of {dt}: {e}") from None


class Ctx:
    """Conversion state: the graph being built and the mapping from fx node names to IR values."""

    def __init__(self, g: Graph):
        self.g = g
        self.env: dict[str, Value | tuple] = {}
        self.torch_consts: dict[str, torch.Tensor] = {}
        self.poisoned: set[str] = set()
        #: IR value name -> the arguments of the max_pool2d whose indices it is (for max_unpool2d)
        self.pool_indices: dict[str, dict] = {}
        self._const_values: dict[str, Value] = {}
        self._scalars: dict[tuple, Value] = {}
        self.source: str | None = None
        self.node = None

    # -- values -----------------------------------------------------------------------------------
    def const(self, t: torch.Tensor, name: str) -> Value:
        if name not in self._const_values:
            arr = t.detach().cpu().contiguous().numpy()
            self._const_values[name] = self.g.add_const(arr.copy(), name)
        return self._const_values[name]

    def scalar(self, value, dtype: str) -> Value:
        key = (repr(value), dtype)
        if key not in self._scalars:
            self._scalars[key] = self.g.add_const(np.array(value).astype(NP_DTYPES[dtype]), "c")
        return self._scalars[key]

    def v(self, a, dtype: str | None = None) -> Value:
        """An fx argument (node or Python scalar; or an IR value already) as an IR value, cast to ``dtype`` if
        given."""
        if isinstance(a, Value):
            val = a
        elif isinstance(a, torch.fx.Node):
            if a.name in self.torch_consts:
                val = self.const(self.torch_consts[a.name], a.name)
            else:
                val = self.env[a.name]
        else:
            if dtype is None:
                raise TypeError(f"scalar {a!r} needs a dtype")
            return self.scalar(a, dtype)
        return self.cast(val, dtype) if dtype else val

    def cast(self, v: Value, dtype: str) -> Value:
        return v if v.type.dtype == dtype else self.add("cast", [v], {"dtype": dtype})

    def add(self, op: str, inputs, attrs=None):
        return self.g.add(op, inputs, attrs, source=self.source)

    def out_dtype(self) -> str:
        val = self.node.meta["val"]
        val = val[0] if isinstance(val, (tuple, list)) else val
        return ir_dtype(val.dtype)

    def shape(self, a) -> tuple[int, ...]:
        return self.v(a).type.shape




def _meta_dtype(a):
    if isinstance(a, torch.fx.Node):
        return a.meta["val"].dtype
    return None


def promoted_dtype(a, b) -> str:
    """torch's type promotion for two operands (tensor or Python scalar)."""
    da, db = _meta_dtype(a), _meta_dtype(b)
    if da is not None and db is not None:
        ta, tb = a.meta["val"], b.meta["val"]
        return ir_dtype(torch.result_type(ta, tb))
    t, s = (da, b) if da is not None else (db, a)
    return ir_dtype(torch.result_type(torch.empty((), dtype=t).expand(1), s))


def along_last(ctx: Ctx, v: Value, axis: int):
    """``v`` with ``axis`` moved last (a transpose, none if it is last already), and the permutation back."""
    r = v.type.rank
    perm = [k for k in range(r) if k != axis] + [axis]
    back = [perm.index(k) for k in range(r)]
    return (v if perm == list(range(r)) else ctx.add("transpose", [v], {"perm": perm})), back


def norm_dim(d, rank):
    return d % rank if rank else 0
