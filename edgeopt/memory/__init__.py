"""Activation-memory planning: every activation of a compiled model gets a byte offset in one arena.

``liveness`` turns the execution plan into storage tokens with lifetimes (views share their base's
token, an in-place kernel's output shares its input's), ``algorithms`` assigns offsets with several
strategies, ``plan_arena`` runs them all and keeps the smallest, ``check_plan`` proves that no two
tokens alive at the same step share a byte, and ``render`` draws the arena over time from a plan.
"""

from .algorithms import ALGORITHMS
from .check import PlanError, check_plan
from .liveness import ALIGN, Token, build_tokens, lower_bound
from .planner import MemoryPlan, plan_arena
from .render import arena_png, arena_rows, arena_text

__all__ = ["ALGORITHMS", "ALIGN", "MemoryPlan", "PlanError", "Token", "arena_png", "arena_rows", "arena_text",
           "build_tokens", "check_plan", "lower_bound", "plan_arena"]
