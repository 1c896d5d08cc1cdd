"""Progress bars (``edgeopt.progress``): shown on request or on a terminal, never in logs, pipes or when quiet."""

from __future__ import annotations

import torch

import edgeopt
from edgeopt import progress


def small():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4)).eval(), \
        (torch.randn(2, 8),)


def test_compile_shows_its_steps_when_asked(capsys):
    model, x = small()
    edgeopt.compile(model, x, progress=True, cache=False)
    err = capsys.readouterr().err
    assert "compile" in err and "step" in err  # tqdm's bar: "compile: kernels ... 3/3 [..., x step/s]"


def test_quiet_by_default_off_a_terminal(capsys, monkeypatch):
    monkeypatch.delenv("EDGEOPT_QUIET", raising=False)
    model, x = small()
    edgeopt.compile(model, x, cache=False)  # pytest's stderr is not a TTY
    assert capsys.readouterr().err == ""


def test_quiet_setting_wins_over_a_terminal(monkeypatch):
    class Tty:
        def isatty(self):
            return True

    monkeypatch.setattr("sys.stderr", Tty())
    monkeypatch.delenv("EDGEOPT_QUIET", raising=False)
    assert progress.showing() is True
    progress.set_quiet()
    try:
        assert progress.showing() is False and progress.showing(True) is True
    finally:
        progress.set_quiet(False)


def test_steps_grow_the_bar_and_nested_tasks_share_it():
    with progress.task("outer", progress=True) as outer:
        progress.expect(2, "first")
        with progress.task("inner", progress=True) as inner:
            assert inner.bar is None and not inner.owner  # the outer bar counts the inner steps
            progress.expect(3)
            for _ in range(3):
                progress.advance()
        progress.advance()
        assert outer.bar.total == 5 and outer.bar.n == 4
    progress.advance()  # outside a task: nothing to count, no error
