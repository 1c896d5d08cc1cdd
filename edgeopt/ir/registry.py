"""The op registry: one ``OpDef`` per IR op, with its schema, type inference and numpy reference.

Adding an op is one ``register(OpDef(...))`` call in a file of ``edgeopt/ir/ops/``. The TVM lowering
of an op lives apart, in ``edgeopt/lower/rules/``, so the IR never depends on TVM.

``kind`` tells passes and schedules what an op is:
    elementwise  same shape in and out (after broadcasting), one output element per input element
    injective    each output element reads a few input elements (reshape, transpose, slice, concat...)
    reduction    reduces over axes (sum, softmax, layer_norm, pooling)
    contraction  matmul / linear / conv: the heavy ops that anchor a fused kernel
    opaque       anything else (attention)

Traits tell passes and lowering what they may do with an op, so that none of them keeps a list of op names of
its own and adding an op touches only its IR, lowering and frontend files:
    view            the output is the input's memory reinterpreted: no kernel, no copy (reshape)
    cheap           cheap enough to recompute at every read inside a fused kernel (add, relu, transpose...)
    fp16            under precision="fp16": "f16" computes in half precision; "f32" reads its f16 inputs as f32
                    (reductions over many elements, normalizations, exp/log/pow: they overflow or lose precision)
    pointwise       output element i reads element i of each (broadcast) input, whatever the layout: it runs on
                    blocked NCHW<v>c tensors unchanged (default: every elementwise op; batch_norm is not)
    blocked_layout  its ``layout`` attribute takes the blocked NCHW<v>c layout (conv2d, window pools)
    row_reduction   reduces along rows in one kernel that anchors a fused reduction (softmax, layer_norm, sum...)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .types import TensorType

KINDS = ("elementwise", "injective", "reduction", "contraction", "opaque")


class OpError(ValueError):
    """An op was used with inputs or attributes its schema rejects."""


@dataclass
class OpDef:
    name: str
    kind: str
    #: (in_types, attrs) -> list of output types; raises OpError on invalid input.
    infer: Callable[[list[TensorType], dict[str, Any]], list[TensorType]]
    #: (list of numpy inputs, attrs) -> list of numpy outputs. The reference semantics.
    reference: Callable[[list, dict[str, Any]], list]
    #: attribute name -> default (``REQUIRED`` if it has none; ``OPTIONAL``: absent unless given, so the text form of
    #: the many nodes without it stays as it was).
    attrs: dict[str, Any] = field(default_factory=dict)
    num_inputs: tuple[int, int] = (1, 1)  # min, max
    doc: str = ""
    view: bool = False
    cheap: bool = False
    fp16: str = "f16"
    pointwise: bool | None = None  # None: kind == "elementwise"
    blocked_layout: bool = False
    row_reduction: bool = False

    def normalize_attrs(self, attrs: dict[str, Any]) -> dict[str, Any]:
        unknown = set(attrs) - set(self.attrs)
        if unknown:
            raise OpError(f"{self.name}: unknown attribute(s) {sorted(unknown)}; known: {sorted(self.attrs)}")
        out = {}
        for k, default in self.attrs.items():
            if k in attrs:
                out[k] = _plain(attrs[k])
            elif default is REQUIRED:
                raise OpError(f"{self.name}: missing required attribute {k!r}")
            elif default is OPTIONAL:
                continue
            else:
                out[k] = default
        return out

    def check_arity(self, n: int) -> None:
        lo, hi = self.num_inputs
        if not lo <= n <= hi:
            raise OpError(f"{self.name} takes {lo}..{hi} inputs, got {n}")


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED = _Required()


class _Optional:
    def __repr__(self) -> str:
        return "OPTIONAL"


OPTIONAL = _Optional()
_REGISTRY: dict[str, OpDef] = {}


def _plain(v):
    """Attributes are plain JSON-able data: tuples become lists, numpy scalars become Python ones."""
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if hasattr(v, "item") and not isinstance(v, (str, bytes)):
        return v.item()
    return v


def register(opdef: OpDef) -> OpDef:
    if opdef.kind not in KINDS:
        raise ValueError(f"op {opdef.name}: kind must be one of {KINDS}")
    if opdef.name in _REGISTRY:
        raise ValueError(f"op {opdef.name} registered twice")
    if opdef.fp16 not in ("f16", "f32"):
        raise ValueError(f"op {opdef.name}: fp16 must be 'f16' or 'f32', got {opdef.fp16!r}")
    if opdef.pointwise is None:
        opdef.pointwise = opdef.kind == "elementwise"
    infer = opdef.infer

    def checked_infer(types, attrs, _infer=infer, _op=opdef):
        _op.check_arity(len(types))
        return _infer(types, attrs)

    opdef.infer = checked_infer
    _REGISTRY[opdef.name] = opdef
    return opdef


def get_op(name: str) -> OpDef:
    _load_ops()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise OpError(f"unknown IR op {name!r}") from None


def all_ops() -> dict[str, OpDef]:
    _load_ops()
    return dict(_REGISTRY)


_loaded = False


def _load_ops() -> None:
    global _loaded
    if not _loaded:
        _loaded = True
        from . import fused, ops  # noqa: F401  (registers every op family and the fused-kernel op)
