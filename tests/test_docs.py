"""Every code block in ``docs/`` runs.

A page is run like a notebook, in a fresh working directory: its ``python`` blocks in order, in one namespace (a
later block uses what an earlier one made); its ``bash`` blocks line by line through bash, with this Python's
``bin`` first on ``PATH`` (so ``edgeopt`` and ``python`` are the installed ones). ``pip install`` / ``apt-get``
lines and ``scripts/setup.sh`` are set-up steps that already ran (the test checks that what pip installs is there);
``scripts/arm_sysroot.sh`` runs (it is cached). Blocks of other languages (``text``, ``json``: outputs and formats)
are not code. A block whose info string says ``device=cuda`` runs only on a machine with a CUDA GPU; elsewhere it
is compiled (syntax checked) and the skip is reported. A failing block fails the test with the page, the block's
line and the error."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = sorted(p for p in (ROOT / "docs").rglob("*.md"))
FENCE = re.compile(r"^```(\S*)(.*)$")


def blocks(path: Path) -> list[tuple[int, str, dict, str]]:
    """(line number, language, options, text) of each fenced block of a markdown file."""
    out, lines = [], path.read_text().splitlines()
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if m:
            lang, rest = m.group(1), m.group(2)
            opts = dict(kv.split("=", 1) if "=" in kv else (kv, True) for kv in rest.split())
            start = i + 1
            i += 1
            while i < len(lines) and not lines[i].startswith("```"):
                i += 1
            out.append((start, lang, opts, "\n".join(lines[start:i])))
        i += 1
    return out


def _has_cuda_gpu() -> bool:
    try:
        from edgeopt.runtime.tvm_cuda import gpu_compute_capability

        return gpu_compute_capability() is not None
    except Exception:  # no driver, no runtime: no GPU
        return False


def _run_bash(text: str, cwd: Path, where: str) -> None:
    """Each line through bash, with this Python's ``bin`` first on PATH (``edgeopt``, ``python``)."""
    bindir = os.path.dirname(sys.executable)
    env = {**os.environ, "PATH": bindir + os.pathsep + os.environ.get("PATH", ""),
           "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    for line in text.splitlines():
        cmd = line.split(" #", 1)[0].strip()
        if not cmd or cmd.startswith("#"):
            continue
        words = [w for w in shlex.split(cmd) if not re.fullmatch(r"[A-Z_]+=\S*", w)]  # VAR=value prefixes aside
        if words[:2] == ["pip", "install"] or words[0] in ("apt-get", "sudo"):
            _check_installed(words, where)
            continue
        if words[0].endswith("scripts/setup.sh"):
            continue  # the machine set-up that ran before the tests
        if words[0].endswith("scripts/arm_sysroot.sh"):  # the emulated ARM device: built once, shared (a lock, a stamp)
            from edgeopt import emulate

            script, build = ROOT / "scripts" / "arm_sysroot.sh", emulate.sysroot_dir()
            cmd = f"bash {shlex.quote(str(script))} {shlex.quote(str(build))}"
            env = {**env, "HOST_PY": sys.executable}
        if words[0] == "edgeopt" and not os.path.exists(os.path.join(bindir, "edgeopt")):  # no console script
            cli = f"{shlex.quote(sys.executable)} -m edgeopt.cli "
            cmd = re.sub(r"(^|\s)edgeopt\s", lambda m, cli=cli: m.group(1) + cli, cmd, count=1)
        r = subprocess.run(["bash", "-c", cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
        assert r.returncode == 0, f"{where}: `{cmd}` failed:\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}"


def _check_installed(words: list[str], where: str) -> None:
    import importlib.metadata
    import shutil

    if words[0] == "pip":
        for spec in words[2:]:
            name = re.split(r"[\[<>=!]", spec.strip("'\""))[0]
            if name and not name.startswith("-"):
                importlib.metadata.version("edgeopt" if name in (".", "-e") else name)  # raises if missing
    else:
        tools = {"qemu-user": "qemu-aarch64", "gcc-aarch64-linux-gnu": "aarch64-linux-gnu-gcc",
                 "g++-aarch64-linux-gnu": "aarch64-linux-gnu-g++"}
        for pkg in words:
            if pkg in tools and not shutil.which(tools[pkg]):
                pytest.skip(f"{where}: {pkg} is not installed here")


@pytest.mark.slow
@pytest.mark.parametrize("page", DOCS, ids=[str(p.relative_to(ROOT / "docs")) for p in DOCS])
def test_every_code_block_of_the_page_runs(page, tmp_path, monkeypatch, capsys):
    from edgeopt import pipeline

    pipeline._load_builtin_passes()
    monkeypatch.setattr(pipeline, "_PASSES", dict(pipeline._PASSES))  # a page's registered passes stay with it
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("EDGEOPT_QUIET", "1")
    monkeypatch.syspath_prepend(str(ROOT))
    module = types.ModuleType(f"docs_{page.stem.replace('-', '_')}")  # a real module: inspect finds its classes
    monkeypatch.setitem(sys.modules, module.__name__, module)
    namespace = module.__dict__
    skipped = []
    for line, lang, opts, text in blocks(page):
        where = f"{page.relative_to(ROOT)}:{line}"
        if lang == "python":
            code = compile(text, where, "exec")
            if opts.get("device") == "cuda" and not _has_cuda_gpu():
                skipped.append(where)
                continue
            try:
                exec(code, namespace)
            except Exception as e:
                pytest.fail(f"{where}: the block raised {type(e).__name__}: {e}")
        elif lang in ("bash", "sh", "console"):
            if opts.get("device") == "cuda" and not _has_cuda_gpu():
                skipped.append(where)
                continue
            _run_bash(text, tmp_path, where)
    if skipped:
        with capsys.disabled():
            print(f"\n{page.name}: blocks for a CUDA GPU not run here: {', '.join(skipped)}")


def test_the_docs_have_the_pages_users_need():
    names = {str(p.relative_to(ROOT / "docs")) for p in DOCS}
    need = {"getting-started.md", "artifact-format.md", "ir.md", "ops.md", "passes.md", "targets/host.md",
            "targets/x86.md", "targets/arm.md", "targets/cuda.md", "targets/vulkan.md"}
    assert need <= names, need - names
    for p in DOCS:
        assert blocks(p) or p.name in ("ops.md", "design.md"), f"{p} has no code block"
