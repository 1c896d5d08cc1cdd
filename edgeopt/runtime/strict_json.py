"""JSON from an untrusted file, parsed strictly: every way it can be malformed is one ``ValueError``.

``json.loads`` alone accepts things an artifact must not contain, or fails with errors other than ``ValueError``:
``NaN``/``Infinity`` literals, numbers that overflow to ``inf`` (``1e999``), integers of thousands of digits (slow to
convert; past Python's limit a different ``ValueError``), objects that repeat a key (two readers could disagree on
the value), text that is not UTF-8, and nesting deep enough to raise ``RecursionError``. ``loads`` refuses all of
them with a message saying which. This module imports only the standard library.
"""

from __future__ import annotations

import json
import math

#: longest integer literal accepted (digits and sign): int64's range needs 20
MAX_INT_CHARS = 20


def _constant(name: str):
    raise ValueError(f"non-standard JSON constant {name}")


def _int(text: str) -> int:
    if len(text) > MAX_INT_CHARS:
        raise ValueError(f"integer of {len(text)} characters (at most {MAX_INT_CHARS})")
    return int(text)


def _float(text: str) -> float:
    if len(text) > 64:
        raise ValueError(f"number of {len(text)} characters (at most 64)")
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text} is out of range")
    return value


def _object(pairs: list[tuple[str, object]]) -> dict:
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set[str] = set()
        dup = next(k for k, _ in pairs if k in seen or seen.add(k))
        raise ValueError(f"key {dup!r} appears twice in one object")
    return out


def loads(data: bytes | str):
    """Parse ``data`` (UTF-8 bytes or text) as strict JSON; ``ValueError`` saying what is wrong otherwise."""
    try:
        text = data.decode("utf-8") if isinstance(data, (bytes, bytearray, memoryview)) else data
        if not isinstance(text, str):
            raise ValueError(f"expected bytes or text, got {type(data).__name__}")
        return json.loads(text, parse_constant=_constant, parse_int=_int, parse_float=_float, object_pairs_hook=_object)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None
    except UnicodeDecodeError as e:
        raise ValueError(f"not UTF-8 text ({e.reason} at byte {e.start})") from None
