"""Progress bars for the long steps (compiling, calibrating, tuning, exploring, distilling) and edgeopt's logging.

A bar shows on a terminal or in a notebook only: never when stderr is not a TTY (CI logs, pipes), nor when quiet
(``EDGEOPT_QUIET=1``, the CLI's ``--quiet``, or ``progress=False`` where a function takes it). Bars are tqdm's when
it is installed; without it there are none. Messages go through ``logging`` under the ``edgeopt`` logger
(``edgeopt.cache``, ...); the CLI shows warnings, ``-v`` shows info.
"""

from __future__ import annotations

import os
import sys


def quiet() -> bool:
    return os.environ.get("EDGEOPT_QUIET", "").strip().lower() not in ("", "0", "false", "no")


def set_quiet(flag: bool = True) -> None:
    """Turn every progress bar off (or back on) for this process and its children."""
    if flag:
        os.environ["EDGEOPT_QUIET"] = "1"
    else:
        os.environ.pop("EDGEOPT_QUIET", None)


def showing(progress: bool | None = None) -> bool:
    """Whether to show a bar: ``progress`` when given, else on a terminal unless quiet."""
    if progress is not None:
        return bool(progress)
    return not quiet() and (sys.stderr.isatty() or "ipykernel" in sys.modules)  # a terminal, or a notebook


def progress_bar(total: int, progress: bool | None, desc: str, unit: str = "it"):
    """A tqdm bar writing to stderr, or None (not showing, or tqdm missing)."""
    if not showing(progress):
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc=desc, unit=unit, leave=False, file=sys.stderr)


_CURRENT: list = []  # the open ``task`` bars, innermost last (one compile at a time per process)


class task:
    """``with task("compile"):`` opens a bar whose length grows as steps announce themselves: the code deep inside
    calls ``expect(n, stage)`` when it learns how many steps it will take and ``advance(what)`` after each (passes,
    kernels, calibration batches). Outside a ``task`` both do nothing; a nested ``task`` reuses the outer bar."""

    def __init__(self, desc: str, progress: bool | None = None):
        self.desc, self.progress, self.bar, self.owner = desc, progress, None, False

    def __enter__(self):
        if not _CURRENT:
            self.bar, self.owner = progress_bar(0, self.progress, self.desc, unit="step"), True
            _CURRENT.append(self)
        return self

    def __exit__(self, *exc):
        if self.owner:
            _CURRENT.pop()
            if self.bar is not None:
                self.bar.close()


def expect(n: int, stage: str | None = None) -> None:
    """``n`` more steps are coming (in ``stage``)."""
    bar = _CURRENT[-1].bar if _CURRENT else None
    if bar is not None:
        bar.total = (bar.total or 0) + n
        if stage:
            bar.set_description_str(f"{_CURRENT[-1].desc}: {stage}", refresh=False)
        bar.refresh()


def advance(what: str | None = None) -> None:
    """One step done (``what``: shown beside the bar)."""
    bar = _CURRENT[-1].bar if _CURRENT else None
    if bar is not None:
        if what:
            bar.set_postfix_str(what, refresh=False)
        bar.update(1)
