"""The pass manager: registered passes, pipelines chosen by opt_level and target, instruments.

A pass is a class with a ``name``, the IR properties it ``requires`` and ``guarantees``, and a
``run(graph) -> dict`` that rewrites the graph in place and returns its counters (hit counts...):

    @register_pass
    class MyPass(Pass):
        name = "my_pass"
        def run(self, g):
            ...
            return {"rewrites": n}

After every pass the IR is verified; a pass that breaks it is named in the error. ``EDGEOPT_DEBUG=1``
prints the IR after each pass to stderr (``EDGEOPT_DEBUG_DIR=dir`` writes one file per pass instead).

Properties are names. A graph with no fused kernels starts with ``unfused``; the fusion passes invalidate it, so a
pass that matches op patterns declares ``requires = ("unfused",)`` and, placed after fusion, warns
(``PassOrderWarning``) instead of silently matching nothing. A requirement that no earlier pass guarantees is an
error. ``Pipeline`` edits a pipeline by pass names:

    p = Pipeline.default(opt_level=2, target="host")
    p.insert(MyPass(), before="fuse_epilogue")
    edgeopt.compile(model, inputs, passes=p)
"""

from __future__ import annotations

import os
import sys
import time
import warnings
from collections.abc import Iterable, Sequence

from .errors import PassError
from .ir import Graph, VerificationError, verify
from .progress import advance, expect

_PASSES: dict[str, type[Pass]] = {}
#: the property of a graph with no fused kernels: pattern passes require it, the fusion passes invalidate it
UNFUSED = "unfused"


class PassOrderWarning(UserWarning):
    """A pass runs after an earlier pass invalidated a property it requires (e.g. a pattern pass after fusion)."""


class Pass:
    name: str = ""
    #: properties the IR must have before this pass (established by earlier passes)
    requires: tuple[str, ...] = ()
    #: properties the IR has after this pass
    guarantees: tuple[str, ...] = ()
    #: properties this pass may break
    invalidates: tuple[str, ...] = ()
    #: the compile target (set by ``run_passes``; None when run without one). Passes that pick sizes from
    #: the hardware (vector width, cache sizes) read it; all others ignore it.
    target = None

    def run(self, g: Graph) -> dict:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<pass {self.name}>"


def register_pass(cls: type[Pass]) -> type[Pass]:
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no name")
    if cls.name in _PASSES and _PASSES[cls.name] is not cls:
        raise ValueError(f"pass {cls.name!r} registered twice")
    _PASSES[cls.name] = cls
    return cls


def _load_builtin_passes() -> None:
    import importlib
    import pkgutil

    from . import passes

    for m in pkgutil.iter_modules(passes.__path__):
        importlib.import_module(f"{passes.__name__}.{m.name}")


def get_pass(name: str, *args, **options) -> Pass:
    """A new instance of the registered pass ``name``; ``args`` / ``options`` go to its constructor (a pass with
    settings, e.g. ``get_pass("quantize_static", config, calibration)``)."""
    _load_builtin_passes()
    if name not in _PASSES:
        raise PassError(f"unknown pass {name!r}; registered passes: {', '.join(sorted(_PASSES))}")
    return _PASSES[name](*args, **options)


def registered_passes() -> list[str]:
    _load_builtin_passes()
    return sorted(_PASSES)


#: pipelines by optimization level (target-specific passes are added by the target's name)
CLEANUP = ["constant_folding", "remove_noops", "common_subexpression_elimination", "dead_code_elimination"]
#: the fusion passes, in order: horizontal and attention rewrites first, then grouping into kernels
FUSION = ["fuse_horizontal", "fuse_attention", "fuse_epilogue", "fuse_reductions", "fuse_elementwise"]
PIPELINES = {
    0: [],
    1: CLEANUP,
    2: [*CLEANUP, "fold_pad_into_conv", "fold_batch_norm", "fold_affine", "conv_transpose_as_conv",
        "dead_code_elimination",
        "linear_weight_layout", "conv_weight_layout", "nchwc_layout", "winograd_conv", *FUSION, "reorder_for_memory"],
}


#: passes that pack weights or activations into CPU vector layouts (OIHW<v>o, NCHW<v>c, linear panels) or
#: pick a CPU algorithm on them (Winograd convs on NCHW<v>c): GPU targets leave them out (``GpuTarget.pipeline``)
CPU_LAYOUT_PASSES = ("linear_weight_layout", "conv_weight_layout", "nchwc_layout", "winograd_conv")


