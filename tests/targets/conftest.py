"""Fixtures shared by the target tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from edgeopt import emulate
from tests.targets import required


@pytest.fixture(scope="session")
def sysroot():
    """The emulated device's files, built once per session by scripts/arm_sysroot.sh (a stamp makes reruns instant)."""
    b = emulate.sysroot_dir()
    script = Path(__file__).resolve().parents[2] / "scripts" / "arm_sysroot.sh"
    r = subprocess.run(["bash", str(script), str(b)], capture_output=True, text=True, timeout=900,
                       env={**os.environ, "HOST_PY": sys.executable})
    if r.returncode != 0:
        why = f"the arm64 sysroot could not be built ({script} {b}): {(r.stdout + r.stderr)[-800:]}"
        (pytest.fail if required("arm") else pytest.skip)(why)
    return emulate.check_emulator(b)
