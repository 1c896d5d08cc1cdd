"""Conversion state shared by the ATen converters: the graph being built, fx name -> IR value, dtypes."""

from __future__ import annotations

import numpy as np
import sympy
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
        #: the values of numbers torch.export could not know (``buffer.item()``: a symbol) but the frontend folded
        self.sym_values: dict = {}

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
                c = self.torch_consts[a.name]
                if not isinstance(c, torch.Tensor):  # a number folded from constants (``buffer.item()``)
                    return self.scalar(c, dtype or number_dtype(c))
                val = self.const(c, a.name)
            else:
                val = self.env[a.name]
        else:
            if dtype is None:
                raise TypeError(f"scalar {a!r} needs a dtype")
            return self.scalar(a, dtype)
        return self.cast(val, dtype) if dtype else val

    def literal(self, a):
        """``a`` as a Python number where it is one or was folded to one (``buffer.item()``); else ``a`` itself (an
        fx node: a tensor, or a number known only at run time)."""
        folded = self.torch_consts.get(a.name) if isinstance(a, torch.fx.Node) else None
        return folded if isinstance(folded, (bool, int, float)) else a

    def is_run_time_number(self, a) -> bool:
        """Whether ``a`` is a number only the call knows (``p.item()`` of an input), not a Python number."""
        return isinstance(self.literal(a), torch.fx.Node)

    def cast(self, v: Value, dtype: str) -> Value:
        return v if v.type.dtype == dtype else self.add("cast", [v], {"dtype": dtype})

    def add(self, op: str, inputs, attrs=None):
        return self.g.add(op, inputs, attrs, source=self.source)

    def out_dtype(self) -> str:
        val = self.node.meta["val"]
        val = val[0] if isinstance(val, (tuple, list)) else val
        return ir_dtype(val.dtype)

    def static_shape(self, shape) -> list[int]:
        """A shape from an fx node's meta as ints: sizes torch.export left as expressions in numbers the frontend
        folded (``x[buffer.item():]``) are worked out; one known only at run time is a NotImplementedError."""
        out = []
        for d in shape:
            if not isinstance(d, int):
                expr = sympy.sympify(d.node.expr.xreplace(self.sym_values))
                if not expr.is_Integer:
                    raise NotImplementedError("with a size known only at run time")
                d = int(expr)
            out.append(d)
        return out

    def out_shape(self) -> list[int]:
        """The static shape of the node being converted (its first output's)."""
        val = self.node.meta["val"]
        return self.static_shape((val[0] if isinstance(val, (tuple, list)) else val).shape)

    def shape(self, a) -> tuple[int, ...]:
        return self.v(a).type.shape




def number_dtype(value) -> str:
    """The IR dtype a Python number (or a run-time one: ``SymInt``...) computes in: i64, f32 or bool."""
    if isinstance(value, (bool, torch.SymBool)):
        return "bool"
    return "i64" if isinstance(value, (int, torch.SymInt)) else "f32"


def _meta_dtype(a):
    if isinstance(a, torch.fx.Node) and isinstance(a.meta["val"], torch.Tensor):
        return a.meta["val"].dtype
    return None


def _stand_in(a):
    """A Python number of the kind of ``a`` (a Python number, or a run-time one's fx node), for type promotion."""
    v = a.meta["val"] if isinstance(a, torch.fx.Node) else a
    return {"bool": True, "i64": 1, "f32": 1.0}[number_dtype(v)]


def promoted_dtype(a, b) -> str:
    """torch's type promotion for two operands (tensors, Python numbers, or numbers known at run time:
    ``x > p.item()`` promotes as ``x > 3``)."""
    da, db = _meta_dtype(a), _meta_dtype(b)
    if da is not None and db is not None:
        ta, tb = a.meta["val"], b.meta["val"]
        return ir_dtype(torch.result_type(ta, tb))
    if da is None and db is None:
        return ir_dtype(torch.result_type(torch.tensor(_stand_in(a)), _stand_in(b)))
    t, s = (da, b) if da is not None else (db, a)
    return ir_dtype(torch.result_type(torch.empty((), dtype=t).expand(1), _stand_in(s)))


def along_last(ctx: Ctx, v: Value, axis: int):
    """``v`` with ``axis`` moved last (a transpose, none if it is last already), and the permutation back."""
    r = v.type.rank
    perm = [k for k in range(r) if k != axis] + [axis]
    back = [perm.index(k) for k in range(r)]
    return (v if perm == list(range(r)) else ctx.add("transpose", [v], {"perm": perm})), back


def norm_dim(d, rank):
    return d % rank if rank else 0