#: precision -> the pass that converts the graph to it, and the pass it runs before: after the folds (exact in
#: float32) and the rewrites into attention ops (whose patterns its casts would hide), before the fusion passes that
#: group nodes into kernels (which then fuse its casts)
PRECISION_PASSES = {"fp16": ("to_fp16", ("fuse_epilogue", "fuse_reductions", "fuse_elementwise"))}
PRECISIONS = ("fp32", *PRECISION_PASSES)


#: quantize mode -> the pass that quantizes, and the passes it runs before. Static and dynamic int8 see the graph
#: after the folds and before the layout passes, with weights in their plain layouts (``fold_quantized`` and
#: ``int8_weight_layout`` follow them); the weight-only passes run just before ``to_fp16`` (which then computes in
#: f16 on the int8 / int4 weights) or where it would, after the layout passes,
#: so packed float weights stay packed
_LAYOUT_AND_FUSION = (*CPU_LAYOUT_PASSES, *FUSION)
QUANT_PASSES = {"int8": ("quantize_static", _LAYOUT_AND_FUSION),
                "int8-dynamic": ("quantize_dynamic", _LAYOUT_AND_FUSION),
                "int8-weight": ("quantize_weights", ("to_fp16", *PRECISION_PASSES["fp16"][1])),
                "int4-weight": ("quantize_weights", ("to_fp16", *PRECISION_PASSES["fp16"][1]))}


def insert_before(passes: list, p: Pass, before: Sequence[str]) -> None:
    """Put pass object ``p`` before the first of the ``before`` passes that ``passes`` has (else last)."""
    keys = [q if isinstance(q, str) else q.name for q in passes]
    passes.insert(min((keys.index(b) for b in before if b in keys), default=len(passes)), p)


def _target_class(target):
    from .targets import Target, target_class

    return target if isinstance(target, Target) else target_class(target)


def default_pipeline(opt_level: int, target="host", precision: str = "fp32") -> list[str]:
    """The pass names for ``opt_level`` on ``target`` (a name or a ``Target``: the target edits the generic
    pipeline, e.g. GPUs leave out the CPU layout passes), with ``precision``'s conversion pass."""
    if opt_level not in PIPELINES:
        raise ValueError(f"opt_level must be one of {sorted(PIPELINES)}")
    names = _target_class(target).pipeline(list(PIPELINES[opt_level]))
    if precision in PRECISION_PASSES:
        _insert_precision_pass(names, precision)
    return names


def _insert_precision_pass(names: list, precision: str) -> None:
    """Put the precision's pass before the first of the passes it must precede that ``names`` has (else last)."""
    convert, before = PRECISION_PASSES[precision]
    insert_before(names, convert, before)


class Pipeline:
    """An ordered list of passes (names or ``Pass`` objects) edited by name; ``edgeopt.compile(passes=...)``
    takes it.

        p = Pipeline.default(2, "host")
        p.insert("my_pass", before="fuse_epilogue")      # or after=, or a list: the first (last) that is there
        p.remove("winograd_conv")
    """

    def __init__(self, passes: Iterable[str | Pass] = ()):
        self.passes = list(passes)
        for q in self.passes:
            _check_entry(q)

    @classmethod
    def default(cls, opt_level: int = 2, target="host", precision: str = "fp32") -> Pipeline:
        return cls(default_pipeline(opt_level, target, precision))

    @property
    def names(self) -> list[str]:
        return [q if isinstance(q, str) else q.name for q in self.passes]

    def insert(self, p: str | Pass, *, before: str | Pass | Sequence[str | Pass] | None = None,
               after: str | Pass | Sequence[str | Pass] | None = None) -> Pipeline:
        """Insert ``p`` before the first of ``before`` or after the last of ``after`` found in the pipeline."""
        _check_entry(p)
        if (before is None) == (after is None):
            raise PassError("Pipeline.insert takes exactly one of before= and after=")
        given = before if before is not None else after
        anchors = [_key(a) for a in ([given] if isinstance(given, (str, Pass)) else given)]
        found = [i for i, n in enumerate(self.names) if n in anchors]
        if not found:
            raise PassError(f"cannot insert {_key(p)!r}: none of {anchors} is in the pipeline {self.names}")
        self.passes.insert(found[0] if before is not None else found[-1] + 1, p)
        return self

    def remove(self, name: str) -> Pipeline:
        if name not in self.names:
            raise PassError(f"pass {name!r} is not in the pipeline {self.names}")
        del self.passes[self.names.index(name)]
        return self

    def __iter__(self):
        return iter(self.passes)

    def __len__(self) -> int:
        return len(self.passes)

    def __contains__(self, name) -> bool:
        return _key(name) in self.names

    def __repr__(self) -> str:
        return f"Pipeline({self.names})"


