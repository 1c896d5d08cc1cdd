"""A compiled language model on the emulated ARM device: the same greedy tokens as on this machine and in
transformers (prefill chunks, decode steps and the KV cache state, under qemu-aarch64)."""

from __future__ import annotations

import shutil

import pytest

import edgeopt.llm
from edgeopt import emulate
from tests.llm.test_llm_compile import _llama, _reference
from tests.targets import needs
from tests.targets.test_arm import CC, OBJDUMP

pytestmark = pytest.mark.arm
needs_tools = needs("arm", bool(shutil.which(CC) and shutil.which(OBJDUMP) and shutil.which(emulate.QEMU)),
                    "the aarch64 cross compiler or qemu-aarch64 is not installed")


@needs_tools
@pytest.mark.parametrize("cpu", ["cortex-a72", "cortex-a76"])
def test_llm_generates_the_same_tokens_on_the_emulated_board(sysroot, tmp_path, cpu):
    m = _llama(seed=3)
    lm = edgeopt.llm.compile(m, max_seq_len=32, prefill_len=(8, 3), target="arm", cpu=cpu)
    path = tmp_path / "tiny-arm.edgeopt"
    lm.save(path)
    prompts = [[5, 3, 9], list(range(1, 12))]
    got = emulate.generate(path, prompts, max_new_tokens=6, cpu=cpu, stop=[])
    assert got == [_reference(m, p, 6) for p in prompts]
