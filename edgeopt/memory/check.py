"""The plan verifier: no two tokens alive at the same step share a byte; every offset is aligned; all fit."""

from __future__ import annotations

from .liveness import ALIGN, Token


class PlanError(AssertionError):
    """A memory plan that would let one tensor overwrite another that is still needed."""


def check_plan(tokens: list[Token], offsets: dict[str, int], arena_bytes: int, align: int = ALIGN) -> None:
    """Raise ``PlanError`` naming the first conflict: overlap in both lifetime and bytes, an offset missing or not
    a multiple of ``align``, or a token outside the arena."""
    problems = []
    for t in tokens:
        if t.name not in offsets:
            problems.append(f"{t.name}: no offset")
            continue
        off = offsets[t.name]
        if off % align:
            problems.append(f"{t.name}: offset {off} is not a multiple of {align}")
        if off < 0 or off + t.size > arena_bytes:
            problems.append(f"{t.name}: bytes [{off}, {off + t.size}) outside the arena of {arena_bytes}")
    by_start = sorted((t for t in tokens if t.name in offsets), key=lambda t: t.start)
    for i, a in enumerate(by_start):
        for b in by_start[i + 1 :]:
            if b.start > a.end:
                break
            oa, ob = offsets[a.name], offsets[b.name]
            if oa < ob + b.size and ob < oa + a.size:
                problems.append(f"{a.name} (steps {a.start}..{a.end}, bytes {oa}..{oa + a.size}) and {b.name} "
                                f"(steps {b.start}..{b.end}, bytes {ob}..{ob + b.size}) overlap")
    if problems:
        raise PlanError("invalid memory plan:\n  " + "\n  ".join(problems[:20]))
