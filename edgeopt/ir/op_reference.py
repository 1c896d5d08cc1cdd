"""The IR's op reference (``docs/ops.md``), written from the registry: every op's kind, inputs, attributes,
traits and semantics. ``python -m edgeopt.ir.op_reference > docs/ops.md`` regenerates it; a test checks that
the checked-in page matches the registry."""

from __future__ import annotations

from .registry import OPTIONAL, REQUIRED, all_ops

TRAITS = ("view", "cheap", "pointwise", "blocked_layout", "row_reduction")


def _attrs(attrs: dict) -> str:
    return ", ".join(f"`{k}`" if v is REQUIRED else f"`{k}` (optional)" if v is OPTIONAL else f"`{k}={v!r}`"
                     for k, v in attrs.items()) or "—"


def _traits(op) -> str:
    names = [t for t in TRAITS if getattr(op, t)]
    if op.fp16 == "f32":
        names.append("fp16=f32")
    return ", ".join(names) or "—"


def _inputs(op) -> str:
    lo, hi = op.num_inputs
    return str(lo) if lo == hi else f"{lo}+" if hi >= 64 else f"{lo}–{hi}"


def markdown() -> str:
    ops = all_ops()
    lines = ["# IR ops", "",
             "Generated from the op registry by `python -m edgeopt.ir.op_reference > docs/ops.md` (a test keeps it "
             "current). Kinds and traits are described in `edgeopt/ir/registry.py`; the reference interpreter "
             "(each op's numpy `reference`) defines the semantics the compiled kernels are tested against.", ""]
    for kind in ("elementwise", "injective", "reduction", "contraction", "opaque"):
        names = sorted(n for n, o in ops.items() if o.kind == kind)
        lines += [f"## {kind}", "", "| op | inputs | attributes | traits | semantics |", "|---|---|---|---|---|"]
        for n in names:
            o = ops[n]
            doc = " ".join(o.doc.split()).replace("|", "\\|")
            lines.append(f"| `{n}` | {_inputs(o)} | {_attrs(o.attrs)} | {_traits(o)} | {doc} |")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown(), end="")
