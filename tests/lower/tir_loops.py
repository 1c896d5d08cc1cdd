"""Reading a scheduled kernel's loop nest in tests."""

from __future__ import annotations


def loop_names(func) -> list[str]:
    """The loop variables of ``func`` (a scheduled PrimFunc), outermost first, as its TVMScript names them."""
    return [name.strip() for line in func.script().splitlines() if line.strip().startswith("for ")
            for name in line.strip()[4:].split(" in ")[0].split(",")]
