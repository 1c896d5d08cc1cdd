"""Run every offset-assignment algorithm on a plan's tokens, verify each result, keep the smallest arena."""

from __future__ import annotations

from dataclasses import dataclass

from .algorithms import ALGORITHMS
from .check import check_plan
from .liveness import ALIGN, Token, build_tokens, lower_bound


@dataclass
class MemoryPlan:
    tokens: list[Token]
    offsets: dict[str, int]  # token name -> byte offset
    arena_bytes: int
    lower_bound_bytes: int
    naive_bytes: int  # every activation in its own buffer
    algorithm: str
    candidates: dict[str, int]  # algorithm -> arena bytes it reached

    def value_offsets(self) -> dict[str, int]:
        """Byte offset of every activation value (values that share a token share its offset)."""
        return {v: self.offsets[t.name] for t in self.tokens for v in t.values}

    def report(self) -> dict:
        return {"arena_bytes": self.arena_bytes, "lower_bound_bytes": self.lower_bound_bytes,
                "naive_bytes": self.naive_bytes, "plan_algorithm": self.algorithm,
                "plan_candidates": self.candidates,
                "inplace_values": sum(len(t.values) - 1 for t in self.tokens)}


def plan_arena(plan: dict, algorithms: list[str] | None = None, inplace: bool = True,
               align: int = ALIGN) -> MemoryPlan:
    """Plan the activations of an execution plan (see ``edgeopt.lower.build``) into one arena, every offset a
    multiple of ``align``.

    Every algorithm runs on the tokens with in-place sharing and without it (sharing lowers the peak but
    can fragment the arena); each result is verified and the smallest arena wins (ties: the first tried).
    The lower bound reported is the smaller of the two, a bound for every plan considered."""
    variants = {"inplace": build_tokens(plan, inplace=True, align=align)} if inplace else {}
    variants["separate"] = build_tokens(plan, inplace=False, align=align)
    naive = sum(t.size for t in variants["separate"])
    best, candidates = None, {}
    for variant, tokens in variants.items():
        for name in algorithms or list(ALGORITHMS):
            offsets = ALGORITHMS[name](tokens)
            size = max((offsets[t.name] + t.size for t in tokens), default=0)
            check_plan(tokens, offsets, size, align)
            label = name if variant == "separate" else f"{name}+inplace"
            candidates[label] = size
            if best is None or size < best[0]:
                best = (size, label, tokens, offsets)
    size, label, tokens, offsets = best
    bound = min(lower_bound(t) for t in variants.values())
    return MemoryPlan(tokens, offsets, size, bound, naive, label, candidates)