def _key(p) -> str:
    return p if isinstance(p, str) else p.name


def _check_entry(p) -> None:
    if not isinstance(p, (str, Pass)):
        raise PassError(f"a pipeline holds pass names or Pass objects, got {p!r}")


def resolve(passes: Iterable[str | Pass] | None, disable: Iterable[str], opt_level: int,
            target="host", legalize: Sequence[str] = (), precision: str = "fp32") -> list[Pass]:
    """The passes to run: ``passes``, or the pipeline for ``opt_level``, the target and its ``precision``, minus
    ``disable``. ``legalize`` (the target's ``legalize_passes``) runs first in every case, and the precision's pass
    (``PRECISION_PASSES``) runs in every case too: neither can be disabled."""
    names = default_pipeline(opt_level, target, precision) if passes is None else list(passes)
    target_name = target if isinstance(target, str) else target.name
    disable = set(disable)
    forced = [p for p in legalize if p in disable]
    if forced:
        raise PassError(f"pass(es) {forced} cannot be disabled: target {target_name!r} needs them to run at all")
    if precision in PRECISION_PASSES:
        convert = PRECISION_PASSES[precision][0]
        if convert in disable:
            raise PassError(f"pass {convert!r} cannot be disabled: precision={precision!r} is what it does")
        if convert not in [p if isinstance(p, str) else p.name for p in names]:  # a custom pipeline without it
            _insert_precision_pass(names, precision)
    out = [get_pass(p) for p in legalize]
    for p in names:
        pobj = get_pass(p) if isinstance(p, str) else p
        if pobj.name not in disable and pobj.name not in legalize:
            out.append(pobj)
    unknown = disable - {p.name for p in out} - set(registered_passes())
    if unknown:
        raise PassError(f"disable= names unknown pass(es) {sorted(unknown)}; registered passes: "
                        f"{', '.join(registered_passes())}")
    return out


def run_passes(g: Graph, passes: Sequence[Pass], target=None) -> list[dict]:
    """Run passes in order for ``target``, verifying after each; returns [{name, seconds, stats}] for the report."""
    debug = os.environ.get("EDGEOPT_DEBUG", "") not in ("", "0")
    debug_dir = os.environ.get("EDGEOPT_DEBUG_DIR")
    lost: dict[str, str] = {}  # property -> the pass that invalidated it
    have = {UNFUSED}
    if any(n.op == "fused" for n in g.nodes):
        have, lost[UNFUSED] = set(), "an earlier compile (the graph has fused kernels)"
    records = []
    expect(len(passes), "passes")
    for i, p in enumerate(passes):
        missing = set(p.requires) - have
        never = sorted(missing - set(lost))
        if never:
            raise PassError(f"pass {p.name!r} requires {never}, which no earlier pass guarantees")
        for prop in sorted(missing):
            warnings.warn(f"pass {p.name!r} requires {prop!r}, which {lost[prop]} invalidated: it will likely find "
                          f"nothing to do; run it before that", PassOrderWarning, stacklevel=2)
        p.target = target
        t0 = time.perf_counter()
        try:
            stats = p.run(g) or {}
        except Exception as e:
            raise PassError(f"pass {p.name!r} failed: {type(e).__name__}: {e}") from e
        seconds = time.perf_counter() - t0
        try:
            verify(g)
        except VerificationError as e:
            raise PassError(f"pass {p.name!r} left the IR invalid:\n{e}") from e
        lost.update({prop: f"pass {p.name!r}" for prop in p.invalidates if prop in have})
        have = (have - set(p.invalidates)) | set(p.guarantees)
        records.append({"name": p.name, "seconds": round(seconds, 6), "stats": stats})
        advance(p.name)
        if debug or debug_dir:
            _dump(g, i, p.name, debug_dir)
    return records


def _dump(g: Graph, i: int, name: str, debug_dir: str | None) -> None:
    text = str(g)
    if debug_dir:
        os.makedirs(debug_dir, exist_ok=True)
        with open(os.path.join(debug_dir, f"{i:02d}_{name}.ir"), "w") as f:
            f.write(text)
    else:
        print(f"// ----- IR after pass {i}: {name} -----\n{text}", file=sys.stderr)
